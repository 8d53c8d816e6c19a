//! What the socket sources (HEP, IPFIX) share: their listeners run as tasks on the slow side's runtime and hand
//! frames to the rx stage in batches through a bounded channel (`Ingest`); TCP streams of length-framed messages
//! are read one message at a time into a buffer no larger than the largest message; and frames are built as if
//! the message had been captured on the wire, so that the decoder takes them apart like any captured packet.
//!
//! A TCP connection is admitted by the listener's gate and counts as unproven until its first well-framed message
//! (closed if that does not come within `net_handshake_timeout_s`); after that it is closed when it says nothing
//! for `net_idle_timeout_s`, or when a message it started is not whole within `net_handshake_timeout_s`. A stream
//! whose framing breaks is closed and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::io::AsyncReadExt;

use crate::config::net::NetLimits;
use crate::edge::gate::{Gate, Limits};
use crate::time::Nanos;

/// Frames gathered by a listener task: their bytes back to back, and each one's time, link type and range.
#[derive(Default)]
pub struct FrameBatch {
    pub data: Vec<u8>,
    pub frames: Vec<(Nanos, u16, u32, u32)>,
    /// Bytes this batch holds of its listener's memory budget, given back when the rx stage is done with it.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl FrameBatch {
    pub fn push(&mut self, ts: Nanos, link_type: u16, bytes: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        self.frames.push((ts, link_type, start, self.data.len() as u32));
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// A batch leaves its task at this size (or when the socket has nothing more for now).
pub const BATCH_BYTES: usize = 256 << 10;
/// A batch of fewer frames than this makes the rx stage wait `COALESCE_WAIT` before it looks again: on a live
/// source a millisecond of latency is nothing, a wake-up per handful of messages is most of the cost.
const COALESCE_BELOW: usize = 256;
const COALESCE_WAIT: Duration = Duration::from_millis(1);
/// A stream read shorter than this lets the socket gather more for `COALESCE_WAIT` before the next read.
const COALESCE_BYTES: usize = 16 << 10;

/// Where the listener tasks' batches meet the rx stage's thread.
pub struct Ingest {
    rx: Receiver<FrameBatch>,
    pub(crate) tx: Sender<FrameBatch>,
    /// Batches a UDP task could not hand on because the rx stage was behind (datagrams are not waited for).
    pub dropped: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Ingest {
    pub fn new() -> Ingest {
        let (tx, rx) = crossbeam_channel::bounded(256);
        Ingest { rx, tx, dropped: Arc::new(AtomicU64::new(0)), stop: tokio::sync::watch::channel(false).0 }
    }

    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Waits up to `timeout_ms` for frames and hands every one that arrived to `f`. Returns how many.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        let mut n = 0;
        let mut take = |b: FrameBatch| {
            for &(ts, lt, a, z) in &b.frames {
                f(ts, lt, &b.data[a as usize..z as usize]);
            }
            n += b.frames.len();
        };
        if let Ok(b) = self.rx.recv_timeout(Duration::from_millis(timeout_ms.max(0) as u64)) {
            let small = b.frames.len() < COALESCE_BELOW;
            take(b);
            // A light, steady stream: wait a moment for more rather than wake for every few messages.
            if small && self.rx.is_empty() {
                std::thread::sleep(COALESCE_WAIT);
            }
        }
        while let Ok(b) = self.rx.try_recv() {
            take(b);
        }
        n
    }
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest::new()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Hands a batch from a datagram task: never waits (a full channel is a counted drop).
pub fn send_datagrams(tx: &Sender<FrameBatch>, dropped: &AtomicU64, b: FrameBatch) {
    if let Err(TrySendError::Full(_)) = tx.try_send(b) {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands a batch from a stream task: waits while the rx stage is behind (TCP slows the sender down instead of
/// losing its messages). `false` once the ingest is gone.
pub async fn send_stream(tx: &Sender<FrameBatch>, mut b: FrameBatch) -> bool {
    loop {
        match tx.try_send(b) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) => {
                b = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// Where the next message of a stream ends.
pub enum Framing {
    /// Not all of its header has arrived.
    Incomplete,
    /// A message of this many bytes.
    Message(usize),
    /// The stream no longer makes sense; it is closed.
    Broken,
}

#[derive(Debug, Default)]
pub struct StreamCounts {
    pub accepted: AtomicU64,
    /// Connections refused, closed for bad framing or silence.
    pub broken: AtomicU64,
    pub idle_closed: AtomicU64,
}

/// Where and when a message arrived: the sender, the listener's address, and the receive time (read once per
/// read from the socket, not per message).
pub struct Arrival {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub at: Nanos,
}

/// What a stream protocol supplies: how messages are cut, and what to do with each (frames into `out`,
/// an answer into `reply`).
pub trait StreamProto: Send + Sync + 'static {
    /// The largest message the protocol has (its length field's range).
    const MESSAGE_MAX: usize;
    /// What one connection remembers between its messages.
    type Conn: Default + Send;
    fn frame(&self, b: &[u8]) -> Framing;
    fn message(&self, conn: &mut Self::Conn, from: &Arrival, msg: &[u8], out: &mut FrameBatch, reply: &mut Vec<u8>);
}

/// Accepts TCP connections on `listener` until the ingest stops, each served by a task of its own.
pub async fn serve_streams<P: StreamProto>(
    listener: tokio::net::TcpListener,
    proto: Arc<P>,
    net: NetLimits,
    tx: Sender<FrameBatch>,
    counts: Arc<StreamCounts>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) {
    let gate = Gate::new(Limits::from_net(&net));
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    while let Some((s, peer)) = crate::edge::accept(&listener, &mut stop, what).await {
        let Ok(adm) = gate.admit(peer.ip()) else {
            counts.broken.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let (proto, tx, counts, net) = (proto.clone(), tx.clone(), counts.clone(), net.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut adm = adm;
            let why = read_stream(s, peer, local, &*proto, &net, &tx, &mut adm, stop).await;
            match why {
                StreamEnd::Closed => {}
                StreamEnd::Idle => {
                    counts.idle_closed.fetch_add(1, Ordering::Relaxed);
                }
                StreamEnd::Broken => {
                    counts.broken.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

enum StreamEnd {
    Closed,
    Idle,
    Broken,
}

#[allow(clippy::too_many_arguments)]
async fn read_stream<P: StreamProto>(
    mut s: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    proto: &P,
    net: &NetLimits,
    tx: &Sender<FrameBatch>,
    adm: &mut crate::edge::gate::Admission,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> StreamEnd {
    use tokio::io::AsyncWriteExt;
    let limit = Duration::from_secs(net.handshake_timeout_s as u64);
    let first_by = tokio::time::Instant::now() + limit;
    let idle = Duration::from_secs(net.idle_timeout_s as u64);
    // Since when a message has been arriving: each one must be whole within `limit`, however it trickles in.
    let mut partial_since: Option<tokio::time::Instant> = None;
    // At most one whole message and one read beyond it: a long burst is taken message by message.
    let cap = P::MESSAGE_MAX + 65_536;
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut proven = false;
    let mut reply = Vec::new();
    let mut state = P::Conn::default();
    loop {
        let mut batch = FrameBatch::default();
        let from = Arrival { peer, local, at: crate::time::wall_clock() };
        let mut at = 0;
        loop {
            match proto.frame(&buf[at..]) {
                Framing::Incomplete => break,
                Framing::Broken => return StreamEnd::Broken,
                Framing::Message(len) if len == 0 || len > P::MESSAGE_MAX => return StreamEnd::Broken,
                Framing::Message(len) if buf.len() - at < len => break,
                Framing::Message(len) => {
                    proto.message(&mut state, &from, &buf[at..at + len], &mut batch, &mut reply);
                    at += len;
                    if !proven {
                        proven = true;
                        if adm.establish().is_err() {
                            return StreamEnd::Closed;
                        }
                    }
                }
            }
        }
        buf.drain(..at);
        // The clock of a partial message starts when it began: now, if whole messages were just taken before it.
        partial_since = match (buf.is_empty(), at > 0) {
            (true, _) => None,
            (false, true) => Some(tokio::time::Instant::now()),
            (false, false) => Some(partial_since.unwrap_or_else(tokio::time::Instant::now)),
        };
        if !reply.is_empty() {
            // A peer that cannot take its answer within the idle time is gone.
            if tokio::time::timeout(idle, s.write_all(&reply)).await.map_or(true, |r| r.is_err()) {
                return StreamEnd::Closed;
            }
            reply.clear();
        }
        if !batch.is_empty() && !send_stream(tx, batch).await {
            return StreamEnd::Closed;
        }
        if buf.len() >= cap {
            return StreamEnd::Broken;
        }
        let until = match (proven, partial_since) {
            (false, _) => first_by,
            (true, Some(t)) => (t + limit).min(tokio::time::Instant::now() + idle),
            (true, None) => tokio::time::Instant::now() + idle,
        };
        let room = (cap - buf.len()).min(65_536);
        let at = buf.len();
        buf.resize(at + room, 0);
        let n = tokio::select! {
            r = tokio::time::timeout_at(until, s.read(&mut buf[at..])) => match r {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => {
                    buf.truncate(at);
                    return if proven && partial_since.is_none() { StreamEnd::Idle } else { StreamEnd::Broken };
                }
            },
            _ = adm.evicted() => return StreamEnd::Broken,
            _ = crate::edge::stopped(&mut stop) => return StreamEnd::Closed,
        };
        buf.truncate(at + n);
        if n > 0 && n < COALESCE_BYTES && proven {
            tokio::time::sleep(COALESCE_WAIT).await;
        }
        if n == 0 {
            // What the peer sent before closing still counts; a partial message does not.
            let mut batch = FrameBatch::default();
            let from = Arrival { peer, local, at: crate::time::wall_clock() };
            let mut at = 0;
            while let Framing::Message(len) = proto.frame(&buf[at..]) {
                if len == 0 || buf.len() - at < len || len > P::MESSAGE_MAX {
                    break;
                }
                proto.message(&mut state, &from, &buf[at..at + len], &mut batch, &mut reply);
                at += len;
            }
            if !batch.is_empty() {
                send_stream(tx, batch).await;
            }
            return StreamEnd::Closed;
        }
    }
}

/// A payload as a captured frame: Ethernet, IPv4 (IPv6 when either address is one), then UDP, or a TCP segment
/// with this sequence number. `false` when it cannot fit an IP packet.
#[allow(clippy::too_many_arguments)]
pub fn synth_frame(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    tcp_seq: Option<u32>,
    payload: &[u8],
) -> bool {
    let l4 = if tcp_seq.is_some() { 20 } else { 8 };
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    };
    let both4 = v4(src).zip(v4(dst));
    if l4 + payload.len() > 65_535 - 40 {
        return false;
    }
    out.clear();
    out.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    let proto = if tcp_seq.is_some() { 6 } else { 17 };
    match both4 {
        Some((s, d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            ip[2..4].copy_from_slice(&((20 + l4 + payload.len()) as u16).to_be_bytes());
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        None => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&((l4 + payload.len()) as u16).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&v6(src));
            out.extend_from_slice(&v6(dst));
        }
    }
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    match tcp_seq {
        // ack 0, header 20 bytes, PSH|ACK, window, checksum 0, urgent 0.
        Some(seq) => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        }
        None => {
            out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
    out.extend_from_slice(payload);
    true
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
