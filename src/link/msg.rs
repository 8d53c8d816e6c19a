//! What travels inside the link's records: kinds, and the batch bodies (CDRs, packets) with the sender's queue
//! position, which is also the batch's sequence number: the central acknowledges positions, and a batch at or
//! below what it already took from that queue is a resend, acknowledged and skipped.

use crate::store::queue::Pos;

/// Central → remote: registered (JSON).
pub const WELCOME: u8 = 1;
/// Either way: a reason, then the connection closes.
pub const ERROR: u8 = 2;
/// Remote → central: `Pos` + zstd of length-prefixed CDR JSON texts.
pub const CDRS: u8 = 3;
/// Remote → central: `Pos` + zstd of packet records.
pub const PACKETS: u8 = 4;
/// Central → remote: everything up to this `Pos` is stored.
pub const ACK: u8 = 5;
/// Remote → central: keepalive (every 5 s); the central answers PONG.
pub const PING: u8 = 6;
pub const PONG: u8 = 7;
/// Remote → central: nothing more will come (a capture file is done); the central acknowledges and closes.
pub const END: u8 = 8;
/// Central → remote: a manager command for the remote (`u32` request id + command text).
pub const COMMAND: u8 = 9;
/// Remote → central: the answer's last part (`u32` request id + bytes).
pub const ANSWER: u8 = 10;
/// Remote → central: a part of an answer, more to come (`u32` request id + bytes): a large file is streamed.
pub const ANSWER_PART: u8 = 11;

/// The most a batch may inflate to: a hostile remote cannot make the central allocate more.
pub const INFLATED_MAX: usize = 256 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MsgError {
    #[error("record too short")]
    Short,
    #[error("batch does not inflate: {0}")]
    Inflate(String),
    #[error("batch body is cut: a record runs past its end")]
    Cut,
}

pub fn pos_bytes(p: Pos) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&p.seg.to_be_bytes());
    b[8..].copy_from_slice(&p.off.to_be_bytes());
    b
}

pub fn read_pos(b: &[u8]) -> Result<(Pos, &[u8]), MsgError> {
    if b.len() < 16 {
        return Err(MsgError::Short);
    }
    let seg = u64::from_be_bytes(b[..8].try_into().map_err(|_| MsgError::Short)?);
    let off = u64::from_be_bytes(b[8..16].try_into().map_err(|_| MsgError::Short)?);
    Ok((Pos { seg, off }, &b[16..]))
}

/// Length-prefixed items, compressed.
pub fn pack(items: &[&[u8]]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(items.iter().map(|i| i.len() + 4).sum());
    for i in items {
        raw.extend_from_slice(&(i.len() as u32).to_be_bytes());
        raw.extend_from_slice(i);
    }
    zstd::bulk::compress(&raw, 1).unwrap_or_default()
}

pub fn inflate(b: &[u8]) -> Result<Vec<u8>, MsgError> {
    zstd::bulk::decompress(b, INFLATED_MAX).map_err(|e| MsgError::Inflate(e.to_string()))
}

/// The items of an inflated `pack`.
pub fn items(raw: &[u8]) -> Result<Vec<&[u8]>, MsgError> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(MsgError::Cut);
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let item = rest.get(4..4 + n).ok_or(MsgError::Cut)?;
        out.push(item);
        rest = &rest[4 + n..];
    }
    Ok(out)
}

/// One captured frame as a remote forwards it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    pub ts: i64,
    pub link_type: u16,
    pub data: &'a [u8],
}

/// A packet record: ts (ns, i64), link type (u16), the bytes.
pub fn push_frame(out: &mut Vec<u8>, ts: i64, link_type: u16, data: &[u8]) {
    out.extend_from_slice(&((data.len() + 10) as u32).to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&link_type.to_be_bytes());
    out.extend_from_slice(data);
}

/// Where each packet record of an inflated batch lies: its time, link type and byte range in the batch. The
/// central checks a batch with this once, and its merge walks the same index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameAt {
    pub ts: i64,
    pub link_type: u16,
    pub start: usize,
    pub end: usize,
}

pub fn index(raw: &[u8]) -> Result<Vec<FrameAt>, MsgError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let len = raw.get(at..at + 4).ok_or(MsgError::Cut)?;
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let s = at + 4;
        let rec = raw.get(s..s + n).ok_or(MsgError::Cut)?;
        if n < 10 {
            return Err(MsgError::Short);
        }
        let ts = i64::from_be_bytes(rec[..8].try_into().map_err(|_| MsgError::Short)?);
        out.push(FrameAt { ts, link_type: u16::from_be_bytes([rec[8], rec[9]]), start: s + 10, end: s + n });
        at = s + n;
    }
    Ok(out)
}

pub fn frames(raw: &[u8]) -> Result<Vec<Frame<'_>>, MsgError> {
    Ok(index(raw)?
        .into_iter()
        .map(|f| Frame { ts: f.ts, link_type: f.link_type, data: &raw[f.start..f.end] })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_and_frames_round_trip() {
        let mut raw = Vec::new();
        push_frame(&mut raw, -5, 1, b"abc");
        push_frame(&mut raw, 1 << 60, 113, b"");
        let z = zstd::bulk::compress(&raw, 1).unwrap();
        let inflated = inflate(&z).unwrap();
        let f = frames(&inflated).unwrap();
        assert_eq!(f[0], Frame { ts: -5, link_type: 1, data: b"abc" });
        assert_eq!(f[1], Frame { ts: 1 << 60, link_type: 113, data: b"" });
        let p = pack(&[b"x", b"yz"]);
        assert_eq!(items(&inflate(&p).unwrap()).unwrap(), vec![&b"x"[..], b"yz"]);
        let bytes = [&pos_bytes(Pos { seg: 3, off: 9 })[..], b"t"].concat();
        let (pos, rest) = read_pos(&bytes).unwrap();
        assert_eq!((pos, rest), (Pos { seg: 3, off: 9 }, &b"t"[..]));
    }

    proptest! {
        #[test]
        fn hostile_bodies_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_pos(&b);
            let _ = inflate(&b);
            let _ = items(&b);
            let _ = frames(&b);
        }
    }
}
