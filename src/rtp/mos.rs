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

pub const F1: JbParams = JbParams {
    size_ms: 50.0,
    resync_ms: 100.0,
    adaptive_max_ms: None,
};
pub const F2: JbParams = JbParams {
    size_ms: 200.0,
    resync_ms: 200.0,
    adaptive_max_ms: None,
};
pub const ADAPT: JbParams = JbParams {
    size_ms: 20.0,
    resync_ms: 500.0,
    adaptive_max_ms: Some(500.0),
};

const INTERVAL_MS: f64 = 10_000.0;
const WINDOW: u64 = 64;

/// One simulated jitter buffer with its interval accounting. About 100 bytes.
#[derive(Debug, Clone)]
pub struct JitterBufferSim {
    p: JbParams,
    size: f64,
    started: bool,
    /// Playout anchor: arrival − nominal time of the packet that (re)synchronised the buffer.
    base: f64,
    /// Highest extended sequence number seen, and a bitmap of the 64 sequence numbers below and including it
    /// (bit i ⇔ seq `highest − i` was delivered in time).
    highest: i64,
    first_seq: i64,
    window: u64,
    // Run of consecutive lost packets being counted, in sequence order.
    run: u32,
    // Current interval.
    iv_start: f64,
    iv_lost: u32,
    iv_bursts: u32,
    iv_delivered: u32,
    iv_late: bool,
    // Results.
    weighted_sum: f64,
    weight: f64,
    min: f64,
}

impl JitterBufferSim {
    pub fn new(p: JbParams) -> Self {
        JitterBufferSim {
            p,
            size: p.size_ms,
            started: false,
            base: 0.0,
            highest: 0,
            first_seq: 0,
            window: 0,
            run: 0,
            iv_start: 0.0,
            iv_lost: 0,
            iv_bursts: 0,
            iv_delivered: 0,
            iv_late: false,
            weighted_sum: 0.0,
            weight: 0.0,
            min: 4.5,
        }
    }

    /// One voice packet: extended sequence number, nominal time (RTP timestamp in ms) and arrival time (ms).
    pub fn packet(&mut self, seq: i64, nominal: f64, arrival: f64) {
        if !self.started {
            self.started = true;
            self.base = arrival - nominal;
            self.highest = seq;
            self.first_seq = seq;
            self.window = 1;
            self.iv_start = arrival;
            return;
        }
        if arrival - self.iv_start >= INTERVAL_MS {
            self.close_interval(arrival);
        }
        let deadline = nominal + self.base + self.size;
        let late = arrival - deadline;
        let mut on_time = late <= 0.0;
        if !on_time {
            if late > self.p.resync_ms {
                self.base = arrival - nominal - self.size;
                on_time = true;
            } else {
                self.iv_late = true;
                if let Some(max) = self.p.adaptive_max_ms {
                    self.size = (self.size + late).min(max);
                }
            }
        }
        if seq > self.highest {
            let shift = (seq - self.highest) as u64;
            self.finalize_top(shift);
            self.window = if shift >= WINDOW {
                0
            } else {
                self.window << shift
            };
            self.highest = seq;
            if on_time {
                self.window |= 1;
            }
        } else {
            let back = (self.highest - seq) as u64;
            if back < WINDOW && on_time {
                self.window |= 1 << back;
            }
        }
    }

    /// Decides the fate of sequence numbers that leave the window, oldest first; sequence numbers jumped over
    /// entirely (a gap wider than the window) are lost.
    fn finalize_top(&mut self, shift: u64) {
        for k in 0..shift.min(WINDOW) {
            let i = WINDOW - 1 - k;
            if self.highest - (i as i64) >= self.first_seq {
                self.account(self.window & (1 << i) != 0);
            }
        }
        if shift > WINDOW {
            let gap = (shift - WINDOW).min(u32::MAX as u64) as u32;
            self.run = self.run.saturating_add(gap);
        }
    }

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

    fn close_interval(&mut self, now: f64) {
        let dur = now - self.iv_start;
        let mos = interval_mos(
            self.iv_lost,
            self.iv_bursts,
            self.iv_delivered + self.iv_lost,
        );
        if dur > 0.0 && self.iv_delivered + self.iv_lost > 0 {
            self.weighted_sum += mos * dur;
            self.weight += dur;
            self.min = self.min.min(mos);
        }
        if let Some(_max) = self.p.adaptive_max_ms {
            if !self.iv_late {
                self.size = (self.size * 0.9).max(self.p.size_ms);
            }
        }
        self.iv_start = now;
        self.iv_lost = 0;
        self.iv_bursts = 0;
        self.iv_delivered = 0;
        self.iv_late = false;
    }

    /// Finishes the stream: everything still in the window is decided, the last interval closed.
    /// Returns (average MOS, minimum MOS).
    pub fn finish(&mut self, end: f64) -> (f64, f64) {
        if !self.started {
            return (4.5, 4.5);
        }
        for i in (0..WINDOW).rev() {
            if self.highest - (i as i64) >= self.first_seq {
                self.account(self.window & (1 << i) != 0);
            }
        }
        self.window = 0;
        // A run still open at the end is a trailing loss: count it as one burst.
        if self.run > 0 {
            self.iv_bursts += 1;
            self.iv_lost = self.iv_lost.saturating_add(self.run);
            self.run = 0;
        }
        self.close_interval(end.max(self.iv_start + 1.0));
        if self.weight <= 0.0 {
            return (4.5, self.min);
        }
        (self.weighted_sum / self.weight, self.min)
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
        let mut jb = JitterBufferSim::new(p);
        let mut last = 0.0;
        for i in 0..3000u64 {
            if loss_every.is_some_and(|k| i % k == 3) {
                continue;
            }
            let nominal = i as f64 * 20.0;
            last = nominal + jitter(i);
            jb.packet(i as i64, nominal, last);
        }
        jb.finish(last)
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
