//! Several voxtap instances on one host (VoIPmonitor's "Mix"): each with its own configuration, id_sensor,
//! manager port and spool, fed at the same time, sharing one database.

mod common;
#[path = "common/db.rs"]
mod db;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn two_instances_side_by_side() {
    let dir = fresh_dir("instances");
    let db = db::server();
    let name = db.fresh("voxtap_instances");
    let ports = free_ports::<4>();
    let mut runs = Vec::new();
    let mut caps = Vec::new();
    for (k, id) in [(0usize, 21u16), (1, 22)] {
        let base = dir.join(format!("base{k}.pcap"));
        voxgen(
            &base,
            &[
                "--calls",
                &(8 + 4 * k).to_string(),
                "--cps",
                "8",
                "--duration",
                "1",
                "--seed",
                &(70 + k).to_string(),
                "--start",
                &start_now(),
            ],
        );
        let hep = hep_wrapped(&base);
        let (hep_port, mgr) = (ports[2 * k], ports[2 * k + 1]);
        let own = dir.join(format!("i{k}.conf"));
        std::fs::write(
            &own,
            format!(
                "mysqlhost = {}\nmysqlport = {}\nmysqldb = {name}\nmysqlusername = root\nid_sensor = {id}\nhep = yes\n\
                 hep_bind_ip = 127.0.0.1\nhep_bind_port = {hep_port}\nmanagerport = {mgr}\nsavesip = yes\nspooldir = {}\n",
                db.host,
                db.port,
                dir.join(format!("spool{k}")).display()
            ),
        )
        .unwrap();
        runs.push((LiveVoxtap::start(&own, mgr), hep_port, mgr));
        caps.push((base, hep));
    }
    for ((_, hep), (_, hep_port, _)) in caps.iter().zip(&runs) {
        send_hep_tcp(hep, *hep_port);
    }
    // Each answers on its own manager port about its own calls.
    let t0 = Instant::now();
    for ((base, _), (_, _, mgr)) in caps.iter().zip(&runs) {
        let want = run_json(base, &[]).len().to_string();
        while ask_manager(("127.0.0.1", *mgr), b"totalcalls\r\n\r\n") != want {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "instance on {mgr}: {}",
                ask_manager(("127.0.0.1", *mgr), b"totalcalls\r\n\r\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let stat: serde_json::Value =
            serde_json::from_str(&ask_manager(("127.0.0.1", *mgr), b"sniffer_stat\r\n\r\n")).unwrap();
        assert_eq!(stat["calls_active"].as_u64().unwrap().to_string(), want);
    }
    let mut counts = Vec::new();
    for ((base, _), (run, _, _)) in caps.iter().zip(runs) {
        let (cdrs, _) = run.stop();
        let want = run_json(base, &[]);
        assert_eq!(cdrs.len(), want.len());
        counts.push(want.len());
        let _ = base;
    }
    // One database, each CDR under its instance's id_sensor; each spool holds only its own calls.
    let t0 = Instant::now();
    loop {
        let rows = db.try_query(&name, "SELECT id_sensor, COUNT(*) FROM cdr GROUP BY id_sensor ORDER BY id_sensor");
        let got: Vec<(String, String)> =
            rows.iter().skip(1).map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default())).collect();
        if got == [("21".to_string(), counts[0].to_string()), ("22".to_string(), counts[1].to_string())] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for k in 0..2 {
        let n = walk(&dir.join(format!("spool{k}")));
        assert!(n > 0, "spool{k} is empty");
    }
}

/// Files under a folder (SIP archives and call files).
fn walk(d: &Path) -> usize {
    std::fs::read_dir(d)
        .map(|r| r.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}
