//! Per-flow TCP reassembly of SIP messages: sequence tracking, retransmissions and overlaps trimmed,
//! out-of-order segments held (bounded) until the gap fills, several messages per segment, one message over
//! many segments, and SIP over WebSocket (RFC 7118) after an HTTP upgrade. Symmetric RSS keeps both
//! directions of a flow on one rx core, so this state is never shared.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::sip::framing::{self, Framing};
use crate::time::{secs, Nanos};

use super::frag::SavedFrame;
use super::ip::{TCP_FIN, TCP_RST, TCP_SYN};

const MAX_FLOWS: usize = 65_536;
const MAX_BUFFER: usize = 256 * 1024;
const MAX_OOO_BYTES: usize = 256 * 1024;
const MAX_FRAMES_PER_MSG: usize = 256;
const FLOW_IDLE: Nanos = 600 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Mode {
    #[default]
    Sip,
    /// HTTP upgrade seen on this flow: the stream carries WebSocket frames.
    WebSocket,
}

#[derive(Default)]
struct Flow {
    next_seq: Option<u32>,
    buf: Vec<u8>,
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
    frames: Vec<SavedFrame>,
    last_ts: Nanos,
    mode: Mode,
    ws_msg: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TcpStats {
    pub segments: u64,
    pub messages: u64,
    pub retransmitted_bytes: u64,
    pub out_of_order: u64,
    pub skipped_bytes: u64,
    pub overflow_resets: u64,
    pub flows_evicted: u64,
    pub websocket_messages: u64,
}

/// A complete SIP message recovered from a flow.
pub struct Message {
    pub ts: Nanos,
    pub websocket: bool,
    pub payload: Vec<u8>,
    pub frames: Vec<SavedFrame>,
}

pub struct TcpReassembler {
    flows: HashMap<FlowKey, Flow>,
    last_sweep: Nanos,
    keep_frames: bool,
    pub stats: TcpStats,
}

impl TcpReassembler {
    pub fn new(keep_frames: bool) -> Self {
        TcpReassembler { flows: HashMap::new(), last_sweep: 0, keep_frames, stats: TcpStats::default() }
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Feeds one segment; complete messages are pushed to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        ts: Nanos,
        key: FlowKey,
        seq: u32,
        flags: u8,
        payload: &[u8],
        frame: (u16, &[u8]),
        out: &mut Vec<Message>,
    ) {
        self.stats.segments += 1;
        if ts - self.last_sweep > secs(10) {
            self.sweep(ts);
        }
        if flags & TCP_RST != 0 {
            self.flows.remove(&key);
            return;
        }
        if !self.flows.contains_key(&key) {
            if payload.is_empty() && flags & TCP_SYN == 0 {
                return;
            }
            if self.flows.len() >= MAX_FLOWS {
                self.stats.flows_evicted += 1;
                return;
            }
        }
        let keep_frames = self.keep_frames;
        let flow = self.flows.entry(key).or_default();
        flow.last_ts = ts;
        if flags & TCP_SYN != 0 {
            flow.next_seq = Some(seq.wrapping_add(1));
            flow.buf.clear();
            flow.ooo.clear();
            flow.ooo_bytes = 0;
            return;
        }
        let next = *flow.next_seq.get_or_insert(seq);
        let rel = seq.wrapping_sub(next) as i32;
        let mut data = payload;
        if rel < 0 {
            let dup = (-(rel as i64)) as usize;
            if dup >= data.len() {
                self.stats.retransmitted_bytes += data.len() as u64;
                data = &[];
            } else {
                self.stats.retransmitted_bytes += dup as u64;
                data = &data[dup..];
            }
        } else if rel > 0 {
            if !data.is_empty() {
                self.stats.out_of_order += 1;
                if flow.ooo_bytes + data.len() > MAX_OOO_BYTES {
                    // A hole that never fills: give up on it and continue from the held data.
                    self.stats.overflow_resets += 1;
                    self.stats.skipped_bytes += flow.buf.len() as u64;
                    flow.buf.clear();
                    flow.frames.clear();
                    if let Some((&s, _)) = flow.ooo.iter().next() {
                        flow.next_seq = Some(s);
                    }
                } else {
                    flow.ooo_bytes += data.len();
                    flow.ooo.entry(seq).or_insert_with(|| data.to_vec());
                    if keep_frames && flow.frames.len() < MAX_FRAMES_PER_MSG {
                        flow.frames.push(SavedFrame { ts, link_type: frame.0, data: frame.1.to_vec() });
                    }
                    return;
                }
            }
            data = &[];
        }
        if !data.is_empty() {
            flow.buf.extend_from_slice(data);
            flow.next_seq = Some(next.wrapping_add(data.len() as u32));
            if keep_frames && flow.frames.len() < MAX_FRAMES_PER_MSG {
                flow.frames.push(SavedFrame { ts, link_type: frame.0, data: frame.1.to_vec() });
            }
        }
        // Held segments that now fit.
        while let Some(n) = flow.next_seq {
            let Some((&s, _)) = flow.ooo.iter().find(|(s, d)| {
                let r = s.wrapping_sub(n) as i32;
                r <= 0 && (r as i64 + d.len() as i64) > 0
            }) else {
                // Drop held segments wholly behind the edge.
                let stale: Vec<u32> = flow
                    .ooo
                    .iter()
                    .filter(|(s, d)| (s.wrapping_sub(n) as i32) as i64 + d.len() as i64 <= 0)
                    .map(|(s, _)| *s)
                    .collect();
                for s in stale {
                    if let Some(d) = flow.ooo.remove(&s) {
                        flow.ooo_bytes -= d.len();
                    }
                }
                break;
            };
            if let Some(d) = flow.ooo.remove(&s) {
                flow.ooo_bytes -= d.len();
                let skip = n.wrapping_sub(s) as usize;
                flow.buf.extend_from_slice(&d[skip..]);
                flow.next_seq = Some(n.wrapping_add((d.len() - skip) as u32));
            }
        }
        Self::extract(flow, ts, &mut self.stats, out);
        if flow.buf.len() > MAX_BUFFER {
            self.stats.overflow_resets += 1;
            self.stats.skipped_bytes += flow.buf.len() as u64;
            flow.buf.clear();
            flow.frames.clear();
        }
        if flags & TCP_FIN != 0 && flow.ooo.is_empty() {
            self.flows.remove(&key);
        }
    }

    fn extract(flow: &mut Flow, ts: Nanos, stats: &mut TcpStats, out: &mut Vec<Message>) {
        let mut consumed = 0usize;
        loop {
            let rest = &flow.buf[consumed..];
            if rest.is_empty() {
                break;
            }
            if flow.mode == Mode::Sip && (rest.starts_with(b"GET ") || rest.starts_with(b"HTTP/1.1 101")) {
                // WebSocket handshake (request or answer): skip the HTTP header block; frames follow.
                match memchr::memmem::find(rest, b"\r\n\r\n") {
                    Some(i) => {
                        consumed += i + 4;
                        flow.mode = Mode::WebSocket;
                        continue;
                    }
                    None => break,
                }
            }
            if flow.mode == Mode::WebSocket {
                match ws_frame(rest) {
                    WsFrame::Partial => break,
                    WsFrame::Bad => {
                        // Not a WebSocket frame after all: fall back to plain SIP framing.
                        flow.mode = Mode::Sip;
                        continue;
                    }
                    WsFrame::Frame { len, fin, opcode, payload } => {
                        consumed += len;
                        if opcode == 0 || opcode == 1 || opcode == 2 {
                            if flow.ws_msg.len() + payload.len() <= MAX_BUFFER {
                                flow.ws_msg.extend_from_slice(&payload);
                            }
                            if fin {
                                let msg = std::mem::take(&mut flow.ws_msg);
                                if framing::looks_like_start(&msg) {
                                    stats.messages += 1;
                                    stats.websocket_messages += 1;
                                    out.push(Message { ts, websocket: true, payload: msg, frames: take_frames(flow) });
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            match framing::frame(rest) {
                Framing::Complete(n) => {
                    stats.messages += 1;
                    let payload = rest[..n].to_vec();
                    consumed += n;
                    let frames = if consumed == flow.buf.len() {
                        take_frames(flow)
                    } else {
                        // The last segment also starts the next message: keep a copy for it.
                        let frames = flow.frames.clone();
                        let last = flow.frames.pop();
                        flow.frames.clear();
                        flow.frames.extend(last);
                        frames
                    };
                    out.push(Message { ts, websocket: false, payload, frames });
                }
                Framing::Partial => break,
                Framing::Garbage(n) => {
                    let n = n.max(1).min(rest.len());
                    if rest[..n].iter().any(|c| *c != b'\r' && *c != b'\n') {
                        stats.skipped_bytes += n as u64;
                    }
                    consumed += n;
                }
            }
        }
        if consumed > 0 {
            flow.buf.drain(..consumed);
        }
    }

    /// Forgets flows idle for longer than the flow timeout (packet time).
    pub fn sweep(&mut self, now: Nanos) {
        self.last_sweep = now;
        self.flows.retain(|_, f| now - f.last_ts <= FLOW_IDLE);
    }
}

fn take_frames(flow: &mut Flow) -> Vec<SavedFrame> {
    std::mem::take(&mut flow.frames)
}

enum WsFrame {
    Partial,
    Bad,
    Frame { len: usize, fin: bool, opcode: u8, payload: Vec<u8> },
}

/// One WebSocket frame (RFC 6455 §5.2), unmasked.
fn ws_frame(b: &[u8]) -> WsFrame {
    if b.len() < 2 {
        return WsFrame::Partial;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    if b[0] & 0x70 != 0 || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
        return WsFrame::Bad;
    }
    let masked = b[1] & 0x80 != 0;
    let mut len = (b[1] & 0x7f) as u64;
    let mut off = 2usize;
    if len == 126 {
        if b.len() < 4 {
            return WsFrame::Partial;
        }
        len = u16::from_be_bytes([b[2], b[3]]) as u64;
        off = 4;
    } else if len == 127 {
        if b.len() < 10 {
            return WsFrame::Partial;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[2..10]);
        len = u64::from_be_bytes(a);
        off = 10;
    }
    if len > MAX_BUFFER as u64 {
        return WsFrame::Bad;
    }
    let mask = if masked {
        if b.len() < off + 4 {
            return WsFrame::Partial;
        }
        let m = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        off += 4;
        Some(m)
    } else {
        None
    };
    let end = off + len as usize;
    if b.len() < end {
        return WsFrame::Partial;
    }
    let mut payload = b[off..end].to_vec();
    if let Some(m) = mask {
        for (i, c) in payload.iter_mut().enumerate() {
            *c ^= m[i & 3];
        }
    }
    WsFrame::Frame { len: end, fin, opcode, payload }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key() -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2)),
            sport: 5060,
            dport: 5060,
        }
    }

    const M1: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";
    const M2: &[u8] = b"BYE sip:a@b SIP/2.0\r\nl: 0\r\n\r\n";

    fn feed(r: &mut TcpReassembler, seq: u32, data: &[u8], out: &mut Vec<Message>) {
        r.segment(0, key(), seq, 0x18, data, (1, data), out);
    }

    #[test]
    fn split_reordered_and_retransmitted() {
        let mut all = M1.to_vec();
        all.extend_from_slice(M2);
        let mut r = TcpReassembler::new(true);
        let mut out = Vec::new();
        r.segment(0, key(), 999, TCP_SYN, &[], (1, &[]), &mut out);
        // Second half first, then the first half, then a retransmission of both.
        feed(&mut r, 1000 + 30, &all[30..], &mut out);
        assert!(out.is_empty());
        feed(&mut r, 1000, &all[..30], &mut out);
        feed(&mut r, 1000, &all, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].payload, M1);
        assert_eq!(out[1].payload, M2);
        assert!(r.stats.retransmitted_bytes >= all.len() as u64);
    }

    #[test]
    fn websocket_masked_frames() {
        let mut r = TcpReassembler::new(false);
        let mut out = Vec::new();
        let mut s = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let mask = [1u8, 2, 3, 4];
        s.push(0x81);
        s.push(0x80 | M2.len() as u8);
        s.extend_from_slice(&mask);
        s.extend(M2.iter().enumerate().map(|(i, c)| c ^ mask[i & 3]));
        feed(&mut r, 1, &s, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].websocket);
        assert_eq!(out[0].payload, M2);
    }

    #[test]
    fn mid_stream_start_resyncs() {
        let mut r = TcpReassembler::new(false);
        let mut out = Vec::new();
        let mut s = b"tail of an earlier body\r\n".to_vec();
        s.extend_from_slice(M2);
        feed(&mut r, 77, &s, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, M2);
    }
}
