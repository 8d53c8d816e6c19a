//! The live HEP source (`hep = yes`, `hep_bind_ip`, `hep_bind_port`): HEP over UDP and over TCP on the same
//! address, as SBCs, Kamailio/OpenSIPS and capture agents send it.
//!
//! Each HEP message becomes a frame as if it had been captured on the wire — Ethernet, IP from the sender to the
//! listener, UDP to the HEP port — so the decoder takes it apart exactly as it does HEP found in a capture file
//! (HEP's own addresses, ports and times) and a call's spool file holds the HEP packets it was built from. Over
//! TCP, HEP v3 messages follow each other and are cut by their length field; a stream that stops making sense is
//! closed and counted. Nothing here blocks: one poll over every socket, then whatever is ready.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::socket::{synth_frame, Framing, Streams};
use crate::decode::hep;
use crate::time::Nanos;

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

pub struct HepListener {
    udp: UdpSocket,
    tcp: Streams,
    local: SocketAddr,
    /// The UDP port synthetic frames are addressed to (the decoder's HEP port).
    port: u16,
    stats: HepStats,
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
        let local = udp.local_addr()?;
        let tcp = Streams::bind(local)?;
        Ok(HepListener {
            udp,
            tcp,
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

    pub fn stats(&self) -> HepStats {
        HepStats { tcp_connections: self.tcp.counts.accepted, tcp_errors: self.tcp.counts.broken, ..self.stats }
    }

    /// Waits up to `timeout_ms` for data, then hands every HEP message that arrived to `f` as a frame
    /// (receive time, Ethernet). Returns how many.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        let mut fds = vec![libc::pollfd { fd: self.udp.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        self.tcp.push_fds(&mut fds);
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return 0;
        }
        let now = crate::time::wall_clock();
        let (local, port) = (self.local, self.port);
        let (frame, stats) = (&mut self.frame, &mut self.stats);
        let mut got = 0;
        let mut emit = |peer: SocketAddr, msg: &[u8]| {
            if synth_frame(frame, peer.ip(), local.ip(), peer.port(), port, None, msg) {
                f(now, crate::decode::link::LINKTYPE_ETHERNET, frame);
                got += 1;
            } else {
                stats.oversized += 1;
            }
        };
        let (mut udp, mut tcp) = (0, 0);
        if fds[0].revents != 0 {
            while let Ok((len, peer)) = self.udp.recv_from(&mut self.rx) {
                udp += 1;
                emit(peer, &self.rx[..len]);
            }
        }
        // Over TCP, HEP v3 messages follow each other, cut by their length field.
        let framing = |b: &[u8]| match hep::frame_len(b) {
            _ if b.len() < 6 => Framing::Incomplete,
            Some(len) if len >= 6 => Framing::Message(len),
            _ => Framing::Broken,
        };
        self.tcp.service(&fds[1..], &framing, &mut |_, peer, msg| {
            tcp += 1;
            emit(peer, msg);
        });
        self.stats.udp_packets += udp;
        self.stats.tcp_messages += tcp;
        got
    }
}
