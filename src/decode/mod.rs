//! The rx stage's decoder: captured frame → innermost datagram (addresses, ports, transport, payload).
//!
//! Link layers, IPv4/IPv6 with fragment reassembly, UDP, TCP with SIP stream reassembly (and WebSocket),
//! SCTP DATA chunks. Tunnels (`encap.rs`) plug in between the IP layer and the transport, recursively.

pub mod encap;
pub mod frag;
pub mod hep;
pub mod ip;
pub mod link;
pub mod tcp;
pub mod tunnel;

use std::net::IpAddr;

use thiserror::Error;

use crate::time::Nanos;

use frag::{Reassembler, SavedFrame};
use ip::{IpHeader, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use link::Network;
use tcp::{FlowKey, TcpReassembler};

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unsupported link type {0}")]
    UnsupportedLink(u16),
    #[error("encapsulation nested too deeply")]
    TooDeep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    #[serde(rename = "ws")]
    WebSocket,
    Sctp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::WebSocket => "ws",
            Transport::Sctp => "sctp",
        }
    }
}

/// Where the bytes of a datagram came from, for the per-call pcap.
#[derive(Clone, Copy)]
pub enum Frames<'a> {
    One { link_type: u16, data: &'a [u8], ts: Nanos },
    Many(&'a [SavedFrame]),
}

/// The innermost datagram of a frame.
pub struct Datagram<'a> {
    pub ts: Nanos,
    /// `ts` minus the time of the frame it came in: not 0 only where a live source's decoder takes a sender's
    /// own time (HEP's) for the packet, see `Decoder::hold_sender_times`.
    pub skew: Nanos,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub payload: &'a [u8],
    pub vlan: Option<u16>,
    pub frames: Frames<'a>,
}

/// The innermost IP header and transport header the last frame came down to, after every encapsulation (ports
/// 0 where the innermost IP packet carries no UDP or TCP, or is a fragment): what tests compare with tshark's
/// innermost fields, frame by frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Transport payload bytes (a reassembled datagram's, on the frame that completed it); IP payload bytes
    /// without a transport.
    pub len: usize,
}

/// Counters of the decoder, reported in the summary and (later) by the manager port.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DecodeStats {
    pub frames: u64,
    pub bytes: u64,
    pub not_ip: u64,
    pub errors: u64,
    pub truncated_ip: u64,
    pub udp: u64,
    pub tcp_segments: u64,
    pub tcp_ignored: u64,
    pub sctp_chunks: u64,
    pub other_ip_proto: u64,
    pub fragments: u64,
    pub reassembled: u64,
    pub fragments_dropped: u64,
    pub tcp_sip_messages: u64,
    pub tcp_skipped_bytes: u64,
    pub tunnel: encap::TunnelStats,
}

impl DecodeStats {
    /// Another decoder's counters added in (several rx stages). The destructuring names every field, so a new
    /// counter cannot be left out without the compiler saying so.
    pub fn add(&mut self, b: &DecodeStats) {
        let DecodeStats {
            frames,
            bytes,
            not_ip,
            errors,
            truncated_ip,
            udp,
            tcp_segments,
            tcp_ignored,
            sctp_chunks,
            other_ip_proto,
            fragments,
            reassembled,
            fragments_dropped,
            tcp_sip_messages,
            tcp_skipped_bytes,
            tunnel,
        } = b;
        self.frames += frames;
        self.bytes += bytes;
        self.not_ip += not_ip;
        self.errors += errors;
        self.truncated_ip += truncated_ip;
        self.udp += udp;
        self.tcp_segments += tcp_segments;
        self.tcp_ignored += tcp_ignored;
        self.sctp_chunks += sctp_chunks;
        self.other_ip_proto += other_ip_proto;
        self.fragments += fragments;
        self.reassembled += reassembled;
        self.fragments_dropped += fragments_dropped;
        self.tcp_sip_messages += tcp_sip_messages;
        self.tcp_skipped_bytes += tcp_skipped_bytes;
        self.tunnel.add(tunnel);
    }
}

/// Which TCP ports carry SIP (both directions are checked), and other decoder settings.
pub struct DecoderConfig {
    pub sip_ports: Box<[bool; 65536]>,
    pub keep_frames: bool,
    /// GTP-U port (2152); 0 disables.
    pub gtp_port: u16,
    /// HEP port for HEP packets inside captures (voxtap's `udp_port_hep`, 9060); 0 disables.
    pub hep_port: u16,
    /// `udp_port_vxlan`, `udp_port_tzsp`, `udp_port_l2tp` (source or destination port); 0 disables.
    pub vxlan_port: u16,
    pub tzsp_port: u16,
    pub l2tp_port: u16,
    /// AudioCodes debug recordings on this UDP port (`audiocodes`, `udp_port_audiocodes`); 0 disables.
    pub audiocodes_port: u16,
}

pub struct Decoder {
    cfg: DecoderConfig,
    frag: Reassembler,
    tcp: TcpReassembler,
    tcp_out: Vec<tcp::Message>,
    sctp_partial: std::collections::HashMap<(IpAddr, IpAddr, u16, u16, u16), Vec<u8>>,
    pub stats: DecodeStats,
    /// Room for an inflated HEP payload.
    scratch: Vec<u8>,
    /// The last decode error, for one-line diagnostics.
    pub last_error: Option<DecodeError>,
    /// Where the last frame ended up (`None`: not IP, a fragment still waiting, or an error).
    pub inner: Option<Inner>,
    /// A live source's: HEP's time is held within this of the frame's (receive) time; `None` for a capture
    /// file, whose HEP times are taken as they are.
    sender_window: Option<Nanos>,
}

impl Decoder {
    /// New SIP ports (a reload): TCP flows already followed stay as they are.
    pub fn set_sip_ports(&mut self, ports: &[bool; 65536]) {
        self.cfg.sip_ports.copy_from_slice(&ports[..]);
    }

    pub fn new(cfg: DecoderConfig) -> Self {
        let keep = cfg.keep_frames;
        Decoder {
            cfg,
            frag: Reassembler::default(),
            tcp: TcpReassembler::new(keep),
            tcp_out: Vec::new(),
            sctp_partial: Default::default(),
            stats: DecodeStats::default(),
            scratch: Vec::new(),
            last_error: None,
            inner: None,
            sender_window: None,
        }
    }

    /// Frames come from a live source, stamped with the time they were received: a time HEP carries is held
    /// within `window` of it (`sender_time_window_s`; 0 = as sent), and each datagram says how far its time is
    /// from its frame's (`Datagram::skew`), so that timers can run on each sender's clock.
    pub fn hold_sender_times(&mut self, window: Nanos) {
        self.sender_window = Some(window);
    }

    /// Decodes one frame and hands every datagram found in it to `sink`.
    pub fn decode(&mut self, ts: Nanos, link_type: u16, data: &[u8], sink: &mut dyn FnMut(&Datagram)) {
        self.stats.frames += 1;
        self.stats.bytes += data.len() as u64;
        self.inner = None;
        let l3 = match link::peel(link_type, data) {
            Ok(Some(l3)) => l3,
            Ok(None) => {
                self.stats.not_ip += 1;
                return;
            }
            Err(e) => {
                self.error(e);
                return;
            }
        };
        let frames = Frames::One { link_type, data, ts };
        self.network(ts, l3.network, &data[l3.offset..], l3.vlan, frames, 0, sink);
    }

    fn error(&mut self, e: DecodeError) {
        self.stats.errors += 1;
        self.last_error = Some(e);
    }

    #[allow(clippy::too_many_arguments)]
    fn network(
        &mut self,
        ts: Nanos,
        net: Network,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        if depth > 8 {
            self.error(DecodeError::TooDeep);
            return;
        }
        let h = match net {
            Network::Ipv4 => ip::parse_ipv4(b),
            Network::Ipv6 => ip::parse_ipv6(b),
        };
        let h = match h {
            Ok(h) => h,
            Err(e) => {
                self.error(e);
                return;
            }
        };
        if h.truncated {
            self.stats.truncated_ip += 1;
        }
        let len = h.payload_end - h.payload_start;
        self.inner = Some(Inner { src: h.src, dst: h.dst, proto: h.proto, sport: 0, dport: 0, len });
        let payload = &b[h.payload_start..h.payload_end];
        if let Some(fr) = h.fragment {
            self.stats.fragments += 1;
            let frame = match frames {
                Frames::One { link_type, data, .. } => (link_type, data),
                Frames::Many(_) => (0, &[][..]),
            };
            let before = self.frag.stats.dropped_limits + self.frag.stats.timed_out;
            let done = self.frag.add(ts, h.src, h.dst, h.proto, fr, payload, frame);
            self.stats.fragments_dropped += self.frag.stats.dropped_limits + self.frag.stats.timed_out - before;
            if let Some(r) = done {
                self.stats.reassembled += 1;
                let frames = Frames::Many(&r.frames);
                self.transport(ts, &h, &r.payload, vlan, frames, depth, sink);
            }
            return;
        }
        self.transport(ts, &h, payload, vlan, frames, depth, sink);
    }

    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        ts: Nanos,
        h: &IpHeader,
        payload: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        match h.proto {
            PROTO_UDP => {
                let u = match ip::parse_udp(payload) {
                    Ok(u) => u,
                    Err(e) => {
                        self.error(e);
                        return;
                    }
                };
                self.stats.udp += 1;
                let body = &payload[u.payload_start..u.payload_end];
                self.inner =
                    Some(Inner { src: h.src, dst: h.dst, proto: 17, sport: u.sport, dport: u.dport, len: body.len() });
                if self.udp_encap(ts, h.src, u.sport, u.dport, body, vlan, frames, depth, sink) {
                    return;
                }
                let d = Datagram {
                    ts,
                    skew: 0,
                    src: h.src,
                    dst: h.dst,
                    sport: u.sport,
                    dport: u.dport,
                    transport: Transport::Udp,
                    payload: body,
                    vlan,
                    frames,
                };
                sink(&d);
            }
            47 if depth < 8 => self.gre(ts, payload, vlan, frames, depth, sink),
            PROTO_TCP => self.tcp(ts, h, payload, vlan, frames, sink),
            PROTO_SCTP => self.sctp(ts, h, payload, vlan, frames, sink),
            4 | 41 if depth < 8 => self.ipip(ts, h.proto, payload, vlan, frames, depth, sink),
            _ => self.stats.other_ip_proto += 1,
        }
    }

    fn tcp(
        &mut self,
        ts: Nanos,
        h: &IpHeader,
        payload: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let t = match ip::parse_tcp(payload) {
            Ok(t) => t,
            Err(e) => {
                self.error(e);
                return;
            }
        };
        self.stats.tcp_segments += 1;
        let len = payload.len().saturating_sub(t.payload_start);
        self.inner = Some(Inner { src: h.src, dst: h.dst, proto: 6, sport: t.sport, dport: t.dport, len });
        if !self.cfg.sip_ports[t.sport as usize] && !self.cfg.sip_ports[t.dport as usize] {
            self.stats.tcp_ignored += 1;
            return;
        }
        let key = FlowKey { src: h.src, dst: h.dst, sport: t.sport, dport: t.dport };
        let frame = match frames {
            Frames::One { link_type, data, .. } => (link_type, data),
            Frames::Many(_) => (0, &[][..]),
        };
        let mut out = std::mem::take(&mut self.tcp_out);
        let skipped = self.tcp.stats.skipped_bytes;
        self.tcp.segment(ts, key, t.seq, t.flags, &payload[t.payload_start..], frame, &mut out);
        self.stats.tcp_skipped_bytes += self.tcp.stats.skipped_bytes - skipped;
        for m in out.drain(..) {
            self.stats.tcp_sip_messages += 1;
            let d = Datagram {
                ts: m.ts,
                skew: 0,
                src: h.src,
                dst: h.dst,
                sport: t.sport,
                dport: t.dport,
                transport: if m.websocket { Transport::WebSocket } else { Transport::Tcp },
                payload: &m.payload,
                vlan,
                frames: Frames::Many(&m.frames),
            };
            sink(&d);
        }
        self.tcp_out = out;
    }

    /// SCTP: each complete (unfragmented) DATA chunk is one message.
    fn sctp(
        &mut self,
        ts: Nanos,
        h: &IpHeader,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        if b.len() < 12 {
            self.error(DecodeError::Truncated("sctp"));
            return;
        }
        let sport = u16::from_be_bytes([b[0], b[1]]);
        let dport = u16::from_be_bytes([b[2], b[3]]);
        let mut off = 12usize;
        while off + 4 <= b.len() {
            let ctype = b[off];
            let flags = b[off + 1];
            let clen = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            if clen < 4 || off + clen > b.len() {
                break;
            }
            if ctype == 0 && clen >= 16 {
                self.stats.sctp_chunks += 1;
                let data = &b[off + 16..off + clen];
                let sid = u16::from_be_bytes([b[off + 8], b[off + 9]]);
                let key = (h.src, h.dst, sport, dport, sid);
                // B (0x02) and E (0x01) flags: a user message split over several DATA chunks is joined here.
                let whole: Option<Vec<u8>> = match flags & 0x03 {
                    0x03 => None,
                    0x02 => {
                        if self.sctp_partial.len() < 4096 {
                            self.sctp_partial.insert(key, data.to_vec());
                        }
                        off += (clen + 3) & !3;
                        continue;
                    }
                    0x00 => {
                        if let Some(buf) = self.sctp_partial.get_mut(&key) {
                            if buf.len() + data.len() <= 256 * 1024 {
                                buf.extend_from_slice(data);
                            } else {
                                self.sctp_partial.remove(&key);
                            }
                        }
                        off += (clen + 3) & !3;
                        continue;
                    }
                    _ => match self.sctp_partial.remove(&key) {
                        Some(mut buf) => {
                            buf.extend_from_slice(data);
                            Some(buf)
                        }
                        None => {
                            off += (clen + 3) & !3;
                            continue;
                        }
                    },
                };
                let payload = whole.as_deref().unwrap_or(data);
                let d = Datagram {
                    ts,
                    skew: 0,
                    src: h.src,
                    dst: h.dst,
                    sport,
                    dport,
                    transport: Transport::Sctp,
                    payload,
                    vlan,
                    frames,
                };
                sink(&d);
            }
            off += (clen + 3) & !3;
        }
    }

    /// Periodic housekeeping on packet time.
    pub fn sweep(&mut self, now: Nanos) {
        self.frag.sweep(now);
        self.tcp.sweep(now);
    }
}
