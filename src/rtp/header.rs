//! RTP fixed header (RFC 3550 §5.1) as a checked view, and the test that tells RTCP from RTP on a muxed port.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// Parses an RTP header; `None` for anything that is not RTP version 2 or is cut short.
pub fn parse(b: &[u8]) -> Option<RtpHeader> {
    parse_prefix(b, b.len(), b.last().copied().unwrap_or(0))
}

/// Parses an RTP header from the first bytes `b` of a packet of `wire_len` bytes whose last byte is `last`
/// (owners get only a prefix of each RTP packet). Lengths in the result refer to the packet on the wire.
pub fn parse_prefix(b: &[u8], wire_len: usize, last: u8) -> Option<RtpHeader> {
    if b.len() < 12 || b[0] >> 6 != 2 || wire_len < b.len() {
        return None;
    }
    let cc = (b[0] & 0x0f) as usize;
    let mut off = 12 + 4 * cc;
    if b[0] & 0x10 != 0 {
        let ext = b.get(off..off + 4)?;
        off += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    if off > wire_len {
        return None;
    }
    let mut end = wire_len;
    if b[0] & 0x20 != 0 {
        let pad = last as usize;
        if pad == 0 || off + pad > end {
            return None;
        }
        end -= pad;
    }
    Some(RtpHeader {
        marker: b[1] & 0x80 != 0,
        pt: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload_offset: off,
        payload_len: end - off,
    })
}

/// Length of the RTP header (fixed part, CSRCs, extension) at the start of `b`, if it is RTP version 2.
#[inline]
pub fn header_len(b: &[u8]) -> Option<usize> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let mut off = 12 + 4 * (b[0] & 0x0f) as usize;
    if b[0] & 0x10 != 0 {
        let ext = b.get(off..off + 4)?;
        off += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    (off <= b.len()).then_some(off)
}

/// RTCP packet types 200–207 (SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR) in the second byte (RFC 5761 §4).
pub fn looks_like_rtcp(b: &[u8]) -> bool {
    b.len() >= 8 && b[0] >> 6 == 2 && (200..=207).contains(&b[1])
}

/// RTP clock rate for static payload types (RFC 3551 table 4/5), 0 when unknown.
pub fn static_clock(pt: u8) -> u32 {
    match pt {
        0 | 1 | 2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 | 19 => 8000,
        6 => 16000,
        10 | 11 => 44100,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90000,
        16 => 11025,
        17 => 22050,
        _ => 0,
    }
}

/// Name of a static payload type, as the CDR and listings show it.
pub fn static_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 | 16 | 17 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 | 19 => "CN",
        14 => "MPA",
        15 => "G728",
        18 => "G729",
        25 => "CelB",
        26 => "JPEG",
        28 => "nv",
        31 => "H261",
        32 => "MPV",
        33 => "MP2T",
        34 => "H263",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_csrc_ext_padding() {
        let mut p = vec![0xb1, 0x88, 0, 5, 0, 0, 0, 160, 1, 2, 3, 4];
        p.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // extension of one word
        p.extend_from_slice(&[0xaa; 10]);
        p.extend_from_slice(&[0, 0, 3]); // padding of 3
        let h = parse(&p).unwrap();
        assert!(h.marker);
        assert_eq!((h.pt, h.seq, h.ts, h.ssrc), (8, 5, 160, 0x0102_0304));
        assert_eq!((h.payload_offset, h.payload_len), (24, 10));
        assert!(parse(&p[..11]).is_none());
        assert!(parse(&[0x40; 20]).is_none());
        assert!(looks_like_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 0]));
    }
}
