//! An owner core: the calls whose Call-ID hashes to it, fed by its rx rings, closed by packet-time timers.
//!
//! Timers are evaluated at whole-second ticks of packet time that every owner receives, so when a call ends
//! never depends on how many owners share the work, nor on what other calls an owner holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender};

use super::cdr::{self, Cdr};
use super::{Call, EndReason, MediaOutcome, SipPacket, Timeouts};
use crate::config::SaveRtp;
use crate::dispatch::batch::{Batch, Item, ItemKind};
use crate::dispatch::ToOwner;
use crate::sip::msg::{self, Method};
use crate::store::spool::{self, Chunk, FileKind};
use crate::time::Nanos;

#[derive(Debug, Clone)]
pub struct OwnerConfig {
    pub timeouts: Timeouts,
    pub id_sensor: Option<u16>,
    pub save_sip: bool,
    pub save_rtp: SaveRtp,
    pub save_rtcp: bool,
    pub spooldir: PathBuf,
    pub utc: bool,
    /// How many rx cores feed the owners (each sends its own ticks).
    pub sources: usize,
    /// Files: wait for the slow side. Live sources: count a drop instead.
    pub blocking: bool,
    /// Calls open across all owners, and the most at once (shared; touched once per call, not per packet).
    pub gauge: std::sync::Arc<CallGauge>,
}

#[derive(Debug, Default)]
pub struct CallGauge {
    pub open: std::sync::atomic::AtomicI64,
    pub peak: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct OwnerStats {
    pub sip_messages: u64,
    pub sip_requests: BTreeMap<String, u64>,
    /// SIP messages that belong to no call (REGISTER, OPTIONS, stray responses…).
    pub non_call_sip: u64,
    pub calls: u64,
    pub cdrs: u64,
    pub rtp_packets: u64,
    pub rtcp_packets: u64,
    pub media_without_call: u64,
    pub media_ignored: u64,
    /// Packets of non-RTP media such as T.38 (UDPTL).
    pub non_rtp_media: u64,
    pub callid_collisions: u64,
    pub cdr_queue_drops: u64,
    pub spool_queue_drops: u64,
    pub spool_link_mismatch: u64,
    pub streams: u64,
    /// RTP packets not analysed because their call already had the maximum number of streams.
    pub packets_over_stream_limit: u64,
    pub active_calls_peak: u64,
    /// CPU seconds of each owner thread.
    pub cpu_s: Vec<f64>,
}

impl OwnerStats {
    /// Another owner's counters added in; per-thread CPU seconds are concatenated.
    pub fn add(&mut self, b: OwnerStats) {
        let OwnerStats {
            sip_messages,
            sip_requests,
            non_call_sip,
            calls,
            cdrs,
            rtp_packets,
            rtcp_packets,
            media_without_call,
            media_ignored,
            non_rtp_media,
            callid_collisions,
            cdr_queue_drops,
            spool_queue_drops,
            spool_link_mismatch,
            streams,
            packets_over_stream_limit,
            active_calls_peak,
            cpu_s,
        } = b;
        self.sip_messages += sip_messages;
        for (k, v) in sip_requests {
            *self.sip_requests.entry(k).or_default() += v;
        }
        self.non_call_sip += non_call_sip;
        self.calls += calls;
        self.cdrs += cdrs;
        self.rtp_packets += rtp_packets;
        self.rtcp_packets += rtcp_packets;
        self.media_without_call += media_without_call;
        self.media_ignored += media_ignored;
        self.non_rtp_media += non_rtp_media;
        self.callid_collisions += callid_collisions;
        self.cdr_queue_drops += cdr_queue_drops;
        self.spool_queue_drops += spool_queue_drops;
        self.spool_link_mismatch += spool_link_mismatch;
        self.streams += streams;
        self.packets_over_stream_limit += packets_over_stream_limit;
        self.active_calls_peak += active_calls_peak;
        self.cpu_s.extend(cpu_s);
    }
}

pub struct Owner {
    cfg: OwnerConfig,
    clocks: Vec<Nanos>,
    fired: Nanos,
    calls: HashMap<u64, Box<Call>, BuildHasherDefault<KeyHasher>>,
    cdrs: Sender<Cdr>,
    spool: Option<Sender<Chunk>>,
    pub stats: OwnerStats,
}

impl Owner {
    pub fn new(cfg: OwnerConfig, cdrs: Sender<Cdr>, spool: Option<Sender<Chunk>>) -> Self {
        let clocks = vec![Nanos::MIN; cfg.sources.max(1)];
        Owner { cfg, clocks, fired: Nanos::MIN, calls: HashMap::default(), cdrs, spool, stats: OwnerStats::default() }
    }

    /// The owner's loop: batches until `End`, then every open call is closed as a capture's end closes it.
    pub fn run(mut self, rx: Receiver<ToOwner>, recycle: Sender<Batch>) -> OwnerStats {
        for m in rx {
            match m {
                ToOwner::Batch(b) => {
                    // Call and stream state is cold (thousands of calls): touch a window of upcoming items'
                    // state first, so the cache misses of independent items overlap instead of queueing.
                    const AHEAD: usize = 16;
                    for (i, it) in b.items.iter().enumerate() {
                        if i % AHEAD == 0 {
                            self.warm(&b.items[i..(i + AHEAD).min(b.items.len())]);
                        }
                        self.item(&b, it);
                    }
                    let _ = recycle.try_send(b);
                }
                ToOwner::End(at) => {
                    self.close_all(at);
                    break;
                }
                ToOwner::Snapshot(reply) => {
                    // Calls whose BYE was answered are over for an operator, whatever their timers.
                    let live = self
                        .calls
                        .values()
                        .filter(|c| !c.bye_confirmed)
                        .map(|c| super::live::LiveCall::of(c))
                        .collect();
                    let _ = reply.try_send(live);
                }
            }
        }
        self.stats.cpu_s = vec![crate::time::thread_cpu_secs()];
        self.stats
    }

    fn warm(&self, items: &[Item]) {
        let mut acc = 0u32;
        for it in items {
            if let ItemKind::Media(r) = it.kind {
                if let Some(c) = self.calls.get(&r.call_key) {
                    acc ^= c.warm();
                }
            }
        }
        std::hint::black_box(acc);
    }

    fn item(&mut self, b: &Batch, it: &Item) {
        match it.kind {
            ItemKind::Tick { at, source } => {
                // Timers run as of the slowest rx core's clock, so no core's packets arrive for a call that was
                // already closed as of a later time.
                let s = source as usize;
                if s >= self.clocks.len() {
                    self.clocks.resize(s + 1, Nanos::MIN);
                }
                self.clocks[s] = if at == Nanos::MAX { Nanos::MAX } else { at.max(self.clocks[s].min(at)) };
                let effective = self.clocks.iter().copied().min().unwrap_or(at);
                if effective != Nanos::MAX && effective > self.fired {
                    self.fired = effective;
                    self.tick(effective);
                }
            }
            ItemKind::Sip { call_key, sensor } => self.sip(b, it, call_key, sensor),
            ItemKind::Media(route) => {
                let Some(call) = self.calls.get_mut(&route.call_key) else {
                    self.stats.media_without_call += 1;
                    return;
                };
                call.heard(it.skew);
                let out = call.media(
                    it.ts,
                    it.src,
                    it.sport,
                    it.dst,
                    it.dport,
                    route.via_dst,
                    b.payload(it),
                    it.wire_len as usize,
                    it.tail,
                );
                let save = match out {
                    MediaOutcome::Rtp => {
                        self.stats.rtp_packets += 1;
                        match self.cfg.save_rtp {
                            SaveRtp::No => None,
                            SaveRtp::Yes => Some(None),
                            // Link + IP + UDP + RTP header: the RTP header ends 12 bytes into the payload.
                            SaveRtp::Header => Some(Some(12)),
                        }
                    }
                    MediaOutcome::Rtcp => {
                        self.stats.rtcp_packets += 1;
                        self.cfg.save_rtcp.then_some(None)
                    }
                    MediaOutcome::NotRtp => {
                        self.stats.non_rtp_media += 1;
                        None
                    }
                    MediaOutcome::Ignored => {
                        self.stats.media_ignored += 1;
                        None
                    }
                };
                if let Some(header_only) = save {
                    let key = route.call_key;
                    self.spool_frames(key, FileKind::Rtp, b, it, header_only);
                }
            }
        }
    }

    fn sip(&mut self, b: &Batch, it: &Item, key: u64, sensor: Option<u16>) {
        let Ok(m) = msg::parse(b.payload(it)) else {
            return;
        };
        self.stats.sip_messages += 1;
        if let Some(method) = m.method() {
            *self.stats.sip_requests.entry(method.as_str().to_string()).or_default() += 1;
        }
        let p = SipPacket {
            ts: it.ts,
            src: it.src,
            sport: it.sport,
            dst: it.dst,
            dport: it.dport,
            transport: it.transport,
            vlan: it.vlan,
            msg: &m,
        };
        match self.calls.get_mut(&key) {
            Some(call) if call.callid.as_bytes() == m.h.call_id => {
                call.heard(it.skew);
                call.sip(&p);
            }
            Some(_) => {
                self.stats.callid_collisions += 1;
                return;
            }
            None if m.method() == Some(Method::Invite) => {
                let mut call = Box::new(Call::new(key, &p));
                call.sensor = sensor;
                call.heard(it.skew);
                call.sip(&p);
                self.calls.insert(key, call);
                self.stats.calls += 1;
                let open = self.cfg.gauge.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                self.cfg.gauge.peak.fetch_max(open, std::sync::atomic::Ordering::Relaxed);
                self.stats.active_calls_peak = self.stats.active_calls_peak.max(self.calls.len() as u64);
            }
            None => {
                self.stats.non_call_sip += 1;
                return;
            }
        }
        if self.cfg.save_sip {
            self.spool_frames(key, FileKind::Sip, b, it, None);
        }
    }

    fn spool_frames(&mut self, key: u64, kind: FileKind, b: &Batch, it: &Item, header_only: Option<usize>) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(tx) = self.spool.as_ref() else {
            return;
        };
        let base = &self.cfg.spooldir;
        let fb = spool::file_safe(&call.callid);
        for f in b.frames_of(it) {
            let frame = b.frame_bytes(f);
            if frame.is_empty() {
                continue;
            }
            // For header-only RTP keep everything up to the RTP header's end.
            let keep = header_only.map(|rtp_hdr| frame.len().saturating_sub(it.wire_len as usize) + rtp_hdr);
            if let Some(chunk) =
                call.spool.add(kind, base, call.first_ts, self.cfg.utc, &fb, f.ts, f.link_type, frame, keep)
            {
                send(tx, chunk, self.cfg.blocking, &mut self.stats.spool_queue_drops);
            }
        }
    }

    /// Timers as of whole second `at` of the rx stages' clock (packet time; the receive time where packets carry
    /// their sender's time).
    fn tick(&mut self, at: Nanos) {
        let t = self.cfg.timeouts;
        let expired: Vec<(u64, EndReason)> =
            self.calls.iter().filter_map(|(k, c)| c.expired_at(at, &t).map(|r| (*k, r))).collect();
        for (k, r) in expired {
            self.close(k, r);
        }
    }

    fn close(&mut self, key: u64, reason: EndReason) {
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        self.cfg.gauge.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let sensor = call.sensor.or(self.cfg.id_sensor);
        let cdr = cdr::build(&mut call, reason, sensor);
        self.stats.streams += cdr.streams as u64;
        self.stats.packets_over_stream_limit += call.packets_over_stream_limit as u64;
        self.stats.spool_link_mismatch += call.spool.mismatched_link as u64;
        if let Some(tx) = self.spool.as_ref() {
            for chunk in call.spool.finish() {
                send(tx, chunk, self.cfg.blocking, &mut self.stats.spool_queue_drops);
            }
        }
        self.stats.cdrs += 1;
        tracing::debug!(callid = %cdr.callid, ?reason, streams = cdr.streams, "call closed");
        send(&self.cdrs, cdr, self.cfg.blocking, &mut self.stats.cdr_queue_drops);
    }

    fn close_all(&mut self, _at: Nanos) {
        let mut keys: Vec<u64> = self.calls.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            self.close(k, EndReason::Normal);
        }
    }
}

fn send<T>(tx: &Sender<T>, v: T, blocking: bool, drops: &mut u64) {
    let ok = if blocking { tx.send(v).is_ok() } else { tx.try_send(v).is_ok() };
    if !ok {
        *drops += 1;
    }
}

/// Call keys are already keyed SipHash values of the Call-ID (random per process): use them as they are.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}
