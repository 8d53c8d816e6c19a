//! RTCP compound packets (RFC 3550 §6.4, RFC 3611): sender and receiver report blocks, the sender's NTP time
//! (for round-trip delay as a passive observer sees it) and the XR VoIP-metrics block.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The SSRC this block reports on.
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrVoip {
    pub ssrc: u32,
    pub loss_rate: u8,
    pub discard_rate: u8,
    /// MOS-LQ and MOS-CQ ×10 (127 = unavailable).
    pub mos_lq: u8,
    pub mos_cq: u8,
}

/// Everything voxtap takes from one compound packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rtcp {
    pub sender_ssrc: Option<u32>,
    /// Middle 32 bits of the SR's NTP timestamp (what a later LSR refers to).
    pub sr_ntp_mid: Option<u32>,
    pub blocks: Vec<ReportBlock>,
    pub xr: Vec<XrVoip>,
}

/// Parses a compound RTCP packet; stops at the first malformed sub-packet. `None` if nothing parsed.
pub fn parse(mut b: &[u8]) -> Option<Rtcp> {
    let mut out = Rtcp::default();
    let mut any = false;
    while b.len() >= 4 {
        if b[0] >> 6 != 2 {
            break;
        }
        let count = (b[0] & 0x1f) as usize;
        let pt = b[1];
        let len = (u16::from_be_bytes([b[2], b[3]]) as usize + 1) * 4;
        if len > b.len() {
            break;
        }
        let p = &b[..len];
        match pt {
            200 | 201 => {
                let first_block = if pt == 200 { 28 } else { 8 };
                if p.len() < first_block {
                    break;
                }
                out.sender_ssrc.get_or_insert(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                if pt == 200 {
                    out.sr_ntp_mid = Some(u32::from_be_bytes([p[10], p[11], p[12], p[13]]));
                }
                for i in 0..count {
                    let o = first_block + i * 24;
                    let Some(r) = p.get(o..o + 24) else { break };
                    let cl = ((r[5] as i32) << 16) | ((r[6] as i32) << 8) | r[7] as i32;
                    let cl = if cl & 0x80_0000 != 0 { cl - 0x100_0000 } else { cl };
                    out.blocks.push(ReportBlock {
                        ssrc: u32::from_be_bytes([r[0], r[1], r[2], r[3]]),
                        fraction_lost: r[4],
                        cumulative_lost: cl,
                        jitter: u32::from_be_bytes([r[12], r[13], r[14], r[15]]),
                        lsr: u32::from_be_bytes([r[16], r[17], r[18], r[19]]),
                        dlsr: u32::from_be_bytes([r[20], r[21], r[22], r[23]]),
                    });
                }
                any = true;
            }
            207 => {
                if p.len() >= 8 {
                    out.sender_ssrc.get_or_insert(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                }
                let mut o = 8;
                while o + 4 <= p.len() {
                    let bt = p[o];
                    let blen = (u16::from_be_bytes([p[o + 2], p[o + 3]]) as usize + 1) * 4;
                    if o + blen > p.len() {
                        break;
                    }
                    if bt == 7 && blen >= 36 {
                        let x = &p[o..o + blen];
                        out.xr.push(XrVoip {
                            ssrc: u32::from_be_bytes([x[4], x[5], x[6], x[7]]),
                            loss_rate: x[8],
                            discard_rate: x[9],
                            mos_lq: x[30],
                            mos_cq: x[31],
                        });
                    }
                    o += blen;
                }
                any = true;
            }
            202..=206 => any = true,
            _ => break,
        }
        b = &b[len..];
    }
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_with_one_block_then_sdes() {
        let mut p = vec![0x81, 200, 0, 12];
        p.extend_from_slice(&[0, 0, 0, 1]); // sender ssrc
        p.extend_from_slice(&[0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0, 0, 0, 2, 25, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 40, 1, 2, 3, 4, 0, 0, 0, 5]);
        p.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 1]);
        let r = parse(&p).unwrap();
        assert_eq!(r.sender_ssrc, Some(1));
        assert_eq!(r.sr_ntp_mid, Some(0x0000_aabb));
        assert_eq!(r.blocks[0].ssrc, 2);
        assert_eq!(r.blocks[0].cumulative_lost, -2);
        assert_eq!(r.blocks[0].jitter, 40);
        assert!(parse(&[0x81, 200, 0, 50]).is_none());
    }
}
