//! The central's end of the link (`server_bind:server_bind_port`): one task per connection on the slow side's
//! runtime. A connection is admitted by the listener's gate (pre-authentication slots, established slots, per
//! source), must finish its handshake within `net_handshake_timeout_s`, and its source is refused for a minute
//! after `net_auth_failures_max` wrong secrets. A remote that authenticates, whose clock is close enough and whose
//! id_sensor is not already connected is registered (in `sensors` too, when there is a database) and then sends
//! batches: CDRs go to this process's CDR collector (database, CDR log, output), stamped with the sensor's
//! authenticated id, and are confirmed once they are on disk there; packets go to the merge that feeds the
//! central's own analysis. What was already taken is remembered per (sensor, queue), so nothing one sensor
//! claims touches another's queue.
//!
//! The same port answers VoIPmonitor's GUI way of reaching a remote: a JSON line
//! `{"type_connection":"gui_command","sensor_id":N,"command":"…"}` is relayed over that sensor's link and the
//! answer streamed back (loopback only, unless `manager_enable_unencrypted`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::msg;
use super::secure::{self, LinkError, SendHalf};
use crate::call::cdr::Cdr;
use crate::config::net::NetLimits;
use crate::edge::gate::{Admission, Gate, GateStats, Limits};
use crate::edge::throttle::Throttle;
use crate::store::mysql::DbConfig;
use crate::store::queue::Pos;

mod gui;
use gui::{gui_command, relay};

/// CDRs from a remote for the collector; `done` is signalled once they are durable.
pub struct RemoteCdrs {
    pub cdrs: Vec<Cdr>,
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// What the packet merge hears from the connections.
pub enum PacketEvent {
    /// Inflated packet records from connection `conn`, with where each lies (checked once, here).
    Batch { conn: u64, sensor: Option<u16>, raw: Vec<u8>, frames: Vec<msg::FrameAt> },
    /// The connection ended (the remote finished, or the link broke).
    Gone { conn: u64 },
}

#[derive(Clone)]
pub struct CentralConfig {
    pub bind: SocketAddr,
    /// The shared `server_password` (empty: only sensors with their own secret may connect, unless none has one).
    pub password: String,
    pub max_time_diff_s: u32,
    /// The central's own id_sensor: a remote may not use it.
    pub own_id: Option<u16>,
    pub db: Option<DbConfig>,
    /// GUI commands relayed to remotes from peers other than the loopback.
    pub allow_remote_gui: bool,
    /// Connection limits and per-sensor secrets.
    pub net: NetLimits,
}

impl CentralConfig {
    /// The secret a sensor claiming `id` must prove (`None`: it may not connect).
    fn secret(&self, id: Option<u16>) -> Option<String> {
        self.net.password_for(id, &self.password).map(str::to_string)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CentralStats {
    pub connections: u64,
    pub registered: u64,
    pub refused_auth: u64,
    /// Connections from a source that guessed wrong too often (refused without a handshake).
    pub refused_throttled: u64,
    pub refused_clock: u64,
    pub refused_duplicate_id: u64,
    pub refused_protocol: u64,
    /// Handshakes not finished within `net_handshake_timeout_s`.
    pub handshake_timeouts: u64,
    pub cdr_batches: u64,
    pub cdrs: u64,
    pub cdrs_unreadable: u64,
    pub packet_batches: u64,
    /// Batches a remote sent again (its earlier send was not confirmed before the link broke): skipped.
    pub resent_batches_skipped: u64,
    pub links_lost: u64,
    pub gui_commands: u64,
    /// The listener's admissions (caps, evictions).
    pub gate: GateStats,
}

/// An answer streamed back from a remote: a part, or the last part.
type AnswerTx = tokio::sync::mpsc::Sender<(bool, Vec<u8>)>;

type Taken = Arc<tokio::sync::Mutex<Option<Pos>>>;

/// Queues remembered at most; past it, those of sensors not connected now are forgotten (a resend after that is
/// caught by the database's idempotency key).
const QUEUES_MAX: usize = 65_536;

/// A registered remote: how to reach it for relayed commands, and how to close its link.
struct Entry {
    conn: u64,
    queue_id: String,
    peer: SocketAddr,
    tx: Arc<tokio::sync::Mutex<SendHalf>>,
    pending: Arc<Mutex<HashMap<u32, AnswerTx>>>,
    close: Arc<tokio::sync::Notify>,
}

struct State {
    cfg: CentralConfig,
    gate: Arc<Gate>,
    throttle: Throttle,
    refusals: Mutex<crate::edge::LogLimit>,
    registry: Mutex<HashMap<String, Entry>>,
    /// The newest position taken from each (sensor, queue): a batch at or below it is a resend. Held (async) while
    /// a batch is being stored, so a replaced link that is still storing and its successor never take one twice.
    taken: Mutex<HashMap<(String, String), Taken>>,
    stats: Mutex<CentralStats>,
    cdrs: Sender<RemoteCdrs>,
    packets: Sender<PacketEvent>,
    next_conn: AtomicU64,
    next_request: AtomicU32,
    stop: tokio::sync::watch::Sender<bool>,
    /// Connection tasks alive (stop waits for them: a batch being stored finishes).
    live: AtomicUsize,
}

pub struct Central {
    state: Arc<State>,
    local: SocketAddr,
    rt: tokio::runtime::Handle,
    accept: Option<tokio::task::JoinHandle<()>>,
}

/// A remote that says nothing for this long (it pings every 5 s) is taken as gone.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a relayed command may stay silent on the remote (between parts of its answer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a relayed answer's part may wait for the GUI to take the one before (the link waits meanwhile).
const GUI_STALL: Duration = Duration::from_secs(5);

impl Central {
    pub fn start(
        cfg: CentralConfig,
        cdrs: Sender<RemoteCdrs>,
        packets: Sender<PacketEvent>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<Central> {
        let listener = crate::edge::bind_tcp(cfg.bind, rt)?;
        let local = listener.local_addr()?;
        if cfg.password.is_empty() && cfg.net.sensor_passwords.is_empty() {
            warn!("server_password is empty: any remote that knows the address can send to this central");
        } else if cfg.password.is_empty() {
            info!(
                sensors = cfg.net.sensor_passwords.len(),
                "server_password is empty: only sensors with a server_sensor_password are let in"
            );
        }
        let state = Arc::new(State {
            gate: Gate::new(Limits::from_net(&cfg.net)),
            throttle: Throttle::new(cfg.net.auth_failures_max),
            cfg,
            registry: Mutex::new(HashMap::new()),
            refusals: Mutex::new(crate::edge::LogLimit::new()),
            taken: Mutex::new(HashMap::new()),
            stats: Mutex::new(CentralStats::default()),
            cdrs,
            packets,
            next_conn: AtomicU64::new(1),
            next_request: AtomicU32::new(1),
            stop: tokio::sync::watch::channel(false).0,
            live: AtomicUsize::new(0),
        });
        let accept = rt.spawn(accept_loop(listener, state.clone()));
        info!(listen = %local, "central listening for remote sensors");
        Ok(Central { state, local, rt: rt.clone(), accept: Some(accept) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> CentralStats {
        let mut s = self.state.stats.lock().clone();
        s.gate = self.state.gate.stats();
        s
    }

    /// Sensors connected now: id (or name), address.
    pub fn sensors(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.state.registry.lock().iter().map(|(k, e)| (k.clone(), e.peer)).collect();
        v.sort();
        v
    }

    /// Runs a manager command on a connected remote and returns its whole answer (for tests and tools; the GUI
    /// path streams instead).
    pub fn command(&self, sensor: &str, command: &str) -> Result<Vec<u8>, String> {
        let st = self.state.clone();
        let (sensor, command) = (sensor.to_string(), command.to_string());
        self.rt.block_on(async move {
            let mut rx = relay(&st, &sensor, &command).await?;
            let mut out = Vec::new();
            loop {
                match tokio::time::timeout(COMMAND_TIMEOUT, rx.recv()).await {
                    Ok(Some((last, part))) => {
                        out.extend_from_slice(&part);
                        if last {
                            return Ok(out);
                        }
                    }
                    Ok(None) => return Err(format!("link to sensor {sensor} closed")),
                    Err(_) => return Err("timeout".into()),
                }
            }
        })
    }

    /// Stops accepting and closes every link.
    pub fn stop(mut self) -> CentralStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        let _ = self.state.stop.send(true);
        let st = self.state.clone();
        // Links finish what they are storing, then end; a peer that hangs does not hold up the stop for long.
        let wait = async move {
            let _ = accept.await;
            let t0 = tokio::time::Instant::now();
            while st.live.load(Ordering::Acquire) > 0 && t0.elapsed() < Duration::from_secs(15) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside the runtime (a test's task): the links are told to stop; nothing can be waited for here.
            self.rt.spawn(wait);
        } else {
            self.rt.block_on(wait);
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, st: Arc<State>) {
    let mut stop = st.stop.subscribe();
    while let Some((s, peer)) = crate::edge::accept(&listener, &mut stop, "link").await {
        st.stats.lock().connections += 1;
        if st.throttle.blocked(peer.ip()) {
            st.stats.lock().refused_throttled += 1;
            continue;
        }
        let Ok(adm) = st.gate.admit(peer.ip()) else {
            if st.refusals.lock().allow() {
                warn!(%peer, "too many link connections from this address (net_per_ip_max); closed");
            }
            continue;
        };
        let st2 = st.clone();
        st.live.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            serve(s, peer, adm, &st2).await;
            st2.live.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The handshake's outcome before the connection is a registered link.
enum Opened {
    Gui(TcpStream),
    Link(Box<(secure::Channel, secure::ClientHello, secure::Identity2)>),
}

async fn open(s: TcpStream, peer: SocketAddr, st: &State, now_us: i64) -> Result<Opened, LinkError> {
    // VoIPmonitor's GUI (and nc) open with a JSON line; a voxtap remote with a length-prefixed frame.
    let mut first = [0u8; 1];
    if matches!(s.peek(&mut first).await, Ok(1)) && first[0] == b'{' {
        return Ok(Opened::Gui(s));
    }
    let secret = |id: Option<u16>| st.cfg.secret(id);
    // Every answered guess counts against the address until its handshake succeeds (a guesser that checks the
    // central's proof and hangs up is counted too).
    let attempt = || {
        if st.throttle.failed(peer.ip()) {
            warn!(%peer, limit = st.cfg.net.auth_failures_max, "too many failed authentications from this address: refused for a minute");
        }
    };
    let (ch, hello, ident) = secure::accept(s, &secret, &attempt, now_us).await?;
    st.throttle.forgive(peer.ip());
    Ok(Opened::Link(Box::new((ch, hello, ident))))
}

async fn serve(s: TcpStream, peer: SocketAddr, mut adm: Admission, st: &State) {
    let now_us = crate::time::wall_clock() / 1000;
    let limit = Duration::from_secs(st.cfg.net.handshake_timeout_s as u64);
    let mut stop = st.stop.subscribe();
    let opened = tokio::select! {
        r = tokio::time::timeout(limit, open(s, peer, st, now_us)) => r.unwrap_or(Err(LinkError::Timeout)),
        _ = adm.evicted() => return,
        _ = crate::edge::stopped(&mut stop) => return,
    };
    let (ch, hello, ident) = match opened {
        Ok(Opened::Gui(s)) => {
            // Not authenticated by a handshake: its request is read within the same deadline.
            gui_command(s, peer, st, limit).await;
            return;
        }
        Ok(Opened::Link(b)) => *b,
        Err(e) => {
            let mut stats = st.stats.lock();
            match e {
                LinkError::Auth => stats.refused_auth += 1,
                LinkError::Timeout => stats.handshake_timeouts += 1,
                _ => stats.refused_protocol += 1,
            }
            drop(stats);
            if st.refusals.lock().allow() {
                warn!(%peer, error = %e, "link connection refused");
            }
            return;
        }
    };
    let secure::Channel { tx, rx, .. } = ch;
    let tx = Arc::new(tokio::sync::Mutex::new(tx));
    let sid = ident.sensor_id;
    let refuse = |why: String| {
        let tx = tx.clone();
        async move {
            warn!(%peer, sensor_id = ?sid, reason = %why, "remote sensor refused");
            let _ = tx.lock().await.send(msg::ERROR, why.as_bytes()).await;
        }
    };
    if adm.establish().is_err() {
        refuse("the central has as many sensors connected as net_conn_max allows".into()).await;
        return;
    }
    let diff_s = (now_us - hello.time_us).abs() as f64 / 1e6;
    if st.cfg.max_time_diff_s > 0 && diff_s > st.cfg.max_time_diff_s as f64 {
        st.stats.lock().refused_clock += 1;
        refuse(format!(
            "clock difference of {diff_s:.1} s between this sensor and the central is over client_server_connect_maximum_time_diff_s ({} s): synchronise both clocks (NTP)",
            st.cfg.max_time_diff_s
        ))
        .await;
        return;
    }
    if ident.sensor_id.is_some() && ident.sensor_id == st.cfg.own_id {
        st.stats.lock().refused_duplicate_id += 1;
        refuse(format!(
            "id_sensor {} is the central's own: give the remote another id_sensor",
            st.cfg.own_id.unwrap_or(0)
        ))
        .await;
        return;
    }
    let packets = match ident.mode.as_str() {
        "cdr" => false,
        "packets" => true,
        other => {
            st.stats.lock().refused_protocol += 1;
            refuse(format!("unknown mode {other:?}")).await;
            return;
        }
    };
    let key = ident.sensor_id.map(|i| i.to_string()).unwrap_or_else(|| format!("name:{}", ident.sensor_name));
    let conn = st.next_conn.fetch_add(1, Ordering::Relaxed);
    let pending = Arc::new(Mutex::new(HashMap::new()));
    let close = Arc::new(tokio::sync::Notify::new());
    let refused = {
        let mut reg = st.registry.lock();
        match reg.get(&key) {
            Some(old) if old.queue_id != ident.queue_id => Some(old.peer),
            other => {
                if let Some(old) = other {
                    // The same sensor again (its queue says so): the old link is dead and is replaced.
                    info!(sensor = %key, %peer, "sensor reconnected; the previous link is closed");
                    old.close.notify_one();
                }
                reg.insert(
                    key.clone(),
                    Entry {
                        conn,
                        queue_id: ident.queue_id.clone(),
                        peer,
                        tx: tx.clone(),
                        pending: pending.clone(),
                        close: close.clone(),
                    },
                );
                None
            }
        }
    };
    if let Some(other) = refused {
        st.stats.lock().refused_duplicate_id += 1;
        refuse(format!("sensor {key} is already connected from {other}: each sensor needs its own id_sensor")).await;
        return;
    }
    st.stats.lock().registered += 1;
    info!(sensor = %key, name = %ident.sensor_name, %peer, mode = %ident.mode, "remote sensor registered");
    if let (Some(db), Some(id)) = (&st.cfg.db, ident.sensor_id) {
        let (db, name, host) = (db.clone(), ident.sensor_name.clone(), peer.ip().to_string());
        // The database may be away; registration must not hold up the link.
        tokio::spawn(async move {
            for attempt in 0..60u32 {
                match crate::store::mysql::register_sensor(&db, id, &name, &host).await {
                    Ok(()) => return,
                    Err(e) if attempt == 0 => warn!(error = %e, id, "cannot register the sensor yet; retrying"),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    let welcome = serde_json::json!({ "sensor": key, "version": secure::VERSIONS.last() }).to_string();
    let welcomed = tx.lock().await.send(msg::WELCOME, welcome.as_bytes()).await;
    let link = Link { key: key.clone(), sensor_id: ident.sensor_id, queue_id: ident.queue_id.clone(), conn, packets };
    let result = match welcomed {
        Ok(()) => receive(rx, &tx, &link, &pending, st, &close, &mut stop).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => info!(sensor = %key, "remote sensor finished"),
        Err(e) => {
            st.stats.lock().links_lost += 1;
            if !*st.stop.borrow() {
                warn!(sensor = %key, %peer, error = %e, "link to a remote sensor lost");
            }
        }
    }
    if packets {
        // The merge must hear it (it waits for this remote's packets otherwise), unless the central is stopping.
        let t0 = tokio::time::Instant::now();
        let mut ev = PacketEvent::Gone { conn };
        while let Err(crossbeam_channel::TrySendError::Full(back)) = st.packets.try_send(ev) {
            if t0.elapsed() >= Duration::from_secs(1) {
                break;
            }
            ev = back;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tx.lock().await.shutdown().await;
    let mut reg = st.registry.lock();
    if reg.get(&key).is_some_and(|e| e.conn == conn) {
        reg.remove(&key);
    }
}

/// Who is on the other end of a registered link.
struct Link {
    key: String,
    sensor_id: Option<u16>,
    queue_id: String,
    conn: u64,
    packets: bool,
}

/// Records from one remote until it ends, the link breaks, a newer link of the same sensor replaces it (`close`)
/// or the central stops. Those are heard only between records: a batch being stored is finished and confirmed.
async fn receive(
    mut rx: secure::RecvHalf,
    tx: &tokio::sync::Mutex<SendHalf>,
    link: &Link,
    pending: &Mutex<HashMap<u32, AnswerTx>>,
    st: &State,
    close: &tokio::sync::Notify,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let bad = |e: msg::MsgError| LinkError::Protocol(e.to_string());
    let taken: Taken = {
        let mut all = st.taken.lock();
        if all.len() >= QUEUES_MAX {
            all.retain(|_, t| Arc::strong_count(t) > 1);
        }
        all.entry((link.key.clone(), link.queue_id.clone())).or_default().clone()
    };
    loop {
        let (kind, body) = tokio::select! {
            r = tokio::time::timeout(SILENCE, rx.recv()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(LinkError::Protocol("the remote said nothing for 30 s".into())),
            },
            _ = close.notified() => return Err(LinkError::Protocol("replaced by a newer link of the same sensor".into())),
            _ = crate::edge::stopped(stop) => return Ok(()),
        };
        match kind {
            msg::CDRS | msg::PACKETS => {
                if (kind == msg::PACKETS) != link.packets {
                    return Err(LinkError::Protocol("batch of the other mode".into()));
                }
                let (pos, rest) = msg::read_pos(body).map_err(bad)?;
                let mut last = taken.lock().await;
                if last.is_some_and(|t| pos <= t) {
                    st.stats.lock().resent_batches_skipped += 1;
                } else {
                    // Inline on the worker: a batch is 1 MiB of frames (INFLATED_MAX bounds a hostile one), and moving it
                    // off the worker costs more than it takes.
                    let raw = msg::inflate(rest).map_err(bad)?;
                    if link.packets {
                        let frames = msg::index(&raw).map_err(bad)?;
                        st.stats.lock().packet_batches += 1;
                        hand_on(st, PacketEvent::Batch { conn: link.conn, sensor: link.sensor_id, raw, frames })
                            .await?;
                    } else {
                        take_cdrs(&raw, link.sensor_id, st).await?;
                    }
                    *last = Some(last.map_or(pos, |t| t.max(pos)));
                }
                drop(last);
                tx.lock().await.send(msg::ACK, &msg::pos_bytes(pos)).await?;
            }
            msg::PING => tx.lock().await.send(msg::PONG, &[]).await?,
            msg::END => {
                tx.lock().await.send(msg::END, &[]).await?;
                return Ok(());
            }
            msg::ANSWER | msg::ANSWER_PART if body.len() >= 4 => {
                let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let last = kind == msg::ANSWER;
                let waiter = {
                    let mut p = pending.lock();
                    if last {
                        p.remove(&id)
                    } else {
                        p.get(&id).cloned()
                    }
                };
                if let Some(w) = waiter {
                    // A GUI that reads slowly may hold this link for a moment, not past the remote's keepalive: one
                    // that cannot take a part within GUI_STALL, or went away, loses the rest of its answer.
                    if !matches!(tokio::time::timeout(GUI_STALL, w.send((last, body[4..].to_vec()))).await, Ok(Ok(())))
                    {
                        pending.lock().remove(&id);
                    }
                }
            }
            k => return Err(LinkError::Protocol(format!("unexpected record {k}"))),
        }
    }
}

/// Hands packets to the merge, waiting while it is busy, but not past the central's stop (the merge may no
/// longer be read then).
async fn hand_on(st: &State, mut ev: PacketEvent) -> Result<(), LinkError> {
    loop {
        match st.packets.try_send(ev) {
            Ok(()) => return Ok(()),
            Err(crossbeam_channel::TrySendError::Full(back)) if !*st.stop.borrow() => {
                ev = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return Err(LinkError::Protocol("the central is stopping".into())),
        }
    }
}

/// Hands a CDR batch to the collector and waits until it is on disk there.
async fn take_cdrs(raw: &[u8], sensor_id: Option<u16>, st: &State) -> Result<(), LinkError> {
    let items = msg::items(raw).map_err(|e| LinkError::Protocol(e.to_string()))?;
    let mut cdrs = Vec::with_capacity(items.len());
    for it in items {
        match std::str::from_utf8(it).ok().and_then(|s| Cdr::from_remote_json(s, sensor_id)) {
            Some(c) => cdrs.push(c),
            None => {
                st.stats.lock().cdrs_unreadable += 1;
                warn!(record = %String::from_utf8_lossy(&it[..it.len().min(200)]), "a remote sent a CDR that is not one; skipped");
            }
        }
    }
    let n = cdrs.len() as u64;
    let (done, wait) = tokio::sync::oneshot::channel();
    let mut batch = RemoteCdrs { cdrs, done };
    loop {
        match st.cdrs.try_send(batch) {
            Ok(()) => break,
            Err(crossbeam_channel::TrySendError::Full(back)) => {
                batch = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return Err(LinkError::Protocol("the central is stopping".into())),
        }
    }
    wait.await.map_err(|_| LinkError::Protocol("the central is stopping".into()))?;
    let mut s = st.stats.lock();
    s.cdr_batches += 1;
    s.cdrs += n;
    Ok(())
}
