//! Writes batches of CDRs in one transaction each: dictionary ids from a cache (inserted when new), then the rows
//! of `cdr`, `cdr_next`, `cdr_rtp`, `cdr_proxy` and voxtap's `voxtap_cdr_stored` (whose primary key makes a
//! replayed CDR a no-op), one LOAD DATA LOCAL INFILE per table, or prepared multi-row INSERTs where the server
//! does not take that.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, TxOpts, Value};
use tracing::{debug, info, warn};

pub use super::error::DbError;
use super::row::{cdr_columns, DbCdr, Dict, RTP_COLUMNS};
use super::schema::{self, PARTITIONED};
use super::tsv;
use super::DbConfig;

mod load;
mod tables;

use load::{lines, load_batch, own_ids};
use tables::{dictionary_padding, FUTURE_DAYS};

/// Dictionary ids already known, by text.
type DictIds = HashMap<Dict, u64, foldhash::fast::RandomState>;

type Day = (i32, u32, u32);

pub struct Writer {
    cfg: DbConfig,
    conn: Option<Conn>,
    dict: DictIds,
    /// The partitions of `cdr`, when partitioned: their upper bounds (exclusive days, read from the server, not
    /// from the names) and names.
    bounds: BTreeMap<Day, String>,
    /// CDRs not stored because their day is too far ahead (see `FUTURE_DAYS`): logged for the first few.
    refused_future: u64,
    tables_ready: bool,
    /// The collation new dictionary tables get (a NO PAD one where the server has it).
    collation: &'static str,
    /// Per dictionary (`DICT_COLUMNS` order): its key compares with PAD SPACE (a table made by an older build on
    /// a server without a NO PAD collation, or by someone else), so texts go in without trailing spaces: the cache
    /// and the server then agree on which texts are one row.
    pad: [bool; 3],
    /// `LOAD DATA LOCAL INFILE` is allowed by the server (cleared, with a warning, when it says no).
    bulk_load: bool,
    columns: String,
}

/// What a batch came to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub inserted: u64,
    /// Already in the database (a replay).
    pub duplicates: u64,
    /// Refused by the server; logged with the CDR.
    pub rejected: u64,
    /// Of `inserted`, those stored through LOAD DATA.
    pub loaded: u64,
}

impl Writer {
    pub fn new(cfg: DbConfig) -> Self {
        Writer {
            cfg,
            conn: None,
            dict: DictIds::default(),
            bounds: BTreeMap::new(),
            refused_future: 0,
            tables_ready: false,
            collation: schema::NOPAD_COLLATIONS[0],
            pad: [false; 3],
            bulk_load: true,
            columns: cdr_columns().join(","),
        }
    }

    fn opts(&self, db: bool) -> OptsBuilder {
        let mut o = OptsBuilder::default()
            .ip_or_hostname(self.cfg.host.clone())
            .tcp_port(self.cfg.port)
            .user(Some(self.cfg.user.clone()))
            .pass(Some(self.cfg.password.clone()))
            .prefer_socket(false);
        if let Some(s) = &self.cfg.socket {
            o = o.socket(Some(s.clone()));
        }
        if db {
            o = o.db_name(Some(self.cfg.db.clone()));
        }
        o
    }

    /// Whether the server takes this user and lets it use (or create) the database: a short connection of its
    /// own, so a start can tell a refusal from an absence without waiting for the tables to be made.
    pub async fn check_access(&self) -> Result<(), DbError> {
        let mut c = Conn::new(self.opts(false)).await?;
        let db = self.cfg.db.replace('`', "``");
        let r = async {
            c.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{db}`")).await?;
            c.query_drop(format!("USE `{db}`")).await
        }
        .await;
        let _ = c.disconnect().await;
        Ok(r?)
    }

    /// Connects, creating the database and the tables that do not depend on the data when they are missing,
    /// and registers this sensor in `sensors`.
    pub async fn connect(&mut self) -> Result<(), DbError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut c = Conn::new(self.opts(false)).await?;
        c.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}`", self.cfg.db.replace('`', "``"))).await?;
        c.query_drop(format!("USE `{}`", self.cfg.db.replace('`', "``"))).await?;
        // own_ids relies on it, whatever the server's default.
        c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        // Dictionary keys compare exactly where the server has a NO PAD binary collation (MariaDB 10.2+, MySQL 8).
        let names = schema::NOPAD_COLLATIONS.map(|n| format!("'{n}'")).join(",");
        let have: Vec<String> = c
            .query(format!(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ({names})"
            ))
            .await?;
        let nopad = schema::NOPAD_COLLATIONS.into_iter().find(|n| have.iter().any(|h| h == n));
        self.collation = nopad.unwrap_or("utf8mb4_bin");
        // Dictionaries and sensors never depend on a CDR's day.
        for s in schema::create_statements(&self.cfg.shape, None, self.collation) {
            if !PARTITIONED.iter().any(|t| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} ("))) {
                c.query_drop(s).await?;
            }
        }
        self.pad = dictionary_padding(&mut c, nopad).await?;
        if let Some(id) = self.cfg.id_sensor {
            c.exec_drop(
                "INSERT INTO sensors (id_sensor, name, host) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE name = VALUES(name), host = VALUES(host)",
                (id, self.cfg.sensor_name.clone(), self.cfg.sensor_host.clone()),
            )
            .await?;
        }
        info!(host = %self.cfg.host, db = %self.cfg.db, "database connected");
        self.conn = Some(c);
        Ok(())
    }

    /// Forgets the connection after an error, so the next attempt reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
        self.tables_ready = false;
    }

    async fn resolve(&mut self, batch: &[DbCdr]) -> Result<(), DbError> {
        let Some(c) = self.conn.as_mut() else {
            return Err(no_connection());
        };
        for cdr in batch {
            for (_, d) in &cdr.holes {
                if self.dict.contains_key(d) {
                    continue;
                }
                // The text as the column keeps it and its unique key compares it: texts that differ past the
                // column's length, or (PAD SPACE) in trailing spaces only, are one row, and one cache entry.
                let (i, limit, text) = match d {
                    Dict::SipResponse(s) => (0, 255, s),
                    Dict::Ua(s) => (1, 512, s),
                    Dict::Reason(_, s) => (2, 255, s),
                };
                let mut stored = truncate(text, limit);
                if self.pad[i] {
                    stored.truncate(stored.trim_end_matches(' ').len());
                }
                let key = match d {
                    Dict::SipResponse(_) => Dict::SipResponse(stored.clone()),
                    Dict::Ua(_) => Dict::Ua(stored.clone()),
                    Dict::Reason(t, _) => Dict::Reason(*t, stored.clone()),
                };
                if let Some(&id) = self.dict.get(&key) {
                    self.dict.insert(d.clone(), id);
                    continue;
                }
                // LAST_INSERT_ID(id) makes the existing row's id the statement's insert id too.
                let (q, params): (&str, Vec<Value>) = match d {
                    Dict::SipResponse(_) => (
                        "INSERT INTO cdr_sip_response (lastSIPresponse) VALUES (?) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)",
                        vec![Value::from(stored)],
                    ),
                    Dict::Ua(_) => (
                        "INSERT INTO cdr_ua (ua) VALUES (?) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)",
                        vec![Value::from(stored)],
                    ),
                    Dict::Reason(t, _) => (
                        "INSERT INTO cdr_reason (type, reason) VALUES (?, ?) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)",
                        vec![Value::from(*t), Value::from(stored)],
                    ),
                };
                c.exec_drop(q, params).await?;
                let id = c.last_insert_id().unwrap_or(0);
                self.dict.insert(key, id);
                self.dict.insert(d.clone(), id);
            }
        }
        Ok(())
    }

    /// Stores a batch in one transaction. `Refused` means some CDR in it is bad: the caller retries them
    /// one by one to find it.
    pub async fn write(&mut self, batch: &[DbCdr]) -> Result<Written, DbError> {
        self.connect().await?;
        let days: BTreeSet<_> = batch.iter().map(|c| c.day).collect();
        let refused = self.ensure_tables(&days).await?;
        if refused.is_empty() {
            return self.write_days(batch).await;
        }
        // Set aside before the server sees them: refused there, each would send its whole batch through the
        // one-by-one path.
        let (bad, good): (Vec<&DbCdr>, Vec<&DbCdr>) = batch.iter().partition(|c| refused.contains(&c.day));
        for c in &bad {
            self.refused_future += 1;
            if self.refused_future <= 10 || self.refused_future.is_multiple_of(1000) {
                warn!(fbasename = %c.fbasename, calldate = %c.calldate, refused_so_far = self.refused_future,
                    "CDR not stored: its calldate is more than {FUTURE_DAYS} day past today (a wrong timestamp)");
            }
        }
        let good: Vec<DbCdr> = good.into_iter().cloned().collect();
        let mut w = if good.is_empty() { Written::default() } else { self.write_days(&good).await? };
        w.rejected += bad.len() as u64;
        Ok(w)
    }

    /// `write` for CDRs whose days have their partitions.
    async fn write_days(&mut self, batch: &[DbCdr]) -> Result<Written, DbError> {
        self.resolve(batch).await?;
        if self.bulk_load {
            match self.write_loaded(batch).await {
                Ok(w) => return Ok(w),
                Err(LoadError::Db(e)) => return Err(e),
                Err(LoadError::NotAllowed(e)) => {
                    warn!(error = %e, "the server refuses LOAD DATA LOCAL INFILE (local_infile = OFF?): storing with INSERTs");
                    self.bulk_load = false;
                }
                // A value the server would refuse with an INSERT (LOAD DATA LOCAL only warns): the batch goes
                // again through INSERTs, which refuse it and isolate the bad CDR.
                Err(LoadError::NotClean(what)) => debug!(what, "bulk load rolled back; storing the batch with INSERTs"),
            }
        }
        self.write_inserted(batch).await
    }

    /// The fast path: one `LOAD DATA LOCAL INFILE` per table in one transaction (no per-value parameter
    /// handling on the server: about a third less of its CPU than prepared INSERTs, see docs/performance.md).
    async fn write_loaded(&mut self, batch: &[DbCdr]) -> Result<Written, LoadError> {
        let columns = self.columns.clone();
        let dict = &self.dict;
        let Some(c) = self.conn.as_mut() else { return Err(LoadError::Db(no_connection())) };
        // The snapshot is taken now, before the load: `own_ids` relies on it.
        c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await.map_err(DbError::from)?;
        let res = load_batch(c, batch, dict, &columns).await;
        let res = match res {
            Ok(w) => c.query_drop("COMMIT").await.map(|_| w).map_err(|e| LoadError::Db(e.into())),
            Err(e) => Err(e),
        };
        if res.is_err() {
            // Nothing of the batch stays; a broken connection is dropped by the caller anyway.
            let _ = c.query_drop("ROLLBACK").await;
        }
        res
    }

    /// The path for servers without LOAD DATA LOCAL, and for batches that did not load cleanly: prepared
    /// multi-row INSERTs.
    async fn write_inserted(&mut self, batch: &[DbCdr]) -> Result<Written, DbError> {
        let columns = self.columns.clone();
        let dict = &self.dict;
        let Some(c) = self.conn.as_mut() else { return Err(no_connection()) };
        let mut opts = TxOpts::default();
        opts.with_consistent_snapshot(true);
        let mut tx = c.start_transaction(opts).await?;
        let todo = not_stored(&mut tx, batch).await?;
        let mut out = Written { duplicates: (batch.len() - todo.len()) as u64, ..Default::default() };
        if todo.is_empty() {
            tx.commit().await?;
            return Ok(out);
        }
        let mut line = Vec::new();
        let rows: Vec<Vec<Value>> = todo
            .iter()
            .map(|cdr| {
                line.clear();
                cdr.cdr_line(|d| dict.get(d).copied(), &mut line);
                tsv::values(&line)
            })
            .collect();
        let n = rows.len();
        let first = insert_rows(&mut tx, &format!("cdr ({columns})"), rows, true).await?;
        let ids = own_ids(&mut tx, first.first().copied().unwrap_or(0), n)
            .await?
            .ok_or_else(|| DbError::Refused(mysql_async::Error::Other("cdr rows not found after the insert".into())))?;
        let pairs: Vec<(u64, &DbCdr)> = ids.iter().copied().zip(todo.iter().copied()).collect();
        let date = |cdr: &DbCdr| Value::from(cdr.calldate.as_str());
        let next = pairs
            .iter()
            .map(|(id, cdr)| vec![Value::UInt(*id), date(cdr), Value::from(cdr.fbasename.as_str())])
            .collect();
        insert_rows(&mut tx, "cdr_next (cdr_ID, calldate, fbasename)", next, false).await?;
        let mut rtp = Vec::new();
        let mut proxies = Vec::new();
        for (id, cdr) in &pairs {
            for l in lines(&cdr.rtp) {
                rtp.push([Value::UInt(*id), date(cdr)].into_iter().chain(tsv::values(l)).collect());
            }
            for l in lines(&cdr.proxies) {
                proxies.push([Value::UInt(*id), date(cdr)].into_iter().chain(tsv::values(l)).collect());
            }
        }
        insert_rows(&mut tx, &format!("cdr_rtp (cdr_ID, calldate, {})", RTP_COLUMNS.join(",")), rtp, false).await?;
        insert_rows(&mut tx, "cdr_proxy (cdr_ID, calldate, dst)", proxies, false).await?;
        let keys =
            pairs.iter().map(|(id, cdr)| vec![date(cdr), Value::Bytes(cdr.key.to_vec()), Value::UInt(*id)]).collect();
        insert_rows(&mut tx, "voxtap_cdr_stored (calldate, k, cdr_ID)", keys, false).await?;
        tx.commit().await?;
        out.inserted = pairs.len() as u64;
        Ok(out)
    }

    /// Writes a batch; when the server refuses it, each CDR alone, so one bad CDR is logged and the rest stored.
    pub async fn write_isolating(&mut self, batch: &[DbCdr]) -> Result<Written, DbError> {
        match self.write(batch).await {
            Err(DbError::Refused(e)) if batch.len() > 1 => {
                warn!(error = %e, cdrs = batch.len(), "batch refused; storing its CDRs one by one");
                let mut total = Written::default();
                for one in batch {
                    let w = Box::pin(self.write_isolating(std::slice::from_ref(one))).await?;
                    total.inserted += w.inserted;
                    total.duplicates += w.duplicates;
                    total.rejected += w.rejected;
                    total.loaded += w.loaded;
                }
                Ok(total)
            }
            Err(DbError::Refused(e)) => {
                warn!(error = %e, fbasename = %batch[0].fbasename, calldate = %batch[0].calldate, "CDR refused by the database");
                Ok(Written { rejected: 1, ..Default::default() })
            }
            other => other,
        }
    }
}

/// Why a bulk load did not store its batch.
enum LoadError {
    Db(DbError),
    /// The server does not take LOAD DATA LOCAL at all.
    NotAllowed(mysql_async::Error),
    /// Rows skipped or values changed (warnings): rolled back.
    NotClean(&'static str),
}

impl From<DbError> for LoadError {
    fn from(e: DbError) -> Self {
        LoadError::Db(e)
    }
}

/// The CDRs of a batch not stored yet (a replay after a crash or an outage finds some already there).
async fn not_stored<'a, Q: Queryable>(q: &mut Q, batch: &'a [DbCdr]) -> Result<Vec<&'a DbCdr>, DbError> {
    // Row-value IN on the whole primary key: one look-up per CDR, in the partitions of its day only.
    let mut sql = String::with_capacity(32 + batch.len() * 64);
    sql.push_str("SELECT k FROM voxtap_cdr_stored WHERE (calldate, k) IN (");
    for (i, cdr) in batch.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        // calldate is digits, dashes, colons, a space and a dot: nothing to escape.
        sql.push_str("('");
        sql.push_str(&cdr.calldate);
        sql.push_str("',0x");
        for b in cdr.key {
            sql.push(char::from(HEX[usize::from(b >> 4)]));
            sql.push(char::from(HEX[usize::from(b & 15)]));
        }
        sql.push(')');
    }
    sql.push(')');
    let stored: Vec<Vec<u8>> = q.query(sql).await?;
    let mut seen: HashSet<[u8; 16]> = stored.into_iter().filter_map(|k| k.try_into().ok()).collect();
    Ok(batch.iter().filter(|c| seen.insert(c.key)).collect())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn no_connection() -> DbError {
    DbError::Unavailable(mysql_async::Error::Other("no connection".into()))
}

/// Rows per statement, largest first: a batch is stored with at most one statement of each size, and the same
/// few prepared statements serve every batch (the server parses each once, not per row).
const STATEMENT_ROWS: &[usize] = &[128, 64, 32, 16, 8, 4, 2, 1];

/// Inserts rows with prepared multi-row statements. With `ids`, returns the first auto-increment id of each
/// statement (`own_ids` finds the others).
async fn insert_rows(
    q: &mut mysql_async::Transaction<'_>,
    table: &str,
    rows: Vec<Vec<Value>>,
    ids: bool,
) -> Result<Vec<u64>, DbError> {
    let mut out = Vec::new();
    let Some(width) = rows.first().map(Vec::len) else { return Ok(out) };
    let placeholders = format!("({})", vec!["?"; width].join(","));
    let mut rows = rows.into_iter();
    let mut left = rows.len();
    for &size in STATEMENT_ROWS {
        while left >= size {
            let sql = format!("INSERT INTO {table} VALUES {}", vec![placeholders.as_str(); size].join(","));
            let params: Vec<Value> = rows.by_ref().take(size).flatten().collect();
            q.exec_drop(sql, params).await?;
            if ids {
                let first = q.last_insert_id().unwrap_or(0);
                if first == 0 || q.affected_rows() != size as u64 {
                    return Err(DbError::Refused(mysql_async::Error::Other("insert stored fewer rows".into())));
                }
                out.push(first);
            }
            left -= size;
        }
    }
    Ok(out)
}

fn truncate(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}
