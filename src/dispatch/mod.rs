//! The rx stage: decode each frame, classify the datagrams (SIP by port and start line, media by the SDP
//! endpoint table), and hand them to their owner: SIP by a keyed hash of the Call-ID, media through the
//! endpoint's call. The same capture gives the same owners' input in the same order whatever their number.

pub mod batch;
pub mod media;
pub mod rss;

use std::hash::BuildHasher;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::decode::{Datagram, Decoder, Transport};
use crate::sip::{framing, msg, sdp};
use crate::time::{Nanos, NANOS_PER_SEC};

use batch::{Batch, ItemKind, MediaRoute};
use media::MediaTable;

/// Bytes of an RTP payload copied to the owner: the fixed header, CSRCs, a header extension and a
/// telephone-event body all fit.
const MEDIA_PREFIX: usize = 128;

/// Messages from an rx stage to an owner.
pub enum ToOwner {
    Batch(Batch),
    /// No more input; close every call as of this packet time.
    End(Nanos),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RxStats {
    pub sip_messages: u64,
    pub sip_unparsable: u64,
    pub media_packets: u64,
    pub unknown_udp: u64,
    pub media_endpoints: u64,
    pub media_table_evicted: u64,
    /// Batches dropped because an owner's ring was full (live sources only; files wait instead).
    pub ring_full_drops: Vec<u64>,
}

pub struct RxConfig {
    pub owners: usize,
    pub keep_sip_frames: bool,
    pub keep_media_frames: bool,
    /// Files: wait for a busy owner. Live sources: drop and count, never wait.
    pub blocking: bool,
    pub media_idle: Nanos,
}

/// Routing state of one rx core (the decoder lives beside it so the two can be borrowed apart).
pub struct Router {
    cfg: RxConfig,
    sip_ports: Box<[bool; 65536]>,
    media: MediaTable,
    hasher: std::hash::RandomState,
    batches: Vec<Batch>,
    to_owner: Vec<Sender<ToOwner>>,
    recycle: Receiver<Batch>,
    clock_sec: Option<i64>,
    last_ts: Nanos,
    pub stats: RxStats,
}

pub struct Rx {
    pub decoder: Decoder,
    pub router: Router,
}

impl Rx {
    pub fn new(
        decoder: Decoder,
        cfg: RxConfig,
        sip_ports: Box<[bool; 65536]>,
        to_owner: Vec<Sender<ToOwner>>,
        recycle: Receiver<Batch>,
    ) -> Self {
        let n = to_owner.len();
        let media = MediaTable::new(cfg.media_idle, 8 << 20);
        let router = Router {
            cfg,
            sip_ports,
            media,
            hasher: std::hash::RandomState::new(),
            batches: (0..n).map(|_| Batch::with_capacity()).collect(),
            to_owner,
            recycle,
            clock_sec: None,
            last_ts: 0,
            stats: RxStats { ring_full_drops: vec![0; n], ..Default::default() },
        };
        Rx { decoder, router }
    }

    /// One captured frame.
    #[inline]
    pub fn frame(&mut self, ts: Nanos, link_type: u16, data: &[u8]) {
        if self.router.clock(ts) {
            self.decoder.sweep(ts);
        }
        let router = &mut self.router;
        self.decoder.decode(ts, link_type, data, &mut |d| router.route(d));
    }

    /// Hands every partial batch to its owner (a live source does this when the link is quiet).
    pub fn flush(&mut self) {
        for i in 0..self.router.batches.len() {
            self.router.send(i);
        }
    }

    /// Flushes everything and tells the owners the input is over.
    pub fn finish(mut self) -> (Decoder, RxStats) {
        let end = self.router.last_ts;
        for i in 0..self.router.batches.len() {
            self.router.send(i);
            // End must arrive even on a live source whose ring is full.
            let _ = self.router.to_owner[i].send(ToOwner::End(end));
        }
        self.router.stats.media_table_evicted = self.router.media.evicted;
        (self.decoder, self.router.stats)
    }
}

impl Router {
    fn owner_of(&self, key: u64) -> usize {
        ((key as u128 * self.batches.len() as u128) >> 64) as usize
    }

    /// Packet time advances: crossing a whole second sends a tick to every owner (returns true then).
    fn clock(&mut self, ts: Nanos) -> bool {
        self.last_ts = self.last_ts.max(ts);
        let sec = ts.div_euclid(NANOS_PER_SEC);
        match self.clock_sec {
            None => self.clock_sec = Some(sec),
            Some(s) if sec > s => {
                self.clock_sec = Some(sec);
                for i in 0..self.batches.len() {
                    self.batches[i].push_tick(sec * NANOS_PER_SEC);
                    if self.batches[i].is_full() {
                        self.send(i);
                    }
                }
                self.media.maybe_sweep(ts);
                return true;
            }
            _ => {}
        }
        false
    }

    fn route(&mut self, d: &Datagram) {
        let sip_port = self.sip_ports[d.sport as usize] || self.sip_ports[d.dport as usize];
        if (sip_port || d.transport != Transport::Udp) && framing::looks_like_start(d.payload) {
            self.sip(d);
            return;
        }
        if d.transport != Transport::Udp {
            return;
        }
        let now = d.ts;
        let route = if let Some(k) = self.media.lookup(d.dst, d.dport, now) {
            MediaRoute { call_key: k, via_dst: true }
        } else if let Some(k) = self.media.lookup(d.src, d.sport, now) {
            MediaRoute { call_key: k, via_dst: false }
        } else {
            self.stats.unknown_udp += 1;
            return;
        };
        self.stats.media_packets += 1;
        let o = self.owner_of(route.call_key);
        let keep = self.cfg.keep_media_frames;
        // RTP needs only its header, a telephone-event body and (for padding) the last byte, which travels
        // separately: copy that much, not the voice samples. RTCP and anything odd travel whole (up to a cap).
        let limit = if crate::rtp::header::looks_like_rtcp(d.payload) {
            usize::MAX
        } else {
            crate::rtp::header::header_len(d.payload).map_or(MEDIA_PREFIX, |h| h + 4)
        };
        self.push(o, d, ItemKind::Media(route), keep, limit);
    }

    fn sip(&mut self, d: &Datagram) {
        let m = match msg::parse(d.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.sip_unparsable += 1;
                return;
            }
        };
        self.stats.sip_messages += 1;
        let key = self.hasher.hash_one(m.h.call_id);
        if let Some(text) = sdp::sdp_part(m.h.content_type, m.body) {
            let s = sdp::parse(text);
            for a in sdp::announced(&s) {
                self.media.announce(a.addr, a.port, key, d.ts);
                self.stats.media_endpoints += 1;
            }
        }
        let o = self.owner_of(key);
        let keep = self.cfg.keep_sip_frames;
        self.push(o, d, ItemKind::Sip { call_key: key }, keep, usize::MAX);
    }

    fn push(&mut self, o: usize, d: &Datagram, kind: ItemKind, keep_frames: bool, limit: usize) {
        let b = &mut self.batches[o];
        let frames = keep_frames.then_some(d.frames);
        b.push(d.ts, kind, d.src, d.dst, d.sport, d.dport, d.transport, d.vlan, d.payload, limit, frames);
        if b.is_full() {
            self.send(o);
        }
    }

    fn send(&mut self, o: usize) {
        if self.batches[o].items.is_empty() {
            return;
        }
        let fresh = match self.recycle.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Batch::with_capacity(),
        };
        let full = std::mem::replace(&mut self.batches[o], fresh);
        if self.cfg.blocking {
            if self.to_owner[o].send(ToOwner::Batch(full)).is_err() {
                self.stats.ring_full_drops[o] += 1;
            }
        } else {
            match self.to_owner[o].try_send(ToOwner::Batch(full)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.stats.ring_full_drops[o] += 1,
            }
        }
    }
}
