//! The rx stage's media table: ip:port announced in SDP → the call (and so the owner) its RTP belongs to.
//!
//! The most recent announcement of an endpoint wins, as when a phone reuses its port for the next call.
//! Entries age out on packet time when neither re-announced nor used, and the table has a hard size cap.

use std::collections::HashMap;
use std::net::IpAddr;

use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::Nanos;

/// An IPv6 endpoint: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V6Key(u128, u16);

/// An IPv4 endpoint packed into one word (address above, port below), so that an IPv4 slot is 24 bytes: the
/// table of a busy link then stays in the cache instead of missing on nearly every RTP packet.
#[inline]
fn v4_key(addr: std::net::Ipv4Addr, port: u16) -> u64 {
    (u64::from(addr.to_bits()) << 16) | u64::from(port)
}

/// An IPv4-mapped IPv6 address is the IPv4 endpoint it maps, as the single 128-bit key had it.
#[inline]
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// `last_use` is atomic so that rx cores sharing the table can mark use under a read lock.
#[derive(Debug)]
struct Entry {
    call_key: u64,
    last_use: AtomicI64,
}

pub struct MediaTable {
    v4: HashMap<u64, Entry, foldhash::fast::RandomState>,
    v6: HashMap<V6Key, Entry, foldhash::fast::RandomState>,
    idle: Nanos,
    /// How stale `last_use` may get before a lookup refreshes it: most lookups then only read the entry, so a
    /// busy stream does not dirty its cache line on every packet.
    touch_every: Nanos,
    cap: usize,
    last_sweep: Nanos,
    pub evicted: u64,
    /// Bumped by every announcement: rx cores holding parked packets retry only when it moved.
    pub generation: u64,
}

impl MediaTable {
    pub fn new(idle: Nanos, cap: usize) -> Self {
        let touch_every = (idle / 16).min(1_000_000_000);
        MediaTable {
            v4: HashMap::default(),
            v6: HashMap::default(),
            idle,
            touch_every,
            cap,
            last_sweep: 0,
            evicted: 0,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn contains(&self, addr: IpAddr, port: u16) -> bool {
        let addr = canonical(addr);
        match addr {
            IpAddr::V4(a) => self.v4.contains_key(&v4_key(a, port)),
            IpAddr::V6(a) => self.v6.contains_key(&V6Key(a.to_bits(), port)),
        }
    }

    pub fn announce(&mut self, addr: IpAddr, port: u16, call_key: u64, now: Nanos) {
        let addr = canonical(addr);
        if self.len() >= self.cap && !self.contains(addr, port) {
            self.sweep(now);
            if self.len() >= self.cap {
                self.evicted += 1;
                return;
            }
        }
        let entry = Entry { call_key, last_use: AtomicI64::new(now) };
        match addr {
            IpAddr::V4(a) => self.v4.insert(v4_key(a, port), entry),
            IpAddr::V6(a) => self.v6.insert(V6Key(a.to_bits(), port), entry),
        };
        self.generation += 1;
    }

    /// Looks up an endpoint and marks it used.
    #[inline]
    pub fn lookup(&self, addr: IpAddr, port: u16, now: Nanos) -> Option<u64> {
        let addr = canonical(addr);
        let e = match addr {
            IpAddr::V4(a) => self.v4.get(&v4_key(a, port)),
            IpAddr::V6(a) => self.v6.get(&V6Key(a.to_bits(), port)),
        }?;
        if now - e.last_use.load(Ordering::Relaxed) > self.touch_every {
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
        let before = self.len();
        let fresh = |e: &Entry| now - e.last_use.load(Ordering::Relaxed) <= idle;
        self.v4.retain(|_, e| fresh(e));
        self.v6.retain(|_, e| fresh(e));
        self.evicted += (before - self.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn used_endpoints_stay_and_idle_ones_age_out() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = MediaTable::new(60 * S, 1000);
        t.announce(a, 4000, 7, 0);
        t.announce(a, 4002, 8, 0);
        // 4000 carries a packet every 100 ms for two minutes; 4002 stays silent.
        let mut now = 0;
        while now < 120 * S {
            now += S / 10;
            assert_eq!(t.lookup(a, 4000, now), Some(7));
        }
        t.maybe_sweep(now);
        assert_eq!(t.lookup(a, 4000, now), Some(7));
        assert_eq!(t.lookup(a, 4002, now), None);
        assert_eq!(t.evicted, 1);
    }

    #[test]
    fn ipv4_ipv6_and_mapped_endpoints() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let mut t = MediaTable::new(60 * S, 1000);
        t.announce(v4, 5000, 1, 0);
        t.announce(v6, 5000, 2, 0);
        assert_eq!(t.lookup(v4, 5000, 0), Some(1));
        assert_eq!(t.lookup(mapped, 5000, 0), Some(1));
        assert_eq!(t.lookup(v6, 5000, 0), Some(2));
        assert_eq!(t.lookup(v4, 5001, 0), None);
        assert_eq!(t.lookup("192.0.2.8".parse().unwrap(), 5000, 0), None);
        t.announce(mapped, 5000, 3, 0);
        assert_eq!((t.lookup(v4, 5000, 0), t.len()), (Some(3), 2), "the latest announcement wins");
    }

    #[test]
    fn a_full_table_sweeps_then_refuses() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = MediaTable::new(10 * S, 2);
        t.announce(a, 1, 1, 0);
        t.announce(a, 2, 2, 0);
        t.announce(a, 3, 3, S);
        assert_eq!((t.len(), t.evicted), (2, 1));
        t.announce(a, 4, 4, 20 * S);
        assert_eq!(t.lookup(a, 4, 20 * S), Some(4));
        assert_eq!(t.len(), 1, "the two idle ones were swept");
    }
}
