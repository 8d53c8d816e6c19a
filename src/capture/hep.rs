//! The live HEP source (`hep = yes`, `hep_bind_ip`, `hep_bind_port`): HEP over UDP and over TCP on the same
//! address, as SBCs, Kamailio/OpenSIPS and capture agents send it.
//!
//! Each HEP message becomes a frame as if it had been captured on the wire — Ethernet, IP from the sender to the
//! listener, UDP to the HEP port — so the decoder takes it apart exactly as it does HEP found in a capture file
//! (HEP's own addresses, ports and times) and a call's spool file holds the HEP packets it was built from. Over
//! TCP, HEP v3 messages follow each other and are cut by their length field; a stream that stops making sense is
//! closed and counted. Nothing here blocks: one poll over every socket, then whatever is ready.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;

use crate::decode::hep;
use crate::time::Nanos;

/// A TCP stream may hold this much of an unfinished HEP message.
const STREAM_MAX: usize = 1 << 20;
/// Connections beyond this are refused (closed at once).
const MAX_CONNS: usize = 1024;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct HepStats {
    pub udp_packets: u64,
    pub tcp_messages: u64,
    pub tcp_connections: u64,
    /// TCP streams closed because they did not carry HEP v3, or overflowed.
    pub tcp_errors: u64,
    /// Messages too large to be a frame.
    pub oversized: u64,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

pub struct HepListener {
    udp: UdpSocket,
    tcp: TcpListener,
    conns: Vec<Conn>,
    local: SocketAddr,
    /// The UDP port synthetic frames are addressed to (the decoder's HEP port).
    port: u16,
    pub stats: HepStats,
    frame: Vec<u8>,
    rx: Vec<u8>,
}

impl HepListener {
    /// Binds UDP and TCP on `addr`; frames are addressed to UDP port `port`.
    pub fn bind(addr: SocketAddr, port: u16) -> io::Result<HepListener> {
        let udp = UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        let rcvbuf: libc::c_int = 8 << 20;
        // SAFETY: a valid socket and a c_int option value of the stated size.
        unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &rcvbuf as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let tcp = TcpListener::bind(udp.local_addr()?)?;
        tcp.set_nonblocking(true)?;
        let local = udp.local_addr()?;
        Ok(HepListener {
            udp,
            tcp,
            conns: Vec::new(),
            local,
            port,
            stats: HepStats::default(),
            frame: Vec::with_capacity(70_000),
            rx: vec![0; 65_536],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits up to `timeout_ms` for data, then hands every HEP message that arrived to `f` as a frame
    /// (receive time, Ethernet). Returns how many.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        let mut fds: Vec<libc::pollfd> = [self.udp.as_raw_fd(), self.tcp.as_raw_fd()]
            .into_iter()
            .chain(self.conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return 0;
        }
        let now = wall_clock();
        let mut got = 0;
        if fds[0].revents != 0 {
            while let Ok((len, peer)) = self.udp.recv_from(&mut self.rx) {
                self.stats.udp_packets += 1;
                let msg = std::mem::take(&mut self.rx);
                got += self.emit(peer, &msg[..len], now, f);
                self.rx = msg;
            }
        }
        if fds[1].revents != 0 {
            while let Ok((stream, peer)) = self.tcp.accept() {
                if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                    self.stats.tcp_errors += 1;
                    continue;
                }
                self.stats.tcp_connections += 1;
                self.conns.push(Conn { stream, peer, buf: Vec::new() });
            }
        }
        let ready: Vec<bool> = fds[2..].iter().map(|p| p.revents != 0).collect();
        let mut keep = Vec::with_capacity(self.conns.len());
        for (mut c, r) in
            std::mem::take(&mut self.conns).into_iter().zip(ready.into_iter().chain(std::iter::repeat(false)))
        {
            if r && !self.read_stream(&mut c, now, f, &mut got) {
                continue;
            }
            keep.push(c);
        }
        self.conns = keep;
        got
    }

    /// Reads what a connection has and hands on its complete messages; false when it is closed or broken.
    fn read_stream(&mut self, c: &mut Conn, now: Nanos, f: &mut dyn FnMut(Nanos, u16, &[u8]), got: &mut usize) -> bool {
        // A peer that sends and closes: what it sent before the close still counts.
        let mut open = true;
        loop {
            match c.stream.read(&mut self.rx) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&self.rx[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    open = false;
                    break;
                }
            }
            if c.buf.len() > STREAM_MAX {
                self.stats.tcp_errors += 1;
                return false;
            }
        }
        let mut at = 0;
        while c.buf.len() - at >= 6 {
            let Some(len) = hep::frame_len(&c.buf[at..]) else {
                // Not HEP v3 where a message should start: the stream cannot be followed any further.
                self.stats.tcp_errors += 1;
                return false;
            };
            if len < 6 {
                self.stats.tcp_errors += 1;
                return false;
            }
            if c.buf.len() - at < len {
                break;
            }
            self.stats.tcp_messages += 1;
            let msg = c.buf[at..at + len].to_vec();
            *got += self.emit(c.peer, &msg, now, f);
            at += len;
        }
        c.buf.drain(..at);
        open
    }

    /// One HEP message as an Ethernet/IP/UDP frame from `peer` to the listener's HEP port.
    fn emit(&mut self, peer: SocketAddr, msg: &[u8], now: Nanos, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        let udp_len = 8 + msg.len();
        let f6 = matches!(peer.ip(), IpAddr::V6(a) if a.to_ipv4_mapped().is_none());
        if udp_len > 65_535 - 40 {
            self.stats.oversized += 1;
            return 0;
        }
        let b = &mut self.frame;
        b.clear();
        b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        };
        if f6 {
            b.extend_from_slice(&0x86ddu16.to_be_bytes());
            b.extend_from_slice(&[0x60, 0, 0, 0]);
            b.extend_from_slice(&(udp_len as u16).to_be_bytes());
            b.extend_from_slice(&[17, 64]);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            b.extend_from_slice(&v6(peer.ip()));
            b.extend_from_slice(&v6(self.local.ip()));
        } else {
            b.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + udp_len) as u16;
            let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[12..16].copy_from_slice(&v4(peer.ip()).octets());
            ip[16..20].copy_from_slice(&v4(self.local.ip()).octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            b.extend_from_slice(&ip);
        }
        b.extend_from_slice(&peer.port().to_be_bytes());
        b.extend_from_slice(&self.port.to_be_bytes());
        b.extend_from_slice(&(udp_len as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(msg);
        f(now, crate::decode::link::LINKTYPE_ETHERNET, b);
        1
    }
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn wall_clock() -> Nanos {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
