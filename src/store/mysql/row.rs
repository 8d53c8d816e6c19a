//! A CDR (the JSON object voxtap writes, its canonical form) → the values of its `cdr`, `cdr_next`, `cdr_rtp` and
//! `cdr_proxy` rows. Numbers are clamped to their column's range (a stream that received duplicates has a
//! negative loss, which an unsigned column cannot hold: it becomes 0).

use std::net::IpAddr;

use mysql_async::Value;
use serde_json::{Map, Value as J};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::schema::{Shape, SIDE_COLUMNS};

#[derive(Debug, Error)]
pub enum RowError {
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CDR without {0}")]
    Missing(&'static str),
    #[error("bad {0}: {1}")]
    Bad(&'static str, String),
}

/// A dictionary table and the text to look up in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dict {
    SipResponse(String),
    Ua(String),
    /// `cdr_reason.type`: 1 SIP, 2 Q.850.
    Reason(u8, String),
}

/// A value of the `cdr` row still waiting for a dictionary id.
#[derive(Debug, Clone)]
pub enum Cell {
    V(Value),
    Id(Dict),
}

#[derive(Debug, Clone)]
pub struct DbCdr {
    /// Idempotency key: SHA-256 of sensor, call start and Call-ID.
    pub key: [u8; 32],
    /// `calldate` as stored (UTC or local time, per `utc`) and its day, for partitions.
    pub calldate: String,
    pub day: (i32, u32, u32),
    pub cdr: Vec<Cell>,
    pub fbasename: String,
    /// `cdr_rtp` values after `cdr_ID, calldate`, in `RTP_COLUMNS` order.
    pub rtp: Vec<Vec<Value>>,
    pub proxies: Vec<Value>,
}

/// `cdr` columns voxtap fills, in insert order.
pub fn cdr_columns() -> Vec<String> {
    let mut c: Vec<String> = [
        "calldate",
        "callend",
        "duration",
        "connect_duration",
        "progress_time",
        "first_rtp_time",
        "caller",
        "caller_domain",
        "caller_reverse",
        "callername",
        "callername_reverse",
        "called",
        "called_domain",
        "called_reverse",
        "sipcallerip",
        "sipcallerport",
        "sipcalledip",
        "sipcalledport",
        "whohanged",
        "bye",
        "lastSIPresponse_id",
        "lastSIPresponseNum",
        "reason_sip_cause",
        "reason_sip_text_id",
        "reason_q850_cause",
        "reason_q850_text_id",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in ["a", "b"] {
        for (col, _) in SIDE_COLUMNS {
            c.push(format!("{p}_{col}"));
        }
        c.push(format!("{p}_saddr"));
        c.push(format!("{p}_ua_id"));
        c.push(format!("{p}_last_rtp_from_end"));
    }
    for s in [
        "payload",
        "jitter_mult10",
        "mos_min_mult10",
        "packet_loss_perc_mult1000",
        "lost",
        "flags",
        "vlan",
        "id_sensor",
    ] {
        c.push(s.to_string());
    }
    c
}

pub const RTP_COLUMNS: &[&str] = &[
    "saddr",
    "sport",
    "daddr",
    "dport",
    "ssrc",
    "received",
    "loss",
    "firsttime",
    "payload",
    "maxjitter_mult10",
    "`index`",
    "flags",
    "duration",
];

/// The integer range of a column type.
fn range(ty: &str) -> (i64, i64) {
    let unsigned = ty.ends_with("unsigned");
    let bits = match ty.split_whitespace().next().unwrap_or("") {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" => 32,
        _ => 63,
    };
    if unsigned {
        (0, (1i64 << bits) - 1)
    } else {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    }
}

fn int(v: Option<&J>, ty: &str) -> Value {
    let Some(n) = v.and_then(|v| v.as_f64()) else { return Value::NULL };
    let (lo, hi) = range(ty);
    Value::Int((n.round() as i64).clamp(lo, hi))
}

/// Text columns are `varchar(255)`: longer values are cut (in characters) rather than refused.
fn text(v: Option<&J>) -> Value {
    match v.and_then(J::as_str) {
        Some(s) => Value::Bytes(s.chars().take(255).collect::<String>().into_bytes()),
        None => Value::NULL,
    }
}

fn reversed(v: Option<&J>) -> Value {
    match v.and_then(J::as_str) {
        Some(s) => {
            Value::Bytes(s.chars().take(255).collect::<Vec<_>>().into_iter().rev().collect::<String>().into_bytes())
        }
        None => Value::NULL,
    }
}

/// An address as its column holds it: `int unsigned` (IPv4 only) or `varbinary(16)`.
pub fn ip(v: Option<&J>, shape: &Shape) -> Value {
    let Some(a) = v.and_then(J::as_str).and_then(|s| s.parse::<IpAddr>().ok()) else { return Value::NULL };
    match (a, shape.ipv6) {
        (IpAddr::V4(x), false) => Value::UInt(u32::from(x) as u64),
        (IpAddr::V6(_), false) => Value::NULL,
        (IpAddr::V4(x), true) => Value::Bytes(x.octets().to_vec()),
        (IpAddr::V6(x), true) => Value::Bytes(x.octets().to_vec()),
    }
}

/// A duration in seconds: `decimal(9,3)` text, or whole seconds (truncated, as VoIPmonitor does).
fn dur(v: Option<&J>, shape: &Shape) -> Value {
    let Some(s) = v.and_then(J::as_f64) else { return Value::NULL };
    let s = s.clamp(0.0, 999_999.999);
    if shape.ms {
        Value::Bytes(format!("{s:.3}").into_bytes())
    } else {
        Value::Int(s.trunc().min(16_777_215.0) as i64)
    }
}

/// RFC 3339 UTC (`2023-11-14T22:13:20.250000Z`) → nanoseconds since the epoch.
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..)?.trim_end_matches('Z');
    let nanos = match frac.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 => f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32),
        _ => 0,
    };
    let days = crate::time::days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + nanos)
}

/// A time as a `datetime` column gets it, in UTC or the host's local time.
fn datetime(t: i64, utc: bool, ms: bool) -> (String, (i32, u32, u32)) {
    let c = crate::time::civil(t, utc);
    let day = (c.year as i32, c.month, c.day);
    let base = format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
    if ms {
        (format!("{base}.{:03}", c.micros / 1000), day)
    } else {
        (base, day)
    }
}

fn dict(v: Option<&J>, f: impl Fn(String) -> Dict) -> Cell {
    match v.and_then(J::as_str) {
        Some(s) if !s.is_empty() => Cell::Id(f(s.to_string())),
        _ => Cell::V(Value::NULL),
    }
}

/// `cdr.flags` bits voxtap knows: the SIP transport (reference §4.2: 31 TCP, 32 UDP, 33 TLS).
fn flags(o: &Map<String, J>) -> Value {
    let bit = match o.get("transport").and_then(J::as_str) {
        Some("tcp") | Some("ws") => 1u64 << 31,
        Some("udp") => 1 << 32,
        Some("tls") | Some("wss") => 1 << 33,
        _ => 0,
    };
    Value::UInt(bit)
}

pub fn from_json(json: &str, shape: &Shape, utc: bool) -> Result<DbCdr, RowError> {
    let v: J = serde_json::from_str(json)?;
    let o = v.as_object().ok_or(RowError::Missing("an object"))?;
    let callid = o.get("callid").and_then(J::as_str).ok_or(RowError::Missing("callid"))?;
    let start_s = o.get("calldate").and_then(J::as_str).ok_or(RowError::Missing("calldate"))?;
    let start = parse_time(start_s).ok_or_else(|| RowError::Bad("calldate", start_s.into()))?;
    let end_s = o.get("callend").and_then(J::as_str).ok_or(RowError::Missing("callend"))?;
    let end = parse_time(end_s).ok_or_else(|| RowError::Bad("callend", end_s.into()))?;
    let (calldate, day) = datetime(start, utc, shape.ms);
    let (callend, _) = datetime(end, utc, shape.ms);
    let g = |k: &str| o.get(k);
    let mut h = Sha256::new();
    h.update(g("id_sensor").and_then(J::as_u64).map_or(-1i64, |x| x as i64).to_le_bytes());
    h.update(start.to_le_bytes());
    h.update(callid.as_bytes());
    let key: [u8; 32] = h.finalize().into();

    let mut cdr: Vec<Cell> =
        vec![Cell::V(Value::Bytes(calldate.clone().into_bytes())), Cell::V(Value::Bytes(callend.into_bytes()))];
    for k in ["duration", "connect_duration", "progress_time", "first_rtp_time"] {
        cdr.push(Cell::V(dur(g(k), shape)));
    }
    for k in ["caller", "caller_domain"] {
        cdr.push(Cell::V(text(g(k))));
    }
    cdr.push(Cell::V(reversed(g("caller"))));
    cdr.push(Cell::V(text(g("callername"))));
    cdr.push(Cell::V(reversed(g("callername"))));
    for k in ["called", "called_domain"] {
        cdr.push(Cell::V(text(g(k))));
    }
    cdr.push(Cell::V(reversed(g("called"))));
    cdr.push(Cell::V(ip(g("sipcallerip"), shape)));
    cdr.push(Cell::V(int(g("sipcallerport"), "smallint unsigned")));
    cdr.push(Cell::V(ip(g("sipcalledip"), shape)));
    cdr.push(Cell::V(int(g("sipcalledport"), "smallint unsigned")));
    cdr.push(Cell::V(match g("whohanged").and_then(J::as_str) {
        Some(w @ ("caller" | "callee")) => Value::Bytes(w.as_bytes().to_vec()),
        _ => Value::NULL,
    }));
    cdr.push(Cell::V(int(g("bye"), "tinyint unsigned")));
    cdr.push(dict(g("lastSIPresponse"), Dict::SipResponse));
    cdr.push(Cell::V(int(g("lastSIPresponseNum"), "smallint unsigned")));
    cdr.push(Cell::V(int(g("reason_sip_cause"), "smallint unsigned")));
    cdr.push(dict(g("reason_sip_text"), |s| Dict::Reason(1, s)));
    cdr.push(Cell::V(int(g("reason_q850_cause"), "smallint unsigned")));
    cdr.push(dict(g("reason_q850_text"), |s| Dict::Reason(2, s)));
    for p in ["a", "b"] {
        for (col, ty) in SIDE_COLUMNS {
            cdr.push(Cell::V(int(g(&format!("{p}_{col}")), ty)));
        }
        cdr.push(Cell::V(ip(g(&format!("{p}_saddr")), shape)));
        cdr.push(dict(g(&format!("{p}_ua")), Dict::Ua));
        cdr.push(Cell::V(dur(g(&format!("{p}_last_rtp_from_end")), shape)));
    }
    cdr.push(Cell::V(int(g("payload"), "int")));
    cdr.push(Cell::V(int(g("jitter_mult10"), "mediumint unsigned")));
    cdr.push(Cell::V(int(g("mos_min_mult10"), "tinyint unsigned")));
    cdr.push(Cell::V(int(g("packet_loss_perc_mult1000"), "mediumint unsigned")));
    cdr.push(Cell::V(int(g("lost"), "mediumint unsigned")));
    cdr.push(Cell::V(flags(o)));
    cdr.push(Cell::V(int(g("vlan"), "smallint")));
    cdr.push(Cell::V(int(g("id_sensor"), "smallint unsigned")));

    let a_index = g("a_index").and_then(J::as_u64);
    let b_index = g("b_index").and_then(J::as_u64);
    let mut rtp = Vec::new();
    for (i, s) in g("rtp").and_then(J::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let sg = |k: &str| s.get(k);
        let index = i as u64 + 1;
        // cdr_rtp.flags: bit 1 the stream is the call's A or B, bit 2 sent by the caller, bit 3 by the callee.
        let mut fl = 0u64;
        if Some(index) == a_index || Some(index) == b_index {
            fl |= 1 << 1;
        }
        match sg("sender").and_then(J::as_str) {
            Some("caller") => fl |= 1 << 2,
            Some("callee") => fl |= 1 << 3,
            _ => {}
        }
        let first = sg("first_time").and_then(J::as_f64);
        let last = sg("last_time").and_then(J::as_f64);
        let span = match (first, last) {
            (Some(f), Some(l)) => Some(J::from(l - f)),
            _ => None,
        };
        rtp.push(vec![
            ip(sg("saddr"), shape),
            int(sg("sport"), "smallint unsigned"),
            ip(sg("daddr"), shape),
            int(sg("dport"), "smallint unsigned"),
            int(sg("ssrc"), "int unsigned"),
            int(sg("received"), "mediumint unsigned"),
            int(sg("lost"), "mediumint unsigned"),
            dur(sg("first_time"), shape),
            int(sg("payload"), "smallint unsigned"),
            int(sg("maxjitter").and_then(J::as_f64).map(|x| J::from(x * 10.0)).as_ref(), "smallint unsigned"),
            Value::UInt(index.min(255)),
            Value::UInt(fl),
            dur(span.as_ref(), shape),
        ]);
    }
    let proxies = g("proxies")
        .and_then(J::as_array)
        .map(|a| a.iter().map(|p| ip(Some(p), shape)).filter(|v| *v != Value::NULL).collect())
        .unwrap_or_default();
    Ok(DbCdr {
        key,
        calldate,
        day,
        cdr,
        fbasename: g("fbasename").and_then(J::as_str).unwrap_or(callid).to_string(),
        rtp,
        proxies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips() {
        let t = parse_time("2023-11-14T22:13:20.250000Z").unwrap();
        assert_eq!(crate::time::rfc3339_utc(t), "2023-11-14T22:13:20.250000Z");
        assert_eq!(datetime(t, true, true).0, "2023-11-14 22:13:20.250");
        assert_eq!(datetime(t, true, false).0, "2023-11-14 22:13:20");
        assert!(parse_time("garbage").is_none());
    }

    #[test]
    fn columns_and_values_line_up() {
        let json = r#"{"callid":"x@y","calldate":"2024-02-29T23:59:59.999500Z","callend":"2024-03-01T00:00:10Z",
            "duration":10.0005,"caller":"123","a_lost":-3,"a_maxjitter":70000,"sipcallerip":"10.0.0.1",
            "sipcalledip":"2001:db8::1","lastSIPresponse":"200 OK","a_ua":"ua","rtp":[{"saddr":"10.0.0.1",
            "lost":-1,"first_time":1.0,"last_time":3.5,"sender":"caller","maxjitter":1.26}],"a_index":1}"#;
        let shape = Shape { ipv6: false, ms: true, partition: false };
        let c = from_json(json, &shape, true).unwrap();
        let cols = cdr_columns();
        assert_eq!(cols.len(), c.cdr.len());
        let at = |name: &str| &c.cdr[cols.iter().position(|x| x == name).unwrap()];
        assert!(matches!(at("caller_reverse"), Cell::V(Value::Bytes(b)) if b == b"321"));
        assert!(matches!(at("a_lost"), Cell::V(Value::Int(0))));
        assert!(matches!(at("a_maxjitter"), Cell::V(Value::Int(65535))));
        assert!(matches!(at("sipcallerip"), Cell::V(Value::UInt(0x0a00_0001))));
        assert!(matches!(at("sipcalledip"), Cell::V(Value::NULL)));
        assert!(matches!(at("duration"), Cell::V(Value::Bytes(b)) if b == b"10.001" || b == b"10.000"));
        assert!(matches!(at("lastSIPresponse_id"), Cell::Id(Dict::SipResponse(s)) if s == "200 OK"));
        assert_eq!(c.rtp[0].len(), RTP_COLUMNS.len());
        assert_eq!(c.rtp[0][6], Value::Int(0));
        assert_eq!(c.rtp[0][9], Value::Int(13));
        assert_eq!(c.rtp[0][11], Value::UInt(0b110));
        assert_eq!(c.day, (2024, 2, 29));
        let v6 = from_json(json, &Shape { ipv6: true, ..shape }, true).unwrap();
        let pos = cols.iter().position(|x| x == "sipcalledip").unwrap();
        assert!(matches!(&v6.cdr[pos], Cell::V(Value::Bytes(b)) if b.len() == 16));
        assert!(from_json("[]", &shape, true).is_err());
        assert!(from_json(r#"{"callid":"a","calldate":"x","callend":"y"}"#, &shape, true).is_err());
    }
}
