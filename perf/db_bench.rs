//! CDRs per second into MySQL/MariaDB through voxtap's writer (rows of `cdr`, `cdr_next`, `cdr_rtp`, `cdr_proxy`,
//! one transaction per batch), from the JSON CDRs of a real run:
//!
//!   voxtap -r target/bench/g711-12k.pcap --json > target/bench/cdrs.jsonl
//!   cargo run --release --example db_bench -- target/bench/cdrs.jsonl [COPIES] [HOST] [PORT]
//!
//! Each copy of the file is stored again under other Call-IDs (COPIES × lines CDRs in all). The database
//! `voxtap_bench` is dropped first (and the CDR queue in target/bench/cdrqueue-voxtap_bench emptied); the timer runs from the first CDR handed over until the writer has committed
//! the last batch.

use std::time::Instant;

use voxtap::config::Config;
use voxtap::store::mysql::{DbConfig, DbSink};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VOXTAP_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).map(String::as_str).unwrap_or("target/bench/cdrs.jsonl");
    let copies: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let host = args.get(3).cloned().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3306);

    // VOXTAP_BENCH_KEEP=TAG keeps the database (and tags the Call-IDs so they are new): to measure a table
    // that already holds rows, or one whose indexes were changed by hand.
    let keep = std::env::var("VOXTAP_BENCH_KEEP").ok();
    let tag = keep.clone().unwrap_or_default();
    let text = std::fs::read_to_string(file)?;
    let base: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let mut cdrs = Vec::with_capacity(base.len() * copies);
    let mut streams = 0usize;
    for k in 0..copies {
        for c in &base {
            let mut c = c.clone();
            for f in ["callid", "fbasename"] {
                if let Some(s) = c[f].as_str() {
                    c[f] = serde_json::Value::from(format!("{s}-{tag}{k}"));
                }
            }
            streams += c["rtp"].as_array().map_or(0, Vec::len);
            cdrs.push(serde_json::to_string(&c)?);
        }
    }
    // VOXTAP_BENCH_DB=NAME: another database (and queue folder), to run several benches against one server.
    let dbname = std::env::var("VOXTAP_BENCH_DB").unwrap_or_else(|_| "voxtap_bench".into());
    let qdir = format!("target/bench/cdrqueue-{dbname}");
    let drop = if keep.is_some() { "SELECT 1".to_string() } else { format!("DROP DATABASE IF EXISTS {dbname}") };
    let status = std::process::Command::new("mariadb")
        .args(["--no-defaults", &format!("-h{host}"), &format!("-P{port}"), "-uroot", "-e", &drop])
        .status()?;
    anyhow::ensure!(status.success(), "cannot reach MariaDB at {host}:{port}");

    let cfg = Config {
        mysqlhost: Some(host),
        mysqlport: port,
        mysqldb: dbname.clone(),
        time_precision_in_ms: true,
        id_sensor: Some(1),
        // VOXTAP_BENCH_WRITERS=N: connections storing side by side (mysqlstore_max_threads_cdr).
        mysqlstore_max_threads_cdr: std::env::var("VOXTAP_BENCH_WRITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
        cdr_queue_dir: Some(qdir.clone().into()),
        ..Config::default()
    };
    let db = DbConfig::from_config(&cfg).expect("database configured");
    let _ = std::fs::remove_dir_all(&qdir);
    let n = cdrs.len();
    let cpu0 = cpu_seconds();
    let server0 = server_seconds();
    let machine0 = machine_ticks();
    let t0 = Instant::now();
    let slow = voxtap::runtime::slow::SlowSide::start()?;
    // A bounded run, as a capture file is: a refused user ends it at once.
    let mut sink = DbSink::start(db, true, &slow.handle())?;
    for c in &cdrs {
        sink.push(c);
    }
    let stats = sink.finish();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let server = server0.and_then(|s0| server_seconds().map(|s1| s1 - s0));
    let machine = machine_ticks().zip(machine0).map(|((b1, t1), (b0, t0))| (b1 - b0) as f64 / (t1 - t0).max(1) as f64);
    // A run only counts if every cdr row has its own cdr_next and key rows.
    let check = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-N", &format!("-h{}", cfg.mysqlhost.as_deref().unwrap_or_default())])
        .args([&format!("-P{}", cfg.mysqlport), "-uroot", &dbname, "-e"])
        .arg(
            "SELECT COUNT(*) FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID AND n.calldate = c.calldate \
             JOIN voxtap_cdr_stored k ON k.cdr_ID = c.ID",
        )
        .output()?;
    let linked = String::from_utf8_lossy(&check.stdout).trim().to_string();
    anyhow::ensure!(keep.is_some() || linked == n.to_string(), "only {linked} of {n} cdr rows are linked");
    println!(
        "cdrs={n} cdr_rtp_rows={streams} stored={} duplicate={} rejected={} batches={} elapsed={secs:.2}s \
         {:.0} CDRs/s ({:.0} cdr_rtp rows/s) voxtap_cpu={cpu:.2}s ({:.1} us per CDR)",
        stats.cdrs_stored,
        stats.cdrs_duplicate,
        stats.cdrs_rejected,
        stats.batches,
        n as f64 / secs,
        streams as f64 / secs,
        cpu * 1e6 / n as f64
    );
    // The server's CPU time and the machine's load over the same span (a local server only).
    if let (Some(server), Some(busy)) = (server, machine) {
        println!(
            "server_cpu={server:.2}s ({:.1} us per CDR) machine_busy={:.0}% (kernel and every process)",
            server * 1e6 / n as f64,
            busy * 100.0
        );
    }
    Ok(())
}

/// CPU time of the local mariadbd (or mysqld), when there is one.
fn server_seconds() -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if matches!(comm.trim(), "mariadbd" | "mysqld") {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            return Some(ticks / tick);
        }
    }
    None
}

/// Busy and total ticks of all CPUs, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// CPU time of this process (every thread): the writer's side of the cost, the server's not included.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
