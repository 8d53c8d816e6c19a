//! CDRs into MySQL/MariaDB in VoIPmonitor's tables (reference §4). A thread of the slow side runs a tokio
//! runtime with one writer: CDRs arrive as their JSON text, are turned into rows, and are stored in batches, one
//! transaction per batch. While the database is away the writer keeps the batch and retries with backoff.

pub mod row;
pub mod schema;
pub mod writer;

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
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
        })
    }
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
    /// CDRs still unstored when voxtap stopped because the database stayed away.
    pub cdrs_unsent: u64,
    pub batches: u64,
    /// Failed attempts (connection lost, server away).
    pub retries: u64,
}

/// CDRs per transaction, and how long the writer waits to fill a batch.
const BATCH: usize = 500;
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Once the input has ended, how long the writer keeps trying an absent database before giving up.
const FINAL_WAIT: Duration = Duration::from_secs(20);

/// The writer thread; `push` hands it CDRs.
pub struct DbSink {
    tx: Option<mpsc::Sender<row::DbCdr>>,
    handle: std::thread::JoinHandle<DbStats>,
    shape: Shape,
    utc: bool,
    unreadable: u64,
}

impl DbSink {
    pub fn start(cfg: DbConfig) -> std::io::Result<DbSink> {
        let (tx, rx) = mpsc::channel::<row::DbCdr>(100_000);
        let (shape, utc) = (cfg.shape, cfg.utc);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle =
            std::thread::Builder::new().name("mysql-writer".into()).spawn(move || rt.block_on(run(cfg, rx)))?;
        Ok(DbSink { tx: Some(tx), handle, shape, utc, unreadable: 0 })
    }

    /// Queues one CDR (its JSON), turned into rows here, in the caller's thread, so that the writer's thread
    /// only talks to the database; waits when the writer is 100,000 CDRs behind.
    pub fn push(&mut self, json: String) {
        match row::from_json(&json, &self.shape, self.utc) {
            Ok(r) => {
                if let Some(tx) = &self.tx {
                    let _ = tx.blocking_send(r);
                }
            }
            Err(e) => {
                self.unreadable += 1;
                warn!(error = %e, cdr = %json, "CDR not stored");
            }
        }
    }

    /// No more CDRs: the writer stores what it holds and stops.
    pub fn finish(mut self) -> DbStats {
        self.tx.take();
        let mut stats = self.handle.join().unwrap_or_default();
        stats.cdrs_unreadable += self.unreadable;
        stats
    }
}

async fn run(cfg: DbConfig, mut rx: mpsc::Receiver<row::DbCdr>) -> DbStats {
    let mut w = Writer::new(cfg);
    let mut stats = DbStats::default();
    let mut open = true;
    let mut batch = Vec::with_capacity(BATCH);
    if let Err(e) = w.connect().await {
        warn!(error = %e, "database not reachable yet; CDRs wait and the writer retries");
    }
    while open || !batch.is_empty() {
        // Fill the batch: wait for the first CDR, then take what arrives within BATCH_WAIT.
        if open && batch.len() < BATCH {
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH {
                let next = if batch.is_empty() {
                    rx.recv().await
                } else {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(x) => x,
                        Err(_) => break,
                    }
                };
                match next {
                    Some(r) => batch.push(r),
                    None => {
                        open = false;
                        break;
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(250);
        let gave_up_at = tokio::time::Instant::now() + FINAL_WAIT;
        loop {
            match w.write_isolating(&batch).await {
                Ok(done) => {
                    stats.cdrs_stored += done.inserted;
                    stats.cdrs_duplicate += done.duplicates;
                    stats.cdrs_rejected += done.rejected;
                    stats.batches += 1;
                    batch.clear();
                    break;
                }
                Err(e) => {
                    stats.retries += 1;
                    w.disconnect();
                    if !open && tokio::time::Instant::now() >= gave_up_at {
                        warn!(error = %e, cdrs = batch.len(), "database still unavailable; giving up on these CDRs");
                        stats.cdrs_unsent += batch.len() as u64;
                        batch.clear();
                        while rx.try_recv().is_ok() {
                            stats.cdrs_unsent += 1;
                        }
                        break;
                    }
                    if matches!(e, DbError::Unavailable(_)) || stats.retries % 10 == 1 {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database write failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    stats
}
