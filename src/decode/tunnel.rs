//! Tunnel headers peeled inside the decoder: GRE (RFC 2784/2890), GTP-U (3GPP TS 29.281) and HEP v3
//! (captured on its UDP port). Each function reads a header view and says where the inner packet starts.

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

/// A HEP v3 packet: the captured packet's addresses, ports, time and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hep<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ip_proto: u8,
    pub ts: Option<i64>,
    pub payload: &'a [u8],
    pub compressed: bool,
}

pub fn hep3(b: &[u8]) -> Result<Hep<'_>, DecodeError> {
    if b.len() < 6 || &b[..4] != b"HEP3" {
        return Err(DecodeError::Malformed("hep3 magic"));
    }
    let total = (u16::from_be_bytes([b[4], b[5]]) as usize).min(b.len());
    let mut off = 6;
    let mut h = Hep {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
        ip_proto: 17,
        ts: None,
        payload: &[],
        compressed: false,
    };
    let (mut sec, mut usec) = (None, 0i64);
    while off + 6 <= total {
        let vendor = u16::from_be_bytes([b[off], b[off + 1]]);
        let ctype = u16::from_be_bytes([b[off + 2], b[off + 3]]);
        let len = u16::from_be_bytes([b[off + 4], b[off + 5]]) as usize;
        if len < 6 || off + len > total {
            return Err(DecodeError::Malformed("hep3 chunk length"));
        }
        let d = &b[off + 6..off + len];
        if vendor == 0 {
            match (ctype, d.len()) {
                (2, 1) => h.ip_proto = d[0],
                (3, 4) => h.src = IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
                (4, 4) => h.dst = IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
                (5, 16) => h.src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).expect("16 bytes"))),
                (6, 16) => h.dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).expect("16 bytes"))),
                (7, 2) => h.sport = u16::from_be_bytes([d[0], d[1]]),
                (8, 2) => h.dport = u16::from_be_bytes([d[0], d[1]]),
                (9, 4) => sec = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as i64),
                (10, 4) => usec = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as i64,
                (15, _) => h.payload = d,
                (16, _) => {
                    h.payload = d;
                    h.compressed = true;
                }
                _ => {}
            }
        }
        off += len;
    }
    h.ts = sec.map(|s| s * 1_000_000_000 + usec.clamp(0, 999_999) * 1000);
    Ok(h)
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
    fn hep3_chunks() {
        let mut p = b"HEP3\0\0".to_vec();
        let mut chunk = |t: u16, d: &[u8]| {
            p.extend_from_slice(&0u16.to_be_bytes());
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&((d.len() + 6) as u16).to_be_bytes());
            p.extend_from_slice(d);
        };
        chunk(3, &[1, 2, 3, 4]);
        chunk(7, &5060u16.to_be_bytes());
        chunk(9, &100u32.to_be_bytes());
        chunk(15, b"INVITE");
        let n = p.len() as u16;
        p[4..6].copy_from_slice(&n.to_be_bytes());
        let h = hep3(&p).unwrap();
        assert_eq!(h.src, IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!((h.sport, h.ts, h.payload), (5060, Some(100_000_000_000), &b"INVITE"[..]));
        assert!(hep3(b"HEP3\0\x10\0\0\0\x01\0\x02").is_err());
    }
}
