//! A new user's first hour: what `--check-config` promises is what the run does, values that are not yes/no
//! are refused, a spool that fills up is an error, the table reads well, SIP on unlisted ports is pointed out,
//! and error messages say each thing once.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn run(args: &[&str]) -> Output {
    voxtap().args(args).output().expect("run voxtap")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `--check-config` and the run refuse the same configurations, with the same message.
#[test]
fn check_config_refuses_what_the_run_refuses() {
    let dir = fresh_dir("fh-check");
    let pcap = dir.join("calls.pcap");
    voxgen(&pcap, &["--calls", "2", "--duration", "1", "--seed", "3"]);
    std::fs::write(dir.join("a-file"), b"x").unwrap();
    let cases: Vec<(std::path::PathBuf, Vec<String>, &str)> = vec![
        (write_conf(&dir, "hep.conf", "s", "hep = yes\n"), vec![], "hep = yes needs hep_bind_port"),
        (write_conf(&dir, "ipfix.conf", "s", "ipfix = yes\n"), vec![], "ipfix = yes needs ipfix_bind_port"),
        (
            write_conf(&dir, "plain.conf", "s", ""),
            vec!["-r".into(), dir.join("missing.pcap").display().to_string()],
            "No such file",
        ),
        (
            write_conf(&dir, "plain2.conf", "s", ""),
            vec!["-r".into(), dir.display().to_string()],
            "is a directory, not a capture file",
        ),
        (
            write_conf(&dir, "spool.conf", "a-file/spool", "savesip = yes\n"),
            vec!["-r".into(), pcap.display().to_string()],
            "cannot be written",
        ),
        (write_conf(&dir, "if.conf", "s", "interface = nosuch0\n"), vec![], "no such network interface"),
    ];
    for (conf, extra, want) in cases {
        let mut args = vec!["--config-file".to_string(), conf.display().to_string()];
        args.extend(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let checked = run(&[a.as_slice(), &["--check-config"]].concat());
        let (out, err) = text(&checked);
        assert!(!checked.status.success() && err.contains(want), "--check-config {args:?}: {out}{err}");
        let ran = run(&a);
        let (_, run_err) = text(&ran);
        assert!(!ran.status.success() && run_err.contains(want), "run {args:?}: {run_err}");
        assert!(!dir.join("s").exists(), "a refused configuration created its spool");
    }
    // What a -r run does: no manager port, no CDR log unless asked for; and a run with these keys does it.
    let conf = write_conf(&dir, "r.conf", "rs", "savesip = yes\nsavertp = yes\n");
    let checked = run(&["--config-file", conf.to_str().unwrap(), "-r", pcap.to_str().unwrap(), "--check-config"]);
    let (out, err) = text(&checked);
    assert!(checked.status.success(), "{out}{err}");
    assert!(out.contains("manager: not opened for a capture file"), "{out}");
    assert!(out.contains("cdrs: standard output\n"), "{out}");
    assert!(out.contains("saving: SIP, RTP of each call in"), "{out}");
    assert!(!dir.join("rs").exists(), "--check-config created the spool");
    let ran = run(&["--config-file", conf.to_str().unwrap(), "-r", pcap.to_str().unwrap(), "--json"]);
    assert!(ran.status.success(), "{}", text(&ran).1);
    assert!(dir.join("rs").exists() && !dir.join("rs/cdrlog").exists(), "a -r run keeps no CDR log by default");
}

/// `savertp = true` saves RTP (it meant no before); a value that is not yes/no is refused with its file and line.
#[test]
fn yes_no_values_mean_what_they_say() {
    let dir = fresh_dir("fh-yes");
    let pcap = dir.join("calls.pcap");
    voxgen(&pcap, &["--calls", "2", "--duration", "1", "--seed", "4"]);
    for (word, saves) in [("true", true), ("on", true), ("1", true), ("Yes", true), ("false", false), ("off", false)] {
        let spool = format!("s-{word}");
        let conf = write_conf(&dir, &format!("{word}.conf"), &spool, &format!("savertp = {word}\ntar = no\n"));
        let o = run(&["--config-file", conf.to_str().unwrap(), "-r", pcap.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{word}: {}", text(&o).1);
        let rtp_files = walk(&dir.join(&spool)).iter().filter(|p| p.contains("/RTP/")).count();
        assert_eq!(rtp_files > 0, saves, "savertp = {word}: {rtp_files} RTP files");
    }
    let conf = write_conf(&dir, "bad.conf", "s", "\nsavesip = maybe\n");
    let o = run(&["--config-file", conf.to_str().unwrap(), "-r", pcap.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("bad.conf:2") && err.contains("savesip") && err.contains("yes/no"), "{err}");
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// A spool on a filesystem that fills up during the run: the run says so and exits non-zero.
#[test]
fn a_spool_that_fills_up_fails_the_run() {
    let dir = fresh_dir("fh-full");
    let pcap = dir.join("calls.pcap");
    voxgen(&pcap, &["--calls", "20", "--cps", "20", "--duration", "3", "--seed", "5"]);
    let spool = dir.join("small");
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "voxtap-test", spool.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(std::env::var("CI").is_err(), "cannot mount a small tmpfs (needs root), and CI=true requires it");
        eprintln!("SKIPPED: cannot mount a small tmpfs (needs root)");
        return;
    }
    let o = run(&["-r", pcap.to_str().unwrap(), "-S", "-R", "-d", spool.to_str().unwrap(), "--json"]);
    let _ = std::process::Command::new("umount").arg(&spool).status();
    let (_, err) = text(&o);
    assert!(!o.status.success(), "a full spool exited 0: {err}");
    assert!(err.contains("writes to the spool failed") && err.contains("incomplete"), "{err}");
}

/// The table: rows by start time, columns aligned, fixed decimals, a legend (also in --help).
#[test]
fn the_table_reads_well() {
    let dir = fresh_dir("fh-table");
    let pcap = dir.join("calls.pcap");
    voxgen(&pcap, &["--calls", "14", "--cps", "6", "--duration", "2", "--mix", "--loss", "0.02", "--seed", "9"]);
    let o = run(&["-r", pcap.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 15, "{out}");
    let header = lines[0];
    let starts: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "rows not in start order:\n{out}");
    // Every column after the first begins where its title does (right-aligned ones end where it ends).
    for title in ["caller ", "called ", "caller_ip "] {
        let at = header.find(title).unwrap();
        for l in &lines[1..] {
            assert_ne!(l.as_bytes()[at], b' ', "column {title:?} misaligned:\n{out}");
            assert_eq!(l.as_bytes()[at - 1], b' ', "column {title:?} misaligned:\n{out}");
        }
    }
    let end = header.find("resp").unwrap() + 4;
    for l in &lines[1..] {
        assert!(l.as_bytes()[end - 1].is_ascii_digit() && l.as_bytes()[end] == b' ', "resp misaligned:\n{out}");
        let dur = l.split_whitespace().nth(1).unwrap();
        assert!(dur.split('.').nth(1).is_some_and(|d| d.len() == 2), "duration {dur} not with 2 decimals");
    }
    assert!(out.contains("a: the stream the caller sends"), "no legend:\n{out}");
    let help = text(&run(&["--help"])).0;
    assert!(help.contains("a: the stream the caller sends"), "{help}");
}

/// SIP on a port outside sipport is counted and named, with the sipport line that would follow it.
#[test]
fn sip_on_an_unlisted_port_is_pointed_out() {
    let dir = fresh_dir("fh-ports");
    let pcap = dir.join("odd.pcap");
    let mut dgrams = Vec::new();
    for (i, id) in ["one@x", "two@x", "three@x"].iter().enumerate() {
        for mut d in sip_call(id, 1_000_000 * i as u64, "") {
            // The client on an ephemeral port, the server on 5260.
            d.src.1 = if d.src.0 == [10, 0, 0, 1] { 40000 + i as u16 } else { 5260 };
            d.dst.1 = if d.dst.0 == [10, 0, 0, 1] { 40000 + i as u16 } else { 5260 };
            dgrams.push(d);
        }
    }
    write_udp_pcap(&pcap, &dgrams);
    let o = run(&["-r", pcap.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    assert!(out.is_empty(), "{out}");
    let n = dgrams.len();
    assert!(err.contains(&format!("sip_other_ports={n}")), "{err}");
    assert!(err.contains(&format!("5260 ({n})")) && err.contains("sipport = 5060,5260"), "{err}");
    assert!(!err.contains("40000"), "an ephemeral port was named: {err}");
    let o = run(&["-r", pcap.to_str().unwrap(), "--json", "--sipports", "5060,5260"]);
    let (out, err) = text(&o);
    assert_eq!(out.lines().count(), 3, "{out}{err}");
    assert!(err.contains("sip_other_ports=0"), "{err}");
}

/// Messages name the address and the OS error once, and say what to do.
#[test]
fn errors_say_each_thing_once() {
    // The manager client without a port goes to the manager's usual one.
    let o = run(&["--manager-client", "127.0.0.1", "--command", "getversion"]);
    let (_, err) = text(&o);
    if !o.status.success() {
        assert!(err.contains("127.0.0.1:5029") && err.matches("Connection refused").count() == 1, "{err}");
        assert!(!err.contains("os error"), "{err}");
    }
    // Capturing without CAP_NET_RAW.
    let dir = fresh_dir("fh-errors");
    let bin = std::env::var("VOXTAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_voxtap").to_string());
    let o = std::process::Command::new("capsh")
        .args(["--drop=cap_net_raw", "--", "-c"])
        .arg(format!("{bin} -i lo -d {} --json", dir.join("s").display()))
        .output();
    match o {
        Ok(o) => {
            let (_, err) = text(&o);
            assert!(!o.status.success(), "{err}");
            assert_eq!(err.matches("Operation not permitted").count(), 1, "{err}");
            assert!(err.contains("CAP_NET_RAW") && !err.contains("os error"), "{err}");
        }
        Err(e) => assert!(std::env::var("CI").is_err(), "capsh (libcap2-bin) is needed: {e}"),
    }
}

/// A DPDK mbuf pool bigger than the memory given says which key to lower.
#[cfg(feature = "dpdk")]
#[test]
fn a_dpdk_pool_too_big_says_what_to_change() {
    let dir = fresh_dir("fh-dpdk");
    let conf = write_conf(
        &dir,
        "d.conf",
        "s",
        "dpdk = yes\ninterface = net_null0\ndpdk_vdev = net_null0\n\
         dpdk_eal_args = --no-pci --no-huge --no-shconf -m 64\ndpdk_nb_mbufs = 512\nexit_after_idle = 1\n",
    );
    let o = run(&["--config-file", conf.to_str().unwrap(), "--json"]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("lower dpdk_nb_mbufs") && err.contains("-m"), "{err}");
}
