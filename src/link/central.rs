//! The central's end of the link (`server_bind:server_bind_port`): one thread per remote. A remote that passes
//! the handshake, whose clock is close enough and whose id_sensor is not already taken by another sensor is
//! registered (in `sensors` too, when there is a database) and then sends batches: CDRs go to this process's
//! CDR collector (database, CDR log, output) and are confirmed once they are on disk there; packets go to the
//! merge that feeds the central's own analysis.
//!
//! The same port answers VoIPmonitor's GUI way of reaching a remote: a JSON line
//! `{"type_connection":"gui_command","sensor_id":N,"command":"…"}` is relayed over that sensor's link and the
//! answer written back (loopback only, unless `manager_enable_unencrypted`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tracing::{info, warn};

use super::msg;
use super::secure::{self, LinkError, SendHalf};
use crate::call::cdr::Cdr;
use crate::store::mysql::DbConfig;
use crate::store::queue::Pos;

/// CDRs from a remote for the collector; `done` is signalled once they are durable.
pub struct RemoteCdrs {
    pub cdrs: Vec<Cdr>,
    pub done: Sender<()>,
}

/// What the packet merge hears from the connections.
pub enum PacketEvent {
    /// Inflated packet records from connection `conn`, with where each lies (checked once, here).
    Batch { conn: u64, raw: Vec<u8>, frames: Vec<msg::FrameAt> },
    /// The connection ended (the remote finished, or the link broke).
    Gone { conn: u64 },
}

#[derive(Clone)]
pub struct CentralConfig {
    pub bind: SocketAddr,
    pub password: String,
    pub max_time_diff_s: u32,
    /// The central's own id_sensor: a remote may not use it.
    pub own_id: Option<u16>,
    pub db: Option<DbConfig>,
    /// GUI commands relayed to remotes from peers other than the loopback.
    pub allow_remote_gui: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CentralStats {
    pub connections: u64,
    pub registered: u64,
    pub refused_auth: u64,
    pub refused_clock: u64,
    pub refused_duplicate_id: u64,
    pub refused_protocol: u64,
    pub cdr_batches: u64,
    pub cdrs: u64,
    pub cdrs_unreadable: u64,
    pub packet_batches: u64,
    /// Batches a remote sent again (its earlier send was not confirmed before the link broke): skipped.
    pub resent_batches_skipped: u64,
    pub links_lost: u64,
    pub gui_commands: u64,
}

/// A registered remote: how to reach it for relayed commands.
struct Entry {
    conn: u64,
    queue_id: String,
    peer: SocketAddr,
    tx: Arc<Mutex<SendHalf>>,
    pending: Arc<Mutex<HashMap<u32, Sender<Vec<u8>>>>>,
}

/// Refusals of strangers are logged, but a scan or a flood cannot fill the log: at most `PER_MINUTE` lines a
/// minute, then one line with how many were left out.
struct LogLimit {
    window: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    const PER_MINUTE: u32 = 20;

    fn allow(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(60) {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "more link connections were refused in the last minute (not logged one by one)"
                );
            }
            self.window = std::time::Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        self.logged += 1;
        if self.logged > Self::PER_MINUTE {
            self.suppressed += 1;
        }
        self.logged <= Self::PER_MINUTE
    }
}

struct State {
    cfg: CentralConfig,
    refusals: Mutex<LogLimit>,
    registry: Mutex<HashMap<String, Entry>>,
    /// The newest position taken from each remote queue: a batch at or below it is a resend.
    taken: Mutex<HashMap<String, Pos>>,
    stats: Mutex<CentralStats>,
    cdrs: Sender<RemoteCdrs>,
    packets: Sender<PacketEvent>,
    next_conn: AtomicU64,
    next_request: AtomicU32,
    stop: AtomicBool,
}

pub struct Central {
    state: Arc<State>,
    local: SocketAddr,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// A remote that says nothing for this long (it pings every 5 s) is taken as gone.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a relayed command may take on the remote.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections being served at once; more are closed at accept (a flood cannot exhaust threads).
const MAX_CONNECTIONS: usize = 1024;

impl Central {
    pub fn start(
        cfg: CentralConfig,
        cdrs: Sender<RemoteCdrs>,
        packets: Sender<PacketEvent>,
    ) -> std::io::Result<Central> {
        let listener = TcpListener::bind(cfg.bind)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        if cfg.password.is_empty() {
            warn!("server_password is empty: any remote that knows the address can send to this central");
        }
        let state = Arc::new(State {
            cfg,
            registry: Mutex::new(HashMap::new()),
            refusals: Mutex::new(LogLimit { window: std::time::Instant::now(), logged: 0, suppressed: 0 }),
            taken: Mutex::new(HashMap::new()),
            stats: Mutex::new(CentralStats::default()),
            cdrs,
            packets,
            next_conn: AtomicU64::new(1),
            next_request: AtomicU32::new(1),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let accept = std::thread::Builder::new().name("link-accept".into()).spawn(move || accept_loop(listener, st))?;
        info!(listen = %local, "central listening for remote sensors");
        Ok(Central { state, local, accept: Some(accept) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> CentralStats {
        self.state.stats.lock().clone()
    }

    /// Sensors connected now: id (or name), address.
    pub fn sensors(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.state.registry.lock().iter().map(|(k, e)| (k.clone(), e.peer)).collect();
        v.sort();
        v
    }

    /// Runs a manager command on a connected remote and returns its answer.
    pub fn command(&self, sensor: &str, command: &str) -> Result<Vec<u8>, String> {
        relay(&self.state, sensor, command)
    }

    /// Stops accepting and closes every link.
    pub fn stop(mut self) -> CentralStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        for e in self.state.registry.lock().values() {
            e.tx.lock().shutdown();
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, st: Arc<State>) {
    let live = Arc::new(AtomicU64::new(0));
    let mut handles: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !st.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((s, peer)) => {
                handles.retain(|h| !h.is_finished());
                if live.load(Ordering::Relaxed) as usize >= MAX_CONNECTIONS {
                    warn!(%peer, "too many link connections; closed");
                    continue;
                }
                let _ = s.set_nonblocking(false);
                st.stats.lock().connections += 1;
                let (st2, live2) = (st.clone(), live.clone());
                live.fetch_add(1, Ordering::Relaxed);
                match std::thread::Builder::new().name("link-conn".into()).spawn(move || {
                    serve(s, peer, &st2);
                    live2.fetch_sub(1, Ordering::Relaxed);
                }) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        live.fetch_sub(1, Ordering::Relaxed);
                        warn!(error = %e, "cannot start a link thread");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                warn!(error = %e, "accept failed on the link port");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
}

fn serve(s: TcpStream, peer: SocketAddr, st: &State) {
    // VoIPmonitor's GUI (and nc) open with a JSON line; a voxtap remote with a length-prefixed frame.
    let mut first = [0u8; 1];
    let _ = s.set_read_timeout(Some(secure::HANDSHAKE_TIMEOUT));
    if matches!(s.peek(&mut first), Ok(1)) && first[0] == b'{' {
        gui_command(s, peer, st);
        return;
    }
    let now_us = crate::time::wall_clock() / 1000;
    let (ch, hello) = match secure::accept(s, &st.cfg.password, now_us) {
        Ok(x) => x,
        Err(e) => {
            let mut stats = st.stats.lock();
            match e {
                LinkError::Auth => stats.refused_auth += 1,
                _ => stats.refused_protocol += 1,
            }
            drop(stats);
            if st.refusals.lock().allow() {
                warn!(%peer, error = %e, "link connection refused");
            }
            return;
        }
    };
    let secure::Channel { tx, mut rx, .. } = ch;
    let tx = Arc::new(Mutex::new(tx));
    let refuse = |why: String| {
        warn!(%peer, sensor_id = ?hello.sensor_id, reason = %why, "remote sensor refused");
        let _ = tx.lock().send(msg::ERROR, why.as_bytes());
    };
    let diff_s = (now_us - hello.time_us).abs() as f64 / 1e6;
    if st.cfg.max_time_diff_s > 0 && diff_s > st.cfg.max_time_diff_s as f64 {
        st.stats.lock().refused_clock += 1;
        refuse(format!(
            "clock difference of {diff_s:.1} s between this sensor and the central is over client_server_connect_maximum_time_diff_s ({} s): synchronise both clocks (NTP)",
            st.cfg.max_time_diff_s
        ));
        return;
    }
    let packets = match hello.mode.as_str() {
        "cdr" => false,
        "packets" => true,
        other => {
            st.stats.lock().refused_protocol += 1;
            refuse(format!("unknown mode {other:?}"));
            return;
        }
    };
    if hello.sensor_id.is_some() && hello.sensor_id == st.cfg.own_id {
        st.stats.lock().refused_duplicate_id += 1;
        refuse(format!(
            "id_sensor {} is the central's own: give the remote another id_sensor",
            st.cfg.own_id.unwrap_or(0)
        ));
        return;
    }
    let key = hello.sensor_id.map(|i| i.to_string()).unwrap_or_else(|| format!("name:{}", hello.sensor_name));
    let conn = st.next_conn.fetch_add(1, Ordering::Relaxed);
    let pending = Arc::new(Mutex::new(HashMap::new()));
    {
        let mut reg = st.registry.lock();
        if let Some(old) = reg.get(&key) {
            if old.queue_id != hello.queue_id {
                let other = old.peer;
                drop(reg);
                st.stats.lock().refused_duplicate_id += 1;
                refuse(format!("sensor {key} is already connected from {other}: each sensor needs its own id_sensor"));
                return;
            }
            // The same sensor again (its queue says so): the old link is dead and is replaced.
            info!(sensor = %key, %peer, "sensor reconnected; the previous link is closed");
            old.tx.lock().shutdown();
        }
        reg.insert(
            key.clone(),
            Entry { conn, queue_id: hello.queue_id.clone(), peer, tx: tx.clone(), pending: pending.clone() },
        );
    }
    st.stats.lock().registered += 1;
    info!(sensor = %key, name = %hello.sensor_name, %peer, mode = %hello.mode, "remote sensor registered");
    if let (Some(db), Some(id)) = (&st.cfg.db, hello.sensor_id) {
        let (db, name, host) = (db.clone(), hello.sensor_name.clone(), peer.ip().to_string());
        // The database may be away; registration must not hold up the link.
        let _ = std::thread::Builder::new().name("sensor-register".into()).spawn(move || {
            for attempt in 0..60u32 {
                match crate::store::mysql::register_sensor(&db, id, &name, &host) {
                    Ok(()) => return,
                    Err(e) if attempt == 0 => warn!(error = %e, id, "cannot register the sensor yet; retrying"),
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        });
    }
    let welcome = serde_json::json!({ "sensor": key, "version": secure::VERSIONS.last() }).to_string();
    // The send lock is released before receiving: the receive loop sends acknowledgements with it.
    let welcomed = tx.lock().send(msg::WELCOME, welcome.as_bytes());
    let result = welcomed.and_then(|_| {
        let _ = rx.set_read_timeout(Some(SILENCE));
        receive(&mut rx, &tx, &hello.queue_id, conn, packets, &pending, st)
    });
    match result {
        Ok(()) => info!(sensor = %key, "remote sensor finished"),
        Err(e) => {
            st.stats.lock().links_lost += 1;
            if !st.stop.load(Ordering::Acquire) {
                warn!(sensor = %key, %peer, error = %e, "link to a remote sensor lost");
            }
        }
    }
    if packets {
        let _ = st.packets.send_timeout(PacketEvent::Gone { conn }, Duration::from_secs(1));
    }
    let mut reg = st.registry.lock();
    if reg.get(&key).is_some_and(|e| e.conn == conn) {
        reg.remove(&key);
    }
}

/// Records from one remote until it ends or the link breaks.
fn receive(
    rx: &mut secure::RecvHalf,
    tx: &Mutex<SendHalf>,
    queue_id: &str,
    conn: u64,
    packets: bool,
    pending: &Mutex<HashMap<u32, Sender<Vec<u8>>>>,
    st: &State,
) -> Result<(), LinkError> {
    let bad = |e: msg::MsgError| LinkError::Protocol(e.to_string());
    loop {
        let (kind, body) = rx.recv()?;
        match kind {
            msg::CDRS | msg::PACKETS => {
                if (kind == msg::PACKETS) != packets {
                    return Err(LinkError::Protocol("batch of the other mode".into()));
                }
                let (pos, rest) = msg::read_pos(body).map_err(bad)?;
                let seen = st.taken.lock().get(queue_id).is_some_and(|t| pos <= *t);
                if seen {
                    st.stats.lock().resent_batches_skipped += 1;
                } else {
                    let raw = msg::inflate(rest).map_err(bad)?;
                    if packets {
                        let frames = msg::index(&raw).map_err(bad)?;
                        st.stats.lock().packet_batches += 1;
                        hand_on(st, PacketEvent::Batch { conn, raw, frames })?;
                    } else {
                        take_cdrs(&raw, st)?;
                    }
                    st.taken.lock().insert(queue_id.to_string(), pos);
                }
                tx.lock().send(msg::ACK, &msg::pos_bytes(pos))?;
            }
            msg::PING => tx.lock().send(msg::PONG, &[])?,
            msg::END => {
                tx.lock().send(msg::END, &[])?;
                return Ok(());
            }
            msg::ANSWER if body.len() >= 4 => {
                let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                if let Some(w) = pending.lock().remove(&id) {
                    let _ = w.send(body[4..].to_vec());
                }
            }
            k => return Err(LinkError::Protocol(format!("unexpected record {k}"))),
        }
    }
}

/// Hands packets to the merge, waiting while it is busy, but not past the central's stop (the merge may no
/// longer be read then).
fn hand_on(st: &State, mut ev: PacketEvent) -> Result<(), LinkError> {
    loop {
        match st.packets.send_timeout(ev, Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) if !st.stop.load(Ordering::Acquire) => ev = back,
            Err(_) => return Err(LinkError::Protocol("the central is stopping".into())),
        }
    }
}

/// Hands a CDR batch to the collector and waits until it is on disk there.
fn take_cdrs(raw: &[u8], st: &State) -> Result<(), LinkError> {
    let items = msg::items(raw).map_err(|e| LinkError::Protocol(e.to_string()))?;
    let mut cdrs = Vec::with_capacity(items.len());
    for it in items {
        match std::str::from_utf8(it).ok().and_then(|s| Cdr::from_json(s.to_string())) {
            Some(c) => cdrs.push(c),
            None => {
                st.stats.lock().cdrs_unreadable += 1;
                warn!(record = %String::from_utf8_lossy(&it[..it.len().min(200)]), "a remote sent a CDR that is not one; skipped");
            }
        }
    }
    let n = cdrs.len() as u64;
    let (done, wait) = crossbeam_channel::bounded(1);
    st.cdrs.send(RemoteCdrs { cdrs, done }).map_err(|_| LinkError::Protocol("the central is stopping".into()))?;
    wait.recv().map_err(|_| LinkError::Protocol("the central is stopping".into()))?;
    let mut s = st.stats.lock();
    s.cdr_batches += 1;
    s.cdrs += n;
    Ok(())
}

fn relay(st: &State, sensor: &str, command: &str) -> Result<Vec<u8>, String> {
    let (tx, pending) = {
        let reg = st.registry.lock();
        let e = reg.get(sensor).ok_or_else(|| format!("missing sniffer service - sensor {sensor} is not connected"))?;
        (e.tx.clone(), e.pending.clone())
    };
    let id = st.next_request.fetch_add(1, Ordering::Relaxed);
    let (w, answer) = crossbeam_channel::bounded(1);
    pending.lock().insert(id, w);
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(command.as_bytes());
    if let Err(e) = tx.lock().send(msg::COMMAND, &p) {
        pending.lock().remove(&id);
        return Err(format!("link to sensor {sensor} failed: {e}"));
    }
    let r = answer.recv_timeout(COMMAND_TIMEOUT).map_err(|_| "timeout".to_string());
    pending.lock().remove(&id);
    r
}

/// `{"type_connection":"gui_command","sensor_id":N,"command":"…"}` → the remote's answer, written back raw.
fn gui_command(mut s: TcpStream, peer: SocketAddr, st: &State) {
    if !peer.ip().is_loopback() && !st.cfg.allow_remote_gui {
        warn!(%peer, "GUI command from a remote address refused (manager_enable_unencrypted = no)");
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // One line of JSON, at most 64 KiB.
    while !buf.contains(&b'\n') && buf.len() < 65_536 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if serde_json::from_slice::<serde_json::Value>(buf.trim_ascii()).is_ok() {
            break;
        }
    }
    st.stats.lock().gui_commands += 1;
    let line = String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or(&[])).to_string();
    let answer = match serde_json::from_str::<serde_json::Value>(line.trim()) {
        Ok(v) if v.get("type_connection").and_then(|t| t.as_str()) == Some("gui_command") => {
            let sensor = match v.get("sensor_id") {
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::String(t)) => t.clone(),
                _ => String::new(),
            };
            let cmd = v.get("command").and_then(|c| c.as_str()).unwrap_or("");
            relay(st, &sensor, cmd).unwrap_or_else(|e| e.into_bytes())
        }
        Ok(_) => b"unsupported type_connection\n".to_vec(),
        Err(_) => b"bad request: expected one JSON line\n".to_vec(),
    };
    let _ = s.write_all(&answer);
}
