//! VoIPmonitor's packet-buffer block (`pcap_block_store` version 7): a 64-byte header, one `u32` offset per
//! packet, and the packet records (36-byte `pcap_pkthdr_plus` + bytes), snappy-compressed. Built by the sender,
//! checked and taken apart by the receiver.

pub(super) const TITLE: &[u8; 16] = b"pcap_block_store";
const VERSION: u8 = 7;
pub(super) const HEADER: usize = 64;
pub(super) const PKTHDR: usize = 36;
/// The most a block may claim (VoIPmonitor's blocks are at most a few MiB).
const BLOCK_MAX: usize = 32 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MirrorError {
    #[error("bad block header")]
    BadHeader,
    #[error("bad version {0} (expected 7)")]
    Version(u8),
    #[error("block of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("bad checksum")]
    Checksum,
    #[error("block data does not decompress")]
    Decompress,
    #[error("packet record out of bounds")]
    Record,
    #[error("header mode {0} is not supported (only pcap_pkthdr_plus)")]
    HeaderMode(u8),
}

/// VoIPmonitor's block checksum: a 16-bit sum of the bytes as signed values, never 0.
fn checksum(b: &[u8]) -> u32 {
    let s = b.iter().fold(0u16, |s, &x| s.wrapping_add(x as i8 as i16 as u16));
    (s as u32).max(1)
}

/// Builds one block from frames (ts ns, bytes) of one link type.
pub fn encode_block(frames: &[(i64, &[u8])], dlt: u16, sensor_id: i16, counter: u32, confirm: bool) -> Vec<u8> {
    let mut data = Vec::with_capacity(frames.iter().map(|f| f.1.len() + PKTHDR).sum());
    let mut offsets = Vec::with_capacity(frames.len() * 4);
    for (ts, bytes) in frames {
        offsets.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let (s, us) = (ts.div_euclid(1_000_000_000) as u32, (ts.rem_euclid(1_000_000_000) / 1000) as u32);
        for v in [s, us, bytes.len() as u32, bytes.len() as u32] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&0xffffu16.to_le_bytes()); // no encapsulating IP header noted
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&0i16.to_le_bytes()); // fixed (32-bit) pcap header form
        data.extend_from_slice(&dlt.to_le_bytes());
        data.extend_from_slice(&0xffffu16.to_le_bytes()); // VLAN unset
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(bytes);
    }
    let z = snap::raw::Encoder::new().compress_vec(&data).unwrap_or_default();
    let compressed = !z.is_empty() && z.len() < data.len();
    let body: &[u8] = if compressed { &z } else { &data };
    let mut h = [0u8; HEADER];
    h[..16].copy_from_slice(TITLE);
    h[16] = VERSION;
    h[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[24..28].copy_from_slice(&(if compressed { z.len() as u32 } else { 0 }).to_le_bytes());
    h[28..32].copy_from_slice(&(frames.len() as u32).to_le_bytes());
    h[32..34].copy_from_slice(&dlt.to_le_bytes());
    h[34..36].copy_from_slice(&sensor_id.to_le_bytes());
    h[36..42].copy_from_slice(b"voxtap");
    let mut sum_over = offsets.clone();
    sum_over.extend_from_slice(body);
    h[48..52].copy_from_slice(&checksum(&sum_over).to_le_bytes());
    h[52..56].copy_from_slice(&counter.to_le_bytes());
    h[56] = confirm as u8;
    let now = crate::time::wall_clock().div_euclid(1_000_000_000) as u32;
    h[60..64].copy_from_slice(&now.to_le_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&sum_over);
    out
}

/// A block's header fields that the reader needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockHead {
    pub size: usize,
    pub size_compress: usize,
    pub count: usize,
    pub dlt: u16,
    pub sensor_id: i16,
    pub hm: u8,
    pub checksum: u32,
    pub counter: u32,
    pub confirm: bool,
}

impl BlockHead {
    pub fn parse(h: &[u8]) -> Result<BlockHead, MirrorError> {
        if h.len() < HEADER || &h[..16] != TITLE {
            return Err(MirrorError::BadHeader);
        }
        if h[16] != VERSION {
            return Err(MirrorError::Version(h[16]));
        }
        let u = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]) as usize;
        let b = BlockHead {
            size: u(20),
            size_compress: u(24),
            count: u(28),
            dlt: u16::from_le_bytes([h[32], h[33]]),
            sensor_id: i16::from_le_bytes([h[34], h[35]]),
            hm: h[46],
            checksum: u(48) as u32,
            counter: u(52) as u32,
            confirm: h[56] != 0,
        };
        if b.size > BLOCK_MAX || b.size_compress > BLOCK_MAX || b.count > BLOCK_MAX / PKTHDR {
            return Err(MirrorError::TooLarge(b.size.max(b.size_compress)));
        }
        Ok(b)
    }

    /// Bytes after the header: offsets and the (compressed) data.
    pub fn body_len(&self) -> usize {
        self.count * 4 + if self.size_compress > 0 { self.size_compress } else { self.size }
    }
}

/// A block's packets, checked: the (inflated) data and where each packet lies in it — time, link type, range.
/// Records must follow each other in order, each inside the data and after the one before (no overlap), so a
/// block can never make more bytes than its own size; nothing is copied out of it.
pub struct Block {
    pub data: Vec<u8>,
    pub frames: Vec<(i64, u16, u32, u32)>,
}

/// Checks a block's body (offsets, then data) and finds its packets.
pub fn decode_body(head: &BlockHead, mut body: Vec<u8>) -> Result<Block, MirrorError> {
    if head.hm != 0 {
        return Err(MirrorError::HeaderMode(head.hm));
    }
    if head.checksum != 0 && checksum(&body) != head.checksum {
        return Err(MirrorError::Checksum);
    }
    let offs_len = (head.count * 4).min(body.len());
    let offsets: Vec<usize> =
        body[..offs_len].chunks_exact(4).map(|o| u32::from_le_bytes([o[0], o[1], o[2], o[3]]) as usize).collect();
    let data = if head.size_compress > 0 {
        let z = &body[offs_len..];
        if snap::raw::decompress_len(z).map_err(|_| MirrorError::Decompress)? != head.size {
            return Err(MirrorError::Decompress);
        }
        snap::raw::Decoder::new().decompress_vec(z).map_err(|_| MirrorError::Decompress)?
    } else {
        body.drain(..offs_len);
        body
    };
    let mut frames = Vec::with_capacity(offsets.len());
    let mut next_free = 0usize;
    for at in offsets {
        if at < next_free {
            return Err(MirrorError::Record);
        }
        let h = data.get(at..at + PKTHDR).ok_or(MirrorError::Record)?;
        let u = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let std = i16::from_le_bytes([h[28], h[29]]);
        // The native 64-bit pcap header form (std = 1): seconds and microseconds as i64, caplen at 16.
        let (sec, usec, caplen) = if std == 1 {
            let q = |i: usize| i64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
            (q(0), q(8), u(16) as usize)
        } else {
            (u(0) as i64, u(4) as i64, u(8) as usize)
        };
        let dlt = match u16::from_le_bytes([h[30], h[31]]) {
            0 => head.dlt,
            d => d,
        };
        let (start, end) = (at + PKTHDR, at + PKTHDR + caplen);
        if end > data.len() {
            return Err(MirrorError::Record);
        }
        next_free = end;
        let ts = sec.saturating_mul(1_000_000_000).saturating_add(usec.saturating_mul(1000));
        frames.push((ts, dlt, start as u32, end as u32));
    }
    Ok(Block { data, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_refuse_damage() {
        let frames: Vec<(i64, Vec<u8>)> =
            (0..50).map(|i| (1_700_000_000_123_456_000 + i, vec![i as u8; 60 + i as usize])).collect();
        let refs: Vec<(i64, &[u8])> = frames.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        let b = encode_block(&refs, 1, 7, 3, true);
        let head = BlockHead::parse(&b).unwrap();
        assert_eq!((head.count, head.dlt, head.sensor_id, head.counter, head.confirm), (50, 1, 7, 3, true));
        assert!(head.size_compress > 0 && head.size_compress < head.size);
        let got = decode_body(&head, b[HEADER..].to_vec()).unwrap();
        assert_eq!(got.frames.len(), 50);
        // Microseconds on the wire.
        let (ts, dlt, a, z) = got.frames[1];
        assert_eq!((ts, dlt, &got.data[a as usize..z as usize]), (1_700_000_000_123_456_000, 1, &[1u8; 61][..]));
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert!(matches!(decode_body(&head, bad[HEADER..].to_vec()), Err(MirrorError::Checksum)));
        let mut v = b.clone();
        v[16] = 6;
        assert_eq!(BlockHead::parse(&v), Err(MirrorError::Version(6)));
        assert_eq!(BlockHead::parse(b"pcap_block_stor"), Err(MirrorError::BadHeader));
    }
}
