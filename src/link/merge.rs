//! Packets from several remotes into one time-ordered stream for the central's analysis. Each remote's packets
//! come in its own time order; the merge hands on the oldest head among the connections, and holds it while
//! another connected remote has nothing queued (its next packet may be older) — but never longer than `HOLD`
//! of wall-clock time for a quiet remote, and never past `BUFFER_MAX` bytes held, so a stalled remote cannot
//! stop the others or fill memory. Legs of one call seen by different sensors so meet in one owner in order.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::central::PacketEvent;
use super::msg::FrameAt;

/// Where merged frames go: time, link type, bytes, and the id_sensor of the remote that captured them.
pub type SensorFrames<'a> = dyn FnMut(crate::time::Nanos, u16, &[u8], Option<u16>) + 'a;

const HOLD: Duration = Duration::from_secs(2);
const BUFFER_MAX: usize = 256 << 20;

struct Batch {
    raw: Vec<u8>,
    frames: Vec<FrameAt>,
    next: usize,
}

#[derive(Default)]
struct Source {
    /// The sensor id the remote proved on its link: the calls its packets start are stored under it.
    sensor: Option<u16>,
    batches: VecDeque<Batch>,
    last_heard: Option<Instant>,
    gone: bool,
}

impl Source {
    fn head(&self) -> Option<i64> {
        self.batches.front().and_then(|b| b.frames.get(b.next)).map(|f| f.ts)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MergeStats {
    pub frames: u64,
    /// Frames handed on before a quiet remote could answer for older ones (it was held for `HOLD`).
    pub released_on_timeout: u64,
    pub released_on_memory: u64,
}

pub struct Merge {
    events: Receiver<PacketEvent>,
    /// When the first remote's packets came: nothing goes for `HOLD` after it, so remotes that connect at the
    /// same time (a central starting, or coming back) are all heard before the first packets go on.
    first: Option<Instant>,
    sources: HashMap<u64, Source>,
    held_bytes: usize,
    /// The central is stopping: everything goes, gathering or not.
    draining: bool,
    pub stats: MergeStats,
}

impl Merge {
    pub fn new(events: Receiver<PacketEvent>) -> Merge {
        Merge {
            events,
            first: None,
            sources: HashMap::new(),
            held_bytes: 0,
            draining: false,
            stats: MergeStats::default(),
        }
    }

    fn take(&mut self, ev: PacketEvent) {
        match ev {
            PacketEvent::Batch { conn, sensor, raw, frames } => {
                self.first.get_or_insert_with(Instant::now);
                let s = self.sources.entry(conn).or_default();
                s.sensor = sensor;
                s.last_heard = Some(Instant::now());
                if !frames.is_empty() {
                    self.held_bytes += raw.len();
                    s.batches.push_back(Batch { raw, frames, next: 0 });
                }
            }
            PacketEvent::Gone { conn } => {
                if let Some(s) = self.sources.get_mut(&conn) {
                    s.gone = true;
                }
            }
        }
    }

    /// Waits up to `timeout_ms` for packets, then hands on every frame that may go, oldest first.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut SensorFrames<'_>) -> usize {
        if let Ok(ev) = self.events.recv_timeout(Duration::from_millis(timeout_ms.max(0) as u64)) {
            self.take(ev);
        }
        while let Ok(ev) = self.events.try_recv() {
            self.take(ev);
        }
        let mut n = 0;
        let gathering = self.first.is_some_and(|t| t.elapsed() < HOLD);
        loop {
            // Even a remote that has already finished is held back while gathering: the other remotes of a run
            // may not have sent their first batch yet (one short capture can be sent whole before another connects).
            if gathering && self.held_bytes <= BUFFER_MAX && !self.draining {
                break;
            }
            let Some((conn, ts)) =
                self.sources.iter().filter_map(|(c, s)| s.head().map(|t| (*c, t))).min_by_key(|(c, t)| (*t, *c))
            else {
                break;
            };
            // A connected remote with nothing queued may still send something older.
            let waiting = self.sources.iter().any(|(c, s)| {
                *c != conn && !s.gone && s.head().is_none() && s.last_heard.is_none_or(|h| h.elapsed() < HOLD)
            });
            let stale = self.sources.iter().any(|(c, s)| {
                *c != conn && !s.gone && s.head().is_none() && s.last_heard.is_some_and(|h| h.elapsed() >= HOLD)
            });
            if stale {
                self.stats.released_on_timeout += 1;
            }
            if waiting {
                if self.held_bytes > BUFFER_MAX {
                    self.stats.released_on_memory += 1;
                } else {
                    break;
                }
            }
            let Some(src) = self.sources.get_mut(&conn) else { break };
            let Some(b) = src.batches.front_mut() else { break };
            let at = b.frames[b.next];
            debug_assert_eq!(at.ts, ts);
            f(at.ts, at.link_type, &b.raw[at.start..at.end], src.sensor);
            b.next += 1;
            n += 1;
            if b.next == b.frames.len() {
                self.held_bytes -= b.raw.len();
                src.batches.pop_front();
            }
        }
        self.sources.retain(|_, s| !(s.gone && s.batches.is_empty()));
        self.stats.frames += n as u64;
        n
    }

    /// Every frame still held, oldest first (the central is stopping).
    pub fn drain(&mut self, f: &mut SensorFrames<'_>) -> usize {
        for s in self.sources.values_mut() {
            s.gone = true;
        }
        self.draining = true;
        self.poll(0, f)
    }

    #[cfg(test)]
    fn push(&mut self, conn: u64, frames: &[(i64, &[u8])]) {
        let mut raw = Vec::new();
        for (t, d) in frames {
            super::msg::push_frame(&mut raw, *t, 1, d);
        }
        let frames = super::msg::index(&raw).unwrap();
        self.take(PacketEvent::Batch { conn, sensor: Some(conn as u16), raw, frames });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(m: &mut Merge) -> Vec<i64> {
        let mut v = Vec::new();
        m.poll(0, &mut |t, _, _, _| v.push(t));
        v
    }

    #[test]
    fn interleaves_by_time_and_waits_for_a_connected_remote() {
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let mut m = Merge::new(rx);
        m.push(1, &[(10, b"a"), (30, b"c")]);
        // The first packets wait while other remotes may still be connecting.
        assert_eq!(collect(&mut m), Vec::<i64>::new());
        m.first = Some(Instant::now() - HOLD);
        // Only one remote known: everything goes.
        assert_eq!(collect(&mut m), [10, 30]);
        m.push(1, &[(50, b"e")]);
        m.push(2, &[(20, b"b"), (40, b"d"), (60, b"f")]);
        // 40 and 50 go; 60 waits for remote 1, which is connected and may send something older. Each frame
        // carries the sensor of the remote that sent it.
        let mut got = Vec::new();
        m.poll(0, &mut |t, _, _, sensor| got.push((t, sensor)));
        assert_eq!(got, [(20, Some(2)), (40, Some(2)), (50, Some(1))]);
        m.take(PacketEvent::Gone { conn: 1 });
        assert_eq!(collect(&mut m), [60]);
        assert!(m.sources.is_empty() || m.sources.values().all(|s| s.batches.is_empty()));
    }

    #[test]
    fn a_quiet_remote_holds_the_others_only_for_a_while() {
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let mut m = Merge::new(rx);
        m.push(1, &[(10, b"a"), (20, b"b")]);
        m.push(2, &[(5, b"x")]);
        m.first = Some(Instant::now() - HOLD);
        // Remote 2 has nothing more queued: 10 waits, in case its next packet is older.
        assert_eq!(collect(&mut m), [5]);
        assert_eq!(collect(&mut m), Vec::<i64>::new());
        m.sources.get_mut(&2).unwrap().last_heard = Some(Instant::now() - HOLD);
        assert_eq!(collect(&mut m), [10, 20]);
    }
}
