//! `sniffer_stat` and `sniffer_threads`: what the sensor is doing now, for the GUI's status page and for
//! scripts.

use std::sync::atomic::Ordering::Relaxed;

use super::State;

/// VoIPmonitor's `sniffer_stat` keys (values as strings, as it sends them) for what voxtap has, plus voxtap's
/// own: per-source packets and drops, active calls, CDR counts and queue backlogs, spool use. `plain` gives
/// `key=value` lines instead.
pub fn sniffer_stat(state: &State, plain: bool) -> Vec<u8> {
    let live = &state.live;
    let sources: Vec<serde_json::Value> = live
        .sources
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "source": i,
                "packets": c.packets.load(Relaxed),
                "bytes": c.bytes.load(Relaxed),
                "decode_errors": c.decode_errors.load(Relaxed),
                "owner_queue_drops": c.owner_queue_drops.load(Relaxed),
            })
        })
        .collect();
    let packets: u64 = live.sources.iter().map(|c| c.packets.load(Relaxed)).sum();
    let drops: u64 = live.sources.iter().map(|c| c.owner_queue_drops.load(Relaxed)).sum();
    let active = state.calls.open.load(Relaxed).max(0);
    let peak = state.calls.peak.load(Relaxed).max(0);
    let cdrs = live.cdrs.load(Relaxed);
    let last = live.last_cdr_at.load(Relaxed);
    let cdr_queue = state.cdr_queue_dir.as_deref().map(crate::store::queue::pending_bytes);
    let link_queue = state.link_queue_dir.as_deref().map(crate::store::queue::pending_bytes);
    let spool = live.spool_bytes.load(Relaxed);
    let (fs_total, fs_free) = filesystem(&state.spooldir).unwrap_or((0, 0));
    let uptime = state.started.elapsed().as_secs();
    let status = format!("calls[{active}][peak:{peak}] packets[{packets}] drops[{drops}] cdrs[{cdrs}]");
    if plain {
        let mut out = format!(
            "uptime={uptime}\ncalls_active={active}\ncalls_peak={peak}\npackets={packets}\ndrops={drops}\ncdrs={cdrs}\n"
        );
        for (i, c) in live.sources.iter().enumerate() {
            out.push_str(&format!(
                "source{i}_packets={}\nsource{i}_drops={}\n",
                c.packets.load(Relaxed),
                c.owner_queue_drops.load(Relaxed)
            ));
        }
        if let Some(q) = cdr_queue {
            out.push_str(&format!("cdr_queue_bytes={q}\n"));
        }
        if let Some(q) = link_queue {
            out.push_str(&format!("link_queue_bytes={q}\n"));
        }
        if spool != u64::MAX {
            out.push_str(&format!("spool_bytes={spool}\n"));
        }
        out.push_str(&format!("spool_fs_total_bytes={fs_total}\nspool_fs_free_bytes={fs_free}\n"));
        return out.into_bytes();
    }
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build": "voxtap",
        "uptime": uptime.to_string(),
        "storingCdrLastWriteAt": if last > 0 { crate::time::rfc3339_utc(last * 1_000_000_000) } else { String::new() },
        "pbStatString": status,
        "pbCountPacketDrop": drops.to_string(),
        "memory_is_full": "0",
        "count_live_sniffers": "0",
        "terminating_error": "",
        "id_sensor": state.id_sensor,
        "calls_active": active,
        "calls_peak": peak,
        "packets": packets,
        "drops": drops,
        "sources": sources,
        "cdrs": cdrs,
        "cdr_queue_bytes": cdr_queue,
        "link_queue_bytes": link_queue,
        "spool_bytes": (spool != u64::MAX).then_some(spool),
        "spool_fs_total_bytes": fs_total,
        "spool_fs_free_bytes": fs_free,
    });
    v.to_string().into_bytes()
}

fn filesystem(p: &std::path::Path) -> Option<(u64, u64)> {
    crate::os::fs_space(p).ok().map(|s| (s.total, s.available))
}

/// One thread of this process: name, id, CPU seconds used.
struct Thread {
    name: String,
    tid: u32,
    cpu_s: f64,
}

fn threads() -> Vec<Thread> {
    let hz = crate::os::clock_ticks_per_sec().unwrap_or(-1).max(1) as f64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut v = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // The name is in parentheses and may hold spaces; the fields after it are plain.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| rest.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
        v.push(Thread { name, tid, cpu_s: (ticks(11) + ticks(12)) as f64 / hz });
    }
    v
}

/// `sniffer_threads [no_sort] [json]`: every thread with its CPU time and its share of the uptime, busiest
/// first.
pub fn sniffer_threads(state: &State, args: &[&str]) -> Vec<u8> {
    let mut t = threads();
    if !args.contains(&"no_sort") {
        t.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    }
    let up = state.started.elapsed().as_secs_f64().max(0.001);
    if args.contains(&"json") {
        let v: Vec<serde_json::Value> = t
            .iter()
            .map(|x| serde_json::json!({"name": x.name, "tid": x.tid, "cpu_s": x.cpu_s, "cpu_pct": 100.0 * x.cpu_s / up}))
            .collect();
        return serde_json::Value::Array(v).to_string().into_bytes();
    }
    let mut out = String::from("thread           tid        cpu_s   cpu%\n");
    for x in t {
        out.push_str(&format!("{:<16} {:<8} {:>9.2} {:>6.1}\n", x.name, x.tid, x.cpu_s, 100.0 * x.cpu_s / up));
    }
    out.into_bytes()
}
