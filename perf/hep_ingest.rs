//! HEP ingest rate of a voxtap binary: its HEP listener is fed a HEP capture's messages as fast as one TCP
//! connection (or one UDP socket) carries them, and the rate is how long voxtap takes until its manager's
//! `sniffer_stat` counts every frame; CPU is the voxtap process's own (user + system, from /proc).
//!
//!   mkdir -p target/bench && python3 perf/gen/voxgen.py -o target/bench/hep-base.pcap --calls 2000 --cps 1000 --duration 2 --seed 5
//!   python3 perf/gen/wrap.py target/bench/hep-base.pcap target/bench/hep.pcap --wrap hep3
//!   cargo run --release --example hep_ingest -- target/release/voxtap target/bench/hep.pcap [tcp|tcp-paced|udp] [ROUNDS]
//!
//! Any voxtap binary that has the HEP listener and the manager port works, so two builds can be compared on the
//! same machine and input. `udp` and `tcp-paced` pause 200 µs after every 64 messages (so that the kernel's
//! buffers, and a listener that cannot take a burst, are not what is measured); `tcp` writes as fast as it can.
//! The count is final once it has not moved for two seconds (a datagram the kernel dropped never comes).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voxtap::capture::pcapfile::CaptureFile;

fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (n(11) + n(12)) / tick
}

/// Context switches of every thread of a process (voluntary + involuntary): how often it was woken.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn packets(mgr: u16) -> u64 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", mgr)) else { return 0 };
    let _ = s.write_all(b"sniffer_stat\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["packets"].as_u64().or_else(|| v["packets"].as_str()?.parse().ok()))
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).map(String::as_str).unwrap_or("target/release/voxtap");
    let file = args.get(2).map(String::as_str).unwrap_or("target/bench/hep.pcap");
    let mode = args.get(3).map(String::as_str).unwrap_or("tcp");
    let udp = mode == "udp";
    let paced = mode != "tcp";
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    let msgs: Vec<Vec<u8>> =
        CaptureFile::open(std::path::Path::new(file))?.frames().map(|f| f.data[42..].to_vec()).collect();
    let (hep, mgr) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("voxtap-hep-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("v.conf");
    std::fs::write(
        &conf,
        format!(
            "hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {hep}\nmanagerport = {mgr}\ncdr_log = no\n\
             sipport = 5060,5070-5080\nspooldir = {}\n",
            dir.join("spool").display()
        ),
    )?;
    let mut child = Command::new(bin)
        .args(["--config-file", conf.to_str().unwrap_or_default(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", mgr)).is_err() {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "voxtap did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = (msgs.len() * rounds) as u64;
    let (cpu0, sw0, t0) = (cpu_s(pid), switches(pid), Instant::now());
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        for _ in 0..rounds {
            for (i, m) in msgs.iter().enumerate() {
                s.send_to(m, ("127.0.0.1", hep))?;
                // Paced so that the kernel's socket buffer, not voxtap, is never the bottleneck being measured.
                if i % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    } else {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", hep))?;
        for _ in 0..rounds {
            for (i, m) in msgs.iter().enumerate() {
                s.write_all(m)?;
                if paced && i % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        s.flush()?;
    }
    let sent = t0.elapsed().as_secs_f64();
    let (mut got, mut moved) = (0, Instant::now());
    let mut done_at = t0.elapsed().as_secs_f64();
    while got < total && moved.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        let now = packets(mgr);
        if now != got {
            got = now;
            moved = Instant::now();
            done_at = t0.elapsed().as_secs_f64();
        }
    }
    let (wall, cpu, sw) = (done_at, cpu_s(pid) - cpu0, switches(pid) - sw0);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "mode={mode} messages={total} counted={got} sent_s={sent:.3} wall_s={wall:.3} rate_msgs_s={:.0} voxtap_cpu_s={cpu:.2} cpu_us_per_msg={:.2} context_switches={sw}",
        got as f64 / wall,
        cpu * 1e6 / got.max(1) as f64
    );
    Ok(())
}
