//! The rx stage: decode each frame, classify the datagrams (SIP by port and start line, media by the SDP
//! endpoint table), and hand them to their owner: SIP by a keyed hash of the Call-ID, media through the
//! endpoint's call. The same capture gives the same owners' input in the same order whatever their number.

pub mod batch;
pub mod media;
pub mod ports;
pub mod rss;
pub mod rules;
mod stats;

pub use ports::PortCounts;
pub use stats::RxStats;

use std::hash::BuildHasher;

use std::collections::HashMap;

/// Flow keys are hashed on every media packet while anything is parked: a fast hasher, seeded per process.
type FastHash = foldhash::fast::RandomState;
use std::net::IpAddr;

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
    /// The manager asks for the calls in progress.
    Snapshot(crossbeam_channel::Sender<Vec<crate::call::live::LiveCall>>),
}

pub struct RxConfig {
    pub owners: usize,
    pub keep_sip_frames: bool,
    pub keep_media_frames: bool,
    /// Files: wait for a busy owner. Live sources: drop and count, never wait.
    pub blocking: bool,
    pub media_idle: Nanos,
    /// Which rx core this is (ticks carry it).
    pub source: u16,
}

/// An SDP endpoint one rx core saw, for the other cores' tables.
#[derive(Debug, Clone, Copy)]
struct Announce {
    addr: IpAddr,
    port: u16,
    call_key: u64,
    ts: Nanos,
}

/// What several rx cores of one capture share: announcement inboxes (each core keeps its own media table and
/// tells the others about the SDP endpoints it sees, so an RTP lookup takes no lock) and the Call-ID hash key
/// (so every core sends a call to the same owner).
#[derive(Clone)]
pub struct RxShared {
    inboxes: Vec<(Sender<Announce>, Receiver<Announce>)>,
    pub hasher: std::hash::RandomState,
}

impl RxShared {
    pub fn new(cores: usize) -> RxShared {
        RxShared {
            inboxes: (0..cores.max(1)).map(|_| crossbeam_channel::unbounded()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

/// This rx core's media table, and (with several cores) the links to the others.
struct Media {
    table: MediaTable,
    peers: Vec<Sender<Announce>>,
    inbox: Option<Receiver<Announce>>,
}

impl Media {
    #[inline]
    fn lookup(&self, addr: IpAddr, port: u16, now: Nanos) -> Option<u64> {
        self.table.lookup(addr, port, now)
    }

    fn shared(&self) -> bool {
        self.inbox.is_some()
    }

    fn generation(&self) -> u64 {
        self.table.generation
    }

    /// Applies the other cores' announcements.
    fn drain(&mut self) {
        if let Some(inbox) = &self.inbox {
            while let Ok(a) = inbox.try_recv() {
                self.table.announce(a.addr, a.port, a.call_key, a.ts);
            }
        }
    }

    fn announce(&mut self, addr: IpAddr, port: u16, call_key: u64, ts: Nanos) {
        self.table.announce(addr, port, call_key, ts);
        for p in &self.peers {
            // Unbounded: announcements are rare (one per SDP endpoint) and must not be lost.
            let _ = p.send(Announce { addr, port, call_key, ts });
        }
    }
}

/// A media packet whose endpoint was not (yet) in the table, waiting briefly: with several rx queues the SDP
/// that announces it may be on another core a moment behind.
struct Parked {
    until: std::time::Instant,
    ts: Nanos,
    skew: Nanos,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    vlan: Option<u16>,
    payload: Vec<u8>,
}

const PARK_MAX: usize = 8192;
/// How long a media packet waits for its SDP from another rx core: live skew between queues is microseconds to
/// milliseconds; a replayed file's queues can drift further apart.
const PARK_WAIT_LIVE: std::time::Duration = std::time::Duration::from_millis(50);
const PARK_WAIT_REPLAY: std::time::Duration = std::time::Duration::from_secs(2);

type Flow = (IpAddr, u16, IpAddr, u16);

/// Routing state of one rx core (the decoder lives beside it so the two can be borrowed apart).
pub struct Router {
    cfg: RxConfig,
    sip_ports: Box<[bool; 65536]>,
    media: Media,
    parked: std::collections::VecDeque<Parked>,
    /// Flows with packets parked: their later packets queue behind them, so a stream keeps its order.
    parked_flows: HashMap<Flow, u32, FastHash>,
    /// Scratch space of `retry_parked`, kept between calls so a retry allocates nothing.
    parked_keep: std::collections::VecDeque<Parked>,
    parked_blocked: std::collections::HashSet<Flow, FastHash>,
    parked_gen: u64,
    hasher: std::hash::RandomState,
    batches: Vec<Batch>,
    to_owner: Vec<Sender<ToOwner>>,
    recycle: Receiver<Batch>,
    clock_sec: Option<i64>,
    last_ts: Nanos,
    pub stats: RxStats,
    /// Where this core's totals are published for the manager port.
    live: Option<std::sync::Arc<crate::stats::Live>>,
    /// Rules `reload` may change, and the generation this core last took.
    rules: Option<(std::sync::Arc<rules::Rules>, u64)>,
    /// The remote sensor of the frames being routed (see `Rx::frame_from`).
    sensor: Option<u16>,
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
        shared: Option<&RxShared>,
    ) -> Self {
        let n = to_owner.len();
        let table = MediaTable::new(cfg.media_idle, 8 << 20);
        let me = cfg.source as usize;
        let (media, hasher) = match shared {
            Some(s) => (
                Media {
                    table,
                    peers: s
                        .inboxes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != me)
                        .map(|(_, (tx, _))| tx.clone())
                        .collect(),
                    inbox: s.inboxes.get(me).map(|(_, rx)| rx.clone()),
                },
                s.hasher.clone(),
            ),
            None => (Media { table, peers: Vec::new(), inbox: None }, std::hash::RandomState::new()),
        };
        let router = Router {
            cfg,
            sip_ports,
            media,
            parked: std::collections::VecDeque::new(),
            parked_flows: HashMap::default(),
            parked_keep: std::collections::VecDeque::new(),
            parked_blocked: std::collections::HashSet::default(),
            parked_gen: 0,
            hasher,
            batches: (0..n).map(|_| Batch::with_capacity()).collect(),
            to_owner,
            recycle,
            clock_sec: None,
            last_ts: 0,
            stats: RxStats { ring_full_drops: vec![0; n], ..Default::default() },
            live: None,
            rules: None,
            sensor: None,
        };
        Rx { decoder, router }
    }

    /// Publishes this core's totals to `live` from now on (about once a second).
    pub fn publish_to(&mut self, live: std::sync::Arc<crate::stats::Live>) {
        self.router.live = Some(live);
    }

    /// Follows `rules` from now on: a reload reaches this core within about a second.
    pub fn follow(&mut self, r: std::sync::Arc<rules::Rules>) {
        let g = r.generation();
        self.router.rules = Some((r, g));
    }

    /// The rules this core follows (the capture loop applies the filter part itself).
    pub fn rules(&self) -> Option<std::sync::Arc<rules::Rules>> {
        self.router.rules.as_ref().map(|(r, _)| r.clone())
    }

    /// Takes the reloaded rules, if they changed since the last look.
    fn refresh_rules(&mut self) {
        let Some((r, seen)) = &mut self.router.rules else { return };
        let g = r.generation();
        if g == *seen {
            return;
        }
        *seen = g;
        let c = r.current();
        self.router.sip_ports.copy_from_slice(&c.sip_ports[..]);
        self.decoder.set_sip_ports(&c.sip_ports);
    }

    /// Publishes this core's totals and heartbeat, and takes reloaded rules. The clock does this once a second of
    /// packet time; a source that has seen no packet yet (no time to move a clock to) calls it when idle.
    pub fn publish(&mut self) {
        self.refresh_rules();
        use std::sync::atomic::Ordering::Relaxed;
        let Some(live) = &self.router.live else { return };
        let Some(c) = live.sources.get(self.router.cfg.source as usize) else { return };
        let d = &self.decoder.stats;
        c.packets.store(d.frames, Relaxed);
        c.bytes.store(d.bytes, Relaxed);
        c.decode_errors.store(d.errors, Relaxed);
        c.owner_queue_drops.store(self.router.stats.ring_full_drops.iter().sum(), Relaxed);
        c.beat.store(crate::time::monotonic_secs(), Relaxed);
    }

    /// One captured frame.
    #[inline]
    /// A frame a remote sensor captured: the calls it starts carry that sensor's id into their CDRs.
    pub fn frame_from(&mut self, ts: Nanos, link_type: u16, data: &[u8], sensor: Option<u16>) {
        self.router.sensor = sensor;
        self.frame(ts, link_type, data);
        self.router.sensor = None;
    }

    pub fn frame(&mut self, ts: Nanos, link_type: u16, data: &[u8]) {
        if self.router.clock(ts) {
            self.decoder.sweep(ts);
            self.publish();
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

    /// This rx core has no input for now (its replay file is done): owners stop waiting for its clock.
    pub fn mark_done(&mut self) {
        let source = self.router.cfg.source;
        for i in 0..self.router.batches.len() {
            self.router.batches[i].push_tick(Nanos::MAX, source);
            self.router.send(i);
        }
    }

    /// A quiet live link: packet time is wall-clock time, so it advances without packets.
    pub fn idle_clock(&mut self, now: Nanos) {
        self.router.clock(now);
        self.flush();
        self.publish();
    }

    /// Media packets parked for a missing endpoint: route the ones whose SDP arrived, give up on the old ones.
    pub fn retry_parked(&mut self, all: bool) {
        self.router.retry_parked(all);
    }

    /// Flushes everything and tells the owners the input is over.
    pub fn finish(self) -> (Decoder, RxStats) {
        let (d, s, end, to_owner) = self.stop();
        for tx in to_owner {
            // End must arrive even on a live source whose ring is full.
            let _ = tx.send(ToOwner::End(end));
        }
        (d, s)
    }

    /// Flushes everything without ending the owners (other rx cores may still be running); returns the last
    /// packet time and the owner channels so the caller can end them once every rx core has stopped.
    pub fn stop(mut self) -> (Decoder, RxStats, Nanos, Vec<Sender<ToOwner>>) {
        self.router.retry_parked(true);
        for i in 0..self.router.batches.len() {
            self.router.send(i);
        }
        self.router.stats.media_table_evicted = self.router.media.table.evicted;
        let end = self.router.last_ts;
        let to_owner = std::mem::take(&mut self.router.to_owner);
        (self.decoder, self.router.stats, end, to_owner)
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
                    self.batches[i].push_tick(sec * NANOS_PER_SEC, self.cfg.source);
                    if self.batches[i].is_full() {
                        self.send(i);
                    }
                }
                self.media.table.maybe_sweep(ts);
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
        let flow = (d.src, d.sport, d.dst, d.dport);
        let behind = !self.parked_flows.is_empty() && self.parked_flows.contains_key(&flow);
        // The media table ages on this core's clock, not on a sender's.
        let now = d.ts.saturating_sub(d.skew);
        let mut route = if behind { None } else { self.media_route(now, d.src, d.sport, d.dst, d.dport) };
        if route.is_none() && !behind && self.media.shared() {
            // Perhaps another core has just announced it.
            self.media.drain();
            route = self.media_route(now, d.src, d.sport, d.dst, d.dport);
        }
        let Some(route) = route else {
            if framing::sip_first_line(d.payload) {
                // SIP on a port that is not in sipport: not media, and worth telling the operator about.
                self.stats.sip_other_ports.count(d.sport, d.dport);
                self.stats.unknown_udp += 1;
                return;
            }
            if self.media.shared() {
                self.park(d, flow);
            } else {
                self.stats.unknown_udp += 1;
            }
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

    fn media_route(&self, now: Nanos, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<MediaRoute> {
        if let Some(k) = self.media.lookup(dst, dport, now) {
            Some(MediaRoute { call_key: k, via_dst: true })
        } else {
            self.media.lookup(src, sport, now).map(|k| MediaRoute { call_key: k, via_dst: false })
        }
    }

    fn park(&mut self, d: &Datagram, flow: Flow) {
        if self.parked.len() >= PARK_MAX {
            if let Some(old) = self.parked.pop_front() {
                self.unpark((old.src, old.sport, old.dst, old.dport));
                self.stats.unknown_udp += 1;
            }
        }
        self.stats.media_parked += 1;
        *self.parked_flows.entry(flow).or_default() += 1;
        let wait = if self.cfg.blocking { PARK_WAIT_REPLAY } else { PARK_WAIT_LIVE };
        self.parked.push_back(Parked {
            until: std::time::Instant::now() + wait,
            ts: d.ts,
            skew: d.skew,
            src: d.src,
            dst: d.dst,
            sport: d.sport,
            dport: d.dport,
            vlan: d.vlan,
            payload: d.payload.to_vec(),
        });
    }

    fn unpark(&mut self, flow: Flow) {
        if let Some(n) = self.parked_flows.get_mut(&flow) {
            *n -= 1;
            if *n == 0 {
                self.parked_flows.remove(&flow);
            }
        }
    }

    /// Routes parked packets whose endpoint has appeared (checked only when the table changed), in order, and
    /// gives up on those that waited too long (`all`: on everything still unresolved).
    fn retry_parked(&mut self, all: bool) {
        self.media.drain();
        if self.parked.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let gen = self.media.generation();
        if gen != self.parked_gen || all {
            self.parked_gen = gen;
            let mut keep = std::mem::take(&mut self.parked_keep);
            // Another core may announce an endpoint while this scan runs: once a flow has a packet that stays
            // parked, its later packets stay too, so the flow is never reordered.
            let mut blocked = std::mem::take(&mut self.parked_blocked);
            blocked.clear();
            while let Some(p) = self.parked.pop_front() {
                let flow = (p.src, p.sport, p.dst, p.dport);
                let route = if blocked.contains(&flow) {
                    None
                } else {
                    self.media_route(p.ts.saturating_sub(p.skew), p.src, p.sport, p.dst, p.dport)
                };
                if route.is_none() && !all {
                    blocked.insert(flow);
                }
                match route {
                    Some(route) => {
                        self.unpark((p.src, p.sport, p.dst, p.dport));
                        self.route_parked(p, route);
                    }
                    None if all => {
                        self.unpark((p.src, p.sport, p.dst, p.dport));
                        self.stats.unknown_udp += 1;
                    }
                    None => keep.push_back(p),
                }
            }
            // The emptied queue becomes next call's scratch space, keeping its capacity.
            self.parked_keep = std::mem::replace(&mut self.parked, keep);
            self.parked_blocked = blocked;
        }
        while self.parked.front().is_some_and(|p| p.until <= now) {
            if let Some(p) = self.parked.pop_front() {
                self.unpark((p.src, p.sport, p.dst, p.dport));
                self.stats.unknown_udp += 1;
            }
        }
    }

    fn route_parked(&mut self, p: Parked, route: MediaRoute) {
        self.stats.media_packets += 1;
        let o = self.owner_of(route.call_key);
        let limit = if crate::rtp::header::looks_like_rtcp(&p.payload) {
            usize::MAX
        } else {
            crate::rtp::header::header_len(&p.payload).map_or(MEDIA_PREFIX, |h| h + 4)
        };
        let b = &mut self.batches[o];
        b.push(
            p.ts,
            p.skew,
            ItemKind::Media(route),
            p.src,
            p.dst,
            p.sport,
            p.dport,
            Transport::Udp,
            p.vlan,
            &p.payload,
            limit,
            None,
        );
        if b.is_full() {
            self.send(o);
        }
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
        let o = self.owner_of(key);
        let keep = self.cfg.keep_sip_frames;
        self.push(o, d, ItemKind::Sip { call_key: key, sensor: self.sensor }, keep, usize::MAX);
        if let Some(text) = sdp::sdp_part(m.h.content_type, m.body) {
            let s = sdp::parse(text);
            let announced = sdp::announced(&s);
            if !announced.is_empty() {
                if self.media.shared() {
                    // Another rx core may route this call's RTP as soon as it learns the endpoints: the SIP
                    // message must already be on its way to the owner, ahead of that RTP.
                    self.send(o);
                }
                self.stats.media_endpoints += announced.len() as u64;
                for a in &announced {
                    self.media.announce(a.addr, a.port, key, d.ts.saturating_sub(d.skew));
                }
            }
        }
    }

    fn push(&mut self, o: usize, d: &Datagram, kind: ItemKind, keep_frames: bool, limit: usize) {
        let b = &mut self.batches[o];
        let frames = keep_frames.then_some(d.frames);
        b.push(d.ts, d.skew, kind, d.src, d.dst, d.sport, d.dport, d.transport, d.vlan, d.payload, limit, frames);
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
            match self.to_owner[o].try_send(ToOwner::Batch(full)) {
                Ok(()) => {}
                Err(TrySendError::Full(full)) => {
                    let t0 = crate::time::thread_cpu_secs();
                    if self.to_owner[o].send(full).is_err() {
                        self.stats.ring_full_drops[o] += 1;
                    }
                    self.stats.owner_wait_cpu_s += crate::time::thread_cpu_secs() - t0;
                }
                Err(TrySendError::Disconnected(_)) => self.stats.ring_full_drops[o] += 1,
            }
        } else {
            match self.to_owner[o].try_send(ToOwner::Batch(full)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.stats.ring_full_drops[o] += 1,
            }
        }
    }
}
