//! A new user's first hour with a remote and a database (issue 16): a remote sending an old capture (`-r`) to a
//! central that is away, or that refuses its password, ends on time and says how many records stay queued and
//! how they will be delivered; Ctrl-C says the same; a live remote names a refused password as such; a database
//! that refuses the user fails at once with what to check, and one that is away is named once, by its address.

mod common;
#[path = "common/db.rs"]
mod db;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

fn remote_conf(dir: &Path, name: &str, port: u16, password: &str, extra: &str) -> PathBuf {
    write_conf(
        dir,
        &format!("{name}.conf"),
        &format!("{name}-spool"),
        &format!(
            "server_destination = 127.0.0.1\nserver_destination_port = {port}\nserver_password = {password}\n\
             id_sensor = 4\nmanagerport = 0\n{extra}\n"
        ),
    )
}

/// A central on `port` whose CDRs go to its standard output only.
fn central(dir: &Path, port: u16, password: &str) -> LiveVoxtap {
    let conf = write_conf(
        dir,
        "central.conf",
        "central-spool",
        &format!(
            "server_bind = 127.0.0.1\nserver_bind_port = {port}\nserver_password = {password}\nmanagerport = 0\n\
             cdr_log = no\n"
        ),
    );
    LiveVoxtap::start(&conf, port)
}

/// Waits for a run that must fail within `limit`; its standard error and how long it took.
fn failed(mut c: Child, limit: Duration) -> (String, Duration) {
    use std::io::Read;
    let t0 = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(!st.success(), "the run should have failed: {err}");
            return (err, t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the run did not end within {limit:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A capture of a few calls and how many CDRs it makes.
fn capture(dir: &Path, seed: &str) -> (PathBuf, usize) {
    let cap = dir.join("old.pcap");
    voxgen(&cap, &["--calls", "6", "--cps", "10", "--duration", "1", "--seed", seed]);
    let n = run_json(&cap, &[]).len();
    assert!(n >= 5, "{n} CDRs");
    (cap, n)
}

fn empty_capture(dir: &Path) -> PathBuf {
    let p = dir.join("empty.pcap");
    write_udp_pcap(&p, &[]);
    p
}

#[test]
fn a_file_remote_without_its_central_stops_in_time_and_the_next_run_delivers() {
    let dir = fresh_dir("fh-nocentral");
    let (cap, n) = capture(&dir, "71");
    let [port] = free_ports::<1>();
    let conf = remote_conf(&dir, "r", port, "pw", "link_send_timeout = 3");
    let (err, took) = failed(spawn_reading(&conf, &cap), Duration::from_secs(30));
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15), "{took:?}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("link_send_timeout") && last.contains(&format!("127.0.0.1:{port}")), "{last}");
    assert!(last.contains(&format!("{n} CDRs (")) && last.contains("stay queued in"), "{last}");
    assert!(last.contains("next start with this configuration"), "{last}");
    // The central is back: a run of the same configuration (with nothing new to read) delivers them.
    let c = central(&dir, port, "pw");
    let err = finished(spawn_reading(&conf, &empty_capture(&dir)), Duration::from_secs(30));
    assert!(err.contains("link_left_records=0") && err.contains("link_left_bytes=0"), "{err}");
    let (cdrs, cerr) = c.stop();
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(run_json(&cap, &["--id-sensor", "4"])), "{cerr}");
}

#[test]
fn a_refused_password_is_said_at_once_by_both_kinds_of_remote() {
    let dir = fresh_dir("fh-password");
    let (cap, n) = capture(&dir, "72");
    let [port] = free_ports::<1>();
    let c = central(&dir, port, "right");
    // A long timeout: the run must not wait for it.
    for (name, extra, what) in [("r", "", "CDRs"), ("p", "packetbuffer_sender = yes", "packet batches")] {
        let conf = remote_conf(&dir, name, port, "wrong", &format!("link_send_timeout = 60\n{extra}"));
        let (err, took) = failed(spawn_reading(&conf, &cap), Duration::from_secs(20));
        assert!(took < Duration::from_secs(5), "{name}: {took:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!("the central at 127.0.0.1:{port} refused the password (server_password)")),
            "{name}: {last}"
        );
        assert!(last.contains(&format!(" {what} (")) && last.contains("stay queued in"), "{name}: {last}");
        assert!(!err.contains("no central reachable"), "{name}: {err}");
        if what == "CDRs" {
            assert!(last.contains(&format!("{n} CDRs (")), "{last}");
        }
    }
    let (cdrs, cerr) = c.stop();
    assert!(cdrs.is_empty() && cerr.contains("central_refused_auth=2"), "{cerr}");
}

#[test]
fn a_packet_sender_without_its_central_stops_in_time() {
    let dir = fresh_dir("fh-pkt");
    let (cap, _) = capture(&dir, "73");
    let [port] = free_ports::<1>();
    let conf = remote_conf(&dir, "p", port, "pw", "link_send_timeout = 3\npacketbuffer_sender = yes");
    let (err, took) = failed(spawn_reading(&conf, &cap), Duration::from_secs(30));
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15), "{took:?}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("link_send_timeout") && last.contains("packet batches ("), "{last}");
    assert!(last.contains("stay queued in") && last.contains("next start with this configuration"), "{last}");
    // And they reach the central, which analyses them, at the next run.
    let c = central(&dir, port, "pw");
    finished(spawn_reading(&conf, &empty_capture(&dir)), Duration::from_secs(30));
    let (cdrs, cerr) = c.stop();
    // The central stores a packet remote's calls under the remote's id_sensor (4).
    let mut want = run_json(&cap, &[]);
    for c in want.iter_mut() {
        c["id_sensor"] = 4.into();
    }
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(want), "{cerr}");
}

#[test]
fn ctrl_c_while_waiting_for_the_central_says_what_stays_queued() {
    let dir = fresh_dir("fh-sigint");
    let (cap, n) = capture(&dir, "74");
    let [port] = free_ports::<1>();
    // No time limit: only the signal ends the wait.
    let conf = remote_conf(&dir, "r", port, "pw", "link_send_timeout = 0");
    let child = spawn_reading(&conf, &cap);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let (err, _) = failed(child, Duration::from_secs(10));
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("interrupted") && last.contains(&format!("{n} CDRs (")), "{last}");
    assert!(last.contains("stay queued in"), "{last}");
}

#[test]
fn a_live_remote_names_a_refused_password_and_keeps_trying() {
    let dir = fresh_dir("fh-live");
    let [port, hep] = free_ports::<2>();
    let c = central(&dir, port, "right");
    let conf =
        remote_conf(&dir, "r", port, "wrong", &format!("hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep}"));
    let remote = LiveVoxtap::start(&conf, hep);
    // A first attempt, then one every 10 s (slow, so the central does not throttle its address).
    std::thread::sleep(Duration::from_millis(11_500));
    let (_, err) = remote.stop();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("refused the password (server_password)")).collect();
    // Said as an error, once (not at every retry), and never as an absent central.
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("ERROR") && said[0].contains("retrying"), "{err}");
    assert!(!err.contains("no central reachable"), "{err}");
    let (_, cerr) = c.stop();
    let refused = cerr.split("central_refused_auth=").nth(1).and_then(|r| r.split(' ').next()?.parse::<u32>().ok());
    assert!(refused.is_some_and(|r| r >= 2), "{cerr}");
}

#[test]
fn a_database_that_refuses_the_user_fails_the_run_at_once() {
    let dir = fresh_dir("fh-dbuser");
    let (cap, _) = capture(&dir, "75");
    let db = db::server();
    let name = db.fresh("voxtap_fh_user");
    db.query(None, &format!("CREATE DATABASE `{name}`"));
    for sql in [
        "CREATE USER IF NOT EXISTS 'voxtap_t'@'127.0.0.1' IDENTIFIED BY 'right'",
        "ALTER USER 'voxtap_t'@'127.0.0.1' IDENTIFIED BY 'right'",
        format!("GRANT ALL ON `{name}`.* TO 'voxtap_t'@'127.0.0.1'").as_str(),
    ] {
        db.query(None, sql);
    }
    let conf = |tag: &str, password: &str, database: &str| {
        write_conf(
            &dir,
            &format!("{tag}.conf"),
            &format!("{tag}-spool"),
            &format!(
                "mysqlhost = {}\nmysqlport = {}\nmysqldb = {database}\nmysqlusername = voxtap_t\nmysqlpassword = {password}\n",
                db.host, db.port
            ),
        )
    };
    let at = format!("{}:{}", db.host, db.port);
    // A wrong password: said at once, with what to check.
    let (err, took) = failed(spawn_reading(&conf("wrong", "wrong", &name), &cap), Duration::from_secs(20));
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
    assert!(err.contains(&format!("the database at {at} refused user 'voxtap_t'")), "{err}");
    assert!(err.contains("1045") && err.contains("mysqlusername and mysqlpassword"), "{err}");
    assert!(!err.contains("not reachable"), "{err}");
    // A database the user may not have: the GRANT to give.
    let (err, took) =
        failed(spawn_reading(&conf("other", "right", "voxtap_fh_no_grant"), &cap), Duration::from_secs(20));
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
    assert!(err.contains("1044") && err.contains("ON `voxtap_fh_no_grant`.* TO 'voxtap_t'"), "{err}");
    // The right password: the same user stores the CDRs.
    let err = finished(spawn_reading(&conf("right", "right", &name), &cap), Duration::from_secs(60));
    assert!(err.contains("db_queued=0"), "{err}");
}

#[test]
fn an_absent_database_is_named_once_by_its_address() {
    let dir = fresh_dir("fh-dbaway");
    let (cap, n) = capture(&dir, "76");
    let [port] = free_ports::<1>();
    let conf = write_conf(
        &dir,
        "away.conf",
        "away-spool",
        &format!("mysqlhost = 127.0.0.1\nmysqlport = {port}\nmysqldb = voxtap_fh_away\n"),
    );
    // The writer keeps trying for 20 s after the input ended, as before.
    let (err, _) = failed(spawn_reading(&conf, &cap), Duration::from_secs(60));
    let os = std::io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string();
    assert_eq!(err.matches(&os).count(), 1, "the system's error said once: {err}");
    let addr = format!("127.0.0.1:{port}");
    assert!(err.lines().any(|l| l.contains(&addr) && l.contains(&os) && l.contains("not reachable")), "{err}");
    for l in err.lines() {
        assert!(l.matches(&addr).count() <= 1, "{l}");
        assert!(!l.contains("Input/output error"), "{l}");
    }
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(&addr) && last.contains(&format!("{n} CDRs wait in the CDR queue")), "{last}");
}
