//! The manager port beside a live source: a real TCP client (and `nc` when installed) gets answers while calls are
//! in progress; one command per connection; a peer from another address is refused by default.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use voxtap::capture::pcapfile::CaptureFile;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `voxtap --manager-client` with a configuration holding `key`.
fn sealed(dir: &Path, addr: &str, key: &str, cmd: &str) -> std::process::Output {
    let conf = dir.join("client.conf");
    std::fs::write(&conf, format!("manager_key = {key}\n")).unwrap();
    voxtap()
        .args(["--config-file", conf.to_str().unwrap(), "--manager-client", addr, "--command", cmd])
        .output()
        .unwrap()
}

#[test]
fn manager_answers_while_calls_run() {
    let dir = fresh_dir("manager");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "6", "--cps", "6", "--duration", "1", "--mix", "--seed", "91", "--start", &start_now()]);
    let calls = run_json(&base, &[]).len();
    let hep = hep_wrapped(&base);
    let [hep_port, mgr_port] = free_ports::<2>();
    let conf = dir.join("v.conf");
    std::fs::write(
        &conf,
        format!(
            "hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep_port}\nmanagerip = 0.0.0.0\nmanagerport = {mgr_port}\n\
             sipport = 5060,5070-5080\nspooldir = {}\nmanagersocket = {}\nmanager_key = {KEY}\n",
            dir.join("spool").display(),
            dir.join("manager.sock").display()
        ),
    )
    .unwrap();
    let run = LiveVoxtap::start(&conf, mgr_port);
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"totalcalls\r\n\r\n"), "0");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for f in CaptureFile::open(&hep).unwrap().frames() {
        s.send_to(&f.data[42..], ("127.0.0.1", hep_port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    // The calls stay open (a BYE'd call waits for its timers); each question is a connection of its own.
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"totalcalls\r\n\r\n"), calls.to_string());
    // A bare line end, as `echo getversion | nc` sends: answered once nothing more comes.
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"getversion\n"), env!("CARGO_PKG_VERSION"));
    // listcalls: the column row, then one row per call whose BYE was not answered, each a call of the capture,
    // with its caller and RTP counts so far.
    let offline = run_json(&base, &[]);
    let v: serde_json::Value =
        serde_json::from_str(&ask_manager(("127.0.0.1", mgr_port), b"listcalls\r\n\r\n")).unwrap();
    let rows = v.as_array().unwrap();
    let cols: Vec<&str> = rows[0].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let col = |n: &str| cols.iter().position(|c| *c == n).unwrap();
    let open: Vec<&serde_json::Value> = offline.iter().filter(|c| c["bye"].as_u64() != Some(3)).collect();
    assert_eq!(rows.len() - 1, open.len(), "{v}");
    for r in &rows[1..] {
        let c = offline.iter().find(|c| c["callid"] == r[col("callid")]).expect("a call of the capture");
        assert_eq!(r[col("caller")], c["caller"]);
        assert_eq!(r[col("lastSIPresponseNum")], c["lastSIPresponseNum"]);
        let received = c["rtp"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["sender"] == "caller")
            .map(|s| s["received"].as_u64().unwrap())
            .max();
        assert_eq!(r[col("src_received")].as_u64(), received, "{r}");
        // The current quality: MOS (×10) of a stream in progress, within the scale.
        if received.is_some() {
            for m in ["src_mosf1_avg", "src_mosf1_min", "src_mosAD_avg"] {
                let v = r[col(m)].as_i64().unwrap_or(-1);
                assert!((10..=45).contains(&v), "{m} = {v} in {r}");
            }
            assert!(r[col("src_loss")].as_f64().is_some(), "{r}");
        }
    }
    // Parameters: the totals object, a sort on a column and a limit.
    let q = br#"listcalls {"limit":2,"sort_field":"caller","sort_dir":"asc"}"#;
    let p: serde_json::Value =
        serde_json::from_str(&ask_manager(("127.0.0.1", mgr_port), &[&q[..], b"\r\n\r\n"].concat())).unwrap();
    let p = p.as_array().unwrap();
    assert_eq!(p[1][0]["total"].as_u64(), Some(open.len() as u64), "{p:?}");
    let mut callers: Vec<&str> = open.iter().map(|c| c["caller"].as_str().unwrap()).collect();
    callers.sort();
    let got: Vec<&str> = p[2..].iter().map(|r| r[col("caller")].as_str().unwrap()).collect();
    assert_eq!(got, callers[..2.min(callers.len())].to_vec());
    let z: serde_json::Value =
        serde_json::from_str(&ask_manager(("127.0.0.1", mgr_port), b"listcalls {\"limit\":0}\r\n\r\n")).unwrap();
    assert_eq!(z.as_array().unwrap().len(), 2, "{z}");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"sipports\r\n\r\n"), "5060,5070-5080,");
    // sniffer_stat: the calls in progress and the packets the rx core has published (once a second of packet
    // time, and when the link is quiet).
    let t0 = std::time::Instant::now();
    let packets = CaptureFile::open(&hep).unwrap().frames().count() as u64;
    let stat = loop {
        let v: serde_json::Value =
            serde_json::from_str(&ask_manager(("127.0.0.1", mgr_port), b"sniffer_stat\r\n\r\n")).unwrap();
        if v["packets"].as_u64() == Some(packets) || t0.elapsed() > Duration::from_secs(5) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stat["packets"].as_u64(), Some(packets), "{stat}");
    assert_eq!(stat["calls_active"].as_i64(), Some(calls as i64), "{stat}");
    assert_eq!(stat["sources"][0]["owner_queue_drops"].as_u64(), Some(0), "{stat}");
    assert_eq!(stat["version"], env!("CARGO_PKG_VERSION"));
    assert!(stat["spool_fs_total_bytes"].as_u64().unwrap() > 0, "{stat}");
    // The same over the Unix socket (managersocket, mode 0600), in plain form; and the thread table.
    use std::os::unix::fs::PermissionsExt;
    let sock = dir.join("manager.sock");
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    u.write_all(b"sniffer_stat plain\r\n\r\n").unwrap();
    let mut plain = String::new();
    u.read_to_string(&mut plain).unwrap();
    assert!(
        plain.contains(&format!("calls_active={calls}\n")) && plain.contains(&format!("packets={packets}\n")),
        "{plain}"
    );
    let threads = ask_manager(("127.0.0.1", mgr_port), b"sniffer_threads\r\n\r\n");
    assert!(threads.contains("owner-0") && threads.contains("slow"), "{threads}");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"no such thing\r\n\r\n"), "command not found\n");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"getfile ../../etc/passwd\r\n\r\n"), "access denied");
    if Command::new("nc").arg("-h").output().is_ok() {
        let nc = Command::new("sh")
            .arg("-c")
            .arg(format!("echo totalcalls | nc -q 2 127.0.0.1 {mgr_port} || echo totalcalls | nc 127.0.0.1 {mgr_port}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&nc.stdout).trim(), calls.to_string());
    }
    // From another address of this host (if it has one): refused.
    let other = Command::new("hostname").arg("-I").output().ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
            .map(String::from)
    });
    if let Some(ip) = &other {
        let reply = ask_manager((ip.as_str(), mgr_port), b"totalcalls\r\n\r\n");
        assert!(reply.starts_with("access denied"), "{reply}");
    }
    // The sealed mode (manager_key): from the loopback and from another address alike; a wrong key gets nothing.
    let here = format!("127.0.0.1:{mgr_port}");
    let out = sealed(&dir, &here, KEY, "totalcalls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), calls.to_string());
    if let Some(ip) = &other {
        let out = sealed(&dir, &format!("{ip}:{mgr_port}"), KEY, "getversion");
        assert_eq!(String::from_utf8_lossy(&out.stdout), env!("CARGO_PKG_VERSION"));
    }
    let out = sealed(&dir, &here, &"ff".repeat(32), "totalcalls");
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert_eq!(run.stop().0.len(), calls);
    assert!(!dir.join("manager.sock").exists(), "the socket is removed at exit");
}

#[test]
fn reload_changes_the_sip_ports_while_running() {
    let dir = fresh_dir("reload");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "5", "--cps", "5", "--duration", "1", "--seed", "93", "--start", &start_now()]);
    let calls = run_json(&base, &[]).len();
    let hep = hep_wrapped(&base);
    let [hep_port, mgr_port] = free_ports::<2>();
    let conf = dir.join("v.conf");
    let write = |sipport: &str| {
        std::fs::write(
            &conf,
            format!(
                "hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep_port}\nmanagerport = {mgr_port}\n\
                 sipport = {sipport}\nspooldir = {}\n",
                dir.join("spool").display()
            ),
        )
        .unwrap()
    };
    write("5099");
    let run = LiveVoxtap::start(&conf, mgr_port);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = || {
        for f in CaptureFile::open(&hep).unwrap().frames() {
            s.send_to(&f.data[42..], ("127.0.0.1", hep_port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // SIP on 5060 is not SIP to this configuration.
    send();
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"totalcalls\r\n\r\n"), "0");
    write("5060");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"reload\r\n\r\n"), "reload ok");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"sipports\r\n\r\n"), "5060,");
    std::thread::sleep(Duration::from_millis(300));
    send();
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"totalcalls\r\n\r\n"), calls.to_string());
    // A broken file: the running rules stay.
    std::fs::write(&conf, "sipport = not a port\n").unwrap();
    let r = ask_manager(("127.0.0.1", mgr_port), b"reload\r\n\r\n");
    assert!(r.starts_with("reload failed:"), "{r}");
    assert_eq!(ask_manager(("127.0.0.1", mgr_port), b"sipports\r\n\r\n"), "5060,");
    assert_eq!(run.stop().0.len(), calls);
}
