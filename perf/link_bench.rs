//! Packets per second through a `packetbuffer_sender = yes` link on the loopback, with everything the link does:
//! batching, zstd, the remote's on-disk queue, SPAKE2-keyed ChaCha20-Poly1305 records, the central's
//! decryption, inflation and frame check, and the hand-over to its merge. The central's analysis is not part
//! of it (a thread counts the frames instead); `perf/bench.sh` and the sections above measure that.
//!
//!   mkdir -p target/bench && python3 perf/gen/voxgen.py -o target/bench/g711-12k.pcap --calls 12000 --cps 6000 --duration 3 --seed 5
//!   cargo run --release --example link_bench -- target/bench/g711-12k.pcap [ROUNDS]
//!
//! The capture's frames are sent ROUNDS times (default 3). The timer runs from the first frame handed to the
//! forwarder until the central has handed on the last one; CPU time is the whole process's (remote and central
//! sides together: on separate hosts each pays its own share).

use std::time::{Duration, Instant};

use voxtap::capture::pcapfile::CaptureFile;
use voxtap::link::central::{Central, CentralConfig, PacketEvent};
use voxtap::link::forward::Forwarder;
use voxtap::link::remote::{LinkSink, Mode, RemoteConfig};

fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).map(String::as_str).unwrap_or("target/bench/g711-12k.pcap");
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let cap = CaptureFile::open(std::path::Path::new(file))?;
    let (cdr_tx, _cdr_rx) = crossbeam_channel::bounded(4);
    let (pkt_tx, pkt_rx) = crossbeam_channel::bounded::<PacketEvent>(256);
    // Both ends' links run on one slow-side runtime, as in a process that is remote and central at once.
    let slow = voxtap::runtime::slow::SlowSide::start()?;
    let central = Central::start(
        CentralConfig {
            bind: "127.0.0.1:0".parse()?,
            password: "bench passphrase".into(),
            max_time_diff_s: 2,
            own_id: None,
            db: None,
            allow_remote_gui: false,
            net: Default::default(),
        },
        cdr_tx,
        pkt_tx,
        &slow.handle(),
    )?;
    let counter = std::thread::spawn(move || {
        let (mut frames, mut bytes) = (0u64, 0u64);
        for ev in pkt_rx.iter() {
            if let PacketEvent::Batch { frames: f, .. } = ev {
                frames += f.len() as u64;
                bytes += f.iter().map(|x| (x.end - x.start) as u64).sum::<u64>();
            }
        }
        (frames, bytes)
    });
    let qdir = std::path::PathBuf::from("target/bench/linkqueue");
    let _ = std::fs::remove_dir_all(&qdir);
    let sink = LinkSink::start(
        RemoteConfig {
            destinations: vec!["127.0.0.1".into()],
            port: central.local_addr().port(),
            password: "bench passphrase".into(),
            sensor_id: Some(2),
            sensor_name: "bench".into(),
            mode: Mode::Packets,
            queue_dir: qdir.clone(),
            max_bytes: 64 << 30,
            // Waits for the central as long as it takes, as a capture file did before link_send_timeout.
            patience: None,
            interrupt: None,
            bounded: false,
        },
        None,
        &slow.handle(),
    )?;
    let mut fwd = Forwarder::new(sink, true);
    let (cpu0, t0) = (cpu_s(), Instant::now());
    for _ in 0..rounds {
        for f in cap.frames() {
            fwd.frame(f.ts, f.link_type, f.data);
        }
    }
    let (fs, ls) = fwd.finish(None);
    let stats = central.stop();
    let (frames, bytes) = counter.join().map_err(|_| anyhow::anyhow!("counter panicked"))?;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - cpu0);
    anyhow::ensure!(frames == fs.frames, "central got {frames} frames of {}", fs.frames);
    println!(
        "frames={frames} bytes={bytes} batches={} compressed_bytes={} (ratio {:.2}) wall_s={wall:.3} cpu_s={cpu:.3}",
        fs.batches,
        fs.compressed_bytes,
        bytes as f64 / fs.compressed_bytes.max(1) as f64,
    );
    println!(
        "rate_pps={:.0} rate_mbit_s={:.0} cpu_s_per_mpps={:.3} link_batches_confirmed={} central_packet_batches={}",
        frames as f64 / wall,
        bytes as f64 * 8.0 / wall / 1e6,
        cpu / (frames as f64 / 1e6),
        ls.batches_confirmed,
        stats.packet_batches
    );
    let _ = std::fs::remove_dir_all(&qdir);
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
