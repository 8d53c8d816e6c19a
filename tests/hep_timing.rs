//! Live HEP timing with a real sender: Kamailio 5.6's siptrace copies of twenty calls through the proxy (the
//! corpus's `kamailio/siptrace_hep3_udp.pcap`) are replayed in real time to a running HEP listener, with the
//! HEP header times rewritten as a sender whose clock is off would write them. Every call must come out as one
//! CDR, a few seconds after its last message (the 200 to its BYE, plus the 5 s voxtap waits after it): a
//! sender's clock that is behind must not split calls on timeouts, a late HEP copy of a forwarded BYE must not
//! keep a settled call open for another minute, and an absurd sender clock is held near the receive time.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use voxtap::capture::pcapfile::CaptureFile;

/// The silence inserted after the first INVITE (before its 100 Trying): ticks of the clock come while the call
/// has seen only its caller, which is where a clock that runs ahead of the call's times closes it as one-way.
const SILENCE_AFTER_INVITE: Duration = Duration::from_secs(2);
/// A CDR is due 5 s after the 200 to the BYE (the destroy wait), checked at whole seconds of packet time.
const CDR_DUE_WITHIN: Duration = Duration::from_secs(9);
/// The default `sender_time_window_s`: one day.
const WINDOW_S: i64 = 86_400;

/// One HEP message of the capture: its bytes, where its time chunks are, its Call-ID, and its times.
struct Msg {
    hep: Vec<u8>,
    /// Offsets of the seconds (chunk 9) and microseconds (chunk 10) values.
    sec_at: usize,
    usec_at: usize,
    callid: String,
    /// When Kamailio sent it (the capture's time) and the time it wrote in the HEP header, ns.
    sent_ns: i64,
    hep_ns: i64,
}

fn load(p: &Path) -> Vec<Msg> {
    let mut out = Vec::new();
    for f in CaptureFile::open(p).unwrap().frames() {
        // Ethernet, IPv4 without options, UDP: then HEP v3.
        let hep = f.data[42..].to_vec();
        assert!(hep.starts_with(b"HEP3"), "a HEP v3 message");
        let (mut sec_at, mut usec_at, mut payload) = (None, None, &[][..]);
        let mut at = 6;
        while at + 6 <= hep.len() {
            let ty = u16::from_be_bytes([hep[at + 2], hep[at + 3]]);
            let len = u16::from_be_bytes([hep[at + 4], hep[at + 5]]) as usize;
            assert!(len >= 6 && at + len <= hep.len(), "chunk length");
            match ty {
                9 => sec_at = Some(at + 6),
                10 => usec_at = Some(at + 6),
                15 => payload = &hep[at + 6..at + len],
                _ => {}
            }
            at += len;
        }
        let text = String::from_utf8_lossy(payload);
        let callid = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")))
            .expect("a Call-ID")
            .trim()
            .to_string();
        let (sec_at, usec_at) = (sec_at.expect("chunk 9"), usec_at.expect("chunk 10"));
        let be = |o: usize| u32::from_be_bytes([hep[o], hep[o + 1], hep[o + 2], hep[o + 3]]) as i64;
        let hep_ns = be(sec_at) * 1_000_000_000 + be(usec_at) * 1000;
        out.push(Msg { sec_at, usec_at, callid, sent_ns: f.ts, hep_ns, hep });
    }
    out
}

fn wall_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// A HEP sender: its socket, and what its clock reads when the host's reads `t` (ns).
struct Sender {
    sock: UdpSocket,
    clock: Box<dyn Fn(i64) -> i64 + Send>,
}

impl Sender {
    fn new(clock: impl Fn(i64) -> i64 + Send + 'static) -> Sender {
        Sender { sock: UdpSocket::bind("127.0.0.1:0").unwrap(), clock: Box::new(clock) }
    }
}

/// What one replay gave: CDRs with when they came out, when each call's last message was sent, and voxtap's
/// summary.
struct Replay {
    cdrs: Vec<(Instant, Value)>,
    last_sent: HashMap<String, Instant>,
    summary: String,
}

/// Replays the capture to a fresh HEP listener in real time; call `i` (in order of first appearance) goes
/// through `senders[i % len]`, stamped with that sender's clock.
fn replay(tag: &str, senders: &[Sender]) -> Option<Replay> {
    let corpus = corpus_dir()?;
    let msgs = load(&corpus.join("kamailio/siptrace_hep3_udp.pcap"));
    assert_eq!(msgs.len(), 260);
    let dir = fresh_dir(tag);
    let [port] = free_ports::<1>();
    let conf = write_conf(
        &dir,
        "hep.conf",
        "spool",
        &format!("hep = yes\nhep_bind_ip = 127.0.0.1\nhep_bind_port = {port}\nsipport = 5060,5070,5080,5090\n"),
    );
    let run = LiveVoxtap::start(&conf, port);
    let mut calls: Vec<&str> = Vec::new();
    for m in &msgs {
        if !calls.contains(&m.callid.as_str()) {
            calls.push(&m.callid);
        }
    }
    let first = msgs[0].sent_ns;
    let (start, start_ns) = (Instant::now() + Duration::from_millis(200), wall_ns() + 200_000_000);
    let mut last_sent = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        let gap = if i > 0 { SILENCE_AFTER_INVITE } else { Duration::ZERO };
        let due = start + Duration::from_nanos((m.sent_ns - first) as u64) + gap;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let s = &senders[calls.iter().position(|c| *c == m.callid).unwrap() % senders.len()];
        // The sender's time of writing the copy: the capture's HEP time, moved to now and onto its clock.
        let host_ns = start_ns + (m.hep_ns - first) + gap.as_nanos() as i64;
        let t = (s.clock)(host_ns).max(0);
        let mut hep = m.hep.clone();
        hep[m.sec_at..m.sec_at + 4].copy_from_slice(&((t / 1_000_000_000) as u32).to_be_bytes());
        hep[m.usec_at..m.usec_at + 4].copy_from_slice(&(((t % 1_000_000_000) / 1000) as u32).to_be_bytes());
        s.sock.send_to(&hep, ("127.0.0.1", port)).unwrap();
        last_sent.insert(m.callid.clone(), Instant::now());
    }
    // Every CDR is due within CDR_DUE_WITHIN of its call's end; wait a little longer, not for a late one.
    let end = Instant::now() + CDR_DUE_WITHIN + Duration::from_secs(3);
    while Instant::now() < end && run.lines_so_far() < calls.len() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cdrs, summary) = run.stop_timed();
    let _ = std::fs::remove_dir_all(&dir);
    Some(Replay { cdrs, last_sent, summary })
}

/// One CDR per call, each out within CDR_DUE_WITHIN of its last message, its BYE answered.
fn check(r: &Replay, what: &str) {
    let summary = r.summary.lines().last().unwrap_or("");
    let ids: Vec<&str> = r.cdrs.iter().map(|(_, c)| c["callid"].as_str().unwrap_or("")).collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        (ids.len(), distinct.len()),
        (20, 20),
        "{what}: one CDR per call expected; got {:?} ({summary})",
        r.cdrs.iter().map(|(_, c)| (c["callid"].clone(), c["bye"].clone())).collect::<Vec<_>>()
    );
    let mut slowest = Duration::ZERO;
    for (at, c) in &r.cdrs {
        let id = c["callid"].as_str().unwrap();
        let sent = r.last_sent.get(id).unwrap_or_else(|| panic!("{what}: CDR for unknown call {id}"));
        let after = at.saturating_duration_since(*sent);
        slowest = slowest.max(after);
        assert!(
            after <= CDR_DUE_WITHIN,
            "{what}: call {id} came out {:.1} s after its last message (bye {}): {summary}",
            after.as_secs_f64(),
            c["bye"]
        );
        assert_eq!(c["bye"], 3, "{what}: call {id}: BYE answered");
        assert_eq!(c["lastSIPresponseNum"], 200, "{what}: call {id}");
    }
    eprintln!("{what}: the slowest CDR came out {:.1} s after its call's last message", slowest.as_secs_f64());
}

/// Seconds between a CDR's calldate and the host clock now (negative: in the past).
fn calldate_vs_now(c: &Value) -> f64 {
    let t = c["calldate"].as_str().unwrap();
    let ns = voxtap::time::parse_rfc3339_utc(t).unwrap();
    (ns - wall_ns()) as f64 / 1e9
}

#[test]
fn sender_clock_60s_behind_keeps_calls_whole() {
    let Some(r) = replay("heptime-behind", &[Sender::new(|t| t - 60_000_000_000)]) else { return };
    check(&r, "sender 60 s behind");
    // The CDRs keep the sender's times.
    for (_, c) in &r.cdrs {
        let d = calldate_vs_now(c);
        assert!((-90.0..=-60.0).contains(&d), "calldate {d:.1} s from now, expected about a minute behind");
    }
}

#[test]
fn sender_in_sync_late_bye_copies_do_not_delay_cdrs() {
    let Some(r) = replay("heptime-sync", &[Sender::new(|t| t)]) else { return };
    check(&r, "sender in sync");
}

#[test]
fn two_senders_one_behind_one_absurd() {
    // Half the calls from a sender 60 s behind; the other half from one whose clock reads 1970 (no RTC, no
    // NTP): its times are held one window before the receive time, and its calls still time out normally.
    let senders = [Sender::new(|t| t - 60_000_000_000), Sender::new(|t| t % 86_400_000_000_000)];
    let Some(r) = replay("heptime-two", &senders) else { return };
    check(&r, "two senders");
    let (mut behind, mut clamped) = (0, 0);
    for (_, c) in &r.cdrs {
        let d = calldate_vs_now(c);
        if (-90.0..=-60.0).contains(&d) {
            behind += 1;
        } else if ((-WINDOW_S - 30) as f64..=-WINDOW_S as f64).contains(&d) {
            clamped += 1;
        } else {
            panic!("calldate {d:.1} s from now: neither a minute behind nor held at the window's edge");
        }
    }
    assert_eq!((behind, clamped), (10, 10));
}
