//! What travels from an rx core to an owner core: batches of decoded packets in one reusable arena.
//!
//! The rx stage copies each datagram's payload (and, when the spool wants them, the raw frames) into the
//! batch's byte arena, so nothing is allocated per packet; emptied batches return to the rx stage for reuse.

use std::net::IpAddr;

use crate::decode::{Frames, Transport};
use crate::time::Nanos;

/// How the rx stage routed a non-SIP datagram: the media endpoint it matched, and that endpoint's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRoute {
    pub call_key: u64,
    /// True when the destination endpoint matched (else the source did).
    pub via_dst: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Sip {
        call_key: u64,
        /// The remote sensor whose packets these are (a central analysing packet-mode remotes), else `None`.
        sensor: Option<u16>,
    },
    Media(MediaRoute),
    /// Packet time of rx core `source` reached this whole second; owners check their calls' timers once every
    /// rx core has reached it. `at == Nanos::MAX`: that rx core has no more input for now.
    Tick {
        at: Nanos,
        source: u16,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    pub ts: Nanos,
    pub link_type: u16,
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub ts: Nanos,
    /// `ts` minus the rx stage's clock when the packet came: a sender's clock offset (HEP from a live source),
    /// else 0. Ticks are on the rx clock; a call's timers move them by its packets' skew.
    pub skew: Nanos,
    pub kind: ItemKind,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub vlan: Option<u16>,
    /// The copied payload; for RTP only its first bytes (headers), see `wire_len`.
    pub payload: (u32, u32),
    pub frames: (u32, u32),
    /// The payload's length on the wire, and its last byte when the RTP padding bit is set (else 0).
    pub wire_len: u32,
    pub tail: u8,
}

#[derive(Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub frames: Vec<FrameRef>,
    pub items: Vec<Item>,
}

pub const BATCH_ITEMS: usize = 256;
pub const BATCH_BYTES: usize = 512 * 1024;

impl Batch {
    pub fn with_capacity() -> Self {
        Batch {
            data: Vec::with_capacity(BATCH_BYTES + 70_000),
            frames: Vec::with_capacity(BATCH_ITEMS),
            items: Vec::with_capacity(BATCH_ITEMS),
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
        self.items.clear();
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= BATCH_ITEMS || self.data.len() >= BATCH_BYTES
    }

    fn push_bytes(&mut self, b: &[u8]) -> (u32, u32) {
        let s = self.data.len() as u32;
        self.data.extend_from_slice(b);
        (s, self.data.len() as u32)
    }

    /// Appends a datagram; `keep_frames` copies the raw frames too (for the per-call pcap).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts: Nanos,
        skew: Nanos,
        kind: ItemKind,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        transport: Transport,
        vlan: Option<u16>,
        payload: &[u8],
        copy_limit: usize,
        frames: Option<Frames<'_>>,
    ) {
        let wire_len = payload.len() as u32;
        // The last byte is an RTP padding count, needed only when the padding bit is set; reading it
        // otherwise costs a cache miss on the far end of every packet.
        let tail = match payload.first() {
            Some(b) if b & 0x20 != 0 => payload.last().copied().unwrap_or(0),
            _ => 0,
        };
        let payload = self.push_bytes(&payload[..payload.len().min(copy_limit)]);
        let f0 = self.frames.len() as u32;
        match frames {
            Some(Frames::One { link_type, data, ts }) => {
                let (start, end) = self.push_bytes(data);
                self.frames.push(FrameRef { ts, link_type, start, end });
            }
            Some(Frames::Many(list)) => {
                for f in list {
                    let (start, end) = self.push_bytes(&f.data);
                    self.frames.push(FrameRef { ts: f.ts, link_type: f.link_type, start, end });
                }
            }
            None => {}
        }
        let f1 = self.frames.len() as u32;
        self.items.push(Item {
            ts,
            skew,
            kind,
            src,
            dst,
            sport,
            dport,
            transport,
            vlan,
            payload,
            frames: (f0, f1),
            wire_len,
            tail,
        });
    }

    pub fn push_tick(&mut self, at: Nanos, source: u16) {
        let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        self.items.push(Item {
            ts: at,
            skew: 0,
            kind: ItemKind::Tick { at, source },
            src: unspecified,
            dst: unspecified,
            sport: 0,
            dport: 0,
            transport: Transport::Udp,
            vlan: None,
            payload: (0, 0),
            frames: (0, 0),
            wire_len: 0,
            tail: 0,
        });
    }

    pub fn payload(&self, it: &Item) -> &[u8] {
        &self.data[it.payload.0 as usize..it.payload.1 as usize]
    }

    pub fn frames_of(&self, it: &Item) -> &[FrameRef] {
        &self.frames[it.frames.0 as usize..it.frames.1 as usize]
    }

    pub fn frame_bytes(&self, f: &FrameRef) -> &[u8] {
        &self.data[f.start as usize..f.end as usize]
    }
}
