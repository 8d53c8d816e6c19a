//! MOS estimate from a jitter-buffer simulation (reference §6): a packet that reaches the simulated buffer
//! after its playout deadline counts as lost, like a missing one; losses are grouped in sequence order into
//! bursts; every 10 s of stream time an interval MOS is computed from (lost, bursts, packets) with the
//! simplified E-model that VoIPmonitor uses, and the stream MOS is the duration-weighted mean (and minimum).
//!
//! Three buffers per stream: fixed 50 ms (resync at 100 ms of lateness), fixed 200 ms (resync 200) and an
//! adaptive one that grows by the lateness of a late packet up to 500 ms and shrinks by 10 % per quiet interval.
//! The buffers are voxtap's own models; their parameters are VoIPmonitor's defaults.

/// Parameters of one simulated buffer.
#[derive(Debug, Clone, Copy)]
pub struct JbParams {
    pub size_ms: f64,
    pub resync_ms: f64,
    pub adaptive_max_ms: Option<f64>,
}

pub const F1: JbParams = JbParams { size_ms: 50.0, resync_ms: 100.0, adaptive_max_ms: None };
pub const F2: JbParams = JbParams { size_ms: 200.0, resync_ms: 200.0, adaptive_max_ms: None };
pub const ADAPT: JbParams = JbParams { size_ms: 20.0, resync_ms: 500.0, adaptive_max_ms: Some(500.0) };
const PARAMS: [JbParams; 3] = [F1, F2, ADAPT];

const INTERVAL_MS: f64 = 10_000.0;
const WINDOW: u64 = 64;

/// The state of one buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Buffer {
    size: f64,
    /// Playout anchor: arrival − nominal time of the packet that (re)synchronised the buffer.
    base: f64,
    /// Bit i ⇔ sequence number `highest − i` reached this buffer in time.
    window: u64,
    /// Consecutive lost packets being counted, in sequence order.
    run: u32,
    iv_lost: u32,
    iv_bursts: u32,
    iv_delivered: u32,
    iv_late: bool,
    weighted_sum: f64,
    weight: f64,
    min: f64,
}

impl Buffer {
    #[inline]
    fn account(&mut self, delivered: bool) {
        if delivered {
            if self.run > 0 {
                self.iv_bursts += 1;
                self.iv_lost = self.iv_lost.saturating_add(self.run);
                self.run = 0;
            }
            self.iv_delivered += 1;
        } else {
            self.run = self.run.saturating_add(1);
        }
    }
}

/// The three simulated buffers of one stream (f1, f2, adaptive), sharing the sequence and interval tracking.
#[derive(Debug, Clone)]
pub struct MosSims {
    started: bool,
    highest: i64,
    first_seq: i64,
    iv_start: f64,
    b: [Buffer; 3],
}

impl Default for MosSims {
    fn default() -> Self {
        Self::new()
    }
}

impl MosSims {
    pub fn new() -> Self {
        let mut b = [Buffer { min: 4.5, ..Default::default() }; 3];
        for (x, p) in b.iter_mut().zip(PARAMS) {
            x.size = p.size_ms;
        }
        MosSims { started: false, highest: 0, first_seq: 0, iv_start: 0.0, b }
    }

    pub fn warm(&self) -> u32 {
        self.b[0].run ^ self.b[1].run ^ self.b[2].run
    }

    /// A packet of the stream that is not voice (RFC 2833 event, comfort noise): its sequence number counts as
    /// delivered, so it is not mistaken for a loss.
    pub fn untimed(&mut self, seq: i64) {
        if !self.started {
            return;
        }
        self.advance(seq, [true; 3]);
    }

    /// One voice packet: extended sequence number, nominal time (RTP timestamp in ms) and arrival time (ms).
    #[inline]
    pub fn packet(&mut self, seq: i64, nominal: f64, arrival: f64) {
        if !self.started {
            self.started = true;
            self.highest = seq;
            self.first_seq = seq;
            self.iv_start = arrival;
            for x in &mut self.b {
                x.base = arrival - nominal;
                x.window = 1;
            }
            return;
        }
        if arrival - self.iv_start >= INTERVAL_MS {
            self.close_interval(arrival);
        }
        let transit = arrival - nominal;
        let mut on_time = [true; 3];
        for ((x, p), ok) in self.b.iter_mut().zip(PARAMS).zip(on_time.iter_mut()) {
            let late = transit - x.base - x.size;
            if late > 0.0 {
                if late > p.resync_ms {
                    x.base = transit - x.size;
                } else {
                    *ok = false;
                    x.iv_late = true;
                    if let Some(max) = p.adaptive_max_ms {
                        x.size = (x.size + late).min(max);
                    }
                }
            }
        }
        self.advance(seq, on_time);
    }

    #[inline]
    fn advance(&mut self, seq: i64, on_time: [bool; 3]) {
        if seq == self.highest + 1 {
            // The common case: the next packet in order; one slot leaves the window.
            let leaving = self.highest - (WINDOW as i64 - 1) >= self.first_seq;
            for (x, ok) in self.b.iter_mut().zip(on_time) {
                if leaving {
                    x.account(x.window >> (WINDOW - 1) != 0);
                }
                x.window = (x.window << 1) | ok as u64;
            }
            self.highest = seq;
        } else if seq > self.highest {
            let shift = (seq - self.highest) as u64;
            // Sequence numbers leaving the window are decided, oldest first; a jump wider than the window
            // loses everything jumped over.
            for k in 0..shift.min(WINDOW) {
                let i = WINDOW - 1 - k;
                if self.highest - (i as i64) >= self.first_seq {
                    for x in &mut self.b {
                        x.account(x.window & (1 << i) != 0);
                    }
                }
            }
            let gap = shift.saturating_sub(WINDOW).min(u32::MAX as u64) as u32;
            for (x, ok) in self.b.iter_mut().zip(on_time) {
                x.run = x.run.saturating_add(gap);
                x.window = if shift >= WINDOW { 0 } else { x.window << shift };
                x.window |= ok as u64;
            }
            self.highest = seq;
        } else {
            let back = (self.highest - seq) as u64;
            if back < WINDOW {
                for (x, ok) in self.b.iter_mut().zip(on_time) {
                    x.window |= (ok as u64) << back;
                }
            }
        }
    }

    fn close_interval(&mut self, now: f64) {
        let dur = now - self.iv_start;
        for (x, p) in self.b.iter_mut().zip(PARAMS) {
            let packets = x.iv_delivered + x.iv_lost;
            if dur > 0.0 && packets > 0 {
                let mos = interval_mos(x.iv_lost, x.iv_bursts, packets);
                x.weighted_sum += mos * dur;
                x.weight += dur;
                x.min = x.min.min(mos);
            }
            if p.adaptive_max_ms.is_some() && !x.iv_late {
                x.size = (x.size * 0.9).max(p.size_ms);
            }
            x.iv_lost = 0;
            x.iv_bursts = 0;
            x.iv_delivered = 0;
            x.iv_late = false;
        }
        self.iv_start = now;
    }

    /// Finishes the stream: everything still in the window is decided and the last interval closed.
    /// Returns (average, minimum) MOS for f1, f2 and the adaptive buffer.
    pub fn finish(&mut self, end: f64) -> [(f64, f64); 3] {
        if !self.started {
            return [(4.5, 4.5); 3];
        }
        for i in (0..WINDOW).rev() {
            if self.highest - (i as i64) >= self.first_seq {
                for x in &mut self.b {
                    x.account(x.window & (1 << i) != 0);
                }
            }
        }
        for x in &mut self.b {
            x.window = 0;
            // A run still open at the end is a trailing loss: one more burst.
            if x.run > 0 {
                x.iv_bursts += 1;
                x.iv_lost = x.iv_lost.saturating_add(x.run);
                x.run = 0;
            }
        }
        self.close_interval(end.max(self.iv_start + 1.0));
        let mut out = [(4.5, 4.5); 3];
        for (o, x) in out.iter_mut().zip(&self.b) {
            let avg = if x.weight > 0.0 { x.weighted_sum / x.weight } else { 4.5 };
            *o = (avg, x.min);
        }
        out
    }
}

/// The simplified E-model of reference §6 for one interval.
pub fn interval_mos(lost: u32, bursts: u32, packets: u32) -> f64 {
    if lost < 5 || packets == 0 {
        return 4.5;
    }
    let lost = lost as f64;
    let recv = packets as f64;
    let ppl = lost / recv;
    if ppl > 0.5 {
        return 1.0;
    }
    let bursts = bursts.max(1) as f64;
    let burst_r = ((lost / bursts) * (1.0 - lost / recv)).abs().max(1.0);
    if ppl == 0.0 {
        return 4.5;
    }
    let ppl100 = 100.0 * ppl;
    let r = 93.206_207_723_3 - 95.0 * ppl100 / (ppl100 / burst_r + 17.2647);
    let mos = 2.06405 + 0.031738 * r - 0.000_356_641 * r * r + 2.93143e-6 * r * r * r;
    mos.clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: JbParams, loss_every: Option<u64>, jitter: impl Fn(u64) -> f64) -> (f64, f64) {
        let which = if p.adaptive_max_ms.is_some() {
            2
        } else if p.size_ms < 100.0 {
            0
        } else {
            1
        };
        let mut jb = MosSims::new();
        let mut last = 0.0;
        for i in 0..3000u64 {
            if loss_every.is_some_and(|k| i % k == 3) {
                continue;
            }
            let nominal = i as f64 * 20.0;
            last = nominal + jitter(i);
            jb.packet(i as i64, nominal, last);
        }
        jb.finish(last)[which]
    }

    #[test]
    fn clean_stream_is_perfect() {
        assert_eq!(run(F1, None, |_| 0.0), (4.5, 4.5));
        assert_eq!(run(ADAPT, None, |_| 0.0), (4.5, 4.5));
    }

    #[test]
    fn loss_lowers_mos_and_more_loss_lowers_it_more() {
        let (a5, _) = run(F2, Some(20), |_| 0.0);
        let (a2, _) = run(F2, Some(5), |_| 0.0);
        assert!(a5 < 4.5 && a2 < a5, "{a5} {a2}");
    }

    #[test]
    fn jitter_hurts_small_buffer_more() {
        // Every 7th packet 120 ms late: lost in a 50 ms buffer, absorbed by a 200 ms one.
        let j = |i: u64| if i % 7 == 3 { 120.0 } else { 0.0 };
        let (f1, _) = run(F1, None, j);
        let (f2, _) = run(F2, None, j);
        assert!(f1 < f2, "{f1} {f2}");
        assert_eq!(f2, 4.5);
    }

    #[test]
    fn formula_bounds() {
        assert_eq!(interval_mos(4, 4, 500), 4.5);
        assert_eq!(interval_mos(400, 1, 500), 1.0);
        let m = interval_mos(25, 25, 500);
        assert!(m > 1.0 && m < 4.5);
    }
}
