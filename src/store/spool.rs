//! Per-call pcap files in VoIPmonitor's spool layout:
//! `spooldir/YYYY-MM-DD/HH/MM/{SIP,RTP}/<Call-ID made file-safe>.pcap` (time = call start, local or UTC).
//!
//! Owners buffer a call's packets as pcap records and hand full buffers (and the last one when the call ends)
//! to the spool writer thread, so the fast side never touches the disk and no file stays open between
//! chunks: the number of open files is bounded by one, whatever the number of calls. With `tar = yes` each
//! finished file becomes an entry of its minute's archive (see `tar.rs`).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;
use tracing::warn;

use crate::config::{Compress, Config};
use crate::store::perms;
use crate::store::tar::{self, Archives};
use crate::time::{civil, Nanos};

const CHUNK: usize = 64 * 1024;
const PCAP_SNAPLEN: u32 = 262_144;

/// Longest file base name: room is left for `.pcap`, the spill file's `.` and `.part`, and the `.N` of a file kept
/// aside (see `create_fresh`), within the 255 bytes a Linux file name holds; `cdr_next.fbasename` holds 255.
const NAME_MAX: usize = 200;
/// Hex digits of the Call-ID's SHA-256 appended to a name that is not the Call-ID itself (64 bits: a second
/// Call-ID with another call's name would need a second preimage).
const HASH_HEX: usize = 16;

/// Characters kept in a file name as they are (VoIPmonitor's fbasename rule); everything else becomes `_`.
fn keep(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.' | '@')
}

/// The file base name of a call (`cdr_next.fbasename`): the Call-ID itself when it is made only of the characters
/// VoIPmonitor keeps (as VoIPmonitor names it, so its GUI and scripts find the usual calls by their Call-ID), else
/// the Call-ID with the others replaced by `_`, cut to fit, then `_` and a hash of the raw Call-ID.
///
/// Distinct Call-IDs get distinct names: a name without a hash never holds `_` (the Call-ID would have held a
/// character outside the kept set), a hashed name always does, and two hashed names are equal only when their
/// Call-IDs' hashes are. Replacing alone made `a/b@x` and `a+b@x` one file, where the second call overwrote the
/// first one's packets; cutting alone did the same to long Call-IDs that differ past the cut.
pub fn file_safe(callid: &str) -> String {
    let plain = callid.len() <= NAME_MAX && callid != "." && callid != ".." && !callid.is_empty();
    if plain && callid.chars().all(keep) {
        return callid.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(callid.as_bytes());
    let mut s: String = callid.chars().map(|c| if keep(c) { c } else { '_' }).take(NAME_MAX - 1 - HASH_HEX).collect();
    s.push('_');
    for b in &digest[..HASH_HEX / 2] {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `YYYY-MM-DD/HH/MM` of the call start.
pub fn minute_dir(start: Nanos, utc: bool) -> PathBuf {
    let c = civil(start, utc);
    PathBuf::from(format!("{:04}-{:02}-{:02}", c.year, c.month, c.day))
        .join(format!("{:02}", c.hour))
        .join(format!("{:02}", c.minute))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Sip,
    Rtp,
}

impl FileKind {
    fn dir(self) -> &'static str {
        match self {
            FileKind::Sip => "SIP",
            FileKind::Rtp => "RTP",
        }
    }
}

/// A piece of a call's file, sent from an owner to the spool writer.
pub struct Chunk {
    pub path: PathBuf,
    pub kind: FileKind,
    pub link_type: u16,
    pub data: Vec<u8>,
    /// The call ended: this is the file's last piece.
    pub last: bool,
}

#[derive(Default)]
struct FileBuf {
    link_type: Option<u16>,
    buf: Vec<u8>,
    path: Option<PathBuf>,
    packets: u32,
    /// (time, length, content hash) of the last SIP frame written: a TCP segment that carried the end of one SIP
    /// message and the start of the next is handed over with both, but belongs in the file once.
    last: Option<(Nanos, usize, u64)>,
}

/// A call's spool buffers (held by the owner, inside the call).
#[derive(Default)]
pub struct CallSpool {
    sip: FileBuf,
    rtp: FileBuf,
    pub mismatched_link: u32,
}

impl CallSpool {
    /// Adds one frame as a pcap record; returns a chunk to send when the buffer is full.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        kind: FileKind,
        base: &Path,
        start: Nanos,
        utc: bool,
        fbasename: &str,
        ts: Nanos,
        link_type: u16,
        frame: &[u8],
        header_only: Option<usize>,
    ) -> Option<Chunk> {
        let f = match kind {
            FileKind::Sip => &mut self.sip,
            FileKind::Rtp => &mut self.rtp,
        };
        if f.path.is_none() {
            f.path = Some(base.join(minute_dir(start, utc)).join(kind.dir()).join(format!("{fbasename}.pcap")));
        }
        if kind == FileKind::Sip {
            use std::hash::{BuildHasher, BuildHasherDefault};
            let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(frame);
            let id = (ts, frame.len(), h);
            if f.last == Some(id) {
                return None;
            }
            f.last = Some(id);
        }
        match f.link_type {
            None => f.link_type = Some(link_type),
            Some(l) if l != link_type => {
                self.mismatched_link += 1;
                return None;
            }
            _ => {}
        }
        let cap = header_only.map(|h| h.min(frame.len())).unwrap_or(frame.len());
        let secs = ts.div_euclid(1_000_000_000);
        let micros = ts.rem_euclid(1_000_000_000) / 1000;
        f.buf.extend_from_slice(&(secs as u32).to_le_bytes());
        f.buf.extend_from_slice(&(micros as u32).to_le_bytes());
        f.buf.extend_from_slice(&(cap as u32).to_le_bytes());
        f.buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.buf.extend_from_slice(&frame[..cap]);
        f.packets += 1;
        (f.buf.len() >= CHUNK).then(|| take(f, kind, false)).flatten()
    }

    /// The call ended: the final pieces of its files.
    pub fn finish(&mut self) -> Vec<Chunk> {
        [take(&mut self.sip, FileKind::Sip, true), take(&mut self.rtp, FileKind::Rtp, true)]
            .into_iter()
            .flatten()
            .collect()
    }
}

fn take(f: &mut FileBuf, kind: FileKind, last: bool) -> Option<Chunk> {
    let path = f.path.clone()?;
    let link_type = f.link_type?;
    Some(Chunk { path, kind, link_type, data: std::mem::take(&mut f.buf), last })
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SpoolStats {
    pub files: u64,
    /// pcap bytes written, and what they took on disk (less with compression).
    pub bytes: u64,
    pub bytes_on_disk: u64,
    pub errors: u64,
    /// Files found under a new file's name and moved aside to `NAME.N` (see `create_fresh`).
    pub kept_aside: u64,
}

/// How the spool writer lays files down.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpoolOptions {
    /// Per-file compression of SIP and RTP pcaps (`pcap_dump_zip_sip`, `pcap_dump_zip_rtp`).
    pub sip: Compress,
    pub rtp: Compress,
    /// `tar = yes`: files go into per-minute archives, themselves compressed as given.
    pub tar: Option<TarOptions>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TarOptions {
    pub sip: Compress,
    pub rtp: Compress,
}

impl SpoolOptions {
    pub fn from_config(cfg: &Config) -> Self {
        if !cfg.tar {
            return SpoolOptions { sip: cfg.pcap_dump_zip_sip, rtp: cfg.pcap_dump_zip_rtp, tar: None };
        }
        // VoIPmonitor's rules: a compressed SIP archive holds plain pcaps; RTP pcaps compressed one by one go into
        // a plain archive. Nothing is compressed twice.
        let sip = if cfg.tar_compress_sip == Compress::None { cfg.pcap_dump_zip_sip } else { Compress::None };
        let tar_rtp = if cfg.pcap_dump_zip_rtp == Compress::None { cfg.tar_compress_rtp } else { Compress::None };
        SpoolOptions {
            sip,
            rtp: cfg.pcap_dump_zip_rtp,
            tar: Some(TarOptions { sip: cfg.tar_compress_sip, rtp: tar_rtp }),
        }
    }
}

/// One gzip member holding `data`: a file made of such members is one valid gzip stream (RFC 1952 allows
/// several members), readable up to its last complete chunk at any time, by tshark and zcat alike.
fn gzip_member(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), flate2::Compression::fast());
    e.write_all(data)?;
    e.finish()
}

/// Where a call file's first pieces wait, in tar mode, until the call ends and the whole file becomes one entry:
/// nothing of a long call is held in memory, and the archive gets one entry per file that any tar reader extracts
/// whole (rather than VoIPmonitor's `name#1`, `name#2`, … pieces).
fn spill_path(file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!(".{name}.part"))
}

struct Writer {
    opts: SpoolOptions,
    stats: SpoolStats,
    /// Files (per-file mode) or spill files (tar mode) that have their first piece.
    started: HashSet<PathBuf>,
    archives: Archives,
}

impl Writer {
    /// A piece as it goes to disk: the pcap header first on a new file, compressed per file if asked.
    fn piece(&mut self, c: &Chunk, fresh: bool) -> std::io::Result<Vec<u8>> {
        let how = match c.kind {
            FileKind::Sip => self.opts.sip,
            FileKind::Rtp => self.opts.rtp,
        };
        let mut plain = Vec::new();
        if fresh {
            plain.extend_from_slice(&pcap_header(c.link_type));
            self.stats.bytes += 24;
        }
        plain.extend_from_slice(&c.data);
        Ok(match how {
            Compress::None => plain,
            Compress::Gzip => gzip_member(&plain)?,
            // One zstd frame per piece: concatenated frames are one valid zstd stream (RFC 8878).
            Compress::Zstd => zstd::bulk::compress(&plain, 1)?,
        })
    }

    /// Writes a piece: the first one of a file into a file of its own (`create_fresh`), later ones at its end.
    fn append(&mut self, path: &Path, fresh: bool, bytes: &[u8]) -> std::io::Result<()> {
        let mut f = if fresh {
            let (f, kept) = create_fresh(path)?;
            self.stats.kept_aside += u64::from(kept);
            f
        } else {
            let open = || OpenOptions::new().append(true).open(path);
            match open() {
                // cleanspool may have taken the minute folder of a long call; its later pieces still get a file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        perms::create_dir_all(dir)?;
                    }
                    perms::open(OpenOptions::new().create(true).append(true), path)?
                }
                r => r?,
            }
        };
        f.write_all(bytes)
    }

    fn write_file(&mut self, c: &Chunk, fresh: bool) -> std::io::Result<()> {
        let out = self.piece(c, fresh)?;
        self.append(&c.path, fresh, &out)?;
        self.stats.bytes_on_disk += out.len() as u64;
        if fresh {
            self.stats.files += 1;
        }
        Ok(())
    }

    fn write_tar(&mut self, c: &Chunk, fresh: bool, tar: TarOptions) -> std::io::Result<()> {
        let out = self.piece(c, fresh)?;
        let spill = spill_path(&c.path);
        if !c.last {
            return self.append(&spill, fresh, &out);
        }
        let (prefix, how) = match c.kind {
            FileKind::Sip => ("sip", tar.sip),
            FileKind::Rtp => ("rtp", tar.rtp),
        };
        let archive = tar::archive_path(&c.path, prefix, how)
            .ok_or_else(|| std::io::Error::other("the file is not in a spool minute directory"))?;
        let base = c.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = tar::entry_name(&base);
        let mut spilled = if fresh { None } else { Some(File::open(&spill)?) };
        let on_disk =
            self.archives.append(&archive, how, tar::Entry { name: &name, spill: spilled.as_mut(), tail: &out })?;
        if spilled.is_some() {
            fs::remove_file(&spill)?;
        }
        self.stats.bytes_on_disk += on_disk;
        self.stats.files += 1;
        Ok(())
    }
}

/// Creates the file for a call's first piece, never truncating one that is there: that is another call's (the same
/// Call-ID earlier in the same minute) or an earlier run's (a restart, the same capture read again), and is moved
/// aside to `NAME.1` (… `.99`), as archives are (reference §3.2), where the manager's `file_exists` lists it beside
/// the new one. Renaming rather than appending keeps each file a valid pcap whatever the other holds (another
/// link type, compression, or a last record cut short by a crash); giving the new call another name would break
/// the link from its CDR (`fbasename` and the minute of its start name the file). Returns whether a file was moved.
fn create_fresh(path: &Path) -> std::io::Result<(File, bool)> {
    if let Some(dir) = path.parent() {
        perms::create_dir_all(dir)?;
    }
    let mut kept = false;
    // create_new also refuses to follow a symbolic link planted under the name.
    for _ in 0..3 {
        match perms::open(OpenOptions::new().write(true).create_new(true), path) {
            Ok(f) => return Ok((f, kept)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tar::rotate(path)?;
                kept = true;
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file keeps reappearing"))
}

/// The spool writer thread: appends chunks, creating each file with a pcap header on its first chunk.
pub fn run_writer(rx: Receiver<Chunk>, opts: SpoolOptions) -> SpoolStats {
    let mut w = Writer { opts, stats: SpoolStats::default(), started: HashSet::new(), archives: Archives::default() };
    let mut warned = false;
    for c in rx {
        let fresh = !w.started.contains(&c.path);
        let res = match opts.tar {
            None => w.write_file(&c, fresh),
            Some(t) => w.write_tar(&c, fresh, t),
        };
        match res {
            Ok(()) => w.stats.bytes += c.data.len() as u64,
            Err(e) => {
                w.stats.errors += 1;
                if !warned {
                    warn!(path = %c.path.display(), error = %e, "cannot write to the spool");
                    warned = true;
                }
            }
        }
        if c.last {
            w.started.remove(&c.path);
        } else {
            w.started.insert(c.path);
        }
    }
    w.stats
}

fn pcap_header(link_type: u16) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&PCAP_SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&(link_type as u32).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_safe_names() {
        // A Call-ID of kept characters is its own name, as VoIPmonitor names it.
        assert_eq!(file_safe("abc@1.2.3.4"), "abc@1.2.3.4");
        let hashed = |s: &str, head: &str| {
            let n = file_safe(s);
            assert!(n.starts_with(&format!("{head}_")) && n.len() == head.len() + 1 + HASH_HEX, "{s:?} → {n}");
            assert!(n[head.len() + 1..].bytes().all(|b| b.is_ascii_hexdigit()), "{n}");
            n
        };
        hashed("a/b c", "a_b_c");
        hashed("..", "..");
        hashed(".", ".");
        hashed("", "");
        hashed("../../etc", ".._.._etc");
        // `printf 'a/b@x' | sha256sum` begins 3f1ca17413e8dd5d.
        assert_eq!(file_safe("a/b@x"), "a_b@x_3f1ca17413e8dd5d");
        // Call-IDs that replacing alone made one name.
        assert_ne!(file_safe("a/b@x"), file_safe("a+b@x"));
        assert_ne!(file_safe("a_b@x"), file_safe("a/b@x"));
        // A Call-ID spelled like another's hashed name gets its own hash (it holds `_`).
        let forged = file_safe("a/b@x");
        assert_ne!(file_safe(&forged), forged);
        // Long Call-IDs that differ past the cut.
        let long = |c: char| format!("{}{c}", "x".repeat(300));
        assert_ne!(file_safe(&long('1')), file_safe(&long('2')));
        assert_eq!(file_safe(&long('1')).len(), NAME_MAX);
        assert_eq!(file_safe(&"y".repeat(NAME_MAX)), "y".repeat(NAME_MAX));
        assert!(file_safe("é/€").is_ascii());
    }

    #[test]
    fn a_fresh_file_never_truncates_one_that_is_there() {
        let dir = std::env::temp_dir().join(format!("voxtap-fresh-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let p = dir.join("a/b/x.pcap");
        let (mut f, kept) = create_fresh(&p).unwrap();
        assert!(!kept);
        f.write_all(b"first").unwrap();
        let (mut f, kept) = create_fresh(&p).unwrap();
        assert!(kept);
        f.write_all(b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::read(dir.join("a/b/x.pcap.1")).unwrap(), b"first");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn minute_dirs() {
        assert_eq!(minute_dir(1_126_267_345_000_000_000, true), PathBuf::from("2005-09-09/12/02"));
    }
}
