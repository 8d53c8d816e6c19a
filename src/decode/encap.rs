//! Encapsulations peeled by the decoder between an IP layer and the next: GRE (with ERSPAN and PPP), and those
//! carried over UDP — VXLAN, TZSP, L2TPv2, GTP-U, HEP and AudioCodes debug recordings. Each is recognised by its configured port (VoIPmonitor's
//! keys), decoded recursively, and counted per kind: packets peeled, headers that were malformed (skipped), and
//! well-formed ones carrying nothing voxtap can use (a TZSP 802.11 frame, an L2TP control message).

use std::io::Read;
use std::net::IpAddr;

use super::link::{self, Network, L3};
use super::{hep, tunnel, Datagram, DecodeError, Decoder, Frames, Transport};
use crate::time::Nanos;

/// The encapsulations voxtap peels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    IpIp,
    Gre,
    Erspan,
    Vxlan,
    Tzsp,
    L2tp,
    Gtp,
    Hep,
    AudioCodes,
}

pub const TUNNELS: [Tunnel; 9] = [
    Tunnel::IpIp,
    Tunnel::Gre,
    Tunnel::Erspan,
    Tunnel::Vxlan,
    Tunnel::Tzsp,
    Tunnel::L2tp,
    Tunnel::Gtp,
    Tunnel::Hep,
    Tunnel::AudioCodes,
];

impl Tunnel {
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::IpIp => "ipip",
            Tunnel::Gre => "gre",
            Tunnel::Erspan => "erspan",
            Tunnel::Vxlan => "vxlan",
            Tunnel::Tzsp => "tzsp",
            Tunnel::L2tp => "l2tp",
            Tunnel::Gtp => "gtp",
            Tunnel::Hep => "hep",
            Tunnel::AudioCodes => "audiocodes",
        }
    }
}

/// Per-encapsulation counters, indexed like `TUNNELS`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TunnelStats {
    pub packets: [u64; 9],
    pub errors: [u64; 9],
    pub unsupported: [u64; 9],
}

impl TunnelStats {
    pub fn total(&self) -> u64 {
        self.packets.iter().sum()
    }

    pub fn add(&mut self, o: &TunnelStats) {
        for i in 0..TUNNELS.len() {
            self.packets[i] += o.packets[i];
            self.errors[i] += o.errors[i];
            self.unsupported[i] += o.unsupported[i];
        }
    }

    /// `tunnel_vxlan=…`, `tunnel_vxlan_errors=…`, `tunnel_hep_unsupported=…`: the counters that are not zero.
    pub fn nonzero(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (i, t) in TUNNELS.iter().enumerate() {
            for (suffix, v) in
                [("", self.packets[i]), ("_errors", self.errors[i]), ("_unsupported", self.unsupported[i])]
            {
                if v > 0 {
                    out.push((format!("tunnel_{}{suffix}", t.name()), v));
                }
            }
        }
        out
    }
}

/// A compressed HEP payload is inflated up to this size; larger is counted as unsupported.
const HEP_INFLATE_MAX: usize = 256 * 1024;

impl Decoder {
    fn count(&mut self, t: Tunnel) {
        self.stats.tunnel.packets[t as usize] += 1;
    }

    fn tunnel_error(&mut self, t: Tunnel, e: DecodeError) {
        self.stats.tunnel.errors[t as usize] += 1;
        self.error(e);
    }

    fn unsupported(&mut self, t: Tunnel) {
        self.stats.tunnel.unsupported[t as usize] += 1;
    }

    /// An IP packet inside a tunnel, by its version nibble.
    #[allow(clippy::too_many_arguments)]
    fn inner_ip(
        &mut self,
        t: Tunnel,
        ts: Nanos,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let net = match b.first().map(|v| v >> 4) {
            Some(4) => Network::Ipv4,
            Some(6) => Network::Ipv6,
            _ => return self.tunnel_error(t, DecodeError::Malformed("inner ip version")),
        };
        self.count(t);
        self.network(ts, net, b, vlan, frames, depth + 1, sink);
    }

    /// An Ethernet frame inside a tunnel (VLAN tags, MPLS, PPPoE as on the wire). The outer VLAN, if any, wins.
    #[allow(clippy::too_many_arguments)]
    fn inner_ethernet(
        &mut self,
        t: Tunnel,
        ts: Nanos,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        match link::peel(link::LINKTYPE_ETHERNET, b) {
            Ok(Some(l3)) => {
                self.count(t);
                self.network(ts, l3.network, &b[l3.offset..], vlan.or(l3.vlan), frames, depth + 1, sink);
            }
            // ARP and the like, mirrored with the rest: not an error.
            Ok(None) => {
                self.count(t);
                self.stats.not_ip += 1;
            }
            Err(e) => self.tunnel_error(t, e),
        }
    }

    /// PPP's network protocol (after GRE or L2TP): IPv4 or IPv6, anything else (LCP, IPCP…) is not data.
    #[allow(clippy::too_many_arguments)]
    fn inner_ppp(
        &mut self,
        t: Tunnel,
        ts: Nanos,
        proto: u16,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        match proto {
            0x21 | 0x57 => self.inner_ip(t, ts, b, vlan, frames, depth, sink),
            _ => {
                self.count(t);
                self.unsupported(t);
            }
        }
    }

    /// GRE: IPv4/IPv6, Ethernet (TEB), ERSPAN I/II/III, PPP, MPLS.
    pub(super) fn gre(
        &mut self,
        ts: Nanos,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let inner = match tunnel::gre(b) {
            Ok(i) => i,
            Err(e) => return self.tunnel_error(Tunnel::Gre, e),
        };
        match inner {
            tunnel::GreInner::Ppp(p, off) => self.inner_ppp(Tunnel::Gre, ts, p, &b[off..], vlan, frames, depth, sink),
            tunnel::GreInner::EtherType(0x6558, off) => {
                self.inner_ethernet(Tunnel::Gre, ts, &b[off..], vlan, frames, depth, sink)
            }
            tunnel::GreInner::EtherType(et @ (0x88be | 0x22eb), off) => {
                let seq = b[0] & 0x10 != 0;
                match tunnel::erspan(et, seq, &b[off..]) {
                    Ok(e) => self.inner_ethernet(Tunnel::Erspan, ts, &b[off + e..], vlan, frames, depth, sink),
                    Err(e) => self.tunnel_error(Tunnel::Erspan, e),
                }
            }
            tunnel::GreInner::EtherType(et, off) => match link::ethertype(et, b, off, vlan, 0) {
                Ok(Some(L3 { network, offset, vlan })) => {
                    self.count(Tunnel::Gre);
                    self.network(ts, network, &b[offset..], vlan, frames, depth + 1, sink);
                }
                Ok(None) => {
                    self.count(Tunnel::Gre);
                    self.unsupported(Tunnel::Gre);
                }
                Err(e) => self.tunnel_error(Tunnel::Gre, e),
            },
        }
    }

    /// IP in IP (protocol 4) or IPv6 in IP (41), either way round.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ipip(
        &mut self,
        ts: Nanos,
        proto: u8,
        b: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let net = if proto == 4 { Network::Ipv4 } else { Network::Ipv6 };
        self.count(Tunnel::IpIp);
        self.network(ts, net, b, vlan, frames, depth + 1, sink);
    }

    /// A UDP datagram on one of the encapsulation ports: peeled and handed on. `false`: not an encapsulation
    /// after all (plain UDP that happens to use the port), to be treated as ordinary UDP.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn udp_encap(
        &mut self,
        ts: Nanos,
        outer_src: IpAddr,
        sport: u16,
        dport: u16,
        body: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) -> bool {
        let on = |p: u16| p != 0 && (sport == p || dport == p);
        let c = &self.cfg;
        let (gtp, vxlan, tzsp, l2tp, hep_port) =
            (on(c.gtp_port), on(c.vxlan_port), on(c.tzsp_port), on(c.l2tp_port), on(c.hep_port));
        if depth >= 8 && (gtp || vxlan || tzsp || l2tp) {
            self.error(DecodeError::TooDeep);
            return true;
        }
        if gtp {
            match tunnel::gtpu(body) {
                Ok(Some(off)) => self.inner_ip(Tunnel::Gtp, ts, &body[off..], vlan, frames, depth, sink),
                // Echo and other signalling: a GTP packet, not user data.
                Ok(None) => {
                    self.count(Tunnel::Gtp);
                    self.unsupported(Tunnel::Gtp);
                }
                Err(_) => return false,
            }
            return true;
        }
        if vxlan {
            match tunnel::vxlan(body) {
                Ok(off) => self.inner_ethernet(Tunnel::Vxlan, ts, &body[off..], vlan, frames, depth, sink),
                Err(e) => self.tunnel_error(Tunnel::Vxlan, e),
            }
            return true;
        }
        if tzsp {
            match tunnel::tzsp(body) {
                Ok(Some((1, off))) => self.inner_ethernet(Tunnel::Tzsp, ts, &body[off..], vlan, frames, depth, sink),
                // 802.11, Prism, keepalives: nothing with SIP or RTP voxtap could read.
                Ok(_) => {
                    self.count(Tunnel::Tzsp);
                    self.unsupported(Tunnel::Tzsp);
                }
                Err(e) => self.tunnel_error(Tunnel::Tzsp, e),
            }
            return true;
        }
        if l2tp {
            match tunnel::l2tp(body) {
                Ok(Some((p, off))) => self.inner_ppp(Tunnel::L2tp, ts, p, &body[off..], vlan, frames, depth, sink),
                Ok(None) => {
                    self.count(Tunnel::L2tp);
                    self.unsupported(Tunnel::L2tp);
                }
                Err(e) => self.tunnel_error(Tunnel::L2tp, e),
            }
            return true;
        }
        if on(self.cfg.audiocodes_port) && depth < 8 {
            self.audiocodes(ts, outer_src, body, vlan, frames, depth, sink);
            return true;
        }
        if hep_port && hep::looks_like_hep(body) {
            self.hep(ts, body, vlan, frames, sink);
            return true;
        }
        false
    }

    /// An AudioCodes debug recording: the recorded IP packet when the device added its header, else the bare
    /// media or signalling with the addresses of the header extension (the device's own address being the one
    /// the recording came from).
    #[allow(clippy::too_many_arguments)]
    fn audiocodes(
        &mut self,
        ts: Nanos,
        device: IpAddr,
        body: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        depth: u8,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let t = Tunnel::AudioCodes;
        let (offset, src, dst, sport, dport) = match tunnel::acdr(body) {
            Err(e) => return self.tunnel_error(t, e),
            Ok(tunnel::Acdr::Ip(off)) => return self.inner_ip(t, ts, &body[off..], vlan, frames, depth, sink),
            Ok(tunnel::Acdr::Other(_)) => {
                self.count(t);
                self.unsupported(t);
                return;
            }
            Ok(tunnel::Acdr::Signalling { offset, src, dst, sport, dport }) => (offset, src, dst, sport, dport),
            Ok(tunnel::Acdr::Bare { offset, trace_point, addr, first_port, second_port, .. }) => {
                if tunnel::acdr_towards_device(trace_point) {
                    (offset, addr, device, first_port, second_port)
                } else {
                    (offset, device, addr, second_port, first_port)
                }
            }
        };
        self.count(t);
        let payload = &body[offset..];
        self.inner = Some(super::Inner { src, dst, proto: 17, sport, dport, len: payload.len() });
        sink(&Datagram { ts, skew: 0, src, dst, sport, dport, transport: Transport::Udp, payload, vlan, frames });
    }

    /// A HEP packet (any version): the datagram it describes, with HEP's addresses, ports and time. Compressed
    /// payloads are inflated.
    pub fn hep(
        &mut self,
        ts: Nanos,
        body: &[u8],
        vlan: Option<u16>,
        frames: Frames<'_>,
        sink: &mut dyn FnMut(&Datagram),
    ) {
        let h = match hep::parse(body) {
            Ok(h) => h,
            Err(e) => return self.tunnel_error(Tunnel::Hep, e),
        };
        self.count(Tunnel::Hep);
        let transport = match h.ip_proto {
            6 => Transport::Tcp,
            132 => Transport::Sctp,
            17 | 22 | 0 => Transport::Udp, // Kamailio marks UDP as IDP (22)
            _ => {
                self.unsupported(Tunnel::Hep);
                return;
            }
        };
        let mut inflated = std::mem::take(&mut self.scratch);
        let payload: &[u8] = if h.compressed {
            inflated.clear();
            let gz = h.payload.starts_with(&[0x1f, 0x8b]);
            let res = if gz {
                flate2::read::MultiGzDecoder::new(h.payload).take(HEP_INFLATE_MAX as u64 + 1).read_to_end(&mut inflated)
            } else {
                flate2::read::ZlibDecoder::new(h.payload).take(HEP_INFLATE_MAX as u64 + 1).read_to_end(&mut inflated)
            };
            if res.is_err() || inflated.len() > HEP_INFLATE_MAX {
                self.unsupported(Tunnel::Hep);
                self.scratch = inflated;
                return;
            }
            &inflated
        } else {
            h.payload
        };
        self.inner = Some(super::Inner {
            src: h.src,
            dst: h.dst,
            proto: h.ip_proto,
            sport: h.sport,
            dport: h.dport,
            len: payload.len(),
        });
        // The sender's time; from a live source, held near the receive time (the frame's), and how far it is
        // from it travels on so that timers can run on the sender's clock.
        let (time, skew) = match (h.ts, self.sender_window) {
            (Some(sent), Some(window)) => {
                let t = crate::time::clamp_to_receive(sent, ts, window);
                (t, t.saturating_sub(ts))
            }
            (Some(sent), None) => (sent, 0),
            (None, _) => (ts, 0),
        };
        let d = Datagram {
            ts: time,
            skew,
            src: h.src,
            dst: h.dst,
            sport: h.sport,
            dport: h.dport,
            transport,
            payload,
            vlan,
            frames,
        };
        sink(&d);
        self.scratch = inflated;
    }
}
