//! VoIPmonitor's old mirror mode (reference links §2): a sender streams its captured packets to a receiver that
//! analyses them, over plain TCP, in VoIPmonitor's packet-buffer blocks. There is no encryption and no
//! authentication in this protocol — it exists for sites that already run it; the client/server link is the
//! sound replacement (docs/sensor-modes.md).
//!
//! Connection: the sender writes `sensor_id_name: ID:NAME\0sensor_time: YYYY-MM-DD HH:MM:SS\0`; the receiver
//! answers `ok`, or `bad time` when the clocks differ by more than `mirror_connect_maximum_time_diff_s` (modulo
//! 30 minutes, so time zones that differ by whole half hours pass). Then blocks: a 64-byte header
//! (`pcap_block_store`, version 7, sizes, packet count, link type, sensor id, checksum, counter, confirmation
//! flag, sender time), one `u32` offset per packet, and the packet records (36-byte `pcap_pkthdr_plus` + bytes),
//! snappy-compressed. With confirmation the receiver answers `block_ok` after each block.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::config::net::NetLimits;
use crate::edge::gate::{Admission, Gate, Limits};

mod block;
mod send;

use block::HEADER;
pub use block::{decode_body, encode_block, Block, BlockHead, MirrorError};
pub use send::{MirrorSendStats, MirrorSender};

fn local_time_text() -> String {
    let c = crate::time::civil(crate::time::wall_clock(), false);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// Seconds since the epoch of a local `YYYY-MM-DD HH:MM:SS` as if it were UTC (both sides are read the same way,
/// so only the difference matters).
fn text_secs(t: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let days = crate::time::days_from_civil(n(0..4)?, n(5..7)? as u32, n(8..10)? as u32);
    Some(days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?)
}

// ---------------------------------------------------------------------------------------------------------------
// Receiver

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MirrorStats {
    pub connections: u64,
    pub refused_time: u64,
    pub blocks: u64,
    pub packets: u64,
    pub block_errors: u64,
    /// Blocks whose counter this sender had just sent (a resend after a lost confirmation): skipped.
    pub duplicate_blocks: u64,
    /// Connections refused by the caps (net_per_ip_max, net_conn_max).
    pub refused_connections: u64,
    /// Connections closed after net_idle_timeout_s of silence.
    pub idle_closed: u64,
}

/// The receiver's listener: connections are tasks on the slow side's runtime, each admitted by the gate, greeted
/// within `net_handshake_timeout_s` and closed after `net_idle_timeout_s` of silence; their blocks reach `poll`
/// whole, without copies.
pub struct MirrorReceiver {
    ingest: crate::capture::socket::Ingest,
    stats: Arc<Mutex<MirrorStats>>,
    local: SocketAddr,
}

/// What the receiver's connections share: counters, and the last block counter of each sender, so a block resent
/// over a new connection is taken once.
struct Shared {
    stats: Arc<Mutex<MirrorStats>>,
    last_counter: Mutex<HashMap<String, u32>>,
    max_diff_s: u32,
    net: NetLimits,
    /// Sender-stamped times are kept within this of the receive time (`sender_time_window_s`; 0: as sent).
    window: crate::time::Nanos,
    budget: Arc<tokio::sync::Semaphore>,
}

/// Senders remembered for their block counters, at most.
const SENDERS_MAX: usize = 4096;
/// Bytes of blocks (as sent and inflated) all connections together may hold until the analysis has taken them:
/// a block is read only once its share is granted, so many senders cannot multiply the 32 MiB a block may be.
const BUDGET_KIB: usize = 96 << 10;

impl MirrorReceiver {
    pub fn bind(
        addr: SocketAddr,
        max_diff_s: u32,
        net: &NetLimits,
        window: crate::time::Nanos,
        rt: &tokio::runtime::Handle,
    ) -> io::Result<MirrorReceiver> {
        let l = crate::edge::bind_tcp(addr, rt)?;
        let local = l.local_addr()?;
        let ingest = crate::capture::socket::Ingest::new();
        let stats = Arc::new(Mutex::new(MirrorStats::default()));
        let shared = Arc::new(Shared {
            stats: stats.clone(),
            last_counter: Mutex::new(HashMap::new()),
            max_diff_s,
            net: net.clone(),
            window,
            budget: Arc::new(tokio::sync::Semaphore::new(BUDGET_KIB)),
        });
        let (tx, mut stop) = (ingest.tx.clone(), ingest.stop_signal());
        let gate = Gate::new(Limits::from_net(net));
        rt.spawn(async move {
            while let Some((s, peer)) = crate::edge::accept(&l, &mut stop, "mirror").await {
                shared.stats.lock().connections += 1;
                let Ok(adm) = gate.admit(peer.ip()) else {
                    shared.stats.lock().refused_connections += 1;
                    continue;
                };
                let (tx, shared, stop) = (tx.clone(), shared.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(s, peer, adm, &tx, &shared, stop).await {
                        warn!(%peer, error = %e, "mirror sender disconnected");
                    }
                });
            }
        });
        Ok(MirrorReceiver { ingest, stats, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> MirrorStats {
        self.stats.lock().clone()
    }

    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(crate::time::Nanos, u16, &[u8])) -> usize {
        self.ingest.poll(timeout_ms, f)
    }
}

/// A reply to a sender that must be taken within `limit` (a sender that stops reading holds nothing for long).
async fn write_within(s: &mut tokio::net::TcpStream, b: &[u8], limit: Duration) -> io::Result<()> {
    tokio::time::timeout(limit, s.write_all(b))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the sender does not read its confirmations"))?
}

async fn serve(
    mut s: tokio::net::TcpStream,
    peer: SocketAddr,
    mut adm: Admission,
    tx: &crossbeam_channel::Sender<crate::capture::socket::FrameBatch>,
    shared: &Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let stats = &shared.stats;
    let limit = Duration::from_secs(shared.net.handshake_timeout_s as u64);
    // The greeting: two NUL-terminated lines, at most 1 KiB, all of it within the deadline.
    let greet = async {
        let mut hello = Vec::new();
        let mut b = [0u8; 256];
        while hello.iter().filter(|c| **c == 0).count() < 2 && hello.len() < 1024 {
            let n = s.read(&mut b).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the greeting"));
            }
            hello.extend_from_slice(&b[..n]);
        }
        Ok(hello)
    };
    let hello = tokio::select! {
        r = tokio::time::timeout(limit, greet) => r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no greeting in time"))??,
        _ = adm.evicted() => return Ok(()),
    };
    let text = String::from_utf8_lossy(&hello).to_string();
    let field = |k: &str| text.split('\0').find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_string()));
    let sensor = field("sensor_id_name:").unwrap_or_default();
    let theirs = field("sensor_time:").and_then(|t| text_secs(&t));
    let ours = text_secs(&local_time_text());
    if let (Some(a), Some(b)) = (theirs, ours) {
        if shared.max_diff_s > 0 && (a - b).abs() % 1800 > shared.max_diff_s as i64 {
            stats.lock().refused_time += 1;
            s.write_all(b"bad time").await?;
            warn!(%sensor, diff_s = a - b, "mirror sender refused: clocks differ (mirror_connect_maximum_time_diff_s)");
            return Ok(());
        }
    }
    if adm.establish().is_err() {
        stats.lock().refused_connections += 1;
        return Ok(());
    }
    s.write_all(b"ok").await?;
    info!(%sensor, %peer, "mirror sender connected");
    // A sender is its name and address: the protocol has nothing better.
    let who = format!("{sensor}@{}", peer.ip());
    let idle = Duration::from_secs(shared.net.idle_timeout_s as u64);
    let mut errors = 0;
    loop {
        let mut h = [0u8; HEADER];
        let got = tokio::select! {
            r = tokio::time::timeout(idle, s.read_exact(&mut h)) => r,
            _ = crate::edge::stopped(&mut stop) => return Ok(()),
        };
        match got {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                stats.lock().idle_closed += 1;
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the sender said nothing for net_idle_timeout_s"));
            }
        }
        let head = match BlockHead::parse(&h) {
            Ok(h) => h,
            Err(e) => {
                // Out of step: the stream cannot be trusted from here; the sender reconnects.
                stats.lock().block_errors += 1;
                let _ = write_within(&mut s, e.to_string().as_bytes(), idle).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        };
        // The block's share of the budget (what is sent, and what it inflates to) before a byte of it is read.
        let kib = ((head.body_len() + head.size) >> 10) as u32 + 1;
        let budget = tokio::select! {
            p = shared.budget.clone().acquire_many_owned(kib) => p.map_err(|_| io::Error::other("stopping"))?,
            _ = crate::edge::stopped(&mut stop) => return Ok(()),
        };
        let mut body = Vec::new();
        tokio::time::timeout(idle, crate::edge::read_growing(&mut s, head.body_len(), &mut body))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "block not complete within net_idle_timeout_s"))??;
        // Decompressing and checking a block is CPU work: off the runtime's worker threads.
        let decoded = tokio::task::spawn_blocking(move || decode_body(&head, body))
            .await
            .map_err(|_| io::Error::other("block check failed"))?;
        match decoded {
            Ok(block) => {
                errors = 0;
                let dup = {
                    let mut last = shared.last_counter.lock();
                    if last.len() >= SENDERS_MAX && !last.contains_key(&who) {
                        last.clear();
                    }
                    last.insert(who.clone(), head.counter) == Some(head.counter)
                };
                if dup {
                    stats.lock().duplicate_blocks += 1;
                } else {
                    let n = block.frames.len() as u64;
                    let mut frames = block.frames;
                    if shared.window > 0 {
                        let now = crate::time::wall_clock();
                        for f in frames.iter_mut() {
                            f.0 = crate::time::clamp_to_receive(f.0, now, shared.window);
                        }
                    }
                    let batch = crate::capture::socket::FrameBatch { data: block.data, frames, budget: Some(budget) };
                    if !crate::capture::socket::send_stream(tx, batch).await {
                        return Ok(());
                    }
                    let mut st = stats.lock();
                    st.blocks += 1;
                    st.packets += n;
                }
                if head.confirm {
                    write_within(&mut s, b"block_ok", idle).await?;
                }
            }
            Err(e) => {
                errors += 1;
                stats.lock().block_errors += 1;
                write_within(&mut s, e.to_string().as_bytes(), idle).await?;
                if errors > 20 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "too many bad blocks"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_clock_is_checked_modulo_half_hours() {
        let a = text_secs("2026-11-26 10:00:00").unwrap();
        assert_eq!(text_secs("2026-11-26 11:30:01").unwrap() - a, 5401);
        assert_eq!(5401 % 1800, 1);
    }
}
