//! What the socket sources (HEP, IPFIX) share: TCP streams of length-framed messages read without blocking, and
//! frames built as if the message had been captured on the wire, so that the decoder takes them apart like any
//! captured packet.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// A stream may hold this much of an unfinished message.
const STREAM_MAX: usize = 1 << 20;
/// Connections beyond this are closed at once.
const MAX_CONNS: usize = 1024;

/// Where the next message of a stream ends.
pub enum Framing {
    /// Not all of it has arrived.
    Incomplete,
    /// A message of this many bytes.
    Message(usize),
    /// The stream no longer makes sense; it is closed.
    Broken,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamCounts {
    pub accepted: u64,
    /// Connections refused, closed for bad framing, or overflowing.
    pub broken: u64,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

/// A TCP listener and its connections.
pub struct Streams {
    listener: TcpListener,
    conns: Vec<Conn>,
    rx: Vec<u8>,
    pub counts: StreamCounts,
}

impl Streams {
    pub fn bind(addr: SocketAddr) -> io::Result<Streams> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Streams { listener, conns: Vec::new(), rx: vec![0; 65_536], counts: StreamCounts::default() })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Adds the listener's and every connection's descriptor, in the order `service` expects them back.
    pub fn push_fds(&self, fds: &mut Vec<libc::pollfd>) {
        for fd in std::iter::once(self.listener.as_raw_fd()).chain(self.conns.iter().map(|c| c.stream.as_raw_fd())) {
            fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
    }

    /// After a poll over `push_fds`' descriptors (`ready`, same order): accepts, reads, and hands each complete
    /// message to `on_msg` with its connection (to answer on) and peer.
    pub fn service(
        &mut self,
        ready: &[libc::pollfd],
        frame: &dyn Fn(&[u8]) -> Framing,
        on_msg: &mut dyn FnMut(&mut TcpStream, SocketAddr, &[u8]),
    ) {
        let was = self.conns.len();
        if ready.first().is_some_and(|p| p.revents != 0) {
            while let Ok((stream, peer)) = self.listener.accept() {
                if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                    self.counts.broken += 1;
                    continue;
                }
                self.counts.accepted += 1;
                self.conns.push(Conn { stream, peer, buf: Vec::new() });
            }
        }
        let mut i = 0;
        self.conns.retain_mut(|c| {
            // Connections accepted just now were not polled yet.
            let polled = i < was && ready.get(1 + i).is_some_and(|p| p.revents != 0);
            i += 1;
            if !polled {
                return true;
            }
            let keep = read(c, &mut self.rx, frame, on_msg);
            if !keep.1 {
                self.counts.broken += 1;
            }
            keep.0
        });
    }
}

/// Reads what a connection has and hands on its complete messages: (keep it open, it was not broken).
fn read(
    c: &mut Conn,
    rx: &mut [u8],
    frame: &dyn Fn(&[u8]) -> Framing,
    on_msg: &mut dyn FnMut(&mut TcpStream, SocketAddr, &[u8]),
) -> (bool, bool) {
    // A peer that sends and closes: what it sent before the close still counts.
    let mut open = true;
    loop {
        match c.stream.read(rx) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => c.buf.extend_from_slice(&rx[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                open = false;
                break;
            }
        }
        if c.buf.len() > STREAM_MAX {
            return (false, false);
        }
    }
    let mut at = 0;
    loop {
        match frame(&c.buf[at..]) {
            Framing::Incomplete => break,
            Framing::Broken => return (false, false),
            Framing::Message(len) if len == 0 || c.buf.len() - at < len => break,
            Framing::Message(len) => {
                on_msg(&mut c.stream, c.peer, &c.buf[at..at + len]);
                at += len;
            }
        }
    }
    c.buf.drain(..at);
    (open, true)
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
