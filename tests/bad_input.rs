//! Bad input: truncated and corrupted captures, random bytes as packets, garbage files, broken config lines.
//! Every case ends with a clear message or a counter, never a panic.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-bad-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Tiny deterministic PRNG (xorshift) so failures are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pcap_header(link: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, link] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn record(v: &mut Vec<u8>, t: u32, data: &[u8]) {
    for x in [t, 0, data.len() as u32, data.len() as u32] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], file: Option<&Path>) -> Out {
    let mut c = voxtap();
    if let Some(f) = file {
        c.arg("-r").arg(f);
    }
    let o = c.args(args).output().expect("run voxtap");
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    };
    assert!(!out.stderr.contains("panicked"), "voxtap panicked: {}", out.stderr);
    out
}

fn sample_capture(dir: &Path) -> PathBuf {
    // Shared by tests running in parallel: made once, and renamed into place only when complete.
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let f = dir.join("sample.pcap");
    if !f.exists() {
        let tmp = dir.join("sample.pcap.part");
        let args = ["--calls", "6", "--cps", "3", "--duration", "2", "--mix", "--dtmf", "--rtcp", "--seed", "5"];
        voxgen(&tmp, &[&args[..], &["--sip-transport", "tcp", "--tcp-segment", "200"]].concat());
        std::fs::rename(&tmp, &f).unwrap();
    }
    f
}

#[test]
fn truncated_capture_processes_what_is_there() {
    let dir = tmpdir();
    let full = std::fs::read(sample_capture(&dir)).unwrap();
    let whole = run(&["--json"], Some(&sample_capture(&dir)));
    let n_whole = whole.stdout.lines().count();
    assert!(n_whole >= 6);
    for cut in [full.len() * 2 / 3, full.len() - 7, 30] {
        let f = dir.join(format!("cut{cut}.pcap"));
        std::fs::write(&f, &full[..cut]).unwrap();
        let o = run(&["--json"], Some(&f));
        assert_eq!(o.code, 0, "truncated file must exit 0: {}", o.stderr);
        assert!(o.stderr.contains("ends early"), "no warning: {}", o.stderr);
        assert!(o.stdout.lines().count() <= n_whole);
    }
}

#[test]
fn corrupted_captures_never_panic() {
    let dir = tmpdir();
    let full = std::fs::read(sample_capture(&dir)).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..25 {
        let mut b = full.clone();
        let flips = 1 + rng.below(200) as usize;
        for _ in 0..flips {
            let i = 24 + rng.below((b.len() - 24) as u64) as usize;
            b[i] = rng.next() as u8;
        }
        let f = dir.join(format!("corrupt{round}.pcap"));
        std::fs::write(&f, &b).unwrap();
        let o = run(&["--json", "--workers", "2"], Some(&f));
        assert_eq!(o.code, 0, "round {round}: {}", o.stderr);
        for line in o.stdout.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("valid JSON even from corrupt input");
        }
    }
}

#[test]
fn random_bytes_as_packets() {
    let dir = tmpdir();
    let mut rng = Rng(42);
    for link in [1u32, 101, 0, 113, 276, 12345] {
        let mut v = pcap_header(link);
        for i in 0..3000u32 {
            let len = rng.below(400) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Every third packet gets a plausible Ethernet/IPv4/UDP prefix to port 5060 so SIP, SDP and RTP
            // parsers see hostile payloads, not just broken headers.
            if i % 3 == 0 && link == 1 && len > 60 {
                p[12] = 0x08;
                p[13] = 0x00;
                p[14] = 0x45;
                p[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
                p[20] = 0;
                p[21] = 0;
                p[23] = 17;
                p[36..38].copy_from_slice(&5060u16.to_be_bytes());
                let body = b"INVITE sip:x SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nm=audio ";
                let n = body.len().min(len - 42);
                p[42..42 + n].copy_from_slice(&body[..n]);
            }
            record(&mut v, i, &p);
        }
        let f = dir.join(format!("random{link}.pcap"));
        std::fs::write(&f, &v).unwrap();
        let o = run(&["--json"], Some(&f));
        assert_eq!(o.code, 0, "link {link}: {}", o.stderr);
        assert!(o.stderr.contains("decode_errors="), "{}", o.stderr);
    }
}

#[test]
fn garbage_and_empty_files() {
    let dir = tmpdir();
    let g = dir.join("garbage.bin");
    std::fs::write(&g, b"this is not a capture file at all").unwrap();
    let o = run(&["--json"], Some(&g));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not a pcap or pcapng file"), "{}", o.stderr);

    let e = dir.join("empty.pcap");
    std::fs::write(&e, pcap_header(1)).unwrap();
    let o = run(&["--json"], Some(&e));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.is_empty());

    let o = run(&["--json"], Some(&dir.join("does-not-exist.pcap")));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("does-not-exist.pcap"), "{}", o.stderr);
}

#[test]
fn broken_config_exits_non_zero_naming_file_line_key() {
    let dir = tmpdir();
    let cap = sample_capture(&dir);
    let conf = dir.join("broken.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    writeln!(f, "# comment\nsipport = 5060\nrtptimeout = soon\n").unwrap();
    let o = run(&["--config-file", conf.to_str().unwrap(), "--json"], Some(&cap));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("broken.conf:3") && o.stderr.contains("rtptimeout"), "{}", o.stderr);

    std::fs::write(&conf, "sipport = 5060-5070;abc\n").unwrap();
    let o = run(&["--config-file", conf.to_str().unwrap(), "--json"], Some(&cap));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("broken.conf:1") && o.stderr.contains("sipport"), "{}", o.stderr);

    // Unknown keys and lines without '=' only warn.
    std::fs::write(&conf, "sipport = 5060\nno_such_key = 1\njust some words\nsavesip = no\n").unwrap();
    let o = run(&["--config-file", conf.to_str().unwrap(), "--json"], Some(&cap));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("no_such_key"), "{}", o.stderr);
    assert!(o.stdout.lines().count() >= 6);
}

#[test]
fn corpus_files_truncated_at_every_tenth() {
    let Some(dir) = corpus_dir() else { return };
    let out = tmpdir();
    for (name, capture, _) in oracles_with_calls(&dir).into_iter().take(12) {
        let full = std::fs::read(&capture).unwrap();
        for k in 1..10 {
            let f = out.join(format!("{}-{k}", name.replace('/', "_")));
            std::fs::write(&f, &full[..full.len() * k / 10]).unwrap();
            let o = run(&["--json", "--sipports", CORPUS_SIPPORTS], Some(&f));
            assert!(o.code == 0 || o.stderr.contains("too short"), "{name} cut at {k}/10: {}", o.stderr);
        }
    }
}
