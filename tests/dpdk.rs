//! Real DPDK with virtual devices (no NIC, no hugepages): a capture replayed through the net_pcap PMD gives the
//! same CDRs as `voxtap -r` on the file, whether the run ends by idling out or by SIGTERM.
#![cfg(feature = "dpdk")]

mod common;
#[path = "common/nic.rs"]
mod nic;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const EAL: &str = "--no-pci --no-huge -m 256 --no-shconf --no-telemetry --lcores 0@(0-1) --log-level lib.eal:warning";

fn conf(dir: &Path, name: &str, capture: &Path, extra: &str) -> PathBuf {
    let p = dir.join(name);
    let text = format!(
        "dpdk = yes\ninterface = net_pcap0\ndpdk_vdev = net_pcap0:rx_pcap={}\ndpdk_eal_args = {EAL}\n\
         dpdk_nb_mbufs = 8\ndpdk_nb_rxq = 1\nsipport = {CORPUS_SIPPORTS}\nspooldir = {}\n{extra}",
        capture.display(),
        dir.join("spool").display()
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
    use nic::softrss_v4;
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

/// Splits a capture into per-queue pcap files the way a NIC's RSS would (symmetric Toeplitz over the 5-tuple,
/// addresses only for IP fragments), so that a net_pcap device with one rx_pcap per queue plays a multi-queue
/// NIC. Returns the files and how many packets went to each.
fn shard(capture: &Path, n: usize, dir: &Path) -> (Vec<PathBuf>, Vec<usize>) {
    use voxtap::capture::pcapfile::CaptureFile;
    use voxtap::dispatch::rss::{hash_v4, toeplitz, SYMMETRIC_KEY};
    let mut files: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut v = Vec::new();
            for x in [0xa1b2_3c4du32, 0x0004_0002, 0, 0, 262_144, 1] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v
        })
        .collect();
    let mut counts = vec![0; n];
    let cap = CaptureFile::open(capture).unwrap();
    for f in cap.frames() {
        let d = f.data;
        let q = if d.len() >= 34 && d[12] == 0x08 && d[13] == 0 && d[14] >> 4 == 4 {
            let ihl = (d[14] & 0x0f) as usize * 4;
            let src: [u8; 4] = d[26..30].try_into().unwrap();
            let dst: [u8; 4] = d[30..34].try_into().unwrap();
            let frag = u16::from_be_bytes([d[20], d[21]]) & 0x3fff != 0;
            let l4 = 14 + ihl;
            let h = if !frag && (d[23] == 17 || d[23] == 6) && d.len() >= l4 + 4 {
                let sp = u16::from_be_bytes([d[l4], d[l4 + 1]]);
                let dp = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
                hash_v4(&SYMMETRIC_KEY, src, dst, sp, dp)
            } else {
                toeplitz(&SYMMETRIC_KEY, &[src, dst].concat())
            };
            h as usize % n
        } else {
            0
        };
        counts[q] += 1;
        let out = &mut files[q];
        let secs = f.ts.div_euclid(1_000_000_000) as u32;
        let nanos = f.ts.rem_euclid(1_000_000_000) as u32;
        for x in [secs, nanos, d.len() as u32, f.orig_len] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(d);
    }
    let paths = files
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("{}-q{i}of{n}.pcap", capture.file_name().unwrap().to_string_lossy()));
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect();
    (paths, counts)
}

#[test]
fn rss_sharded_queues_give_the_same_cdrs_for_any_queues_and_owners() {
    let dir = tmp();
    let cap = dir.join("mq.pcap");
    voxgen(&cap, &["--calls", "40", "--cps", "10", "--duration", "3", "--mix", "--dtmf", "--rtcp", "--seed", "61"]);
    let offline = run_json(&cap, &["--workers", "1"]);
    assert_eq!(offline.len(), 40);
    for queues in [1usize, 2, 4] {
        let (files, counts) = shard(&cap, queues, &dir);
        assert!(counts.iter().all(|&c| c > 0), "an empty queue: {counts:?}");
        let rx_pcap: Vec<String> = files.iter().map(|f| format!("rx_pcap={}", f.display())).collect();
        let c = dir.join(format!("mq{queues}.conf"));
        let text = format!(
            "dpdk = yes\ninterface = net_pcap0\ndpdk_vdev = net_pcap0:{}\ndpdk_eal_args = {EAL}\n\
             dpdk_nb_mbufs = 8\ndpdk_nb_rxq = {queues}\nexit_after_idle = 1\nspooldir = {}\n",
            rx_pcap.join(","),
            dir.join("spool").display()
        );
        std::fs::write(&c, text).unwrap();
        for owners in ["1", "2", "4"] {
            let out =
                voxtap().args(["--config-file", c.to_str().unwrap(), "--json", "--workers", owners]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let live = lines(&out.stdout);
            if live != offline {
                std::fs::write(dir.join("fail.json"), &out.stdout).unwrap();
                std::fs::write(dir.join("fail.err"), &out.stderr).unwrap();
            }
            assert_eq!(live, offline, "{queues} queues x {owners} owners: CDRs differ ({counts:?} packets per queue)");
        }
    }
}

#[test]
fn rx_and_owner_threads_are_pinned_as_configured() {
    let dir = tmp();
    let cap = dir.join("pin.pcap");
    voxgen(&cap, &["--calls", "4", "--cps", "4", "--duration", "1", "--seed", "71"]);
    let c = conf(
        &dir,
        "pin.conf",
        &cap,
        "exit_after_idle = 3\ndpdk_read_thread_cpu_affinity = 1\ndpdk_worker_thread_cpu_affinity = 0\n",
    );
    let mut child = voxtap()
        .args(["--config-file", c.to_str().unwrap(), "--json", "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut seen = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        seen.push((comm, cpus));
    }
    assert!(child.wait().unwrap().success());
    let owners: Vec<_> = seen.iter().filter(|(c, _)| c.starts_with("owner-")).collect();
    assert_eq!(owners.len(), 2, "{seen:?}");
    assert!(owners.iter().all(|(_, cpus)| cpus == "0"), "{seen:?}");
    assert!(seen.iter().any(|(c, cpus)| c == "voxtap" && cpus == "1"), "the rx (main) thread: {seen:?}");
}

/// A port and its pool clean up when dropped: the port is closed (its id no longer valid), the pool is freed
/// (a new one may take its name), and a port made afterwards in the same process receives packets. Each round
/// hot-plugs its own net_ring device, because closing a port releases it in DPDK.
#[test]
fn a_port_and_pool_dropped_and_made_again_work() {
    use std::sync::Arc;
    use voxtap::capture::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig};
    let args: Vec<String> = EAL.split_whitespace().map(String::from).collect();
    let eal = Eal::init(&args).unwrap();
    let frame: Vec<u8> = (0..60u8).collect();
    for round in 0..2 {
        let dev = format!("net_ring{}", 7 + round);
        eal.probe(&dev).unwrap();
        let id = eal.port(&dev).unwrap();
        let pool = Arc::new(Mempool::new(&eal, "dropped_and_made_again", 512, 32).unwrap());
        let cfg = PortConfig { rx_queues: 1, rx_descriptors: 128, tx_queues: 1, timestamps: false, promiscuous: false };
        let mut port = Port::start(&eal, id, &cfg, &pool).unwrap();
        let mut queue = port.take_rx_queue(0).expect("queue 0");
        assert!(port.take_rx_queue(0).is_none(), "queue 0 handed out twice");
        assert!(port.take_rx_queue(1).is_none() && port.take_rx_queues().is_empty());
        assert_eq!(nic::send(id, 0, &pool, [(&frame[..], Some(7))]), 1, "round {round}: not sent");
        let mut burst = MbufBurst::default();
        let mut n = 0;
        for _ in 0..1000 {
            n = queue.poll(&mut burst, 32);
            if n > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(n, 1, "round {round}: not received");
        let p = burst.get(0).unwrap();
        assert_eq!((p.data, p.rss), (&frame[..], Some(7)));
        // The burst's mbufs go back first, then the port closes once its last handle goes, then the pool.
        drop(burst);
        drop(port);
        assert!(eal.port_names().contains(&dev), "the port closed while its queue was still held");
        drop(queue);
        assert!(!eal.port_names().contains(&dev), "round {round}: {dev} still open after its drop");
        drop(pool);
    }
}
