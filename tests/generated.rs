//! Generated captures (perf/gen/voxgen.py) with loss, reordering, duplicates, jitter, IPv6, TCP SIP, fragments
//! and every link type: tshark computes the oracle (corpus tools/oracle.py) and voxtap must agree with it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-gen-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn oracle(corpus: &Path, capture: &Path, decode_as: &[&str]) -> serde_json::Value {
    let tool = corpus.join("tools/oracle.py");
    let out = Command::new("python3").arg(tool).arg("--file").arg(capture).args(decode_as).output().expect("oracle");
    assert!(out.status.success(), "oracle.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut p = capture.as_os_str().to_owned();
    p.push(".oracle.json");
    load_json(Path::new(&p))
}

fn check(name: &str, args: &[&str]) {
    let Some(corpus) = corpus_dir() else { return };
    if Command::new("tshark").arg("-v").output().is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("tshark is required under CI");
        }
        eprintln!("SKIPPED: tshark is not installed");
        return;
    }
    let f = tmp(&format!("{name}.pcap"));
    voxgen(&f, args);
    let o = oracle(&corpus, &f, &[]);
    let calls = o["calls"].as_array().map(|c| c.len()).unwrap_or(0);
    assert!(calls >= 5, "{name}: tshark sees only {calls} calls in the generated capture");
    let cdrs = run_json(&f, &["--workers", "3"]);
    assert_eq!(cdrs, run_json(&f, &["--workers", "1"]), "{name}: output depends on the number of workers");
    let bad = compare(name, &o, &cdrs, &Default::default());
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
    // Streams must really be there: the oracle's SDP streams all found above, and some loss was generated.
    let streams = o["rtp_streams_sdp"].as_array().map(|s| s.len()).unwrap_or(0);
    assert!(streams >= calls, "{name}: only {streams} RTP streams for {calls} calls");
}

#[test]
fn loss_reorder_duplicates_jitter_dtmf_rtcp() {
    check(
        "impaired",
        &[
            "--calls",
            "16",
            "--cps",
            "4",
            "--duration",
            "6",
            "--mix",
            "--dtmf",
            "--rtcp",
            "--loss",
            "0.03",
            "--reorder",
            "0.02",
            "--dup",
            "0.01",
            "--jitter",
            "30",
            "--register",
            "2",
            "--seed",
            "11",
        ],
    );
}

#[test]
fn ipv6_tcp_segmented_sll2_pcapng() {
    check(
        "tcp6",
        &[
            "--calls",
            "10",
            "--cps",
            "5",
            "--duration",
            "3",
            "--ipv6",
            "--sip-transport",
            "tcp",
            "--tcp-segment",
            "300",
            "--linktype",
            "sll2",
            "--pcapng",
            "--loss",
            "0.01",
            "--seed",
            "12",
        ],
    );
}

#[test]
fn fragments_raw_nanosecond_g722_bursts() {
    check(
        "frag4",
        &[
            "--calls",
            "10",
            "--cps",
            "5",
            "--duration",
            "3",
            "--fragment-mtu",
            "400",
            "--linktype",
            "raw",
            "--nanosecond",
            "--codec",
            "g722",
            "--loss",
            "0.02",
            "--burst-loss",
            "3",
            "--seed",
            "13",
        ],
    );
}

#[test]
fn ipv6_fragments_null_opus() {
    check(
        "frag6",
        &[
            "--calls",
            "8",
            "--cps",
            "4",
            "--duration",
            "3",
            "--ipv6",
            "--fragment-mtu",
            "500",
            "--linktype",
            "null",
            "--codec",
            "opus",
            "--jitter",
            "20",
            "--seed",
            "14",
        ],
    );
}

#[test]
fn wideband_dynamic_payload_sll_30ms() {
    check(
        "speex",
        &[
            "--calls",
            "8",
            "--cps",
            "4",
            "--duration",
            "3",
            "--codec",
            "dyn-speex16",
            "--linktype",
            "sll",
            "--ptime",
            "30",
            "--jitter",
            "60",
            "--reorder",
            "0.03",
            "--seed",
            "15",
        ],
    );
}
