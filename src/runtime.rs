//! Starts the cores and the slow side, wires the channels between them, and runs a source to its end.
//!
//! ```text
//!  reader+rx (this thread) ──batches──► owner 0..N (threads) ──CDRs──► collector
//!                                                           └─chunks─► spool writer
//! ```
//! The rx → owner rings and the owner → slow-side channels are bounded. A capture file waits when a ring is
//! full (nothing read from a file is ever dropped); a live source will count the drop instead.

use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::bounded;
use tracing::warn;

use crate::call::cdr::Cdr;
use crate::call::owner::{Owner, OwnerConfig, OwnerStats};
use crate::call::Timeouts;
use crate::capture::pcapfile::CaptureFile;
use crate::config::{Config, SaveRtp};
use crate::decode::{DecodeStats, Decoder, DecoderConfig};
use crate::dispatch::{Rx, RxConfig, RxStats, ToOwner};
use crate::store::spool::{self, SpoolStats};
use crate::time::secs;

pub struct RunOptions {
    pub config: Config,
    pub read: PathBuf,
    pub workers: usize,
}

/// Everything a run produced: CDRs in output order, and the counters.
pub struct RunResult {
    pub cdrs: Vec<Cdr>,
    pub decode: DecodeStats,
    pub rx: RxStats,
    pub owners: OwnerStats,
    pub spool: SpoolStats,
    pub truncated: Option<String>,
    pub elapsed_s: f64,
    pub workers: usize,
}

pub fn run_file(opts: RunOptions) -> Result<RunResult> {
    let cfg = &opts.config;
    let workers = opts.workers.clamp(1, 256);
    let file = CaptureFile::open(&opts.read).with_context(|| format!("reading {}", opts.read.display()))?;
    let started = Instant::now();

    let save_any = cfg.savesip || cfg.savertp != SaveRtp::No || cfg.savertcp;
    let (cdr_tx, cdr_rx) = bounded::<Cdr>(65_536);
    let (spool_tx, spool_rx) = bounded::<spool::Chunk>(4096);
    let spool_tx = save_any.then_some(spool_tx);
    let collector =
        thread::Builder::new().name("cdr-collector".into()).spawn(move || cdr_rx.iter().collect::<Vec<_>>())?;
    let spooler = save_any
        .then(|| thread::Builder::new().name("spool-writer".into()).spawn(move || spool::run_writer(spool_rx)))
        .transpose()?;

    let (recycle_tx, recycle_rx) = bounded(workers * 32);
    let owner_cfg = OwnerConfig {
        timeouts: Timeouts::from_config(cfg),
        id_sensor: cfg.id_sensor,
        save_sip: cfg.savesip,
        save_rtp: cfg.savertp,
        save_rtcp: cfg.savertcp,
        spooldir: cfg.spooldir.clone(),
        utc: cfg.utc,
        blocking: true,
    };
    let mut to_owner = Vec::new();
    let mut handles = Vec::new();
    for i in 0..workers {
        let (tx, rx) = bounded::<ToOwner>(32);
        to_owner.push(tx);
        let owner = Owner::new(owner_cfg.clone(), cdr_tx.clone(), spool_tx.clone());
        let recycle = recycle_tx.clone();
        handles.push(thread::Builder::new().name(format!("owner-{i}")).spawn(move || owner.run(rx, recycle))?);
    }
    drop(cdr_tx);
    drop(spool_tx);
    drop(recycle_tx);

    let decoder = Decoder::new(DecoderConfig {
        sip_ports: cfg.sip_port_matrix(),
        keep_frames: save_any,
        gtp_port: 2152,
        hep_port: 9060,
    });
    let rx_cfg = RxConfig {
        owners: workers,
        keep_sip_frames: cfg.savesip,
        keep_media_frames: cfg.savertp != SaveRtp::No || cfg.savertcp,
        blocking: true,
        media_idle: secs(cfg.rtptimeout.max(cfg.sipwithoutrtptimeout) as i64),
    };
    let mut rx = Rx::new(decoder, rx_cfg, cfg.sip_port_matrix(), to_owner, recycle_rx);
    let mut frames = file.frames();
    for f in frames.by_ref() {
        rx.frame(f.ts, f.link_type, f.data);
    }
    let truncated = frames.trailer_problem().map(str::to_string);
    if let Some(t) = &truncated {
        warn!(file = %opts.read.display(), problem = %t, "capture file ends early; processed what was there");
    }
    let (decoder, rx_stats) = rx.finish();

    let mut owners = OwnerStats::default();
    for h in handles {
        let s = h.join().map_err(|_| anyhow::anyhow!("an owner thread panicked"))?;
        merge(&mut owners, s);
    }
    let mut cdrs = collector.join().map_err(|_| anyhow::anyhow!("the CDR collector panicked"))?;
    let spool = match spooler {
        Some(h) => h.join().map_err(|_| anyhow::anyhow!("the spool writer panicked"))?,
        None => SpoolStats::default(),
    };
    cdrs.sort_by(|a, b| (a.callend, &a.callid).cmp(&(b.callend, &b.callid)));
    tracing::info!(cdrs = cdrs.len(), elapsed_s = started.elapsed().as_secs_f64(), "capture file done");
    Ok(RunResult {
        cdrs,
        decode: decoder.stats,
        rx: rx_stats,
        owners,
        spool,
        truncated,
        elapsed_s: started.elapsed().as_secs_f64(),
        workers,
    })
}

fn merge(a: &mut OwnerStats, b: OwnerStats) {
    a.sip_messages += b.sip_messages;
    for (k, v) in b.sip_requests {
        *a.sip_requests.entry(k).or_default() += v;
    }
    a.non_call_sip += b.non_call_sip;
    a.calls += b.calls;
    a.cdrs += b.cdrs;
    a.rtp_packets += b.rtp_packets;
    a.rtcp_packets += b.rtcp_packets;
    a.media_without_call += b.media_without_call;
    a.media_ignored += b.media_ignored;
    a.non_rtp_media += b.non_rtp_media;
    a.callid_collisions += b.callid_collisions;
    a.cdr_queue_drops += b.cdr_queue_drops;
    a.spool_queue_drops += b.spool_queue_drops;
    a.spool_link_mismatch += b.spool_link_mismatch;
    a.streams += b.streams;
    a.packets_over_stream_limit += b.packets_over_stream_limit;
    a.active_calls_peak += b.active_calls_peak;
}
