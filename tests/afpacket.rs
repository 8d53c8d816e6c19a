//! AF_PACKET live capture on a veth pair whose far end lives in a network namespace made for the test: a
//! generated capture is replayed into it with tcpreplay while voxtap and tcpdump both listen on the near end.
//! voxtap's live CDRs must equal `voxtap -r` on tcpdump's capture of the same packets (times may differ by the
//! microsecond or two between the two sockets' timestamps; everything else must be equal).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// The fields that do not depend on when exactly a socket stamped a packet.
fn projection(c: &Value) -> Value {
    let keys = [
        "callid",
        "caller",
        "called",
        "sipcallerip",
        "sipcallerport",
        "sipcalledip",
        "sipcalledport",
        "lastSIPresponseNum",
        "lastSIPresponse",
        "bye",
        "whohanged",
        "a_received",
        "b_received",
        "a_lost",
        "b_lost",
    ];
    let mut o = serde_json::Map::new();
    for k in keys {
        o.insert(k.into(), c[k].clone());
    }
    let streams: Vec<Value> = c["rtp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut s = serde_json::Map::new();
            for k in ["saddr", "sport", "daddr", "dport", "ssrc", "received", "lost", "seq_errors", "dtmf", "sender"] {
                s.insert(k.into(), r[k].clone());
            }
            Value::Object(s)
        })
        .collect();
    o.insert("rtp".into(), Value::Array(streams));
    Value::Object(o)
}

#[test]
fn live_capture_on_a_veth_matches_the_offline_result() {
    live_capture(1, None);
}

#[test]
fn a_bpf_filter_keeps_only_what_it_matches() {
    live_capture(1, Some("udp port 5060"));
}

#[test]
fn two_rx_threads_with_fanout_match_the_offline_result() {
    live_capture(2, None);
}

/// On a quiet live link packet time follows the host clock: an answered call whose media stopped and that never
/// got a BYE ends by rtptimeout while the capture is still running.
#[test]
fn timers_fire_on_a_quiet_live_link() {
    live_capture(1, Some("timers"));
}

fn live_capture(rx_threads: u32, mode: Option<&str>) {
    let timers = mode == Some("timers");
    let filter = mode.filter(|_| !timers);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !(root && have("tcpreplay") && have("tcpdump")) {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI needs root, tcpreplay and tcpdump");
        eprintln!("SKIPPED: needs root, tcpreplay and tcpdump");
        return;
    }
    let id = (std::process::id() % 10_000) * 10
        + rx_threads
        + if filter.is_some() { 5 } else { 0 }
        + if timers { 7 } else { 0 };
    let (ns, near, far) = (format!("vxt{id}"), format!("vxa{id}"), format!("vxb{id}"));
    sh(&format!("ip netns add {ns}"));
    let _guard = Netns(ns.clone());
    sh(&format!("ip link add {near} type veth peer name {far} && ip link set {far} netns {ns}"));
    sh(&format!("sysctl -qw net.ipv6.conf.{near}.disable_ipv6=1 && ip link set {near} up"));
    sh(&format!("ip netns exec {ns} sh -c 'sysctl -qw net.ipv6.conf.{far}.disable_ipv6=1; ip link set {far} up'"));

    let dir = std::env::temp_dir().join(format!("voxtap-af-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("calls.pcap");
    // Seed 52 has an answered call without BYE (for the timer test); 51 has none.
    let seed = if timers { "52" } else { "51" };
    voxgen(&cap, &["--calls", "16", "--cps", "8", "--duration", "2", "--mix", "--dtmf", "--rtcp", "--seed", seed]);
    let seen = dir.join("seen.pcap");

    let conf = dir.join("live.conf");
    let mut filter_line = filter.map(|f| format!("filter = {f}\n")).unwrap_or_default();
    if timers {
        filter_line.push_str("rtptimeout = 1\n");
    }
    let spool = dir.join("spool");
    std::fs::write(
        &conf,
        format!(
            "interface = {near}\nsipport = 5060\nrx_threads = {rx_threads}\nspooldir = {}\n{filter_line}",
            spool.display()
        ),
    )
    .unwrap();
    let mut voxtap_child = voxtap()
        .args(["--config-file", conf.to_str().unwrap(), "--json", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A live capture writes each CDR as its call ends: collect the lines as they come.
    let stdout = voxtap_child.stdout.take().unwrap();
    let streamed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let streamed = streamed.clone();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                streamed.lock().unwrap().push(l);
            }
        })
    };
    let tcpdump = Command::new("tcpdump")
        .args(["-i", &near, "-s", "0", "-U", "-w", seen.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    sh(&format!("ip netns exec {ns} tcpreplay -q -i {far} --pps 4000 {} > /dev/null", cap.display()));
    std::thread::sleep(Duration::from_millis(if timers { 4000 } else { 1000 }));
    let before_stop: Vec<String> = streamed.lock().unwrap().clone();
    for (pid, sig) in [(voxtap_child.id(), "-TERM"), (tcpdump.id(), "-INT")] {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }
    let out = voxtap_child.wait_with_output().unwrap();
    let mut tcpdump = tcpdump;
    let _ = tcpdump.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    eprintln!("live summary: {}", stderr.lines().last().unwrap_or(""));
    reader.join().unwrap();
    let live: Vec<Value> = streamed.lock().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(live.len(), 16, "{stderr}");
    // A live capture without a database keeps its CDRs in the CDR log too.
    let logged: usize = std::fs::read_dir(spool.join("cdrlog"))
        .expect("the CDR log folder")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert_eq!(logged, live.len(), "CDR log lines: {stderr}");
    if timers {
        let answered_no_bye: Vec<&Value> =
            live.iter().filter(|c| c["lastSIPresponseNum"] == 200 && c["whohanged"].is_null()).collect();
        assert!(!answered_no_bye.is_empty(), "the capture has no answered call without BYE");
        for c in answered_no_bye {
            assert_eq!(c["bye"], 104, "{} should have ended by rtptimeout: {stderr}", c["callid"]);
            // Its CDR was on standard output while the capture was still running.
            assert!(
                before_stop.iter().any(|l| l.contains(c["callid"].as_str().unwrap())),
                "{} was not written before the stop ({} lines were)",
                c["callid"],
                before_stop.len()
            );
        }
        return;
    }
    if filter.is_some() {
        // Only SIP passed the kernel filter: every call is there, no media.
        assert!(live.iter().all(|c| c["rtp"].as_array().unwrap().is_empty() && c["a_received"].is_null()), "{stderr}");
        assert!(stderr.contains(" rtp=0 "), "{stderr}");
        return;
    }
    let offline = run_json(&seen, &["--sipports", "5060"]);
    let p = |v: &[Value]| {
        let mut x: Vec<Value> = v.iter().map(projection).collect();
        x.sort_by_key(|c| c["callid"].as_str().unwrap().to_string());
        x
    };
    assert_eq!(p(&live), p(&offline), "live CDRs differ from the offline result of the same packets");
    // Live CDRs come in the order calls ended, as each was written; pair them by Call-ID.
    let by_id: std::collections::HashMap<&str, &Value> =
        offline.iter().map(|c| (c["callid"].as_str().unwrap(), c)).collect();
    for l in &live {
        let o = by_id[l["callid"].as_str().unwrap()];
        let d = (l["duration"].as_f64().unwrap() - o["duration"].as_f64().unwrap()).abs();
        assert!(d < 0.001, "duration differs by {d}");
    }
    assert!(!stderr.contains("kernel_drops="), "the kernel dropped packets: {stderr}");
}
