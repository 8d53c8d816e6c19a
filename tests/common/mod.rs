//! Helpers shared by the integration tests: finding the shared corpus, running the voxtap binary, and
//! comparing its CDRs with a tshark oracle (`F.oracle.json`).
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// SIP ports seen in the corpus (the oracle's decode-as ports included).
pub const CORPUS_SIPPORTS: &str = "5060,5061,5062,5070,5090,5260,6060,8080,60022";

/// The shared corpus folder, or `None` (with a message) where it is absent. Under CI its absence fails.
pub fn corpus_dir() -> Option<PathBuf> {
    // $VOXTAP_CORPUS, else `shared/corpus` beside the checkout (../shared/corpus) or beside one of its parents.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("VOXTAP_CORPUS").map(PathBuf::from).unwrap_or_else(|| {
        manifest
            .ancestors()
            .skip(1)
            .map(|a| a.join("shared/corpus"))
            .find(|d| d.join("MANIFEST.tsv").is_file())
            .unwrap_or_else(|| manifest.join("../shared/corpus"))
    });
    if dir.join("MANIFEST.tsv").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("corpus folder {} is missing, and CI=true requires it", dir.display());
    }
    eprintln!("SKIPPED: corpus folder {} is absent (set VOXTAP_CORPUS to run the conformance tests)", dir.display());
    None
}

/// An empty folder of this test process's own: `voxtap-TAG-PID` in the temporary directory, emptied first.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a test folder");
    d
}

/// Writes the configuration file `dir/name`: the lines of `body`, then `spooldir = dir/spool`.
pub fn write_conf(dir: &Path, name: &str, spool: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{body}spooldir = {}\n", dir.join(spool).display())).expect("write a configuration");
    p
}

/// `N` distinct ports free for TCP and UDP alike (a HEP listener takes both), on every address (a manager may
/// bind 0.0.0.0); all are held while choosing, so they differ. They are taken below the kernel's ephemeral range
/// (32768 and up): the flood tests open a thousand outgoing connections at once, whose source ports must not
/// take a port a test is about to listen on (private MariaDB servers use 23306–27200, so these start at 28000).
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    let mut held = Vec::new();
    while held.len() < N {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 28_000 + (seed.wrapping_add(k.wrapping_mul(7_919)) % 4_700) as u16;
        let tcp = std::net::TcpListener::bind(("0.0.0.0", port));
        let udp = std::net::UdpSocket::bind(("0.0.0.0", port));
        if let (Ok(tcp), Ok(udp)) = (tcp, udp) {
            held.push((port, tcp, udp));
        }
    }
    std::array::from_fn(|i| held[i].0)
}

/// One plaintext manager request (`request` as sent, framing included); the whole reply.
pub fn ask_manager(addr: impl std::net::ToSocketAddrs, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the manager port");
    s.write_all(request).expect("send the request");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("read timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the reply");
    out
}

/// Now, as voxgen's `--start` takes it: generated calls a live sensor will not find stale.
pub fn start_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    format!("{:.3}", now.as_secs_f64())
}

/// Runs the project's capture generator (perf/gen/voxgen.py) to write `out`.
pub fn voxgen(out: &Path, args: &[&str]) {
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/gen/voxgen.py");
    let st = Command::new("python3").arg(gen).arg("-o").arg(out).args(args).status().expect("run python3");
    assert!(st.success(), "generator failed for {args:?}");
}

/// The voxtap binary of this build, or `$VOXTAP_BIN` (to see a test fail on an older build).
pub fn voxtap() -> Command {
    Command::new(std::env::var_os("VOXTAP_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_voxtap").into()))
}

/// Runs `voxtap -r file --json` with extra arguments; returns the CDRs.
pub fn run_json(file: &Path, extra: &[&str]) -> Vec<Value> {
    let out = voxtap().arg("-r").arg(file).arg("--json").args(extra).output().expect("run voxtap");
    assert!(out.status.success(), "voxtap failed on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect()
}

pub fn load_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("parse json")
}

/// Known disagreements with the oracle, one per line: `file<TAB>key<TAB>field<TAB>reason`.
pub fn exceptions() -> HashSet<(String, String, String)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-exceptions.tsv");
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 4).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 0.1_f64.max(theirs.abs() * 0.03)
}

fn stream_key(saddr: &str, sport: u64, daddr: &str, dport: u64, ssrc: u64) -> String {
    format!("{saddr}:{sport}->{daddr}:{dport} ssrc=0x{ssrc:08x}")
}

/// Compares CDRs with an oracle; returns human-readable mismatches (empty = agreement).
pub fn compare(name: &str, oracle: &Value, cdrs: &[Value], exc: &HashSet<(String, String, String)>) -> Vec<String> {
    let mut bad = Vec::new();
    let skip = |key: &str, field: &str| {
        exc.contains(&(name.to_string(), key.to_string(), field.to_string()))
            || exc.contains(&(name.to_string(), key.to_string(), "*".to_string()))
            || exc.contains(&(name.to_string(), "*".to_string(), "*".to_string()))
    };
    let calls = oracle["calls"].as_array().cloned().unwrap_or_default();
    for c in &calls {
        let cid = c["call_id"].as_str().unwrap_or("");
        let Some(cdr) = cdrs.iter().find(|x| x["callid"] == cid) else {
            if !skip(cid, "cdr") {
                bad.push(format!("{name}: no CDR for call {cid}"));
            }
            continue;
        };
        let mut check = |field: &str, ours: String, theirs: String| {
            if ours != theirs && !skip(cid, field) {
                bad.push(format!("{name}: call {cid}: {field}: voxtap {ours:?} oracle {theirs:?}"));
            }
        };
        check("caller", cdr["caller"].as_str().unwrap_or("").into(), c["from_user"].as_str().unwrap_or("").into());
        check("called", cdr["called"].as_str().unwrap_or("").into(), c["to_user"].as_str().unwrap_or("").into());
        check(
            "sipcaller",
            format!("{}:{}", cdr["sipcallerip"].as_str().unwrap_or(""), cdr["sipcallerport"]),
            c["caller"].as_str().unwrap_or("").into(),
        );
        check(
            "sipcalled",
            format!("{}:{}", cdr["sipcalledip"].as_str().unwrap_or(""), cdr["sipcalledport"]),
            c["callee"].as_str().unwrap_or("").into(),
        );
        let ours_code = cdr["lastSIPresponseNum"].as_u64().unwrap_or(0);
        match c["final_code"].as_u64() {
            Some(code) => check("final_code", ours_code.to_string(), code.to_string()),
            None => check("final_code", (ours_code < 200).to_string(), "true".into()),
        }
        let bye = matches!(cdr["bye"].as_u64(), Some(2 | 3 | 103 | 106));
        check("bye", bye.to_string(), c["bye"].as_bool().unwrap_or(false).to_string());
    }
    if calls.is_empty() {
        return bad;
    }
    for s in oracle["rtp_streams_sdp"].as_array().cloned().unwrap_or_default() {
        let ssrc = u64::from_str_radix(s["ssrc"].as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0);
        let (sa, sp, da, dp) = (
            s["src"].as_str().unwrap_or(""),
            s["sport"].as_u64().unwrap_or(0),
            s["dst"].as_str().unwrap_or(""),
            s["dport"].as_u64().unwrap_or(0),
        );
        let key = stream_key(sa, sp, da, dp, ssrc);
        let found = cdrs.iter().flat_map(|c| c["rtp"].as_array().cloned().unwrap_or_default()).find(|r| {
            r["saddr"] == sa && r["sport"] == sp && r["daddr"] == da && r["dport"] == dp && r["ssrc"] == ssrc
        });
        let Some(r) = found else {
            if !skip(&key, "stream") {
                bad.push(format!("{name}: stream {key} not in any CDR"));
            }
            continue;
        };
        let mut check = |field: &str, ok: bool, ours: &Value, theirs: &Value| {
            if !ok && !skip(&key, field) {
                bad.push(format!("{name}: stream {key}: {field}: voxtap {ours} oracle {theirs}"));
            }
        };
        check("received", r["received"] == s["packets"], &r["received"], &s["packets"]);
        check("lost", r["lost"] == s["lost"], &r["lost"], &s["lost"]);
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        check("maxjitter", close(f(&r["maxjitter"]), f(&s["max_jitter_ms"])), &r["maxjitter"], &s["max_jitter_ms"]);
        check("avgjitter", close(f(&r["avgjitter"]), f(&s["mean_jitter_ms"])), &r["avgjitter"], &s["mean_jitter_ms"]);
    }
    bad
}

/// Every oracle file in the corpus (including `sipp/`) that lists at least one call.
pub fn oracles_with_calls(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("sipp")] {
        let Ok(rd) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            let Some(capture) = n.strip_suffix(".oracle.json") else {
                continue;
            };
            let o = load_json(&p);
            if o["calls"].as_array().is_some_and(|c| !c.is_empty()) {
                let rel = if sub == dir { capture.to_string() } else { format!("sipp/{capture}") };
                out.push((rel, sub.join(capture), p));
            }
        }
    }
    out
}

/// CDRs in Call-ID order (a live capture writes them in the order calls end).
pub fn sorted_by_callid(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|c| c["callid"].as_str().unwrap_or_default().to_string());
    v
}

/// `voxtap --config-file CONF -r FILE --json` started, its CDRs discarded and its standard error kept (for
/// `finished`): a remote sending a file, or a run whose exit and messages a test checks.
pub fn spawn_reading(conf: &Path, file: &Path) -> std::process::Child {
    voxtap()
        .arg("--config-file")
        .arg(conf)
        .arg("-r")
        .arg(file)
        .arg("--json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start voxtap")
}

/// A live voxtap (a listener source) run with `--json`, its CDR lines collected as they come.
pub struct LiveVoxtap {
    child: std::process::Child,
    /// Standard output's lines, each with when it was read (tests of live timing look at when a CDR came out).
    lines: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Standard error, read as it comes (a full pipe would stall voxtap's logging).
    err: Option<std::thread::JoinHandle<String>>,
    stopped: bool,
}

/// A test that fails before `stop` must not leave its voxtap running.
impl Drop for LiveVoxtap {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl LiveVoxtap {
    /// Starts `voxtap --config-file conf --json` and waits until `port` (on the loopback) accepts connections.
    pub fn start(conf: &Path, port: u16) -> LiveVoxtap {
        use std::io::BufRead;
        let mut child = voxtap()
            .args(["--config-file", conf.to_str().unwrap(), "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start voxtap");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push((std::time::Instant::now(), l));
            }
        });
        let mut e = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        });
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "voxtap did not listen on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        LiveVoxtap { child, lines, reader: Some(reader), err: Some(err), stopped: false }
    }

    /// How many lines (CDRs) voxtap has written so far.
    pub fn lines_so_far(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the CDRs and the summary line's standard error. voxtap must exit with status 0.
    pub fn stop(self) -> (Vec<Value>, String) {
        let (cdrs, err) = self.stop_timed();
        (cdrs.into_iter().map(|(_, c)| c).collect(), err)
    }

    /// As `stop`, with when each CDR came out.
    pub fn stop_timed(mut self) -> (Vec<(std::time::Instant, Value)>, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        self.stopped = true;
        let err = self.err.take().unwrap().join().unwrap();
        assert!(status.success(), "{err}");
        self.reader.take().unwrap().join().unwrap();
        let cdrs =
            self.lines.lock().unwrap().iter().map(|(t, l)| (*t, serde_json::from_str(l).expect("JSON line"))).collect();
        (cdrs, err)
    }
}

/// `base` re-encapsulated as HEP v3 (perf/gen/wrap.py), written beside it as `hep-<name>`.
pub fn hep_wrapped(base: &Path) -> PathBuf {
    let hep = base.with_file_name(format!("hep-{}", base.file_name().unwrap().to_string_lossy()));
    let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/gen/wrap.py");
    assert!(Command::new("python3").arg(w).arg(base).arg(&hep).args(["--wrap", "hep3"]).status().unwrap().success());
    hep
}

/// Sends a wrap.py HEP capture's messages to a HEP listener over one TCP connection (no datagram is lost to
/// a busy machine, as UDP could be).
pub fn send_hep_tcp(hep: &Path, port: u16) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    for f in voxtap::capture::pcapfile::CaptureFile::open(hep).unwrap().frames() {
        s.write_all(&f.data[42..]).unwrap();
    }
    s.flush().unwrap();
}

/// A network namespace made for a test, deleted when dropped.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs a shell command; it must succeed.
pub fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "failed: {cmd}");
}

/// Waits for a child voxtap (a remote sending a file) to exit with success within `limit`; its standard error.
pub fn finished(mut c: std::process::Child, limit: std::time::Duration) -> String {
    use std::io::Read;
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(st.success(), "remote failed: {err}");
            return err;
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("remote did not finish in {limit:?}: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One IPFIX message as an Oracle SBC sends it: header (sequence `seq`), then one set.
pub fn ipfix_message(set: u16, body: &[u8], seq: u32) -> Vec<u8> {
    let mut m = vec![0, 10, 0, 0, 0x65, 0x4a, 0x10, 0];
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&7u32.to_be_bytes());
    m.extend_from_slice(&set.to_be_bytes());
    m.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    m.extend_from_slice(body);
    let n = m.len() as u16;
    m[2..4].copy_from_slice(&n.to_be_bytes());
    m
}

/// One UDP datagram of a hand-made capture: time in microseconds, source and destination, payload.
pub struct Datagram {
    pub us: u64,
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub payload: Vec<u8>,
}

/// Writes `dgrams` as a classic pcap of Ethernet/IPv4/UDP frames (IP checksums right, UDP checksums 0: none).
pub fn write_udp_pcap(path: &Path, dgrams: &[Datagram]) {
    let mut out = Vec::new();
    for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    for d in dgrams {
        let mut f = Vec::with_capacity(42 + d.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 8 + d.payload.len()) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&d.src.0);
        ip[16..20].copy_from_slice(&d.dst.0);
        let sum: u32 = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&d.src.1.to_be_bytes());
        f.extend_from_slice(&d.dst.1.to_be_bytes());
        f.extend_from_slice(&(8 + d.payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&d.payload);
        for x in [(d.us / 1_000_000) as u32, (d.us % 1_000_000) as u32, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&f);
    }
    std::fs::write(path, out).expect("write a capture");
}

/// The SIP messages of a short answered call without media, starting at `us` (INVITE, 200, ACK, BYE carrying
/// `bye_headers` (whole lines with CRLF), 200): caller 10.0.0.1:5060, callee 10.0.0.2:5060.
pub fn sip_call(callid: &str, us: u64, bye_headers: &str) -> Vec<Datagram> {
    let a = ([10, 0, 0, 1], 5060);
    let b = ([10, 0, 0, 2], 5060);
    let common = |cseq: &str, to_tag: bool| {
        format!(
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{}\r\nFrom: <sip:alice@10.0.0.1>;tag=a1\r\n\
             To: <sip:bob@10.0.0.2>{}\r\nCall-ID: {callid}\r\nCSeq: {cseq}\r\n",
            cseq.replace(' ', "-"),
            if to_tag { ";tag=b1" } else { "" }
        )
    };
    let msg = |start: &str, cseq: &str, to_tag: bool, extra: &str| {
        format!("{start}\r\n{}Contact: <sip:x@10.0.0.1>\r\n{extra}Content-Length: 0\r\n\r\n", common(cseq, to_tag))
            .into_bytes()
    };
    let d = |t: u64, src, dst, payload| Datagram { us: us + t, src, dst, payload };
    vec![
        d(0, a, b, msg("INVITE sip:bob@10.0.0.2 SIP/2.0", "1 INVITE", false, "")),
        d(100_000, b, a, msg("SIP/2.0 200 OK", "1 INVITE", true, "")),
        d(110_000, a, b, msg("ACK sip:bob@10.0.0.2 SIP/2.0", "1 ACK", true, "")),
        d(2_000_000, a, b, msg("BYE sip:bob@10.0.0.2 SIP/2.0", "2 BYE", true, bye_headers)),
        d(2_050_000, b, a, msg("SIP/2.0 200 OK", "2 BYE", true, "")),
    ]
}
