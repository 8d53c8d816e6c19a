//! Socket sources (the HEP and IPFIX listeners; the central and the mirror receiver in `link.rs`): their listeners
//! run on the slow side's runtime and hand frames to one rx stage, which `drive` runs until SIGTERM/SIGINT or the
//! idle limit.

use super::*;

/// Live HEP ingest: the listener (UDP and TCP) feeds one rx stage until SIGTERM/SIGINT or `exit_after_idle`.
pub fn run_hep(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    use crate::capture::hep::HepListener;

    anyhow::ensure!(cfg.hep_bind_port != 0, "hep = yes needs hep_bind_port");
    let ip: std::net::IpAddr = cfg.hep_bind_ip.parse().context("hep_bind_ip")?;
    // The listener's frames go to the decoder's HEP port; it must not be switched off.
    let mut cfg = cfg.clone();
    if cfg.udp_port_hep == 0 {
        cfg.udp_port_hep = 9060;
    }
    let slow = slow::SlowSide::start()?;
    let mut listener =
        HepListener::bind(std::net::SocketAddr::new(ip, cfg.hep_bind_port), cfg.udp_port_hep, &cfg.net, &slow.handle())
            .with_context(|| format!("binding the HEP listener on {ip}:{}", cfg.hep_bind_port))?;
    tracing::info!(listen = %listener.local_addr(), "HEP listener started (UDP and TCP)");
    let mut res = drive(
        &cfg,
        workers,
        live,
        None,
        slow,
        &mut |t, f| listener.poll(t, &mut |ts, lt, d| f(ts, lt, d, None)),
        &mut |_| {},
    )?;
    tracing::info!(stats = ?listener.stats(), "HEP listener stopped");
    res.hep = Some(listener.stats());
    Ok(res)
}

/// Live IPFIX ingest from Oracle/Acme SBCs (TCP), until SIGTERM/SIGINT or `exit_after_idle`.
pub fn run_ipfix(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    use crate::capture::ipfix::IpfixListener;

    anyhow::ensure!(cfg.ipfix_bind_port != 0, "ipfix = yes needs ipfix_bind_port");
    let ip: std::net::IpAddr = cfg.ipfix_bind_ip.parse().context("ipfix_bind_ip")?;
    let slow = slow::SlowSide::start()?;
    let mut listener =
        IpfixListener::bind(std::net::SocketAddr::new(ip, cfg.ipfix_bind_port), &cfg.net, &slow.handle())
            .with_context(|| format!("binding the IPFIX listener on {ip}:{}", cfg.ipfix_bind_port))?;
    tracing::info!(listen = ?listener.local_addr().ok(), "IPFIX listener started (TCP)");
    // Frames carry the SBC's time, which is the packet clock: held near the receive time, so that an SBC whose
    // clock is wrong cannot put calls, spool folders and partitions anywhere, nor age every call at once.
    let window = secs(cfg.sender_time_window_s as i64);
    let mut poll = |t, f: &mut SensorSink<'_>| {
        listener.poll(t, &mut |ts, lt, data| {
            f(crate::time::clamp_to_receive(ts, crate::time::wall_clock(), window), lt, data, None)
        })
    };
    let mut res = drive(cfg, workers, live, None, slow, &mut poll, &mut |_| {})?;
    tracing::info!(stats = ?listener.stats(), "IPFIX listener stopped");
    res.ipfix = Some(listener.stats());
    Ok(res)
}

/// A socket source feeding one rx stage: `poll(timeout_ms, frame)` hands over what arrived.
pub(super) type Poll<'a> = dyn FnMut(i32, &mut SensorSink<'_>) -> usize + 'a;
/// A frame with the remote sensor that captured it (a central's packet-mode remotes), else `None`.
pub(super) type SensorSink<'a> = crate::link::merge::SensorFrames<'a>;
/// Where a socket source hands its frames: time, link type, bytes.
pub(super) type FrameSink<'a> = dyn FnMut(crate::time::Nanos, u16, &[u8]) + 'a;

/// A socket source feeding one rx stage until SIGTERM/SIGINT or `exit_after_idle`; `stopping` runs before the
/// owners are told to end and may hand over what the source still holds.
pub(super) fn drive(
    cfg: &Config,
    workers: usize,
    live: LiveOutput,
    remote_cdrs: Option<crossbeam_channel::Receiver<crate::link::central::RemoteCdrs>>,
    slow: slow::SlowSide,
    poll: &mut Poll<'_>,
    stopping: &mut dyn FnMut(&mut SensorSink<'_>),
) -> Result<RunResult> {
    let workers = workers.clamp(1, 256);
    let started = Instant::now();
    let pipeline = Pipeline::start(cfg, workers, false, 1, Some(live), remote_cdrs, slow)?;
    install_stop_handlers();
    let idle_limit = (cfg.exit_after_idle > 0).then(|| std::time::Duration::from_secs(cfg.exit_after_idle as u64));
    let mut rx = pipeline.rx(cfg, false, None, 0);
    let cpu0 = crate::time::thread_cpu_secs();
    let mut last_packet = Instant::now();
    // Packet time while the source is quiet: the newest packet's time, moving on in real time. A replay (a remote
    // sending an old capture) keeps its own times, and so does an SBC's IPFIX (held within sender_time_window_s):
    // the wall clock would age them at once. HEP frames come stamped with their receive time.
    let mut newest: Option<crate::time::Nanos> = None;
    while !STOP.load(Ordering::Relaxed) {
        let got = poll(50, &mut |ts, lt, data, sensor| {
            newest = Some(newest.map_or(ts, |n| n.max(ts)));
            rx.frame_from(ts, lt, data, sensor)
        });
        rx.retry_parked(false);
        if got > 0 {
            last_packet = Instant::now();
        } else {
            match newest {
                Some(n) => rx.idle_clock(n.saturating_add(last_packet.elapsed().as_nanos() as i64)),
                None => rx.publish(),
            }
            if idle_limit.is_some_and(|l| last_packet.elapsed() >= l) {
                break;
            }
        }
    }
    stopping(&mut |ts, lt, data, sensor| rx.frame_from(ts, lt, data, sensor));
    rx.router.stats.cpu_s.push(crate::time::thread_cpu_secs() - cpu0);
    rx.router.stats.packets_per_core.push(rx.decoder.stats.frames);
    pipeline.finish(rx, started, None)
}
