//! cleanspool (`voxtap --run-cleanspool`): age and size limits, per type and in all, the free-space floor;
//! oldest minute folders first, the newest never, and nothing outside the spool's date tree.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const KB: usize = 1024;

fn file(p: &Path, bytes: usize) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, vec![7u8; bytes]).unwrap();
}

fn today() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A spool with two old minutes (2020) and four of today, each with 100 KB of SIP and 200 KB of RTP, plus the CDR
/// log, the CDR queue and an unrelated folder.
fn spool(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-clean-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let t = today();
    let mut minutes = vec!["2020-01-01/10/00".to_string(), "2020-01-01/10/01".to_string()];
    for m in ["00/00", "00/01", "01/00", "23/59"] {
        minutes.push(format!("{t}/{m}"));
    }
    for m in &minutes {
        file(&d.join(m).join("SIP/a.pcap"), 100 * KB);
        file(&d.join(m).join("RTP/a.pcap"), 200 * KB);
    }
    file(&d.join("cdrlog/2020-01-01.jsonl"), KB);
    file(&d.join("cdrqueue/0000000000000001.cdrq"), KB);
    file(&d.join("other/keep.txt"), KB);
    d
}

fn clean(spool: &Path, keys: &str) -> String {
    let conf = spool.with_extension("conf");
    std::fs::write(
        &conf,
        format!(
            "spooldir = {}\nutc = yes\nautocleanmingb = 0\nautocleanspoolminpercent = 0\n{keys}\n",
            spool.display()
        ),
    )
    .unwrap();
    let out = voxtap().arg("--config-file").arg(&conf).arg("--run-cleanspool").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn exists(spool: &Path, rel: &str) -> bool {
    spool.join(rel).exists()
}

fn untouched(spool: &Path) {
    for f in ["cdrlog/2020-01-01.jsonl", "cdrqueue/0000000000000001.cdrq", "other/keep.txt"] {
        assert!(exists(spool, f), "{f} must stay");
    }
}

#[test]
fn maxpooldays_removes_old_days_only() {
    let s = spool("days");
    let t = today();
    clean(&s, "maxpooldays = 30");
    assert!(!exists(&s, "2020-01-01"), "old day folder and its empty parents go");
    for m in ["00/00", "00/01", "01/00", "23/59"] {
        assert!(exists(&s, &format!("{t}/{m}/SIP/a.pcap")) && exists(&s, &format!("{t}/{m}/RTP/a.pcap")));
    }
    untouched(&s);
    // Per type: old RTP goes, old SIP stays.
    let s = spool("rtpdays");
    clean(&s, "maxpoolrtpdays = 30");
    assert!(exists(&s, "2020-01-01/10/00/SIP/a.pcap") && !exists(&s, "2020-01-01/10/00/RTP"));
    untouched(&s);
}

#[test]
fn size_limits_remove_oldest_minutes_first() {
    let t = today();
    // 6 minutes × 300 KB = 1800 KB; a 1 MB limit keeps the newest three (900 KB).
    let s = spool("size");
    let out = clean(&s, "maxpoolsize = 1");
    assert!(out.contains("folders removed"), "{out}");
    for gone in ["2020-01-01", &format!("{t}/00/00")] {
        assert!(!exists(&s, gone), "{gone} should be removed");
    }
    for kept in ["00/01", "01/00", "23/59"] {
        assert!(exists(&s, &format!("{t}/{kept}/RTP/a.pcap")), "{kept} should stay");
    }
    untouched(&s);
    // Per type: RTP is 1200 KB in all; a 1 MB RTP limit (1024 KB) removes the oldest RTP folder only, SIP stays
    // everywhere.
    let s = spool("rtpsize");
    clean(&s, "maxpoolrtpsize = 1");
    assert!(!exists(&s, "2020-01-01/10/00/RTP") && exists(&s, "2020-01-01/10/01/RTP/a.pcap"));
    assert!(exists(&s, &format!("{t}/00/00/RTP/a.pcap")));
    assert!(exists(&s, "2020-01-01/10/00/SIP/a.pcap"));
}

#[test]
fn low_disk_removes_all_but_the_newest_minute() {
    let t = today();
    let s = spool("disk");
    // A free-space floor no disk meets: everything old goes, the minute being written stays.
    let conf = s.with_extension("conf");
    std::fs::write(&conf, format!("spooldir = {}\nutc = yes\nautocleanmingb = 1000000000\n", s.display())).unwrap();
    let out = voxtap().arg("--config-file").arg(&conf).arg("--run-cleanspool").output().unwrap();
    assert!(out.status.success());
    assert!(!exists(&s, "2020-01-01") && !exists(&s, &format!("{t}/00")) && !exists(&s, &format!("{t}/01")));
    assert!(exists(&s, &format!("{t}/23/59/SIP/a.pcap")) && exists(&s, &format!("{t}/23/59/RTP/a.pcap")));
    untouched(&s);
}
