//! Call lifecycle on packet time: end codes (`bye`), who hung up, timers (rtptimeout, absolute_timeout) set
//! through a voipmonitor.conf, RTCP reports attached to the call — checked against the generator's truth.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn workdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-life-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn generate(dir: &Path) -> (PathBuf, Value) {
    // The tests of this file run in parallel and share one capture: make it once, and only ever let a reader
    // see it complete (written under another name, then renamed).
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let cap = dir.join("life.pcap");
    let truth = dir.join("life.truth.json");
    if !cap.exists() {
        let tmp = dir.join("life.pcap.part");
        let truth_s = truth.to_str().unwrap();
        let args = ["--calls", "24", "--cps", "2", "--duration", "11", "--mix", "--rtcp", "--dtmf", "--seed", "31"];
        voxgen(&tmp, &[&args[..], &["--truth", truth_s]].concat());
        std::fs::rename(&tmp, &cap).unwrap();
    }
    (cap, load_json(&truth))
}

fn with_config(dir: &Path, name: &str, text: &str, cap: &Path) -> Vec<Value> {
    let conf = dir.join(name);
    std::fs::write(&conf, text).unwrap();
    run_json(cap, &["--config-file", conf.to_str().unwrap(), "--workers", "2"])
}

fn by_id<'a>(cdrs: &'a [Value], id: &str) -> &'a Value {
    cdrs.iter().find(|c| c["callid"] == id).unwrap_or_else(|| panic!("no CDR for {id}"))
}

#[test]
fn end_codes_and_who_hung_up_match_the_truth() {
    let dir = workdir();
    let (cap, truth) = generate(&dir);
    let cdrs = run_json(&cap, &[]);
    let calls = truth["calls"].as_array().unwrap();
    assert_eq!(cdrs.len(), calls.len());
    let mut seen_codes = std::collections::BTreeSet::new();
    for t in calls {
        let c = by_id(&cdrs, t["call_id"].as_str().unwrap());
        let final_code = t["final_code"].as_u64();
        let bye = c["bye"].as_u64().unwrap();
        seen_codes.insert(bye);
        match (final_code, t["bye"].as_bool().unwrap()) {
            (Some(200), true) => {
                assert_eq!(bye, 3, "{c}");
                assert_eq!(c["whohanged"], t["bye_from"], "{}", t["call_id"]);
                assert!(c["connect_duration"].as_f64().unwrap() > 10.0);
            }
            (Some(200), false) => assert_eq!(bye, 1, "answered without BYE: {c}"),
            (Some(code), _) => {
                assert_eq!(bye, 0, "{c}");
                assert_eq!(c["lastSIPresponseNum"].as_u64(), Some(code));
                assert!(c["connect_duration"].is_null());
            }
            (None, _) => assert!(c["lastSIPresponseNum"].as_u64().unwrap() < 200),
        }
    }
    assert!(seen_codes.contains(&3) && seen_codes.contains(&0), "{seen_codes:?}");
    // RTCP reports were parsed and attached to the streams they describe.
    assert!(
        cdrs.iter().any(|c| !c["a_rtcp_maxjitter"].is_null() || !c["b_rtcp_maxjitter"].is_null()),
        "no RTCP data in any CDR"
    );
    // DTMF digits were decoded from RFC 2833 events.
    assert!(cdrs.iter().any(|c| c["rtp"].as_array().unwrap().iter().any(|r| !r["dtmf"].as_str().unwrap().is_empty())));
}

#[test]
fn rtptimeout_and_absolute_timeout_from_config() {
    let dir = workdir();
    let (cap, truth) = generate(&dir);
    let base = run_json(&cap, &[]);
    let last_packet = base.iter().map(|c| c["callend"].as_str().unwrap().to_string()).max().unwrap();

    // rtptimeout = 2: an answered call without BYE whose media stopped more than 2 s before the capture's end
    // ends with bye=104, and its callend (last packet) stays what it was.
    let cdrs = with_config(&dir, "rtp.conf", "rtptimeout = 2\n", &cap);
    let mut timed_out = 0;
    for t in truth["calls"].as_array().unwrap() {
        if t["final_code"].as_u64() != Some(200) || t["bye"].as_bool().unwrap() {
            continue;
        }
        let id = t["call_id"].as_str().unwrap();
        let (a, b) = (by_id(&base, id), by_id(&cdrs, id));
        assert_eq!(a["callend"], b["callend"], "{id}");
        if b["bye"] == 104 {
            timed_out += 1;
        } else {
            // Only a call still active near the end of the capture may escape the timeout.
            assert_eq!(b["bye"], 1);
            assert!(b["callend"].as_str().unwrap() >= last_packet.as_str().get(..17).unwrap(), "{id}");
        }
    }
    assert!(timed_out >= 1, "no call ended by rtptimeout");

    // absolute_timeout = 5: long calls are cut, and nothing after the cut is counted in them.
    let cdrs = with_config(&dir, "abs.conf", "absolute_timeout = 5\n", &cap);
    let cut: Vec<&Value> = cdrs.iter().filter(|c| c["bye"] == 102).collect();
    assert!(!cut.is_empty(), "no call ended by absolute_timeout");
    for c in cut {
        assert!(c["duration"].as_f64().unwrap() <= 6.0, "{c}");
    }
}

#[test]
fn timers_do_not_depend_on_workers() {
    let dir = workdir();
    let (cap, _) = generate(&dir);
    let conf = dir.join("t.conf");
    std::fs::write(&conf, "rtptimeout = 2\nabsolute_timeout = 7\nonewaytimeout = 1\n").unwrap();
    let c = conf.to_str().unwrap();
    let one = run_json(&cap, &["--config-file", c, "--workers", "1"]);
    for w in ["2", "3", "4"] {
        assert_eq!(one, run_json(&cap, &["--config-file", c, "--workers", w]), "workers {w}");
    }
}
