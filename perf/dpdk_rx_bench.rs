//! Rx-core throughput through real DPDK without libpcap in the way: a harness thread plays the NIC on a
//! net_ring device (software Toeplitz over the 5-tuple picks the queue, the hash is stored in the mbuf as a NIC
//! would), rx threads poll their queues and run voxtap's rx stage (decode, classify, Call-ID hash, media table,
//! enqueue to owners), owners run the full analysis. Prints packets and CPU seconds per rx thread and per owner.
//!
//!   cargo run --release --example dpdk_rx_bench -- FILE.pcap [QUEUES] [OWNERS]
//!
//! The capture is held in memory and fed in file order across queues (a full queue holds the others up, as the
//! wire's timing would keep queues in step). Rx CPU is the thread's CPU time while its queue has packets, less
//! what it spent waiting for a full owner ring; the harness checks that every packet it sent was received.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::bounded;

use voxtap::call::owner::{Owner, OwnerConfig};
use voxtap::call::Timeouts;
use voxtap::capture::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig, RegisteredThread};

#[path = "../tests/common/nic.rs"]
mod nic;
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

    // The capture in file order, each packet with the queue a NIC's RSS would pick.
    let cap = CaptureFile::open(&file)?;
    let mut packets: Vec<(usize, Vec<u8>, u32)> = Vec::new();
    for f in cap.frames() {
        let (q, h) = queue_of(f.data, queues);
        packets.push((q, f.data.to_vec(), h));
    }
    let total = packets.len();

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
    let mut port = Port::start(&eal, port_id, &cfg_port, &pool)?;
    assert_eq!(port.rx_queues as usize, queues, "net_ring gave fewer queues");
    let rx_queues = port.take_rx_queues();

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
        gauge: Default::default(),
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
        let (pool, done) = (pool.clone(), done.clone());
        thread::spawn(move || {
            // An lcore id gives the thread a mempool cache: without one, every allocation and free goes to the
            // pool's shared ring, whose waiters spin on each other when more threads than CPUs are busy.
            let _lcore = RegisteredThread::register(&eal);
            // Packets go out in file order, as they would arrive on the wire: a queue whose ring is full holds
            // up the others (a real NIC would count drops instead), so no rx core runs far ahead of another
            // and media is not parked for an SDP that another core has not read yet.
            let mut pending: Vec<Vec<usize>> = (0..queues).map(|_| Vec::with_capacity(32)).collect();
            let mut sent_total = vec![0u64; queues];
            let flush = |q: usize, pending: &mut Vec<usize>, sent_total: &mut Vec<u64>| {
                let mut from = 0;
                while from < pending.len() {
                    let frames = pending[from..].iter().map(|&i| (&packets[i].1[..], Some(packets[i].2)));
                    let sent = nic::send(port_id, q as u16, &pool, frames);
                    from += sent;
                    sent_total[q] += sent as u64;
                    if sent == 0 {
                        std::hint::spin_loop();
                    }
                }
                pending.clear();
            };
            for (i, (q, _, _)) in packets.iter().enumerate() {
                pending[*q].push(i);
                if pending[*q].len() == 32 {
                    flush(*q, &mut pending[*q], &mut sent_total);
                }
            }
            for (q, p) in pending.iter_mut().enumerate() {
                flush(q, p, &mut sent_total);
            }
            done.store(true, Ordering::Release);
            sent_total
        })
    };

    // Rx cores.
    let shared = (queues > 1).then(|| RxShared::new(queues));
    let mut rx_threads = Vec::new();
    for mut queue in rx_queues {
        let q = queue.queue();
        let mut rx = rx_stage(&cfg, true, to_owner.clone(), recycle_rx.clone(), shared.as_ref(), q);
        let done = done.clone();
        rx_threads.push(thread::spawn(move || {
            let _lcore = RegisteredThread::register(&eal);
            let mut burst = MbufBurst::default();
            // CPU time is counted over busy stretches (from the first non-empty poll to the next empty one), so
            // the clock is read only when the ring runs dry, not per burst. An empty poll sleeps briefly so that on
            // a machine with fewer CPUs than busy threads the rx core does not take the CPU from the harness and
            // the owners only to spin (on a dedicated core it would poll without pause).
            let mut cpu = 0.0;
            let mut busy_since: Option<f64> = None;
            let mut n_total = 0u64;
            let mut bursts = 0u64;
            loop {
                // Read before polling: once the harness has sent everything, an empty poll means drained.
                let finished = done.load(Ordering::Acquire);
                let n = queue.poll(&mut burst, 64);
                if n == 0 {
                    if let Some(t) = busy_since.take() {
                        cpu += thread_cpu_secs() - t;
                    }
                    if finished {
                        break;
                    }
                    thread::sleep(std::time::Duration::from_micros(20));
                    continue;
                }
                if busy_since.is_none() {
                    busy_since = Some(thread_cpu_secs());
                }
                for i in 0..n {
                    burst.prefetch(i);
                    if let Some(p) = burst.get(i) {
                        rx.frame(0, 1, p.data);
                    }
                }
                n_total += n as u64;
                bursts += 1;
                rx.retry_parked(false);
            }
            let (_, stats, _, _) = rx.stop();
            // Waiting for a full owner ring is the owners' pace, not the rx stage's cost.
            let cpu = cpu - stats.owner_wait_cpu_s;
            (n_total, cpu, stats.unknown_udp, stats.media_parked, bursts, stats.owner_wait_cpu_s)
        }));
    }
    let sent = feeder.join().expect("feeder");
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
    // Stops and closes the port: the rx threads' queues went with them.
    drop(port);
    println!("file={} packets={total} queues={queues} owners={owners} cdrs={cdrs}", file.display());
    for (q, (n, cpu, unknown, parked, bursts, wait)) in rx_results.iter().enumerate() {
        if *n != sent[q] {
            println!("rx{q}: MISSING {} of the {} packets the harness sent", sent[q] - n, sent[q]);
        }
        println!(
            "rx{q}: packets={n} cpu={cpu:.3}s {:.2} Mpps per rx core (unknown_udp={unknown}, parked={parked}, {:.1} packets per burst, \
             {wait:.3}s waiting for owners)",
            *n as f64 / cpu / 1e6,
            *n as f64 / (*bursts).max(1) as f64
        );
    }
    let ocpu: f64 = owner_cpu.iter().sum();
    println!(
        "owners: packets={owner_pkts} cpu={owner_cpu:.3?}s {:.2} Mpps per owner core",
        owner_pkts as f64 / ocpu / 1e6
    );
    Ok(())
}
