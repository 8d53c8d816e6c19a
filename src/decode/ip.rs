//! IPv4 and IPv6 headers as views over the frame: one length check in the constructor, then plain reads.
//! IPv6 extension headers are walked to the upper-layer protocol, remembering a fragment header if present.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Fragment information common to both IP versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub id: u32,
    /// Offset of this fragment's payload in the original datagram, in bytes.
    pub offset: u32,
    pub more: bool,
}

/// A parsed IP header: addresses, upper protocol and where its payload lies in the input slice.
#[derive(Debug, Clone, Copy)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub payload_start: usize,
    pub payload_end: usize,
    pub fragment: Option<Fragment>,
    pub ttl: u8,
    /// The IP header claims more bytes than were captured (snaplen): the payload is cut short.
    pub truncated: bool,
}

pub fn parse_ipv4(b: &[u8]) -> Result<IpHeader, DecodeError> {
    if b.len() < 20 {
        return Err(DecodeError::Truncated("ipv4"));
    }
    if b[0] >> 4 != 4 {
        return Err(DecodeError::Malformed("ipv4 version"));
    }
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    if ihl < 20 || ihl > b.len() {
        return Err(DecodeError::Malformed("ipv4 header length"));
    }
    let total = u16::from_be_bytes([b[2], b[3]]) as usize;
    // total == 0 happens with TCP segmentation offload on the capturing host: trust the capture length.
    let (end, truncated) = if total == 0 {
        (b.len(), false)
    } else if total < ihl {
        return Err(DecodeError::Malformed("ipv4 total length"));
    } else if total > b.len() {
        (b.len(), true)
    } else {
        (total, false)
    };
    let flags_off = u16::from_be_bytes([b[6], b[7]]);
    let more = flags_off & 0x2000 != 0;
    let offset = ((flags_off & 0x1fff) as u32) * 8;
    let fragment =
        (more || offset != 0).then(|| Fragment { id: u16::from_be_bytes([b[4], b[5]]) as u32, offset, more });
    Ok(IpHeader {
        src: IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15])),
        dst: IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19])),
        proto: b[9],
        payload_start: ihl,
        payload_end: end,
        fragment,
        ttl: b[8],
        truncated,
    })
}

pub fn parse_ipv6(b: &[u8]) -> Result<IpHeader, DecodeError> {
    if b.len() < 40 {
        return Err(DecodeError::Truncated("ipv6"));
    }
    if b[0] >> 4 != 6 {
        return Err(DecodeError::Malformed("ipv6 version"));
    }
    let plen = u16::from_be_bytes([b[4], b[5]]) as usize;
    // Payload length 0 means a jumbogram or TSO; use the captured length then.
    let (end, truncated) = if plen == 0 {
        (b.len(), false)
    } else if 40 + plen > b.len() {
        (b.len(), true)
    } else {
        (40 + plen, false)
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&b[8..24]);
    dst.copy_from_slice(&b[24..40]);
    let mut next = b[6];
    let mut off = 40usize;
    let mut fragment = None;
    // Extension headers: hop-by-hop, routing, destination options, fragment, AH, mobility. Bounded count.
    for _ in 0..16 {
        match next {
            0 | 43 | 60 | 135 | 139 | 140 => {
                let h = b.get(off..off + 2).ok_or(DecodeError::Truncated("ipv6 extension"))?;
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            51 => {
                let h = b.get(off..off + 2).ok_or(DecodeError::Truncated("ipv6 ah"))?;
                next = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            44 => {
                let h = b.get(off..off + 8).ok_or(DecodeError::Truncated("ipv6 fragment"))?;
                next = h[0];
                let fo = u16::from_be_bytes([h[2], h[3]]);
                fragment = Some(Fragment {
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    offset: ((fo >> 3) as u32) * 8,
                    more: fo & 1 != 0,
                });
                off += 8;
            }
            _ => break,
        }
        if off > end {
            return Err(DecodeError::Malformed("ipv6 extension length"));
        }
    }
    if off > end {
        return Err(DecodeError::Malformed("ipv6 extension length"));
    }
    Ok(IpHeader {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: next,
        payload_start: off,
        payload_end: end,
        fragment,
        ttl: b[7],
        truncated,
    })
}

/// UDP header view.
#[derive(Debug, Clone, Copy)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    /// Payload bounds relative to the UDP header start.
    pub payload_start: usize,
    pub payload_end: usize,
}

pub fn parse_udp(b: &[u8]) -> Result<Udp, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Truncated("udp"));
    }
    let len = u16::from_be_bytes([b[4], b[5]]) as usize;
    let end = if len >= 8 && len <= b.len() { len } else { b.len() };
    Ok(Udp {
        sport: u16::from_be_bytes([b[0], b[1]]),
        dport: u16::from_be_bytes([b[2], b[3]]),
        payload_start: 8,
        payload_end: end,
    })
}

/// TCP header view.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    pub payload_start: usize,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

pub fn parse_tcp(b: &[u8]) -> Result<Tcp, DecodeError> {
    if b.len() < 20 {
        return Err(DecodeError::Truncated("tcp"));
    }
    let doff = ((b[12] >> 4) as usize) * 4;
    if doff < 20 || doff > b.len() {
        return Err(DecodeError::Malformed("tcp data offset"));
    }
    Ok(Tcp {
        sport: u16::from_be_bytes([b[0], b[1]]),
        dport: u16::from_be_bytes([b[2], b[3]]),
        seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        flags: b[13],
        payload_start: doff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_fragment_fields() {
        let mut h = [0u8; 28];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&28u16.to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        h[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes());
        h[9] = 17;
        let p = parse_ipv4(&h).unwrap();
        assert_eq!(p.fragment, Some(Fragment { id: 0x1234, offset: 24, more: true }));
        assert_eq!((p.payload_start, p.payload_end), (20, 28));
    }

    #[test]
    fn ipv6_ext_chain() {
        let mut b = vec![0u8; 40 + 8 + 8 + 8];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&24u16.to_be_bytes());
        b[6] = 0; // hop-by-hop
        b[40] = 44; // → fragment
        b[48] = 17; // → udp
        b[50..52].copy_from_slice(&((2u16 << 3) | 1).to_be_bytes());
        b[52..56].copy_from_slice(&7u32.to_be_bytes());
        let p = parse_ipv6(&b).unwrap();
        assert_eq!(p.proto, 17);
        assert_eq!(p.payload_start, 56);
        assert_eq!(p.fragment, Some(Fragment { id: 7, offset: 16, more: true }));
    }

    #[test]
    fn short_and_bad_inputs_are_errors() {
        assert!(parse_ipv4(&[0x45; 10]).is_err());
        assert!(parse_ipv4(&[0x4f; 20]).is_err());
        assert!(parse_ipv6(&[0x60; 20]).is_err());
        assert!(parse_udp(&[0; 4]).is_err());
        assert!(parse_tcp(&[0; 19]).is_err());
    }
}
