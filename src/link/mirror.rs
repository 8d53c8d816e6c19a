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
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::config::net::NetLimits;
use crate::edge::gate::{Admission, Gate, Limits};

const TITLE: &[u8; 16] = b"pcap_block_store";
const VERSION: u8 = 7;
const HEADER: usize = 64;
const PKTHDR: usize = 36;
/// The most a block may claim (VoIPmonitor's blocks are at most a few MiB).
const BLOCK_MAX: usize = 32 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MirrorError {
    #[error("bad block header")]
    BadHeader,
    #[error("bad version {0} (expected 7)")]
    Version(u8),
    #[error("block of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("bad checksum")]
    Checksum,
    #[error("block data does not decompress")]
    Decompress,
    #[error("packet record out of bounds")]
    Record,
    #[error("header mode {0} is not supported (only pcap_pkthdr_plus)")]
    HeaderMode(u8),
}

/// VoIPmonitor's block checksum: a 16-bit sum of the bytes as signed values, never 0.
fn checksum(b: &[u8]) -> u32 {
    let s = b.iter().fold(0u16, |s, &x| s.wrapping_add(x as i8 as i16 as u16));
    (s as u32).max(1)
}

/// Builds one block from frames (ts ns, bytes) of one link type.
pub fn encode_block(frames: &[(i64, &[u8])], dlt: u16, sensor_id: i16, counter: u32, confirm: bool) -> Vec<u8> {
    let mut data = Vec::with_capacity(frames.iter().map(|f| f.1.len() + PKTHDR).sum());
    let mut offsets = Vec::with_capacity(frames.len() * 4);
    for (ts, bytes) in frames {
        offsets.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let (s, us) = (ts.div_euclid(1_000_000_000) as u32, (ts.rem_euclid(1_000_000_000) / 1000) as u32);
        for v in [s, us, bytes.len() as u32, bytes.len() as u32] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&0xffffu16.to_le_bytes()); // no encapsulating IP header noted
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&0i16.to_le_bytes()); // fixed (32-bit) pcap header form
        data.extend_from_slice(&dlt.to_le_bytes());
        data.extend_from_slice(&0xffffu16.to_le_bytes()); // VLAN unset
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(bytes);
    }
    let z = snap::raw::Encoder::new().compress_vec(&data).unwrap_or_default();
    let compressed = !z.is_empty() && z.len() < data.len();
    let body: &[u8] = if compressed { &z } else { &data };
    let mut h = [0u8; HEADER];
    h[..16].copy_from_slice(TITLE);
    h[16] = VERSION;
    h[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[24..28].copy_from_slice(&(if compressed { z.len() as u32 } else { 0 }).to_le_bytes());
    h[28..32].copy_from_slice(&(frames.len() as u32).to_le_bytes());
    h[32..34].copy_from_slice(&dlt.to_le_bytes());
    h[34..36].copy_from_slice(&sensor_id.to_le_bytes());
    h[36..42].copy_from_slice(b"voxtap");
    let mut sum_over = offsets.clone();
    sum_over.extend_from_slice(body);
    h[48..52].copy_from_slice(&checksum(&sum_over).to_le_bytes());
    h[52..56].copy_from_slice(&counter.to_le_bytes());
    h[56] = confirm as u8;
    let now = crate::time::wall_clock().div_euclid(1_000_000_000) as u32;
    h[60..64].copy_from_slice(&now.to_le_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&sum_over);
    out
}

/// A block's header fields that the reader needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockHead {
    pub size: usize,
    pub size_compress: usize,
    pub count: usize,
    pub dlt: u16,
    pub sensor_id: i16,
    pub hm: u8,
    pub checksum: u32,
    pub counter: u32,
    pub confirm: bool,
}

impl BlockHead {
    pub fn parse(h: &[u8]) -> Result<BlockHead, MirrorError> {
        if h.len() < HEADER || &h[..16] != TITLE {
            return Err(MirrorError::BadHeader);
        }
        if h[16] != VERSION {
            return Err(MirrorError::Version(h[16]));
        }
        let u = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]) as usize;
        let b = BlockHead {
            size: u(20),
            size_compress: u(24),
            count: u(28),
            dlt: u16::from_le_bytes([h[32], h[33]]),
            sensor_id: i16::from_le_bytes([h[34], h[35]]),
            hm: h[46],
            checksum: u(48) as u32,
            counter: u(52) as u32,
            confirm: h[56] != 0,
        };
        if b.size > BLOCK_MAX || b.size_compress > BLOCK_MAX || b.count > BLOCK_MAX / PKTHDR {
            return Err(MirrorError::TooLarge(b.size.max(b.size_compress)));
        }
        Ok(b)
    }

    /// Bytes after the header: offsets and the (compressed) data.
    pub fn body_len(&self) -> usize {
        self.count * 4 + if self.size_compress > 0 { self.size_compress } else { self.size }
    }
}

/// A block's packets, checked: the (inflated) data and where each packet lies in it — time, link type, range.
/// Records must follow each other in order, each inside the data and after the one before (no overlap), so a
/// block can never make more bytes than its own size; nothing is copied out of it.
pub struct Block {
    pub data: Vec<u8>,
    pub frames: Vec<(i64, u16, u32, u32)>,
}

/// Checks a block's body (offsets, then data) and finds its packets.
pub fn decode_body(head: &BlockHead, mut body: Vec<u8>) -> Result<Block, MirrorError> {
    if head.hm != 0 {
        return Err(MirrorError::HeaderMode(head.hm));
    }
    if head.checksum != 0 && checksum(&body) != head.checksum {
        return Err(MirrorError::Checksum);
    }
    let offs_len = (head.count * 4).min(body.len());
    let offsets: Vec<usize> =
        body[..offs_len].chunks_exact(4).map(|o| u32::from_le_bytes([o[0], o[1], o[2], o[3]]) as usize).collect();
    let data = if head.size_compress > 0 {
        let z = &body[offs_len..];
        if snap::raw::decompress_len(z).map_err(|_| MirrorError::Decompress)? != head.size {
            return Err(MirrorError::Decompress);
        }
        snap::raw::Decoder::new().decompress_vec(z).map_err(|_| MirrorError::Decompress)?
    } else {
        body.drain(..offs_len);
        body
    };
    let mut frames = Vec::with_capacity(offsets.len());
    let mut next_free = 0usize;
    for at in offsets {
        if at < next_free {
            return Err(MirrorError::Record);
        }
        let h = data.get(at..at + PKTHDR).ok_or(MirrorError::Record)?;
        let u = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let std = i16::from_le_bytes([h[28], h[29]]);
        // The native 64-bit pcap header form (std = 1): seconds and microseconds as i64, caplen at 16.
        let (sec, usec, caplen) = if std == 1 {
            let q = |i: usize| i64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
            (q(0), q(8), u(16) as usize)
        } else {
            (u(0) as i64, u(4) as i64, u(8) as usize)
        };
        let dlt = match u16::from_le_bytes([h[30], h[31]]) {
            0 => head.dlt,
            d => d,
        };
        let (start, end) = (at + PKTHDR, at + PKTHDR + caplen);
        if end > data.len() {
            return Err(MirrorError::Record);
        }
        next_free = end;
        let ts = sec.saturating_mul(1_000_000_000).saturating_add(usec.saturating_mul(1000));
        frames.push((ts, dlt, start as u32, end as u32));
    }
    Ok(Block { data, frames })
}

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

/// Reads exactly `n` bytes, growing the buffer only as they arrive (a header that claims a large block costs
/// nothing until its bytes come).
async fn read_grow(s: &mut tokio::net::TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n.min(64 << 10));
    while buf.len() < n {
        let at = buf.len();
        buf.resize(at + (n - at).min(256 << 10), 0);
        s.read_exact(&mut buf[at..]).await?;
    }
    Ok(buf)
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
        let body = tokio::time::timeout(idle, read_grow(&mut s, head.body_len()))
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

// ---------------------------------------------------------------------------------------------------------------
// Sender

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MirrorSendStats {
    pub packets: u64,
    pub blocks_sent: u64,
    pub blocks_dropped: u64,
    pub connects: u64,
    pub refused: u64,
}

/// Gathers frames into blocks (1 MiB or 100 ms) and a task on the slow side's runtime delivers them, each until
/// the receiver confirms it.
pub struct MirrorSender {
    blocks: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// The gathered packets' bytes back to back, and each one's time and range in it (no allocation per packet).
    buf: Vec<u8>,
    spans: Vec<(i64, usize, usize)>,
    dlt: u16,
    started: Instant,
    counter: u32,
    sensor_id: i16,
    wait: bool,
    task: Option<tokio::task::JoinHandle<MirrorSendStats>>,
    rt: tokio::runtime::Handle,
    pub stats: MirrorSendStats,
}

impl MirrorSender {
    /// `wait`: a capture file waits while the receiver is away; a live capture drops blocks past the buffer.
    pub fn start(
        dest: String,
        sensor_id: Option<u16>,
        name: String,
        wait: bool,
        rt: &tokio::runtime::Handle,
    ) -> io::Result<MirrorSender> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        let sid = sensor_id.unwrap_or(0);
        let task = rt.spawn(async move { deliver(&dest, &format!("{sid}:{name}"), rx).await });
        Ok(MirrorSender {
            blocks: Some(tx),
            buf: Vec::new(),
            spans: Vec::new(),
            dlt: 1,
            started: Instant::now(),
            counter: 0,
            sensor_id: sensor_id.map(|i| i as i16).unwrap_or(0),
            wait,
            task: Some(task),
            rt: rt.clone(),
            stats: MirrorSendStats::default(),
        })
    }

    pub fn frame(&mut self, ts: crate::time::Nanos, link_type: u16, data: &[u8]) {
        // A block has one link type.
        if !self.spans.is_empty() && link_type != self.dlt {
            self.flush();
        }
        if self.spans.is_empty() {
            self.started = Instant::now();
            self.dlt = link_type;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.spans.push((ts, start, self.buf.len()));
        self.stats.packets += 1;
        if self.buf.len() + self.spans.len() * PKTHDR >= 1 << 20 {
            self.flush();
        }
    }

    pub fn tick(&mut self) {
        if !self.spans.is_empty() && self.started.elapsed() >= Duration::from_millis(100) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let refs: Vec<(i64, &[u8])> = self.spans.iter().map(|&(t, a, b)| (t, &self.buf[a..b])).collect();
        self.counter = self.counter.wrapping_add(1);
        let block = encode_block(&refs, self.dlt, self.sensor_id, self.counter, true);
        self.spans.clear();
        self.buf.clear();
        let Some(tx) = &self.blocks else { return };
        // The capture loop is a plain thread: it may wait on the channel (a file), or must not (live).
        let sent = if self.wait { tx.blocking_send(block).is_ok() } else { tx.try_send(block).is_ok() };
        if sent {
            self.stats.blocks_sent += 1;
        } else {
            self.stats.blocks_dropped += 1;
        }
    }

    /// Sends what is gathered and waits until the receiver has confirmed every block (or the sender gave up).
    pub fn finish(mut self) -> MirrorSendStats {
        self.flush();
        self.blocks = None;
        let t = self.task.take().and_then(|h| self.rt.block_on(h).ok()).unwrap_or_default();
        MirrorSendStats { connects: t.connects, refused: t.refused, ..self.stats.clone() }
    }
}

/// Connect and greeting, within this; and a block's confirmation.
const SEND_LIMIT: Duration = Duration::from_secs(30);

async fn connect(dest: &str, sensor: &str) -> io::Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(dest).await?;
    s.set_nodelay(true)?;
    s.write_all(format!("sensor_id_name: {sensor}\0sensor_time: {}\0", local_time_text()).as_bytes()).await?;
    let mut r = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(4), s.read(&mut r))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to the greeting"))??;
    match &r[..n] {
        b"ok" => Ok(s),
        other => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("mirror receiver refused: {}", String::from_utf8_lossy(other)),
        )),
    }
}

async fn deliver(dest: &str, sensor: &str, mut blocks: tokio::sync::mpsc::Receiver<Vec<u8>>) -> MirrorSendStats {
    let mut stats = MirrorSendStats::default();
    let mut conn: Option<tokio::net::TcpStream> = None;
    while let Some(block) = blocks.recv().await {
        let mut attempts = 0u32;
        loop {
            if conn.is_none() {
                match tokio::time::timeout(SEND_LIMIT, connect(dest, sensor)).await {
                    Ok(Ok(s)) => {
                        stats.connects += 1;
                        info!(%dest, "connected to the mirror receiver");
                        conn = Some(s);
                    }
                    Ok(Err(e)) => {
                        if e.kind() == io::ErrorKind::PermissionDenied {
                            stats.refused += 1;
                        }
                        if attempts.is_multiple_of(10) {
                            warn!(%dest, error = %e, "mirror receiver unreachable; retrying");
                        }
                    }
                    Err(_) => warn!(%dest, "mirror receiver did not answer the greeting; retrying"),
                }
            }
            if let Some(s) = conn.as_mut() {
                let mut ok = [0u8; 8];
                let sent = async {
                    s.write_all(&block).await?;
                    s.read_exact(&mut ok).await
                };
                if matches!(tokio::time::timeout(SEND_LIMIT, sent).await, Ok(Ok(_))) && &ok == b"block_ok" {
                    break;
                }
                warn!(%dest, "mirror block not confirmed; reconnecting and sending it again");
                conn = None;
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(if attempts < 10 { 1000 } else { 5000 })).await;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_refuse_damage() {
        let frames: Vec<(i64, Vec<u8>)> =
            (0..50).map(|i| (1_700_000_000_123_456_000 + i, vec![i as u8; 60 + i as usize])).collect();
        let refs: Vec<(i64, &[u8])> = frames.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        let b = encode_block(&refs, 1, 7, 3, true);
        let head = BlockHead::parse(&b).unwrap();
        assert_eq!((head.count, head.dlt, head.sensor_id, head.counter, head.confirm), (50, 1, 7, 3, true));
        assert!(head.size_compress > 0 && head.size_compress < head.size);
        let got = decode_body(&head, b[HEADER..].to_vec()).unwrap();
        assert_eq!(got.frames.len(), 50);
        // Microseconds on the wire.
        let (ts, dlt, a, z) = got.frames[1];
        assert_eq!((ts, dlt, &got.data[a as usize..z as usize]), (1_700_000_000_123_456_000, 1, &[1u8; 61][..]));
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert!(matches!(decode_body(&head, bad[HEADER..].to_vec()), Err(MirrorError::Checksum)));
        let mut v = b.clone();
        v[16] = 6;
        assert_eq!(BlockHead::parse(&v), Err(MirrorError::Version(6)));
        assert_eq!(BlockHead::parse(b"pcap_block_stor"), Err(MirrorError::BadHeader));
    }

    #[test]
    fn the_greeting_clock_is_checked_modulo_half_hours() {
        let a = text_secs("2026-11-26 10:00:00").unwrap();
        assert_eq!(text_secs("2026-11-26 11:30:01").unwrap() - a, 5401);
        assert_eq!(5401 % 1800, 1);
    }
}
