//! Live captures on the fast side: DPDK ports (one rx core per receive queue) and AF_PACKET rings (one rx thread
//! per fanout member), each polled until SIGTERM/SIGINT or the idle limit.

use super::*;

/// EAL arguments from the configuration: `dpdk_eal_args`, then `-a` per PCI device, `--vdev` per virtual device
/// (`name:args` or `name,args`) and `--lcores`.
#[cfg(feature = "dpdk")]
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let mut a: Vec<String> = cfg.dpdk_eal_args.split_whitespace().map(String::from).collect();
    for p in &cfg.dpdk_pci_device {
        a.push("-a".into());
        a.push(p.clone());
    }
    for v in &cfg.dpdk_vdev {
        a.push("--vdev".into());
        a.push(v.replacen(':', ",", 1));
    }
    if let Some(l) = &cfg.dpdk_lcores_affinity {
        a.push("--lcores".into());
        a.push(l.clone());
    }
    a
}

/// Live capture from a DPDK port until SIGTERM/SIGINT (or `exit_after_idle` seconds without packets).
#[cfg(feature = "dpdk")]
pub fn run_dpdk(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    let workers = workers.clamp(1, 256);
    let started = Instant::now();
    let dpdk_port::OpenPort { mut port, eal, port_id, name, file_times } = dpdk_port::open(cfg, "voxtap_pool")?;
    tracing::info!(port = port_id, name = %name, rx_queues = port.rx_queues, rss = port.rss, timestamps = port.timestamps, "DPDK port started");
    // A pcap virtual device replays a file: waiting for busy owners loses nothing there, so it behaves like
    // `-r`. A real port never waits: a full ring is a counted drop.
    let replay = port.driver.starts_with("net_pcap");
    let pipeline =
        Pipeline::start(cfg, workers, replay, port.rx_queues as usize, Some(live), None, slow::SlowSide::start()?)?;
    install_stop_handlers();
    let idle_limit = (cfg.exit_after_idle > 0).then(|| std::time::Duration::from_secs(cfg.exit_after_idle as u64));
    let burst_size = cfg.dpdk_pkt_burst;
    // One rx core per queue; with several, they tell each other the SDP endpoints they see and share the
    // Call-ID hash key.
    let shared = (port.rx_queues > 1).then(|| crate::dispatch::RxShared::new(port.rx_queues as usize));
    // Each queue is moved to the one core that polls it; queue 0 stays on this thread.
    let mut queues = port.take_rx_queues().into_iter();
    let mut queue = queues.next().ok_or_else(|| anyhow::anyhow!("DPDK port {port_id} has no receive queue"))?;
    let mut threads = Vec::new();
    for mut queue in queues {
        let q = queue.queue();
        let mut rx = pipeline.rx(cfg, replay, shared.as_ref(), q);
        let cpus = cfg.rx_cpus.clone();
        threads.push(thread::Builder::new().name(format!("rx-{q}")).spawn(move || {
            pin_thread(&cpus, q as usize);
            // An lcore id gives this rx core its own mempool cache for freeing mbufs.
            let _lcore = crate::capture::dpdk::RegisteredThread::register(&eal);
            poll_queue(&mut queue, &mut rx, file_times, idle_limit, burst_size, &mut |_| {});
            rx
        })?);
    }
    let mut rx = pipeline.rx(cfg, replay, shared.as_ref(), 0);
    pin_thread(&cfg.rx_cpus, 0);
    let mut last_status = Instant::now();
    poll_queue(&mut queue, &mut rx, file_times, idle_limit, burst_size, &mut |rx| {
        if last_status.elapsed() >= std::time::Duration::from_secs(10) {
            last_status = Instant::now();
            let st = port.stats();
            tracing::info!(
                ipackets = st.ipackets, ibytes = st.ibytes, imissed = st.imissed, rx_nombuf = st.rx_nombuf,
                ierrors = st.ierrors, per_queue = ?st.q_ipackets,
                ring_full_drops = rx.router.stats.ring_full_drops.iter().sum::<u64>(),
                decode_errors = rx.decoder.stats.errors, "status"
            );
        }
    });
    let mut rxs = vec![rx];
    for t in threads {
        rxs.push(t.join().map_err(|_| anyhow::anyhow!("an rx thread panicked"))?);
    }
    let st = port.stats();
    // The port stops and closes (and its pool goes) when the last handle on it goes: the rx threads' queues
    // went with them, queue 0's and the port's go here, before the pipeline's end.
    drop(queue);
    drop(port);
    tracing::info!(ipackets = st.ipackets, imissed = st.imissed, rx_nombuf = st.rx_nombuf, "DPDK capture stopped");
    let mut res = pipeline.finish_many(rxs, started, None)?;
    res.port = Some(st);
    Ok(res)
}

/// One rx core's loop over its queue until SIGTERM/SIGINT or the idle limit.
#[cfg(feature = "dpdk")]
fn poll_queue(
    queue: &mut crate::capture::dpdk::RxQueue,
    rx: &mut Rx,
    file_times: bool,
    idle_limit: Option<std::time::Duration>,
    burst_size: u16,
    periodic: &mut dyn FnMut(&Rx),
) {
    use std::sync::atomic::Ordering;
    let mut burst = crate::capture::dpdk::MbufBurst::default();
    let mut jumbo = Vec::new();
    let mut last_packet = Instant::now();
    let mut idle_polls = 0u32;
    let cpu0 = crate::time::thread_cpu_secs();
    let frames0 = rx.decoder.stats.frames;
    while !STOP.load(Ordering::Relaxed) {
        let n = queue.poll(&mut burst, burst_size);
        let now = crate::time::wall_clock();
        dpdk_port::hand_on(&burst, n, file_times, now, &mut jumbo, &mut |t, l, d| rx.frame(t, l, d));
        rx.retry_parked(false);
        if n > 0 {
            last_packet = Instant::now();
            idle_polls = 0;
        } else {
            idle_polls += 1;
            if idle_polls == 64 {
                // Quiet link: hand partial batches to the owners so live calls keep moving.
                rx.flush();
            }
            if idle_polls.is_multiple_of(4096) {
                if file_times {
                    // A replayed file is done on this queue: owners need not wait for its clock.
                    rx.mark_done();
                } else {
                    // Live: packet time is wall-clock time; it moves on even when the link is quiet.
                    rx.idle_clock(crate::time::wall_clock());
                }
            }
            if idle_polls > 1024 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            if idle_limit.is_some_and(|l| last_packet.elapsed() >= l) {
                break;
            }
        }
        periodic(rx);
    }
    rx.router.stats.cpu_s.push(crate::time::thread_cpu_secs() - cpu0);
    rx.router.stats.packets_per_core.push(rx.decoder.stats.frames - frames0);
}

/// Live capture with AF_PACKET (TPACKET_V3 rings) on the configured interfaces, until SIGTERM/SIGINT (or
/// `exit_after_idle` seconds without packets). With `rx_threads = N` every interface gets N rings joined in a
/// PACKET_FANOUT group (the kernel's flow hash, the same for both directions of a flow) and N rx threads each
/// read one ring per interface; they share the media table like DPDK rx cores.
pub fn run_afpacket(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    use crate::capture::afpacket::{Ring, RingStats};

    let workers = workers.clamp(1, 256);
    let threads = cfg.rx_threads.clamp(1, 64) as usize;
    let started = Instant::now();
    // rings[t] = thread t's ring on every interface.
    let mut rings: Vec<Vec<Ring>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, iface) in cfg.interface.iter().enumerate() {
        // One fanout group per interface and process.
        let group = ((std::process::id() as u16) ^ (k as u16).wrapping_mul(0x9e37)) | 1;
        for t in rings.iter_mut() {
            let ring = Ring::open(iface, cfg.promisc, (threads > 1).then_some(group))?;
            if let Some(f) = cfg.filter.as_deref() {
                ring.set_filter(f)?;
            }
            t.push(ring);
        }
    }
    anyhow::ensure!(!cfg.interface.is_empty(), "no interface to capture on");
    let pipeline = Pipeline::start(cfg, workers, false, threads, Some(live), None, slow::SlowSide::start()?)?;
    install_stop_handlers();
    tracing::info!(interfaces = ?cfg.interface, rx_threads = threads, "AF_PACKET capture started");
    let idle_limit = (cfg.exit_after_idle > 0).then(|| std::time::Duration::from_secs(cfg.exit_after_idle as u64));
    let shared = (threads > 1).then(|| crate::dispatch::RxShared::new(threads));
    let mut handles = Vec::new();
    for (t, mine) in rings.into_iter().enumerate() {
        let mut rx = pipeline.rx(cfg, false, shared.as_ref(), t as u16);
        let cpus = cfg.rx_cpus.clone();
        handles.push(thread::Builder::new().name(format!("rx-{t}")).spawn(move || {
            pin_thread(&cpus, t);
            let stats = poll_rings(mine, &mut rx, idle_limit);
            (rx, stats)
        })?);
    }
    let mut rxs = Vec::new();
    let mut totals = RingStats::default();
    let mut per_thread = Vec::new();
    for h in handles {
        let (rx, s) = h.join().map_err(|_| anyhow::anyhow!("an rx thread panicked"))?;
        totals.packets += s.packets;
        totals.drops += s.drops;
        per_thread.push(s.packets);
        rxs.push(rx);
    }
    tracing::info!(
        kernel_packets = totals.packets,
        ?per_thread,
        kernel_drops = totals.drops,
        "AF_PACKET capture stopped"
    );
    let mut res = pipeline.finish_many(rxs, started, None)?;
    res.kernel_drops = Some(totals.drops);
    Ok(res)
}

/// One AF_PACKET rx thread: its rings (one per interface) in turn, until stop or the idle limit.
fn poll_rings(
    mut rings: Vec<crate::capture::afpacket::Ring>,
    rx: &mut Rx,
    idle_limit: Option<std::time::Duration>,
) -> crate::capture::afpacket::RingStats {
    use std::sync::atomic::Ordering;
    let mut totals = crate::capture::afpacket::RingStats::default();
    let timeout = if rings.len() == 1 { 50 } else { 5 };
    let mut last_packet = Instant::now();
    let mut last_status = Instant::now();
    let cpu0 = crate::time::thread_cpu_secs();
    let frames0 = rx.decoder.stats.frames;
    let add = |totals: &mut crate::capture::afpacket::RingStats, rings: &[crate::capture::afpacket::Ring]| {
        for r in rings {
            let s = r.stats();
            totals.packets += s.packets;
            totals.drops += s.drops;
            totals.freezes += s.freezes;
        }
    };
    let rules = rx.rules();
    let mut filter_gen = rules.as_ref().map(|r| r.generation()).unwrap_or(0);
    while !STOP.load(Ordering::Relaxed) {
        // A reload with another capture filter: applied to this thread's rings.
        if let Some(r) = rules.as_ref().filter(|r| r.generation() != filter_gen) {
            filter_gen = r.generation();
            let f = r.current().filter.clone().unwrap_or_default();
            for ring in &rings {
                if let Err(e) = ring.set_filter(&f) {
                    tracing::warn!(iface = %ring.iface(), filter = %f, error = %e, "reload: capture filter not applied");
                }
            }
        }
        let mut got = 0;
        for ring in rings.iter_mut() {
            got += ring.poll(timeout, &mut |p| rx.frame(p.ts, p.link_type, p.data));
        }
        rx.retry_parked(false);
        if got > 0 {
            last_packet = Instant::now();
        } else {
            // A quiet link: packet time follows the host clock; partial batches go to the owners.
            rx.idle_clock(crate::time::wall_clock());
            if idle_limit.is_some_and(|l| last_packet.elapsed() >= l) {
                break;
            }
        }
        if last_status.elapsed() >= std::time::Duration::from_secs(10) {
            last_status = Instant::now();
            add(&mut totals, &rings);
            tracing::info!(
                interfaces = ?rings.iter().map(|r| r.iface()).collect::<Vec<_>>(),
                kernel_packets = totals.packets, kernel_drops = totals.drops,
                ring_full_drops = rx.router.stats.ring_full_drops.iter().sum::<u64>(),
                decode_errors = rx.decoder.stats.errors, "status"
            );
        }
    }
    add(&mut totals, &rings);
    rx.router.stats.cpu_s.push(crate::time::thread_cpu_secs() - cpu0);
    rx.router.stats.packets_per_core.push(rx.decoder.stats.frames - frames0);
    totals
}
