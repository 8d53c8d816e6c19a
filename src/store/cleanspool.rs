//! cleanspool: keeps the spool within its limits (reference §3.3) by deleting the oldest minute folders first.
//! Limits: `maxpooldays` (day folders older than N days), `maxpoolsipdays`/`maxpoolrtpdays` (those types' folders
//! in older days), `maxpoolsipsize`/`maxpoolrtpsize` (MB of that type), `maxpoolsize` (MB in all), and the disk's
//! free space (`autocleanspoolminpercent`, `autocleanmingb`). Only the spool's `YYYY-MM-DD/HH/MM/TYPE` tree is
//! touched: the CDR log, the CDR queue and anything else in the folder stay.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CleanReport {
    pub folders_removed: u64,
    pub bytes_removed: u64,
    pub bytes_left: u64,
}

/// One minute folder: its date and time, and the bytes of each type folder in it.
#[derive(Debug)]
struct Minute {
    key: (u32, u32, u32, u32, u32),
    path: PathBuf,
    types: Vec<(String, u64)>,
}

impl Minute {
    fn bytes(&self) -> u64 {
        self.types.iter().map(|(_, b)| b).sum()
    }
}

fn du(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn numbered(p: &Path, digits: usize, max: u32) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = fs::read_dir(p) else { return Vec::new() };
    let mut v: Vec<(u32, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            (n.len() == digits && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
            let x: u32 = n.parse().ok()?;
            (x <= max).then_some((x, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// `YYYY-MM-DD` folder names → (y, m, d).
fn day_of(name: &str) -> Option<(u32, u32, u32)> {
    let b = name.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some((name[..4].parse().ok()?, name[5..7].parse().ok()?, name[8..].parse().ok()?))
}

fn scan(spool: &Path) -> Vec<Minute> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(spool) else { return out };
    let mut days: Vec<((u32, u32, u32), PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((day_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    days.sort();
    for ((y, m, d), dp) in days {
        for (h, hp) in numbered(&dp, 2, 23) {
            for (mi, mp) in numbered(&hp, 2, 59) {
                let mut types: Vec<(String, u64)> = fs::read_dir(&mp)
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| (e.file_name().to_string_lossy().to_string(), du(&e.path())))
                            .collect()
                    })
                    .unwrap_or_default();
                types.sort();
                out.push(Minute { key: (y, m, d, h, mi), path: mp, types });
            }
        }
    }
    out
}

/// Removes empty hour and day folders above a removed minute folder.
fn prune_up(minute: &Path, spool: &Path) {
    let mut p = minute.parent();
    while let Some(d) = p {
        if d == spool || fs::remove_dir(d).is_err() {
            break;
        }
        p = d.parent();
    }
}

/// Free bytes and total bytes of the file system holding `p`.
fn disk(p: &Path) -> Option<(u64, u64)> {
    crate::os::fs_space(p).ok().map(|s| (s.available, s.total))
}

/// Today's date, days ago, as a (y, m, d) to compare folder dates with.
fn cutoff(days: u32, utc: bool) -> (u32, u32, u32) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    let t = now - days as i64 * 86_400 * 1_000_000_000;
    let c = crate::time::civil(t, utc);
    (c.year as u32, c.month, c.day)
}

fn remove_type(m: &mut Minute, t: &str, report: &mut CleanReport) {
    if let Some(i) = m.types.iter().position(|(n, _)| n == t) {
        if fs::remove_dir_all(m.path.join(t)).is_ok() {
            report.bytes_removed += m.types[i].1;
            report.folders_removed += 1;
            m.types.remove(i);
        }
    }
}

/// One cleaning pass. The newest minute folder is never removed (calls may still be writing to it).
pub fn run_once(cfg: &Config) -> io::Result<CleanReport> {
    let spool = cfg.spooldir.as_path();
    let mut report = CleanReport::default();
    let mut minutes = scan(spool);
    let newest = minutes.last().map(|m| m.key);
    // Age: whole days, then per type.
    for (days, kind) in [(cfg.maxpooldays, None), (cfg.maxpoolsipdays, Some("SIP")), (cfg.maxpoolrtpdays, Some("RTP"))]
    {
        if days == 0 {
            continue;
        }
        let limit = cutoff(days, cfg.utc);
        for m in minutes.iter_mut().filter(|m| (m.key.0, m.key.1, m.key.2) < limit && Some(m.key) != newest) {
            match kind {
                None => {
                    let t: Vec<String> = m.types.iter().map(|(n, _)| n.clone()).collect();
                    for n in t {
                        remove_type(m, &n, &mut report);
                    }
                }
                Some(k) => remove_type(m, k, &mut report),
            }
        }
    }
    // Size: per type, then in all; oldest first.
    let mb = 1024 * 1024;
    for (limit, kind) in [(cfg.maxpoolsipsize, "SIP"), (cfg.maxpoolrtpsize, "RTP")] {
        if limit == 0 {
            continue;
        }
        let mut total: u64 = minutes.iter().flat_map(|m| &m.types).filter(|(n, _)| n == kind).map(|(_, b)| b).sum();
        for m in minutes.iter_mut() {
            if total <= limit * mb || Some(m.key) == newest {
                break;
            }
            let b = m.types.iter().find(|(n, _)| n == kind).map_or(0, |(_, b)| *b);
            remove_type(m, kind, &mut report);
            total -= b;
        }
    }
    let mut total: u64 = minutes.iter().map(Minute::bytes).sum();
    let low_disk = |freed: u64| -> bool {
        match disk(spool) {
            Some((free, size)) => {
                let free = free + freed;
                (free as f64) < size as f64 * cfg.autocleanspoolminpercent / 100.0
                    || (free as f64) < cfg.autocleanmingb * 1e9
            }
            None => false,
        }
    };
    let mut freed_since_check = 0;
    for m in minutes.iter_mut() {
        if Some(m.key) == newest {
            break;
        }
        let over = cfg.maxpoolsize > 0 && total > cfg.maxpoolsize * mb;
        if !over && !low_disk(freed_since_check) {
            break;
        }
        let b = m.bytes();
        let t: Vec<String> = m.types.iter().map(|(n, _)| n.clone()).collect();
        for n in t {
            remove_type(m, &n, &mut report);
        }
        total -= b;
        // The file system may report freed space late: count what this pass removed.
        freed_since_check += b;
    }
    for m in &minutes {
        if m.types.is_empty() && fs::remove_dir(&m.path).is_ok() {
            prune_up(&m.path, spool);
        }
    }
    report.bytes_left = minutes.iter().map(Minute::bytes).sum();
    Ok(report)
}
