//! The CDR log: every CDR as one JSON line in `SPOOLDIR/cdrlog/YYYY-MM-DD.jsonl` (the day the call ended, in
//! UTC or local time per `utc`), so a box without a database still keeps its CDRs on disk. Appended as CDRs are
//! finished; fsynced at most 200 ms after a line is written, and when voxtap stops.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::call::cdr::Cdr;

const SYNC_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CdrLogStats {
    pub written: u64,
    pub errors: u64,
}

pub struct CdrLog {
    dir: PathBuf,
    utc: bool,
    day: Option<(i64, u32, u32)>,
    file: Option<File>,
    last_sync: Instant,
    dirty: bool,
    pub stats: CdrLogStats,
}

impl CdrLog {
    pub fn open(dir: &Path, utc: bool) -> io::Result<CdrLog> {
        crate::store::perms::create_dir_all(dir)?;
        Ok(CdrLog {
            dir: dir.to_path_buf(),
            utc,
            day: None,
            file: None,
            last_sync: Instant::now(),
            dirty: false,
            stats: CdrLogStats::default(),
        })
    }

    pub fn append(&mut self, cdr: &Cdr) {
        if let Err(e) = self.write(cdr) {
            self.stats.errors += 1;
            tracing::warn!(error = %e, dir = %self.dir.display(), callid = %cdr.callid, "cannot write to the CDR log");
            self.file = None;
            self.day = None;
        }
    }

    fn write(&mut self, cdr: &Cdr) -> io::Result<()> {
        let c = crate::time::civil(cdr.callend, self.utc);
        let day = (c.year, c.month, c.day);
        let f = match self.file.as_mut() {
            Some(f) if self.day == Some(day) => f,
            _ => {
                self.sync();
                let p = self.dir.join(format!("{:04}-{:02}-{:02}.jsonl", c.year, c.month, c.day));
                self.day = Some(day);
                self.file.insert(crate::store::perms::open(OpenOptions::new().create(true).append(true), &p)?)
            }
        };
        let mut line = Vec::with_capacity(cdr.json.len() + 1);
        line.extend_from_slice(cdr.json.as_bytes());
        line.push(b'\n');
        // One write per line: a reader (tail -f, a log shipper) never sees half a CDR.
        f.write_all(&line)?;
        self.dirty = true;
        self.stats.written += 1;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync();
        }
        Ok(())
    }

    pub fn sync(&mut self) {
        if self.dirty {
            if let Some(f) = &self.file {
                if let Err(e) = f.sync_data() {
                    self.stats.errors += 1;
                    tracing::warn!(error = %e, "cannot sync the CDR log");
                }
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    pub fn finish(mut self) -> CdrLogStats {
        self.sync();
        self.stats
    }
}
