//! The CDR collector: every finished call's CDR (from this process's owners, and on a central from its remotes)
//! goes to the sinks the configuration asks for — the MySQL writer's queue, the CDR log, the link to a central,
//! standard output — or is kept for the sorted output of a capture file.

use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::call::cdr::Cdr;
use crate::link::central::RemoteCdrs;
use crate::link::remote::{LinkSink, LinkStats};
use crate::report::LiveWriter;
use crate::store::cdrlog::{CdrLog, CdrLogStats};
use crate::store::mysql::{DbSink, DbStats};

pub(super) struct Sinks {
    pub live: std::sync::Arc<crate::stats::Live>,
    pub db: Option<DbSink>,
    pub log: Option<CdrLog>,
    pub link: Option<LinkSink>,
    /// How long the link keeps trying to deliver what is left when the input ends (`None`: until confirmed).
    pub link_wait: Option<Duration>,
    /// A live capture writes CDRs as they come; otherwise they are kept.
    pub out: Option<LiveWriter>,
}

/// What the CDR collector ends with.
pub(super) struct Collected {
    /// Kept for sorted output (a capture file); empty when they were written as they came.
    pub cdrs: Vec<Cdr>,
    pub count: u64,
    pub db: Option<DbStats>,
    pub cdr_log: Option<CdrLogStats>,
    pub link: Option<LinkStats>,
}

impl Sinks {
    fn take(&mut self, cdr: Cdr, last: bool, all: &mut Vec<Cdr>) {
        self.live.cdr_stored();
        if let Some(db) = &mut self.db {
            db.push(&cdr.json);
        }
        if let Some(log) = &mut self.log {
            log.append(&cdr);
        }
        if let Some(link) = &mut self.link {
            link.push(cdr.json.as_bytes());
        }
        match &mut self.out {
            Some(w) => w.write(&cdr, last),
            None => all.push(cdr),
        }
    }
}

/// Runs until the owners' channel closes. A remote's batch is acknowledged (`done`) only once it is on disk
/// in the database queue and the CDR log.
pub(super) fn run(cdrs: Receiver<Cdr>, remote: Option<Receiver<RemoteCdrs>>, mut sinks: Sinks) -> Collected {
    let remote = remote.unwrap_or_else(crossbeam_channel::never);
    let mut all = Vec::new();
    let mut count = 0u64;
    loop {
        select! {
            recv(cdrs) -> c => match c {
                Ok(cdr) => {
                    count += 1;
                    sinks.take(cdr, cdrs.is_empty(), &mut all);
                }
                Err(_) => break,
            },
            recv(remote) -> r => if let Ok(RemoteCdrs { cdrs: batch, done }) = r {
                let n = batch.len();
                for (i, cdr) in batch.into_iter().enumerate() {
                    count += 1;
                    sinks.take(cdr, i + 1 == n, &mut all);
                }
                if let Some(db) = &mut sinks.db {
                    db.sync();
                }
                if let Some(log) = &mut sinks.log {
                    log.sync();
                }
                let _ = done.send(());
            },
        }
    }
    Collected {
        cdrs: all,
        count,
        db: sinks.db.map(DbSink::finish),
        cdr_log: sinks.log.map(CdrLog::finish),
        link: sinks.link.map(|l| l.finish(sinks.link_wait)),
    }
}
