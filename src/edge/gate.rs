//! Admission of connections to one listener. Three counts bound what peers can hold: connections still proving
//! who they are (`preauth_max`), connections past that (`conn_max`), and connections from one source in either
//! state (`per_ip_max`). When the pre-authentication slots are full, a new connection evicts the oldest one still
//! waiting there rather than being refused: a flood of slow strangers then keeps cycling through the slots while a
//! real peer, which completes its handshake in milliseconds, gets through.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Source;
use crate::config::net::NetLimits;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub preauth_max: u32,
    pub conn_max: u32,
    pub per_ip_max: u32,
}

impl Limits {
    pub fn from_net(n: &NetLimits) -> Limits {
        Limits { preauth_max: n.preauth_max, conn_max: n.conn_max, per_ip_max: n.per_ip_max }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GateStats {
    pub accepted: u64,
    /// Refused because their source already held `per_ip_max` connections.
    pub refused_per_ip: u64,
    /// Refused after authenticating because `conn_max` connections were established.
    pub refused_full: u64,
    /// Unauthenticated connections closed to make room for newer ones.
    pub evicted: u64,
    /// Unauthenticated and established connections now.
    pub preauth_now: u64,
    pub established_now: u64,
}

#[derive(Default)]
struct Inner {
    preauth: u32,
    established: u32,
    per_source: HashMap<Source, u32>,
    /// Pre-authentication connections by age: admission number → its eviction signal.
    waiting: BTreeMap<u64, Arc<Notify>>,
}

pub struct Gate {
    limits: Limits,
    inner: Mutex<Inner>,
    next: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_full: AtomicU64,
    evicted: AtomicU64,
    accepted: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    PerSource,
    Full,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            inner: Mutex::new(Inner::default()),
            next: AtomicU64::new(1),
            refused_per_ip: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        })
    }

    /// A new connection from `ip`, in the pre-authentication state.
    pub fn admit(self: &Arc<Gate>, ip: IpAddr) -> Result<Admission, Refused> {
        let source = Source::of(ip);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let mut g = self.inner.lock();
        let held = g.per_source.get(&source).copied().unwrap_or(0);
        if held >= self.limits.per_ip_max {
            drop(g);
            self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PerSource);
        }
        if g.preauth >= self.limits.preauth_max {
            // The oldest waiting connection gives up its slot now; its task sees the signal and closes.
            if let Some((_, signal)) = g.waiting.pop_first() {
                g.preauth -= 1;
                signal.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        g.preauth += 1;
        *g.per_source.entry(source).or_insert(0) += 1;
        g.waiting.insert(id, evict.clone());
        drop(g);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { gate: self.clone(), id, source, evict, state: State::Waiting })
    }

    pub fn stats(&self) -> GateStats {
        let g = self.inner.lock();
        GateStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            preauth_now: g.preauth as u64,
            established_now: g.established as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Established,
    /// Holds only its source's count (refused after authenticating, or evicted).
    Released,
}

/// One admitted connection's place; given back when dropped.
pub struct Admission {
    gate: Arc<Gate>,
    id: u64,
    source: Source,
    evict: Arc<Notify>,
    state: State,
}

impl Admission {
    /// Resolves when a newer connection took this one's pre-authentication slot (never, once established).
    pub async fn evicted(&self) {
        if self.state == State::Waiting {
            self.evict.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// The peer proved who it is: it moves to the established count, if there is room there.
    pub fn establish(&mut self) -> Result<(), Refused> {
        match self.state {
            State::Established => return Ok(()),
            State::Released => return Err(Refused::Full),
            State::Waiting => {}
        }
        let mut g = self.gate.inner.lock();
        if g.waiting.remove(&self.id).is_none() {
            // Evicted in the meantime: its slot is gone already.
            self.state = State::Released;
            return Err(Refused::Full);
        }
        g.preauth -= 1;
        if g.established >= self.gate.limits.conn_max {
            self.state = State::Released;
            drop(g);
            self.gate.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        g.established += 1;
        self.state = State::Established;
        Ok(())
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut g = self.gate.inner.lock();
        match self.state {
            State::Waiting => {
                if g.waiting.remove(&self.id).is_some() {
                    g.preauth -= 1;
                }
            }
            State::Established => g.established -= 1,
            State::Released => {}
        }
        if let Some(n) = g.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                g.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn caps_evict_and_release() {
        let g = Gate::new(Limits { preauth_max: 3, conn_max: 1, per_ip_max: 2 });
        let a = g.admit(ip("10.0.0.1")).unwrap();
        let _b = g.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.1")).err(), Some(Refused::PerSource));
        let _c = g.admit(ip("10.0.0.2")).unwrap();
        // Full: the oldest waiting (a) is evicted for the newcomer.
        let mut d = g.admit(ip("10.0.0.3")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), a.evicted()).await.unwrap();
        assert_eq!(g.stats().evicted, 1);
        assert_eq!(g.stats().preauth_now, 3);
        d.establish().unwrap();
        let mut e = g.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(e.establish(), Err(Refused::Full));
        drop(e);
        drop(a);
        let s = g.stats();
        assert_eq!((s.preauth_now, s.established_now), (2, 1));
        // a's source slot came back.
        let _f = g.admit(ip("10.0.0.1"));
        drop(d);
        assert_eq!(g.stats().established_now, 0);
    }
}
