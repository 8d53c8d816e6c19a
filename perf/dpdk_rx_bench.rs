//! Rx-core throughput through real DPDK without libpcap in the way: a harness thread plays the NIC on a
//! net_ring device (software Toeplitz over the 5-tuple picks the queue, the hash is stored in the mbuf as a NIC
//! would), rx threads poll their queues and run voxtap's rx stage (decode, classify, Call-ID hash, media table,
//! enqueue to owners), owners run the full analysis. Prints packets and CPU seconds per rx thread and per owner.
//!
//!   cargo run --release --example dpdk_rx_bench -- FILE.pcap [QUEUES] [OWNERS]
//!
//! The capture is held in memory; each rx queue's packets are fed in file order.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::bounded;

use voxtap::call::owner::{Owner, OwnerConfig};
use voxtap::call::Timeouts;
use voxtap::capture::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig};
use voxtap::capture::pcapfile::CaptureFile;
use voxtap::config::{Config, SaveRtp};
use voxtap::dispatch::rss::{hash_v4, SYMMETRIC_KEY};
use voxtap::dispatch::{RxShared, ToOwner};
use voxtap::runtime::rx_stage;
use voxtap::time::thread_cpu_secs;

fn queue_of(d: &[u8], n: usize) -> (usize, u32) {
    if d.len() >= 38 && d[12] == 0x08 && d[13] == 0 {
        let ihl = (d[14] & 0x0f) as usize * 4;
        let l4 = 14 + ihl;
        if d.len() >= l4 + 4 {
            let src = [d[26], d[27], d[28], d[29]];
            let dst = [d[30], d[31], d[32], d[33]];
            let h = hash_v4(
                &SYMMETRIC_KEY,
                src,
                dst,
                u16::from_be_bytes([d[l4], d[l4 + 1]]),
                u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]),
            );
            return (h as usize % n, h);
        }
    }
    (0, 0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let file = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("target/bench/g711.pcap"));
    let queues: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let owners: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);

    // The capture, split per queue as a NIC's RSS would.
    let cap = CaptureFile::open(&file)?;
    let mut per_queue: Vec<Vec<(Vec<u8>, u32)>> = (0..queues).map(|_| Vec::new()).collect();
    for f in cap.frames() {
        let (q, h) = queue_of(f.data, queues);
        per_queue[q].push((f.data.to_vec(), h));
    }
    let total: usize = per_queue.iter().map(Vec::len).sum();

    let eal = Eal::init(&[
        "--no-pci".into(),
        "--no-huge".into(),
        "-m".into(),
        "1024".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        "--lcores".into(),
        "0@(0-1)".into(),
        "--log-level".into(),
        "lib.eal:warning".into(),
        "--vdev".into(),
        "net_ring0".into(),
    ])?;
    let pool = Arc::new(Mempool::new(&eal, "bench_pool", 65_536, 256)?);
    let port_id = eal.port("net_ring0")?;
    let cfg_port = PortConfig {
        rx_queues: queues as u16,
        rx_descriptors: 1024,
        tx_queues: queues as u16,
        timestamps: false,
        promiscuous: false,
    };
    let port = Arc::new(Port::start(&eal, port_id, &cfg_port, &pool)?);
    assert_eq!(port.rx_queues as usize, queues, "net_ring gave fewer queues");

    // Owners.
    let cfg = Config::default();
    let (cdr_tx, cdr_rx) = bounded(1 << 16);
    let collector = thread::spawn(move || cdr_rx.iter().count());
    let (recycle_tx, recycle_rx) = bounded(owners * 32);
    let ocfg = OwnerConfig {
        timeouts: Timeouts::from_config(&cfg),
        id_sensor: None,
        save_sip: false,
        save_rtp: SaveRtp::No,
        save_rtcp: false,
        spooldir: cfg.spooldir.clone(),
        utc: true,
        blocking: true,
        sources: queues,
    };
    let mut to_owner = Vec::new();
    let mut owner_threads = Vec::new();
    for _ in 0..owners {
        let (tx, rx) = bounded::<ToOwner>(32);
        to_owner.push(tx);
        let o = Owner::new(ocfg.clone(), cdr_tx.clone(), None);
        let rc = recycle_tx.clone();
        owner_threads.push(thread::spawn(move || o.run(rx, rc)));
    }
    drop(cdr_tx);

    // The NIC: feed each queue's packets into its ring (tx queue i loops back to rx queue i).
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (port, pool, done) = (port.clone(), pool.clone(), done.clone());
        thread::spawn(move || {
            let mut idx = vec![0usize; per_queue.len()];
            loop {
                let mut left = false;
                for (q, pkts) in per_queue.iter().enumerate() {
                    let mut burst = Vec::with_capacity(32);
                    while burst.len() < 32 && idx[q] < pkts.len() {
                        let (d, h) = &pkts[idx[q]];
                        match pool.mbuf_with(d, Some(*h)) {
                            Some(m) => {
                                burst.push(m);
                                idx[q] += 1;
                            }
                            None => break,
                        }
                    }
                    let n = burst.len();
                    let sent = port.send(q as u16, burst);
                    idx[q] -= n - sent;
                    left |= idx[q] < pkts.len();
                }
                if !left {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // Rx cores.
    let shared = (queues > 1).then(|| RxShared::new(queues));
    let mut rx_threads = Vec::new();
    for q in 0..queues {
        let mut rx = rx_stage(&cfg, true, to_owner.clone(), recycle_rx.clone(), shared.as_ref(), q as u16);
        let mut queue = port.rx_queue(q as u16);
        let done = done.clone();
        rx_threads.push(thread::spawn(move || {
            let mut burst = MbufBurst::default();
            // CPU time is counted around non-empty bursts only: polling an empty ring while the harness
            // refills it is not the rx stage's cost.
            let mut cpu = 0.0;
            let mut n_total = 0u64;
            let mut empty = 0u32;
            loop {
                let n = queue.poll(&mut burst, 64);
                if n == 0 {
                    empty += 1;
                    if done.load(Ordering::Relaxed) && empty > 10_000 {
                        break;
                    }
                    continue;
                }
                empty = 0;
                let t0 = thread_cpu_secs();
                for i in 0..n {
                    burst.prefetch(i);
                    if let Some(p) = burst.get(i) {
                        rx.frame(0, 1, p.data);
                    }
                }
                n_total += n as u64;
                rx.retry_parked(false);
                cpu += thread_cpu_secs() - t0;
            }
            let (_, stats, _, _) = rx.stop();
            (n_total, cpu, stats.unknown_udp)
        }));
    }
    feeder.join().expect("feeder");
    let mut rx_results = Vec::new();
    for t in rx_threads {
        rx_results.push(t.join().expect("rx thread"));
    }
    for tx in &to_owner {
        let _ = tx.send(ToOwner::End(0));
    }
    drop(to_owner);
    let mut owner_cpu = Vec::new();
    let mut owner_pkts = 0;
    for t in owner_threads {
        let s = t.join().expect("owner");
        owner_cpu.extend(s.cpu_s.clone());
        owner_pkts += s.rtp_packets + s.sip_messages + s.rtcp_packets;
    }
    let cdrs = collector.join().expect("collector");
    port.stop();
    println!("file={} packets={total} queues={queues} owners={owners} cdrs={cdrs}", file.display());
    for (q, (n, cpu, unknown)) in rx_results.iter().enumerate() {
        println!(
            "rx{q}: packets={n} cpu={cpu:.3}s {:.2} Mpps per rx core (unknown_udp={unknown})",
            *n as f64 / cpu / 1e6
        );
    }
    let ocpu: f64 = owner_cpu.iter().sum();
    println!(
        "owners: packets={owner_pkts} cpu={owner_cpu:.3?}s {:.2} Mpps per owner core",
        owner_pkts as f64 / ocpu / 1e6
    );
    Ok(())
}
