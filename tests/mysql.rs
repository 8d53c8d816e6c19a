//! CDRs in MariaDB: for every corpus capture (and generated ones), the `cdr`, `cdr_next`, `cdr_rtp` and
//! `cdr_proxy` rows equal the `--json` CDRs field for field; a second run stores nothing twice.

mod common;
#[path = "common/db.rs"]
mod db;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use common::*;
use serde_json::Value;

/// JSON fields with no `cdr` column of the same name, and where they are checked instead.
const ELSEWHERE: &[&str] = &[
    "callid",          // cdr_next.fbasename (the file base name derived from it)
    "fbasename",       // cdr_next
    "transport",       // cdr.flags
    "proxies",         // cdr_proxy
    "rtp",             // cdr_rtp
    "lastSIPresponse", // cdr_sip_response via lastSIPresponse_id
    "a_ua",            // cdr_ua via a_ua_id
    "b_ua",
    "reason_sip_text", // cdr_reason via reason_*_text_id
    "reason_q850_text",
    "a_seq_errors", // no column in VoIPmonitor's schema
    "b_seq_errors",
];

fn range(ty: &str) -> (f64, f64) {
    let unsigned = ty.contains("unsigned");
    let bits = match ty.split(['(', ' ']).next().unwrap_or("") {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" => 32,
        _ => 63,
    };
    if unsigned {
        (0.0, ((1u64 << bits) - 1) as f64)
    } else {
        (-((1u64 << (bits - 1)) as f64), ((1u64 << (bits - 1)) - 1) as f64)
    }
}

/// `2023-11-14T22:13:20.250600Z` → `2023-11-14 22:13:20.250` (datetime(3) keeps milliseconds, cut).
fn dt(s: &str) -> String {
    format!("{} {}", &s[..10], &s[11..23])
}

fn num(s: &Option<String>) -> Option<f64> {
    s.as_deref().and_then(|x| x.parse().ok())
}

/// Compares one CDR's rows with its JSON; returns the disagreements.
fn compare(db: &db::Db, name: &str, cdr: &Value, types: &HashMap<String, String>) -> Vec<String> {
    let mut bad = Vec::new();
    let o = cdr.as_object().expect("object");
    let fb = o["fbasename"].as_str().expect("fbasename");
    let calldate = dt(o["calldate"].as_str().expect("calldate"));
    let sel: Vec<String> = types
        .iter()
        .map(
            |(c, t)| {
                if t.starts_with("varbinary") {
                    format!("INET6_NTOA(c.`{c}`) AS `{c}`")
                } else {
                    format!("c.`{c}`")
                }
            },
        )
        .collect();
    let rows = db.query(
        Some(name),
        &format!(
            "SELECT {}, r.lastSIPresponse AS x_resp, ua.ua AS x_a_ua, ub.ua AS x_b_ua, rs.reason AS x_rs, rq.reason AS x_rq \
             FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID AND n.calldate = c.calldate \
             LEFT JOIN cdr_sip_response r ON r.id = c.lastSIPresponse_id LEFT JOIN cdr_ua ua ON ua.id = c.a_ua_id \
             LEFT JOIN cdr_ua ub ON ub.id = c.b_ua_id LEFT JOIN cdr_reason rs ON rs.id = c.reason_sip_text_id AND rs.type = 1 \
             LEFT JOIN cdr_reason rq ON rq.id = c.reason_q850_text_id AND rq.type = 2 \
             WHERE n.fbasename = '{}' AND c.calldate = '{calldate}'",
            sel.join(","),
            fb.replace('\\', "\\\\").replace('\'', "''")
        ),
    );
    if rows.len() != 2 {
        return vec![format!("{name} {fb}: {} cdr rows", rows.len().saturating_sub(1))];
    }
    let row: HashMap<&str, &Option<String>> =
        rows[0].iter().map(|h| h.as_deref().unwrap_or("")).zip(rows[1].iter()).collect();
    let check = |bad: &mut Vec<String>, what: &str, ok: bool, got: &Option<String>, want: &Value| {
        if !ok {
            bad.push(format!("{name} {fb} {what}: db {got:?}, json {want}"));
        }
    };
    for (k, v) in o {
        if ELSEWHERE.contains(&k.as_str()) {
            continue;
        }
        let Some(ty) = types.get(k) else {
            bad.push(format!("{name}: JSON field {k} has no cdr column"));
            continue;
        };
        let got = row[k.as_str()];
        let ok = if v.is_null() {
            got.is_none()
        } else if ty.starts_with("datetime") {
            got.as_deref() == Some(dt(v.as_str().unwrap_or("")).as_str())
        } else if ty.starts_with("decimal") {
            num(got).is_some_and(|g| (g - v.as_f64().unwrap_or(f64::NAN).max(0.0)).abs() <= 0.0005 + 1e-9)
        } else if ty.contains("int") {
            let (lo, hi) = range(ty);
            num(got) == v.as_f64().map(|x| x.round().clamp(lo, hi))
        } else {
            got.as_deref() == v.as_str()
        };
        check(&mut bad, k, ok, got, v);
    }
    for (col, src) in [("caller_reverse", "caller"), ("callername_reverse", "callername"), ("called_reverse", "called")]
    {
        let want = o[src].as_str().map(|s| s.chars().rev().collect::<String>());
        check(&mut bad, col, row[col].as_deref() == want.as_deref(), row[col], &o[src]);
    }
    for (col, src) in [
        ("x_resp", "lastSIPresponse"),
        ("x_a_ua", "a_ua"),
        ("x_b_ua", "b_ua"),
        ("x_rs", "reason_sip_text"),
        ("x_rq", "reason_q850_text"),
    ] {
        let want = o[src].as_str().filter(|s| !s.is_empty());
        check(&mut bad, src, row[col].as_deref() == want, row[col], &o[src]);
    }
    let flags = num(row["flags"]).unwrap_or(0.0) as u64;
    let want = match o["transport"].as_str() {
        Some("udp") => 1u64 << 32,
        Some("tcp") | Some("ws") => 1 << 31,
        Some("tls") | Some("wss") => 1 << 33,
        _ => 0,
    };
    check(&mut bad, "flags", flags == want, row["flags"], &o["transport"]);
    let id = row["ID"].clone().unwrap_or_default();

    // One cdr_rtp row per stream, in order.
    let rtp = db.query(
        Some(name),
        &format!(
            "SELECT `index`, INET6_NTOA(saddr), sport, INET6_NTOA(daddr), dport, ssrc, received, loss, firsttime, payload, \
             maxjitter_mult10, flags, duration FROM cdr_rtp WHERE cdr_ID = {id} ORDER BY `index`"
        ),
    );
    let streams = o["rtp"].as_array().cloned().unwrap_or_default();
    if rtp.len().saturating_sub(1) != streams.len() {
        bad.push(format!("{name} {fb}: {} cdr_rtp rows for {} streams", rtp.len().saturating_sub(1), streams.len()));
    } else {
        for (i, (r, s)) in rtp.iter().skip(1).zip(&streams).enumerate() {
            let f = |j: usize| num(&r[j]);
            let ok = f(0) == Some(i as f64 + 1.0)
                && r[1].as_deref() == s["saddr"].as_str()
                && f(2) == s["sport"].as_f64()
                && r[3].as_deref() == s["daddr"].as_str()
                && f(4) == s["dport"].as_f64()
                && f(5) == s["ssrc"].as_f64()
                && f(6) == s["received"].as_f64()
                && f(7) == s["lost"].as_f64().map(|x| x.max(0.0))
                && f(8).zip(s["first_time"].as_f64()).is_some_and(|(a, b)| (a - b.max(0.0)).abs() <= 0.0005 + 1e-9)
                && f(9) == s["payload"].as_f64()
                && f(10) == s["maxjitter"].as_f64().map(|x| (x * 10.0).round().min(65535.0))
                && f(12)
                    .zip(s["first_time"].as_f64().zip(s["last_time"].as_f64()))
                    .is_some_and(|(d, (a, b))| (d - (b - a)).abs() <= 0.0011);
            if !ok {
                bad.push(format!("{name} {fb} rtp[{i}]: db {r:?}, json {s}"));
            }
        }
    }
    let proxies: BTreeSet<String> = db
        .query(Some(name), &format!("SELECT INET6_NTOA(dst) FROM cdr_proxy WHERE cdr_ID = {id}"))
        .into_iter()
        .skip(1)
        .filter_map(|r| r[0].clone())
        .collect();
    let want: BTreeSet<String> = o["proxies"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if proxies != want {
        bad.push(format!("{name} {fb}: cdr_proxy {proxies:?}, json {want:?}"));
    }
    bad
}

/// Runs voxtap with the database on; returns the JSON CDRs and the summary line.
fn run_with_db(db: &db::Db, dir: &Path, name: &str, capture: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let conf = db.config(dir, name, "ipv6 = yes\ntime_precision_in_ms = yes\nutc = yes\nid_sensor = 9\n");
    let out = voxtap()
        .arg("--config-file")
        .arg(&conf)
        .arg("-r")
        .arg(capture)
        .arg("--json")
        .args(extra)
        .output()
        .expect("run voxtap");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "voxtap failed on {}: {stderr}", capture.display());
    let cdrs =
        String::from_utf8(out.stdout).expect("utf8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    (cdrs, stderr)
}

fn check_capture(db: &db::Db, dir: &Path, name: &str, capture: &Path, extra: &[&str]) -> Vec<String> {
    check_capture_summary(db, dir, name, capture, extra).0
}

/// `check_capture`, also returning voxtap's summary line.
fn check_capture_summary(db: &db::Db, dir: &Path, name: &str, capture: &Path, extra: &[&str]) -> (Vec<String>, String) {
    let dbname = db.fresh(name);
    let (cdrs, summary) = run_with_db(db, dir, &dbname, capture, extra);
    let mut bad = Vec::new();
    if !summary.contains(&format!("db_stored={} ", cdrs.len())) {
        bad.push(format!("{name}: summary does not report {} stored CDRs: {summary}", cdrs.len()));
    }
    let count = db.query(Some(&dbname), "SELECT COUNT(*) FROM cdr");
    if count[1][0].as_deref() != Some(cdrs.len().to_string().as_str()) {
        bad.push(format!("{name}: {:?} cdr rows for {} CDRs", count[1][0], cdrs.len()));
    }
    let types: HashMap<String, String> = db
        .query(
            Some(&dbname),
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cdr'",
        )
        .into_iter()
        .skip(1)
        .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
        .collect();
    for c in &cdrs {
        bad.extend(compare(db, &dbname, c, &types));
    }
    (bad, summary)
}

#[test]
fn corpus_rows_equal_json_cdrs() {
    let Some(corpus) = corpus_dir() else { return };
    let db = db::server();
    let tmp = fresh_dir("mysql-corpus");
    let mut bad = Vec::new();
    let mut n = 0;
    for (i, (name, capture, _)) in oracles_with_calls(&corpus).into_iter().enumerate() {
        let b = check_capture(&db, &tmp, &format!("voxtap_t_corpus{i}"), &capture, &["--sipports", CORPUS_SIPPORTS]);
        bad.extend(b.into_iter().map(|x| format!("[{name}] {x}")));
        n += 1;
    }
    assert!(n >= 20, "only {n} captures");
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn generated_rows_equal_json_and_replay_stores_nothing_twice() {
    let db = db::server();
    let tmp = fresh_dir("mysql-gen");
    let cap = tmp.join("g.pcap");
    let args =
        ["--calls", "300", "--cps", "100", "--duration", "4", "--loss", "0.02", "--dup", "0.01", "--mix", "--rtcp"];
    voxgen(&cap, &[&args[..], &["--dtmf", "--seed", "11"]].concat());
    let (mut bad, summary) = check_capture_summary(&db, &tmp, "voxtap_t_gen", &cap, &[]);
    // The machine's server allows LOAD DATA LOCAL: every CDR went in that way.
    assert!(summary.contains("db_bulk_loaded=300"), "{summary}");
    let cap6 = tmp.join("g6.pcap");
    voxgen(&cap6, &[&args[..], &["--ipv6", "--sip-transport", "tcp", "--seed", "12"]].concat());
    bad.extend(check_capture(&db, &tmp, "voxtap_t_gen6", &cap6, &[]));
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
    // The same capture again: every CDR is found already stored.
    let (cdrs, summary) = run_with_db(&db, &tmp, "voxtap_t_gen", &cap, &[]);
    assert!(summary.contains(&format!("db_stored=0 db_duplicate={} ", cdrs.len())), "{summary}");
    let count = db.query(Some("voxtap_t_gen"), "SELECT COUNT(*), COUNT(DISTINCT ID) FROM cdr");
    assert_eq!(count[1][0].as_deref(), Some(cdrs.len().to_string().as_str()));
    assert_eq!(count[1][1].as_deref(), Some(cdrs.len().to_string().as_str()));
    let sensors = db.query(Some("voxtap_t_gen"), "SELECT id_sensor FROM sensors");
    assert_eq!(sensors[1][0].as_deref(), Some("9"));
    let ids = db.query(Some("voxtap_t_gen"), "SELECT COUNT(*) FROM cdr WHERE id_sensor = 9");
    assert_eq!(ids[1][0].as_deref(), Some(cdrs.len().to_string().as_str()));
}

/// A database an earlier build made (keys in `voxtap_cdr_key`, unpartitioned, keyed by a 32-byte hash) is taken
/// over: that table is left alone and every CDR stored with a key in `voxtap_cdr_stored`, partitioned by day.
#[test]
fn an_old_key_table_is_left_alone() {
    let db = db::server();
    let tmp = fresh_dir("mysql-oldkeys");
    let cap = tmp.join("o.pcap");
    voxgen(&cap, &["--calls", "20", "--cps", "20", "--duration", "2", "--seed", "3"]);
    let name = db.fresh("voxtap_t_oldkeys");
    db.query(None, &format!("CREATE DATABASE {name}"));
    db.query(
        Some(&name),
        "CREATE TABLE voxtap_cdr_key (k binary(32) NOT NULL, cdr_ID bigint unsigned NOT NULL, PRIMARY KEY (k))",
    );
    let (cdrs, summary) = run_with_db(&db, &tmp, &name, &cap, &[]);
    assert_eq!(cdrs.len(), 20);
    assert!(summary.contains("db_stored=20 "), "{summary}");
    let keys = db.query(
        Some(&name),
        "SELECT COUNT(*) FROM voxtap_cdr_stored k JOIN cdr c ON c.ID = k.cdr_ID AND c.calldate = k.calldate",
    );
    assert_eq!(keys[1][0].as_deref(), Some("20"));
    let parts = db.query(
        Some(&name),
        "SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'voxtap_cdr_stored' AND PARTITION_NAME IS NOT NULL",
    );
    assert_eq!(parts[1][0].as_deref(), Some("1"));
    assert_eq!(db.query(Some(&name), "SELECT COUNT(*) FROM voxtap_cdr_key")[1][0].as_deref(), Some("0"));
}

/// VoIPmonitor's default shape (`ipv6 = no`, `time_precision_in_ms = no`) and daily partitions: a capture whose
/// calls start on both sides of midnight gets a partition per day in every partitioned table; times are whole
/// seconds, durations cut to whole seconds, addresses `int unsigned`.
#[test]
fn default_shape_and_a_partition_per_day() {
    let db = db::server();
    let tmp = fresh_dir("mysql-parts");
    let cap = tmp.join("midnight.pcap");
    voxgen(&cap, &["--calls", "40", "--cps", "2", "--duration", "2", "--mix", "--start", "1700006390", "--seed", "5"]);
    let name = db.fresh("voxtap_t_parts");
    let conf = db.config(&tmp, &name, "utc = yes\n");
    let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().expect("run voxtap");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cdrs: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for t in ["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "voxtap_cdr_stored"] {
        let parts = db.query(
            None,
            &format!(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '{name}' AND TABLE_NAME = '{t}' \
                 ORDER BY PARTITION_ORDINAL_POSITION"
            ),
        );
        let names: Vec<String> = parts.iter().skip(1).filter_map(|r| r[0].clone()).collect();
        assert_eq!(names, ["p231114", "p231115"], "{t}");
    }
    let per_day = db.query(Some(&name), "SELECT COUNT(*) FROM cdr PARTITION (p231115)");
    let want = cdrs.iter().filter(|c| c["calldate"].as_str().unwrap().starts_with("2023-11-15")).count();
    assert!(want > 0);
    assert_eq!(per_day[1][0].as_deref(), Some(want.to_string().as_str()));
    for c in &cdrs {
        let fb = c["fbasename"].as_str().unwrap();
        let r = db.query(
            Some(&name),
            &format!(
                "SELECT c.calldate, c.duration, INET_NTOA(c.sipcallerip), COLUMN_TYPE FROM cdr c JOIN cdr_next n \
                 ON n.cdr_ID = c.ID, information_schema.COLUMNS WHERE n.fbasename = '{fb}' AND TABLE_SCHEMA = '{name}' \
                 AND TABLE_NAME = 'cdr' AND COLUMN_NAME = 'duration'"
            ),
        );
        let calldate = c["calldate"].as_str().unwrap();
        assert_eq!(r[1][0].as_deref(), Some(format!("{} {}", &calldate[..10], &calldate[11..19]).as_str()));
        assert_eq!(r[1][1].as_deref(), Some((c["duration"].as_f64().unwrap().trunc() as u64).to_string().as_str()));
        assert_eq!(r[1][2].as_deref(), c["sipcallerip"].as_str());
        assert_eq!(r[1][3].as_deref(), Some("mediumint(8) unsigned"));
    }
}

/// `innodb_autoinc_lock_mode = 2` (MySQL 8's default): one statement's ids need not be consecutive; the writer
/// reads its rows' ids back, and the rows still equal the JSON CDRs.
#[test]
fn interleaved_autoinc_mode_still_links_every_row() {
    let srv = db::Private::with_args(25000 + (std::process::id() % 1000) as u16, &["--innodb-autoinc-lock-mode=2"]);
    let db = srv.db();
    let mode = db.query(None, "SELECT @@innodb_autoinc_lock_mode");
    assert_eq!(mode[1][0].as_deref(), Some("2"));
    let tmp = fresh_dir("mysql-autoinc");
    let cap = tmp.join("g.pcap");
    voxgen(&cap, &["--calls", "60", "--cps", "30", "--duration", "2", "--mix", "--rtcp", "--seed", "13"]);
    let bad = check_capture(&db, &tmp, "voxtap_t_autoinc", &cap, &[]);
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}

/// A server that refuses LOAD DATA LOCAL INFILE (`local_infile = OFF`): the writer says so once and stores with
/// prepared INSERTs; the rows still equal the JSON CDRs.
#[test]
fn without_local_infile_inserts_store_the_same_rows() {
    let srv = db::Private::with_args(26000 + (std::process::id() % 1000) as u16, &["--local-infile=0"]);
    let db = srv.db();
    let tmp = fresh_dir("mysql-noinfile");
    let cap = tmp.join("g.pcap");
    voxgen(&cap, &["--calls", "60", "--cps", "30", "--duration", "2", "--mix", "--rtcp", "--seed", "14"]);
    let (bad, summary) = check_capture_summary(&db, &tmp, "voxtap_t_noinfile", &cap, &[]);
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
    assert!(summary.contains("db_stored=60 ") && summary.contains("db_bulk_loaded=0"), "{summary}");
    assert!(summary.contains("refuses LOAD DATA LOCAL INFILE"), "{summary}");
}

/// A CDR the server refuses (here a CHECK constraint on `cdr_next.fbasename`, added by hand) is logged and counted and the
/// others are stored: LOAD DATA LOCAL only warns about such a row, so its batch is rolled back and stored again
/// with INSERTs, which refuse that CDR alone.
#[test]
fn a_refused_cdr_is_logged_and_the_rest_stored() {
    let db = db::server();
    let tmp = fresh_dir("mysql-refused");
    let first = tmp.join("a.pcap");
    voxgen(&first, &["--calls", "30", "--cps", "20", "--duration", "1", "--seed", "31"]);
    let name = db.fresh("voxtap_t_refused");
    let (a, summary) = run_with_db(&db, &tmp, &name, &first, &[]);
    assert!(summary.contains(&format!("db_stored={} ", a.len())), "{summary}");
    let second = tmp.join("b.pcap");
    voxgen(&second, &["--calls", "30", "--cps", "20", "--duration", "1", "--seed", "32"]);
    let b = run_json(&second, &[]);
    let victim = b[3]["fbasename"].as_str().unwrap().to_string();
    let refused = 1;
    db.query(Some(&name), &format!("ALTER TABLE cdr_next ADD CONSTRAINT refuse_one CHECK (fbasename <> '{victim}')"));
    let (b2, summary) = run_with_db(&db, &tmp, &name, &second, &[]);
    assert_eq!(b2.len(), b.len());
    let stored = b.len() - refused;
    assert!(
        summary.contains(&format!("db_stored={stored} db_duplicate=0 db_rejected={refused} ")),
        "{refused} of {} should be refused: {summary}",
        b.len()
    );
    assert!(summary.contains("CDR refused by the database"), "{summary}");
    let count = db.query(Some(&name), "SELECT COUNT(*) FROM cdr");
    assert_eq!(count[1][0].as_deref(), Some((a.len() + stored).to_string().as_str()));
    let linked = db.query(Some(&name), "SELECT COUNT(*) FROM cdr JOIN cdr_next ON cdr_next.cdr_ID = cdr.ID");
    assert_eq!(linked[1][0].as_deref(), Some((a.len() + stored).to_string().as_str()));
}

/// Several writer connections (`mysqlstore_max_threads_cdr`) store batches side by side, and the server may hand
/// their rows interleaved ids: every `cdr` row must still get its own `cdr_next`, `cdr_rtp` and key rows. Checked
/// for 4,000 CDRs (eight batches, four connections) against the JSON CDRs in one query.
#[test]
fn concurrent_writers_link_every_row() {
    let db = db::server();
    let tmp = fresh_dir("mysql-concurrent");
    let cap = tmp.join("g.pcap");
    voxgen(&cap, &["--calls", "4000", "--cps", "2000", "--duration", "1", "--mix", "--seed", "41"]);
    let name = db.fresh("voxtap_t_concurrent");
    let conf = db.config(&tmp, &name, "mysqlstore_max_threads_cdr = 4\ntime_precision_in_ms = yes\nutc = yes\n");
    let out = voxtap().arg("--config-file").arg(&conf).arg("-r").arg(&cap).arg("--json").output().expect("run voxtap");
    let summary = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{summary}");
    let cdrs: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(cdrs.len() >= 3900, "{}", cdrs.len());
    assert!(summary.contains(&format!("db_stored={} ", cdrs.len())), "{summary}");
    let expected: std::collections::BTreeMap<String, (String, String, String)> = cdrs
        .iter()
        .map(|c| {
            let rtp = c["rtp"].as_array().unwrap();
            let received: u64 = rtp.iter().map(|r| r["received"].as_u64().unwrap()).sum();
            (
                c["fbasename"].as_str().unwrap().to_string(),
                (dt(c["calldate"].as_str().unwrap()), rtp.len().to_string(), received.to_string()),
            )
        })
        .collect();
    let rows = db.query(
        Some(&name),
        "SELECT n.fbasename, c.calldate, (SELECT COUNT(*) FROM cdr_rtp r WHERE r.cdr_ID = c.ID), \
         (SELECT COALESCE(SUM(received), 0) FROM cdr_rtp r WHERE r.cdr_ID = c.ID) \
         FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID JOIN voxtap_cdr_stored k ON k.cdr_ID = c.ID",
    );
    let got: std::collections::BTreeMap<String, (String, String, String)> = rows
        .into_iter()
        .skip(1)
        .map(|r| {
            let f = |i: usize| r[i].clone().unwrap_or_default();
            (f(0), (f(1), f(2), f(3)))
        })
        .collect();
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
    assert!(
        wrong.is_empty() && got.len() == expected.len(),
        "{} rows, {} CDRs; first wrong: {wrong:?}",
        got.len(),
        expected.len()
    );
}

/// The partitions of a table: (name, upper bound as the server states it), in order.
fn partitions(db: &db::Db, name: &str, table: &str) -> Vec<(String, String)> {
    db.query(
        None,
        &format!(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '{name}' \
             AND TABLE_NAME = '{table}' ORDER BY PARTITION_ORDINAL_POSITION"
        ),
    )
    .into_iter()
    .skip(1)
    .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
    .collect()
}

/// The day after `calldate` (`YYYY-MM-DD…`), as a partition bound is written.
fn bound_after(calldate: &str) -> String {
    let d = |a: usize, b: usize| calldate[a..b].parse::<i64>().unwrap();
    let days = {
        // Howard Hinnant's days_from_civil, and back, for the next day.
        let (y, m, dd) = (d(0, 4), d(5, 7), d(8, 10));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + dd - 1;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468 + 1
    };
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("'{y:04}-{m:02}-{day:02}'")
}

/// A CDR stamped in 2106 (a pcap or HEP timestamp near 2^32 s) must not make a partition: one would take every
/// later day, and no day would get a partition of its own again. It is set aside (counted as rejected, logged);
/// CDRs of today stored after it get today's partition. A database an earlier build left with such a partition
/// gets each new day split off it.
#[test]
fn a_far_future_cdr_makes_no_partition() {
    let db = db::server();
    let tmp = fresh_dir("mysql-future");
    let future = tmp.join("future.pcap");
    voxgen(&future, &["--calls", "1", "--cps", "1", "--duration", "1", "--start", "4294967000", "--seed", "61"]);
    let now = tmp.join("now.pcap");
    voxgen(&now, &["--calls", "3", "--cps", "3", "--duration", "1", "--start", &start_now(), "--seed", "62"]);
    let run = |name: &str, cap: &Path| -> (Vec<Value>, String) {
        let conf = db.config(&tmp, name, "utc = yes\n");
        let out =
            voxtap().arg("--config-file").arg(&conf).arg("-r").arg(cap).arg("--json").output().expect("run voxtap");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let cdrs: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (cdrs, stderr)
    };
    let name = db.fresh("voxtap_t_future");
    let (far, summary) = run(&name, &future);
    assert_eq!(far.len(), 1);
    assert!(far[0]["calldate"].as_str().unwrap().starts_with("2106-02-07"), "{}", far[0]);
    assert!(summary.contains("db_stored=0 db_duplicate=0 db_rejected=1 "), "{summary}");
    assert!(summary.contains("more than 1 day past today"), "{summary}");
    let (cdrs, summary) = run(&name, &now);
    assert!(summary.contains("db_stored=3 "), "{summary}");
    let today = cdrs[0]["calldate"].as_str().unwrap().to_string();
    for t in ["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "voxtap_cdr_stored"] {
        let parts = partitions(&db, &name, t);
        assert!(parts.iter().all(|(_, b)| b.as_str() < "'2100"), "{t}: {parts:?}");
        assert!(parts.iter().any(|(_, b)| *b == bound_after(&today)), "{t}: no partition for {today}: {parts:?}");
    }
    for c in &cdrs {
        let fb = c["fbasename"].as_str().unwrap();
        let r = db.query(Some(&name), &format!("SELECT COUNT(*) FROM cdr_next WHERE fbasename = '{fb}'"));
        assert_eq!(r[1][0].as_deref(), Some("1"), "{fb}");
    }

    // An earlier build's damage: a partition up to 2106 after yesterday's, in every table.
    let name = db.fresh("voxtap_t_future_old");
    let yesterday = tmp.join("yesterday.pcap");
    let t = start_now().parse::<f64>().unwrap() - 86_400.0;
    voxgen(
        &yesterday,
        &["--calls", "2", "--cps", "2", "--duration", "1", "--start", &format!("{t:.3}"), "--seed", "63"],
    );
    let (y, summary) = run(&name, &yesterday);
    assert!(summary.contains("db_stored=2 "), "{summary}");
    for t in ["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "voxtap_cdr_stored"] {
        db.query(
            Some(&name),
            &format!("ALTER TABLE {t} ADD PARTITION (PARTITION p060207 VALUES LESS THAN ('2106-02-08'))"),
        );
    }
    let (cdrs, summary) = run(&name, &now);
    assert!(summary.contains("db_stored=3 "), "{summary}");
    let day = |c: &Value| c["calldate"].as_str().unwrap().to_string();
    for t in ["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "voxtap_cdr_stored"] {
        let bounds: Vec<String> = partitions(&db, &name, t).into_iter().map(|(_, b)| b).collect();
        let mut want = vec![bound_after(&day(&y[0])), bound_after(&day(&cdrs[0])), "'2106-02-08'".to_string()];
        want.dedup();
        assert_eq!(bounds, want, "{t}");
    }
    let n = db.query(Some(&name), "SELECT COUNT(*) FROM cdr PARTITION (p060207)");
    assert_eq!(n[1][0].as_deref(), Some("0"), "today's CDRs are in today's partition");
}

/// Dictionary texts that differ only in trailing spaces (a Reason header's quoted text keeps them; a remote
/// sensor's CDRs may hold anything) are distinct rows, each CDR linked to its own exact text: `utf8mb4_bin` is a
/// PAD SPACE collation, under which `'abc'` and `'abc '` were one key and the second CDR got the first's row.
/// The same with dictionary tables an earlier build made in `utf8mb4_bin`, holding such a text already.
#[test]
fn dictionary_texts_differing_in_trailing_spaces_link_to_their_own_rows() {
    let db = db::server();
    let tmp = fresh_dir("mysql-pad");
    let cap = tmp.join("pad.pcap");
    let t0 = 1_700_000_000_000_000u64;
    let mut dgrams = Vec::new();
    for (i, text) in ["Normal ", "Normal", "Normal  ", "Busy"].iter().enumerate() {
        let reason = format!(
            "Reason: Q.850;cause=16;text=\"{text}\"\r\nReason: SIP;cause=200;text=\"{}\"\r\n",
            if i % 2 == 0 { "Done " } else { "Done" }
        );
        dgrams.extend(sip_call(&format!("pad-{i}@test"), t0 + i as u64 * 500_000, &reason));
    }
    dgrams.sort_by_key(|d| d.us);
    write_udp_pcap(&cap, &dgrams);
    let cdrs = run_json(&cap, &[]);
    let texts: Vec<&str> = cdrs.iter().filter_map(|c| c["reason_q850_text"].as_str()).collect();
    assert_eq!(texts.len(), 4, "{cdrs:?}");
    assert!(texts.contains(&"Normal ") && texts.contains(&"Normal"), "{texts:?}");
    let bad = check_capture(&db, &tmp, "voxtap_t_pad", &cap, &[]);
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
    let rows =
        db.query(Some("voxtap_t_pad"), "SELECT COUNT(*) FROM cdr_reason WHERE type = 2 AND reason LIKE 'Normal%'");
    assert_eq!(rows[1][0].as_deref(), Some("3"));

    // Tables as an earlier build made them, with a text and trailing spaces stored already.
    let name = db.fresh("voxtap_t_pad_old");
    db.query(None, &format!("CREATE DATABASE {name}"));
    db.query(
        Some(&name),
        "CREATE TABLE cdr_reason (id mediumint unsigned NOT NULL AUTO_INCREMENT, type tinyint DEFAULT NULL, \
         reason varchar(255) COLLATE utf8mb4_bin DEFAULT NULL, PRIMARY KEY (id), UNIQUE KEY type_reason (type, reason)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4; INSERT INTO cdr_reason (type, reason) VALUES (2, 'Normal  ')",
    );
    let (cdrs, summary) = run_with_db(&db, &tmp, &name, &cap, &[]);
    assert!(summary.contains("db_stored=4 "), "{summary}");
    let types: HashMap<String, String> = db
        .query(
            Some(&name),
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cdr'",
        )
        .into_iter()
        .skip(1)
        .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
        .collect();
    let bad: Vec<String> = cdrs.iter().flat_map(|c| compare(&db, &name, c, &types)).collect();
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}
