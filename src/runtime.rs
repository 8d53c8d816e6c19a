//! Starts the cores and the slow side, wires the channels between them, and runs a source to its end.
//!
//! ```text
//!  reader+rx (this thread) ──batches──► owner 0..N (threads) ──CDRs──► collector
//!                                                           └─chunks─► spool writer
//! ```
//! The rx → owner rings and the owner → slow-side channels are bounded. A capture file waits when a ring is
//! full (nothing read from a file is ever dropped); a live source will count the drop instead.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::bounded;
use tracing::warn;

use crate::call::cdr::Cdr;
use crate::call::owner::{CallGauge, Owner, OwnerConfig, OwnerStats};
use crate::call::Timeouts;
use crate::capture::input::CaptureInput;
use crate::config::{Config, SaveRtp};
use crate::decode::{DecodeStats, Decoder, DecoderConfig};
use crate::dispatch::{Rx, RxConfig, RxStats, ToOwner};
use crate::store::cdrlog::{CdrLog, CdrLogStats};
use crate::store::mysql::{DbConfig, DbSink, DbStats};

mod collector;
#[cfg(feature = "dpdk")]
mod dpdk_port;
mod link;
mod live;
pub mod slow;
mod sockets;
use crate::store::spool::{self, SpoolStats};
use crate::time::secs;
pub use link::{forward_live, mirror_send, run_central, run_mirror, send_packets_file};
pub use live::run_afpacket;
#[cfg(feature = "dpdk")]
pub use live::{eal_args, run_dpdk};
use sockets::{drive, FrameSink};
pub use sockets::{run_hep, run_ipfix};

pub struct RunOptions {
    pub config: Config,
    pub read: PathBuf,
    pub workers: usize,
}

/// Where a live capture's CDRs go on standard output, as the calls end (a live capture keeps none in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutput {
    Json,
    Table,
}

/// Everything a run produced: CDRs in output order (none when a live capture wrote them as they came), and the
/// counters.
pub struct RunResult {
    pub cdrs: Vec<Cdr>,
    /// The CDRs were written to standard output as they came, not kept in `cdrs`.
    pub streamed: bool,
    pub cdr_count: u64,
    /// Most calls in progress at once: from the CDRs' times for a capture file; counted by the owners as calls
    /// open and close for a live capture.
    pub concurrent_peak: u64,
    pub decode: DecodeStats,
    pub rx: RxStats,
    pub owners: OwnerStats,
    pub spool: SpoolStats,
    pub truncated: Option<String>,
    pub elapsed_s: f64,
    pub workers: usize,
    /// `sipport` as configured (`5060,5070-5080,`).
    pub sipport: String,
    /// Packets the kernel dropped before voxtap read them (AF_PACKET).
    pub kernel_drops: Option<u64>,
    /// What the MySQL writer did, when a database is configured.
    pub db: Option<DbStats>,
    /// What the CDR log wrote, when it is on.
    pub cdr_log: Option<CdrLogStats>,
    /// Counters of the live HEP and IPFIX listeners.
    pub hep: Option<crate::capture::hep::HepStats>,
    pub ipfix: Option<crate::capture::ipfix::IpfixStats>,
    /// A remote's link to its central, and a central's counters of its remotes and of their packets' merge.
    pub link: Option<crate::link::remote::LinkStats>,
    pub central: Option<crate::link::central::CentralStats>,
    pub merge: Option<crate::link::merge::MergeStats>,
    /// A mirror receiver's counters.
    pub mirror: Option<crate::link::mirror::MirrorStats>,
    /// Counters of the capture port (live DPDK capture).
    #[cfg(feature = "dpdk")]
    pub port: Option<crate::capture::dpdk::PortStats>,
}

/// The owners and the slow side, running; sources feed them through an `Rx`.
struct Pipeline {
    to_owner: Vec<crossbeam_channel::Sender<ToOwner>>,
    recycle_rx: crossbeam_channel::Receiver<crate::dispatch::batch::Batch>,
    handles: Vec<thread::JoinHandle<OwnerStats>>,
    collector: thread::JoinHandle<collector::Collected>,
    spooler: Option<thread::JoinHandle<SpoolStats>>,
    cleaner: Option<Cleaner>,
    workers: usize,
    streamed: bool,
    gauge: Arc<CallGauge>,
    /// Totals published for the manager port's sniffer_stat.
    live: Arc<crate::stats::Live>,
    /// What `reload` changes; every rx stage follows it.
    rules: Arc<crate::dispatch::rules::Rules>,
    /// The manager port of a live capture (dropped, and so closed, when the run ends).
    manager: Option<crate::manager::Manager>,
    /// A live capture's notifications to systemd (no-ops outside it); a capture file has none.
    systemd: Option<crate::notify::Service>,
    /// The slow side's runtime: dropped last, once everything that runs on it has finished.
    slow: slow::SlowSide,
    /// `sipport` as configured, for the hint about SIP seen on other ports.
    sipport: String,
}

/// The manager port (and `managersocket`) beside a live capture; one that cannot bind is a warning (another
/// sensor may hold the port).
fn start_manager(
    cfg: &Config,
    state: Arc<crate::manager::State>,
    rt: &tokio::runtime::Handle,
) -> Option<crate::manager::Manager> {
    let ip: std::net::IpAddr = cfg.managerip.parse().ok()?;
    let tcp = (cfg.managerport != 0).then(|| std::net::SocketAddr::new(ip, cfg.managerport));
    let unix = cfg.managersocket.as_deref();
    match crate::manager::Manager::start(tcp, unix, state, &cfg.net, rt) {
        Ok(m) => {
            tracing::info!(listen = ?m.local_addr(), socket = ?unix, "manager port open");
            Some(m)
        }
        Err(e) => {
            tracing::warn!(error = %e, ip = %ip, port = cfg.managerport, socket = ?unix, "manager port not opened");
            None
        }
    }
}

/// The manager's `reload`: reads the configuration files again and installs their SIP ports and capture filter
/// (keys given on the command line keep their values).
fn reloader(cfg: &Config, rules: Arc<crate::dispatch::rules::Rules>) -> crate::manager::Reload {
    let (from, keep, old) = (cfg.loaded_from.clone(), cfg.command_line_keys.clone(), cfg.clone());
    Box::new(move || {
        let Some((main, dir)) = &from else {
            return Err("voxtap was started without a configuration file".into());
        };
        let (mut new, report) = Config::load(main.as_deref(), dir.as_deref()).map_err(|e| e.to_string())?;
        if keep.contains(&"sipport") {
            new.sipport = old.sipport.clone();
        }
        if keep.contains(&"filter") {
            new.filter = old.filter.clone();
        }
        for (k, f, l) in &report.unknown_keys {
            tracing::warn!(file = %f.display(), line = l, key = %k, "reload: unknown or not yet supported key ignored");
        }
        tracing::info!(sipport = %new.sipports_text(), filter = ?new.filter, "reload: new capture rules");
        rules.set(crate::dispatch::rules::Current::from_config(&new));
        Ok(())
    })
}

/// The periodic cleanspool thread of a live capture.
struct Cleaner {
    stop: crossbeam_channel::Sender<()>,
    handle: thread::JoinHandle<()>,
}

impl Cleaner {
    fn start(cfg: Config, live: Arc<crate::stats::Live>) -> std::io::Result<Cleaner> {
        let (stop, rx) = bounded::<()>(1);
        let handle = thread::Builder::new().name("cleanspool".into()).spawn(move || loop {
            let r = crate::store::cleanspool::run_once(&cfg);
            if let Ok(r) = &r {
                live.spool_bytes.store(r.bytes_left, Ordering::Relaxed);
            }
            match r {
                Ok(r) if r.folders_removed > 0 => {
                    tracing::info!(
                        folders = r.folders_removed,
                        bytes = r.bytes_removed,
                        left = r.bytes_left,
                        "cleanspool"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cleanspool failed"),
            }
            if !matches!(
                rx.recv_timeout(std::time::Duration::from_secs(60)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            ) {
                break;
            }
        })?;
        Ok(Cleaner { stop, handle })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

impl Pipeline {
    /// `blocking`: a file source waits for busy owners; a live source drops and counts instead.
    fn start(
        cfg: &Config,
        workers: usize,
        blocking: bool,
        sources: usize,
        live: Option<LiveOutput>,
        remote_cdrs: Option<crossbeam_channel::Receiver<crate::link::central::RemoteCdrs>>,
        slow: slow::SlowSide,
    ) -> Result<Pipeline> {
        let rt = slow.handle();
        let save_any = cfg.savesip || cfg.savertp != SaveRtp::No || cfg.savertcp;
        let (cdr_tx, cdr_rx) = bounded::<Cdr>(65_536);
        let (spool_tx, spool_rx) = bounded::<spool::Chunk>(4096);
        let spool_tx = save_any.then_some(spool_tx);
        // With a database, each CDR is also handed to the MySQL writer as it is finished.
        let db_cfg = DbConfig::from_config(cfg);
        // The CDR log: asked for, or (auto) a live capture without a database, whose CDRs would otherwise only
        // reach standard output, where nothing may be keeping them.
        let log_dir = cfg.spooldir.join("cdrlog");
        let mut log = match cfg.cdr_log {
            Some(false) => None,
            Some(true) => Some(
                CdrLog::open(&log_dir, cfg.utc)
                    .with_context(|| format!("creating the CDR log in {}", log_dir.display()))?,
            ),
            // Asked for by default only: a spool that cannot be written is a warning, not a reason to stop.
            None if !blocking && db_cfg.is_none() => match CdrLog::open(&log_dir, cfg.utc) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %log_dir.display(), "no CDR log: the folder cannot be created");
                    None
                }
            },
            None => None,
        };
        // sniffer_stat reports the backlog of both on-disk queues.
        let cdr_queue_dir = db_cfg.as_ref().map(|d| d.queue_dir.clone());
        // A capture file's run must end: its sender gives up on a central that stays away or refuses it.
        let remote_cfg = crate::link::remote::RemoteConfig::from_config(cfg).map(|r| {
            if blocking {
                r.bounded(cfg.link_send_timeout, &STOP)
            } else {
                r
            }
        });
        let link_queue_dir = remote_cfg.as_ref().map(|r| r.queue_dir.clone());
        // A remote sends its CDRs to the central, which stores them; it keeps no database of its own.
        let link_cfg = remote_cfg.filter(|_| !cfg.packetbuffer_sender);
        if link_cfg.is_some() && db_cfg.is_some() {
            tracing::warn!("server_destination is set: CDRs go to the central; mysqlhost is not used on a remote");
        }
        let db = match link_cfg {
            Some(_) => None,
            None => db_cfg.map(|d| DbSink::start(d, blocking, &rt)).transpose()?,
        };
        // Relayed manager commands (the GUI's getfile through the central) are answered once the owners run.
        let manager_state = Arc::new(std::sync::OnceLock::<Arc<crate::manager::State>>::new());
        let link = link_cfg
            .map(|l| {
                let st = manager_state.clone();
                let handler: crate::link::remote::CommandHandler =
                    Arc::new(move |cmd: &str, out: &mut dyn FnMut(&[u8]) -> bool| match st.get() {
                        Some(s) => crate::manager::answer(cmd, s, out),
                        None => {
                            out(b"starting\n");
                        }
                    });
                crate::link::remote::LinkSink::start(l, Some(handler), &rt)
            })
            .transpose()
            .context("opening the link queue")?;
        if link.is_some() {
            log = None;
        }
        // A capture file's CDRs are sorted and printed at the end; a live capture's go out as they come, so memory
        // stays flat however long it runs.
        let out = (!blocking).then_some(live).flatten().map(crate::report::LiveWriter::new);
        let streamed = out.is_some();
        let live_counters = Arc::new(crate::stats::Live::new(sources));
        let sinks = collector::Sinks {
            live: live_counters.clone(),
            db,
            log,
            link,
            // A capture file waits until the central has everything (or its sender gives up: link_send_timeout);
            // a live sensor gives it 20 s, then keeps the rest queued for its next start.
            link_wait: (!blocking).then_some(std::time::Duration::from_secs(20)),
            out,
        };
        let collector = thread::Builder::new()
            .name("cdr-collector".into())
            .spawn(move || collector::run(cdr_rx, remote_cdrs, sinks))?;
        // cleanspool runs beside a live capture, once a minute; a capture file run leaves the spool alone.
        let cleaner =
            (!blocking && cfg.cleanspool).then(|| Cleaner::start(cfg.clone(), live_counters.clone())).transpose()?;
        let spool_opts = spool::SpoolOptions::from_config(cfg);
        let spooler = save_any
            .then(|| {
                thread::Builder::new()
                    .name("spool-writer".into())
                    .spawn(move || spool::run_writer(spool_rx, spool_opts))
            })
            .transpose()?;
        let (recycle_tx, recycle_rx) = bounded(workers * 32);
        let rules = Arc::new(crate::dispatch::rules::Rules::new(crate::dispatch::rules::Current::from_config(cfg)));
        let gauge = Arc::new(CallGauge::default());
        let owner_cfg = OwnerConfig {
            timeouts: Timeouts::from_config(cfg),
            id_sensor: cfg.id_sensor,
            save_sip: cfg.savesip,
            save_rtp: cfg.savertp,
            save_rtcp: cfg.savertcp,
            spooldir: cfg.spooldir.clone(),
            utc: cfg.utc,
            blocking,
            sources,
            gauge: gauge.clone(),
        };
        let mut to_owner = Vec::new();
        let mut handles = Vec::new();
        for i in 0..workers {
            let (tx, rx) = bounded::<ToOwner>(32);
            to_owner.push(tx);
            let owner = Owner::new(owner_cfg.clone(), cdr_tx.clone(), spool_tx.clone());
            let recycle = recycle_tx.clone();
            let cpus = cfg.owner_cpus.clone();
            handles.push(thread::Builder::new().name(format!("owner-{i}")).spawn(move || {
                pin_thread(&cpus, i);
                owner.run(rx, recycle)
            })?);
        }
        let state = Arc::new(crate::manager::State {
            started: Instant::now(),
            spooldir: cfg.spooldir.clone(),
            rules: rules.clone(),
            reload: Some(reloader(cfg, rules.clone())),
            key: cfg.manager_key.as_deref().and_then(|k| crate::manager::sealed::parse_key(k).ok()),
            calls: gauge.clone(),
            allow_remote: cfg.manager_enable_unencrypted,
            owners: to_owner.clone(),
            utc: cfg.utc,
            id_sensor: cfg.id_sensor,
            live: live_counters.clone(),
            cdr_queue_dir,
            link_queue_dir,
        });
        let _ = manager_state.set(state.clone());
        let manager = (!blocking && (cfg.managerport != 0 || cfg.managersocket.is_some()))
            .then(|| start_manager(cfg, state, &rt))
            .flatten();
        // A live sensor under systemd (Type=notify) is ready once its owners, storage and manager port run.
        let systemd =
            (!blocking).then(|| crate::notify::Service::start(live_counters.clone(), || STOP.load(Ordering::Relaxed)));
        Ok(Pipeline {
            sipport: cfg.sipports_text(),
            to_owner,
            recycle_rx,
            handles,
            collector,
            spooler,
            cleaner,
            workers,
            streamed,
            gauge,
            live: live_counters,
            rules,
            manager,
            systemd,
            slow,
        })
    }

    /// An rx stage feeding these owners.
    fn rx(&self, cfg: &Config, blocking: bool, shared: Option<&crate::dispatch::RxShared>, source: u16) -> Rx {
        let mut rx = rx_stage(cfg, blocking, self.to_owner.clone(), self.recycle_rx.clone(), shared, source);
        rx.publish_to(self.live.clone());
        rx.follow(self.rules.clone());
        rx
    }

    /// The rx stage is done: owners close their calls, CDRs are collected and sorted.
    fn finish(self, rx: Rx, started: Instant, truncated: Option<String>) -> Result<RunResult> {
        self.finish_many(vec![rx], started, truncated)
    }

    /// Every rx stage is done: their counters are summed, the owners end as of the last packet time.
    fn finish_many(self, rxs: Vec<Rx>, started: Instant, truncated: Option<String>) -> Result<RunResult> {
        if let Some(s) = &self.systemd {
            s.draining();
        }
        let mut decoder_stats = crate::decode::DecodeStats::default();
        let mut rx_stats = RxStats::default();
        let mut end = i64::MIN;
        for rx in rxs {
            let (d, s, last, _) = rx.stop();
            decoder_stats.add(&d.stats);
            rx_stats.add(s);
            end = end.max(last);
        }
        for tx in &self.to_owner {
            // End must arrive even on a live source whose ring is full.
            let _ = tx.send(ToOwner::End(end.max(0)));
        }
        drop(self.to_owner);
        let mut owners = OwnerStats::default();
        for h in self.handles {
            let s = h.join().map_err(|_| anyhow::anyhow!("an owner thread panicked"))?;
            owners.add(s);
        }
        if let Some(c) = self.cleaner {
            c.stop();
        }
        // Every call is closed: the manager has nothing left to report.
        drop(self.manager);
        let collector::Collected { mut cdrs, count: cdr_count, db, cdr_log, link } =
            self.collector.join().map_err(|_| anyhow::anyhow!("the CDR collector panicked"))?;
        let spool = match self.spooler {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("the spool writer panicked"))?,
            None => SpoolStats::default(),
        };
        cdrs.sort_by(|a, b| (a.callend, &a.callid).cmp(&(b.callend, &b.callid)));
        tracing::info!(cdrs = cdr_count, elapsed_s = started.elapsed().as_secs_f64(), "input done");
        let concurrent_peak = if self.streamed {
            self.gauge.peak.load(Ordering::Relaxed).max(0) as u64
        } else {
            crate::report::peak_concurrency(&cdrs) as u64
        };
        Ok(RunResult {
            cdrs,
            streamed: self.streamed,
            cdr_count,
            concurrent_peak,
            decode: decoder_stats,
            rx: rx_stats,
            owners,
            spool,
            truncated,
            elapsed_s: {
                // Everything on the slow side is done: its runtime goes now.
                drop(self.slow);
                started.elapsed().as_secs_f64()
            },
            workers: self.workers,
            sipport: self.sipport,
            kernel_drops: None,
            hep: None,
            ipfix: None,
            db,
            cdr_log,
            link,
            central: None,
            merge: None,
            mirror: None,
            #[cfg(feature = "dpdk")]
            port: None,
        })
    }
}

pub fn run_file(opts: RunOptions) -> Result<RunResult> {
    let cfg = &opts.config;
    let workers = opts.workers.clamp(1, 256);
    // The input's errors name it already: no context that would name it twice.
    let mut input = CaptureInput::open(&opts.read)?;
    input.show_progress();
    let started = Instant::now();
    // A remote sending a file may wait for its central: Ctrl-C then stops the wait and reports what stays queued.
    let remote = !cfg.server_destination.is_empty();
    if remote {
        install_stop_handlers_once();
    }
    let pipeline = Pipeline::start(cfg, workers, true, 1, None, None, slow::SlowSide::start()?)?;
    let mut rx = pipeline.rx(cfg, true, None, 0);
    if remote {
        input.stop_on(&STOP);
    }
    let truncated = input.for_each(|f| rx.frame(f.ts, f.link_type, f.data));
    if let Some(t) = &truncated {
        warn!(file = %input.name().display(), problem = %t, "capture file ends early; processed what was there");
    }
    pipeline.finish(rx, started, truncated)
}

/// Pins the calling thread to `cpus[index % len]` (no list: leaves it on every CPU of the process).
/// An rx stage configured from `cfg` that hands its batches to `to_owner` (one sender per owner); also used by
/// the benchmark harness, which wires its own owners.
pub fn rx_stage(
    cfg: &Config,
    blocking: bool,
    to_owner: Vec<crossbeam_channel::Sender<ToOwner>>,
    recycle: crossbeam_channel::Receiver<crate::dispatch::batch::Batch>,
    shared: Option<&crate::dispatch::RxShared>,
    source: u16,
) -> Rx {
    let save_any = cfg.savesip || cfg.savertp != SaveRtp::No || cfg.savertcp;
    let mut decoder = Decoder::new(DecoderConfig {
        sip_ports: cfg.sip_port_matrix(),
        keep_frames: save_any,
        gtp_port: cfg.udp_port_gtp,
        hep_port: cfg.udp_port_hep,
        vxlan_port: cfg.udp_port_vxlan,
        tzsp_port: cfg.udp_port_tzsp,
        l2tp_port: cfg.udp_port_l2tp,
        audiocodes_port: if cfg.audiocodes { cfg.udp_port_audiocodes } else { 0 },
    });
    // A live source stamps frames with their receive time: a time a HEP sender wrote is held near it. A capture
    // file's HEP keeps its times as recorded.
    if !blocking {
        decoder.hold_sender_times(secs(cfg.sender_time_window_s as i64));
    }
    let rx_cfg = RxConfig {
        owners: to_owner.len(),
        keep_sip_frames: cfg.savesip,
        keep_media_frames: cfg.savertp != SaveRtp::No || cfg.savertcp,
        blocking,
        media_idle: secs(cfg.rtptimeout.max(cfg.sipwithoutrtptimeout) as i64),
        source,
    };
    Rx::new(decoder, rx_cfg, cfg.sip_port_matrix(), to_owner, recycle, shared)
}

fn pin_thread(cpus: &[usize], index: usize) {
    if cpus.is_empty() {
        return;
    }
    let cpu = cpus[index % cpus.len()];
    if crate::os::set_thread_affinity(&crate::os::CpuSet::single(cpu)).is_err() {
        tracing::warn!(cpu, "cannot pin a thread to this CPU");
    }
}

/// Set by SIGTERM/SIGINT: live sources stop, drain and close their calls as the end of a capture would.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// As `install_stop_handlers`, for a run that ends on its own (a capture file sent to a central): the first
/// signal stops the run short with its report; the handler resets, so a second one ends voxtap at once.
fn install_stop_handlers_once() {
    // As before a failure here, a run without the handlers still ends on its own or on the default action.
    let _ = crate::os::stop_on_first_signal(&STOP);
}

fn install_stop_handlers() {
    // A failure leaves the default action (the process ends), as it always did.
    let _ = crate::os::stop_on_signals(&STOP);
}
