//! Per-minute tar archives of call files (`tar = yes`, reference §3.2):
//! `YYYY-MM-DD/HH/MM/SIP/sip_YYYY-MM-DD-HH-MM.tar[.zst|.gz]` and `…/RTP/rtp_….tar[…]`, one entry per call file.
//!
//! Calls end in any order, long after their minute began, so an archive is appended to for as long as calls of
//! that minute go on. Every append leaves a complete archive behind — the entry, then the two zero blocks that
//! end a tar — and the next append cuts those two blocks off again before writing. With compression the end
//! blocks are a separate frame (zstd) or member (gzip) of their own, so the cut never touches an entry: readers see
//! one valid stream of concatenated frames (RFC 8878 §3.1, RFC 1952 §2.2), which `tar --zstd -xf`/`tar -xzf` read.
//!
//! Only archives this process created are appended to: where is their end is known exactly. An archive left by
//! an earlier run (perhaps cut short by a crash) is renamed to `.1`, `.2`, … first, as VoIPmonitor does.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};

use crate::config::Compress;

const BLOCK: usize = 512;
/// The name field holds 100 bytes; VoIPmonitor hashes names longer than 92 so that `#N` piece suffixes fit.
const NAME_MAX: usize = 92;
/// Archives untouched this long are forgotten: a call that ends later opens a fresh archive (the old one is kept
/// as `.N`).
const FORGET_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The archive's file name for the call file at `file` (`…/YYYY-MM-DD/HH/MM/SIP/x.pcap`).
pub fn archive_path(file: &Path, prefix: &str, how: Compress) -> Option<PathBuf> {
    let type_dir = file.parent()?;
    let minute = type_dir.parent()?;
    let hour = minute.parent()?;
    let day = hour.parent()?;
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let suffix = match how {
        Compress::None => "",
        Compress::Gzip => ".gz",
        Compress::Zstd => ".zst",
    };
    Some(type_dir.join(format!("{prefix}_{}-{}-{}.tar{suffix}", name(day)?, name(hour)?, name(minute)?)))
}

/// The entry name of a file: its base name, or for a long one its first 54 characters, `_hash_` and the MD5 of the
/// rest (VoIPmonitor's rule, so its GUI finds the entry by the same name).
pub fn entry_name(base: &str) -> String {
    if base.len() <= NAME_MAX {
        return base.to_owned();
    }
    // file_safe names are ASCII; the boundary check only matters for names made some other way. Two call files
    // have distinct names (file_safe), so their entries differ too: in the first 54 characters or in the hash.
    let mut cut = 54;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let (head, rest) = base.split_at(cut);
    let hex: String = Md5::digest(rest.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("{head}_hash_{hex}")
}

/// A GNU-style ustar header for a regular file.
pub fn header(name: &str, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.as_bytes();
    h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    // Extracted, the file gets the mode voxtap gives its own files.
    octal(&mut h[100..108], u64::from(crate::store::perms::get().file_mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 1 << 33 {
        octal(&mut h[124..136], size);
    } else {
        // GNU base-256: a set high bit, then the size big-endian.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], mtime.min(0o77777777777));
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
    h
}

/// Zero-padded octal digits and a closing NUL, filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// What ends an archive, as written on disk for `how`.
fn end_marker(how: Compress) -> io::Result<Vec<u8>> {
    let zeros = [0u8; 2 * BLOCK];
    frame(how, |w| w.write_all(&zeros))
}

/// `body` written as one compression frame (or as is).
fn frame(how: Compress, body: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_frame(&mut out, how, body)?;
    Ok(out)
}

fn write_frame<W: Write>(
    out: &mut W,
    how: Compress,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    match how {
        Compress::None => body(out),
        Compress::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            body(&mut e)?;
            e.finish()?;
            Ok(())
        }
        Compress::Zstd => {
            let mut e = zstd::stream::Encoder::new(out, 1)?;
            body(&mut e)?;
            e.finish()?;
            Ok(())
        }
    }
}

struct Open {
    /// Where the end-of-archive frame starts.
    end: u64,
    used: Instant,
}

/// The archives being appended to by this process.
#[derive(Default)]
pub struct Archives {
    open: HashMap<PathBuf, Open>,
    appends: u64,
    /// The end-of-archive frame of each compression, made once.
    markers: HashMap<Compress, std::rc::Rc<[u8]>>,
}

/// One file to add: an optional spill file holding its first pieces, then the last piece.
pub struct Entry<'a> {
    pub name: &'a str,
    pub spill: Option<&'a mut File>,
    pub tail: &'a [u8],
}

impl Archives {
    /// Appends an entry; returns the bytes it took on disk.
    pub fn append(&mut self, archive: &Path, how: Compress, entry: Entry<'_>) -> io::Result<u64> {
        self.appends += 1;
        if self.appends.is_multiple_of(4096) {
            let now = Instant::now();
            self.open.retain(|_, o| now.duration_since(o.used) < FORGET_AFTER);
        }
        let end = match self.open.get(archive) {
            Some(o) => o.end,
            None => {
                if archive.exists() {
                    rotate(archive)?;
                } else if let Some(dir) = archive.parent() {
                    crate::store::perms::create_dir_all(dir)?;
                }
                0
            }
        };
        let marker = match self.markers.get(&how) {
            Some(m) => m.clone(),
            None => {
                let m: std::rc::Rc<[u8]> = end_marker(how)?.into();
                self.markers.insert(how, m.clone());
                m
            }
        };
        let mut f = crate::store::perms::open(OpenOptions::new().create(true).write(true).truncate(false), archive)?;
        let res = write_entry(&mut f, end, how, &marker, entry);
        let new_end = match res {
            Ok(e) => e,
            Err(err) => {
                // Leave the archive as it was: complete up to the previous entry.
                let _ = f.set_len(end).and_then(|_| f.seek(SeekFrom::Start(end))).and_then(|_| f.write_all(&marker));
                if end == 0 {
                    self.open.insert(archive.to_path_buf(), Open { end, used: Instant::now() });
                }
                return Err(err);
            }
        };
        self.open.insert(archive.to_path_buf(), Open { end: new_end, used: Instant::now() });
        Ok(new_end - end)
    }
}

fn write_entry(f: &mut File, end: u64, how: Compress, marker: &[u8], entry: Entry<'_>) -> io::Result<u64> {
    f.set_len(end)?;
    f.seek(SeekFrom::Start(end))?;
    let spill_len = match &entry.spill {
        Some(s) => s.metadata()?.len(),
        None => 0,
    };
    let size = spill_len + entry.tail.len() as u64;
    let mtime = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = io::BufWriter::with_capacity(256 * 1024, &mut *f);
    let spill = entry.spill;
    write_frame(&mut out, how, |w| {
        w.write_all(&header(entry.name, size, mtime))?;
        if let Some(s) = spill {
            s.seek(SeekFrom::Start(0))?;
            let copied = io::copy(&mut s.take(spill_len), w)?;
            if copied != spill_len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spill file shrank"));
            }
        }
        w.write_all(entry.tail)?;
        w.write_all(&[0u8; BLOCK][..padding(size)])
    })?;
    out.flush()?;
    drop(out);
    let new_end = f.stream_position()?;
    f.write_all(marker)?;
    Ok(new_end)
}

/// An archive left by an earlier run (or a call file of the same name, see `spool::create_fresh`) becomes `.1` (or
/// the first free of `.2` … `.99`).
pub(crate) fn rotate(archive: &Path) -> io::Result<()> {
    for n in 1..=99 {
        let mut to = archive.as_os_str().to_owned();
        to.push(format!(".{n}"));
        let to = PathBuf::from(to);
        if !to.exists() {
            return fs::rename(archive, &to);
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}.1 … .99 all exist", archive.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_and_fields() {
        let h = header("a.pcap", 1234, 1_700_000_000);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[257..265], b"ustar  \0");
        let big = header("b", 1 << 34, 0);
        assert_eq!(big[124], 0x80);
        assert_eq!(u64::from_be_bytes(big[128..136].try_into().unwrap()), 1 << 34);
    }

    #[test]
    fn long_names_are_hashed() {
        let short = "x".repeat(92);
        assert_eq!(entry_name(&short), short);
        let long = format!("{}{}", "a".repeat(54), "b".repeat(50));
        let e = entry_name(&long);
        assert_eq!(e.len(), 92);
        assert!(e.starts_with(&format!("{}_hash_", "a".repeat(54))));
        // md5("b" × 50), computed independently with `printf 'b%.0s' {1..50} | md5sum`.
        assert!(e.ends_with("9d7756a2ac79651c7b496d301847dbde"), "{e}");
    }

    #[test]
    fn archive_names() {
        let f = Path::new("/s/2024-01-02/03/04/SIP/x.pcap");
        assert_eq!(
            archive_path(f, "sip", Compress::Zstd).unwrap(),
            Path::new("/s/2024-01-02/03/04/SIP/sip_2024-01-02-03-04.tar.zst")
        );
        assert_eq!(
            archive_path(f, "rtp", Compress::None).unwrap(),
            Path::new("/s/2024-01-02/03/04/SIP/rtp_2024-01-02-03-04.tar")
        );
    }

    #[test]
    fn appends_leave_a_complete_archive_each_time() {
        let dir = std::env::temp_dir().join(format!("voxtap-tar-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for how in [Compress::None, Compress::Zstd, Compress::Gzip] {
            let path = dir.join(format!("t-{how:?}.tar"));
            let mut a = Archives::default();
            let mut contents = Vec::new();
            for i in 0..5u8 {
                let data = vec![i; 700 * i as usize + 3];
                let name = format!("f{i}");
                a.append(&path, how, Entry { name: &name, spill: None, tail: &data }).unwrap();
                contents.push((name, data));
                let plain = decompress(&fs::read(&path).unwrap(), how);
                assert_eq!(read_tar(&plain), contents, "{how:?} after {i}");
            }
            // A second process (fresh state) keeps the old archive as .1.
            let mut b = Archives::default();
            b.append(&path, how, Entry { name: "new", spill: None, tail: b"x" }).unwrap();
            let old = PathBuf::from(format!("{}.1", path.display()));
            assert_eq!(read_tar(&decompress(&fs::read(&old).unwrap(), how)), contents);
            assert_eq!(read_tar(&decompress(&fs::read(&path).unwrap(), how)), vec![("new".into(), b"x".to_vec())]);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn decompress(b: &[u8], how: Compress) -> Vec<u8> {
        let mut out = Vec::new();
        match how {
            Compress::None => out = b.to_vec(),
            Compress::Gzip => {
                flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out).unwrap();
            }
            Compress::Zstd => {
                zstd::stream::Decoder::new(b).unwrap().read_to_end(&mut out).unwrap();
            }
        }
        out
    }

    /// A minimal reader, strict about the end: two zero blocks, then nothing.
    fn read_tar(b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let h = &b[at..at + BLOCK];
            if h.iter().all(|&x| x == 0) {
                assert!(b[at + BLOCK..].iter().all(|&x| x == 0));
                assert_eq!(b.len(), at + 2 * BLOCK);
                return out;
            }
            let name = String::from_utf8(h[..100].split(|&x| x == 0).next().unwrap().to_vec()).unwrap();
            let size = u64::from_str_radix(std::str::from_utf8(&h[124..135]).unwrap(), 8).unwrap() as usize;
            at += BLOCK;
            out.push((name, b[at..at + size].to_vec()));
            at += size + padding(size as u64);
        }
    }
}
