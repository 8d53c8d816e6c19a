//! Link layers down to the network header: Ethernet with 802.1Q / QinQ (0x88a8, 0x9100) tags, MPLS label
//! stacks, PPPoE sessions, Linux cooked captures v1 and v2, BSD loopback (DLT_NULL / DLT_LOOP) and raw IP.

use super::DecodeError;

pub const LINKTYPE_NULL: u16 = 0;
pub const LINKTYPE_ETHERNET: u16 = 1;
pub const LINKTYPE_RAW_OLD1: u16 = 12;
pub const LINKTYPE_RAW_OLD2: u16 = 14;
pub const LINKTYPE_RAW: u16 = 101;
pub const LINKTYPE_LOOP: u16 = 108;
pub const LINKTYPE_LINUX_SLL: u16 = 113;
pub const LINKTYPE_IPV4: u16 = 228;
pub const LINKTYPE_IPV6: u16 = 229;
pub const LINKTYPE_LINUX_SLL2: u16 = 276;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_QINQ_OLD2: u16 = 0x9200;
const ETH_MPLS_UC: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;
const ETH_PPPOE_SESSION: u16 = 0x8864;

/// The network layer found under the link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Ipv4,
    Ipv6,
}

/// Where the network header starts, and its kind; `vlan` is the outermost VLAN id if any.
#[derive(Debug, Clone, Copy)]
pub struct L3 {
    pub network: Network,
    pub offset: usize,
    pub vlan: Option<u16>,
}

/// Peels the link layer of `data` captured with `link_type`. `Ok(None)` means a frame that is not IP
/// (ARP, STP, LLC…), which is normal traffic and not an error.
pub fn peel(link_type: u16, data: &[u8]) -> Result<Option<L3>, DecodeError> {
    match link_type {
        LINKTYPE_ETHERNET => {
            if data.len() < 14 {
                return Err(DecodeError::Truncated("ethernet"));
            }
            let et = u16::from_be_bytes([data[12], data[13]]);
            ethertype(et, data, 14, None, 0)
        }
        LINKTYPE_RAW | LINKTYPE_RAW_OLD1 | LINKTYPE_RAW_OLD2 => by_version(data, 0, None),
        LINKTYPE_IPV4 => Ok(Some(L3 { network: Network::Ipv4, offset: 0, vlan: None })),
        LINKTYPE_IPV6 => Ok(Some(L3 { network: Network::Ipv6, offset: 0, vlan: None })),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            if data.len() < 4 {
                return Err(DecodeError::Truncated("loopback"));
            }
            // DLT_NULL stores the family in the capturing host's byte order; DLT_LOOP in network order.
            // Families: 2 = AF_INET; 10, 24, 28, 30 = AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
            let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let fam = if link_type == LINKTYPE_LOOP {
                be
            } else if le < 256 {
                le
            } else {
                be
            };
            match fam {
                2 => Ok(Some(L3 { network: Network::Ipv4, offset: 4, vlan: None })),
                10 | 24 | 28 | 30 => Ok(Some(L3 { network: Network::Ipv6, offset: 4, vlan: None })),
                _ => Ok(None),
            }
        }
        LINKTYPE_LINUX_SLL => {
            if data.len() < 16 {
                return Err(DecodeError::Truncated("linux sll"));
            }
            let et = u16::from_be_bytes([data[14], data[15]]);
            ethertype(et, data, 16, None, 0)
        }
        LINKTYPE_LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(DecodeError::Truncated("linux sll2"));
            }
            let et = u16::from_be_bytes([data[0], data[1]]);
            ethertype(et, data, 20, None, 0)
        }
        other => Err(DecodeError::UnsupportedLink(other)),
    }
}

/// Follows an ethertype at `off`, through VLAN tags, MPLS and PPPoE.
pub fn ethertype(et: u16, data: &[u8], off: usize, vlan: Option<u16>, depth: u8) -> Result<Option<L3>, DecodeError> {
    if depth > 8 {
        return Err(DecodeError::TooDeep);
    }
    match et {
        ETH_IPV4 => Ok(Some(L3 { network: Network::Ipv4, offset: off, vlan })),
        ETH_IPV6 => Ok(Some(L3 { network: Network::Ipv6, offset: off, vlan })),
        ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2 => {
            let t = data.get(off..off + 4).ok_or(DecodeError::Truncated("vlan"))?;
            let id = u16::from_be_bytes([t[0], t[1]]) & 0x0fff;
            let inner = u16::from_be_bytes([t[2], t[3]]);
            ethertype(inner, data, off + 4, vlan.or(Some(id)), depth + 1)
        }
        ETH_MPLS_UC | ETH_MPLS_MC => {
            let mut o = off;
            // Walk the label stack to the bottom-of-stack bit; bounded by the frame.
            loop {
                let l = data.get(o..o + 4).ok_or(DecodeError::Truncated("mpls"))?;
                o += 4;
                if l[2] & 0x01 != 0 {
                    break;
                }
                if o - off > 64 {
                    return Err(DecodeError::TooDeep);
                }
            }
            // The payload kind is not signalled: guess from the first nibble; 0 is a pseudowire control word
            // in front of an Ethernet frame (RFC 4385).
            match data.get(o).map(|b| b >> 4) {
                Some(4) => Ok(Some(L3 { network: Network::Ipv4, offset: o, vlan })),
                Some(6) => Ok(Some(L3 { network: Network::Ipv6, offset: o, vlan })),
                Some(0) => {
                    let e = o + 4;
                    let h = data.get(e..e + 14).ok_or(DecodeError::Truncated("mpls pseudowire"))?;
                    ethertype(u16::from_be_bytes([h[12], h[13]]), data, e + 14, vlan, depth + 1)
                }
                Some(_) => Ok(None),
                None => Err(DecodeError::Truncated("mpls payload")),
            }
        }
        ETH_PPPOE_SESSION => {
            let h = data.get(off..off + 8).ok_or(DecodeError::Truncated("pppoe"))?;
            let proto = u16::from_be_bytes([h[6], h[7]]);
            match proto {
                0x0021 => Ok(Some(L3 { network: Network::Ipv4, offset: off + 8, vlan })),
                0x0057 => Ok(Some(L3 { network: Network::Ipv6, offset: off + 8, vlan })),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

fn by_version(data: &[u8], off: usize, vlan: Option<u16>) -> Result<Option<L3>, DecodeError> {
    match data.get(off).map(|b| b >> 4) {
        Some(4) => Ok(Some(L3 { network: Network::Ipv4, offset: off, vlan })),
        Some(6) => Ok(Some(L3 { network: Network::Ipv6, offset: off, vlan })),
        Some(_) => Ok(None),
        None => Err(DecodeError::Truncated("raw ip")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(et: u16, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&et.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn qinq_and_vlan() {
        let mut rest = vec![0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00];
        rest.extend_from_slice(&[0x45; 20]);
        let f = eth(0x88a8, &rest);
        let l3 = peel(LINKTYPE_ETHERNET, &f).unwrap().unwrap();
        assert_eq!(l3.network, Network::Ipv4);
        assert_eq!(l3.offset, 22);
        assert_eq!(l3.vlan, Some(100));
    }

    #[test]
    fn mpls_stack() {
        // Two labels, bottom-of-stack on the second, then IPv6.
        let mut rest = vec![0, 0, 0x10, 64, 0, 0, 0x21, 64];
        rest.push(0x60);
        rest.extend_from_slice(&[0; 39]);
        let f = eth(0x8847, &rest);
        let l3 = peel(LINKTYPE_ETHERNET, &f).unwrap().unwrap();
        assert_eq!((l3.network, l3.offset), (Network::Ipv6, 22));
    }

    #[test]
    fn pppoe_session_and_sll2() {
        let mut rest = vec![0x11, 0x00, 0x00, 0x01, 0x00, 0x40, 0x00, 0x57];
        rest.extend_from_slice(&[0x60; 40]);
        let l3 = peel(LINKTYPE_ETHERNET, &eth(0x8864, &rest)).unwrap().unwrap();
        assert_eq!((l3.network, l3.offset), (Network::Ipv6, 22));
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.push(0x45);
        let l3 = peel(LINKTYPE_LINUX_SLL2, &sll2).unwrap().unwrap();
        assert_eq!((l3.network, l3.offset), (Network::Ipv4, 20));
    }

    #[test]
    fn null_both_orders_and_short() {
        let mut f = vec![2, 0, 0, 0, 0x45];
        assert_eq!(peel(LINKTYPE_NULL, &f).unwrap().unwrap().network, Network::Ipv4);
        f[..4].copy_from_slice(&[0, 0, 0, 30]);
        assert_eq!(peel(LINKTYPE_NULL, &f).unwrap().unwrap().network, Network::Ipv6);
        assert!(peel(LINKTYPE_NULL, &[1, 2]).is_err());
        assert!(peel(LINKTYPE_ETHERNET, &[0; 10]).is_err());
        assert!(matches!(peel(LINKTYPE_ETHERNET, &eth(0x0806, &[0; 28])), Ok(None)));
    }
}
