//! IPv4 and IPv6 fragment reassembly with bounded memory and a packet-time timeout.
//!
//! Fragments are rare on VoIP networks (large SIP over UDP), so this path may allocate; what it must not do
//! is grow without bound under hostile input: the number of datagrams in flight, the bytes held and the age
//! of a partial datagram are all capped, and every discarded fragment is counted.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::time::{secs, Nanos};

use super::ip::Fragment;

const MAX_DATAGRAM: u32 = 65_535;
const MAX_PENDING: usize = 4096;
const MAX_BYTES: usize = 32 << 20;
const MAX_PIECES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Partial {
    pieces: Vec<(u32, Vec<u8>)>,
    total: Option<u32>,
    bytes: usize,
    first_ts: Nanos,
    /// The fragments' raw frames, for the per-call pcap.
    frames: Vec<SavedFrame>,
}

/// A raw frame kept for the per-call pcap (the fragments of a reassembled datagram).
#[derive(Debug, Clone)]
pub struct SavedFrame {
    pub ts: Nanos,
    pub link_type: u16,
    pub data: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FragStats {
    pub fragments: u64,
    pub reassembled: u64,
    pub timed_out: u64,
    pub dropped_limits: u64,
    pub overlaps: u64,
}

/// A completed datagram: the upper-protocol payload and the frames it came in.
pub struct Reassembled {
    pub payload: Vec<u8>,
    pub frames: Vec<SavedFrame>,
}

pub struct Reassembler {
    pending: HashMap<Key, Partial>,
    bytes: usize,
    timeout: Nanos,
    last_sweep: Nanos,
    pub stats: FragStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(secs(30))
    }
}

impl Reassembler {
    pub fn new(timeout: Nanos) -> Self {
        Reassembler { pending: HashMap::new(), bytes: 0, timeout, last_sweep: 0, stats: FragStats::default() }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one fragment; returns the datagram when it is complete.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        ts: Nanos,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        frag: Fragment,
        payload: &[u8],
        frame: (u16, &[u8]),
    ) -> Option<Reassembled> {
        self.stats.fragments += 1;
        if ts - self.last_sweep > secs(1) {
            self.sweep(ts);
        }
        let end = frag.offset.saturating_add(payload.len() as u32);
        if end > MAX_DATAGRAM || (frag.more && !payload.len().is_multiple_of(8)) {
            self.stats.dropped_limits += 1;
            return None;
        }
        let key = Key { src, dst, id: frag.id, proto };
        if !self.pending.contains_key(&key) && (self.pending.len() >= MAX_PENDING || self.bytes >= MAX_BYTES) {
            self.stats.dropped_limits += 1;
            return None;
        }
        let p = self.pending.entry(key).or_insert_with(|| Partial {
            pieces: Vec::new(),
            total: None,
            bytes: 0,
            first_ts: ts,
            frames: Vec::new(),
        });
        if p.pieces.len() >= MAX_PIECES || self.bytes + payload.len() > MAX_BYTES {
            self.stats.dropped_limits += 1;
            let gone = self.pending.remove(&key).map(|p| p.bytes).unwrap_or(0);
            self.bytes -= gone;
            return None;
        }
        if !frag.more {
            match p.total {
                Some(t) if t != end => {
                    self.stats.overlaps += 1;
                    return None;
                }
                _ => p.total = Some(end),
            }
        }
        p.pieces.push((frag.offset, payload.to_vec()));
        p.bytes += payload.len();
        self.bytes += payload.len();
        p.frames.push(SavedFrame { ts, link_type: frame.0, data: frame.1.to_vec() });
        let total = p.total?;
        // Complete when the pieces cover [0, total) without a gap. First data wins on overlap.
        p.pieces.sort_by_key(|(o, _)| *o);
        let mut covered = 0u32;
        for (o, d) in &p.pieces {
            if *o > covered {
                return None;
            }
            covered = covered.max(o + d.len() as u32);
        }
        if covered < total {
            return None;
        }
        let p = self.pending.remove(&key)?;
        self.bytes -= p.bytes;
        let mut out = vec![0u8; total as usize];
        let mut filled = 0u32;
        for (o, d) in &p.pieces {
            let end = (o + d.len() as u32).min(total);
            if end <= filled {
                self.stats.overlaps += 1;
                continue;
            }
            let from = filled.max(*o);
            if from > *o {
                self.stats.overlaps += 1;
            }
            out[from as usize..end as usize].copy_from_slice(&d[(from - o) as usize..(end - o) as usize]);
            filled = end;
        }
        self.stats.reassembled += 1;
        Some(Reassembled { payload: out, frames: p.frames })
    }

    /// Drops partial datagrams older than the timeout (packet time).
    pub fn sweep(&mut self, now: Nanos) {
        self.last_sweep = now;
        let timeout = self.timeout;
        let mut freed = 0usize;
        let mut expired = 0u64;
        self.pending.retain(|_, p| {
            let keep = now - p.first_ts <= timeout;
            if !keep {
                freed += p.bytes;
                expired += 1;
            }
            keep
        });
        self.bytes -= freed;
        self.stats.timed_out += expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn out_of_order_and_duplicate_fragments() {
        let mut r = Reassembler::default();
        let data: Vec<u8> = (0..40u8).collect();
        let f = |o: u32, more| Fragment { id: 9, offset: o, more };
        assert!(r.add(1, ip(1), ip(2), 17, f(16, true), &data[16..32], (1, &[])).is_none());
        assert!(r.add(2, ip(1), ip(2), 17, f(32, false), &data[32..], (1, &[])).is_none());
        assert!(r.add(3, ip(1), ip(2), 17, f(16, true), &data[16..32], (1, &[])).is_none());
        let done = r.add(4, ip(1), ip(2), 17, f(0, true), &data[..16], (1, &[])).unwrap();
        assert_eq!(done.payload, data);
        assert_eq!(done.frames.len(), 4);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn timeout_frees_memory() {
        let mut r = Reassembler::new(secs(1));
        let f = Fragment { id: 1, offset: 0, more: true };
        r.add(0, ip(1), ip(2), 17, f, &[0; 8], (1, &[]));
        r.sweep(secs(5));
        assert_eq!(r.pending(), 0);
        assert_eq!(r.stats.timed_out, 1);
    }

    #[test]
    fn oversize_is_dropped() {
        let mut r = Reassembler::default();
        let f = Fragment { id: 1, offset: 65_528, more: false };
        assert!(r.add(0, ip(1), ip(2), 17, f, &[0; 16], (1, &[])).is_none());
        assert_eq!(r.stats.dropped_limits, 1);
    }
}
