//! HEP (Homer Encapsulation Protocol): version 3 (chunks) and versions 1 and 2 (a fixed header), as SBCs,
//! proxies and capture agents send them. The packet's own addresses, ports and time are what count, not the
//! UDP or TCP packet that carried it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;

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

/// HEP v1 or v2: version, header length (8 + both addresses), family (2 IPv4, 10 IPv6), protocol, ports (network
/// order), addresses; v2 then has the time (seconds and microseconds in the sender's byte order, little-endian
/// on every agent in use) and a capture id, padded to 12 bytes by the C compilers that write it.
pub fn hep2(b: &[u8]) -> Result<Hep<'_>, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Truncated("hep2"));
    }
    let (version, hlen, family) = (b[0], b[1] as usize, b[2]);
    let alen = match family {
        2 => 4,
        10 | 28 | 30 => 16,
        _ => return Err(DecodeError::Malformed("hep2 family")),
    };
    if !(version == 1 || version == 2) || hlen != 8 + 2 * alen {
        return Err(DecodeError::Malformed("hep2 header"));
    }
    if b.len() < hlen {
        return Err(DecodeError::Truncated("hep2 addresses"));
    }
    let addr = |d: &[u8]| -> IpAddr {
        if alen == 4 {
            IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).unwrap_or([0; 16])))
        }
    };
    let mut h = Hep {
        src: addr(&b[8..8 + alen]),
        dst: addr(&b[8 + alen..hlen]),
        sport: u16::from_be_bytes([b[4], b[5]]),
        dport: u16::from_be_bytes([b[6], b[7]]),
        ip_proto: b[3],
        ts: None,
        payload: &b[hlen..],
        compressed: false,
    };
    if version == 2 {
        let t = b.get(hlen..hlen + 10).ok_or(DecodeError::Truncated("hep2 time"))?;
        let sec = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as i64;
        let usec = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as i64;
        h.ts = Some(sec * 1_000_000_000 + usec.clamp(0, 999_999) * 1000);
        // Padded (12) as the C agents send it; packed (10) where the payload starts two bytes early.
        let padded = b.get(hlen + 12..).unwrap_or(&[]);
        let packed = &b[hlen + 10..];
        h.payload = if !looks_like_sip(padded) && looks_like_sip(packed) { packed } else { padded };
    }
    Ok(h)
}

/// A SIP start line: `SIP/2.0 …`, or a SIP method and a first line ending in `SIP/2.0`.
fn looks_like_sip(b: &[u8]) -> bool {
    if b.starts_with(b"SIP/2.0 ") {
        return true;
    }
    let line = &b[..b.iter().position(|&c| c == b'\r' || c == b'\n').unwrap_or(b.len()).min(512)];
    const METHODS: [&[u8]; 14] = [
        b"INVITE",
        b"ACK",
        b"BYE",
        b"CANCEL",
        b"REGISTER",
        b"OPTIONS",
        b"PRACK",
        b"SUBSCRIBE",
        b"NOTIFY",
        b"PUBLISH",
        b"INFO",
        b"REFER",
        b"MESSAGE",
        b"UPDATE",
    ];
    let method = line.iter().take_while(|c| c.is_ascii_uppercase()).count();
    METHODS.contains(&&line[..method]) && line.get(method) == Some(&b' ') && line.ends_with(b" SIP/2.0")
}

/// Any HEP version, by its first bytes.
pub fn parse(b: &[u8]) -> Result<Hep<'_>, DecodeError> {
    if b.starts_with(b"HEP3") {
        hep3(b)
    } else {
        hep2(b)
    }
}

/// Does this UDP/TCP payload look like HEP at all (so that other traffic on the port is not counted as bad HEP)?
pub fn looks_like_hep(b: &[u8]) -> bool {
    b.starts_with(b"HEP3") || (b.len() >= 8 && (b[0] == 1 || b[0] == 2) && (b[1] == 16 || b[1] == 40))
}

/// Total length of the HEP packet at the start of a stream buffer, when known (TCP carries HEP back to back).
pub fn frame_len(b: &[u8]) -> Option<usize> {
    if b.len() >= 6 && b.starts_with(b"HEP3") {
        return Some(u16::from_be_bytes([b[4], b[5]]) as usize);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn hep2_header_and_time() {
        let mut p = vec![2, 16, 2, 17, 0x13, 0xc4, 0x13, 0xc5, 10, 0, 0, 1, 10, 0, 0, 2];
        p.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        p.extend_from_slice(&250_000u32.to_le_bytes());
        p.extend_from_slice(&[7, 0, 0, 0]);
        p.extend_from_slice(b"INVITE sip:x SIP/2.0\r\n");
        let h = parse(&p).unwrap();
        assert_eq!((h.sport, h.dport, h.ip_proto), (5060, 5061, 17));
        assert_eq!(h.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(h.ts, Some(1_700_000_000_250_000_000));
        assert!(h.payload.starts_with(b"INVITE"));
        // Packed time header: the payload two bytes earlier.
        let mut q = p.clone();
        q.drain(26..28);
        assert!(parse(&q).unwrap().payload.starts_with(b"INVITE"));
        // Version 1 has no time.
        let mut v1 = p[..16].to_vec();
        v1[0] = 1;
        v1.extend_from_slice(b"SIP/2.0 200 OK");
        assert_eq!(parse(&v1).unwrap().ts, None);
        assert!(parse(&[2, 17, 2, 17, 0, 0, 0, 0]).is_err());
        assert!(parse(&p[..20]).is_err());
        assert!(looks_like_hep(&p) && !looks_like_hep(b"INVITE sip:"));
    }
}
