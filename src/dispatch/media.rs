//! The rx stage's media table: ip:port announced in SDP → the call (and so the owner) its RTP belongs to.
//!
//! The most recent announcement of an endpoint wins, as when a phone reuses its port for the next call.
//! Entries age out on packet time when neither re-announced nor used, and the table has a hard size cap.

use std::collections::HashMap;
use std::net::IpAddr;

use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::Nanos;

/// An endpoint as one 128-bit address (IPv4 mapped into IPv6) and a port: cheap to hash and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u128, u16);

impl Key {
    #[inline]
    fn new(addr: IpAddr, port: u16) -> Key {
        let a = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        Key(a, port)
    }
}

/// `last_use` is atomic so that rx cores sharing the table can mark use under a read lock.
#[derive(Debug)]
struct Entry {
    call_key: u64,
    last_use: AtomicI64,
}

pub struct MediaTable {
    map: HashMap<Key, Entry, foldhash::fast::RandomState>,
    idle: Nanos,
    cap: usize,
    last_sweep: Nanos,
    pub evicted: u64,
    /// Bumped by every announcement: rx cores holding parked packets retry only when it moved.
    pub generation: u64,
}

impl MediaTable {
    pub fn new(idle: Nanos, cap: usize) -> Self {
        MediaTable { map: HashMap::default(), idle, cap, last_sweep: 0, evicted: 0, generation: 0 }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn announce(&mut self, addr: IpAddr, port: u16, call_key: u64, now: Nanos) {
        let key = Key::new(addr, port);
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.sweep(now);
            if self.map.len() >= self.cap {
                self.evicted += 1;
                return;
            }
        }
        self.map.insert(key, Entry { call_key, last_use: AtomicI64::new(now) });
        self.generation += 1;
    }

    /// Looks up an endpoint and marks it used.
    #[inline]
    pub fn lookup(&self, addr: IpAddr, port: u16, now: Nanos) -> Option<u64> {
        let e = self.map.get(&Key::new(addr, port))?;
        if e.last_use.load(Ordering::Relaxed) < now {
            e.last_use.store(now, Ordering::Relaxed);
        }
        Some(e.call_key)
    }

    pub fn maybe_sweep(&mut self, now: Nanos) {
        if now - self.last_sweep > 60 * 1_000_000_000 {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Nanos) {
        self.last_sweep = now;
        let idle = self.idle;
        let before = self.map.len();
        self.map.retain(|_, e| now - e.last_use.load(Ordering::Relaxed) <= idle);
        self.evicted += (before - self.map.len()) as u64;
    }
}
