//! Real DPDK with virtual devices (no NIC, no hugepages): a capture replayed through the net_pcap PMD gives the
//! same CDRs as `voxtap -r` on the file, whether the run ends by idling out or by SIGTERM.
#![cfg(feature = "dpdk")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const EAL: &str = "--no-pci --no-huge -m 256 --no-shconf --no-telemetry --lcores 0@(0-1) --log-level lib.eal:warning";

fn conf(dir: &Path, name: &str, capture: &Path, extra: &str) -> PathBuf {
    let p = dir.join(name);
    let text = format!(
        "dpdk = yes\ninterface = net_pcap0\ndpdk_vdev = net_pcap0:rx_pcap={}\ndpdk_eal_args = {EAL}\n\
         dpdk_nb_mbufs = 8\ndpdk_nb_rxq = 1\nsipport = {CORPUS_SIPPORTS}\n{extra}",
        capture.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-dpdk-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Ethernet captures only: a port delivers Ethernet frames, whatever link type a file was captured with.
fn ethernet(p: &Path) -> bool {
    std::fs::read(p).map(|b| b.len() > 24 && b[..4] == [0xd4, 0xc3, 0xb2, 0xa1] && b[20] == 1).unwrap_or(false)
}

#[test]
fn net_pcap_gives_the_same_cdrs_as_reading_the_file() {
    let Some(corpus) = corpus_dir() else { return };
    let dir = tmp();
    let mut checked = 0;
    for (name, capture, _) in oracles_with_calls(&corpus) {
        if !ethernet(&capture) {
            continue;
        }
        let c = conf(&dir, &format!("{}.conf", name.replace('/', "_")), &capture, "exit_after_idle = 1\n");
        let out = voxtap().args(["--config-file", c.to_str().unwrap(), "--json", "--workers", "2"]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let live = lines(&out.stdout);
        let offline = run_json(&capture, &["--sipports", CORPUS_SIPPORTS, "--workers", "2"]);
        assert_eq!(live, offline, "{name}: CDRs through net_pcap differ from -r");
        assert!(!live.is_empty());
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} Ethernet captures with calls");
}

#[test]
fn sigterm_stops_drains_and_closes_calls() {
    let dir = tmp();
    let cap = dir.join("gen.pcap");
    voxgen(&cap, &["--calls", "20", "--cps", "5", "--duration", "3", "--mix", "--dtmf", "--seed", "41"]);
    let c = conf(&dir, "term.conf", &cap, "");
    let child = voxtap()
        .args(["--config-file", c.to_str().unwrap(), "--json", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The file is replayed within a fraction of a second; then the capture idles until told to stop.
    std::thread::sleep(Duration::from_secs(4));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let live = lines(&out.stdout);
    let offline = run_json(&cap, &["--workers", "2"]);
    assert_eq!(live.len(), 20);
    assert_eq!(live, offline, "CDRs after SIGTERM differ from -r");
}

#[test]
fn software_toeplitz_equals_dpdk_softrss() {
    use voxtap::capture::dpdk::softrss_v4;
    use voxtap::dispatch::rss::{hash_v4, DEFAULT_KEY, SYMMETRIC_KEY};
    let mut x = 0x1234_5678u32;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let (src, dst) = (x, x.rotate_left(11) ^ 0x9e37_79b9);
        let (sp, dp) = (x as u16, (x >> 16) as u16);
        for key in [&DEFAULT_KEY, &SYMMETRIC_KEY] {
            assert_eq!(hash_v4(key, src.to_be_bytes(), dst.to_be_bytes(), sp, dp), softrss_v4(src, dst, sp, dp, key));
        }
    }
}
