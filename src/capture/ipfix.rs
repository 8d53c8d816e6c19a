//! The live IPFIX source for Oracle (Acme Packet) SBCs (`ipfix = yes`, `ipfix_bind_ip`, `ipfix_bind_port`):
//! the SBC's "comm-monitor" exports every SIP message it sends or receives over TCP, in fixed sets of its own
//! rather than templated IPFIX records (reference: voipmonitor-links §4.10).
//!
//! Message: IPFIX header (version, length, export time, sequence, observation domain) and one set (id, length).
//! Set 256 is the SBC's handshake, answered with the same message as set 257. Sets 258/259 carry a SIP message
//! received/sent over UDP, 260/261 over TCP: the time (seconds, microseconds), the SBC interface, for "sent"
//! messages the Call-ID, then the addresses and ports and the SIP text. Each message becomes a captured-looking
//! frame (Ethernet, IPv4, UDP or a TCP segment of its flow) with the record's time, so the decoder and the calls
//! treat it like any SIP on the wire. Other sets (QoS reports, raw UDP copies) are counted and skipped.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::socket::{self, synth_frame, Arrival, FrameBatch, Framing, Ingest, StreamCounts, StreamProto};
use crate::config::net::NetLimits;
use crate::time::Nanos;

const HEADER: usize = 20;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IpfixStats {
    pub connections: u64,
    pub handshakes: u64,
    pub sip_messages: u64,
    /// Sets of other kinds (QoS, raw copies, keepalives), skipped.
    pub other_sets: u64,
    /// Messages that did not parse, and streams closed for it.
    pub errors: u64,
    /// Streams closed after `net_idle_timeout_s` of silence.
    pub idle_closed: u64,
}

/// A SIP message an IPFIX set carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipRecord<'a> {
    pub ts: Nanos,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp: bool,
    pub sip: &'a [u8],
}

/// What one IPFIX message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Handshake,
    Sip(SipRecord<'a>),
    Other(u16),
}

/// Total length of the message at the start of `b`, when its header is there.
pub fn message_len(b: &[u8]) -> Option<usize> {
    (b.len() >= 4).then(|| u16::from_be_bytes([b[2], b[3]]) as usize)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let s = self.b.get(self.at..self.at + n).ok_or("ipfix set truncated")?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn ip(&mut self) -> Result<Ipv4Addr, &'static str> {
        let s = self.take(4)?;
        Ok(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
    }
}

/// Parses one whole message (`b` is exactly its length).
pub fn parse(b: &[u8]) -> Result<Message<'_>, &'static str> {
    if b.len() < HEADER {
        return Err("ipfix header truncated");
    }
    if u16::from_be_bytes([b[0], b[1]]) != 10 {
        return Err("not ipfix version 10");
    }
    let set_id = u16::from_be_bytes([b[16], b[17]]);
    let set_len = (u16::from_be_bytes([b[18], b[19]]) as usize).min(b.len() - 16);
    let set = &b[..16 + set_len];
    let mut c = Cursor { b: set, at: HEADER };
    match set_id {
        256 => Ok(Message::Handshake),
        258..=261 => {
            let sec = c.u32()? as i64;
            let usec = (c.u32()? as i64).clamp(0, 999_999);
            let (_slot, _port, _vlan) = (c.u8()?, c.u8()?, c.u16()?);
            let out = set_id == 259 || set_id == 261;
            let tcp = set_id >= 260;
            let (src, dst, sport, dport);
            if tcp {
                dst = c.ip()?;
                src = c.ip()?;
                dport = c.u16()?;
                sport = c.u16()?;
                let _context = c.u32()?;
                if out {
                    let n = c.u8()? as usize;
                    c.take(n)?;
                }
                let _end = c.u8()?;
            } else {
                if out {
                    let n = c.u8()? as usize;
                    c.take(n)?;
                }
                let _end = c.u8()?;
                let _iplen = c.u16()?;
                // An IPv4 header and a UDP header, as the SBC saw the packet; the first port is taken as the
                // destination, as VoIPmonitor and the public decoders of this format read it.
                c.take(12)?;
                src = c.ip()?;
                dst = c.ip()?;
                dport = c.u16()?;
                sport = c.u16()?;
                let _udp_len = c.u16()?;
            }
            let n = c.u16()? as usize;
            let rest = set.len() - c.at;
            let sip = c.take(n.min(rest))?;
            Ok(Message::Sip(SipRecord { ts: sec * 1_000_000_000 + usec * 1000, src, dst, sport, dport, tcp, sip }))
        }
        other => Ok(Message::Other(other)),
    }
}

pub struct IpfixListener {
    ingest: Ingest,
    local: SocketAddr,
    counters: Arc<Counters>,
    streams: Arc<StreamCounts>,
}

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    sip: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

/// Flows remembered per connection for their TCP sequence numbers; past it the table starts again (a flow then
/// shows a jump, which the TCP reassembly takes as a new start).
const FLOWS_MAX: usize = 65_536;

/// One connection's state: the next TCP sequence number of each flow of synthesised segments, and a frame buffer.
#[derive(Default)]
struct Conn {
    seq: HashMap<(Ipv4Addr, Ipv4Addr, u16, u16), u32>,
    frame: Vec<u8>,
}

struct Proto {
    counters: Arc<Counters>,
}

impl StreamProto for Proto {
    const MESSAGE_MAX: usize = 65_535;
    type Conn = Conn;

    /// A header that is not version 10 means the framing is lost: nothing after it can be trusted.
    fn frame(&self, b: &[u8]) -> Framing {
        match message_len(b) {
            None => Framing::Incomplete,
            Some(len) if len >= HEADER && u16::from_be_bytes([b[0], b[1]]) == 10 => Framing::Message(len),
            Some(_) => Framing::Broken,
        }
    }

    fn message(&self, c: &mut Conn, _: &Arrival, msg: &[u8], out: &mut FrameBatch, reply: &mut Vec<u8>) {
        let n = &self.counters;
        match parse(msg) {
            Ok(Message::Handshake) => {
                n.handshakes.fetch_add(1, Ordering::Relaxed);
                let at = reply.len();
                reply.extend_from_slice(msg);
                reply[at + 16..at + 18].copy_from_slice(&257u16.to_be_bytes());
            }
            Ok(Message::Sip(r)) => {
                n.sip.fetch_add(1, Ordering::Relaxed);
                if c.seq.len() >= FLOWS_MAX {
                    c.seq.clear();
                }
                let tcp_seq = r.tcp.then(|| {
                    let next = c.seq.entry((r.src, r.dst, r.sport, r.dport)).or_insert(1);
                    let this = *next;
                    *next = next.wrapping_add(r.sip.len() as u32);
                    this
                });
                if synth_frame(&mut c.frame, r.src.into(), r.dst.into(), r.sport, r.dport, tcp_seq, r.sip) {
                    out.push(r.ts, crate::decode::link::LINKTYPE_ETHERNET, &c.frame);
                } else {
                    n.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Message::Other(_)) => {
                n.other.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                n.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl IpfixListener {
    pub fn bind(addr: SocketAddr, net: &NetLimits, rt: &tokio::runtime::Handle) -> io::Result<IpfixListener> {
        let tcp = crate::edge::bind_tcp(addr, rt)?;
        let local = tcp.local_addr()?;
        let ingest = Ingest::new();
        let counters = Arc::new(Counters::default());
        let streams = Arc::new(StreamCounts::default());
        rt.spawn(socket::serve_streams(
            tcp,
            Arc::new(Proto { counters: counters.clone() }),
            net.clone(),
            ingest.tx.clone(),
            streams.clone(),
            ingest.stop_signal(),
            "ipfix",
        ));
        Ok(IpfixListener { ingest, local, counters, streams })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    pub fn stats(&self) -> IpfixStats {
        let n = &self.counters;
        IpfixStats {
            connections: self.streams.accepted.load(Ordering::Relaxed),
            handshakes: n.handshakes.load(Ordering::Relaxed),
            sip_messages: n.sip.load(Ordering::Relaxed),
            other_sets: n.other.load(Ordering::Relaxed),
            errors: n.errors.load(Ordering::Relaxed) + self.streams.broken.load(Ordering::Relaxed),
            idle_closed: self.streams.idle_closed.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `timeout_ms`, then hands every SIP message that arrived to `f` as a frame. Returns how many.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(Nanos, u16, &[u8])) -> usize {
        self.ingest.poll(timeout_ms, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(set: u16, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 10, 0, 0];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&set.to_be_bytes());
        m.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
        m.extend_from_slice(body);
        let n = m.len() as u16;
        m[2..4].copy_from_slice(&n.to_be_bytes());
        m
    }

    #[test]
    fn sip_sets() {
        let mut udp_out = Vec::new();
        udp_out.extend_from_slice(&100u32.to_be_bytes());
        udp_out.extend_from_slice(&5u32.to_be_bytes());
        udp_out.extend_from_slice(&[1, 2, 0, 0]);
        udp_out.extend_from_slice(&[3, b'a', b'b', b'c', 0]);
        udp_out.extend_from_slice(&[0, 40, 0x45, 0, 0, 40, 0, 1, 0, 0, 64, 17, 0, 0]);
        udp_out.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        udp_out.extend_from_slice(&5060u16.to_be_bytes());
        udp_out.extend_from_slice(&5070u16.to_be_bytes());
        udp_out.extend_from_slice(&[0, 12, 0, 4]);
        udp_out.extend_from_slice(b"BYE x");
        let m = header(259, &udp_out);
        assert_eq!(message_len(&m), Some(m.len()));
        let Message::Sip(r) = parse(&m).unwrap() else { panic!() };
        assert_eq!(
            (r.src, r.dst, r.dport, r.sport, r.tcp),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 5060, 5070, false)
        );
        assert_eq!((r.ts, r.sip), (100_000_005_000, &b"BYE "[..]));
        let mut tcp_in = Vec::new();
        tcp_in.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 1, 2, 0, 0]);
        tcp_in.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
        tcp_in.extend_from_slice(&[0x13, 0xc4, 0x13, 0xce, 0, 0, 0, 9, 0, 0, 3]);
        tcp_in.extend_from_slice(b"ACK");
        let m = header(260, &tcp_in);
        let Message::Sip(r) = parse(&m).unwrap() else { panic!() };
        assert_eq!(
            (r.src, r.sport, r.dport, r.tcp, r.sip),
            (Ipv4Addr::new(10, 0, 0, 1), 5070, 5060, true, &b"ACK"[..])
        );
        assert_eq!(parse(&header(256, &[0; 20])).unwrap(), Message::Handshake);
        assert_eq!(parse(&header(268, &[0; 8])).unwrap(), Message::Other(268));
        assert!(parse(&header(258, &[0; 8])).is_err());
        assert!(parse(&[0, 9, 0, 20]).is_err());
    }

    /// Finding 10: the per-flow sequence numbers of one connection are bounded, however many flows it carries.
    #[test]
    fn flow_sequences_stay_bounded() {
        let proto = Proto { counters: Arc::new(Counters::default()) };
        let mut conn = Conn::default();
        let (mut out, mut reply) = (FrameBatch::default(), Vec::new());
        let peer: SocketAddr = "192.0.2.1:4739".parse().unwrap();
        let from = Arrival { peer, local: peer, at: 0 };
        for i in 0..(FLOWS_MAX as u32 + 5000) {
            let mut b = Vec::new();
            b.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 1, 2, 0, 0]);
            b.extend_from_slice(&[10, 0, 0, 2]);
            b.extend_from_slice(&i.to_be_bytes());
            b.extend_from_slice(&[0x13, 0xc4, 0x13, 0xce, 0, 0, 0, 9, 0, 0, 3]);
            b.extend_from_slice(b"ACK");
            proto.message(&mut conn, &from, &header(260, &b), &mut out, &mut reply);
            out = FrameBatch::default();
            assert!(conn.seq.len() <= FLOWS_MAX);
        }
        assert_eq!(proto.counters.sip.load(Ordering::Relaxed), FLOWS_MAX as u64 + 5000);
    }
}
