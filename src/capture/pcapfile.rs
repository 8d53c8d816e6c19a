//! Reader for capture files: classic pcap (µs and ns, either byte order) and pcapng (several sections,
//! interfaces and link types; EPB, SPB and the obsolete packet block). A plain file is memory-mapped and each
//! packet is handed out as a slice of the map, so reading allocates nothing per packet. The same parser also
//! reads a window of a stream (compressed files, standard input: see [`super::input`]), carrying its state from
//! one window to the next.
//!
//! A truncated or corrupt tail ends the iteration with a warning; everything before it is processed.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;

use crate::errors::plain;
use crate::time::Nanos;

/// Why a capture cannot be read at all (a tail that breaks off is not an error: see [`Frames::trailer_problem`]).
/// The I/O errors are part of the message, not a `source`: printed as a chain they would appear twice.
#[derive(Debug, Error)]
pub enum PcapError {
    /// The file cannot be opened (missing, no permission…).
    #[error("cannot open capture file {path}: {}", plain(.error))]
    Open { path: PathBuf, error: std::io::Error },
    /// `-r` names a directory.
    #[error("{path} is a directory, not a capture file")]
    Directory { path: PathBuf },
    /// Reading the first bytes failed.
    #[error("cannot read {path}: {}", plain(.error))]
    Read { path: PathBuf, error: std::io::Error },
    /// Neither a capture nor compressed; `what` says what the first bytes look like instead.
    #[error("{path}: not a pcap or pcapng file, nor gzip- or zstd-compressed ({what})")]
    BadMagic { path: PathBuf, what: String },
    /// A compressed file (or stream) whose content is not a capture; `what` says what it looks like.
    #[error("{path}: {codec}-compressed, but what it holds is not a pcap or pcapng file ({what})")]
    BadMagicInside { path: PathBuf, codec: &'static str, what: String },
    /// A compressed file broken before its first packets.
    #[error("{path}: {codec}-compressed, but it cannot be decompressed: {}", plain(.error))]
    Decompress { path: PathBuf, codec: &'static str, error: std::io::Error },
    /// Fewer bytes than a capture header.
    #[error("{path}: too short to be a capture")]
    TooShort { path: PathBuf },
    /// `-r -` with a terminal as standard input.
    #[error("-r -: standard input is a terminal; pipe a capture into it (tcpdump -w - | voxtap -r -)")]
    StdinIsTerminal,
}

/// One captured frame, borrowed from the mapped file (or the current window of a stream).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: Nanos,
    pub link_type: u16,
    pub data: &'a [u8],
    pub orig_len: u32,
    /// pcapng interface index (0 for classic pcap).
    pub interface: u32,
}

#[derive(Clone, Copy)]
pub(crate) enum Format {
    Pcap { big_endian: bool, nanos: bool, link_type: u16 },
    Pcapng,
}

impl Format {
    /// Where the first record starts: after the pcap file header; pcapng's section header is a block.
    pub(crate) fn first_record(self) -> usize {
        match self {
            Format::Pcap { .. } => 24,
            Format::Pcapng => 0,
        }
    }
}

/// What the first bytes of a capture say.
pub(crate) enum Detected {
    Capture(Format),
    TooShort,
    Unknown,
}

/// The capture format from the first bytes (24 of them are enough for either format).
pub(crate) fn detect(head: &[u8]) -> Detected {
    if head.len() < 4 {
        return Detected::TooShort;
    }
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
            if head.len() < 24 {
                return Detected::TooShort;
            }
            let big_endian = matches!(magic, 0xd4c3_b2a1 | 0x4d3c_b2a1);
            let nanos = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
            let lt = rd32(&head[20..24], big_endian);
            // The upper bits of the link-type field carry FCS flags (pcap spec); keep the low 16 bits.
            Detected::Capture(Format::Pcap { big_endian, nanos, link_type: (lt & 0xffff) as u16 })
        }
        0x0a0d_0d0a => Detected::Capture(Format::Pcapng),
        _ => Detected::Unknown,
    }
}

#[derive(Clone, Copy)]
struct Iface {
    link_type: u16,
    /// Multiplier to nanoseconds, or divisor when `ticks_per_sec` exceeds 1e9.
    ticks_per_sec: u64,
}

/// What the parser remembers between records besides its position: pcapng's interfaces and byte order, and the
/// last timestamp (for simple packet blocks). A stream carries it from one window to the next.
#[derive(Default)]
pub(crate) struct ParseState {
    ifaces: Vec<Iface>,
    big_endian: bool,
    last_ts: Nanos,
}

/// Where a window's parse ended: the position reached, the state to carry on with, and whether it ended for
/// want of bytes (`starved`: read more and go on) rather than at the end or at a broken record (`trailer`).
pub(crate) struct WindowEnd {
    pub pos: usize,
    pub state: ParseState,
    pub trailer: Option<String>,
    pub starved: bool,
}

/// Largest pcapng block a stream buffers: bigger is taken for corruption (a file on disk is mapped whole, so
/// there any length that fits in the file is read).
pub(crate) const MAX_STREAM_BLOCK: usize = 64 << 20;

/// A capture file opened for reading.
pub struct CaptureFile {
    path: PathBuf,
    map: Mmap,
    format: Format,
}

impl CaptureFile {
    pub fn open(path: &Path) -> Result<Self, PcapError> {
        let file = File::open(path).map_err(|error| PcapError::Open { path: path.into(), error })?;
        Self::map(path.into(), &file)
    }

    /// Maps an open file (a path's, or standard input when it is a file); `path` names it in errors.
    pub(crate) fn map(path: PathBuf, file: &File) -> Result<Self, PcapError> {
        let map = match crate::os::map_readonly(file) {
            Ok(m) => m,
            Err(error) => return Err(PcapError::Open { path, error }),
        };
        // Sequential reading: ask for read-ahead (advice only; failure changes nothing).
        let _ = map.advise(memmap2::Advice::Sequential);
        Self::from_map(path, map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<Self, PcapError> {
        let format = match detect(&map) {
            Detected::Capture(f) => f,
            Detected::TooShort => return Err(PcapError::TooShort { path }),
            Detected::Unknown => {
                let what = super::input::describe_head(&map);
                return Err(PcapError::BadMagic { path, what });
            }
        };
        Ok(CaptureFile { path, map, format })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn frames(&self) -> Frames<'_> {
        Frames::window(&self.map, self.format.first_record(), self.format, ParseState::default(), 0, false)
    }
}

/// Iterator over the frames of a capture file (or of one window of a stream).
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    format: Format,
    st: ParseState,
    trailer: Option<String>,
    /// Offset of `buf[0]` in the whole capture, for the byte positions in messages (0 for a mapped file).
    base: u64,
    /// More bytes may follow `buf` (a stream's window): a record cut short at its end is not the end.
    more: bool,
    starved: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `buf` from `pos` on, with the parser state `st`; `base` is `buf[0]`'s offset in the capture and
    /// `more` says that bytes may follow `buf`.
    pub(crate) fn window(buf: &'a [u8], pos: usize, format: Format, st: ParseState, base: u64, more: bool) -> Self {
        Frames { buf, pos, format, st, trailer: None, base, more, starved: false }
    }

    /// Where this window's parse ended (after `next` returned `None`).
    pub(crate) fn end(self) -> WindowEnd {
        WindowEnd { pos: self.pos, state: self.st, trailer: self.trailer, starved: self.starved }
    }

    /// Why reading stopped early, if it did (a truncated or corrupt file).
    pub fn trailer_problem(&self) -> Option<&str> {
        self.trailer.as_deref()
    }

    /// Bytes of the capture read so far (records handed out, and the headers before them).
    pub fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn stop(&mut self, why: String) -> Option<Frame<'a>> {
        self.trailer = Some(why);
        self.pos = self.buf.len();
        None
    }

    /// The record at `pos` goes past the end of `buf`: in a stream's window, read more and come back (the position
    /// stays at the record's start); at the real end, the capture is truncated.
    #[cold]
    fn short(&mut self, why: impl FnOnce(u64) -> String) -> Option<Frame<'a>> {
        if self.more {
            self.starved = true;
            return None;
        }
        let at = self.base + self.pos as u64;
        self.stop(why(at))
    }

    /// Nothing left in `buf`: the end, unless a stream has more to come.
    #[cold]
    fn drained(&mut self) -> Option<Frame<'a>> {
        self.starved = self.more;
        None
    }

    fn next_pcap(&mut self, big_endian: bool, nanos: bool, link_type: u16) -> Option<Frame<'a>> {
        let buf = self.buf;
        if self.pos >= buf.len() {
            return self.drained();
        }
        if buf.len() - self.pos < 16 {
            return self.short(|at| format!("truncated record header at byte {at}"));
        }
        let h = &buf[self.pos..self.pos + 16];
        let sec = rd32(&h[0..4], big_endian) as i64;
        let frac = rd32(&h[4..8], big_endian) as i64;
        let incl = rd32(&h[8..12], big_endian) as usize;
        let orig = rd32(&h[12..16], big_endian);
        if incl > 262_144 * 4 {
            let at = self.base + self.pos as u64;
            return self.stop(format!("implausible record length {incl} at byte {at}"));
        }
        let start = self.pos + 16;
        if buf.len() - start < incl {
            return self.short(|at| format!("truncated packet data at byte {} ({incl} bytes announced)", at + 16));
        }
        self.pos = start + incl;
        let ts = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        Some(Frame { ts, link_type, data: &buf[start..start + incl], orig_len: orig, interface: 0 })
    }

    fn next_pcapng(&mut self) -> Option<Frame<'a>> {
        let buf = self.buf;
        loop {
            if self.pos >= buf.len() {
                return self.drained();
            }
            if buf.len() - self.pos < 12 {
                return self.short(|at| format!("truncated pcapng block at byte {at}"));
            }
            let b = &buf[self.pos..];
            let raw_type = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if raw_type == 0x0a0d_0d0a {
                // Section header: byte order from the byte-order magic; interfaces restart.
                let bom = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
                self.st.big_endian = match bom {
                    0x1a2b_3c4d => false,
                    0x4d3c_2b1a => true,
                    _ => {
                        let at = self.base + self.pos as u64;
                        return self.stop(format!("bad pcapng byte-order magic at byte {at}"));
                    }
                };
                self.st.ifaces.clear();
            }
            let be = self.st.big_endian;
            let btype = rd32(&b[0..4], be);
            let blen = rd32(&b[4..8], be) as usize;
            if blen < 12 || !blen.is_multiple_of(4) {
                let at = self.base + self.pos as u64;
                return self.stop(format!("bad pcapng block length {blen} at byte {at}"));
            }
            if blen > b.len() {
                if self.more && blen > MAX_STREAM_BLOCK {
                    let at = self.base + self.pos as u64;
                    return self.stop(format!(
                        "pcapng block of {blen} bytes at byte {at}: more than the {} MiB a stream is read in",
                        MAX_STREAM_BLOCK >> 20
                    ));
                }
                return self.short(|at| format!("truncated pcapng block at byte {at} ({blen} bytes announced)"));
            }
            let body = &b[8..blen - 4];
            self.pos += blen;
            match btype {
                1 => {
                    // Interface description: link type, snaplen, options (if_tsresol).
                    if body.len() < 8 {
                        continue;
                    }
                    let link_type = rd16(&body[0..2], be);
                    let ticks_per_sec = parse_tsresol(&body[8..], be).unwrap_or(1_000_000);
                    self.st.ifaces.push(Iface { link_type, ticks_per_sec });
                }
                6 | 2 => {
                    // Enhanced packet block (6) or obsolete packet block (2, 16-bit interface id + drops).
                    if body.len() < 20 {
                        continue;
                    }
                    let iface = if btype == 6 { rd32(&body[0..4], be) } else { rd16(&body[0..2], be) as u32 };
                    let hi = rd32(&body[4..8], be) as u64;
                    let lo = rd32(&body[8..12], be) as u64;
                    let caplen = rd32(&body[12..16], be) as usize;
                    let orig = rd32(&body[16..20], be);
                    let Some(ifc) = self.st.ifaces.get(iface as usize).copied() else {
                        continue;
                    };
                    if body.len() - 20 < caplen {
                        continue;
                    }
                    let data = &body[20..20 + caplen];
                    let ts = ticks_to_nanos((hi << 32) | lo, ifc.ticks_per_sec);
                    self.st.last_ts = ts;
                    return Some(Frame { ts, link_type: ifc.link_type, data, orig_len: orig, interface: iface });
                }
                3 => {
                    // Simple packet block: interface 0 and no timestamp; it gets the previous packet's time so that
                    // packet-time timers never run backwards.
                    if body.len() < 4 {
                        continue;
                    }
                    let Some(ifc) = self.st.ifaces.first().copied() else {
                        continue;
                    };
                    let orig = rd32(&body[0..4], be);
                    let caplen = (orig as usize).min(body.len() - 4);
                    let data = &body[4..4 + caplen];
                    return Some(Frame {
                        ts: self.st.last_ts,
                        link_type: ifc.link_type,
                        data,
                        orig_len: orig,
                        interface: 0,
                    });
                }
                _ => continue,
            }
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        match self.format {
            Format::Pcap { big_endian, nanos, link_type } => self.next_pcap(big_endian, nanos, link_type),
            Format::Pcapng => self.next_pcapng(),
        }
    }
}

fn ticks_to_nanos(ticks: u64, per_sec: u64) -> Nanos {
    if per_sec == 1_000_000_000 {
        return ticks as i64;
    }
    let secs = ticks / per_sec;
    let rem = ticks % per_sec;
    (secs as i64).saturating_mul(1_000_000_000) + ((rem as u128 * 1_000_000_000u128) / per_sec as u128) as i64
}

/// if_tsresol (option 9): high bit set → power of two, else power of ten.
fn parse_tsresol(mut opts: &[u8], be: bool) -> Option<u64> {
    while opts.len() >= 4 {
        let code = rd16(&opts[0..2], be);
        let len = rd16(&opts[2..4], be) as usize;
        let padded = (len + 3) & !3;
        if code == 0 || opts.len() < 4 + len {
            return None;
        }
        if code == 9 && len >= 1 {
            let v = opts[4];
            let exp = (v & 0x7f) as u32;
            return if v & 0x80 != 0 { (exp < 64).then(|| 1u64 << exp) } else { 10u64.checked_pow(exp) };
        }
        if opts.len() < 4 + padded {
            return None;
        }
        opts = &opts[4 + padded..];
    }
    None
}

fn rd32(b: &[u8], be: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn rd16(b: &[u8], be: bool) -> u16 {
    let a = [b[0], b[1]];
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(bytes: &[u8]) -> tempfile_path::TmpPath {
        tempfile_path::TmpPath::with(bytes)
    }

    /// A tiny self-cleaning temp file, to avoid a dev-dependency for two tests.
    mod tempfile_path {
        use std::path::PathBuf;
        pub struct TmpPath(pub PathBuf);
        impl TmpPath {
            pub fn with(bytes: &[u8]) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "voxtap-pcap-{}-{}.bin",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, bytes).expect("write temp file");
                TmpPath(p)
            }
        }
        impl Drop for TmpPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn pcap_bytes(nanos: bool, be: bool, pkts: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        let w32 = |v: &mut Vec<u8>, x: u32| v.write_all(&if be { x.to_be_bytes() } else { x.to_le_bytes() }).unwrap();
        let magic = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        w32(&mut v, magic);
        v.extend_from_slice(&if be { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, 1);
        for (s, f, d) in pkts {
            w32(&mut v, *s);
            w32(&mut v, *f);
            w32(&mut v, d.len() as u32);
            w32(&mut v, d.len() as u32);
            v.extend_from_slice(d);
        }
        v
    }

    #[test]
    fn pcap_micro_nano_and_big_endian() {
        for (nanos, be) in [(false, false), (true, false), (false, true), (true, true)] {
            let b = pcap_bytes(nanos, be, &[(10, 5, b"abc"), (11, 7, b"defg")]);
            let t = write_tmp(&b);
            let f = CaptureFile::open(&t.0).unwrap();
            let frames: Vec<_> = f.frames().collect();
            assert_eq!(frames.len(), 2);
            let mul = if nanos { 1 } else { 1000 };
            assert_eq!(frames[0].ts, 10 * 1_000_000_000 + 5 * mul);
            assert_eq!(frames[1].data, b"defg");
            assert_eq!(frames[0].link_type, 1);
        }
    }

    #[test]
    fn truncated_pcap_keeps_what_is_there() {
        let mut b = pcap_bytes(false, false, &[(1, 0, b"abcdef"), (2, 0, b"ghijkl")]);
        b.truncate(b.len() - 3);
        let t = write_tmp(&b);
        let f = CaptureFile::open(&t.0).unwrap();
        let mut it = f.frames();
        assert_eq!(it.next().unwrap().data, b"abcdef");
        assert!(it.next().is_none());
        assert!(it.trailer_problem().unwrap().contains("truncated"));
    }

    /// A pcapng file with two interfaces of different link types and resolutions, in big-endian byte order.
    #[test]
    fn pcapng_several_interfaces_big_endian() {
        let mut v = Vec::new();
        let block = |v: &mut Vec<u8>, t: u32, body: &[u8]| {
            let len = 12 + body.len().div_ceil(4) * 4;
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&(len as u32).to_be_bytes());
            v.extend_from_slice(body);
            v.resize(v.len() + (len - 12 - body.len()), 0);
            v.extend_from_slice(&(len as u32).to_be_bytes());
        };
        let mut shb = 0x1a2b_3c4du32.to_be_bytes().to_vec();
        shb.extend_from_slice(&[0, 1, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_be_bytes());
        block(&mut v, 0x0a0d_0d0a, &shb);
        // IDB 0: Ethernet, default µs; IDB 1: raw IP with if_tsresol = 9 (ns).
        block(&mut v, 1, &[0, 1, 0, 0, 0, 0, 0xff, 0xff]);
        let mut idb1 = vec![0, 101, 0, 0, 0, 0, 0xff, 0xff];
        idb1.extend_from_slice(&[0, 9, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut v, 1, &idb1);
        let epb = |iface: u32, ts: u64, data: &[u8]| {
            let mut b = iface.to_be_bytes().to_vec();
            b.extend_from_slice(&((ts >> 32) as u32).to_be_bytes());
            b.extend_from_slice(&(ts as u32).to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(data);
            b
        };
        block(&mut v, 6, &epb(0, 1_500_000, b"eth-frame"));
        block(&mut v, 6, &epb(1, 2_000_000_123, b"ip"));
        block(&mut v, 6, &epb(7, 1, b"unknown interface: skipped"));
        let t = write_tmp(&v);
        let f = CaptureFile::open(&t.0).unwrap();
        let frames: Vec<_> = f.frames().collect();
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].link_type, frames[0].ts, frames[0].data), (1, 1_500_000_000, &b"eth-frame"[..]));
        assert_eq!((frames[1].link_type, frames[1].ts, frames[1].interface), (101, 2_000_000_123, 1));
    }

    #[test]
    fn tsresol_variants() {
        let mut o = vec![9, 0, 1, 0, 9, 0, 0, 0];
        assert_eq!(parse_tsresol(&o, false), Some(1_000_000_000));
        o[4] = 0x80 | 20;
        assert_eq!(parse_tsresol(&o, false), Some(1 << 20));
        assert_eq!(ticks_to_nanos(3 << 20, 1 << 20), 3_000_000_000);
    }
}
