//! What `-r` reads, the way users have their captures: pcap and pcapng, plain, gzip and zstd, from a file or
//! from standard input; the errors for what it cannot read; the progress bar on a terminal (and nowhere else).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use common::*;

/// Calls spread over about ten seconds of capture, so that a file cut in the middle still holds whole calls.
const SAMPLE: &[&str] = &["--calls", "16", "--cps", "2", "--duration", "2", "--mix", "--dtmf", "--rtcp", "--seed", "8"];

/// The sample capture in every form, made once for all the tests of this process.
struct Forms {
    dir: PathBuf,
    pcap: PathBuf,
    pcapng: PathBuf,
    pcap_gz: PathBuf,
    pcapng_gz: PathBuf,
    pcap_zst: PathBuf,
    /// The plain run's CDRs, which every other form must give.
    cdrs: Vec<Value>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn forms() -> &'static Forms {
    static FORMS: OnceLock<Forms> = OnceLock::new();
    FORMS.get_or_init(|| {
        let dir = fresh_dir("inputs");
        let pcap = dir.join("sample.pcap");
        voxgen(&pcap, SAMPLE);
        // The very same packets through Wireshark's writer where it is installed (its pcapng has options and
        // comments voxgen's has not); voxgen's own pcapng of the same calls otherwise.
        let pcapng = dir.join("sample.pcapng");
        let converted = have("editcap")
            && Command::new("editcap")
                .args(["-F", "pcapng"])
                .arg(&pcap)
                .arg(&pcapng)
                .status()
                .is_ok_and(|s| s.success());
        if !converted {
            voxgen(&pcapng, &[SAMPLE, &["--pcapng"]].concat());
        }
        let bytes = std::fs::read(&pcap).unwrap();
        let pcap_gz = dir.join("sample.pcap.gz");
        std::fs::write(&pcap_gz, gzip(&bytes)).unwrap();
        let pcapng_gz = dir.join("sample.pcapng.gz");
        std::fs::write(&pcapng_gz, gzip(&std::fs::read(&pcapng).unwrap())).unwrap();
        let pcap_zst = dir.join("sample.pcap.zst");
        std::fs::write(&pcap_zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
        let cdrs = run_json(&pcap, &[]);
        assert!(cdrs.len() >= 12, "the sample has {} CDRs", cdrs.len());
        Forms { dir, pcap, pcapng, pcap_gz, pcapng_gz, pcap_zst, cdrs }
    })
}

/// `voxtap -r - --json` with `input` written to its standard input through a pipe.
fn run_stdin(input: Vec<u8>, extra: &[&str]) -> Output {
    let mut child = voxtap()
        .args(["-r", "-", "--json"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run voxtap");
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread: voxtap writes its output while it reads, and either pipe may fill.
    let writer = std::thread::spawn(move || {
        // voxtap stops reading at an error: a broken pipe here is its business.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for voxtap");
    writer.join().unwrap();
    out
}

fn cdrs_of(out: &Output) -> Vec<Value> {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "voxtap failed: {err}");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// Standard error of a run that must fail: non-zero, no panic.
fn failure(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "voxtap succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn fails_on(path: &Path) -> String {
    failure(voxtap().arg("-r").arg(path).arg("--json").output().unwrap())
}

#[test]
fn every_form_of_the_capture_gives_the_same_cdrs() {
    let f = forms();
    for file in [&f.pcapng, &f.pcap_gz, &f.pcapng_gz, &f.pcap_zst] {
        assert_eq!(run_json(file, &[]), f.cdrs, "{}", file.display());
    }
    // The same with four workers: the stream feeds them as the mapped file does.
    assert_eq!(run_json(&f.pcap_zst, &["--workers", "4"]), f.cdrs);
    // Magic bytes, not names: a gzip file called .pcap is read as gzip.
    let misnamed = f.dir.join("gzip-inside.pcap");
    std::fs::copy(&f.pcap_gz, &misnamed).unwrap();
    assert_eq!(run_json(&misnamed, &[]), f.cdrs);
}

#[test]
fn standard_input_takes_every_form() {
    let f = forms();
    for file in [&f.pcap, &f.pcapng, &f.pcap_gz, &f.pcap_zst] {
        let out = run_stdin(std::fs::read(file).unwrap(), &[]);
        assert_eq!(cdrs_of(&out), f.cdrs, "{} through a pipe", file.display());
    }
    // `voxtap -r - < file`: standard input is the file itself.
    for file in [&f.pcap, &f.pcapng_gz] {
        let out = voxtap().args(["-r", "-", "--json"]).stdin(std::fs::File::open(file).unwrap()).output().unwrap();
        assert_eq!(cdrs_of(&out), f.cdrs, "{} redirected", file.display());
    }
}

#[test]
fn what_cannot_be_read_is_named_once_and_plainly() {
    let dir = fresh_dir("inputs-errors");

    let err = fails_on(&dir);
    assert!(err.contains(&format!("{} is a directory, not a capture file", dir.display())), "{err}");

    let missing = dir.join("no-such-capture.pcap");
    let err = fails_on(&missing);
    assert_eq!(err.matches("no-such-capture.pcap").count(), 1, "{err}");
    assert!(err.to_lowercase().contains("no such file") && !err.contains("os error"), "{err}");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "call notes: the customer says it rings twice\n").unwrap();
    let err = fails_on(&text);
    assert!(err.contains("not a pcap or pcapng file") && err.contains("begins with text"), "{err}");

    let text_gz = dir.join("notes.txt.gz");
    std::fs::write(&text_gz, gzip(b"call notes: the customer says it rings twice\n")).unwrap();
    let err = fails_on(&text_gz);
    assert!(err.contains("gzip-compressed, but what it holds is not a pcap or pcapng file"), "{err}");
    assert!(err.contains("begins with text"), "{err}");

    let xz = dir.join("old.pcap.xz");
    std::fs::write(&xz, b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46").unwrap();
    let err = fails_on(&xz);
    assert!(err.contains("xz-compressed, which voxtap does not read"), "{err}");

    let err = failure(run_stdin(b"not packets at all\n".to_vec(), &[]));
    assert!(err.contains("standard input: not a pcap or pcapng file"), "{err}");
    let err = failure(run_stdin(zstd::encode_all(&b"not packets at all\n"[..], 3).unwrap(), &[]));
    assert!(err.contains("standard input: zstd-compressed, but what it holds is not a pcap"), "{err}");
}

#[test]
fn a_cut_gzip_file_gives_the_calls_before_the_cut_with_a_warning() {
    let f = forms();
    let whole = std::fs::read(&f.pcap_gz).unwrap();
    let cut = f.dir.join("cut.pcap.gz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let check = |out: Output, how: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("ends early") && err.contains("gzip stream breaks off"), "{how}: {err}");
        let cdrs = cdrs_of(&out);
        assert!(!cdrs.is_empty() && cdrs.len() <= f.cdrs.len(), "{how}: {} CDRs", cdrs.len());
        // The calls that ended in the first quarter of the capture ended long before the cut: their CDRs are
        // those of the whole file.
        let early = f.cdrs.len() / 4;
        assert!(early > 0);
        for c in &f.cdrs[..early] {
            assert!(cdrs.contains(c), "{how}: the CDR of {} differs or is missing", c["callid"]);
        }
    };
    check(voxtap().arg("-r").arg(&cut).arg("--json").output().unwrap(), "file");
    check(run_stdin(whole[..whole.len() / 2].to_vec(), &[]), "pipe");
}

/// Without `id_sensor`: a central may store a remote's calls under the remote's id.
fn without_sensor(v: Vec<Value>) -> Vec<Value> {
    let mut v: Vec<Value> = v
        .into_iter()
        .map(|mut c| {
            if let Some(o) = c.as_object_mut() {
                o.remove("id_sensor");
            }
            c
        })
        .collect();
    v.sort_by_key(|c| c["callid"].as_str().unwrap_or_default().to_string());
    v
}

#[test]
fn a_packet_sender_and_a_mirror_sender_read_the_same_forms() {
    let f = forms();
    let dir = fresh_dir("inputs-senders");
    // A remote forwarding packets to a central, fed a gzip capture on standard input.
    let [port] = free_ports::<1>();
    let conf = dir.join("central.conf");
    std::fs::write(
        &conf,
        format!(
            "server_bind = 127.0.0.1\nserver_bind_port = {port}\nserver_password = pw\nmanagerport = 0\n\
             spooldir = {}\ncdr_log = no\n",
            dir.join("c").display()
        ),
    )
    .unwrap();
    let central = LiveVoxtap::start(&conf, port);
    let remote = dir.join("remote.conf");
    std::fs::write(
        &remote,
        format!(
            "server_destination = 127.0.0.1\nserver_destination_port = {port}\nserver_password = pw\nid_sensor = 3\n\
             packetbuffer_sender = yes\nmanagerport = 0\nspooldir = {}\n",
            dir.join("r").display()
        ),
    )
    .unwrap();
    let mut sender = voxtap()
        .args(["--config-file", remote.to_str().unwrap(), "-r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sender.stdin.take().unwrap().write_all(&std::fs::read(&f.pcap_gz).unwrap()).unwrap();
    let out = sender.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("forwarded standard input"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let (cdrs, cerr) = central.stop();
    assert_eq!(without_sensor(cdrs), without_sensor(f.cdrs.clone()), "{cerr}");

    // VoIPmonitor's mirror mode, the sender reading a zstd file.
    let [port] = free_ports::<1>();
    let rconf = write_conf(
        &dir,
        "receiver.conf",
        "m",
        &format!("mirror_bind_ip = 127.0.0.1\nmirror_bind_port = {port}\nmanagerport = 0\ncdr_log = no\nsender_time_window_s = 0\n"),
    );
    let receiver = LiveVoxtap::start(&rconf, port);
    let sconf = dir.join("mirror-sender.conf");
    std::fs::write(&sconf, format!("mirror_destination = 127.0.0.1:{port}\nid_sensor = 4\n")).unwrap();
    let out = voxtap().args(["--config-file", sconf.to_str().unwrap(), "-r"]).arg(&f.pcap_zst).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("blocks_dropped=0"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let (cdrs, rerr) = receiver.stop();
    assert_eq!(without_sensor(cdrs), without_sensor(f.cdrs.clone()), "{rerr}");
}

/// Nothing of a progress bar where standard error is a pipe (tests, scripts, logs).
#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let f = forms();
    let runs = [
        voxtap().arg("-r").arg(&f.pcap).output().unwrap(),
        voxtap().arg("-r").arg(&f.pcap_gz).arg("--json").output().unwrap(),
        run_stdin(std::fs::read(&f.pcap_zst).unwrap(), &[]),
    ];
    for out in runs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        for mark in ["ETA", "\r", "\x1b[", " read, ", "B/s"] {
            assert!(!err.contains(mark), "{mark:?} on a stderr that is not a terminal: {err}");
        }
    }
}

/// On a terminal (a pty from util-linux's `script`): the bar with its percentage, packets and ETA for a file;
/// bytes and rate for standard input. It is cleared at the end: the summary line stays. `-r -` on a terminal is
/// refused.
#[test]
fn a_progress_bar_on_a_terminal() {
    if !have("script") {
        eprintln!("SKIPPED: no `script` (util-linux) to give voxtap a terminal");
        return;
    }
    let f = forms();
    let bin = voxtap().get_program().to_string_lossy().to_string();
    let on_pty = |shell: String| {
        let out = Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            // A terminal that can redraw a line: without TERM, or with TERM=dumb, there is no bar (CI has none).
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let q = |p: &Path| format!("'{}'", p.display());
    let (ok, text) = on_pty(format!("{} -r {} --json > /dev/null", q(Path::new(&bin)), q(&f.pcap_gz)));
    assert!(ok, "{text}");
    for mark in ["%", "packets", "ETA", "B/s", "voxtap: packets="] {
        assert!(text.contains(mark), "no {mark:?} on the terminal: {text:?}");
    }
    let (ok, text) = on_pty(format!("cat {} | {} -r - > /dev/null", q(&f.pcap_zst), q(Path::new(&bin))));
    assert!(ok, "{text}");
    for mark in [" read, ", "packets", "B/s"] {
        assert!(text.contains(mark), "no {mark:?} on the terminal: {text:?}");
    }
    assert!(!text.contains("ETA"), "an ETA without a size: {text:?}");
    // `-r -` with the terminal as standard input would wait for typing: refused.
    let (ok, text) = on_pty(format!("{} -r -", q(Path::new(&bin))));
    assert!(!ok && text.contains("standard input is a terminal"), "{text:?}");
}
