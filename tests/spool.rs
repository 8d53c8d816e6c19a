//! Per-call pcap files: every call's SIP and RTP packets land in spooldir/YYYY-MM-DD/HH/MM/{SIP,RTP}/, tshark
//! reads them, and they hold exactly the call's packets (counted against the oracle and the CDR, and each one
//! byte-identical to a frame of the original capture).

mod common;
#[path = "common/db.rs"]
mod db;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use voxtap::capture::pcapfile::CaptureFile;

fn frames(p: &Path) -> Vec<Vec<u8>> {
    CaptureFile::open(p).expect("open pcap").frames().map(|f| f.data.to_vec()).collect()
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

#[test]
fn each_call_file_holds_exactly_its_packets() {
    let Some(corpus) = corpus_dir() else { return };
    if Command::new("tshark").arg("-v").output().is_err() {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "tshark is required under CI");
        eprintln!("SKIPPED: tshark is not installed");
        return;
    }
    let dir = fresh_dir("spool");
    let cap = dir.join("calls.pcap");
    let args = ["--calls", "12", "--cps", "4", "--duration", "3", "--mix", "--dtmf", "--loss", "0.02", "--seed", "21"];
    voxgen(&cap, &[&args[..], &["--fragment-mtu", "500"]].concat());
    let spool = dir.join("spool");
    let cdrs = run_json(&cap, &["-S", "-R", "-d", spool.to_str().unwrap(), "--workers", "2"]);
    // The default is VoIPmonitor's: per-minute archives. Unpacked with tar, they give the call files checked below.
    let archives = unpack_archives(&spool);
    assert!(archives.iter().any(|a| a.ends_with(".tar.zst")) && archives.iter().any(|a| a.ends_with(".tar")));
    let out = Command::new("python3")
        .arg(corpus.join("tools/oracle.py"))
        .arg("--file")
        .arg(&cap)
        .output()
        .expect("oracle.py (needs tshark)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let oracle = load_json(&dir.join("calls.pcap.oracle.json"));
    let sip_msgs: HashMap<String, u64> = oracle["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["call_id"].as_str().unwrap().to_string(), c["sip_msgs"].as_u64().unwrap()))
        .collect();
    // Count SIP messages per Call-ID from the oracle's message list (a call's file holds all of them).
    let mut per_call: HashMap<String, u64> = HashMap::new();
    for m in oracle["sip_messages"].as_array().unwrap() {
        *per_call.entry(m["call_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let original: std::collections::HashSet<Vec<u8>> = frames(&cap).into_iter().collect();
    assert_eq!(cdrs.len(), sip_msgs.len());
    for c in &cdrs {
        let id = c["callid"].as_str().unwrap();
        let base = format!("{}.pcap", c["fbasename"].as_str().unwrap());
        let mut files = Vec::new();
        find(&spool, &base, &mut files);
        let in_dir = |d: &str| files.iter().filter(|p| p.parent().unwrap().ends_with(d)).cloned().collect::<Vec<_>>();
        let sip = in_dir("SIP");
        assert_eq!(sip.len(), 1, "{id}: SIP file");
        let sip_frames = frames(&sip[0]);
        // Fragmented SIP: one message, several frames. Reassembled count = messages.
        let t = Command::new("tshark")
            .arg("-r")
            .arg(&sip[0])
            .args(["-Y", "sip", "-T", "fields", "-e", "sip.Call-ID"])
            .output()
            .unwrap();
        assert!(t.status.success(), "tshark cannot read {}", sip[0].display());
        let msgs = String::from_utf8_lossy(&t.stdout).lines().filter(|l| *l == id).count() as u64;
        assert_eq!(msgs, per_call[id], "{id}: SIP messages in its file");
        for f in &sip_frames {
            assert!(original.contains(f), "{id}: SIP file holds a frame that is not in the capture");
        }
        // The path follows the spool layout of the call start (UTC for this check is not assumed: any minute dir).
        let rel = sip[0].strip_prefix(&spool).unwrap();
        assert_eq!(rel.components().count(), 5, "{}", rel.display());
        let received: u64 = c["rtp"].as_array().unwrap().iter().map(|r| r["received"].as_u64().unwrap()).sum();
        let rtp = in_dir("RTP");
        if received == 0 {
            assert!(rtp.is_empty(), "{id}: RTP file without RTP");
            continue;
        }
        let rtp_frames = frames(&rtp[0]);
        assert_eq!(rtp_frames.len() as u64, received, "{id}: RTP packets in its file");
        let bytes: usize = rtp_frames.iter().map(Vec::len).sum();
        assert!(
            bytes > 0 && rtp_frames.iter().all(|f| original.contains(f)),
            "{id}: RTP frames differ from the capture"
        );
    }
}

/// The CDR log: with `cdr_log = yes` every CDR is a line of `SPOOLDIR/cdrlog/YYYY-MM-DD.jsonl` (the day the call
/// ended), the same JSON as the standard output; `-r` without the key writes no log.
#[test]
fn cdr_log_holds_every_cdr_once() {
    let dir = fresh_dir("cdrlog");
    let cap = dir.join("calls.pcap");
    // Calls ending on both sides of midnight (UTC): two log files.
    voxgen(&cap, &["--calls", "40", "--cps", "4", "--duration", "2", "--mix", "--start", "1700006390", "--seed", "5"]);
    let spool = dir.join("spool");
    let conf = dir.join("v.conf");
    std::fs::write(&conf, format!("spooldir = {}\nutc = yes\ncdr_log = yes\n", spool.display())).unwrap();
    let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().expect("run voxtap");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    assert!(!stdout.is_empty());
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(spool.join("cdrlog")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    assert_eq!(names, ["2023-11-14.jsonl", "2023-11-15.jsonl"], "one file per day the calls ended");
    let mut logged = Vec::new();
    for f in &files {
        let day = f.file_stem().unwrap().to_string_lossy().to_string();
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is a CDR");
            assert!(v["callend"].as_str().unwrap().starts_with(&day), "{l} in {}", f.display());
            logged.push(l.to_string());
        }
    }
    let mut a = stdout.clone();
    a.sort();
    logged.sort();
    assert_eq!(a, logged, "the log holds exactly the CDRs of the output");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(&format!("cdr_log_written={}", stdout.len())), "{summary}");

    // Without the key, a capture file run writes no log (its CDRs go to standard output).
    let spool2 = dir.join("spool2");
    run_json(&cap, &["-d", spool2.to_str().unwrap()]);
    assert!(!spool2.join("cdrlog").exists());
}

/// `pcap_dump_zip_sip`/`_rtp`: each file is a gzip or zstd stream (one member or frame per piece written) whose
/// content is byte for byte the uncompressed run's file, and tshark reads it as it is. `lzo` is written as zstd.
#[test]
fn compressed_files_hold_the_same_pcaps() {
    let dir = fresh_dir("zip");
    let cap = dir.join("calls.pcap");
    // Ten seconds of RTP per call: its RTP file is written in several pieces.
    voxgen(&cap, &["--calls", "6", "--cps", "3", "--duration", "10", "--mix", "--seed", "8"]);
    let run = |name: &str, extra: &str| -> PathBuf {
        let spool = dir.join(name);
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!("spooldir = {}\nsavesip = yes\nsavertp = yes\nutc = yes\ntar = no\n{extra}\n", spool.display()),
        )
        .unwrap();
        let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        spool
    };
    let plain = run("plain", "");
    let mut all = Vec::new();
    all_files(&plain, &mut all);
    assert!(all.len() >= 8, "{all:?}");
    let tshark = Command::new("tshark").arg("-v").output().is_ok();
    let frames = |f: &Path| {
        let o = Command::new("tshark").arg("-r").arg(f).output().unwrap();
        assert!(o.status.success(), "tshark cannot read {}: {}", f.display(), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    for (name, conf, magic) in [
        ("gz", "pcap_dump_zip = gzip", [0x1f, 0x8b, 0x08, 0x00]),
        ("zst", "pcap_dump_zip_sip = zstd\npcap_dump_zip_rtp = lzo", [0x28, 0xb5, 0x2f, 0xfd]),
    ] {
        let zipped = run(name, conf);
        let mut several = false;
        for p in &all {
            let rel = p.strip_prefix(&plain).unwrap();
            let z = std::fs::read(zipped.join(rel)).unwrap();
            assert_eq!(&z[..3], &magic[..3], "{name}: {} is not compressed", rel.display());
            let content = if name == "gz" {
                let mut d = flate2::read::MultiGzDecoder::new(&z[..]);
                let mut c = Vec::new();
                std::io::Read::read_to_end(&mut d, &mut c).unwrap();
                c
            } else {
                zstd::stream::decode_all(&z[..]).unwrap()
            };
            assert_eq!(content, std::fs::read(p).unwrap(), "{name}: {} differs once decompressed", rel.display());
            several |= z.windows(magic.len()).skip(1).any(|w| w == magic);
            if tshark {
                assert_eq!(frames(&zipped.join(rel)), frames(p), "{name}: {}", rel.display());
            }
        }
        assert!(several, "{name}: no file was written in several pieces");
    }
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Unpacks every archive of the spool into its own directory with the system's tar (`--zstd`/`-z` as the suffix
/// says), removes it, and returns the archive names. No spill file may be left behind.
fn unpack_archives(spool: &Path) -> Vec<String> {
    let mut all = Vec::new();
    all_files(spool, &mut all);
    let mut names = Vec::new();
    for p in all {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.ends_with(".part"), "spill file left behind: {}", p.display());
        let how = if name.ends_with(".tar.zst") {
            "--zstd"
        } else if name.ends_with(".tar.gz") {
            "-z"
        } else if name.ends_with(".tar") {
            "--no-auto-compress"
        } else {
            continue;
        };
        let out = Command::new("tar").arg("-C").arg(p.parent().unwrap()).arg(how).arg("-xf").arg(&p).output().unwrap();
        assert!(out.status.success(), "tar {how} -xf {}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
        std::fs::remove_file(&p).unwrap();
        names.push(name);
    }
    names
}

/// Tree of a spool: relative path → content.
fn tree(spool: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut all = Vec::new();
    all_files(spool, &mut all);
    all.into_iter().map(|p| (p.strip_prefix(spool).unwrap().to_path_buf(), std::fs::read(&p).unwrap())).collect()
}

/// `tar = yes` (the default) with each compression combination: the archives are named after their minute, sit
/// in SIP/ and RTP/, open with the system's tar, and hold exactly the files a `tar = no` run writes, byte for
/// byte (files written in several pieces included). A second run into the same spool keeps the first run's
/// archives as `.1`.
#[test]
fn tar_archives_hold_the_per_file_spool() {
    let dir = fresh_dir("tar");
    let cap = dir.join("calls.pcap");
    // Ten seconds of RTP per call (several pieces per RTP file); calls in three minutes.
    voxgen(
        &cap,
        &["--calls", "9", "--cps", "0.06", "--duration", "10", "--mix", "--start", "1700006300", "--seed", "8"],
    );
    let run = |name: &str, extra: &str| -> PathBuf {
        let spool = dir.join(name);
        let conf = dir.join(format!("{name}.conf"));
        let base = format!("spooldir = {}\nsavesip = yes\nsavertp = yes\nutc = yes\n", spool.display());
        std::fs::write(&conf, format!("{base}{extra}\n")).unwrap();
        let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        spool
    };
    let plain = tree(&run("plain", "tar = no"));
    let minutes: std::collections::BTreeSet<_> =
        plain.keys().map(|p| p.parent().unwrap().parent().unwrap().to_path_buf()).collect();
    assert!(minutes.len() >= 3, "{minutes:?}");
    let zst_rtp = tree(&run("plain-zst", "tar = no\npcap_dump_zip_rtp = zstd"));
    for (name, conf, sip_suffix, rtp_suffix, files) in [
        ("default", "", ".tar.zst", ".tar", &plain),
        ("compressed", "tar_compress_sip = gzipforce\ntar_compress_rtp = zstd", ".tar.gz", ".tar.zst", &plain),
        ("plain", "tar_compress_sip = no\ntar_compress_rtp = no", ".tar", ".tar", &plain),
        // RTP files compressed one by one go into a plain archive even when its compression is asked for.
        ("per-file", "pcap_dump_zip_rtp = zstd\ntar_compress_rtp = zstd", ".tar.zst", ".tar", &zst_rtp),
    ] {
        let spool = run(&format!("tar-{name}"), conf);
        let mut expected: Vec<String> = Vec::new();
        for m in &minutes {
            let stamp = m.to_string_lossy().replace('/', "-");
            expected.push(format!("sip_{stamp}{sip_suffix}"));
            if files.keys().any(|p| p.starts_with(m.join("RTP"))) {
                expected.push(format!("rtp_{stamp}{rtp_suffix}"));
            }
        }
        let mut got = unpack_archives(&spool);
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "{name}: archives");
        let unpacked = tree(&spool);
        assert_eq!(unpacked.keys().collect::<Vec<_>>(), files.keys().collect::<Vec<_>>(), "{name}: entries");
        for (rel, content) in files.iter() {
            assert!(unpacked[rel] == *content, "{name}: {} differs from the file written without tar", rel.display());
        }
    }
    // Run again into a spool that has archives: the first run's are kept as .1, both complete.
    let again = dir.join("again");
    let conf = dir.join("again.conf");
    std::fs::write(&conf, format!("spooldir = {}\nsavesip = yes\nsavertp = yes\nutc = yes\n", again.display()))
        .unwrap();
    for _ in 0..2 {
        let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut all = Vec::new();
    all_files(&again, &mut all);
    let rotated: Vec<_> = all.iter().filter(|p| p.to_string_lossy().ends_with(".1")).collect();
    assert_eq!(rotated.len(), all.len() / 2, "{all:?}");
    for p in &all {
        let out = Command::new("tar").arg("-tf").arg(p).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "tar -tf {}", p.display());
    }
}

/// Replaces every occurrence of `from` in `b` with `to` (of the same length).
fn replace_all(b: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + to.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

/// Checks that every CDR's SIP file holds exactly the capture's frames of its Call-ID and its RTP file as many
/// packets as the CDR received; returns the SIP files' paths.
fn check_own_files(spool: &Path, cap: &Path, cdrs: &[serde_json::Value]) -> Vec<PathBuf> {
    let capture = frames(cap);
    let mut out = Vec::new();
    for c in cdrs {
        let id = c["callid"].as_str().unwrap();
        let base = format!("{}.pcap", c["fbasename"].as_str().unwrap());
        let mut files = Vec::new();
        find(spool, &base, &mut files);
        let of = |d: &str| files.iter().filter(|p| p.parent().unwrap().ends_with(d)).cloned().collect::<Vec<_>>();
        let sip = of("SIP");
        assert_eq!(sip.len(), 1, "{id}: one SIP file {base}, found {files:?}");
        let contains = |f: &[u8]| f.windows(id.len()).any(|w| w == id.as_bytes());
        let want: Vec<Vec<u8>> = capture.iter().filter(|f| contains(f)).cloned().collect();
        assert!(!want.is_empty(), "{id}: not in the capture");
        let got = frames(&sip[0]);
        let others = got.iter().filter(|f| !contains(f)).count();
        assert!(
            got == want,
            "{id}: its SIP file {} holds {} frames ({others} not of this call), the capture {} of this call",
            sip[0].display(),
            got.len(),
            want.len()
        );
        let received: u64 = c["rtp"].as_array().unwrap().iter().map(|r| r["received"].as_u64().unwrap()).sum();
        assert!(received > 0, "{id}: an answered call with RTP");
        let rtp = of("RTP");
        assert_eq!(rtp.len(), 1, "{id}: one RTP file");
        assert_eq!(frames(&rtp[0]).len() as u64, received, "{id}: RTP packets in its file");
        out.push(sip[0].clone());
    }
    out
}

/// Two calls at once whose Call-IDs differ only by `/` against `+` (both outside the characters a file name keeps)
/// get a file each, in per-file and tar modes alike, and an archive holds no entry name twice. Running the same
/// capture again into the same spool keeps the first run's files (as `NAME.1`) instead of truncating them.
#[test]
fn call_ids_that_differ_only_in_replaced_characters_get_files_of_their_own() {
    let dir = fresh_dir("names");
    let orig = dir.join("orig.pcap");
    voxgen(&orig, &["--calls", "2", "--cps", "5", "--duration", "3", "--start", "1700000000", "--seed", "77"]);
    let ids: Vec<String> = run_json(&orig, &[]).iter().map(|c| c["callid"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 2);
    // Same length, so the frames keep their lengths.
    let with = |sep: char| format!("{}{sep}{}", &ids[0][..7], &ids[0][8..]);
    let new = [with('/'), with('+')];
    let mut bytes = std::fs::read(&orig).unwrap();
    for (old, new) in ids.iter().zip(&new) {
        assert!(replace_all(&mut bytes, old.as_bytes(), new.as_bytes()) >= 4, "{old} in the capture");
    }
    let cap = dir.join("names.pcap");
    std::fs::write(&cap, &bytes).unwrap();
    let run = |name: &str, extra: &str| -> (PathBuf, Vec<serde_json::Value>) {
        let conf = write_conf(
            &dir,
            &format!("{name}.conf"),
            name,
            &format!("savesip = yes\nsavertp = yes\nutc = yes\n{extra}\n"),
        );
        let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cdrs: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let got: std::collections::BTreeSet<&str> = cdrs.iter().map(|c| c["callid"].as_str().unwrap()).collect();
        assert_eq!(got, new.iter().map(String::as_str).collect(), "{name}: the two calls");
        (dir.join(name), cdrs)
    };
    let (plain, cdrs) = run("plain", "tar = no");
    let sip = check_own_files(&plain, &cap, &cdrs);
    assert_ne!(cdrs[0]["fbasename"], cdrs[1]["fbasename"], "one file name for two calls");
    let (tarred, cdrs) = run("tarred", "tar = yes");
    let mut all = Vec::new();
    all_files(&tarred, &mut all);
    for a in all.iter().filter(|p| p.to_string_lossy().contains(".tar")) {
        let out = Command::new("tar").arg("-tf").arg(a).output().unwrap();
        assert!(out.status.success(), "tar -tf {}", a.display());
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{}: an entry name twice: {names:?}", a.display());
    }
    unpack_archives(&tarred);
    check_own_files(&tarred, &cap, &cdrs);
    // Again into the plain spool: the files there are another run's, kept whole beside the new ones.
    let before: Vec<Vec<u8>> = sip.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let (again, cdrs) = run("plain", "tar = no");
    check_own_files(&again, &cap, &cdrs);
    for (p, old) in sip.iter().zip(&before) {
        let kept = PathBuf::from(format!("{}.1", p.display()));
        assert_eq!(&std::fs::read(&kept).unwrap_or_default(), old, "{} kept as {}", p.display(), kept.display());
        assert_eq!(&std::fs::read(p).unwrap(), old, "{}: the second run's file", p.display());
    }
}

/// Modes and group of every file and folder under `dir` (the folder itself left out).
fn modes(dir: &Path, out: &mut Vec<(PathBuf, bool, u32, u32)>) {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), m.is_dir(), m.mode() & 0o7777, m.gid()));
        if m.is_dir() {
            modes(&e.path(), out);
        }
    }
}

/// What voxtap creates — the spool's folders and call files (and archives), the CDR queue in front of the
/// database, the CDR log — is 0640 (files) and 0750 (folders) by default, even under umask 0: calls' contents
/// are no business of other users. `spool_group` gives them a group (to let a GUI read them), and
/// `spool_file_mode`/`spool_dir_mode` other modes.
#[test]
fn created_files_and_folders_are_not_world_readable() {
    let db = db::server();
    let dir = fresh_dir("perms");
    let cap = dir.join("calls.pcap");
    voxgen(&cap, &["--calls", "4", "--cps", "4", "--duration", "2", "--seed", "19"]);
    let run = |name: &str, extra: &str| -> PathBuf {
        let dbname = db.fresh(&format!("voxtap_t_perms_{name}"));
        let conf = db.config(&dir, &dbname, &format!("savesip = yes\nsavertp = yes\ncdr_log = yes\n{extra}\n"));
        let mut cmd = voxtap();
        cmd.arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json");
        // SAFETY: umask only changes the child's own file-creation mask, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let out = cmd.output().expect("run voxtap");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("db_stored=4 ") && stderr.contains("cdr_log_written=4"), "{stderr}");
        dir.join(format!("{dbname}-spool"))
    };
    let check = |spool: &Path, file_mode: u32, dir_mode: u32, gid: Option<u32>| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(spool).unwrap();
        // The spool folder itself is voxtap's too (it made it).
        let mut all = vec![(spool.to_path_buf(), true, m.mode() & 0o7777, m.gid())];
        modes(spool, &mut all);
        for sub in ["cdrqueue", "cdrlog"] {
            assert!(all.iter().any(|(p, d, ..)| *d && p.ends_with(sub)), "{sub} missing: {all:?}");
        }
        assert!(all.iter().any(|(p, ..)| p.extension().is_some_and(|e| e == "pcap" || e == "tar" || e == "zst")));
        for (p, is_dir, mode, g) in &all {
            let want = if *is_dir { dir_mode } else { file_mode };
            assert_eq!(*mode, want, "{}: mode {mode:04o}, want {want:04o}", p.display());
            if let Some(gid) = gid {
                assert_eq!(*g, gid, "{}: group", p.display());
            }
        }
    };
    check(&run("plain", "tar = no"), 0o640, 0o750, None);
    // daemon is group 1 on Debian; voxtap runs as root here, so it may give any group.
    check(&run("group", "tar = yes\nspool_group = daemon"), 0o640, 0o750, Some(1));
    check(
        &run("modes", "tar = no\nspool_group = 1\nspool_file_mode = 0600\nspool_dir_mode = 0700"),
        0o600,
        0o700,
        Some(1),
    );
}
