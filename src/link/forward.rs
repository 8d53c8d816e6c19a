//! A remote with `packetbuffer_sender = yes`: captured frames are gathered into batches (at most 1 MiB or
//! 100 ms of traffic), compressed with zstd and appended to the link queue, which the sender thread delivers to
//! the central. The capture loop never waits for the network; only the queue's bound can drop a batch.

use std::time::{Duration, Instant};

use super::msg;
use super::remote::{LinkSink, LinkStats};

const BATCH_BYTES: usize = 1 << 20;
const BATCH_AGE: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ForwardStats {
    pub frames: u64,
    pub bytes: u64,
    pub batches: u64,
    /// Bytes of the batches once compressed.
    pub compressed_bytes: u64,
    /// Batches dropped because the link queue was full (the central away for long).
    pub batches_dropped: u64,
}

pub struct Forwarder {
    sink: LinkSink,
    raw: Vec<u8>,
    started: Instant,
    /// A capture file waits for room in the queue (nothing of a file is dropped); a live capture cannot.
    wait_for_room: bool,
    pub stats: ForwardStats,
}

impl Forwarder {
    pub fn new(sink: LinkSink, wait_for_room: bool) -> Forwarder {
        Forwarder {
            sink,
            raw: Vec::with_capacity(BATCH_BYTES + 65_536),
            started: Instant::now(),
            wait_for_room,
            stats: ForwardStats::default(),
        }
    }

    pub fn frame(&mut self, ts: crate::time::Nanos, link_type: u16, data: &[u8]) {
        if self.raw.is_empty() {
            self.started = Instant::now();
        }
        msg::push_frame(&mut self.raw, ts, link_type, data);
        self.stats.frames += 1;
        self.stats.bytes += data.len() as u64;
        if self.raw.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Sends a partial batch once it is old enough (a quiet link still gets its packets on their way).
    pub fn tick(&mut self) {
        if !self.raw.is_empty() && self.started.elapsed() >= BATCH_AGE {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        // zstd at level 1 on a batch in memory does not fail; an error would mean no memory, and drops the batch.
        let z = match zstd::bulk::compress(&self.raw, 1) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compress a packet batch; dropped");
                self.stats.batches_dropped += 1;
                self.raw.clear();
                return;
            }
        };
        if self.wait_for_room {
            // Only while the sender is still delivering: once it has given up, a full queue stays full.
            while !self.sink.room(z.len()) && self.sink.sending() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if self.sink.push(&z) {
            self.stats.batches += 1;
            self.stats.compressed_bytes += z.len() as u64;
        } else {
            self.stats.batches_dropped += 1;
        }
        self.raw.clear();
    }

    /// Sends what is gathered and hands the queue to the sender to finish (see `LinkSink::finish`).
    pub fn finish(mut self, wait: Option<Duration>) -> (ForwardStats, LinkStats) {
        self.flush();
        let stats = self.stats.clone();
        (stats, self.sink.finish(wait))
    }
}
