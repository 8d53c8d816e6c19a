//! The tables a batch needs: created when missing, a partition for each day (none for a day too far ahead), and
//! dictionary keys that tell trailing spaces apart.

use super::*;

/// How many days past today (by the host clock, in the time zone of `calldate`) a CDR's day may be and still get
/// a partition: a sensor or a HEP sender whose clock runs a little ahead. A later day is a broken or forged
/// timestamp (a capture file or HEP carries any, up to 2106): its partition would take every day before it, so no
/// later day would get one of its own again.
pub(super) const FUTURE_DAYS: i64 = 1;

/// The day `n` days after `d`.
pub(super) fn add_days(d: Day, n: i64) -> Day {
    let c = crate::time::civil_utc((crate::time::days_from_civil(d.0 as i64, d.1, d.2) + n) * 86_400 * 1_000_000_000);
    (c.year as i32, c.month, c.day)
}

/// Today by the host clock, in the time zone `calldate` is written in.
pub(super) fn today(utc: bool) -> Day {
    let c = crate::time::civil(crate::time::wall_clock(), utc);
    (c.year as i32, c.month, c.day)
}

impl Writer {
    /// Creates the partitioned tables when missing and the partitions the batch's days need. Returns the days
    /// whose CDRs cannot be stored: more than `FUTURE_DAYS` past today while the tables are partitioned.
    pub(super) async fn ensure_tables(&mut self, days: &BTreeSet<Day>) -> Result<BTreeSet<Day>, DbError> {
        let Some(c) = self.conn.as_mut() else {
            return Err(DbError::Unavailable(mysql_async::Error::Other("no connection".into())));
        };
        let shape = self.cfg.shape;
        let today = today(self.cfg.utc);
        // The last day a CDR may have and be stored, while the tables are partitioned.
        let last_day = add_days(today, FUTURE_DAYS);
        // Partitions that end later were made for a wrong timestamp (by an earlier build): a day they cover
        // gets its own partition split off them.
        let far = add_days(last_day, 2);
        let nameable = |d: &Day| *d <= last_day && schema::partition_name(d.0, d.1, d.2).is_some();
        if !self.tables_ready {
            // Builds before 2026-11-27 kept the keys in `voxtap_cdr_key` (unpartitioned, never emptied).
            let old: Option<u8> = c
                .query_first(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                     AND TABLE_NAME = 'voxtap_cdr_key'",
                )
                .await?;
            if old.is_some() {
                info!("voxtap_cdr_key of an earlier build is no longer used (voxtap_cdr_stored replaces it): it can be dropped");
            }
            // The first partition: the batch's first day that may have one, else today's.
            let first = days.iter().copied().find(|d| nameable(d)).unwrap_or(today);
            for s in schema::create_statements(&shape, Some(first), self.collation) {
                if PARTITIONED.iter().any(|t| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} ("))) {
                    c.query_drop(s).await?;
                }
            }
            self.bounds.clear();
            if shape.partition {
                let rows: Vec<(String, String)> = c
                    .query(
                        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cdr' AND PARTITION_DESCRIPTION IS NOT NULL",
                    )
                    .await?;
                for (name, r) in rows {
                    let d = r.trim_matches('\'');
                    let p: Vec<&str> = d.get(..10).unwrap_or("").split('-').collect();
                    if let [y, m, dd] = p[..] {
                        if let (Ok(y), Ok(m), Ok(dd)) = (y.parse(), m.parse(), dd.parse()) {
                            self.bounds.insert((y, m, dd), name);
                        }
                    }
                }
                for (b, name) in self.bounds.range(far..) {
                    warn!(partition = %name, ends = ?b, "a partition of cdr ends far in the future (made by an earlier \
                        build from a wrong timestamp): each new day is split off it as it comes");
                }
            }
            self.tables_ready = true;
        }
        let mut refused = BTreeSet::new();
        if !shape.partition || self.bounds.is_empty() {
            return Ok(refused);
        }
        let mut raced = false;
        for &day in days {
            if day > last_day {
                refused.insert(day);
                continue;
            }
            let upper = crate::time::next_day(day.0, day.1, day.2);
            // The partition that holds the day: the first that ends after it.
            let holder = self.bounds.range(upper..).next().map(|(b, n)| (*b, n.clone()));
            let sql = match (&holder, schema::partition_name(day.0, day.1, day.2)) {
                // An earlier day (a replay of an old capture) is stored in the partition that covers it.
                (Some((b, _)), _) if *b < far => continue,
                // A year without a name of its own: stored where it falls, if anywhere.
                (Some(_), None) => continue,
                (None, None) => {
                    refused.insert(day);
                    continue;
                }
                // The name is taken by the far partition itself (its day a century later): the day stays in it.
                (Some((_, n)), Some(name)) if *n == name => continue,
                (None, Some(name)) => format!(
                    "ADD PARTITION (PARTITION {name} VALUES LESS THAN ('{:04}-{:02}-{:02}'))",
                    upper.0, upper.1, upper.2
                ),
                (Some((b, far_name)), Some(name)) => {
                    info!(partition = %name, from = %far_name, "splitting a day off a partition that ends far in the future");
                    format!(
                        "REORGANIZE PARTITION {far_name} INTO (PARTITION {name} VALUES LESS THAN \
                         ('{:04}-{:02}-{:02}'), PARTITION {far_name} VALUES LESS THAN ('{:04}-{:02}-{:02}'))",
                        upper.0, upper.1, upper.2, b.0, b.1, b.2
                    )
                }
            };
            for t in PARTITIONED {
                match c.query_drop(format!("ALTER TABLE {t} {sql}")).await {
                    Ok(()) => {}
                    // Another writer added or split it first, or the table is not partitioned: the partitions
                    // are read again before the next batch.
                    Err(mysql_async::Error::Server(e)) if matches!(e.code, 1517 | 1493 | 1505 | 1507 | 1508) => {
                        raced = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(name) = schema::partition_name(day.0, day.1, day.2) {
                self.bounds.insert(upper, name);
            }
        }
        if raced {
            self.tables_ready = false;
        }
        Ok(refused)
    }
}

/// Whether each dictionary's key compares with PAD SPACE (`DICT_COLUMNS` order). A key in `utf8mb4_bin` (what
/// builds before 2026-12-07 made) is moved to `nopad` first: the rows stay unique (NO PAD tells more texts apart,
/// never fewer), and the tables are small. Another collation (a table someone else made) is left as it is.
pub(super) async fn dictionary_padding(c: &mut Conn, nopad: Option<&str>) -> Result<[bool; 3], DbError> {
    let mut pad = [false; 3];
    for (i, (table, column, ty)) in schema::DICT_COLUMNS.iter().enumerate() {
        let collation: Option<Option<String>> = c
            .query_first(format!(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = '{table}' AND COLUMN_NAME = '{column}'"
            ))
            .await?;
        let collation = collation.flatten();
        if schema::is_nopad(collation.as_deref()) {
            continue;
        }
        if let (Some("utf8mb4_bin"), Some(to)) = (collation.as_deref(), nopad) {
            let sql =
                format!("ALTER TABLE {table} MODIFY {column} {ty} CHARACTER SET utf8mb4 COLLATE {to} DEFAULT NULL");
            match c.query_drop(&sql).await {
                Ok(()) => {
                    info!(table, column, collation = to, "dictionary key now tells texts apart by trailing spaces too");
                    continue;
                }
                Err(mysql_async::Error::Server(e)) => {
                    warn!(table, column, error = %e, "cannot change the dictionary key's collation: texts are stored without trailing spaces");
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            info!(table, column, collation = ?collation, "dictionary key ignores trailing spaces: texts are stored without them");
        }
        pad[i] = true;
    }
    Ok(pad)
}
