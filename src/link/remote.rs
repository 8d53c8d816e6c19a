//! A remote sensor's end of the link: what it has to send (CDRs, or packet batches with `packetbuffer_sender`)
//! is appended to an on-disk queue first; a sender task on the slow side's runtime connects to the first central
//! of `server_destination` that answers, sends the queue from its acknowledged position on, and moves that
//! position as the central confirms. A central that is away, a cut link or a restart of either side loses nothing: what was not
//! confirmed is sent again, and the central skips what it already has.
//!
//! A live remote keeps trying for as long as it runs. A run that must end (a capture file, `-r`) stops trying
//! once nothing has reached the central for `link_send_timeout`, at once when the central refuses this
//! sensor's secret, and at once on SIGINT/SIGTERM; what it could not deliver stays queued for the next start.

mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::msg;
use super::secure::{self, Identity2, LinkError};
use crate::config::Config;
use crate::store::queue::{self, Appender};

/// Answers a manager command that the central relays (getfile for the GUI, …), handing the answer to `out` in
/// parts as it is produced (a large file is never held whole); `out` returns false once nobody wants more.
pub type CommandHandler = Arc<dyn Fn(&str, &mut dyn FnMut(&[u8]) -> bool) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cdr,
    Packets,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cdr => "cdr",
            Mode::Packets => "packets",
        }
    }
}

#[derive(Clone)]
pub struct RemoteConfig {
    pub destinations: Vec<String>,
    pub port: u16,
    pub password: String,
    pub sensor_id: Option<u16>,
    pub sensor_name: String,
    pub mode: Mode,
    pub queue_dir: PathBuf,
    pub max_bytes: u64,
    /// A run that must end: how long nothing may reach the central before the sender stops (`None`: no limit).
    /// With it, a refusal of this sensor's secret also stops the sender at once.
    pub patience: Option<Duration>,
    /// Set by SIGINT/SIGTERM in a run that must end: the sender stops at once.
    pub interrupt: Option<&'static AtomicBool>,
    /// Whether the sender stops on its own at all (a run that must end), even with `patience` unlimited.
    pub bounded: bool,
}

impl RemoteConfig {
    /// The link settings of a remote; `None` without `server_destination`.
    pub fn from_config(cfg: &Config) -> Option<RemoteConfig> {
        if cfg.server_destination.is_empty() {
            return None;
        }
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
        Some(RemoteConfig {
            destinations: cfg.server_destination.clone(),
            port: cfg.server_destination_port,
            password: cfg.server_password.clone(),
            sensor_id: cfg.id_sensor,
            sensor_name: hostname,
            mode: if cfg.packetbuffer_sender { Mode::Packets } else { Mode::Cdr },
            queue_dir: cfg.link_queue_dir.clone().unwrap_or_else(|| cfg.spooldir.join("linkqueue")),
            max_bytes: cfg.link_queue_maxsize.saturating_mul(1 << 20),
            patience: None,
            interrupt: None,
            bounded: false,
        })
    }

    /// For a run that must end (a capture file): the sender gives up after `link_send_timeout` seconds without
    /// progress (0: never), at once on a refused secret, and when `interrupt` is set.
    pub fn bounded(mut self, link_send_timeout: u32, interrupt: &'static AtomicBool) -> RemoteConfig {
        self.patience = (link_send_timeout > 0).then(|| Duration::from_secs(link_send_timeout.into()));
        self.interrupt = Some(interrupt);
        self.bounded = true;
        self
    }
}

/// Why the sender stopped before the central had confirmed everything.
#[derive(Debug, Clone, serde::Serialize)]
pub enum Stopped {
    /// The central refused this sensor (its secret, or the protocol): waiting would not help. `reason` says
    /// what to check.
    Refused { central: String, reason: String },
    /// Nothing reached the central for `link_send_timeout`; the last failure.
    NoCentral { waited_s: u64, last_error: String },
    /// SIGINT/SIGTERM.
    Interrupted,
    /// The input ended and the time given to the central after it is over (a live sensor stopping).
    FinalWait,
}

impl Stopped {
    /// One sentence for the operator.
    pub fn describe(&self) -> String {
        match self {
            Stopped::Refused { reason, .. } => reason.clone(),
            Stopped::NoCentral { waited_s, last_error } => format!(
                "nothing reached the central for {waited_s} s (link_send_timeout), so voxtap stopped trying; last \
                 attempt: {last_error}"
            ),
            Stopped::Interrupted => "interrupted before the central had confirmed everything".into(),
            Stopped::FinalWait => {
                "the central did not confirm everything in the time given after the input ended".into()
            }
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LinkStats {
    /// Records (CDRs, or packet batches) appended to the queue.
    pub queued: u64,
    /// Records not queued because the queue was at `link_queue_maxsize` (logged).
    pub dropped_queue_full: u64,
    /// Records found in the queue at start, from an earlier run.
    pub pending_at_start: u64,
    pub batches_sent: u64,
    pub batches_confirmed: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Bytes left in the queue when voxtap stopped (sent at the next start).
    pub left_bytes: u64,
    /// Records (CDRs, or packet batches) left in the queue when voxtap stopped.
    pub left_records: u64,
    /// The queue folder those records wait in.
    pub queue_dir: PathBuf,
    /// Why the sender stopped short, when it did.
    pub stopped: Option<Stopped>,
    pub queue_errors: u64,
    pub commands_answered: u64,
}

impl LinkStats {
    /// What the operator should read when the run did not deliver everything (`what`: "CDRs", "packet
    /// batches"); `None` when all reached the central. A refusal is reported even with nothing queued.
    pub fn undelivered(&self, what: &str) -> Option<String> {
        let left = self.left_records > 0 || self.left_bytes > 0;
        let refused = matches!(self.stopped, Some(Stopped::Refused { .. }));
        let dropped = match self.dropped_queue_full {
            0 => String::new(),
            n => format!(" {n} {what} were dropped: the queue was full (link_queue_maxsize)."),
        };
        if !left && !refused && dropped.is_empty() {
            return None;
        }
        let why = match (&self.stopped, left) {
            (Some(s), _) => s.describe(),
            (None, true) => "the central has not confirmed everything".into(),
            (None, false) => "everything queued reached the central".into(),
        };
        if !left {
            return Some(format!("{why}; nothing is left in the queue.{dropped}"));
        }
        Some(format!(
            "{why}. {} {what} ({} bytes) stay queued in {}: they are sent first at the next start with this \
             configuration (a later -r run, or the live sensor using the same link_queue_dir).{dropped}",
            self.left_records,
            self.left_bytes,
            self.queue_dir.display()
        ))
    }
}

struct Shared {
    closed: AtomicBool,
    /// When the sender stops trying after the input ended (`None`: until everything is confirmed).
    deadline: Mutex<Option<Instant>>,
    /// When the link was last seen working: connected with nothing owed, or a confirmation came. `patience`
    /// counts from here.
    last_ok: Mutex<Instant>,
    /// The last failure to reach or keep a central, for the report when the sender gives up.
    last_error: Mutex<String>,
    stats: Mutex<LinkStats>,
}

/// The producer's side; `push` never waits for the network.
pub struct LinkSink {
    queue: Appender,
    dir: PathBuf,
    max_bytes: u64,
    shared: Arc<Shared>,
    doorbell: Arc<Notify>,
    sender: tokio::task::JoinHandle<()>,
    rt: tokio::runtime::Handle,
    last_sync: Instant,
    dirty: bool,
    /// The queue's size, re-read now and then (reading it each push would cost a directory scan).
    size: u64,
    size_at: Instant,
    since_size: u64,
    last_full_warning: Option<Instant>,
}

const SYNC_EVERY: Duration = Duration::from_millis(200);
/// A central that says nothing for this long (it answers pings) is taken as gone.
const SILENCE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A refusal a live remote keeps meeting is logged again after this long, not at every retry.
const REFUSAL_REPEAT: Duration = Duration::from_secs(60);

impl LinkSink {
    pub fn start(
        cfg: RemoteConfig,
        commands: Option<CommandHandler>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<LinkSink> {
        let (queue, report) = Appender::open(&cfg.queue_dir)?;
        if report.pending > 0 {
            info!(dir = %cfg.queue_dir.display(), pending = report.pending, "link queue holds records from an earlier run; they are sent first");
        }
        let queue_id = queue::queue_id(&cfg.queue_dir)?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            deadline: Mutex::new(None),
            last_ok: Mutex::new(Instant::now()),
            last_error: Mutex::new(String::new()),
            stats: Mutex::new(LinkStats { pending_at_start: report.pending, ..Default::default() }),
        });
        let doorbell = Arc::new(Notify::new());
        let (sh, ring) = (shared.clone(), doorbell.clone());
        let dir = cfg.queue_dir.clone();
        let max_bytes = cfg.max_bytes;
        let sender = rt.spawn(run_sender(cfg, queue_id, sh, ring, commands));
        let size = queue::pending_bytes(&dir);
        Ok(LinkSink {
            queue,
            dir,
            max_bytes,
            shared,
            doorbell,
            sender,
            rt: rt.clone(),
            last_sync: Instant::now(),
            dirty: false,
            size,
            size_at: Instant::now(),
            since_size: 0,
            last_full_warning: None,
        })
    }

    /// Whether a record of `len` bytes fits under `link_queue_maxsize` now.
    pub fn room(&mut self, len: usize) -> bool {
        if self.size_at.elapsed() >= Duration::from_secs(1) {
            self.size = queue::pending_bytes(&self.dir);
            self.size_at = Instant::now();
            self.since_size = 0;
        }
        self.size + self.since_size + len as u64 <= self.max_bytes
    }

    /// Whether the sender is still trying to deliver (it stops early only in a run that must end).
    pub fn sending(&self) -> bool {
        !self.sender.is_finished()
    }

    /// Appends one record (a CDR's JSON, or a packet batch); `false` when the queue is full and it was dropped.
    pub fn push(&mut self, record: &[u8]) -> bool {
        if !self.room(record.len()) {
            self.shared.stats.lock().dropped_queue_full += 1;
            if self.last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                self.last_full_warning = Some(Instant::now());
                warn!(dir = %self.dir.display(), bytes = self.size, "link queue is full (link_queue_maxsize): the central has been away too long; new records are dropped and counted");
            }
            return false;
        }
        if let Err(e) = self.queue.append(record) {
            self.shared.stats.lock().queue_errors += 1;
            warn!(error = %e, "cannot append to the link queue; record dropped");
            return false;
        }
        self.since_size += record.len() as u64 + 8;
        self.shared.stats.lock().queued += 1;
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync();
        }
        self.doorbell.notify_one();
        true
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Err(e) = self.queue.sync() {
                warn!(error = %e, "cannot sync the link queue");
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    /// No more records. `wait`: how long the sender keeps trying to deliver what is left (`None`: until the
    /// central has confirmed everything, or a run that must end gives up on its own terms).
    pub fn finish(mut self, wait: Option<Duration>) -> LinkStats {
        self.sync();
        *self.shared.deadline.lock() = wait.map(|w| Instant::now() + w);
        self.shared.closed.store(true, Ordering::Release);
        self.doorbell.notify_one();
        // Called from the collector thread, never from the runtime's own.
        let _ = self.rt.block_on(self.sender);
        let mut s = self.shared.stats.lock().clone();
        s.left_bytes = queue::pending_bytes(&self.dir);
        s.left_records = queue::pending_records(&self.dir).unwrap_or_else(|e| {
            warn!(error = %e, dir = %self.dir.display(), "cannot count the records left in the link queue");
            0
        });
        s.queue_dir = self.dir.clone();
        s
    }
}

/// Whether the sender stops now, and why.
fn stop_now(cfg: &RemoteConfig, shared: &Shared) -> Option<Stopped> {
    if cfg.interrupt.is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Some(Stopped::Interrupted);
    }
    if let Some(p) = cfg.patience {
        if shared.last_ok.lock().elapsed() >= p {
            let last_error = shared.last_error.lock().clone();
            return Some(Stopped::NoCentral { waited_s: p.as_secs(), last_error });
        }
    }
    if shared.closed.load(Ordering::Acquire) && shared.deadline.lock().is_some_and(|d| Instant::now() >= d) {
        return Some(Stopped::FinalWait);
    }
    None
}

/// Resolves once the sender has to stop (polled: the reasons are a clock, a flag and a signal).
async fn until_stop(cfg: &RemoteConfig, shared: &Shared) -> Stopped {
    loop {
        if let Some(why) = stop_now(cfg, shared) {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sender stops short: says why and records it for the report.
fn stopped(cfg: &RemoteConfig, shared: &Shared, why: Stopped) {
    let left_bytes = queue::pending_bytes(&cfg.queue_dir);
    if left_bytes > 0 && !matches!(why, Stopped::Refused { .. }) {
        // The run's report says it too, with the count; here it is the moment it happened.
        info!(left_bytes, reason = %why.describe(), "stopping with records not confirmed by the central; they stay queued for the next start");
    }
    shared.stats.lock().stopped = Some(why);
}

/// What to check when a central refuses this sensor in a way waiting cannot fix; `None` for other failures.
fn refusal(central: &str, e: &LinkError, sensor_id: Option<u16>) -> Option<String> {
    let id = sensor_id.map_or_else(|| "this sensor's id_sensor".to_string(), |i| format!("id_sensor {i}"));
    match e {
        LinkError::Auth => Some(format!(
            "the central at {central} refused the password (server_password): set the same server_password here \
             and on the central, or the secret the central keeps for {id} (server_sensor_password there)"
        )),
        // The central's answer when it lists secrets of single sensors and has none for this one.
        LinkError::Refused(m) if m == "unknown sensor" => Some(format!(
            "the central at {central} has no secret for {id}: add server_sensor_password = ID:SECRET for it on the \
             central (or a shared server_password on both sides)"
        )),
        LinkError::Version { .. } => Some(format!(
            "the central at {central} speaks another link protocol ({e}): run the same voxtap version on both sides"
        )),
        _ => None,
    }
}

async fn run_sender(
    cfg: RemoteConfig,
    queue_id: String,
    shared: Arc<Shared>,
    ring: Arc<Notify>,
    commands: Option<CommandHandler>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut last_refusal: Option<(String, Instant)> = None;
    loop {
        if let Some(why) = stop_now(&cfg, &shared) {
            return stopped(&cfg, &shared, why);
        }
        // Once the input has ended with nothing owed, there is nothing to need a central for.
        if shared.closed.load(Ordering::Acquire) && queue::pending_bytes(&cfg.queue_dir) == 0 {
            return;
        }
        let attempt = tokio::select! {
            r = connect_any(&cfg, &queue_id) => r,
            why = until_stop(&cfg, &shared) => return stopped(&cfg, &shared, why),
        };
        match attempt {
            Ok((ch, central)) => {
                shared.stats.lock().connects += 1;
                *shared.last_ok.lock() = Instant::now();
                backoff = Duration::from_millis(500);
                let r = tokio::select! {
                    r = session::session(ch, &cfg, &shared, &ring, commands.as_ref()) => r,
                    why = until_stop(&cfg, &shared) => return stopped(&cfg, &shared, why),
                };
                match r {
                    Ok(()) => {
                        info!(%central, "everything confirmed by the central");
                        return;
                    }
                    Err(e) => {
                        *shared.last_error.lock() = format!("{central}: {e}");
                        if let Some(why) = stop_now(&cfg, &shared) {
                            return stopped(&cfg, &shared, why);
                        }
                        warn!(%central, error = %e, "link to the central lost; reconnecting");
                    }
                }
            }
            Err(Failure { central, error: e }) => {
                shared.stats.lock().connect_failures += 1;
                *shared.last_error.lock() = format!("{central}: {e}");
                let retry_in_ms = backoff.as_millis() as u64;
                match refusal(&central, &e, cfg.sensor_id) {
                    // A run that must end says so and stops: no retry fixes a secret.
                    Some(reason) if cfg.bounded => {
                        error!("{reason}");
                        return stopped(&cfg, &shared, Stopped::Refused { central, reason });
                    }
                    // A live remote keeps trying (the central's side may be fixed meanwhile), saying why now and then,
                    // and slowly: fast guesses would get its address throttled by the central (net_auth_failures_max).
                    Some(reason) => {
                        backoff = BACKOFF_MAX;
                        let retry_in_ms = backoff.as_millis() as u64;
                        if last_refusal.as_ref().is_none_or(|(r, t)| *r != reason || t.elapsed() >= REFUSAL_REPEAT) {
                            error!(retry_in_ms, "{reason}; what is to be sent stays queued, retrying");
                            last_refusal = Some((reason, Instant::now()));
                        }
                    }
                    None if matches!(e, LinkError::Refused(_)) => {
                        warn!(%central, error = %e, retry_in_ms, "the central refused this sensor; retrying")
                    }
                    None => warn!(%central, error = %e, retry_in_ms, "no central reachable"),
                }
            }
        }
        // Sleep, but wake at once when the sender has to stop (the input's end may make the deadline pass).
        let until = Instant::now() + backoff;
        while Instant::now() < until && stop_now(&cfg, &shared).is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connect, handshake and welcome, all within this.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// Why no central took this sensor: the central and its error (a refusal rather than an absence, when any
/// central refused).
struct Failure {
    central: String,
    error: LinkError,
}

/// Tries each central in order; the first that completes the handshake and welcomes this sensor wins.
async fn connect_any(cfg: &RemoteConfig, queue_id: &str) -> Result<(secure::Channel, String), Failure> {
    let mut worst: Option<Failure> = None;
    let mut note = |central: &str, error: LinkError| {
        // A refusal tells the operator more than a central that is away: it is the one reported.
        if worst.as_ref().is_none_or(|w| refusal("", &w.error, None).is_none()) {
            worst = Some(Failure { central: central.to_string(), error });
        }
    };
    for host in &cfg.destinations {
        let name = format!("{host}:{}", cfg.port);
        let addrs: Vec<_> = match tokio::net::lookup_host((host.as_str(), cfg.port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                note(&name, e.into());
                continue;
            }
        };
        for addr in addrs {
            let me = Identity2 {
                sensor_id: cfg.sensor_id,
                sensor_name: cfg.sensor_name.clone(),
                mode: cfg.mode.name().into(),
                queue_id: queue_id.into(),
                spake2: String::new(),
            };
            let attempt = async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (mut ch, _) = secure::connect(stream, &cfg.password, me, crate::time::wall_clock() / 1000).await?;
                match ch.recv().await? {
                    (msg::WELCOME, _) => Ok(ch),
                    (msg::ERROR, m) => Err(LinkError::Refused(String::from_utf8_lossy(m).into_owned())),
                    (k, _) => Err(LinkError::Protocol(format!("unexpected record {k} before the welcome"))),
                }
            };
            match tokio::time::timeout(CONNECT_LIMIT, attempt).await.unwrap_or(Err(LinkError::Timeout)) {
                Ok(ch) => {
                    info!(central = %name, "connected to the central");
                    return Ok((ch, name));
                }
                Err(e) => note(&name, e),
            }
        }
    }
    Err(worst.unwrap_or(Failure {
        central: "server_destination".into(),
        error: LinkError::Protocol("server_destination lists no host".into()),
    }))
}
