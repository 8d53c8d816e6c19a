//! A CDR (the JSON object voxtap writes, its canonical form) → the values of its `cdr`, `cdr_next`, `cdr_rtp` and
//! `cdr_proxy` rows. Numbers are clamped to their column's range (a stream that received duplicates has a
//! negative loss, which an unsigned column cannot hold: it becomes 0).

use std::net::IpAddr;

use mysql_async::Value;
use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;
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

/// A JSON object whose values stay unparsed text until a column asks for one: a CDR has about 190 fields and
/// the parser thread reads thousands of CDRs a second, so no tree of values is built.
struct Obj<'a>(Fields<'a>);

type Fields<'a> = HashMap<&'a str, &'a RawValue, foldhash::fast::RandomState>;

impl<'a> Obj<'a> {
    fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let o = serde::Deserializer::deserialize_map(&mut de, ObjVisitor)?;
        de.end()?;
        Ok(o)
    }

    fn raw(&self, k: &str) -> Option<&'a RawValue> {
        self.0.get(k).copied()
    }

    fn num(&self, k: &str) -> Option<f64> {
        num(self.raw(k))
    }

    fn str(&self, k: &str) -> Option<Cow<'a, str>> {
        string(self.raw(k))
    }
}

/// Builds the map at its final size at once (JSON gives no size hint, and a CDR has some 190 fields).
struct ObjVisitor;

impl<'de> serde::de::Visitor<'de> for ObjVisitor {
    type Value = Obj<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Obj<'de>, M::Error> {
        let mut o = Fields::with_capacity_and_hasher(256, Default::default());
        while let Some((k, v)) = m.next_entry::<&'de str, &'de RawValue>()? {
            o.insert(k, v);
        }
        Ok(Obj(o))
    }
}

/// A JSON number (anything else, `null` included, is no number).
fn num(v: Option<&RawValue>) -> Option<f64> {
    let t = v?.get();
    if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        t.parse().ok()
    } else {
        None
    }
}

/// A JSON string, borrowed from the text when it has no escapes.
fn string(v: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let t = v?.get();
    let inner = t.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(t).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn int(v: Option<f64>, ty: &str) -> Value {
    let Some(n) = v else { return Value::NULL };
    let (lo, hi) = range(ty);
    Value::Int((n.round() as i64).clamp(lo, hi))
}

/// Text columns are `varchar(255)`: longer values are cut (in characters) rather than refused.
fn text(v: Option<Cow<'_, str>>) -> Value {
    match v {
        Some(s) => Value::Bytes(s.chars().take(255).collect::<String>().into_bytes()),
        None => Value::NULL,
    }
}

fn reversed(v: Option<Cow<'_, str>>) -> Value {
    match v {
        Some(s) => {
            Value::Bytes(s.chars().take(255).collect::<Vec<_>>().into_iter().rev().collect::<String>().into_bytes())
        }
        None => Value::NULL,
    }
}

/// An address as its column holds it: `int unsigned` (IPv4 only) or `varbinary(16)`.
fn ip(v: Option<Cow<'_, str>>, shape: &Shape) -> Value {
    let Some(a) = v.and_then(|s| s.parse::<IpAddr>().ok()) else { return Value::NULL };
    match (a, shape.ipv6) {
        (IpAddr::V4(x), false) => Value::UInt(u32::from(x) as u64),
        (IpAddr::V6(_), false) => Value::NULL,
        (IpAddr::V4(x), true) => Value::Bytes(x.octets().to_vec()),
        (IpAddr::V6(x), true) => Value::Bytes(x.octets().to_vec()),
    }
}

/// A duration in seconds: `decimal(9,3)` text, or whole seconds (truncated, as VoIPmonitor does).
fn dur(v: Option<f64>, shape: &Shape) -> Value {
    let Some(s) = v else { return Value::NULL };
    let s = s.clamp(0.0, 999_999.999);
    if shape.ms {
        Value::Bytes(format!("{s:.3}").into_bytes())
    } else {
        Value::Int(s.trunc().min(16_777_215.0) as i64)
    }
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

fn dict(v: Option<Cow<'_, str>>, f: impl Fn(String) -> Dict) -> Cell {
    match v {
        Some(s) if !s.is_empty() => Cell::Id(f(s.into_owned())),
        _ => Cell::V(Value::NULL),
    }
}

/// `cdr.flags` bits voxtap knows: the SIP transport (reference §4.2: 31 TCP, 32 UDP, 33 TLS).
fn flags(transport: Option<Cow<'_, str>>) -> Value {
    let bit = match transport.as_deref() {
        Some("tcp") | Some("ws") => 1u64 << 31,
        Some("udp") => 1 << 32,
        Some("tls") | Some("wss") => 1 << 33,
        _ => 0,
    };
    Value::UInt(bit)
}

/// The JSON names of the per-side columns, `a_…` and `b_…`, made once.
fn side_keys() -> &'static [Vec<String>; 2] {
    static K: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        ["a", "b"].map(|p| {
            SIDE_COLUMNS
                .iter()
                .map(|(c, _)| format!("{p}_{c}"))
                .chain(["saddr", "ua", "last_rtp_from_end"].iter().map(|c| format!("{p}_{c}")))
                .collect()
        })
    })
}

pub fn from_json(json: &str, shape: &Shape, utc: bool) -> Result<DbCdr, RowError> {
    let o = Obj::parse(json)?;
    let callid = o.str("callid").ok_or(RowError::Missing("callid"))?;
    let start_s = o.str("calldate").ok_or(RowError::Missing("calldate"))?;
    let start =
        crate::time::parse_rfc3339_utc(&start_s).ok_or_else(|| RowError::Bad("calldate", start_s.to_string()))?;
    let end_s = o.str("callend").ok_or(RowError::Missing("callend"))?;
    let end = crate::time::parse_rfc3339_utc(&end_s).ok_or_else(|| RowError::Bad("callend", end_s.to_string()))?;
    let (calldate, day) = datetime(start, utc, shape.ms);
    let (callend, _) = datetime(end, utc, shape.ms);
    let mut h = Sha256::new();
    let sensor = o.raw("id_sensor").and_then(|r| r.get().parse::<u64>().ok());
    h.update(sensor.map_or(-1i64, |x| x as i64).to_le_bytes());
    h.update(start.to_le_bytes());
    h.update(callid.as_bytes());
    let key: [u8; 32] = h.finalize().into();

    let mut cdr: Vec<Cell> = Vec::with_capacity(160);
    cdr.push(Cell::V(Value::Bytes(calldate.clone().into_bytes())));
    cdr.push(Cell::V(Value::Bytes(callend.into_bytes())));
    for k in ["duration", "connect_duration", "progress_time", "first_rtp_time"] {
        cdr.push(Cell::V(dur(o.num(k), shape)));
    }
    for k in ["caller", "caller_domain"] {
        cdr.push(Cell::V(text(o.str(k))));
    }
    cdr.push(Cell::V(reversed(o.str("caller"))));
    cdr.push(Cell::V(text(o.str("callername"))));
    cdr.push(Cell::V(reversed(o.str("callername"))));
    for k in ["called", "called_domain"] {
        cdr.push(Cell::V(text(o.str(k))));
    }
    cdr.push(Cell::V(reversed(o.str("called"))));
    cdr.push(Cell::V(ip(o.str("sipcallerip"), shape)));
    cdr.push(Cell::V(int(o.num("sipcallerport"), "smallint unsigned")));
    cdr.push(Cell::V(ip(o.str("sipcalledip"), shape)));
    cdr.push(Cell::V(int(o.num("sipcalledport"), "smallint unsigned")));
    cdr.push(Cell::V(match o.str("whohanged").as_deref() {
        Some(w @ ("caller" | "callee")) => Value::Bytes(w.as_bytes().to_vec()),
        _ => Value::NULL,
    }));
    cdr.push(Cell::V(int(o.num("bye"), "tinyint unsigned")));
    cdr.push(dict(o.str("lastSIPresponse"), Dict::SipResponse));
    cdr.push(Cell::V(int(o.num("lastSIPresponseNum"), "smallint unsigned")));
    cdr.push(Cell::V(int(o.num("reason_sip_cause"), "smallint unsigned")));
    cdr.push(dict(o.str("reason_sip_text"), |s| Dict::Reason(1, s)));
    cdr.push(Cell::V(int(o.num("reason_q850_cause"), "smallint unsigned")));
    cdr.push(dict(o.str("reason_q850_text"), |s| Dict::Reason(2, s)));
    for keys in side_keys() {
        for ((_, ty), k) in SIDE_COLUMNS.iter().zip(keys) {
            cdr.push(Cell::V(int(o.num(k), ty)));
        }
        let n = SIDE_COLUMNS.len();
        cdr.push(Cell::V(ip(o.str(&keys[n]), shape)));
        cdr.push(dict(o.str(&keys[n + 1]), Dict::Ua));
        cdr.push(Cell::V(dur(o.num(&keys[n + 2]), shape)));
    }
    cdr.push(Cell::V(int(o.num("payload"), "int")));
    cdr.push(Cell::V(int(o.num("jitter_mult10"), "mediumint unsigned")));
    cdr.push(Cell::V(int(o.num("mos_min_mult10"), "tinyint unsigned")));
    cdr.push(Cell::V(int(o.num("packet_loss_perc_mult1000"), "mediumint unsigned")));
    cdr.push(Cell::V(int(o.num("lost"), "mediumint unsigned")));
    cdr.push(Cell::V(flags(o.str("transport"))));
    cdr.push(Cell::V(int(o.num("vlan"), "smallint")));
    cdr.push(Cell::V(int(o.num("id_sensor"), "smallint unsigned")));

    let index_of = |k: &str| o.raw(k).and_then(|r| r.get().parse::<u64>().ok());
    let (a_index, b_index) = (index_of("a_index"), index_of("b_index"));
    let streams: Vec<Obj<'_>> = match o.raw("rtp") {
        Some(r) if r.get().starts_with('[') => {
            serde_json::from_str::<Vec<Fields<'_>>>(r.get())?.into_iter().map(Obj).collect()
        }
        _ => Vec::new(),
    };
    let mut rtp = Vec::with_capacity(streams.len());
    for (i, s) in streams.iter().enumerate() {
        let index = i as u64 + 1;
        // cdr_rtp.flags: bit 1 the stream is the call's A or B, bit 2 sent by the caller, bit 3 by the callee.
        let mut fl = 0u64;
        if Some(index) == a_index || Some(index) == b_index {
            fl |= 1 << 1;
        }
        match s.str("sender").as_deref() {
            Some("caller") => fl |= 1 << 2,
            Some("callee") => fl |= 1 << 3,
            _ => {}
        }
        let first = s.num("first_time");
        let span = match (first, s.num("last_time")) {
            (Some(f), Some(l)) => Some(l - f),
            _ => None,
        };
        rtp.push(vec![
            ip(s.str("saddr"), shape),
            int(s.num("sport"), "smallint unsigned"),
            ip(s.str("daddr"), shape),
            int(s.num("dport"), "smallint unsigned"),
            int(s.num("ssrc"), "int unsigned"),
            int(s.num("received"), "mediumint unsigned"),
            int(s.num("lost"), "mediumint unsigned"),
            dur(first, shape),
            int(s.num("payload"), "smallint unsigned"),
            int(s.num("maxjitter").map(|x| x * 10.0), "smallint unsigned"),
            Value::UInt(index.min(255)),
            Value::UInt(fl),
            dur(span, shape),
        ]);
    }
    let proxies = match o.raw("proxies") {
        Some(r) if r.get().starts_with('[') => serde_json::from_str::<Vec<&RawValue>>(r.get())?
            .into_iter()
            .map(|p| ip(string(Some(p)), shape))
            .filter(|v| *v != Value::NULL)
            .collect(),
        _ => Vec::new(),
    };
    let fbasename = o.str("fbasename").unwrap_or_else(|| callid.clone()).into_owned();
    Ok(DbCdr { key, calldate, day, cdr, fbasename, rtp, proxies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips() {
        let t = crate::time::parse_rfc3339_utc("2023-11-14T22:13:20.250000Z").unwrap();
        assert_eq!(crate::time::rfc3339_utc(t), "2023-11-14T22:13:20.250000Z");
        assert_eq!(datetime(t, true, true).0, "2023-11-14 22:13:20.250");
        assert_eq!(datetime(t, true, false).0, "2023-11-14 22:13:20");
        assert!(crate::time::parse_rfc3339_utc("garbage").is_none());
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
