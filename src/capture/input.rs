//! What `-r` reads: a capture file on disk, a gzip- or zstd-compressed one, or a pcap/pcapng stream on
//! standard input (`-r -`), told apart by their first bytes rather than by their names.
//!
//! A plain file on disk is memory-mapped ([`CaptureFile`], the fast path). Everything else is a stream: read
//! (and decompressed) into a buffer of a few MiB, parsed window by window with the same parser, and the
//! unfinished record at the end of a window moved to the front before the next read. Memory stays at that
//! buffer however long the stream is; it grows only for a single record larger than itself, up to the
//! parser's limits (1 MiB for a pcap record, 64 MiB for a pcapng block).

use std::fs::File;
use std::io::{IsTerminal, Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::pcapfile::{detect, CaptureFile, Detected, Format, Frame, Frames, ParseState, PcapError};
use super::progress::Progress;

/// What a stream is read in: large enough that the per-window work is lost in the noise.
const STREAM_BUFFER: usize = 4 << 20;

/// A capture to read with `-r`: a file (plain or compressed) or standard input.
pub struct CaptureInput {
    name: PathBuf,
    kind: Kind,
    /// Bytes the progress bar counts towards (the file's size on disk, compressed or not), when known.
    total: Option<u64>,
    progress: bool,
    /// Set by a signal handler: reading stops within 1024 frames (see `stop_on`).
    stop: Option<&'static AtomicBool>,
}

enum Kind {
    Mapped(CaptureFile),
    Stream(Box<Stream>),
}

/// Fails early, with a clear message, for a path `-r` cannot read: missing, a directory, or `-` on a terminal.
pub fn check(path: &Path) -> Result<(), PcapError> {
    if is_stdin(path) {
        if std::io::stdin().is_terminal() {
            return Err(PcapError::StdinIsTerminal);
        }
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|error| PcapError::Open { path: path.into(), error })?;
    if meta.is_dir() {
        return Err(PcapError::Directory { path: path.into() });
    }
    Ok(())
}

/// What `CaptureInput::open` would refuse, found without mapping or buffering the capture: the first bytes, and
/// for a compressed file the first bytes of what it holds. For the checks before a run starts (the run then
/// opens it once). Standard input is only checked not to be a terminal: reading it would take the run's packets.
pub fn probe(path: &Path) -> Result<(), PcapError> {
    check(path)?;
    if is_stdin(path) {
        return Ok(());
    }
    let file = File::open(path).map_err(|error| PcapError::Open { path: path.into(), error })?;
    let mut head = [0u8; 4];
    let n = read_head_at(&file, &mut head).map_err(|error| PcapError::Read { path: path.into(), error })?;
    let codec = Codec::of(&head[..n]);
    let reader: Box<dyn Read + Send> = Box::new(file);
    let reader = match codec {
        Some(c) => {
            c.decoder(reader).map_err(|error| PcapError::Decompress { path: path.into(), codec: c.name(), error })?
        }
        None => reader,
    };
    // A buffer just big enough for the format check: the same check the run's stream makes.
    Stream::start(path, codec, reader, Arc::new(AtomicU64::new(0)), 64)?;
    Ok(())
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl CaptureInput {
    /// Opens `path` (`-` is standard input) and reads enough of it to know its format.
    pub fn open(path: &Path) -> Result<Self, PcapError> {
        check(path)?;
        let stdin = is_stdin(path);
        let name: PathBuf = if stdin { "standard input".into() } else { path.into() };
        let file = if stdin {
            // A File on descriptor 0: a redirected file is then mapped like any other.
            let fd = std::io::stdin().as_fd().try_clone_to_owned();
            File::from(fd.map_err(|error| PcapError::Read { path: name.clone(), error })?)
        } else {
            File::open(path).map_err(|error| PcapError::Open { path: name.clone(), error })?
        };
        let meta = file.metadata().map_err(|error| PcapError::Read { path: name.clone(), error })?;
        if meta.is_dir() {
            return Err(PcapError::Directory { path: name });
        }
        // A file can be mapped from its start; standard input only when nothing has read from it yet.
        let mappable = meta.is_file() && (!stdin || (&file).stream_position().is_ok_and(|p| p == 0));
        let raw = Arc::new(AtomicU64::new(0));
        let (codec, reader): (Option<Codec>, Box<dyn Read + Send>) = if mappable {
            let mut head = [0u8; 4];
            let n = read_head_at(&file, &mut head).map_err(|error| PcapError::Read { path: name.clone(), error })?;
            let Some(codec) = Codec::of(&head[..n]) else {
                let map = CaptureFile::map(name.clone(), &file)?;
                return Ok(CaptureInput {
                    name,
                    kind: Kind::Mapped(map),
                    total: Some(meta.len()),
                    progress: false,
                    stop: None,
                });
            };
            (Some(codec), Box::new(Counted { inner: file, n: raw.clone() }))
        } else {
            // A pipe or a device: the first bytes, once read, are put back in front of the rest.
            let mut file = file;
            let mut head = [0u8; 4];
            let n = read_head(&mut file, &mut head).map_err(|error| PcapError::Read { path: name.clone(), error })?;
            let codec = Codec::of(&head[..n]);
            let chained = std::io::Cursor::new(head[..n].to_vec()).chain(file);
            (codec, Box::new(Counted { inner: chained, n: raw.clone() }))
        };
        let total = mappable.then_some(meta.len());
        let reader = match codec {
            Some(c) => c.decoder(reader).map_err(|error| PcapError::Decompress {
                path: name.clone(),
                codec: c.name(),
                error,
            })?,
            None => reader,
        };
        let stream = Stream::start(&name, codec, reader, raw, STREAM_BUFFER)?;
        Ok(CaptureInput { name, kind: Kind::Stream(Box::new(stream)), total, progress: false, stop: None })
    }

    /// What to call this input in messages: the path, or "standard input".
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Shows a progress bar on standard error while reading, when standard error is a terminal.
    pub fn show_progress(&mut self) {
        self.progress = std::io::stderr().is_terminal();
    }

    /// Stops reading once `flag` is set (Ctrl-C on a run that must report what it leaves undone); `for_each`
    /// then says it was interrupted.
    pub fn stop_on(&mut self, flag: &'static AtomicBool) {
        self.stop = Some(flag);
    }

    /// Hands every frame to `f`, in order; returns why reading stopped early, if it did (a truncated or corrupt
    /// tail, a compressed stream that breaks off): what came before it was handed over.
    pub fn for_each(&mut self, mut f: impl FnMut(Frame<'_>)) -> Option<String> {
        let mut progress = if self.progress { Progress::on_terminal(self.total) } else { Progress::hidden() };
        progress.stop = self.stop;
        match &mut self.kind {
            Kind::Mapped(file) => {
                let mut frames = file.frames();
                let mut n = 0u64;
                while let Some(frame) = frames.next() {
                    f(frame);
                    n += 1;
                    // A look at the clock every 1024 frames; the bar itself redraws at most every 100 ms.
                    if n.is_multiple_of(1024) {
                        progress.update(n, frames.position());
                        if progress.stopped() {
                            return Some(INTERRUPTED.into());
                        }
                    }
                }
                frames.trailer_problem().map(str::to_string)
            }
            Kind::Stream(s) => s.for_each(&mut progress, &mut f),
        }
    }
}

const INTERRUPTED: &str = "interrupted (SIGINT/SIGTERM) before the end of the file";

/// The compressions `-r` reads, by their magic bytes.
#[derive(Clone, Copy)]
enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    fn of(head: &[u8]) -> Option<Codec> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    fn decoder(self, r: Box<dyn Read + Send>) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            // Multi-member: `cat a.gz b.gz` and pigz's output are one stream for gzip -d too.
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// Counts the bytes taken from the file or pipe (before decompression): the progress bar's position.
struct Counted<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// The first bytes of a file without moving its offset (it may be mapped next).
fn read_head_at(file: &File, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first bytes of a pipe: a pipe hands over what is there, which may be fewer than asked for.
fn read_head(r: &mut impl Read, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A capture read as a stream: `buf[start..end]` holds what is read and not yet parsed.
struct Stream {
    name: PathBuf,
    codec: Option<Codec>,
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Offset of `buf[0]` in the (decompressed) capture.
    offset: u64,
    eof: bool,
    /// The read error that ended the stream early (a gzip file cut short, corrupt compressed data).
    cut: Option<std::io::Error>,
    format: Format,
    state: ParseState,
    /// Bytes taken from the file or pipe so far (compressed bytes for a compressed file).
    raw: Arc<AtomicU64>,
}

impl Stream {
    fn start(
        name: &Path,
        codec: Option<Codec>,
        reader: Box<dyn Read + Send>,
        raw: Arc<AtomicU64>,
        buffer: usize,
    ) -> Result<Self, PcapError> {
        let mut s = Stream {
            name: name.into(),
            codec,
            reader,
            buf: vec![0; buffer.max(24)],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            cut: None,
            format: Format::Pcapng,
            state: ParseState::default(),
            raw,
        };
        // The pcap file header is 24 bytes; a pcapng section header is a block the parser reads.
        while s.end < 24 && !s.eof {
            s.fill();
        }
        if let Some(error) = s.cut.take() {
            return Err(match codec {
                Some(c) => PcapError::Decompress { path: name.into(), codec: c.name(), error },
                None => PcapError::Read { path: name.into(), error },
            });
        }
        let head = &s.buf[..s.end];
        s.format = match detect(head) {
            Detected::Capture(f) => f,
            Detected::TooShort => return Err(PcapError::TooShort { path: name.into() }),
            Detected::Unknown => {
                let what = describe_head(head);
                return Err(match codec {
                    Some(c) => PcapError::BadMagicInside { path: name.into(), codec: c.name(), what },
                    None => PcapError::BadMagic { path: name.into(), what },
                });
            }
        };
        s.start = s.format.first_record().min(s.end);
        Ok(s)
    }

    /// One read into the free end of the buffer, grown first when it is full of one unfinished record. A
    /// single read, not a full buffer: a live `tcpdump -w -` is processed as it comes.
    fn fill(&mut self) {
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.eof = true;
                    self.cut = Some(e);
                }
            }
            return;
        }
    }

    fn for_each(&mut self, progress: &mut Progress, f: &mut impl FnMut(Frame<'_>)) -> Option<String> {
        let mut n = 0u64;
        loop {
            let state = std::mem::take(&mut self.state);
            let more = !self.eof;
            let mut frames = Frames::window(&self.buf[..self.end], self.start, self.format, state, self.offset, more);
            for frame in frames.by_ref() {
                f(frame);
                n += 1;
                if n.is_multiple_of(1024) {
                    progress.update(n, self.raw.load(Ordering::Relaxed));
                    if progress.stopped() {
                        return Some(INTERRUPTED.into());
                    }
                }
            }
            let end = frames.end();
            self.state = end.state;
            progress.update(n, self.raw.load(Ordering::Relaxed));
            if !end.starved {
                return self.ending(end.trailer);
            }
            // The unfinished record moves to the front; the read goes after it.
            self.buf.copy_within(end.pos..self.end, 0);
            self.offset += end.pos as u64;
            self.end -= end.pos;
            self.start = 0;
            self.fill();
        }
    }

    /// Why the stream ended early: the read error first (a record cut short is only its consequence).
    fn ending(&mut self, trailer: Option<String>) -> Option<String> {
        let Some(cut) = self.cut.take() else { return trailer };
        let at = self.offset + self.end as u64;
        Some(match self.codec {
            Some(c) => format!("the {} stream breaks off after {at} bytes of capture: {cut}", c.name()),
            None => format!("reading {} failed after {at} bytes: {cut}", self.name.display()),
        })
    }
}

/// What the first bytes of something that is not a capture look like, for the error message.
pub(crate) fn describe_head(head: &[u8]) -> String {
    const KNOWN: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "it is gzip-compressed"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "it is zstd-compressed"),
        (b"BZh", "it is bzip2-compressed, which voxtap does not read: bzip2 -dc FILE | voxtap -r -"),
        (b"\xfd7zXZ\x00", "it is xz-compressed, which voxtap does not read: xz -dc FILE | voxtap -r -"),
        (&[0x04, 0x22, 0x4d, 0x18], "it is lz4-compressed, which voxtap does not read: lz4 -dc FILE | voxtap -r -"),
        (b"PK\x03\x04", "it is a zip archive: unpack it first"),
        (b"\x7fELF", "it is an executable (ELF)"),
    ];
    if head.is_empty() {
        return "it is empty".into();
    }
    if let Some((_, what)) = KNOWN.iter().find(|(magic, _)| head.starts_with(magic)) {
        return (*what).into();
    }
    let sample = &head[..head.len().min(64)];
    let text = match std::str::from_utf8(sample) {
        Ok(t) => Some(t),
        // Cut in the middle of a character at the sample's end: still text.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&sample[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    if let Some(t) = text.filter(|t| !t.is_empty() && t.chars().all(|c| !c.is_control() || "\t\r\n".contains(c))) {
        let line: String = t.lines().next().unwrap_or("").chars().take(40).collect();
        return format!("it begins with text {line:?}");
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("it begins with bytes {}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pipe at its slowest: a few bytes per read, so records keep crossing window ends.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.step = self.step % 7 + 1;
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for (i, p) in packets.iter().enumerate() {
            for x in [i as u32, 0, p.len() as u32, p.len() as u32] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(p);
        }
        v
    }

    fn block(v: &mut Vec<u8>, t: u32, body: &[u8]) {
        let len = 12 + body.len().div_ceil(4) * 4;
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&(len as u32).to_le_bytes());
        v.extend_from_slice(body);
        v.resize(v.len() + (len - 12 - body.len()), 0);
        v.extend_from_slice(&(len as u32).to_le_bytes());
    }

    /// Two sections, each with its own interface, one enhanced packet block per packet.
    fn pcapng(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        for (section, half) in packets.chunks(packets.len().div_ceil(2)).enumerate() {
            let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
            shb.extend_from_slice(&[1, 0, 0, 0]);
            shb.extend_from_slice(&u64::MAX.to_le_bytes());
            block(&mut v, 0x0a0d_0d0a, &shb);
            block(&mut v, 1, &[if section == 0 { 1 } else { 101 }, 0, 0, 0, 0, 0, 0, 0]);
            for (i, p) in half.iter().enumerate() {
                let mut epb = vec![0; 8];
                epb.extend_from_slice(&(i as u32 * 1_000_000).to_le_bytes());
                epb.extend_from_slice(&(p.len() as u32).to_le_bytes());
                epb.extend_from_slice(&(p.len() as u32).to_le_bytes());
                epb.extend_from_slice(p);
                block(&mut v, 6, &epb);
            }
        }
        v
    }

    fn packets() -> Vec<Vec<u8>> {
        // Sizes around and above the 64-byte test buffer: some records need it grown.
        (0..60u32).map(|i| (0..(i * 37 % 300) + 1).map(|b| (b ^ i) as u8).collect()).collect()
    }

    fn stream_of(data: Vec<u8>, codec: Option<Codec>) -> Result<Stream, PcapError> {
        let raw = Arc::new(AtomicU64::new(0));
        let trickle: Box<dyn Read + Send> = Box::new(Trickle { data, at: 0, step: 0 });
        let reader = match codec {
            Some(c) => c.decoder(trickle).unwrap(),
            None => trickle,
        };
        Stream::start(Path::new("test"), codec, reader, raw, 64)
    }

    fn collect(s: &mut Stream) -> (Vec<(u16, Vec<u8>)>, Option<String>) {
        let mut got = Vec::new();
        let trailer = s.for_each(&mut Progress::hidden(), &mut |f: Frame<'_>| got.push((f.link_type, f.data.to_vec())));
        (got, trailer)
    }

    #[test]
    fn a_trickling_stream_gives_every_frame() {
        let pk = packets();
        let (got, trailer) = collect(&mut stream_of(pcap(&pk), None).unwrap());
        assert_eq!(trailer, None);
        assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), pk);

        let (got, trailer) = collect(&mut stream_of(pcapng(&pk), None).unwrap());
        assert_eq!(trailer, None);
        assert_eq!(got.len(), pk.len());
        // The second section's interface is raw IP: the state crossed the windows with the stream.
        assert_eq!((got[0].0, got[59].0), (1, 101));
        assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), pk);
    }

    #[test]
    fn a_cut_gzip_stream_gives_what_came_before() {
        let pk = packets();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&pcap(&pk)).unwrap();
        let mut gz = gz.finish().unwrap();
        let (got, trailer) = collect(&mut stream_of(gz.clone(), Some(Codec::Gzip)).unwrap());
        assert_eq!((got.len(), trailer), (pk.len(), None));
        gz.truncate(gz.len() * 2 / 3);
        let (got, trailer) = collect(&mut stream_of(gz, Some(Codec::Gzip)).unwrap());
        assert!(!got.is_empty() && got.len() < pk.len(), "{} frames", got.len());
        assert!(trailer.unwrap().contains("gzip stream breaks off"));
    }

    #[test]
    fn a_huge_pcapng_block_in_a_stream_is_corruption() {
        let mut v = pcapng(&packets()[..2]);
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
        huge.extend_from_slice(&[0; 32]);
        v.extend_from_slice(&huge);
        let (got, trailer) = collect(&mut stream_of(v, None).unwrap());
        assert_eq!(got.len(), 2);
        assert!(trailer.unwrap().contains("more than the 64 MiB"));
    }

    #[test]
    fn what_is_inside_a_compressed_stream_is_checked() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello, this is text and not packets").unwrap();
        let err = stream_of(gz.finish().unwrap(), Some(Codec::Gzip)).err().unwrap().to_string();
        assert!(err.contains("gzip-compressed, but what it holds is not a pcap or pcapng file"), "{err}");
        let z = zstd::encode_all(&pcap(&packets())[..], 1).unwrap();
        let (got, trailer) = collect(&mut stream_of(z, Some(Codec::Zstd)).unwrap());
        assert_eq!((got.len(), trailer), (60, None));
    }

    #[test]
    fn describes_what_is_not_a_capture() {
        assert_eq!(describe_head(b"hello world\nmore"), "it begins with text \"hello world\"");
        assert!(describe_head(b"BZh91AY").contains("bzip2"));
        assert_eq!(describe_head(&[0, 1, 2, 3, 0xff]), "it begins with bytes 00 01 02 03 ff");
        assert_eq!(describe_head(b""), "it is empty");
        // A character cut at the end of the sample is still text.
        let mut t = "é".repeat(40).into_bytes();
        t.truncate(65);
        assert!(describe_head(&t).starts_with("it begins with text"));
    }
}
