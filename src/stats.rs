//! Counters a running sensor publishes for the manager port (`sniffer_stat`): each rx core stores its own
//! totals about once a second of packet time (and when its link is quiet), the collector its CDR count, the
//! cleanspool thread the spool's size. Plain atomics: the fast side never waits on a reader.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct SourceCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Batches an owner could not take in time (a live source drops rather than waits).
    pub owner_queue_drops: AtomicU64,
    /// Monotonic seconds when this core last published (0: not yet): systemd's watchdog is fed while every core
    /// keeps beating.
    pub beat: AtomicI64,
}

pub struct Live {
    /// One per rx core (receive queue, AF_PACKET rx thread, listener).
    pub sources: Vec<SourceCounters>,
    pub cdrs: AtomicU64,
    /// Wall-clock seconds of the last CDR handed to storage (0: none yet).
    pub last_cdr_at: AtomicI64,
    /// Bytes in the spool as cleanspool last measured them (`u64::MAX`: not measured yet).
    pub spool_bytes: AtomicU64,
}

impl Live {
    pub fn new(sources: usize) -> Live {
        Live {
            sources: (0..sources.max(1)).map(|_| SourceCounters::default()).collect(),
            cdrs: AtomicU64::new(0),
            last_cdr_at: AtomicI64::new(0),
            spool_bytes: AtomicU64::new(u64::MAX),
        }
    }

    pub fn cdr_stored(&self) {
        self.cdrs.fetch_add(1, Ordering::Relaxed);
        self.last_cdr_at.store(crate::time::wall_clock().div_euclid(1_000_000_000), Ordering::Relaxed);
    }
}
