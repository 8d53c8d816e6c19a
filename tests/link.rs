//! Client/server mode end to end with real processes on the loopback: remotes that send CDRs into the central's
//! MariaDB, remotes that send raw packets for the central to analyse (legs merged), a central killed and
//! restarted and a link cut in the middle of a run (nothing lost, nothing twice), a GUI's getfile relayed to a
//! remote, and hostile peers against an in-process central.

mod common;
#[path = "common/db.rs"]
mod db;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use db::server;
use voxtap::capture::pcapfile::CaptureFile;

fn remote_conf(dir: &Path, name: &str, port: u16, id: u16, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.conf"));
    std::fs::write(
        &p,
        format!(
            "server_destination = 127.0.0.1\nserver_destination_port = {port}\nserver_password = correct horse\n\
             id_sensor = {id}\nspooldir = {}\nmanagerport = 0\n{extra}\n",
            dir.join(format!("{name}-spool")).display()
        ),
    )
    .unwrap();
    p
}

fn central_extra(port: u16) -> String {
    format!("server_bind = 127.0.0.1\nserver_bind_port = {port}\nserver_password = correct horse\nmanagerport = 0\n")
}

/// A central on `port` whose CDRs go only to its standard output (no CDR log).
fn central_without_log(dir: &Path, port: u16) -> LiveVoxtap {
    let conf = dir.join("central.conf");
    std::fs::write(&conf, format!("{}spooldir = {}\ncdr_log = no\n", central_extra(port), dir.join("c").display()))
        .unwrap();
    LiveVoxtap::start(&conf, port)
}

#[test]
fn remotes_send_cdrs_into_the_central_database() {
    let dir = fresh_dir("link-cdr");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    voxgen(&a, &["--calls", "40", "--cps", "20", "--duration", "2", "--mix", "--seed", "11"]);
    voxgen(&b, &["--calls", "30", "--cps", "20", "--duration", "2", "--mix", "--seed", "12", "--start", "1700001000"]);
    let db = server();
    let name = db.fresh("voxtap_link_cdr");
    let [port] = free_ports::<1>();
    let central = LiveVoxtap::start(&db.config(&dir, &name, &central_extra(port)), port);
    let r1 = spawn_reading(&remote_conf(&dir, "r1", port, 1, ""), &a);
    let r2 = spawn_reading(&remote_conf(&dir, "r2", port, 2, ""), &b);
    let e1 = finished(r1, Duration::from_secs(60));
    finished(r2, Duration::from_secs(60));
    // Every batch sent was confirmed (how many there are depends on how fast the sender task caught up with the
    // CDRs as they were queued).
    let count = |k: &str| e1.split(k).nth(1).and_then(|r| r.split(' ').next()?.trim().parse::<u64>().ok());
    assert!(count("link_batches_sent=").is_some_and(|n| n >= 1), "{e1}");
    assert_eq!(count("link_batches_sent="), count("link_batches_confirmed="), "{e1}");
    assert!(e1.contains("link_left_bytes=0"), "{e1}");
    // The central's database has every CDR, under the sensor that sent it, and both sensors are registered.
    let t0 = Instant::now();
    loop {
        let rows = db.try_query(&name, "SELECT id_sensor, COUNT(*) FROM cdr GROUP BY id_sensor ORDER BY id_sensor");
        if rows.len() == 3 && rows[1][1].as_deref() == Some("40") && rows[2][1].as_deref() == Some("30") {
            assert_eq!((rows[1][0].as_deref(), rows[2][0].as_deref()), (Some("1"), Some("2")));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "central database: {rows:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let sensors = db.query(Some(&name), "SELECT id_sensor, host FROM sensors ORDER BY id_sensor");
    assert_eq!(sensors[1..].iter().map(|r| r[0].clone().unwrap()).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(sensors[1][1].as_deref(), Some("127.0.0.1"));
    // And the CDRs the central wrote are the remotes' own analyses, field for field.
    let (cdrs, err) = central.stop();
    let mut want = run_json(&a, &["--id-sensor", "1"]);
    want.extend(run_json(&b, &["--id-sensor", "2"]));
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(want));
    assert!(err.contains("central_registered=2") && err.contains("central_cdrs=70"), "{err}");
}

/// A copy of `src` keeping the frames `keep` selects (nanosecond pcap).
fn split(src: &Path, dst: &Path, keep: impl Fn(&[u8]) -> bool) -> usize {
    let f = CaptureFile::open(src).unwrap();
    let mut out = Vec::new();
    let mut lt = 1u16;
    let mut n = 0;
    for fr in f.frames() {
        lt = fr.link_type;
        if keep(fr.data) {
            let (s, ns) = (fr.ts.div_euclid(1_000_000_000), fr.ts.rem_euclid(1_000_000_000));
            for v in [s as u32, ns as u32, fr.data.len() as u32, fr.data.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(fr.data);
            n += 1;
        }
    }
    let mut h = Vec::new();
    for v in [0xa1b2_3c4du32, 0x0004_0002, 0, 0, 65535, lt as u32] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&out);
    std::fs::write(dst, h).unwrap();
    n
}

/// One direction of every flow: source address below the destination (IPv4 over Ethernet).
/// The CDRs as a central stores a packet remote's calls: under the remote's id_sensor.
fn with_sensor(mut cdrs: Vec<serde_json::Value>, id: u16) -> Vec<serde_json::Value> {
    for c in cdrs.iter_mut() {
        c["id_sensor"] = id.into();
    }
    cdrs
}

fn forward(d: &[u8]) -> bool {
    d.len() >= 34 && d[26..30] < d[30..34]
}

#[test]
fn packet_senders_legs_are_merged_into_the_central_analysis() {
    let dir = fresh_dir("link-pkt");
    let all = dir.join("all.pcap");
    voxgen(&all, &["--calls", "30", "--cps", "15", "--duration", "3", "--mix", "--dtmf", "--seed", "21"]);
    // Each remote sees one direction of every call: neither alone has a whole call.
    let (fa, fb) = (dir.join("fwd.pcap"), dir.join("rev.pcap"));
    let na = split(&all, &fa, forward);
    let nb = split(&all, &fb, |d| !forward(d));
    assert!(na > 100 && nb > 100, "{na} {nb}");
    let [port] = free_ports::<1>();
    let central = central_without_log(&dir, port);
    let r1 = spawn_reading(&remote_conf(&dir, "r1", port, 1, "packetbuffer_sender = yes"), &fa);
    let r2 = spawn_reading(&remote_conf(&dir, "r2", port, 2, "packetbuffer_sender = yes"), &fb);
    finished(r1, Duration::from_secs(60));
    finished(r2, Duration::from_secs(60));
    let (cdrs, err) = central.stop();
    // A call belongs to the sensor that saw its first INVITE: the called side's direction here (remote 2).
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(with_sensor(run_json(&all, &[]), 2)), "{err}");
    assert!(err.contains(&format!("packets={}", na + nb)), "{err}");
}

/// Two packet-mode remotes with calls of their own: the central stores each call under the id_sensor of the
/// remote that captured it (not its own), so an operator can tell which sensor saw a call.
#[test]
fn a_packet_remotes_calls_carry_its_id_sensor() {
    let dir = fresh_dir("link-pkt-ids");
    let (fa, fb) = (dir.join("a.pcap"), dir.join("b.pcap"));
    voxgen(&fa, &["--calls", "12", "--cps", "10", "--duration", "2", "--seed", "31"]);
    voxgen(&fb, &["--calls", "9", "--cps", "10", "--duration", "2", "--seed", "32", "--start", "1700000300"]);
    let [port] = free_ports::<1>();
    let conf = dir.join("central.conf");
    std::fs::write(
        &conf,
        format!(
            "{}spooldir = {}
cdr_log = no
id_sensor = 1
",
            central_extra(port),
            dir.join("c").display()
        ),
    )
    .unwrap();
    let central = LiveVoxtap::start(&conf, port);
    let r7 = spawn_reading(&remote_conf(&dir, "r7", port, 7, "packetbuffer_sender = yes"), &fa);
    let r8 = spawn_reading(&remote_conf(&dir, "r8", port, 8, "packetbuffer_sender = yes"), &fb);
    finished(r7, Duration::from_secs(60));
    finished(r8, Duration::from_secs(60));
    let (cdrs, err) = central.stop();
    let mut want = Vec::new();
    for (file, id) in [(&fa, 7), (&fb, 8)] {
        want.extend(with_sensor(run_json(file, &[]), id));
    }
    assert_eq!(want.len(), 21);
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(want), "{err}");
}

/// A TCP relay that cuts every connection after `cut_after` bytes from the remote (a link going down in the
/// middle of a batch), until `cuts` connections were cut.
fn flaky_relay(to: u16, cut_after: usize, cuts: usize) -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        let mut cut = 0;
        for c in l.incoming() {
            if st.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut from) = c else { continue };
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", to)) else { continue };
            let mut back = up.try_clone().unwrap();
            let mut from2 = from.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut from2);
            });
            let limit = if cut < cuts { Some(cut_after) } else { None };
            cut += 1;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut sent = 0;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = limit.map_or(n, |l| n.min(l - sent));
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if limit.is_some_and(|l| sent >= l) {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, stop)
}

fn kill9(c: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", &c.id().to_string()]).status();
    let _ = c.wait();
}

fn start_central(conf: &Path, port: u16, log: &Path) -> Child {
    let c = voxtap()
        .args(["--config-file", conf.to_str().unwrap(), "--json", "-v"])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "central did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

#[test]
fn a_killed_central_and_a_cut_link_lose_nothing_and_store_nothing_twice() {
    let dir = fresh_dir("link-faults");
    let cap = dir.join("many.pcap");
    voxgen(&cap, &["--calls", "3000", "--cps", "1000", "--duration", "1", "--seed", "31"]);
    let total = run_json(&cap, &[]).len();
    assert_eq!(total, 3000);
    let db = server();
    let name = db.fresh("voxtap_link_faults");
    let [port] = free_ports::<1>();
    let conf = db.config(&dir, &name, &central_extra(port));
    let count = || {
        db.try_query(&name, "SELECT (SELECT COUNT(*) FROM cdr), COUNT(DISTINCT fbasename) FROM cdr_next")
            .get(1)
            .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
            .unwrap_or_default()
    };
    // The link is cut twice in the middle of a batch, then the central is killed once CDRs have started to
    // arrive, and started again.
    let (relay, stop_relay) = flaky_relay(port, 150_000, 2);
    let mut c = start_central(&conf, port, &dir.join("central.log"));
    let remote = spawn_reading(&remote_conf(&dir, "r", relay, 9, ""), &cap);
    let t0 = Instant::now();
    let mut killed_at = None;
    while t0.elapsed() < Duration::from_secs(60) {
        let (n, _) = count();
        if n.parse::<usize>().unwrap_or(0) > 0 {
            killed_at = Some(n);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(&mut c);
    eprintln!("central killed with {killed_at:?} CDRs in its database");
    std::thread::sleep(Duration::from_millis(500));
    let mut c = start_central(&conf, port, &dir.join("central.log"));
    let err = finished(remote, Duration::from_secs(120));
    let t0 = Instant::now();
    loop {
        let (n, distinct) = count();
        if n == total.to_string() {
            assert_eq!(distinct, n, "a CDR was stored twice");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "central database holds {n} of {total} CDRs\n{err}\ncentral: {}",
            std::fs::read_to_string(dir.join("central.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(err.contains("link_left_bytes=0"), "{err}");
    assert!(killed_at.is_some(), "the central was not killed mid-run");
    stop_relay.store(true, Ordering::Relaxed);
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    assert!(c.wait().unwrap().success());
}

#[test]
fn the_gui_reaches_a_remotes_files_through_the_central() {
    let dir = fresh_dir("link-gui");
    let [port, hep] = free_ports::<2>();
    let conf = dir.join("central.conf");
    std::fs::write(&conf, format!("{}spooldir = {}\n", central_extra(port), dir.join("c").display())).unwrap();
    let central = LiveVoxtap::start(&conf, port);
    // A live remote (a HEP listener) whose spool holds a call file.
    let rconf = remote_conf(&dir, "r", port, 7, &format!("hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep}"));
    let spool = dir.join("r-spool/2023-11-14/22/13/SIP");
    std::fs::create_dir_all(&spool).unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(spool.join("call1.pcap"), &body).unwrap();
    let remote = LiveVoxtap::start(&rconf, hep);
    let gui = |cmd: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            format!("{{\"type_connection\":\"gui_command\",\"sensor_id\":7,\"command\":\"{cmd}\"}}\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.read_to_end(&mut out).unwrap();
        out
    };
    let t0 = Instant::now();
    while gui("getversion").starts_with(b"missing sniffer service") {
        assert!(t0.elapsed() < Duration::from_secs(20), "remote never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gui("getfile 2023-11-14/22/13/SIP/call1.pcap"), body);
    // A file larger than one link record (64 MiB) arrives whole, streamed in parts.
    let big: Vec<u8> = (0..(70u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(spool.join("big.pcap"), &big).unwrap();
    let got = gui("getfile 2023-11-14/22/13/SIP/big.pcap");
    assert!(got.len() == big.len() && got == big, "relayed {} of {} bytes", got.len(), big.len());
    drop((big, got));
    assert_eq!(gui("file_exists 2023-11-14/22/13/SIP/call1.pcap"), b"200000");
    assert_eq!(gui("getfile ../r.conf"), b"access denied");
    // A sensor that is not connected.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"{\"type_connection\":\"gui_command\",\"sensor_id\":99,\"command\":\"getversion\"}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("missing sniffer service"), "{out}");
    remote.stop();
    let (_, err) = central.stop();
    assert!(err.contains("central_registered=1"), "{err}");
}

/// A test's own link peer: who it says it is, and its clock's skew.
struct Hello {
    id: Option<u16>,
    queue: String,
    skew_s: i64,
}

fn hello(id: Option<u16>, queue: &str, skew_s: i64) -> Hello {
    Hello { id, queue: queue.into(), skew_s }
}

/// Connects to a central as a remote would (the real handshake); the channel is used through `rt`.
fn dial_central(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    pw: &str,
    h: Hello,
) -> Result<voxtap::link::secure::Channel, voxtap::link::secure::LinkError> {
    use voxtap::link::msg;
    use voxtap::link::secure::{connect, Identity2, LinkError};
    rt.block_on(async {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let me = Identity2 {
            sensor_id: h.id,
            sensor_name: "t".into(),
            mode: "cdr".into(),
            queue_id: h.queue,
            spake2: String::new(),
        };
        let (mut ch, _) = connect(s, pw, me, voxtap::time::wall_clock() / 1000 + h.skew_s * 1_000_000).await?;
        match ch.recv().await? {
            (msg::WELCOME, _) => Ok(ch),
            (msg::ERROR, m) => Err(LinkError::Refused(String::from_utf8_lossy(m).into_owned())),
            (k, _) => Err(LinkError::Protocol(format!("record {k}"))),
        }
    })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap()))
        .unwrap()
}

#[test]
fn hostile_and_mistaken_peers_are_refused_with_a_reason() {
    use voxtap::link::msg;
    use voxtap::link::secure::LinkError;
    let dir = fresh_dir("link-hostile");
    let [port] = free_ports::<1>();
    let conf = dir.join("central.conf");
    std::fs::write(
        &conf,
        format!(
            "server_bind = 127.0.0.1\nserver_bind_port = {port}\nserver_password = pw\nmanagerport = 0\nid_sensor = 1\n\
             cdr_log = no\nspooldir = {}\n",
            dir.join("c").display()
        ),
    )
    .unwrap();
    let central = LiveVoxtap::start(&conf, port);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dial = |pw: &str, h| dial_central(&rt, addr, pw, h);
    // Wrong password: both sides know, neither learns the other's password.
    assert!(matches!(dial("wrong", hello(Some(5), "q1", 0)), Err(LinkError::Auth)));
    // Clock skew.
    match dial("pw", hello(Some(5), "q1", -10)) {
        Err(LinkError::Refused(m)) => assert!(m.contains("clock difference of 10.0 s"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    // The central's own id, then a second sensor with an id already in use; the same sensor reconnecting is fine.
    assert!(matches!(dial("pw", hello(Some(1), "q1", 0)), Err(LinkError::Refused(m)) if m.contains("central's own")));
    let first = dial("pw", hello(Some(5), "q1", 0)).unwrap();
    match dial("pw", hello(Some(5), "q2", 0)) {
        Err(LinkError::Refused(m)) => assert!(m.contains("already connected"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    let mut again = dial("pw", hello(Some(5), "q1", 0)).unwrap();
    drop(first);
    // A batch is confirmed; a resend of it (a replay of the content, in a fresh record) is confirmed and skipped.
    let pos = voxtap::store::queue::Pos { seg: 1, off: 100 };
    let cdr = run_json_text();
    let mut body = msg::pos_bytes(pos).to_vec();
    body.extend_from_slice(&msg::pack(&[cdr.as_bytes()]));
    for _ in 0..2 {
        rt.block_on(again.send(msg::CDRS, &body)).unwrap();
        let (k, p) = rt.block_on(again.recv()).unwrap();
        assert_eq!((k, p.to_vec()), (msg::ACK, msg::pos_bytes(pos).to_vec()));
    }
    // A hostile inflated size, a bad batch: the link is dropped, the central stays.
    let mut bomb = msg::pos_bytes(voxtap::store::queue::Pos { seg: 2, off: 0 }).to_vec();
    bomb.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff]);
    rt.block_on(again.send(msg::CDRS, &bomb)).unwrap();
    assert!(rt.block_on(again.recv()).is_err());
    // A port scan, garbage, truncated and oversized frames: memory stays flat and the central still serves.
    // Warm up the allocator and the thread pool with a first round, then measure a second, larger one.
    let junk = |rounds: u32| {
        for i in 0..rounds {
            let mut s = TcpStream::connect(addr).unwrap();
            let junk: &[u8] = match i % 5 {
                0 => b"",
                1 => b"\x00\x00\x10\x00partial",
                2 => b"\xff\xff\xff\xff",
                3 => b"GET / HTTP/1.0\r\n\r\n",
                _ => b"\x00\x00\x00\x02{}",
            };
            let _ = s.write_all(junk);
        }
    };
    junk(300);
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kb(central.pid());
    junk(1500);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb(central.pid());
    assert!(after < before + 8 * 1024, "RSS grew from {before} kB to {after} kB");
    let ok = dial("pw", hello(Some(6), "q3", 0));
    assert!(ok.is_ok(), "{:?}", ok.err());
    drop(ok);
    drop(again);
    let (cdrs, err) = central.stop();
    assert_eq!(cdrs.len(), 1);
    for want in [
        "central_refused_auth=1 ",
        "central_refused_clock=1 ",
        "central_refused_duplicate_id=2 ",
        "central_cdrs=1 ",
        "central_resent_skipped=1 ",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    let count = |k: &str| -> u64 { err.split(k).nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap() };
    // Each junk connection was refused: by its handshake, or at the door once its address held too many.
    let refused = count("central_refused_protocol=") + count("central_refused_per_ip=");
    assert!(refused >= 1800, "{err}");
}

/// One real CDR's JSON.
fn run_json_text() -> String {
    let dir = fresh_dir("link-onecdr");
    let f = dir.join("one.pcap");
    voxgen(&f, &["--calls", "1", "--seed", "3"]);
    run_json(&f, &[])[0].to_string()
}

#[test]
fn a_live_remote_forwards_what_it_captures() {
    let dir = fresh_dir("link-live");
    let base = dir.join("base.pcap");
    // Calls that start now, as a live remote sees them: HEP times further than sender_time_window_s from the
    // receive time would be held at that distance.
    voxgen(
        &base,
        &["--calls", "10", "--cps", "10", "--duration", "1", "--mix", "--seed", "41", "--start", &start_now()],
    );
    let hep = hep_wrapped(&base);
    let [port, hep_port] = free_ports::<2>();
    let central = central_without_log(&dir, port);
    let rconf = remote_conf(
        &dir,
        "r",
        port,
        3,
        &format!("packetbuffer_sender = yes\nhep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep_port}"),
    );
    let remote = LiveVoxtap::start(&rconf, hep_port);
    send_hep_tcp(&hep, hep_port);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, rerr) = remote.stop();
    assert!(rerr.contains("link_left_bytes=0"), "{rerr}");
    let (cdrs, err) = central.stop();
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(with_sensor(run_json(&base, &[]), 3)), "{rerr}\n{err}");
}

#[test]
fn mirror_mode_end_to_end() {
    let dir = fresh_dir("link-mirror");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "20", "--cps", "10", "--duration", "2", "--mix", "--dtmf", "--seed", "51"]);
    let [port] = free_ports::<1>();
    let rconf = write_conf(
        &dir,
        "receiver.conf",
        "r",
        // The capture's 2023 times are replayed as they are (not held within a day of now).
        &format!("mirror_bind_ip = 127.0.0.1\nmirror_bind_port = {port}\nmanagerport = 0\ncdr_log = no\nsender_time_window_s = 0\n"),
    );
    let receiver = LiveVoxtap::start(&rconf, port);
    let sconf = dir.join("sender.conf");
    std::fs::write(&sconf, format!("mirror_destination = 127.0.0.1:{port}\nid_sensor = 4\n")).unwrap();
    let out = voxtap().args(["--config-file", sconf.to_str().unwrap(), "-r", base.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("blocks_dropped=0"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let (cdrs, rerr) = receiver.stop();
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(run_json(&base, &[])), "{rerr}");
    assert!(rerr.contains("mirror_connections=2") && rerr.contains("mirror_block_errors=0"), "{rerr}");
}

/// The central on its own host (a network namespace behind a veth pair); the link goes down in the middle of a
/// remote's run and comes back: every CDR reaches the central once.
#[test]
fn a_veth_link_down_and_up_loses_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()) {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI needs root and ip(8)");
        eprintln!("SKIPPED: needs root and ip(8)");
        return;
    }
    let id = std::process::id() % 10_000;
    let (ns, near, far) = (format!("vxl{id}"), format!("vxla{id}"), format!("vxlb{id}"));
    let net = 100 + id % 150;
    sh(&format!("ip netns add {ns}"));
    let _guard = Netns(ns.clone());
    sh(&format!("ip link add {near} type veth peer name {far} && ip link set {far} netns {ns}"));
    sh(&format!("ip addr add 10.231.{net}.1/30 dev {near} && ip link set {near} up"));
    sh(&format!(
        "ip netns exec {ns} sh -c 'ip addr add 10.231.{net}.2/30 dev {far} && ip link set {far} up && ip link set lo up'"
    ));
    let dir = fresh_dir("link-veth");
    let cap = dir.join("many.pcap");
    voxgen(&cap, &["--calls", "2000", "--cps", "400", "--duration", "1", "--seed", "61"]);
    let port = 60_700 + (id % 200) as u16;
    let conf = dir.join("central.conf");
    std::fs::write(
        &conf,
        format!(
            "server_bind = 10.231.{net}.2\nserver_bind_port = {port}\nserver_password = pw\nmanagerport = 0\n\
             cdr_log = no\nspooldir = {}\n",
            dir.join("c").display()
        ),
    )
    .unwrap();
    let out = std::fs::File::create(dir.join("central.jsonl")).unwrap();
    let mut central = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_voxtap"), "--config-file", conf.to_str().unwrap(), "--json"])
        .stdout(out)
        .stderr(std::fs::File::create(dir.join("central.err")).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect((format!("10.231.{net}.2").as_str(), port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "central did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rconf = dir.join("r.conf");
    std::fs::write(
        &rconf,
        format!(
            "server_destination = 10.231.{net}.2\nserver_destination_port = {port}\nserver_password = pw\n\
             id_sensor = 5\nspooldir = {}\n",
            dir.join("r").display()
        ),
    )
    .unwrap();
    // The remote reads the capture paced by a slow sipport-less start: cut as soon as it has connected.
    let remote = spawn_reading(&rconf, &cap);
    std::thread::sleep(Duration::from_millis(300));
    sh(&format!("ip link set {near} down"));
    std::thread::sleep(Duration::from_secs(3));
    sh(&format!("ip link set {near} up"));
    let err = finished(remote, Duration::from_secs(120));
    assert!(err.contains("link_left_bytes=0"), "{err}");
    let _ = Command::new("kill").args(["-TERM", &central.id().to_string()]).status();
    assert!(central.wait().unwrap().success());
    let lines = std::fs::read_to_string(dir.join("central.jsonl")).unwrap();
    let ids: std::collections::HashSet<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["callid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((lines.lines().count(), ids.len()), (2000, 2000), "{err}");
}

/// A remote forwarding a DPDK port (a net_pcap virtual device replaying a capture): the central's CDRs are the
/// capture's.
#[cfg(feature = "dpdk")]
#[test]
fn a_dpdk_remote_forwards_its_port() {
    const EAL: &str =
        "--no-pci --no-huge -m 256 --no-shconf --no-telemetry --lcores 0@(0-1) --log-level lib.eal:warning";
    let dir = fresh_dir("link-dpdkfwd");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "12", "--cps", "12", "--duration", "1", "--mix", "--seed", "81"]);
    let [port] = free_ports::<1>();
    let central = central_without_log(&dir, port);
    let rconf = remote_conf(
        &dir,
        "r",
        port,
        6,
        &format!(
            "packetbuffer_sender = yes\ndpdk = yes\ninterface = net_pcap0\ndpdk_vdev = net_pcap0:rx_pcap={}\n\
             dpdk_eal_args = {EAL}\ndpdk_nb_mbufs = 8\nexit_after_idle = 1",
            base.display()
        ),
    );
    let out = voxtap().args(["--config-file", rconf.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("link_left_bytes=0"), "{err}");
    let (cdrs, cerr) = central.stop();
    assert_eq!(sorted_by_callid(cdrs), sorted_by_callid(with_sensor(run_json(&base, &[]), 6)), "{err}\n{cerr}");
}
