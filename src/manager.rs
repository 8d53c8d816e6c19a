//! The manager port (`managerip:managerport`, default 127.0.0.1:5029), VoIPmonitor's text interface for its GUI and
//! for scripts (reference core §2): one command per TCP connection, the reply written raw, then the connection is
//! closed — so `echo getversion | nc 127.0.0.1 5029` works.
//!
//! A request is complete at `\r\n\r\n`, or at a line end once nothing more arrives for 500 ms; only its first line
//! counts. The command is the first word, or else the first known command name found in the line. Peers other than
//! the loopback are refused unless `manager_enable_unencrypted = yes`, or they use the sealed mode with
//! `manager_key`. Files are served only from inside the spool folder, streamed (never read whole). `server`
//! holds the listeners (tasks on the slow side's runtime).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::owner::CallGauge;

pub mod sealed;
mod server;
mod stat;

pub use server::Manager;

/// Requests larger than this are cut (VoIPmonitor reads 4 KB).
const REQUEST_MAX: usize = 4096;

/// What the manager reads from the running sensor.
pub struct State {
    pub started: Instant,
    pub spooldir: PathBuf,
    /// The rules `reload` changes (SIP ports, capture filter), and how to reload them.
    pub rules: Arc<crate::dispatch::rules::Rules>,
    pub reload: Option<Reload>,
    /// `manager_key`: clients holding it may use the sealed mode from anywhere.
    pub key: Option<[u8; 32]>,
    pub calls: Arc<CallGauge>,
    pub allow_remote: bool,
    /// The owners, asked for their calls by `listcalls`.
    pub owners: Vec<crossbeam_channel::Sender<crate::dispatch::ToOwner>>,
    pub utc: bool,
    pub id_sensor: Option<u16>,
    /// Totals the rx cores, the collector and cleanspool publish (sniffer_stat).
    pub live: Arc<crate::stats::Live>,
    /// The on-disk CDR queue (database) and link queue (remote), whose backlog sniffer_stat reports.
    pub cdr_queue_dir: Option<PathBuf>,
    pub link_queue_dir: Option<PathBuf>,
}

/// Re-reads the configuration and installs the new rules; `Err` says why it could not.
pub type Reload = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Command names, in the order they are tried when the first word is not one of them.
const COMMANDS: [&str; 14] = [
    "file_exists",
    "getbuild",
    "getfile",
    "getfile_zip",
    "getverbuild",
    "getversion",
    "help",
    "listcalls",
    "reload",
    "sipports",
    "sniffer_stat",
    "sniffer_threads",
    "totalcalls",
    "uptime",
];

/// Answers one request line, whole (tests and small answers; the server streams with `answer`).
pub fn handle(line: &str, state: &State) -> Vec<u8> {
    let mut out = Vec::new();
    answer(line, state, &mut |b| {
        out.extend_from_slice(b);
        true
    });
    out
}

/// Answers one request line, handing the reply to `out` in parts (false from `out`: stop, the client is gone).
/// A file is streamed from disk in bounded pieces, gzipped on the way for `getfile_zip`.
pub fn answer(line: &str, state: &State, out: &mut dyn FnMut(&[u8]) -> bool) {
    match command_of(line) {
        Some(cmd @ ("getfile" | "getfile_zip")) => {
            let rel = line.split_whitespace().nth(1).unwrap_or("");
            stream_file(rel, &state.spooldir, cmd == "getfile_zip", out);
        }
        Some(cmd) => {
            out(&reply(cmd, line, state));
        }
        None => {
            out(b"command not found\n");
        }
    }
}

/// The command a request line asks for: its first word, or else the first command name found in it.
fn command_of(line: &str) -> Option<&'static str> {
    let first = line.split([' ', '\t']).next().unwrap_or("");
    COMMANDS.iter().find(|c| **c == first).or_else(|| COMMANDS.iter().find(|c| line.contains(**c))).copied()
}

fn reply(cmd: &str, line: &str, state: &State) -> Vec<u8> {
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let version = env!("CARGO_PKG_VERSION");
    match cmd {
        "getversion" => version.as_bytes().to_vec(),
        "getbuild" => b"voxtap".to_vec(),
        "getverbuild" => format!("{version} (voxtap)").into_bytes(),
        "help" => format!("commands: {}\n", COMMANDS.join(" ")).into_bytes(),
        "totalcalls" => state.calls.open.load(Ordering::Relaxed).max(0).to_string().into_bytes(),
        "uptime" => state.started.elapsed().as_secs().to_string().into_bytes(),
        "sipports" => state.rules.current().sip_ports_text.clone().into_bytes(),
        "reload" => match &state.reload {
            Some(r) => match r() {
                Ok(()) => b"reload ok".to_vec(),
                Err(e) => format!("reload failed: {e}\n").into_bytes(),
            },
            None => b"reload failed: voxtap was started without a configuration file\n".to_vec(),
        },
        "file_exists" => file_exists(args.first().copied().unwrap_or(""), &state.spooldir).into_bytes(),
        "listcalls" => listcalls(line, state),
        "sniffer_stat" => stat::sniffer_stat(state, args.contains(&"plain")),
        "sniffer_threads" => stat::sniffer_threads(state, &args),
        _ => b"command not found\n".to_vec(),
    }
}

/// `listcalls` columns: VoIPmonitor's names, in its order, for the values voxtap has.
pub const LISTCALLS_COLUMNS: [&str; 41] = [
    "callreference",
    "callid",
    "calldate",
    "calldate_num",
    "lastpackettime",
    "duration",
    "connect_duration",
    "caller",
    "called",
    "callername",
    "callerdomain",
    "calleddomain",
    "calleragent",
    "calledagent",
    "callerip",
    "calledip",
    "lastSIPresponseNum",
    "src_mosf1_avg",
    "src_mosf1_min",
    "src_mosf2_avg",
    "src_mosf2_min",
    "src_mosAD_avg",
    "src_mosAD_min",
    "dst_mosf1_avg",
    "dst_mosf1_min",
    "dst_mosf2_avg",
    "dst_mosf2_min",
    "dst_mosAD_avg",
    "dst_mosAD_min",
    "src_jitter_avg",
    "src_jitter_max",
    "dst_jitter_avg",
    "dst_jitter_max",
    "src_received",
    "dst_received",
    "src_loss_abs",
    "dst_loss_abs",
    "src_loss",
    "dst_loss",
    "id_sensor",
    "vlan",
];

/// `listcalls [JSON]` parameters (VoIPmonitor's): `limit`, `sort_field` (a column), `sort_dir` (`asc`/`desc`),
/// `zip` (`yes`). Unknown ones are ignored.
#[derive(Debug, Default)]
struct ListParams {
    given: bool,
    limit: Option<usize>,
    sort_field: Option<String>,
    ascending: bool,
    zip: bool,
}

fn list_params(line: &str) -> Result<ListParams, String> {
    let Some(at) = line.find('{') else { return Ok(ListParams::default()) };
    let v: serde_json::Value =
        serde_json::from_str(line[at..].trim()).map_err(|e| format!("bad listcalls parameters: {e}"))?;
    let text = |k: &str| match &v[k] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let sort_field = text("sort_field").filter(|f| !f.is_empty());
    if let Some(f) = &sort_field {
        if !LISTCALLS_COLUMNS.contains(&f.as_str()) {
            return Err(format!("unknown sort_field {f}"));
        }
    }
    Ok(ListParams {
        given: true,
        limit: text("limit").and_then(|l| l.parse().ok()),
        sort_field,
        ascending: text("sort_dir").is_some_and(|d| d.eq_ignore_ascii_case("asc")),
        zip: text("zip").is_some_and(|z| z == "yes" || z == "1"),
    })
}

fn ordering(a: &serde_json::Value, b: &serde_json::Value) -> std::cmp::Ordering {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        (String(x), String(y)) => x.cmp(y),
        (Null, Null) => std::cmp::Ordering::Equal,
        (Null, _) => std::cmp::Ordering::Less,
        (_, Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// The calls in progress, newest first (or as `sort_field`/`sort_dir` ask): a JSON array whose first element
/// names the columns, then (when parameters were given) a totals object, then one array per call. Each owner
/// copies its calls between two batches; one that does not answer within a second is left out (and logged).
fn listcalls(line: &str, state: &State) -> Vec<u8> {
    let params = match list_params(line) {
        Ok(p) => p,
        Err(e) => return format!("{e}\n").into_bytes(),
    };
    let (tx, rx) = crossbeam_channel::bounded(state.owners.len().max(1));
    let mut asked = 0;
    for o in &state.owners {
        if o.send_timeout(crate::dispatch::ToOwner::Snapshot(tx.clone()), Duration::from_secs(1)).is_ok() {
            asked += 1;
        }
    }
    let mut calls = Vec::new();
    for _ in 0..asked {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(mut v) => calls.append(&mut v),
            Err(_) => {
                tracing::warn!("listcalls: an owner did not answer in time");
                break;
            }
        }
    }
    calls.sort_by(|a, b| b.calldate.cmp(&a.calldate).then_with(|| a.callid.cmp(&b.callid)));
    let ip = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v) => serde_json::Value::from(u32::from(v)),
        std::net::IpAddr::V6(v) => serde_json::Value::from(v.to_string()),
    };
    let secs = |t: crate::time::Nanos| t.div_euclid(1_000_000_000);
    let x10 = |v: f64| (v * 10.0).round() as i64;
    let total = calls.len();
    let mut rows: Vec<serde_json::Value> = Vec::with_capacity(total);
    for c in calls {
        let d = crate::time::civil(c.calldate, state.utc);
        let (a, b) = (c.caller_rtp, c.called_rtp);
        let mos = |s: Option<crate::call::live::LiveStream>| -> Vec<Option<i64>> {
            (0..6).map(|i| s.map(|s| x10(if i % 2 == 0 { s.mos[i / 2].0 } else { s.mos[i / 2].1 }))).collect()
        };
        let loss = |s: Option<crate::call::live::LiveStream>| {
            s.map(|s| {
                let expected = s.received as f64 + s.lost.max(0) as f64;
                if expected > 0.0 {
                    (s.lost.max(0) as f64 * 100.0 / expected * 100.0).round() / 100.0
                } else {
                    0.0
                }
            })
        };
        let mut row = vec![
            serde_json::Value::from(format!("0x{:x}", c.key)),
            c.callid.into(),
            format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", d.year, d.month, d.day, d.hour, d.minute, d.second).into(),
            secs(c.calldate).into(),
            secs(c.last_packet).into(),
            secs(c.last_packet - c.calldate).into(),
            c.connect.map(|t| secs(c.last_packet - t)).into(),
            c.caller.into(),
            c.called.into(),
            c.callername.into(),
            c.caller_domain.into(),
            c.called_domain.into(),
            c.caller_agent.into(),
            c.called_agent.into(),
            ip(c.caller_ip),
            ip(c.called_ip),
            c.last_response.into(),
        ];
        row.extend(mos(a).into_iter().chain(mos(b)).map(serde_json::Value::from));
        for s in [a, b] {
            row.push(s.map(|s| x10(s.jitter_avg)).into());
            row.push(s.map(|s| x10(s.jitter_max)).into());
        }
        row.extend([
            a.map(|s| s.received).into(),
            b.map(|s| s.received).into(),
            a.map(|s| s.lost.max(0)).into(),
            b.map(|s| s.lost.max(0)).into(),
            loss(a).into(),
            loss(b).into(),
            state.id_sensor.into(),
            c.vlan.into(),
        ]);
        rows.push(serde_json::Value::from(row));
    }
    if let Some(f) = &params.sort_field {
        let i = LISTCALLS_COLUMNS.iter().position(|c| c == f).unwrap_or(0);
        rows.sort_by(|x, y| {
            let o = ordering(&x[i], &y[i]);
            if params.ascending {
                o
            } else {
                o.reverse()
            }
        });
    }
    if let Some(l) = params.limit {
        rows.truncate(l);
    }
    let mut out = vec![serde_json::Value::from(LISTCALLS_COLUMNS.to_vec())];
    if params.given {
        out.push(serde_json::json!([{
            "total": total,
            "is_receiver": false,
            "is_server": false,
            "id_sensor": state.id_sensor.map(i64::from).unwrap_or(0),
        }]));
        if params.limit == Some(0) {
            out.truncate(2);
        }
    }
    out.extend(rows);
    let body = serde_json::Value::from(out).to_string().into_bytes();
    if params.zip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if e.write_all(&body).is_ok() {
            if let Ok(z) = e.finish() {
                return z;
            }
        }
    }
    body
}

fn in_spool(rel: &str, spool: &Path) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = spool.join(p);
    // A symbolic link inside the spool must not lead out of it either.
    match (full.canonicalize(), spool.canonicalize()) {
        (Ok(f), Ok(s)) if !f.starts_with(&s) => None,
        _ => Some(full),
    }
}

fn file_exists(arg: &str, spool: &Path) -> String {
    let paths: Vec<&str> = arg.split('|').filter(|p| !p.is_empty()).collect();
    let size = |rel: &str| -> Result<Option<u64>, ()> {
        let p = in_spool(rel, spool).ok_or(())?;
        Ok(std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len()))
    };
    if paths.len() == 1 {
        return match size(paths[0]) {
            Err(()) => "permission_denied".into(),
            Ok(None) => "not_exists".into(),
            Ok(Some(n)) => {
                // Archives an earlier run left, renamed .1, .2, … (tar = yes).
                let mut out = n.to_string();
                for k in 1..=5 {
                    let rotated = format!("{}.{k}", paths[0]);
                    if let Ok(Some(m)) = size(&rotated) {
                        let name = Path::new(&rotated).file_name().map(|f| f.to_string_lossy().into_owned());
                        out.push_str(&format!(";{}:{m}", name.unwrap_or_default()));
                    }
                }
                out
            }
        };
    }
    let mut out = String::from("ok\n");
    for p in paths {
        if let Ok(Some(n)) = size(p) {
            out.push_str(&format!("{p}:{n}\n"));
        }
    }
    out
}

/// Piece size of a streamed file.
const FILE_PIECE: usize = 64 << 10;

/// Hands `out` each piece as it is written: the gzip encoder's output goes straight to the client.
struct Out<'a> {
    out: &'a mut dyn FnMut(&[u8]) -> bool,
}

impl Write for Out<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if (self.out)(b) {
            Ok(b.len())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `getfile`/`getfile_zip`: the file from inside the spool, in pieces of `FILE_PIECE` bytes (a gzip file is sent
/// as it is even when zip is asked, as VoIPmonitor does).
fn stream_file(rel: &str, spool: &Path, zip: bool, out: &mut dyn FnMut(&[u8]) -> bool) {
    let Some(path) = in_spool(rel, spool) else {
        out(b"access denied");
        return;
    };
    let Ok(mut f) = std::fs::File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))).and_then(|(f, m)| {
        if m.is_file() {
            Ok(f)
        } else {
            Err(std::io::Error::other("not a file"))
        }
    }) else {
        out(format!("error: cannot open file {rel}").as_bytes());
        return;
    };
    let mut piece = vec![0u8; FILE_PIECE];
    let mut first = true;
    let mut gz: Option<flate2::write::GzEncoder<Out<'_>>> = None;
    let mut raw_out = Some(out);
    loop {
        let n = match f.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if first {
            first = false;
            if zip && !piece[..n].starts_with(&[0x1f, 0x8b]) {
                if let Some(o) = raw_out.take() {
                    gz = Some(flate2::write::GzEncoder::new(Out { out: o }, flate2::Compression::fast()));
                }
            }
        }
        let ok = match (&mut gz, &mut raw_out) {
            (Some(g), _) => g.write_all(&piece[..n]).is_ok(),
            (None, Some(o)) => o(&piece[..n]),
            (None, None) => false,
        };
        if !ok {
            return;
        }
    }
    match (gz, raw_out) {
        (Some(g), _) => {
            let _ = g.finish();
        }
        // An empty file zipped is an empty gzip member.
        (None, Some(o)) if zip && first => {
            let _ = flate2::write::GzEncoder::new(Out { out: o }, flate2::Compression::fast()).finish();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(spool: &Path) -> State {
        let calls = Arc::new(CallGauge::default());
        calls.open.store(3, Ordering::Relaxed);
        State {
            started: Instant::now(),
            spooldir: spool.into(),
            rules: Arc::new(crate::dispatch::rules::Rules::new(crate::dispatch::rules::Current {
                sip_ports: Box::new([false; 65536]),
                sip_ports_text: "5060,".into(),
                filter: None,
            })),
            reload: None,
            key: None,
            calls,
            allow_remote: false,
            owners: Vec::new(),
            utc: true,
            id_sensor: None,
            live: Arc::new(crate::stats::Live::new(2)),
            cdr_queue_dir: None,
            link_queue_dir: None,
        }
    }

    #[test]
    fn commands_and_spool_confinement() {
        let spool = std::env::temp_dir().join(format!("voxtap-mgr-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(spool.join("2024-01-01/10/00/SIP")).unwrap();
        std::fs::write(spool.join("2024-01-01/10/00/SIP/a.pcap"), b"abcd").unwrap();
        std::fs::write(spool.join("2024-01-01/10/00/SIP/a.pcap.1"), b"ab").unwrap();
        std::fs::write(spool.join("../voxtap-mgr-secret"), b"no").unwrap();
        let st = state(&spool);
        let s = |l: &str| String::from_utf8(handle(l, &st)).unwrap();
        assert_eq!(s("totalcalls"), "3");
        assert_eq!(s("getversion"), env!("CARGO_PKG_VERSION"));
        assert_eq!(s("please totalcalls now"), "3");
        assert_eq!(s("nonsense"), "command not found\n");
        // No owners: the column row only.
        let v: serde_json::Value = serde_json::from_str(&s("listcalls")).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0][1], "callid");
        assert_eq!(s("file_exists 2024-01-01/10/00/SIP/a.pcap"), "4;a.pcap.1:2");
        assert_eq!(s("file_exists 2024-01-01/10/00/SIP/b.pcap"), "not_exists");
        assert_eq!(s("file_exists ../voxtap-mgr-secret"), "permission_denied");
        assert_eq!(s("file_exists 2024-01-01/10/00/SIP/a.pcap|x"), "ok\n2024-01-01/10/00/SIP/a.pcap:4\n");
        assert_eq!(s("getfile 2024-01-01/10/00/SIP/a.pcap"), "abcd");
        assert_eq!(s("getfile /etc/passwd"), "access denied");
        assert_eq!(s("getfile ../voxtap-mgr-secret"), "access denied");
        assert!(s("getfile nothing").starts_with("error: cannot open file"));
        let z = handle("getfile_zip 2024-01-01/10/00/SIP/a.pcap", &st);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        let _ = std::fs::remove_file(spool.join("../voxtap-mgr-secret"));
        let _ = std::fs::remove_dir_all(&spool);
    }
}
