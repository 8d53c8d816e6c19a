//! A CDR (the JSON object voxtap writes, its canonical form) → the values of its `cdr`, `cdr_next`, `cdr_rtp` and
//! `cdr_proxy` rows. Numbers are clamped to their column's range (a stream that received duplicates has a
//! negative loss, which an unsigned column cannot hold: it becomes 0).

use std::net::IpAddr;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::schema::{Shape, SIDE_COLUMNS};
use super::tsv::{self, Fields};

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

#[derive(Debug, Clone)]
pub struct DbCdr {
    /// Idempotency key: the first 16 bytes of SHA-256 of sensor, call start and Call-ID (with `calldate`, the
    /// primary key of `voxtap_cdr_stored`).
    pub key: [u8; 16],
    /// `calldate` as stored (UTC or local time, per `utc`) and its day, for partitions.
    pub calldate: String,
    pub day: (i32, u32, u32),
    /// The `cdr` row (`cdr_columns()` in order) as LOAD DATA text, the dictionary ids left out: each of `holes`
    /// says where one goes.
    pub cdr: Vec<u8>,
    pub holes: Vec<(usize, Dict)>,
    /// At most 255 characters, as `cdr_next.fbasename` holds it.
    pub fbasename: String,
    /// `cdr_rtp` rows, a line each: the values after `cdr_ID, calldate`, in `RTP_COLUMNS` order.
    pub rtp: Vec<u8>,
    /// `cdr_proxy.dst` values, a line each.
    pub proxies: Vec<u8>,
}

impl DbCdr {
    /// Appends the `cdr` row (no newline) with the dictionary ids `id` gives; a text without one is NULL.
    pub fn cdr_line(&self, id: impl Fn(&Dict) -> Option<u64>, out: &mut Vec<u8>) {
        let mut at = 0;
        for (off, d) in &self.holes {
            out.extend_from_slice(&self.cdr[at..*off]);
            match id(d) {
                Some(v) => tsv::push_uint(out, v),
                None => out.extend_from_slice(b"\\N"),
            }
            at = *off;
        }
        out.extend_from_slice(&self.cdr[at..]);
    }
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
struct Obj<'a>(Map<'a>);

type Map<'a> = HashMap<&'a str, &'a RawValue, foldhash::fast::RandomState>;

impl<'a> Obj<'a> {
    fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let o = serde::Deserializer::deserialize_map(&mut de, ObjVisitor(256))?;
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

/// Builds the map at its final size at once (JSON gives no size hint; a CDR has some 190 fields, a stream 20).
struct ObjVisitor(usize);

/// A stream of the CDR's `rtp` array.
impl<'de> serde::Deserialize<'de> for Obj<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjVisitor(32))
    }
}

impl<'de> serde::de::Visitor<'de> for ObjVisitor {
    type Value = Obj<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Obj<'de>, M::Error> {
        let mut o = Map::with_capacity_and_hasher(self.0, Default::default());
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

fn int(f: &mut Fields, v: Option<f64>, ty: &str) {
    match v {
        Some(n) => {
            let (lo, hi) = range(ty);
            f.int((n.round() as i64).clamp(lo, hi));
        }
        None => f.null(),
    }
}

/// The first `n` characters of a text.
fn cut(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Text columns are `varchar(255)`: longer values are cut (in characters) rather than refused.
fn text(f: &mut Fields, v: Option<Cow<'_, str>>) {
    match v {
        Some(s) => f.bytes(cut(&s, 255).as_bytes()),
        None => f.null(),
    }
}

fn reversed(f: &mut Fields, v: Option<Cow<'_, str>>) {
    match v {
        Some(s) => f.bytes(cut(&s, 255).chars().rev().collect::<String>().as_bytes()),
        None => f.null(),
    }
}

/// An address as its column holds it: `int unsigned` (IPv4 only) or `varbinary(16)`.
fn ip(f: &mut Fields, v: Option<Cow<'_, str>>, shape: &Shape) {
    match (v.and_then(|s| s.parse::<IpAddr>().ok()), shape.ipv6) {
        (Some(IpAddr::V4(x)), false) => f.uint(u32::from(x) as u64),
        (Some(IpAddr::V4(x)), true) => f.bytes(&x.octets()),
        (Some(IpAddr::V6(x)), true) => f.bytes(&x.octets()),
        (Some(IpAddr::V6(_)), false) | (None, _) => f.null(),
    }
}

/// A duration in seconds: `decimal(9,3)` text, or whole seconds (truncated, as VoIPmonitor does).
fn dur(f: &mut Fields, v: Option<f64>, shape: &Shape) {
    let Some(s) = v else { return f.null() };
    let s = s.clamp(0.0, 999_999.999);
    if shape.ms {
        f.fixed3(s);
    } else {
        f.int(s.trunc().min(16_777_215.0) as i64);
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

/// A dictionary id: a hole in the row for the writer to fill, or NULL when there is no text.
fn dict(f: &mut Fields, holes: &mut Vec<(usize, Dict)>, v: Option<Cow<'_, str>>, d: impl Fn(String) -> Dict) {
    match v {
        Some(s) if !s.is_empty() => holes.push((f.hole(), d(s.into_owned()))),
        _ => f.null(),
    }
}

/// `cdr.flags` bits voxtap knows: the SIP transport (reference §4.2: 31 TCP, 32 UDP, 33 TLS).
fn flags(transport: Option<Cow<'_, str>>) -> u64 {
    match transport.as_deref() {
        Some("tcp") | Some("ws") => 1u64 << 31,
        Some("udp") => 1 << 32,
        Some("tls") | Some("wss") => 1 << 33,
        _ => 0,
    }
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
    let digest: [u8; 32] = h.finalize().into();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);

    let mut f = Fields::with_capacity(640);
    let mut holes = Vec::with_capacity(5);
    f.bytes(calldate.as_bytes());
    f.bytes(callend.as_bytes());
    for k in ["duration", "connect_duration", "progress_time", "first_rtp_time"] {
        dur(&mut f, o.num(k), shape);
    }
    for k in ["caller", "caller_domain"] {
        text(&mut f, o.str(k));
    }
    reversed(&mut f, o.str("caller"));
    text(&mut f, o.str("callername"));
    reversed(&mut f, o.str("callername"));
    for k in ["called", "called_domain"] {
        text(&mut f, o.str(k));
    }
    reversed(&mut f, o.str("called"));
    ip(&mut f, o.str("sipcallerip"), shape);
    int(&mut f, o.num("sipcallerport"), "smallint unsigned");
    ip(&mut f, o.str("sipcalledip"), shape);
    int(&mut f, o.num("sipcalledport"), "smallint unsigned");
    match o.str("whohanged").as_deref() {
        Some(w @ ("caller" | "callee")) => f.bytes(w.as_bytes()),
        _ => f.null(),
    }
    int(&mut f, o.num("bye"), "tinyint unsigned");
    dict(&mut f, &mut holes, o.str("lastSIPresponse"), Dict::SipResponse);
    int(&mut f, o.num("lastSIPresponseNum"), "smallint unsigned");
    int(&mut f, o.num("reason_sip_cause"), "smallint unsigned");
    dict(&mut f, &mut holes, o.str("reason_sip_text"), |s| Dict::Reason(1, s));
    int(&mut f, o.num("reason_q850_cause"), "smallint unsigned");
    dict(&mut f, &mut holes, o.str("reason_q850_text"), |s| Dict::Reason(2, s));
    for keys in side_keys() {
        for ((_, ty), k) in SIDE_COLUMNS.iter().zip(keys) {
            int(&mut f, o.num(k), ty);
        }
        let n = SIDE_COLUMNS.len();
        ip(&mut f, o.str(&keys[n]), shape);
        dict(&mut f, &mut holes, o.str(&keys[n + 1]), Dict::Ua);
        dur(&mut f, o.num(&keys[n + 2]), shape);
    }
    int(&mut f, o.num("payload"), "int");
    int(&mut f, o.num("jitter_mult10"), "mediumint unsigned");
    int(&mut f, o.num("mos_min_mult10"), "tinyint unsigned");
    int(&mut f, o.num("packet_loss_perc_mult1000"), "mediumint unsigned");
    int(&mut f, o.num("lost"), "mediumint unsigned");
    f.uint(flags(o.str("transport")));
    int(&mut f, o.num("vlan"), "smallint");
    int(&mut f, o.num("id_sensor"), "smallint unsigned");

    let index_of = |k: &str| o.raw(k).and_then(|r| r.get().parse::<u64>().ok());
    let (a_index, b_index) = (index_of("a_index"), index_of("b_index"));
    let streams: Vec<Obj<'_>> = match o.raw("rtp") {
        Some(r) if r.get().starts_with('[') => serde_json::from_str::<Vec<Obj<'_>>>(r.get())?,
        _ => Vec::new(),
    };
    let mut rtp = Fields::with_capacity(streams.len() * 80);
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
        ip(&mut rtp, s.str("saddr"), shape);
        int(&mut rtp, s.num("sport"), "smallint unsigned");
        ip(&mut rtp, s.str("daddr"), shape);
        int(&mut rtp, s.num("dport"), "smallint unsigned");
        int(&mut rtp, s.num("ssrc"), "int unsigned");
        int(&mut rtp, s.num("received"), "mediumint unsigned");
        int(&mut rtp, s.num("lost"), "mediumint unsigned");
        dur(&mut rtp, first, shape);
        int(&mut rtp, s.num("payload"), "smallint unsigned");
        int(&mut rtp, s.num("maxjitter").map(|x| x * 10.0), "smallint unsigned");
        rtp.uint(index.min(255));
        rtp.uint(fl);
        dur(&mut rtp, span, shape);
        rtp.end_row();
    }
    let mut proxies = Fields::default();
    if let Some(r) = o.raw("proxies").filter(|r| r.get().starts_with('[')) {
        for p in serde_json::from_str::<Vec<&RawValue>>(r.get())? {
            let Some(a) = string(Some(p)) else { continue };
            // Only what the column can hold: an IPv6 proxy has no row without `ipv6 = yes`.
            if a.parse::<IpAddr>().is_ok_and(|x| shape.ipv6 || x.is_ipv4()) {
                ip(&mut proxies, Some(a), shape);
                proxies.end_row();
            }
        }
    }
    let fbasename = cut(&o.str("fbasename").unwrap_or_else(|| callid.clone()), 255).to_string();
    Ok(DbCdr { key, calldate, day, cdr: f.text, holes, fbasename, rtp: rtp.text, proxies: proxies.text })
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
        use mysql_async::Value;
        let json = r#"{"callid":"x@y","calldate":"2024-02-29T23:59:59.999500Z","callend":"2024-03-01T00:00:10Z",
            "duration":10.0005,"caller":"123","a_lost":-3,"a_maxjitter":70000,"sipcallerip":"10.0.0.1",
            "sipcalledip":"2001:db8::1","lastSIPresponse":"200 OK","a_ua":"ua","rtp":[{"saddr":"10.0.0.1",
            "lost":-1,"first_time":1.0,"last_time":3.5,"sender":"caller","maxjitter":1.26}],"a_index":1,
            "callername":"tab\there","proxies":["10.9.9.9","2001:db8::2","junk"]}"#;
        let shape = Shape { ipv6: false, ms: true, partition: false };
        let c = from_json(json, &shape, true).unwrap();
        let cols = cdr_columns();
        let row = |c: &DbCdr| {
            let mut line = Vec::new();
            c.cdr_line(|d| matches!(d, Dict::SipResponse(s) if s == "200 OK").then_some(7), &mut line);
            tsv::values(&line)
        };
        let v = row(&c);
        assert_eq!(cols.len(), v.len());
        let at = |name: &str| v[cols.iter().position(|x| x == name).unwrap()].clone();
        let b = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        assert_eq!(at("calldate"), b("2024-02-29 23:59:59.999"));
        assert_eq!(at("caller_reverse"), b("321"));
        assert_eq!(at("callername"), b("tab\there"));
        assert_eq!(at("callername_reverse"), b("ereh\tbat"));
        assert_eq!(at("a_lost"), b("0"));
        assert_eq!(at("a_maxjitter"), b("65535"));
        assert_eq!(at("sipcallerip"), b("167772161"));
        assert_eq!(at("sipcalledip"), Value::NULL);
        assert!(at("duration") == b("10.001") || at("duration") == b("10.000"));
        assert_eq!(at("lastSIPresponse_id"), b("7"));
        // Known to the dictionary only once the writer has its id.
        assert_eq!(at("a_ua_id"), Value::NULL);
        assert_eq!(c.holes.len(), 2);
        let rtp: Vec<&[u8]> = c.rtp.split(|&x| x == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(rtp.len(), 1);
        let r = tsv::values(rtp[0]);
        assert_eq!(r.len(), RTP_COLUMNS.len());
        assert_eq!(r[6], b("0"));
        assert_eq!(r[9], b("13"));
        assert_eq!(r[11], b("6"));
        assert_eq!(r[12], b("2.500"));
        assert_eq!(&c.proxies[..], b"168364297\n");
        assert_eq!(c.day, (2024, 2, 29));
        let v6 = from_json(json, &Shape { ipv6: true, ..shape }, true).unwrap();
        let at6 = row(&v6)[cols.iter().position(|x| x == "sipcalledip").unwrap()].clone();
        assert!(matches!(at6, Value::Bytes(b) if b.len() == 16));
        assert_eq!(v6.proxies.iter().filter(|&&x| x == b'\n').count(), 2);
        assert_eq!(v6.key, c.key);
        assert!(from_json("[]", &shape, true).is_err());
        assert!(from_json(r#"{"callid":"a","calldate":"x","callend":"y"}"#, &shape, true).is_err());
    }
}
