//! Nothing lost, nothing twice: the database stopped in the middle of a run and started again; voxtap killed with
//! SIGKILL while its CDRs wait for an absent database, and while it is storing them. Every CDR ends up in `cdr`
//! exactly once. Runs its own MariaDB server (it stops and starts it).

mod common;
#[path = "common/db.rs"]
mod db;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn empty_pcap(p: &Path) {
    write_udp_pcap(p, &[]);
}

/// Runs to the end; returns the summary line (standard error).
fn run(conf: &Path, capture: &Path) -> String {
    let out = spawn_reading(conf, capture).wait_with_output().expect("wait voxtap");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "voxtap failed: {err}");
    err
}

/// Rows in `cdr`, and distinct calls among them (file base name + start).
fn counts(db: &db::Db, name: &str) -> (String, String) {
    let r = db.query(
        Some(name),
        "SELECT COUNT(*), COUNT(DISTINCT n.fbasename, c.calldate) FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID",
    );
    (r[1][0].clone().unwrap_or_default(), r[1][1].clone().unwrap_or_default())
}

fn summary_value(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary}"))
}

#[test]
fn every_cdr_arrives_exactly_once_through_outages_and_kills() {
    let tmp = fresh_dir("faults");
    let cap = tmp.join("calls.pcap");
    voxgen(&cap, &["--calls", "4000", "--cps", "1000", "--duration", "1", "--mix", "--seed", "21"]);
    let empty = tmp.join("empty.pcap");
    empty_pcap(&empty);
    let n = run_json(&cap, &[]).len().to_string();
    let mut srv = db::Private::new(24000 + (std::process::id() % 1000) as u16);
    let db = srv.db();

    // 1. The server stops just after voxtap starts and comes back three seconds later.
    let name = db.fresh("voxtap_f_outage");
    let conf = db.config(&tmp, &name, "");
    let child = spawn_reading(&conf, &cap);
    std::thread::sleep(Duration::from_millis(250));
    srv.stop();
    std::thread::sleep(Duration::from_secs(3));
    srv.start();
    let out = child.wait_with_output().expect("wait voxtap");
    let summary = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{summary}");
    eprintln!("outage run: db_retries={}", summary_value(&summary, "db_retries"));
    assert_eq!(counts(&db, &name), (n.clone(), n.clone()), "after the outage: {summary}");

    // 2. SIGKILL while every CDR waits in the queue for an absent server; the next start stores them.
    let name = db.fresh("voxtap_f_kill_queued");
    let conf = db.config(&tmp, &name, "");
    srv.stop();
    let mut child = spawn_reading(&conf, &cap);
    // The capture is read in well under this; then the writer only retries.
    std::thread::sleep(Duration::from_secs(4));
    child.kill().expect("SIGKILL voxtap");
    let _ = child.wait();
    srv.start();
    let summary = run(&conf, &empty);
    assert_eq!(summary_value(&summary, "db_replayed_at_start").to_string(), n, "{summary}");
    assert_eq!(summary_value(&summary, "db_stored").to_string(), n, "{summary}");
    assert_eq!(counts(&db, &name), (n.clone(), n.clone()));
    // A third start finds nothing left.
    let summary = run(&conf, &empty);
    assert_eq!(summary_value(&summary, "db_replayed_at_start"), 0, "{summary}");

    // 3. SIGKILL while the writer is storing; the same capture again stores the rest and nothing twice.
    let name = db.fresh("voxtap_f_kill_writing");
    let conf = db.config(&tmp, &name, "");
    let mut child = spawn_reading(&conf, &cap);
    let t0 = Instant::now();
    // Kill once some CDRs are stored but (most likely) not all.
    loop {
        let stored = db.query(None, &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}' AND TABLE_NAME = 'voxtap_cdr_stored'"));
        if stored[1][0].as_deref() == Some("1") {
            let c = db.query(Some(&name), "SELECT COUNT(*) FROM voxtap_cdr_stored");
            if c[1][0].as_deref().is_some_and(|x| x != "0") || t0.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL voxtap");
    let _ = child.wait();
    let before = counts(&db, &name).0;
    eprintln!("killed with {before} of {n} CDRs stored");
    let summary = run(&conf, &cap);
    assert_eq!(counts(&db, &name), (n.clone(), n.clone()), "after the restart: {summary}");
    srv.stop();
}
