//! The on-disk queue between a producer and a consumer that may be away: the CDR collector and the MySQL
//! writer, or a remote sensor's capture and its link to the central. Nothing is lost while the consumer is away
//! or when voxtap stops or dies: the producer appends every record before the consumer sees it; the consumer
//! reads from its acknowledged position and moves that position on only once the records are safe elsewhere.
//!
//! Layout in the queue folder: segment files `NNNNNNNNNNNNNNNN.cdrq` (append-only records: u32 length, u32
//! CRC-32 of the payload, both little-endian, then the CDR's JSON) and `ack` (`SEGMENT OFFSET`, replaced
//! atomically). Fully acknowledged segments are deleted. A torn record at the end of a segment (a crash in the
//! middle of a write) is cut off when the queue is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::perms;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// A record longer than this is corruption, not a CDR.
const MAX_RECORD: u32 = 16 << 20;

/// CRC-32 (IEEE 802.3, as zlib computes it).
pub fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.cdrq"))
}

/// Segment numbers present, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".cdrq")?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// A position in the queue: segment and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub seg: u64,
    pub off: u64,
}

fn read_ack(dir: &Path) -> Option<Pos> {
    let s = fs::read_to_string(dir.join("ack")).ok()?;
    let mut it = s.split_whitespace();
    Some(Pos { seg: it.next()?.parse().ok()?, off: it.next()?.parse().ok()? })
}

/// Records read from a segment: each payload with the offset just past it.
type Records = Vec<(Vec<u8>, u64)>;

/// Reads the valid records of a segment from `off`, and returns where valid data ends and whether a corrupt
/// record stopped the scan (else a torn one, or the end). Stops at a torn or corrupt record.
fn scan(file: &mut File, mut off: u64, max: usize) -> io::Result<(Records, u64, bool)> {
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(off))?;
    let mut out = Vec::new();
    let mut r = io::BufReader::new(file);
    let mut corrupt = false;
    while out.len() < max && off + 8 <= len {
        let mut h = [0u8; 8];
        r.read_exact(&mut h)?;
        let n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        // The producer never writes an empty record: zeros are a damaged or unwritten area.
        if n == 0 || n > MAX_RECORD {
            corrupt = true;
            break;
        }
        if off + 8 + n as u64 > len {
            break;
        }
        let mut p = vec![0u8; n as usize];
        r.read_exact(&mut p)?;
        if crc32(&p) != crc {
            corrupt = true;
            break;
        }
        off += 8 + n as u64;
        out.push((p, off));
    }
    Ok((out, off, corrupt))
}

/// The producer's end: appends CDRs.
pub struct Appender {
    dir: PathBuf,
    seq: u64,
    file: File,
    len: u64,
    /// Held open with an exclusive lock: two processes appending to one queue would corrupt it.
    _lock: File,
}

/// Locks the queue folder for this process, or says which folder is in use.
fn lock(dir: &Path) -> io::Result<File> {
    let f = perms::open(OpenOptions::new().create(true).truncate(false).write(true), &dir.join("lock"))?;
    if crate::os::try_lock_exclusive(&f).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "the queue {} is in use by another voxtap: give each instance its own spooldir (or cdr_queue_dir / link_queue_dir)",
                dir.display()
            ),
        ));
    }
    Ok(f)
}

/// What opening the queue found.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenReport {
    /// Bytes of a torn last record cut off.
    pub torn_bytes: u64,
    /// CDRs waiting from an earlier run (counted on open).
    pub pending: u64,
}

impl Appender {
    /// Opens (creating) the queue folder; repairs a torn tail; appends go to a new segment.
    pub fn open(dir: &Path) -> io::Result<(Appender, OpenReport)> {
        perms::create_dir_all(dir)?;
        let lock = lock(dir)?;
        let segs = segments(dir)?;
        let mut report = OpenReport::default();
        let ack = read_ack(dir).unwrap_or_default();
        for &s in &segs {
            let mut f = OpenOptions::new().read(true).write(true).open(segment_path(dir, s))?;
            let from = if s == ack.seg { ack.off } else { 0 };
            if s < ack.seg {
                continue;
            }
            let mut end = from;
            loop {
                let (recs, e, corrupt) = scan(&mut f, end, 4096)?;
                report.pending += recs.len() as u64;
                end = e;
                if recs.is_empty() || corrupt {
                    break;
                }
            }
            let len = f.metadata()?.len();
            if end < len && s == *segs.last().unwrap_or(&s) {
                // The segment being written when voxtap stopped: whatever follows the last whole record is a
                // write cut short (or never flushed) by a crash, and goes.
                report.torn_bytes += len - end;
                f.set_len(end)?;
            }
        }
        let seq = segs.last().map_or(1, |s| s + 1);
        let file = perms::open(OpenOptions::new().create(true).append(true), &segment_path(dir, seq))?;
        Ok((Appender { dir: dir.to_path_buf(), seq, file, len: 0, _lock: lock }, report))
    }

    /// Appends one CDR; it is in the page cache (safe from a crash of voxtap) when this returns.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.len > SEGMENT_BYTES {
            self.file.sync_data()?;
            self.seq += 1;
            self.file = perms::open(OpenOptions::new().create(true).append(true), &segment_path(&self.dir, self.seq))?;
            self.len = 0;
        }
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        self.file.write_all(&rec)?;
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Forces what was appended to the disk (safe from a power loss).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The writer's end: reads records from the acknowledged position on.
pub struct Reader {
    dir: PathBuf,
    pos: Pos,
    file: Option<File>,
    /// Records skipped because they were corrupt (a damaged disk, not a crash).
    pub corrupt: u64,
}

impl Reader {
    pub fn open(dir: &Path) -> io::Result<Reader> {
        let segs = segments(dir)?;
        let pos = match read_ack(dir) {
            Some(p) if segs.contains(&p.seg) => p,
            Some(p) => Pos { seg: segs.iter().copied().find(|s| *s > p.seg).unwrap_or(p.seg), off: 0 },
            None => Pos { seg: segs.first().copied().unwrap_or(1), off: 0 },
        };
        Ok(Reader { dir: dir.to_path_buf(), pos, file: None, corrupt: 0 })
    }

    /// Up to `max` records after the read position, each with the position just past it.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<(Vec<u8>, Pos)>> {
        let mut out = Vec::new();
        loop {
            if self.file.is_none() {
                match File::open(segment_path(&self.dir, self.pos.seg)) {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // The producer has not created it yet, or a later one exists: move on if so.
                        match segments(&self.dir)?.into_iter().find(|s| *s > self.pos.seg) {
                            Some(next) => {
                                self.pos = Pos { seg: next, off: 0 };
                                continue;
                            }
                            None => return Ok(out),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(f) = self.file.as_mut() else { return Ok(out) };
            let (recs, end, corrupt) = scan(f, self.pos.off, max - out.len())?;
            let seg = self.pos.seg;
            for (p, off) in recs {
                out.push((p, Pos { seg, off }));
            }
            self.pos.off = end;
            if out.len() >= max {
                return Ok(out);
            }
            // At the end of this segment: a later segment means this one is finished (the producer moved on).
            let later = segments(&self.dir)?.into_iter().find(|s| *s > seg);
            match later {
                Some(next) => {
                    if corrupt || f.metadata()?.len() > end {
                        // Unreadable rest of a finished segment: skip it, counted.
                        self.corrupt += 1;
                    }
                    self.pos = Pos { seg: next, off: 0 };
                    self.file = None;
                }
                None => return Ok(out),
            }
        }
    }
}

/// Records up to `pos` are stored: persist the position and delete finished segments before it.
pub fn ack(dir: &Path, pos: Pos) -> io::Result<()> {
    let tmp = dir.join("ack.tmp");
    perms::write_new(&tmp, format!("{} {}\n", pos.seg, pos.off).as_bytes())?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join("ack"))?;
    for s in segments(dir)? {
        if s < pos.seg {
            let _ = fs::remove_file(segment_path(dir, s));
        }
    }
    Ok(())
}

/// Bytes waiting in the queue (from the acknowledged position on): what a bound on its size is checked against.
pub fn pending_bytes(dir: &Path) -> u64 {
    let ack = read_ack(dir).unwrap_or_default();
    segments(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| *s >= ack.seg)
        .map(|s| {
            let len = fs::metadata(segment_path(dir, s)).map(|m| m.len()).unwrap_or(0);
            if s == ack.seg {
                len.saturating_sub(ack.off)
            } else {
                len
            }
        })
        .sum()
}

/// Records waiting in the queue (from the acknowledged position on): what an operator is told is left. Reads
/// the whole backlog, so it is for the end of a run, not for every append.
pub fn pending_records(dir: &Path) -> io::Result<u64> {
    let mut r = Reader::open(dir)?;
    let mut n = 0;
    loop {
        let got = r.read(4096)?.len() as u64;
        if got == 0 {
            return Ok(n);
        }
        n += got;
    }
}

/// The queue's identity (random, made on first use and kept in the folder): positions are only comparable
/// within one queue, so a consumer that remembers positions keys them by this.
pub fn queue_id(dir: &Path) -> io::Result<String> {
    let p = dir.join("id");
    if let Ok(s) = fs::read_to_string(&p) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    perms::create_dir_all(dir)?;
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let tmp = dir.join("id.tmp");
    perms::write_new(&tmp, id.as_bytes())?;
    fs::rename(&tmp, &p)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("voxtap-q-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn appends_read_ack_and_reopen() {
        let d = tmp("basic");
        let (mut a, rep) = Appender::open(&d).unwrap();
        assert_eq!(rep.pending, 0);
        for i in 0..10 {
            a.append(format!("cdr{i}").as_bytes()).unwrap();
        }
        let mut r = Reader::open(&d).unwrap();
        let got = r.read(4).unwrap();
        assert_eq!(
            got.iter().map(|(p, _)| String::from_utf8_lossy(p).to_string()).collect::<Vec<_>>(),
            ["cdr0", "cdr1", "cdr2", "cdr3"]
        );
        ack(&d, got[3].1).unwrap();
        drop((a, r));
        // A restart finds the 6 unacknowledged records first, then new ones.
        let (mut a, rep) = Appender::open(&d).unwrap();
        assert_eq!(rep.pending, 6);
        a.append(b"new").unwrap();
        let mut r = Reader::open(&d).unwrap();
        let got: Vec<String> =
            r.read(100).unwrap().iter().map(|(p, _)| String::from_utf8_lossy(p).to_string()).collect();
        assert_eq!(got, ["cdr4", "cdr5", "cdr6", "cdr7", "cdr8", "cdr9", "new"]);
        // A second producer on the same folder is refused while the first holds it.
        let e = Appender::open(&d).err().expect("locked");
        assert!(e.to_string().contains("in use by another voxtap"), "{e}");
        // 6 old records of 12 bytes and "new" (11) wait.
        assert_eq!(pending_bytes(&d), 6 * 12 + 11);
        assert_eq!(pending_records(&d).unwrap(), 7);
        let id = queue_id(&d).unwrap();
        assert_eq!((id.len(), queue_id(&d).unwrap()), (32, id.clone()));
    }

    #[test]
    fn torn_tail_is_cut_and_corruption_skipped() {
        let d = tmp("torn");
        let (mut a, _) = Appender::open(&d).unwrap();
        a.append(b"one").unwrap();
        a.append(b"two").unwrap();
        drop(a);
        // A crash in the middle of a write: a header and half a payload.
        let seg = segment_path(&d, 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(f);
        let (mut a, rep) = Appender::open(&d).unwrap();
        assert_eq!((rep.pending, rep.torn_bytes), (2, 9));
        a.append(b"three").unwrap();
        let mut r = Reader::open(&d).unwrap();
        let got: Vec<String> =
            r.read(100).unwrap().iter().map(|(p, _)| String::from_utf8_lossy(p).to_string()).collect();
        assert_eq!(got, ["one", "two", "three"]);
        // A flipped byte in a finished segment: the rest of that segment is skipped and counted.
        let d2 = tmp("flip");
        let (mut a, _) = Appender::open(&d2).unwrap();
        a.append(b"aaaa").unwrap();
        a.append(b"bbbb").unwrap();
        drop(a);
        let (mut a, _) = Appender::open(&d2).unwrap();
        let seg = segment_path(&d2, 1);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[9] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        a.append(b"cccc").unwrap();
        let mut r = Reader::open(&d2).unwrap();
        let got: Vec<String> =
            r.read(100).unwrap().iter().map(|(p, _)| String::from_utf8_lossy(p).to_string()).collect();
        assert_eq!(got, ["cccc"]);
        assert_eq!(r.corrupt, 1);
    }
}
