//! Tunnel headers peeled inside the decoder: GRE (RFC 2784/2890) with ERSPAN I/II/III, VXLAN, TZSP, L2TPv2
//! with PPP, and GTP-U (3GPP TS 29.281). Each function reads a header view and says where the inner packet
//! starts; a malformed header is an error the decoder counts, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;

/// What a GRE header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreInner {
    /// An ethertype (IPv4, IPv6, MPLS, TEB=Ethernet) at this offset.
    EtherType(u16, usize),
    /// PPP (0x880B): the network protocol and where it starts.
    Ppp(u16, usize),
}

/// GRE header (version 0; version 1 is PPTP's enhanced GRE).
pub fn gre(b: &[u8]) -> Result<GreInner, DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Truncated("gre"));
    }
    let flags = b[0];
    let version = b[1] & 0x07;
    let proto = u16::from_be_bytes([b[2], b[3]]);
    let mut off = 4;
    if flags & 0x80 != 0 {
        off += 4; // checksum + reserved
    }
    if flags & 0x20 != 0 {
        off += 4; // key (or PPTP payload length + call id)
    }
    if flags & 0x10 != 0 {
        off += 4; // sequence
    }
    if version == 1 && b[1] & 0x80 != 0 {
        off += 4; // PPTP acknowledgment
    }
    if off > b.len() {
        return Err(DecodeError::Truncated("gre options"));
    }
    if proto == 0x880b {
        return ppp(&b[off..]).map(|(p, o)| GreInner::Ppp(p, off + o));
    }
    Ok(GreInner::EtherType(proto, off))
}

/// PPP: optional address/control (FF 03), then a 1- or 2-byte protocol field. Returns (protocol, header length).
pub fn ppp(b: &[u8]) -> Result<(u16, usize), DecodeError> {
    let mut off = 0;
    if b.len() >= 2 && b[0] == 0xff && b[1] == 0x03 {
        off = 2;
    }
    let first = *b.get(off).ok_or(DecodeError::Truncated("ppp"))?;
    if first & 1 == 1 {
        // Compressed protocol field (RFC 1661 §6.5).
        return Ok((first as u16, off + 1));
    }
    let second = *b.get(off + 1).ok_or(DecodeError::Truncated("ppp"))?;
    Ok((u16::from_be_bytes([first, second]), off + 2))
}

/// GTP-U G-PDU: returns the offset of the inner IP packet, or `None` for signalling messages (echo etc.).
pub fn gtpu(b: &[u8]) -> Result<Option<usize>, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Truncated("gtp-u"));
    }
    if b[0] >> 5 != 1 || b[0] & 0x10 == 0 {
        return Err(DecodeError::Malformed("gtp-u version"));
    }
    if b[1] != 0xff {
        return Ok(None);
    }
    let mut off = 8;
    if b[0] & 0x07 != 0 {
        // Sequence number, N-PDU number and next extension header type.
        let mut next = *b.get(11).ok_or(DecodeError::Truncated("gtp-u options"))?;
        off = 12;
        let mut n = 0;
        while next != 0 {
            let len = *b.get(off).ok_or(DecodeError::Truncated("gtp-u extension"))? as usize * 4;
            if len == 0 || n > 16 {
                return Err(DecodeError::Malformed("gtp-u extension"));
            }
            next = *b.get(off + len - 1).ok_or(DecodeError::Truncated("gtp-u extension"))?;
            off += len;
            n += 1;
        }
    }
    if off > b.len() {
        return Err(DecodeError::Truncated("gtp-u"));
    }
    Ok(Some(off))
}

/// ERSPAN inside GRE: returns where the mirrored Ethernet frame starts, counted from the end of the GRE header.
/// Type I (0x88BE without a sequence number) has no header of its own; type II (0x88BE with one) has 8
/// bytes; type III (0x22EB) has 12, plus an 8-byte platform sub-header when its O flag is set.
pub fn erspan(proto: u16, gre_seq: bool, b: &[u8]) -> Result<usize, DecodeError> {
    match proto {
        0x88be if !gre_seq => Ok(0),
        0x88be => {
            if b.len() < 8 {
                return Err(DecodeError::Truncated("erspan ii"));
            }
            if b[0] >> 4 != 1 {
                return Err(DecodeError::Malformed("erspan ii version"));
            }
            Ok(8)
        }
        0x22eb => {
            if b.len() < 12 {
                return Err(DecodeError::Truncated("erspan iii"));
            }
            if b[0] >> 4 != 2 {
                return Err(DecodeError::Malformed("erspan iii version"));
            }
            let off = if b[11] & 0x01 != 0 { 20 } else { 12 };
            if b.len() < off {
                return Err(DecodeError::Truncated("erspan iii platform header"));
            }
            Ok(off)
        }
        _ => Err(DecodeError::Malformed("erspan protocol")),
    }
}

/// VXLAN (RFC 7348): 8 bytes, the I flag set; an Ethernet frame follows.
pub fn vxlan(b: &[u8]) -> Result<usize, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Truncated("vxlan"));
    }
    if b[0] & 0x08 == 0 {
        return Err(DecodeError::Malformed("vxlan flags"));
    }
    Ok(8)
}

/// TZSP (TaZmen Sniffer Protocol): version 1, type, encapsulated protocol, then tagged fields up to the END
/// tag. Returns the offset of the frame and its encapsulation (1 = Ethernet), or `None` for a message without
/// a frame (keepalive).
pub fn tzsp(b: &[u8]) -> Result<Option<(u16, usize)>, DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Truncated("tzsp"));
    }
    if b[0] != 1 {
        return Err(DecodeError::Malformed("tzsp version"));
    }
    // Types 0 (received), 1 (for transmit) carry a frame; 4 is the keepalive/port opener.
    if b[1] > 1 {
        return Ok(None);
    }
    let encap = u16::from_be_bytes([b[2], b[3]]);
    let mut off = 4;
    loop {
        match *b.get(off).ok_or(DecodeError::Truncated("tzsp tags"))? {
            0 => off += 1,
            1 => return Ok(Some((encap, off + 1))),
            _ => {
                let len = *b.get(off + 1).ok_or(DecodeError::Truncated("tzsp tag"))? as usize;
                off += 2 + len;
            }
        }
    }
}

/// An L2TPv2 data message (RFC 2661 §3.1) with PPP inside: the PPP protocol and where its payload starts, or
/// `None` for a control message.
pub fn l2tp(b: &[u8]) -> Result<Option<(u16, usize)>, DecodeError> {
    if b.len() < 6 {
        return Err(DecodeError::Truncated("l2tp"));
    }
    let flags = u16::from_be_bytes([b[0], b[1]]);
    if flags & 0x000f != 2 {
        return Err(DecodeError::Malformed("l2tp version"));
    }
    if flags & 0x8000 != 0 {
        return Ok(None);
    }
    let mut off = 2;
    if flags & 0x4000 != 0 {
        off += 2; // length
    }
    off += 4; // tunnel and session ids
    if flags & 0x0800 != 0 {
        off += 4; // Ns, Nr
    }
    if flags & 0x0200 != 0 {
        let pad = b.get(off..off + 2).ok_or(DecodeError::Truncated("l2tp offset"))?;
        off += 2 + u16::from_be_bytes([pad[0], pad[1]]) as usize;
    }
    if off > b.len() {
        return Err(DecodeError::Truncated("l2tp header"));
    }
    let (proto, len) = ppp(&b[off..])?;
    Ok(Some((proto, off + len)))
}

/// What an AudioCodes debug recording (ACDR) packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acdr {
    /// The recorded packet with its IP header ("header added"): an IP packet at this offset.
    Ip(usize),
    /// Media or signalling without headers: where it starts, its media type, the trace point, and the one
    /// address and two ports of the header extension (the device's own address is the sender of the recording).
    Bare { offset: usize, media: u8, trace_point: u8, addr: IpAddr, first_port: u16, second_port: u16 },
    /// Signalling recorded at the "System" trace point: both addresses and ports in the extension.
    Signalling { offset: usize, src: IpAddr, dst: IpAddr, sport: u16, dport: u16 },
    /// A recording voxtap has no use for (DSP traces, events, encrypted or fragmented packets…).
    Other(u8),
}

/// ACDR media types (Wireshark's `packet-acdr.h`).
pub const ACDR_RTP: u8 = 1;
pub const ACDR_RTCP: u8 = 2;
pub const ACDR_SIP: u8 = 10;

/// An AudioCodes debug recording header (versions 0.0 to 0.9): version, time, sequence (0.4+), source and
/// destination ids (4 bytes each from 0.9), extra-data flags, trace point, media type, header-extension length
/// (0.5+), session id (0.5+), then the extension and the packet.
pub fn acdr(b: &[u8]) -> Result<Acdr, DecodeError> {
    let v = *b.first().ok_or(DecodeError::Truncated("acdr"))?;
    let minor = v & 0x0f;
    if v >> 4 != 0 || minor > 9 {
        return Err(DecodeError::Malformed("acdr version"));
    }
    let ids = if minor >= 9 { 8 } else { 4 };
    let mut off = 1 + if minor <= 3 { 6 } else { 4 } + if minor >= 4 { 2 } else { 0 } + ids;
    let fixed = b.get(off..off + 4).ok_or(DecodeError::Truncated("acdr header"))?;
    let (extra, trace_point, media, ext_or_offset) = (fixed[0], fixed[1], fixed[2], fixed[3] as usize);
    off += 4;
    let session = match minor {
        0..=4 => 0,
        5 | 6 => 4,
        7 => 8,
        _ => 9,
    };
    off += session;
    // Before 0.5 the byte is the payload offset; from 0.5 the extension's length.
    let (ext_start, payload) = if minor < 5 { (off, ext_or_offset.max(off)) } else { (off, off + ext_or_offset) };
    let old_filler = extra == 0xaa && minor <= 3;
    let flags = if old_filler { 0 } else { extra };
    let mii = if minor >= 3 && flags & 0x01 != 0 { 4 } else { 0 };
    let payload = payload + mii;
    if payload > b.len() {
        return Err(DecodeError::Truncated("acdr extension"));
    }
    // Fragmented (0x04) or encrypted (0x10) recordings are not the packet itself.
    if flags & 0x14 != 0 {
        return Ok(Acdr::Other(media));
    }
    if flags & 0x08 != 0 && matches!(media, ACDR_SIP | ACDR_RTP | ACDR_RTCP) {
        return Ok(Acdr::Ip(payload));
    }
    if !matches!(media, ACDR_RTP | ACDR_RTCP | ACDR_SIP) {
        return Ok(Acdr::Other(media));
    }
    let alen = if flags & 0x02 != 0 { 16 } else { 4 };
    let ext = &b[ext_start..payload - mii];
    let ip_at = |at: usize| -> IpAddr {
        if alen == 4 {
            IpAddr::V4(Ipv4Addr::new(ext[at], ext[at + 1], ext[at + 2], ext[at + 3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ext[at..at + 16]).unwrap_or([0; 16])))
        }
    };
    if media == ACDR_SIP && trace_point == 6 {
        if ext.len() < 2 * alen + 4 {
            return Ok(Acdr::Other(media));
        }
        let p = 2 * alen;
        return Ok(Acdr::Signalling {
            offset: payload,
            src: ip_at(0),
            dst: ip_at(alen),
            sport: u16::from_be_bytes([ext[p], ext[p + 1]]),
            dport: u16::from_be_bytes([ext[p + 2], ext[p + 3]]),
        });
    }
    if ext.len() < alen + 4 {
        return Ok(Acdr::Other(media));
    }
    let addr = ip_at(0);
    let first_port = u16::from_be_bytes([ext[alen], ext[alen + 1]]);
    let second_port = u16::from_be_bytes([ext[alen + 2], ext[alen + 3]]);
    Ok(Acdr::Bare { offset: payload, media, trace_point, addr, first_port, second_port })
}

/// Trace points at which the recorded packet travels towards the device (the extension's address is the
/// sender's); the others travel towards the network (the address is the receiver's).
pub fn acdr_towards_device(trace_point: u8) -> bool {
    // Net2Dsp, Net2Host, Np2Dsp, Np2Host, Net, DspDecoder, VoipDecoder, Pstn2Host, Net2DspPing, AfterSrtpDecoder.
    matches!(trace_point, 0 | 4 | 11 | 14 | 16 | 18 | 20 | 26 | 27 | 35)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_flags_and_ppp() {
        // Checksum + key + sequence, TEB.
        let mut g = vec![0xb0, 0, 0x65, 0x58];
        g.extend_from_slice(&[0; 12]);
        assert_eq!(gre(&g).unwrap(), GreInner::EtherType(0x6558, 16));
        let p = [0x00, 0x00, 0x88, 0x0b, 0xff, 0x03, 0x00, 0x21, 0x45];
        assert_eq!(gre(&p).unwrap(), GreInner::Ppp(0x21, 8));
        assert_eq!(ppp(&[0x21, 0x45]).unwrap(), (0x21, 1));
        assert!(gre(&[0x80, 0, 8, 0]).is_err());
    }

    #[test]
    fn gtpu_with_extension() {
        let mut g = vec![0x34, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85, 1, 0, 0, 0];
        g.push(0x45);
        assert_eq!(gtpu(&g).unwrap(), Some(16));
        assert_eq!(gtpu(&[0x30, 1, 0, 0, 0, 0, 0, 0]).unwrap(), None);
    }

    #[test]
    fn erspan_types() {
        assert_eq!(erspan(0x88be, false, &[]).unwrap(), 0);
        assert_eq!(erspan(0x88be, true, &[0x10, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 8);
        let mut iii = [0u8; 20];
        iii[0] = 0x20;
        assert_eq!(erspan(0x22eb, false, &iii[..12]).unwrap(), 12);
        iii[11] = 1;
        assert_eq!(erspan(0x22eb, false, &iii).unwrap(), 20);
        assert!(erspan(0x22eb, false, &iii[..12]).is_err());
        assert!(erspan(0x88be, true, &[0x20, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn tzsp_tags_and_l2tp_options() {
        // Received, Ethernet, a padding byte, tag 10 with 4 bytes, END.
        let t = [1, 0, 0, 1, 0, 10, 4, 1, 2, 3, 4, 1, 0xaa];
        assert_eq!(tzsp(&t).unwrap(), Some((1, 12)));
        assert_eq!(tzsp(&[1, 4, 0, 0]).unwrap(), None);
        assert!(tzsp(&[1, 0, 0, 1, 10, 200]).is_err());
        // Length, sequence and offset (2 bytes of padding); PPP with address/control and IPv6.
        let l = [0x4a, 0x02, 0, 30, 0, 1, 0, 2, 0, 0, 0, 0, 0, 2, 9, 9, 0xff, 0x03, 0x00, 0x57, 0x60];
        assert_eq!(l2tp(&l).unwrap(), Some((0x57, 20)));
        // Compressed protocol field, no options.
        assert_eq!(l2tp(&[0x00, 0x02, 0, 1, 0, 2, 0x21, 0x45]).unwrap(), Some((0x21, 7)));
        assert_eq!(l2tp(&[0xc8, 0x02, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), None);
        assert!(l2tp(&[0x00, 0x03, 0, 1, 0, 2]).is_err());
    }

    #[test]
    fn acdr_versions_and_layouts() {
        // 0.5: time, seq, ids, flags, trace point, media, extension length, session id.
        let head = |flags: u8, tp: u8, media: u8, ext: &[u8]| {
            let mut h = vec![0x05, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, flags, tp, media, ext.len() as u8, 0, 0, 0, 9];
            h.extend_from_slice(ext);
            h
        };
        let ip = head(0x08, 6, ACDR_SIP, &[]);
        assert_eq!(acdr(&ip).unwrap(), Acdr::Ip(19));
        let rtp = head(0, 1, ACDR_RTP, &[10, 0, 0, 9, 0x4e, 0x20, 0x40, 0x02, 0xb8]);
        assert_eq!(
            acdr(&rtp).unwrap(),
            Acdr::Bare {
                offset: 28,
                media: ACDR_RTP,
                trace_point: 1,
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
                first_port: 20000,
                second_port: 16386
            }
        );
        let sys = head(0, 6, ACDR_SIP, &[1, 1, 1, 1, 2, 2, 2, 2, 0x13, 0xc4, 0x13, 0xc5, 17, 0]);
        assert!(matches!(acdr(&sys).unwrap(), Acdr::Signalling { offset: 33, sport: 5060, dport: 5061, .. }));
        assert_eq!(acdr(&head(0x04, 0, ACDR_RTP, &[0; 9])).unwrap(), Acdr::Other(ACDR_RTP));
        assert_eq!(acdr(&head(0, 0, 4, &[])).unwrap(), Acdr::Other(4));
        assert!(acdr(&[0x15, 0, 0]).is_err());
        assert!(acdr(&head(0, 0, ACDR_RTP, &[0; 9])[..20]).is_err());
        // 0.9: 4-byte ids and a 9-byte session id: 28 bytes before the extension.
        let mut v9 = vec![0x09, 0, 0, 0, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0x08, 6, ACDR_SIP, 0];
        v9.extend_from_slice(&[0; 9]);
        assert_eq!(acdr(&v9).unwrap(), Acdr::Ip(28));
    }
}
