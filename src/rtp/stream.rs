//! Per-stream RTP analysis. One stream = (source, destination, SSRC), as tshark's `rtp,streams` counts it.
//!
//! Packets, loss, sequence errors and jitter follow the arithmetic of Wireshark's RTP analysis (the corpus
//! oracle), so the numbers can be checked against tshark: jitter is RFC 3550's J ← J + (|D| − J)/16 on
//! arrival-versus-timestamp differences in milliseconds, lost = expected − received with expected counted
//! from the first to the last sequence number including wraps (negative when duplicates outnumber losses).
//! On top of it: delay buckets and loss bursts (VoIPmonitor's columns), RFC 2833 events and three MOS buffers.

use super::mos::MosSims;
use crate::time::Nanos;

/// What the stream needs to know about a packet's payload type (from the static table or the call's SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtKind {
    /// Audio or video with a known clock rate.
    Media { clock: u32, video: bool },
    /// RFC 2833/4733 telephone-event.
    Event,
    /// Comfort noise (PT 13 or 19).
    ComfortNoise,
    /// Nothing known: counted, but no jitter.
    Unknown,
}

/// One RFC 2833 event (a DTMF digit).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DtmfEvent {
    pub ts: Nanos,
    pub event: u8,
}

const MAX_DTMF: usize = 64;

/// Delay-bucket limits in ms: [50,70), [70,90), [90,120), [120,150), [150,200), [200,300), ≥300.
const BUCKETS: [f64; 7] = [50.0, 70.0, 90.0, 120.0, 150.0, 200.0, 300.0];

#[derive(Debug, Clone)]
pub struct RtpStream {
    pub first_ts: Nanos,
    pub last_ts: Nanos,
    pub packets: u32,
    pub bytes: u64,
    /// First payload type seen and the first audio/video one.
    pub first_pt: u8,
    pub media_pt: Option<u8>,
    pub seq_errors: u32,
    pub max_jitter: f64,
    pub mean_jitter: f64,
    pub max_delta: f64,
    pub delay_buckets: [u32; 7],
    /// Loss bursts: index k−1 counts gaps of k packets (k ≥ 10 in the last slot).
    pub loss_bursts: [u32; 10],
    pub dtmf: Vec<DtmfEvent>,
    pub video: bool,
    // Wireshark-compatible sequence state.
    start_seq: u16,
    stop_seq: u16,
    last_seq: u16,
    cycles: u32,
    under: bool,
    // Timestamp state (extended 64-bit RTP timestamps).
    ext_ts_last: i64,
    raw_ts_last: u32,
    /// Extended timestamp of the first packet.
    seq_ts: i64,
    last_nominal: f64,
    time_ms: f64,
    jitter: f64,
    pt: u8,
    // Extended sequence for the jitter buffers.
    ext_seq_last: i64,
    raw_seq_last: u16,
    last_event_ts: Option<u32>,
    jb: MosSims,
}

impl RtpStream {
    pub fn new(ts: Nanos) -> Self {
        RtpStream {
            first_ts: ts,
            last_ts: ts,
            packets: 0,
            bytes: 0,
            first_pt: 0,
            media_pt: None,
            seq_errors: 0,
            max_jitter: 0.0,
            mean_jitter: 0.0,
            max_delta: 0.0,
            delay_buckets: [0; 7],
            loss_bursts: [0; 10],
            dtmf: Vec::new(),
            video: false,
            start_seq: 0,
            stop_seq: 0,
            last_seq: 0,
            cycles: 0,
            under: false,
            ext_ts_last: 0,
            raw_ts_last: 0,
            seq_ts: 0,
            last_nominal: 0.0,
            time_ms: 0.0,
            jitter: 0.0,
            pt: 0,
            ext_seq_last: 0,
            raw_seq_last: 0,
            last_event_ts: None,
            jb: MosSims::new(),
        }
    }

    /// Feeds one packet. `payload` is the RTP payload (for telephone-event decoding).
    #[allow(clippy::too_many_arguments)]
    pub fn packet(&mut self, ts: Nanos, seq: u16, rtp_ts: u32, pt: u8, marker: bool, kind: PtKind, payload: &[u8]) {
        let now = (ts - self.first_ts) as f64 / 1_000_000.0;
        self.last_ts = self.last_ts.max(ts);
        if let PtKind::Media { video, .. } = kind {
            self.media_pt.get_or_insert(pt);
            self.video |= video;
        }
        if kind == PtKind::Event {
            self.event(ts, rtp_ts, payload);
        }
        // Extended timestamp: unwrap relative to the previous packet.
        let ext_ts = if self.packets == 0 {
            rtp_ts as i64
        } else {
            self.ext_ts_last + rtp_ts.wrapping_sub(self.raw_ts_last) as i32 as i64
        };
        let ext_seq = if self.packets == 0 {
            seq as i64
        } else {
            self.ext_seq_last + seq.wrapping_sub(self.raw_seq_last) as i16 as i64
        };
        self.ext_ts_last = ext_ts;
        self.raw_ts_last = rtp_ts;
        self.ext_seq_last = ext_seq;
        self.raw_seq_last = seq;

        if self.packets == 0 {
            self.packets = 1;
            self.first_pt = pt;
            self.start_seq = seq;
            self.stop_seq = seq;
            self.last_seq = seq;
            self.seq_ts = ext_ts;
            self.time_ms = now;
            self.last_nominal = 0.0;
            self.pt = pt;
            self.feed_jb(kind, ext_seq, ext_ts, now);
            return;
        }

        // "In time" is judged against the stream's first timestamp (Wireshark 4.0's rule).
        let in_time = ext_ts >= self.seq_ts;
        // Sequence wrap tracking (counts cycles for `expected`).
        let wrapped = seq < self.start_seq || (seq == 0 && self.stop_seq == 65535);
        if wrapped && in_time && !self.under {
            self.cycles += 1;
            self.under = true;
        } else if seq > self.start_seq && in_time && self.under {
            self.under = false;
        }
        let (last, cur) = (self.last_seq as i32, seq as i32);
        if in_time && (last + 1 == cur || (last == 65535 && cur == 0)) {
            self.last_seq = seq;
        } else if in_time && (last + 1 < cur || last - cur > 0xff00) {
            let gap = if cur > last { cur - last - 1 } else { cur + 65536 - last - 1 };
            if gap > 0 {
                self.loss_bursts[(gap.min(10) - 1) as usize] += 1;
            }
            self.last_seq = seq;
            self.seq_errors += 1;
        } else if last + 1 > cur {
            self.seq_errors += 1;
        }

        let cn = pt == 13 || pt == 19;
        let follow_cn = self.pt == 13 || self.pt == 19;
        self.pt = pt;
        let clock = match kind {
            PtKind::Media { clock, .. } => clock,
            PtKind::ComfortNoise => 8000,
            _ => 0,
        };
        let mut current_jitter = 0.0;
        let mut delta = now - self.time_ms;
        if clock != 0 && in_time {
            // Nominal time of this packet since the stream's first timestamp, in ms. The previous nominal time
            // is only advanced by packets with a clock (not by telephone-events), while the arrival reference
            // moves with every in-time packet, as in the oracle's arithmetic.
            let nominal = (ext_ts - self.seq_ts) as f64 / (clock as f64 / 1000.0);
            let expected = self.time_ms + (nominal - self.last_nominal);
            self.last_nominal = nominal;
            let diff = (now - expected).abs();
            current_jitter = (15.0 * self.jitter + diff) / 16.0;
            delta = now - self.time_ms;
            self.jitter = current_jitter;
            if matches!(kind, PtKind::Media { video: false, .. }) {
                // VoIPmonitor's delay distribution: |D| per voice packet, in whole ms.
                let d = diff.floor();
                if let Some(b) = BUCKETS.iter().rposition(|&lim| d >= lim) {
                    self.delay_buckets[b] += 1;
                }
            }
        }
        let regular = !marker && !cn && in_time && !follow_cn;
        if regular {
            if delta > self.max_delta {
                self.max_delta = delta;
            }
            if clock != 0 {
                if self.jitter > self.max_jitter {
                    self.max_jitter = self.jitter;
                }
                let n = self.packets as f64;
                self.mean_jitter = (self.mean_jitter * (n - 1.0) + current_jitter) / n;
            }
        }
        if in_time {
            self.time_ms = now;
        }
        self.stop_seq = seq;
        self.packets += 1;
        self.feed_jb(kind, ext_seq, ext_ts, now);
    }

    fn feed_jb(&mut self, kind: PtKind, ext_seq: i64, ext_ts: i64, now: f64) {
        match kind {
            PtKind::Media { clock, video: false } if clock > 0 => {
                let nominal = ext_ts as f64 * 1000.0 / clock as f64;
                self.jb.packet(ext_seq, nominal, now);
            }
            // DTMF events and comfort noise share the sequence numbers: they are neither voice nor lost.
            _ => self.jb.untimed(ext_seq),
        }
    }

    fn event(&mut self, ts: Nanos, rtp_ts: u32, payload: &[u8]) {
        if payload.len() < 4 {
            return;
        }
        // A new event starts with a new RTP timestamp; its retransmitted end packets share it.
        if self.last_event_ts != Some(rtp_ts) {
            self.last_event_ts = Some(rtp_ts);
            if self.dtmf.len() < MAX_DTMF {
                self.dtmf.push(DtmfEvent { ts, event: payload[0] });
            }
        }
    }

    /// Reads the fields `packet` updates, spread over the struct's cache lines.
    pub fn warm(&self) -> u32 {
        self.packets ^ self.cycles ^ self.raw_ts_last ^ self.delay_buckets[0] ^ self.jb.warm()
    }

    /// Packets expected from the first to the last sequence number (Wireshark's count).
    pub fn expected(&self) -> i64 {
        (self.stop_seq as i64 + self.cycles as i64 * 65536) - self.start_seq as i64 + 1
    }

    /// Lost = expected − received; negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        self.expected() - self.packets as i64
    }

    /// Finishes the MOS simulators: ((f1 avg, min), (f2 avg, min), (adaptive avg, min)).
    pub fn mos(&mut self) -> [(f64, f64); 3] {
        self.jb.finish(self.span_ms())
    }

    /// The MOS as if the stream ended now, leaving the stream as it is (a live call's current quality).
    pub fn mos_so_far(&self) -> [(f64, f64); 3] {
        self.jb.clone().finish(self.span_ms())
    }

    /// Milliseconds from the first packet to the last, where the jitter-buffer simulations end.
    fn span_ms(&self) -> f64 {
        (self.last_ts - self.first_ts) as f64 / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const PCMA: PtKind = PtKind::Media { clock: 8000, video: false };

    #[test]
    fn steady_stream_has_no_jitter_or_loss() {
        let mut s = RtpStream::new(0);
        for i in 0..100u16 {
            s.packet(i as i64 * 20 * MS, 1000 + i, 160 * i as u32, 8, false, PCMA, &[0; 160]);
        }
        assert_eq!((s.packets, s.lost(), s.seq_errors), (100, 0, 0));
        assert!(s.max_jitter < 1e-9);
    }

    #[test]
    fn loss_wrap_and_duplicates() {
        let mut s = RtpStream::new(0);
        let mut t = 0;
        let mut rtp_ts = 0u32;
        for seq in (65530u16..=65535).chain(0..10) {
            t += 20 * MS;
            rtp_ts += 160;
            if seq == 3 || seq == 4 {
                continue;
            }
            s.packet(t, seq, rtp_ts, 0, false, PCMA, &[]);
        }
        assert_eq!(s.lost(), 2);
        assert_eq!(s.loss_bursts[1], 1);
        // Two duplicates of the last packet make loss negative, as tshark shows.
        s.packet(t + MS, 9, rtp_ts, 0, false, PCMA, &[]);
        s.packet(t + 2 * MS, 9, rtp_ts, 0, false, PCMA, &[]);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = RtpStream::new(0);
        s.packet(0, 1, 0, 0, false, PCMA, &[]);
        s.packet(30 * MS, 2, 160, 0, false, PCMA, &[]); // 10 ms late
        assert!((s.max_jitter - 10.0 / 16.0).abs() < 1e-9);
    }
}
