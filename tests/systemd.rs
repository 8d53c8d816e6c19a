//! Living under systemd: a live sensor speaks the sd_notify protocol (READY=1, WATCHDOG=1 while its rx cores turn,
//! STOPPING=1 when it drains), and `--check-config` names the role a configuration gives voxtap or says why its
//! keys contradict each other (the appliance's units and its config check rely on both).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Every datagram that arrives within `wait`.
fn drain(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

fn hep_sensor(dir: &Path, notify: &Path, watchdog_pid: Option<&str>) -> (std::process::Child, u16) {
    let [port] = free_ports::<1>();
    let conf = write_conf(
        dir,
        "voxtap.conf",
        "spool",
        &format!("hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {port}\nmanagerport = 0\n"),
    );
    let mut cmd = voxtap();
    cmd.args(["--config-file", conf.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = watchdog_pid {
        cmd.env("WATCHDOG_PID", p);
    }
    (cmd.spawn().expect("start voxtap"), port)
}

#[test]
fn a_live_sensor_tells_systemd_it_is_ready_alive_and_stopping() {
    let dir = fresh_dir("systemd-notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (mut child, _port) = hep_sensor(&dir, &path, None);
    let first = drain(&sock, Duration::from_secs(3));
    assert_eq!(first.first().map(String::as_str), Some("READY=1"), "{first:?}");
    // A 0.6 s watchdog: pinged every 0.2 s while the listener's rx core turns.
    let pings = drain(&sock, Duration::from_secs(2));
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(n >= 5, "{n} watchdog pings in 2 s: {pings:?}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let last = drain(&sock, Duration::from_millis(300));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "{last:?}");
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_fed() {
    let dir = fresh_dir("systemd-otherpid");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (mut child, _port) = hep_sensor(&dir, &path, Some("1"));
    let got = drain(&sock, Duration::from_secs(3));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert!(!got.iter().any(|m| m == "WATCHDOG=1"), "{got:?}");
}

fn check(dir: &Path, name: &str, text: &str) -> (bool, String, String) {
    let conf = dir.join(name);
    std::fs::write(&conf, text).unwrap();
    let out = voxtap().args(["--config-file", conf.to_str().unwrap(), "--check-config"]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_role_or_the_contradiction() {
    let dir = fresh_dir("systemd-check");
    let key = "ab".repeat(32);
    let (ok, out, err) = check(
        &dir,
        "aio.conf",
        &format!("interface = lo\nmysqlhost = 127.0.0.1\nmysqlusername = voxtap\nmanager_key = {key}\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("role: sensor on AF_PACKET interfaces"), "{out}");
    assert!(out.contains("cdrs: MySQL voxtap@127.0.0.1:3306, database voipmonitor"), "{out}");
    assert!(out.contains("(manager_key set)") && out.ends_with("OK\n"), "{out}");

    let (ok, out, _) =
        check(&dir, "central.conf", "server_bind = 0.0.0.0\nserver_password = x\nmysqlhost = 127.0.0.1\n");
    assert!(ok && out.contains("role: central server"), "{out}");

    let (ok, out, _) = check(
        &dir,
        "remote.conf",
        "interface = lo\nserver_destination = 192.0.2.1\nserver_password = x\nmysqlhost = 127.0.0.1\n",
    );
    assert!(ok && out.contains("cdrs: sent to the central 192.0.2.1:60024"), "{out}");

    let (ok, _, err) = check(&dir, "both.conf", "server_bind = 0.0.0.0\nserver_destination = 192.0.2.1\n");
    assert!(!ok && err.contains("a sensor has one role"), "{err}");
    let (ok, _, err) = check(&dir, "nothing.conf", "spooldir = /tmp\n");
    assert!(!ok && err.contains("nothing to do"), "{err}");
    // A key of the right length in bytes whose characters are not hex digits (multi-byte ones among them).
    let (ok, _, err) = check(&dir, "key.conf", &format!("hep = yes\nmanager_key = {}\n", "é".repeat(32)));
    assert!(!ok && err.contains("manager_key must be hex digits"), "{err}");
    let (ok, _, err) = check(&dir, "bad.conf", "hep = yes\nhep_bind_port = seventy\n");
    assert!(!ok && err.contains("hep_bind_port"), "{err}");
    // An unknown key is a warning, not a failure.
    let (ok, _, err) = check(&dir, "unknown.conf", "hep = yes\nhep_bind_port = 9060\nno_such_key = 1\n");
    assert!(ok && err.contains("no_such_key"), "{err}");
}
