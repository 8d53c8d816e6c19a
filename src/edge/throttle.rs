//! Failed authentications per source: after `max` within a minute the source is refused for a minute, so
//! guessing a link secret online costs an attacker a minute per `max` guesses from each address (and each /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Source;

const WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered at most; past it, the expired ones are forgotten first, then the whole table (a flood of
/// addresses must not grow memory without bound).
const REMEMBERED: usize = 65_536;

pub struct Throttle {
    max: u32,
    seen: Mutex<HashMap<Source, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Throttle {
    pub fn new(max: u32) -> Throttle {
        Throttle { max: max.max(1), seen: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` is refused now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.seen.lock().get(&Source::of(ip)).and_then(|e| e.blocked_until).is_some_and(|t| now < t)
    }

    /// Counts a failed authentication; true when this one blocked the source.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if seen.len() >= REMEMBERED {
            seen.retain(|_, e| now.duration_since(e.since) < WINDOW || e.blocked_until.is_some_and(|t| now < t));
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        let e = seen.entry(Source::of(ip)).or_insert(Entry { since: now, failures: 0, blocked_until: None });
        if now.duration_since(e.since) >= WINDOW {
            *e = Entry { since: now, failures: 0, blocked_until: e.blocked_until };
        }
        e.failures += 1;
        if e.failures >= self.max && e.blocked_until.is_none_or(|t| now >= t) {
            e.blocked_until = Some(now + WINDOW);
            e.failures = 0;
            e.since = now;
            return true;
        }
        false
    }
}

impl Throttle {
    /// A handshake that `failed` counted in advance succeeded: it is taken back (and a block it caused lifted).
    pub fn forgive(&self, ip: IpAddr) {
        let mut seen = self.seen.lock();
        if let Some(e) = seen.get_mut(&Source::of(ip)) {
            if e.failures == 0 {
                // This success's own count is what set the block (failures restart at a block).
                e.blocked_until = None;
            } else {
                e.failures -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let t = Throttle::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!t.failed(a) && !t.failed(a));
        assert!(!t.blocked(a));
        assert!(t.failed(a));
        assert!(t.blocked(a) && !t.blocked(b));
        // A success counted in advance and forgiven leaves no trace.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        for _ in 0..10 {
            t.failed(c);
            t.forgive(c);
        }
        assert!(!t.blocked(c));
    }
}
