//! The two link roles that are sources of their own: the central (remotes' CDRs and packets in) and a remote
//! that forwards raw packets (`packetbuffer_sender = yes`) instead of analysing them.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};
use crossbeam_channel::bounded;

use super::{drive, LiveOutput, RunResult};
use crate::capture::pcapfile::CaptureFile;
use crate::config::Config;
use crate::link::central::{Central, CentralConfig};
use crate::link::merge::Merge;
use crate::link::msg;
use crate::link::remote::{LinkSink, LinkStats, RemoteConfig};
use crate::store::mysql::DbConfig;

/// The central: remotes connect to `server_bind:server_bind_port`; their CDRs are stored here, their packets
/// analysed here, until SIGTERM/SIGINT (or `exit_after_idle` seconds without packets).
pub fn run_central(cfg: &Config, workers: usize, live: LiveOutput) -> Result<RunResult> {
    let ip: IpAddr = cfg.server_bind.parse().context("server_bind must be an IP address")?;
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
        },
        cdr_tx,
        pkt_tx,
    )
    .with_context(|| format!("binding the central's link port {ip}:{}", cfg.server_bind_port))?;
    let merge = RefCell::new(Merge::new(pkt_rx));
    let mut central = Some(central);
    let mut central_stats = None;
    let mut res = drive(cfg, workers, live, Some(cdr_rx), &mut |t, f| merge.borrow_mut().poll(t, f), &mut |f| {
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
pub fn send_packets_file(cfg: &Config, path: &Path) -> Result<LinkStats> {
    let rc = RemoteConfig::from_config(cfg).context("packetbuffer_sender needs server_destination")?;
    let mut sink = LinkSink::start(rc, None).context("opening the link queue")?;
    let file = CaptureFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut raw = Vec::with_capacity(1 << 20);
    let mut frames = file.frames();
    let flush = |raw: &mut Vec<u8>, sink: &mut LinkSink| -> Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let z = zstd::bulk::compress(raw, 1).context("compressing a packet batch")?;
        // A file loses nothing: wait for room while the central is away and the queue is full.
        while !sink.room(z.len()) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        sink.push(&z);
        raw.clear();
        Ok(())
    };
    for f in frames.by_ref() {
        msg::push_frame(&mut raw, f.ts, f.link_type, f.data);
        if raw.len() >= 1 << 20 {
            flush(&mut raw, &mut sink)?;
        }
    }
    flush(&mut raw, &mut sink)?;
    if let Some(t) = frames.trailer_problem() {
        tracing::warn!(file = %path.display(), problem = %t, "capture file ends early; sent what was there");
    }
    Ok(sink.finish(None))
}
