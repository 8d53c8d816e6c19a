//! Live HEP ingest: voxtap listens (`hep = yes`) on loopback, a capture's SIP and RTP arrive as HEP v3 over UDP,
//! HEP v2 over UDP and HEP v3 over one TCP stream (cut at odd places), voxtap is stopped with SIGTERM, and the
//! CDRs equal those of reading the capture itself.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use voxtap::capture::pcapfile::CaptureFile;

/// The HEP messages of a wrap.py output (Ethernet / IPv4 / UDP / HEP).
fn hep_messages(p: &Path) -> Vec<Vec<u8>> {
    CaptureFile::open(p).unwrap().frames().map(|f| f.data[42..].to_vec()).collect()
}

/// Runs voxtap as a HEP listener, hands it to `send`, stops it; returns the CDRs and the summary.
fn live(dir: &Path, name: &str, send: impl FnOnce(u16)) -> (Vec<Value>, String) {
    let [port] = free_ports::<1>();
    let conf = write_conf(
        dir,
        &format!("{name}.conf"),
        "spool",
        &format!("hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {port}\n"),
    );
    let run = LiveVoxtap::start(&conf, port);
    send(port);
    std::thread::sleep(Duration::from_millis(800));
    run.stop()
}

fn send_udp(port: u16, msgs: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, m) in msgs.iter().enumerate() {
        s.send_to(m, ("127.0.0.1", port)).unwrap();
        // Paced, so that a small default socket buffer never overflows.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn hep_over_udp_and_tcp_gives_the_captures_cdrs() {
    let dir = fresh_dir("heplive");
    let base = dir.join("base.pcap");
    // Calls that start now: the listener's clock is the host's.
    voxgen(
        &base,
        &["--calls", "8", "--cps", "8", "--duration", "1", "--mix", "--rtcp", "--seed", "71", "--start", &start_now()],
    );
    let expected = sorted_by_callid(run_json(&base, &[]));
    assert!(expected.len() >= 6);
    let wrap = |layer: &str| {
        let out = dir.join(format!("{layer}.pcap"));
        let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/gen/wrap.py");
        let st = Command::new("python3").arg(w).arg(&base).arg(&out).args(["--wrap", layer]).status().unwrap();
        assert!(st.success());
        hep_messages(&out)
    };
    let hep3 = wrap("hep3");
    let hep2 = wrap("hep2");

    let (cdrs, summary) = live(&dir, "udp3", |port| send_udp(port, &hep3));
    assert_eq!(sorted_by_callid(cdrs), expected, "HEP v3 over UDP: {summary}");
    assert!(summary.contains(&format!("hep_udp_packets={}", hep3.len())), "{summary}");

    let (cdrs, summary) = live(&dir, "udp2", |port| send_udp(port, &hep2));
    assert_eq!(sorted_by_callid(cdrs), expected, "HEP v2 over UDP: {summary}");

    let (cdrs, summary) = live(&dir, "tcp3", |port| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let stream: Vec<u8> = hep3.concat();
        // Writes of 1 to 1500 bytes: messages split across reads, several in one read.
        let mut at = 0;
        let mut k = 7usize;
        while at < stream.len() {
            k = (k * 1103515245 + 12345) % 2147483648;
            let n = (1 + k % 1500).min(stream.len() - at);
            s.write_all(&stream[at..at + n]).unwrap();
            at += n;
        }
        s.flush().unwrap();
    });
    assert_eq!(sorted_by_callid(cdrs), expected, "HEP v3 over TCP: {summary}");
    assert!(summary.contains(&format!("hep_tcp_messages={}", hep3.len())), "{summary}");
    assert!(summary.contains("hep_tcp_errors=0"), "{summary}");

    // A TCP peer that sends something other than HEP is dropped and counted; the listener goes on.
    let (cdrs, summary) = live(&dir, "junk", |port| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        send_udp(port, &hep3);
    });
    assert_eq!(sorted_by_callid(cdrs), expected, "after a junk TCP peer: {summary}");
    assert!(summary.contains("hep_tcp_errors=1"), "{summary}");
}
