//! CDRs into MySQL/MariaDB in VoIPmonitor's tables (reference §4). A thread of the slow side runs a tokio
//! runtime with the writers (one connection each): CDRs arrive as their JSON text, are turned into rows, and are
//! stored in batches, one transaction per batch. While the database is away a writer keeps its batch and retries
//! with backoff. A server that refuses this user (password, GRANTs) is no absence: voxtap says what to check, and
//! stops at start (or, in a capture file's run, at once); a live sensor refused later keeps its CDRs queued.

pub mod error;
pub mod row;
pub mod schema;
pub mod tsv;
pub mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::store::queue::{self, Appender, Pos, Reader};
use error::Target;
use schema::Shape;
use writer::{DbError, Writer};

/// Connection and table settings, from VoIPmonitor's keys.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub socket: Option<String>,
    pub db: String,
    pub user: String,
    pub password: String,
    pub shape: Shape,
    pub utc: bool,
    pub id_sensor: Option<u16>,
    pub sensor_name: String,
    pub sensor_host: String,
    /// The on-disk CDR queue (`cdr_queue_dir`, default `SPOOLDIR/cdrqueue`).
    pub queue_dir: PathBuf,
    /// Connections storing batches side by side (`mysqlstore_max_threads_cdr`).
    pub writers: usize,
}

impl DbConfig {
    /// The database settings of a configuration; `None` when no `mysqlhost` is set (no database).
    pub fn from_config(cfg: &Config) -> Option<DbConfig> {
        let host = cfg.mysqlhost.clone()?;
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
        Some(DbConfig {
            host,
            port: cfg.mysqlport,
            socket: cfg.mysqlsocket.clone(),
            db: cfg.mysqldb.clone(),
            user: cfg.mysqlusername.clone(),
            password: cfg.mysqlpassword.clone(),
            shape: Shape { ipv6: cfg.ipv6, ms: cfg.time_precision_in_ms, partition: cfg.cdr_partition },
            utc: cfg.utc,
            id_sensor: cfg.id_sensor,
            sensor_name: hostname.clone(),
            sensor_host: hostname,
            queue_dir: cfg.cdr_queue_dir.clone().unwrap_or_else(|| cfg.spooldir.join("cdrqueue")),
            writers: cfg.mysqlstore_max_threads_cdr as usize,
        })
    }

    /// Where the server is (the socket, else `host:port`), who connects, and to which database: what every
    /// message about the database names.
    pub fn target(&self) -> Target {
        Target {
            at: self.socket.clone().unwrap_or_else(|| format!("{}:{}", self.host, self.port)),
            user: self.user.clone(),
            db: self.db.clone(),
        }
    }
}

/// Why the database side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the CDR queue {}", dir.display())]
    Queue {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server refused this user: the sentence says what to check.
    #[error("{0}")]
    Denied(String),
}

/// Registers another sensor (a remote of this central) in `sensors`, creating the database when it is missing.
pub async fn register_sensor(cfg: &DbConfig, id: u16, name: &str, host: &str) -> anyhow::Result<()> {
    let mut c = cfg.clone();
    c.id_sensor = Some(id);
    c.sensor_name = name.to_string();
    c.sensor_host = host.to_string();
    let mut w = Writer::new(c);
    let r = w.connect().await;
    w.disconnect();
    r?;
    Ok(())
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DbStats {
    pub cdrs_stored: u64,
    /// CDRs found already stored (a replay): not inserted again.
    pub cdrs_duplicate: u64,
    /// CDRs the server refused (logged with the CDR).
    pub cdrs_rejected: u64,
    /// CDRs that could not be turned into rows (logged).
    pub cdrs_unreadable: u64,
    /// CDRs left in the queue when voxtap stopped because the database stayed away (stored at the next start).
    pub cdrs_queued: u64,
    /// CDRs found in the queue at start, from an earlier run.
    pub replayed_at_start: u64,
    /// Queue records skipped as corrupt, and queue read/write errors.
    pub queue_corrupt: u64,
    pub queue_errors: u64,
    pub batches: u64,
    /// Of the CDRs stored, those that went in through LOAD DATA LOCAL INFILE (the others through INSERTs).
    pub cdrs_bulk_loaded: u64,
    /// Failed attempts (connection lost, server away).
    pub retries: u64,
    /// The server refused this user at the last attempt (a run that must end then stops at once): what to check.
    pub denied: Option<String>,
    /// Where the server is (`host:port` or socket) and the CDR queue folder, for the report.
    pub at: String,
    pub queue_dir: PathBuf,
}

impl DbStats {
    /// What the operator should read when CDRs did not reach the database; `None` when all did.
    pub fn undelivered(&self) -> Option<String> {
        let left = format!(
            "{} CDRs wait in the CDR queue {} and are stored first at the next start with this configuration",
            self.cdrs_queued,
            self.queue_dir.display()
        );
        match &self.denied {
            Some(why) => Some(format!("{why}. {left}")),
            None if self.cdrs_queued > 0 => {
                Some(format!("the database at {} stayed unreachable, so voxtap stopped trying. {left}", self.at))
            }
            None => None,
        }
    }
}

/// CDRs per transaction, and how long the writer waits to fill a batch.
const BATCH: usize = 500;
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Once the input has ended, how long the writer keeps trying an absent database before it stops (what it
/// could not store stays in the queue for the next start).
const FINAL_WAIT: Duration = Duration::from_secs(20);
/// The queue is forced to disk at most this long after a CDR is appended.
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// How long the start waits for a first connection before it goes on without one (the writer keeps trying).
const FIRST_CONNECT: Duration = Duration::from_secs(5);
/// The same failure is told again, briefly, after this long (not at every retry).
const SAY_AGAIN: Duration = Duration::from_secs(60);
/// A live sensor's retries while the server refuses its user: slow, a GRANT or a password takes a person.
const DENIED_RETRY: Duration = Duration::from_secs(30);

/// What the producer, the parser thread and the writer thread share.
struct Shared {
    closed: AtomicBool,
    /// The writer gave up (database away after the input ended): the parser stops too.
    stop: AtomicBool,
    /// A capture file's run: a refusal of this user stops the writer at once.
    file: bool,
    target: Target,
    /// Set while the server refuses this user (what to check), for the run's report.
    denied: Mutex<Option<String>>,
    /// The last failure told to the operator, and when: the writers share it, so a failure is told once.
    said: Mutex<Option<(String, Instant)>>,
    /// Since when the database has been failing (`None`: it works).
    failing_since: Mutex<Option<Instant>>,
}

impl Shared {
    /// Tells a failure once: in full when it is new, briefly now and then while it lasts, otherwise only at
    /// debug level. A refusal of this user is an error; an absence a warning.
    fn tell(&self, e: &DbError) {
        let text = e.explain(&self.target);
        let since = *self.failing_since.lock().get_or_insert_with(Instant::now);
        let mut said = self.said.lock();
        match said.as_ref() {
            Some((s, at)) if *s == text && at.elapsed() < SAY_AGAIN => {
                debug!(error = %e, "database still failing");
                return;
            }
            Some((s, _)) if *s == text => {
                let for_s = since.elapsed().as_secs();
                match e {
                    DbError::Denied(_) => {
                        error!("the database at {} still refuses this user ({for_s} s)", self.target.at)
                    }
                    _ => {
                        warn!("the database at {} is still failing ({for_s} s); CDRs wait in the queue", self.target.at)
                    }
                }
            }
            _ => match e {
                DbError::Denied(_) => error!("{text}"),
                _ => warn!("{text}; CDRs wait in the CDR queue and voxtap keeps trying"),
            },
        }
        *said = Some((text, Instant::now()));
    }

    /// The database works again.
    fn recovered(&self) {
        if self.failing_since.lock().take().is_some() {
            *self.said.lock() = None;
            info!(at = %self.target.at, "the database works again");
        }
    }
}

/// CDRs read from the queue and turned into rows, and the queue position just past them.
struct Parsed {
    rows: Vec<row::DbCdr>,
    last: Pos,
}

/// The CDR queue and the threads behind it: `push` appends a CDR; a parser thread reads the queue and turns CDRs
/// into rows while the writer thread's transaction runs; the writer stores them and moves the queue's position.
pub struct DbSink {
    queue: Appender,
    dir: PathBuf,
    shared: Arc<Shared>,
    doorbell: crossbeam_channel::Sender<()>,
    parser: std::thread::JoinHandle<(u64, u64)>,
    writer: tokio::task::JoinHandle<DbStats>,
    rt: tokio::runtime::Handle,
    last_sync: Instant,
    dirty: bool,
    queue_errors: u64,
    pending_at_start: u64,
}

impl DbSink {
    /// Opens the queue (CDRs left by an earlier run are stored first) and starts the threads.
    /// The writer is a task on the slow side's runtime `rt`; the parser, which is CPU work, a thread of its own.
    /// `file`: a capture file's run, which must end. Waits up to `FIRST_CONNECT` for a first connection: a
    /// server that refuses this user fails the start (nothing would ever be stored); one that is away does not.
    pub fn start(cfg: DbConfig, file: bool, rt: &tokio::runtime::Handle) -> Result<DbSink, StartError> {
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            file,
            target: cfg.target(),
            denied: Mutex::new(None),
            said: Mutex::new(None),
            failing_since: Mutex::new(None),
        });
        let probe = Writer::new(cfg.clone());
        // Called from the thread that starts the pipeline, never from the runtime's own.
        match rt.block_on(async { tokio::time::timeout(FIRST_CONNECT, probe.check_access()).await }) {
            Ok(Ok(())) => {}
            Ok(Err(e @ DbError::Denied(_))) => return Err(StartError::Denied(e.explain(&shared.target))),
            Ok(Err(e)) => shared.tell(&e),
            Err(_) => {
                *shared.failing_since.lock() = Some(Instant::now());
                warn!(
                    "the database at {} did not answer within {} s; CDRs wait in the CDR queue and voxtap keeps trying",
                    shared.target.at,
                    FIRST_CONNECT.as_secs()
                );
            }
        }
        let queue_err = |source| StartError::Queue { dir: cfg.queue_dir.clone(), source };
        let (queue, report) = Appender::open(&cfg.queue_dir).map_err(queue_err)?;
        if report.pending > 0 || report.torn_bytes > 0 {
            info!(
                dir = %cfg.queue_dir.display(),
                pending = report.pending,
                torn_bytes = report.torn_bytes,
                "CDR queue holds CDRs from an earlier run; they are stored first"
            );
        }
        let reader = Reader::open(&cfg.queue_dir).map_err(queue_err)?;
        let (doorbell, ring) = crossbeam_channel::bounded(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Parsed>(2);
        let (shape, utc) = (cfg.shape, cfg.utc);
        let sh = shared.clone();
        let parser = std::thread::Builder::new()
            .name("cdr-parser".into())
            .spawn(move || parse_queue(reader, ring, tx, sh, shape, utc))
            .map_err(queue_err)?;
        let sh = shared.clone();
        let dir = cfg.queue_dir.clone();
        let writer = rt.spawn(run(cfg, rx, sh));
        Ok(DbSink {
            queue,
            dir,
            shared,
            doorbell,
            parser,
            writer,
            rt: rt.clone(),
            last_sync: Instant::now(),
            dirty: false,
            queue_errors: 0,
            pending_at_start: report.pending,
        })
    }

    /// Appends one CDR (its JSON) to the queue; never waits for the database.
    pub fn push(&mut self, json: &str) {
        if let Err(e) = self.queue.append(json.as_bytes()) {
            self.queue_errors += 1;
            warn!(error = %e, cdr = %json, "cannot append to the CDR queue; this CDR is not stored");
            return;
        }
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync();
        }
        let _ = self.doorbell.try_send(());
    }

    pub fn sync(&mut self) {
        if self.dirty {
            if let Err(e) = self.queue.sync() {
                warn!(error = %e, "cannot sync the CDR queue");
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    /// No more CDRs: the writer stores what the queue holds (or gives up after FINAL_WAIT) and stops.
    pub fn finish(mut self) -> DbStats {
        self.sync();
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.doorbell.try_send(());
        let (unreadable, corrupt) = self.parser.join().unwrap_or_default();
        // Called from the collector thread, never from the runtime's own.
        let mut stats = self.rt.block_on(self.writer).unwrap_or_default();
        stats.cdrs_unreadable += unreadable;
        stats.queue_errors += self.queue_errors;
        stats.replayed_at_start = self.pending_at_start;
        stats.queue_corrupt = corrupt;
        // What is still in the queue (the database stayed away) waits for the next start.
        stats.cdrs_queued = queue::pending_records(&self.dir).unwrap_or(0);
        stats.denied = self.shared.denied.lock().clone();
        stats.at = self.shared.target.at.clone();
        stats.queue_dir = self.dir.clone();
        stats
    }
}

/// The parser thread: reads the queue in batches, turns CDRs into rows, hands them to the writer. Returns the
/// number of unreadable CDRs and of corrupt queue records it skipped.
fn parse_queue(
    mut reader: Reader,
    ring: crossbeam_channel::Receiver<()>,
    tx: tokio::sync::mpsc::Sender<Parsed>,
    shared: Arc<Shared>,
    shape: Shape,
    utc: bool,
) -> (u64, u64) {
    let mut unreadable = 0;
    while !shared.stop.load(Ordering::Acquire) {
        // Closed is read before the queue, so an empty read after it means everything has been seen.
        let closed = shared.closed.load(Ordering::Acquire);
        let mut recs = match reader.read(BATCH) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the CDR queue");
                if closed {
                    break;
                }
                let _ = ring.recv_timeout(BATCH_WAIT);
                continue;
            }
        };
        if recs.is_empty() {
            if closed {
                break;
            }
            let _ = ring.recv_timeout(BATCH_WAIT);
            continue;
        }
        // A short batch while the input runs: wait a little for more, so transactions stay large.
        if recs.len() < BATCH && !closed {
            let deadline = Instant::now() + BATCH_WAIT;
            while recs.len() < BATCH && ring.recv_deadline(deadline).is_ok() {
                match reader.read(BATCH - recs.len()) {
                    Ok(more) => recs.extend(more),
                    Err(_) => break,
                }
            }
        }
        let Some(last) = recs.last().map(|(_, p)| *p) else { continue };
        let mut rows = Vec::with_capacity(recs.len());
        for (p, _) in &recs {
            // The producer writes UTF-8; a damaged record is read as far as it makes sense and reported.
            let json = std::str::from_utf8(p).map_or_else(|_| String::from_utf8_lossy(p), std::borrow::Cow::Borrowed);
            match row::from_json(&json, &shape, utc) {
                Ok(r) => rows.push(r),
                Err(e) => {
                    unreadable += 1;
                    warn!(error = %e, cdr = %json, "CDR not stored");
                }
            }
        }
        if tx.blocking_send(Parsed { rows, last }).is_err() {
            break;
        }
    }
    (unreadable, reader.corrupt)
}

async fn run(cfg: DbConfig, mut rx: tokio::sync::mpsc::Receiver<Parsed>, shared: Arc<Shared>) -> DbStats {
    let dir = cfg.queue_dir.clone();
    let mut idle: Vec<Writer> = (0..cfg.writers.max(1)).map(|_| Writer::new(cfg.clone())).collect();
    // Tables and the sensor's row before the first batch; a failure is told (once) and the batch retries.
    if let Err(e) = idle[0].connect().await {
        idle[0].disconnect();
        shared.tell(&e);
    }
    let mut stats = DbStats::default();
    let mut running = tokio::task::JoinSet::new();
    // Batches are stored concurrently (one per connection) and may commit out of order; the queue's position
    // moves only past batches all of whose predecessors are stored too. A crash in between replays a few
    // stored batches, which the idempotency keys turn into no-ops.
    let mut next_seq = 0u64;
    let mut next_ack = 0u64;
    let mut done: BTreeMap<u64, Pos> = BTreeMap::new();
    let mut failed = false;
    let mut input_open = true;
    loop {
        tokio::select! {
            batch = rx.recv(), if input_open && !failed && !idle.is_empty() => {
                let Some(batch) = batch else {
                    input_open = false;
                    continue;
                };
                let mut w = idle.pop().expect("an idle writer");
                let (seq, sh) = (next_seq, shared.clone());
                next_seq += 1;
                running.spawn(async move {
                    let outcome = store(&mut w, &batch.rows, &sh).await;
                    (w, seq, batch.last, outcome)
                });
            }
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((w, seq, last, outcome)) = joined else {
                    warn!("a database writer task failed");
                    failed = true;
                    continue;
                };
                idle.push(w);
                stats.retries += outcome.retries;
                let Some(d) = outcome.written else {
                    failed = true;
                    shared.stop.store(true, Ordering::Release);
                    continue;
                };
                stats.cdrs_stored += d.inserted;
                stats.cdrs_duplicate += d.duplicates;
                stats.cdrs_rejected += d.rejected;
                stats.cdrs_bulk_loaded += d.loaded;
                stats.batches += 1;
                done.insert(seq, last);
                let mut to = None;
                while let Some(p) = done.remove(&next_ack) {
                    to = Some(p);
                    next_ack += 1;
                }
                if let Some(p) = to {
                    if let Err(e) = queue::ack(&dir, p) {
                        stats.queue_errors += 1;
                        warn!(error = %e, "cannot record the CDR queue position; a restart will find these CDRs already stored");
                    }
                }
            }
            else => break,
        }
    }
    stats
}

struct Outcome {
    /// `None`: the database stayed away after the input ended; the batch stays in the queue.
    written: Option<writer::Written>,
    retries: u64,
}

/// Stores one batch, retrying with backoff while the database is away.
async fn store(w: &mut Writer, rows: &[row::DbCdr], shared: &Shared) -> Outcome {
    let mut delay = Duration::from_millis(250);
    let mut retries = 0;
    let mut closed_at: Option<tokio::time::Instant> = None;
    loop {
        match w.write_isolating(rows).await {
            Ok(done) => {
                shared.recovered();
                return Outcome { written: Some(done), retries };
            }
            Err(e) => {
                retries += 1;
                w.disconnect();
                if shared.stop.load(Ordering::Acquire) {
                    return Outcome { written: None, retries };
                }
                let denied = matches!(e, DbError::Denied(_));
                // Kept for the run's report: a refusal, not an absence, is why CDRs stay queued.
                *shared.denied.lock() = denied.then(|| e.explain(&shared.target));
                if denied && shared.file {
                    // No retry fixes a password or a GRANT: a run that must end stops here and says so.
                    shared.tell(&e);
                    shared.stop.store(true, Ordering::Release);
                    return Outcome { written: None, retries };
                }
                if closed_at.is_none() && shared.closed.load(Ordering::Acquire) {
                    closed_at = Some(tokio::time::Instant::now());
                }
                if closed_at.is_some_and(|t| t.elapsed() >= FINAL_WAIT) {
                    warn!(
                        "the database at {} is still failing {} s after the input ended; the CDRs stay in the queue for the next start",
                        shared.target.at,
                        FINAL_WAIT.as_secs()
                    );
                    return Outcome { written: None, retries };
                }
                shared.tell(&e);
                if denied {
                    // Slow retries, cut short when the input ends: the last tries then come at the usual pace.
                    let until = tokio::time::Instant::now() + DENIED_RETRY;
                    while tokio::time::Instant::now() < until && !shared.closed.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                } else {
                    tokio::time::sleep(delay).await;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
