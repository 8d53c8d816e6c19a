//! The live HEP source (`hep = yes`, `hep_bind_ip`, `hep_bind_port`): HEP over UDP and over TCP on the same
//! address, as SBCs, Kamailio/OpenSIPS and capture agents send it.
//!
//! Each HEP message becomes a frame as if it had been captured on the wire — Ethernet, IP from the sender to the
//! listener, UDP to the HEP port — so the decoder takes it apart exactly as it does HEP found in a capture file
//! (HEP's own addresses, ports and times) and a call's spool file holds the HEP packets it was built from. Over
//! TCP, HEP v3 messages follow each other and are cut by their length field; a stream that stops making sense is
//! closed and counted. The sockets are served by tasks on the slow side's runtime (`socket.rs`), which hand
//! batches of frames to the rx stage.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::socket::{self, synth_frame, Arrival, FrameBatch, Framing, Ingest, StreamCounts, StreamProto};
use crate::config::net::NetLimits;
use crate::decode::hep;
use crate::time::Nanos;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct HepStats {
    pub udp_packets: u64,
    pub tcp_messages: u64,
    pub tcp_connections: u64,
    /// TCP streams closed because they did not carry HEP v3 (or nothing valid came in time), or were refused.
    pub tcp_errors: u64,
    /// TCP streams closed after `net_idle_timeout_s` of silence.
    pub tcp_idle_closed: u64,
    /// Messages too large to be a frame.
    pub oversized: u64,
    /// Batches of datagrams dropped because the analysis was behind.
    pub dropped_batches: u64,
}

#[derive(Default)]
struct Counters {
    udp: std::sync::atomic::AtomicU64,
    tcp: std::sync::atomic::AtomicU64,
    oversized: std::sync::atomic::AtomicU64,
}

pub struct HepListener {
    ingest: Ingest,
    local: SocketAddr,
    counters: Arc<Counters>,
    streams: Arc<StreamCounts>,
}

/// HEP over TCP: v3 messages back to back, cut by their length field.
struct Proto {
    port: u16,
    counters: Arc<Counters>,
}

/// A message as a frame from the sender to the listener's HEP port, stamped with the receive time (the decoder
/// takes the HEP header's own time for the packet inside).
fn emit(frame: &mut Vec<u8>, from: &Arrival, port: u16, msg: &[u8], out: &mut FrameBatch) -> bool {
    if synth_frame(frame, from.peer.ip(), from.local.ip(), from.peer.port(), port, None, msg) {
        out.push(from.at, crate::decode::link::LINKTYPE_ETHERNET, frame);
        true
    } else {
        false
    }
}

impl StreamProto for Proto {
    const MESSAGE_MAX: usize = 65_535;
    type Conn = Vec<u8>;

    fn frame(&self, b: &[u8]) -> Framing {
        match hep::frame_len(b) {
            _ if b.len() < 6 => Framing::Incomplete,
            Some(len) if len >= 6 => Framing::Message(len),
            _ => Framing::Broken,
        }
    }

    fn message(&self, frame: &mut Vec<u8>, from: &Arrival, msg: &[u8], out: &mut FrameBatch, _: &mut Vec<u8>) {
        if emit(frame, from, self.port, msg, out) {
            self.counters.tcp.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.oversized.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl HepListener {
    /// Binds UDP and TCP on `addr` (tasks on `rt`); frames are addressed to UDP port `port`.
    pub fn bind(
        addr: SocketAddr,
        port: u16,
        net: &NetLimits,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<HepListener> {
        let udp = std::net::UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        set_rcvbuf(&udp, 8 << 20);
        let local = udp.local_addr()?;
        let tcp = crate::edge::bind_tcp(local, rt)?;
        let udp = {
            let _guard = rt.enter();
            tokio::net::UdpSocket::from_std(udp)?
        };
        let ingest = Ingest::new();
        let counters = Arc::new(Counters::default());
        let streams = Arc::new(StreamCounts::default());
        let proto = Arc::new(Proto { port, counters: counters.clone() });
        rt.spawn(socket::serve_streams(
            tcp,
            proto,
            net.clone(),
            ingest.tx.clone(),
            streams.clone(),
            ingest.stop_signal(),
            "hep",
        ));
        rt.spawn(udp_task(
            udp,
            local,
            port,
            ingest.tx.clone(),
            ingest.dropped.clone(),
            counters.clone(),
            ingest.stop_signal(),
        ));
        Ok(HepListener { ingest, local, counters, streams })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> HepStats {
        HepStats {
            udp_packets: self.counters.udp.load(Ordering::Relaxed),
            tcp_messages: self.counters.tcp.load(Ordering::Relaxed),
            tcp_connections: self.streams.accepted.load(Ordering::Relaxed),
            tcp_errors: self.streams.broken.load(Ordering::Relaxed),
            tcp_idle_closed: self.streams.idle_closed.load(Ordering::Relaxed),
            oversized: self.counters.oversized.load(Ordering::Relaxed),
            dropped_batches: self.ingest.dropped.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `timeout_ms` for data, then hands every HEP message that arrived to `f` as a frame
    /// (receive time, Ethernet). Returns how many.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        self.ingest.poll(timeout_ms, f)
    }
}

fn set_rcvbuf(udp: &std::net::UdpSocket, bytes: i32) {
    // A smaller buffer than asked only means drops under a burst: not a reason to refuse to listen.
    let _ = crate::os::set_recv_buffer(udp, bytes);
}

/// Datagrams as they come, gathered into batches: each wake takes whatever the socket holds.
async fn udp_task(
    udp: tokio::net::UdpSocket,
    local: SocketAddr,
    port: u16,
    tx: crossbeam_channel::Sender<FrameBatch>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rx = vec![0u8; 65_536];
    let mut frame = Vec::with_capacity(70_000);
    loop {
        tokio::select! {
            _ = crate::edge::stopped(&mut stop) => return,
            r = udp.readable() => if r.is_err() { return },
        }
        let mut batch = FrameBatch::default();
        // One receive time per wake-up, and the counters added once per batch.
        let mut from = Arrival { peer: local, local, at: crate::time::wall_clock() };
        let (mut got, mut oversized) = (0, 0);
        while batch.data.len() < socket::BATCH_BYTES {
            match udp.try_recv_from(&mut rx) {
                Ok((len, peer)) => {
                    got += 1;
                    from.peer = crate::edge::canonical_peer(peer);
                    if !emit(&mut frame, &from, port, &rx[..len], &mut batch) {
                        oversized += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        counters.udp.fetch_add(got, Ordering::Relaxed);
        counters.oversized.fetch_add(oversized, Ordering::Relaxed);
        if !batch.is_empty() {
            socket::send_datagrams(&tx, &dropped, batch);
        }
    }
}
