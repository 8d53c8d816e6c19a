//! A remote sensor's end of the link: what it has to send (CDRs, or packet batches with `packetbuffer_sender`)
//! is appended to an on-disk queue first; a sender task on the slow side's runtime connects to the first central
//! of `server_destination` that answers, sends the queue from its acknowledged position on, and moves that
//! position as the central confirms. A central that is away, a cut link or a restart of either side loses nothing: what was not
//! confirmed is sent again, and the central skips what it already has.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::msg;
use super::secure::{self, Identity2, LinkError};
use crate::config::Config;
use crate::store::queue::{self, Appender, Pos, Reader};

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
        })
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
    pub queue_errors: u64,
    pub commands_answered: u64,
}

struct Shared {
    closed: AtomicBool,
    /// When the sender stops trying after the input ended (`None`: until everything is confirmed).
    deadline: Mutex<Option<Instant>>,
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
/// CDRs per batch; a packet batch is one queue record already.
const CDRS_PER_BATCH: usize = 500;
/// Batches sent and not yet confirmed, at most.
const WINDOW: usize = 16;
const PING_EVERY: Duration = Duration::from_secs(5);
/// A central that says nothing for this long (it answers pings) is taken as gone.
const SILENCE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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
    /// central has confirmed everything — a capture file sent with `-r`).
    pub fn finish(mut self, wait: Option<Duration>) -> LinkStats {
        self.sync();
        *self.shared.deadline.lock() = wait.map(|w| Instant::now() + w);
        self.shared.closed.store(true, Ordering::Release);
        self.doorbell.notify_one();
        // Called from the collector thread, never from the runtime's own.
        let _ = self.rt.block_on(self.sender);
        let mut s = self.shared.stats.lock().clone();
        s.left_bytes = queue::pending_bytes(&self.dir);
        s
    }
}

fn give_up(shared: &Shared) -> bool {
    shared.closed.load(Ordering::Acquire) && shared.deadline.lock().is_some_and(|d| Instant::now() >= d)
}

async fn run_sender(
    cfg: RemoteConfig,
    queue_id: String,
    shared: Arc<Shared>,
    ring: Arc<Notify>,
    commands: Option<CommandHandler>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if give_up(&shared) {
            warn!(
                left_bytes = queue::pending_bytes(&cfg.queue_dir),
                "stopping with records not confirmed by the central; they stay queued for the next start"
            );
            return;
        }
        match connect_any(&cfg, &queue_id).await {
            Ok((ch, central)) => {
                shared.stats.lock().connects += 1;
                backoff = Duration::from_millis(500);
                match session(ch, &cfg, &shared, &ring, commands.as_ref()).await {
                    Ok(()) => {
                        info!(%central, "everything confirmed by the central");
                        return;
                    }
                    Err(e) => warn!(%central, error = %e, "link to the central lost; reconnecting"),
                }
            }
            Err(e) => {
                shared.stats.lock().connect_failures += 1;
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "no central reachable");
            }
        }
        // Sleep, but wake at once when the input ends (the deadline may already have passed).
        let until = Instant::now() + backoff;
        while Instant::now() < until && !give_up(&shared) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connect, handshake and welcome, all within this.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// Tries each central in order; the first that completes the handshake and welcomes this sensor wins.
async fn connect_any(cfg: &RemoteConfig, queue_id: &str) -> Result<(secure::Channel, String), LinkError> {
    let mut last = LinkError::Protocol("server_destination lists no host".into());
    for host in &cfg.destinations {
        let name = format!("{host}:{}", cfg.port);
        let addrs: Vec<_> = match tokio::net::lookup_host((host.as_str(), cfg.port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                last = e.into();
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
                Err(e) => {
                    // A refusal (secret, clock, duplicate sensor) is the operator's to fix: say it loudly.
                    if matches!(e, LinkError::Auth | LinkError::Refused(_) | LinkError::Version { .. }) {
                        tracing::error!(central = %name, error = %e, "the central refused this sensor");
                    }
                    last = e;
                }
            }
        }
    }
    Err(last)
}

enum Event {
    Ack(Pos),
    Alive,
    Ended,
    Command(u32, String),
    Gone(LinkError),
}

/// Commands answered at once; more wait for one of these to finish.
const COMMANDS_AT_ONCE: usize = 4;
/// Bytes of an answer per record.
const ANSWER_PART_BYTES: usize = 1 << 20;

type SharedTx = Arc<tokio::sync::Mutex<secure::SendHalf>>;

/// Sends one record, within `SILENCE`: a central that stops reading (its socket open, its buffers full) is a lost
/// link like a silent one, and the sender reconnects or gives up on time.
async fn send_within(tx: &SharedTx, kind: u8, body: &[u8]) -> Result<(), LinkError> {
    let send = async { tx.lock().await.send(kind, body).await };
    tokio::time::timeout(SILENCE, send).await.unwrap_or(Err(LinkError::Timeout))
}

/// One connection: sends the queue, moves its position as the central confirms; `Ok` once the input has ended
/// and the central confirmed everything.
async fn session(
    ch: secure::Channel,
    cfg: &RemoteConfig,
    shared: &Shared,
    ring: &Notify,
    commands: Option<&CommandHandler>,
) -> Result<(), LinkError> {
    let secure::Channel { tx, mut rx, .. } = ch;
    let tx: SharedTx = Arc::new(tokio::sync::Mutex::new(tx));
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<Event>(64);
    let reader = tokio::spawn(async move {
        loop {
            let ev = match tokio::time::timeout(SILENCE, rx.recv()).await {
                Err(_) => Event::Gone(LinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the central has said nothing for 30 s",
                ))),
                Ok(Ok((msg::ACK, p))) => match msg::read_pos(p) {
                    Ok((pos, _)) => Event::Ack(pos),
                    Err(e) => Event::Gone(LinkError::Protocol(e.to_string())),
                },
                Ok(Ok((msg::PONG, _))) => Event::Alive,
                Ok(Ok((msg::END, _))) => Event::Ended,
                Ok(Ok((msg::COMMAND, p))) if p.len() >= 4 => Event::Command(
                    u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    String::from_utf8_lossy(&p[4..]).into(),
                ),
                Ok(Ok((msg::ERROR, m))) => Event::Gone(LinkError::Refused(String::from_utf8_lossy(m).into_owned())),
                Ok(Ok((k, _))) => Event::Gone(LinkError::Protocol(format!("unexpected record {k}"))),
                Ok(Err(e)) => Event::Gone(e),
            };
            let last = matches!(ev, Event::Gone(_) | Event::Ended);
            if ev_tx.send(ev).await.is_err() || last {
                return;
            }
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(COMMANDS_AT_ONCE));
    let result = send_loop(&tx, &mut ev_rx, cfg, shared, ring, commands, &slots).await;
    tx.lock().await.shutdown().await;
    reader.abort();
    result
}

/// Runs a relayed command on the blocking pool and streams its answer back in parts.
fn answer_command(id: u32, cmd: String, handler: CommandHandler, tx: SharedTx, slots: Arc<tokio::sync::Semaphore>) {
    tokio::spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else { return };
        let (parts_tx, mut parts) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let work = tokio::task::spawn_blocking(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut out = |b: &[u8]| {
                pending.extend_from_slice(b);
                while pending.len() >= ANSWER_PART_BYTES {
                    let rest = pending.split_off(ANSWER_PART_BYTES);
                    if parts_tx.blocking_send(std::mem::replace(&mut pending, rest)).is_err() {
                        return false;
                    }
                }
                true
            };
            handler(&cmd, &mut out);
            let _ = parts_tx.blocking_send(pending);
        });
        // Every part but the last goes as ANSWER_PART; the last (possibly empty) as ANSWER.
        let mut held: Option<Vec<u8>> = None;
        while let Some(part) = parts.recv().await {
            if let Some(prev) = held.replace(part) {
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&prev);
                if send_within(&tx, msg::ANSWER_PART, &p).await.is_err() {
                    return;
                }
            }
        }
        let _ = work.await;
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&held.unwrap_or_default());
        let _ = send_within(&tx, msg::ANSWER, &p).await;
    });
}

async fn send_loop(
    tx: &SharedTx,
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    cfg: &RemoteConfig,
    shared: &Shared,
    ring: &Notify,
    commands: Option<&CommandHandler>,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<(), LinkError> {
    // Reading from the acknowledged position resends whatever the last connection left unconfirmed.
    let mut reader = Reader::open(&cfg.queue_dir)?;
    let mut inflight: std::collections::VecDeque<Pos> = Default::default();
    let mut last_ping = Instant::now();
    let mut end_sent = false;
    let handle = |ev: Event, inflight: &mut std::collections::VecDeque<Pos>| match ev {
        Event::Ack(p) => {
            // The confirmation is synced to disk: a blocking moment, kept off the other tasks' threads.
            if let Err(e) = tokio::task::block_in_place(|| queue::ack(&cfg.queue_dir, p)) {
                shared.stats.lock().queue_errors += 1;
                warn!(error = %e, "cannot record the central's confirmation in the link queue");
            }
            while inflight.front().is_some_and(|f| *f <= p) {
                inflight.pop_front();
                shared.stats.lock().batches_confirmed += 1;
            }
            Ok(false)
        }
        Event::Alive => Ok(false),
        Event::Ended => Ok(true),
        Event::Command(id, cmd) => {
            let handler: CommandHandler = commands.cloned().unwrap_or_else(|| {
                Arc::new(|_: &str, out: &mut dyn FnMut(&[u8]) -> bool| {
                    out(b"no manager on this sensor\n");
                })
            });
            answer_command(id, cmd, handler, tx.clone(), slots.clone());
            shared.stats.lock().commands_answered += 1;
            Ok(false)
        }
        Event::Gone(e) => Err(e),
    };
    loop {
        while let Ok(ev) = events.try_recv() {
            if handle(ev, &mut inflight)? {
                return Ok(());
            }
        }
        if give_up(shared) {
            return Err(LinkError::Protocol("input ended and the wait for the central is over".into()));
        }
        let mut sent = false;
        if inflight.len() < WINDOW && !end_sent {
            let max = if cfg.mode == Mode::Cdr { CDRS_PER_BATCH } else { 1 };
            // The queue is a file in the page cache: a short blocking read, kept off the other tasks' threads.
            let recs = tokio::task::block_in_place(|| reader.read(max))?;
            if let Some(last) = recs.last().map(|r| r.1) {
                let mut body = msg::pos_bytes(last).to_vec();
                match cfg.mode {
                    Mode::Cdr => {
                        let items: Vec<&[u8]> = recs.iter().map(|r| r.0.as_slice()).collect();
                        body.extend_from_slice(&msg::pack(&items));
                        send_within(tx, msg::CDRS, &body).await?;
                    }
                    Mode::Packets => {
                        body.extend_from_slice(&recs[0].0);
                        send_within(tx, msg::PACKETS, &body).await?;
                    }
                }
                inflight.push_back(last);
                shared.stats.lock().batches_sent += 1;
                sent = true;
            }
        }
        if sent {
            continue;
        }
        // Nothing more to read: once the input has ended and all is confirmed, say so and wait for the echo.
        if shared.closed.load(Ordering::Acquire) && inflight.is_empty() && !end_sent {
            // Something appended between the read and the flag: read again first.
            if tokio::task::block_in_place(|| reader.read(1)).map(|r| r.is_empty()).unwrap_or(false) {
                send_within(tx, msg::END, &[]).await?;
                end_sent = true;
            } else {
                reader = Reader::open(&cfg.queue_dir)?;
                continue;
            }
        }
        if last_ping.elapsed() >= PING_EVERY {
            send_within(tx, msg::PING, &[]).await?;
            last_ping = Instant::now();
        }
        tokio::select! {
            ev = events.recv() => {
                if let Some(ev) = ev {
                    if handle(ev, &mut inflight)? {
                        return Ok(());
                    }
                }
            }
            _ = ring.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
