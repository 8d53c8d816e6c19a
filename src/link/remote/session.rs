//! One connection of a remote to its central: the queue is sent from its acknowledged position on, in a window
//! of batches; the position moves as the central confirms; relayed manager commands are answered on the side.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::warn;

use super::{stop_now, CommandHandler, Mode, RemoteConfig, Shared, SILENCE};
use crate::link::secure::LinkError;
use crate::link::{msg, secure};
use crate::store::queue::{self, Pos, Reader};

/// CDRs per batch; a packet batch is one queue record already.
const CDRS_PER_BATCH: usize = 500;
/// Batches sent and not yet confirmed, at most.
const WINDOW: usize = 16;
const PING_EVERY: Duration = Duration::from_secs(5);

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
pub(super) async fn session(
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
            *shared.last_ok.lock() = Instant::now();
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
        if stop_now(cfg, shared).is_some() {
            return Err(LinkError::Protocol("the sender stops: the rest stays queued".into()));
        }
        // Nothing owed to this central: it works, whatever the input is doing (a file still being analysed).
        if inflight.is_empty() {
            *shared.last_ok.lock() = Instant::now();
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
