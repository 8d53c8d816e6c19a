//! The two link roles that are sources of their own: the central (remotes' CDRs and packets in) and a remote
//! that forwards raw packets (`packetbuffer_sender = yes`) instead of analysing them.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};
use crossbeam_channel::bounded;

use super::{drive, LiveOutput, RunResult};
use crate::capture::input::CaptureInput;
use crate::config::Config;
use crate::link::central::{Central, CentralConfig};
use crate::link::forward::{ForwardStats, Forwarder};
use crate::link::merge::Merge;
use crate::link::mirror::{MirrorReceiver, MirrorSendStats, MirrorSender};
use crate::link::remote::{LinkSink, LinkStats, RemoteConfig};
use crate::store::mysql::DbConfig;

/// The central: remotes connect to `server_bind:server_bind_port`; their CDRs are stored here, their packets
/// analysed here, until SIGTERM/SIGINT (or `exit_after_idle` seconds without packets).
pub fn run_central(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    let ip: IpAddr = cfg.server_bind.parse().context("server_bind must be an IP address")?;
    let slow = super::slow::SlowSide::start()?;
    let (cdr_tx, cdr_rx) = bounded(64);
    let (pkt_tx, pkt_rx) = bounded(256);
    let central = Central::start(
        CentralConfig {
            bind: SocketAddr::new(ip, cfg.server_bind_port),
            password: cfg.server_password.clone(),
            max_time_diff_s: cfg.client_server_connect_maximum_time_diff_s,
            own_id: cfg.id_sensor,
            db: DbConfig::from_config(cfg),
            allow_remote_gui: cfg.manager_enable_unencrypted,
            net: cfg.net.clone(),
        },
        cdr_tx,
        pkt_tx,
        &slow.handle(),
    )
    .with_context(|| format!("binding the central's link port {ip}:{}", cfg.server_bind_port))?;
    let merge = RefCell::new(Merge::new(pkt_rx));
    let mut central = Some(central);
    let mut central_stats = None;
    let mut res = drive(cfg, workers, live, Some(cdr_rx), slow, &mut |t, f| merge.borrow_mut().poll(t, f), &mut |f| {
        // Links close first (a batch being stored finishes), then what the merge holds goes to the owners.
        if let Some(c) = central.take() {
            central_stats = Some(c.stop());
        }
        merge.borrow_mut().drain(f);
    })?;
    tracing::info!(stats = ?central_stats, "central stopped");
    res.central = central_stats;
    res.merge = Some(merge.into_inner().stats);
    Ok(res)
}

/// A remote with `packetbuffer_sender = yes` reading a capture file: its packets go to the central in
/// compressed batches; returns once the central has confirmed all of them.
pub fn send_packets_file(cfg: &Config, path: &Path) -> Result<(ForwardStats, LinkStats)> {
    // Opened before the link starts, so that a file it cannot read stops it at once.
    let mut input = CaptureInput::open(path)?;
    input.show_progress();
    super::install_stop_handlers_once();
    // Ctrl-C: what is queued stays queued, and the report says so.
    input.stop_on(&super::STOP);
    let slow = super::slow::SlowSide::start()?;
    let mut fwd = forwarder(cfg, true, &slow.handle())?;
    if let Some(t) = input.for_each(|f| fwd.frame(f.ts, f.link_type, f.data)) {
        tracing::warn!(file = %input.name().display(), problem = %t, "capture file ends early; sent what was there");
    }
    Ok(fwd.finish(None))
}

/// `file`: a capture file's run, which must end (see `RemoteConfig::bounded`); it waits for room in the queue.
fn forwarder(cfg: &Config, file: bool, rt: &tokio::runtime::Handle) -> Result<Forwarder> {
    let mut rc = RemoteConfig::from_config(cfg).context("packetbuffer_sender needs server_destination")?;
    if file {
        rc = rc.bounded(cfg.link_send_timeout, &super::STOP);
    }
    let sink = LinkSink::start(rc, None, rt).context("opening the link queue")?;
    Ok(Forwarder::new(sink, file))
}

/// One live source of frames: `poll(timeout_ms, sink)` hands over what arrived.
type Source = Box<dyn FnMut(i32, &mut super::FrameSink<'_>) -> usize>;

/// The live sources a forwarding sensor reads: AF_PACKET interfaces, or a HEP or IPFIX listener.
fn live_sources(cfg: &Config, role: &str, rt: &tokio::runtime::Handle) -> Result<Vec<Source>> {
    use crate::capture::afpacket::Ring;
    let mut sources: Vec<Source> = Vec::new();
    if cfg.hep {
        let ip: IpAddr = cfg.hep_bind_ip.parse().context("hep_bind_ip")?;
        let port = if cfg.udp_port_hep == 0 { 9060 } else { cfg.udp_port_hep };
        let mut l = crate::capture::hep::HepListener::bind(SocketAddr::new(ip, cfg.hep_bind_port), port, &cfg.net, rt)
            .with_context(|| format!("binding the HEP listener on {ip}:{}", cfg.hep_bind_port))?;
        sources.push(Box::new(move |t, f| l.poll(t, f)));
    } else if cfg.ipfix {
        let ip: IpAddr = cfg.ipfix_bind_ip.parse().context("ipfix_bind_ip")?;
        let mut l = crate::capture::ipfix::IpfixListener::bind(SocketAddr::new(ip, cfg.ipfix_bind_port), &cfg.net, rt)
            .with_context(|| format!("binding the IPFIX listener on {ip}:{}", cfg.ipfix_bind_port))?;
        sources.push(Box::new(move |t, f| l.poll(t, f)));
    } else if cfg.dpdk || cfg.interface.iter().any(|i| i.starts_with("dpdk:")) {
        sources.push(dpdk_source(cfg, role)?);
    } else {
        anyhow::ensure!(!cfg.interface.is_empty(), "{role} needs -r FILE, an interface, hep or ipfix to forward");
        let timeout = if cfg.interface.len() == 1 { 50 } else { 5 };
        for iface in &cfg.interface {
            let mut ring = Ring::open(iface, cfg.promisc, None)?;
            if let Some(f) = cfg.filter.as_deref() {
                ring.set_filter(f)?;
            }
            sources.push(Box::new(move |_, f| ring.poll(timeout, &mut |p| f(p.ts, p.link_type, p.data))));
        }
    }
    Ok(sources)
}

/// A DPDK port as a forwarding source: every receive queue polled in turn by the forwarding thread (the
/// forwarder, not the analysis, is the work here). A `net_pcap` replay keeps the file's times.
#[cfg(feature = "dpdk")]
fn dpdk_source(cfg: &Config, role: &str) -> Result<Source> {
    let super::dpdk_port::OpenPort { mut port, port_id, name, file_times, .. } =
        super::dpdk_port::open(cfg, "voxtap_fwd")?;
    tracing::info!(port = port_id, %name, rx_queues = port.rx_queues, role, "DPDK port started for forwarding");
    // The queues keep the port open, and it its pool, as long as the source holds them.
    let mut queues = port.take_rx_queues();
    let burst_size = cfg.dpdk_pkt_burst;
    let mut burst = crate::capture::dpdk::MbufBurst::default();
    let mut jumbo = Vec::new();
    let mut idle = 0u32;
    Ok(Box::new(move |_, f| {
        let now = crate::time::wall_clock();
        let mut got = 0;
        for q in queues.iter_mut() {
            let n = q.poll(&mut burst, burst_size);
            super::dpdk_port::hand_on(&burst, n, file_times, now, &mut jumbo, f);
            got += n;
        }
        if got == 0 {
            idle += 1;
            if idle > 1024 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        } else {
            idle = 0;
        }
        got
    }))
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_source(_cfg: &Config, _role: &str) -> Result<Source> {
    anyhow::bail!("this voxtap was built without DPDK (cargo feature `dpdk`)")
}

/// Reads the sources until SIGTERM/SIGINT or `exit_after_idle`, handing every frame on; `tick` runs after each
/// round (partial batches leave on time).
fn pump(cfg: &Config, mut sources: Vec<Source>, frame: &mut super::FrameSink<'_>, tick: &mut dyn FnMut()) {
    super::install_stop_handlers();
    let idle_limit = (cfg.exit_after_idle > 0).then(|| std::time::Duration::from_secs(cfg.exit_after_idle as u64));
    let mut last_packet = std::time::Instant::now();
    while !super::STOP.load(std::sync::atomic::Ordering::Relaxed) {
        let mut got = 0;
        for s in sources.iter_mut() {
            got += s(50, frame);
        }
        tick();
        if got > 0 {
            last_packet = std::time::Instant::now();
        } else if idle_limit.is_some_and(|l| last_packet.elapsed() >= l) {
            break;
        }
    }
}

/// A remote with `packetbuffer_sender = yes` capturing live (AF_PACKET interfaces, or a HEP or IPFIX
/// listener): every frame goes to the central, until SIGTERM/SIGINT or `exit_after_idle`; then what is left is
/// given 20 s to reach the central, and stays queued for the next start otherwise.
pub fn forward_live(cfg: &Config) -> Result<(ForwardStats, LinkStats)> {
    let slow = super::slow::SlowSide::start()?;
    let sources = live_sources(cfg, "packetbuffer_sender", &slow.handle())?;
    let fwd = std::cell::RefCell::new(forwarder(cfg, false, &slow.handle())?);
    tracing::info!(central = ?cfg.server_destination, "forwarding packets to the central");
    pump(cfg, sources, &mut |ts, lt, d| fwd.borrow_mut().frame(ts, lt, d), &mut || fwd.borrow_mut().tick());
    Ok(fwd.into_inner().finish(Some(std::time::Duration::from_secs(20))))
}

/// VoIPmonitor's mirror mode, sending side (`mirror_destination`): a capture file (`-r`) or the live sources go
/// to the receiver in packet-buffer blocks; returns once every block is confirmed.
pub fn mirror_send(cfg: &Config, read: Option<&Path>) -> Result<MirrorSendStats> {
    let dest = cfg.mirror_destination.clone().context("mirror_destination")?;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let mut input = read.map(CaptureInput::open).transpose()?;
    let slow = super::slow::SlowSide::start()?;
    let m = std::cell::RefCell::new(MirrorSender::start(
        dest.clone(),
        cfg.id_sensor,
        name,
        read.is_some(),
        &slow.handle(),
    )?);
    match input.as_mut() {
        Some(input) => {
            input.show_progress();
            let mut m = m.borrow_mut();
            if let Some(t) = input.for_each(|f| m.frame(f.ts, f.link_type, f.data)) {
                tracing::warn!(file = %input.name().display(), problem = %t, "capture file ends early; mirrored what was there");
            }
        }
        None => {
            let sources = live_sources(cfg, "mirror_destination", &slow.handle())?;
            tracing::info!(%dest, "mirroring packets");
            pump(cfg, sources, &mut |ts, lt, d| m.borrow_mut().frame(ts, lt, d), &mut || m.borrow_mut().tick());
        }
    }
    Ok(m.into_inner().finish())
}

/// VoIPmonitor's mirror mode, receiving side (`mirror_bind`): senders' packets are analysed here.
pub fn run_mirror(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    let bind = cfg.mirror_bind.as_deref().context("mirror_bind")?;
    let addr: SocketAddr = bind.parse().with_context(|| format!("mirror_bind {bind}: expected IP:PORT"))?;
    let slow = super::slow::SlowSide::start()?;
    let window = crate::time::secs(cfg.sender_time_window_s as i64);
    let mut r = MirrorReceiver::bind(addr, cfg.mirror_connect_maximum_time_diff_s, &cfg.net, window, &slow.handle())
        .with_context(|| format!("binding the mirror receiver on {addr}"))?;
    tracing::info!(listen = %r.local_addr(), "mirror receiver started (unencrypted; VoIPmonitor's mirror mode)");
    let mut res =
        drive(cfg, workers, live, None, slow, &mut |t, f| r.poll(t, &mut |ts, lt, d| f(ts, lt, d, None)), &mut |_| {})?;
    tracing::info!(stats = ?r.stats(), "mirror receiver stopped");
    res.mirror = Some(r.stats());
    Ok(res)
}
