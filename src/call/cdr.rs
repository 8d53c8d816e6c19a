//! A finished call → one CDR. Field names are VoIPmonitor's `cdr` column names (reference §4.2), with the
//! integer ×10/×1000 conventions of those columns; `rtp` lists every stream with plain millisecond values.

use super::jsonw::{self, Obj, Val};
use super::{Call, EndReason, Side, Stream};
use crate::time::{dur_secs, rfc3339_utc, round_micros, Nanos};

/// A CDR ready for output: the sort key and the JSON object, already serialised (one allocation per call
/// instead of hundreds while CDRs wait for the end of the run to be sorted).
pub struct Cdr {
    pub calldate: Nanos,
    pub callend: Nanos,
    pub callid: String,
    pub json: String,
    pub streams: usize,
}

impl Cdr {
    /// A CDR that another sensor built (its JSON, as it travels over the link); `None` when it is not one.
    pub fn from_json(json: String) -> Option<Cdr> {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            callid: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            calldate: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            callend: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            rtp: Vec<&'a serde_json::value::RawValue>,
        }
        let h: Head = serde_json::from_str(&json).ok()?;
        Some(Cdr {
            calldate: crate::time::parse_rfc3339_utc(&h.calldate)?,
            callend: crate::time::parse_rfc3339_utc(&h.callend)?,
            callid: h.callid.into_owned(),
            streams: h.rtp.len(),
            json,
        })
    }
}

impl Cdr {
    /// A CDR a remote sent, with `id_sensor` set to the sensor that proved its identity on the link: whatever the
    /// remote wrote there, a CDR is stored under the sensor that sent it (`None` when the sensor has no id).
    pub fn from_remote_json(json: &str, id_sensor: Option<u16>) -> Option<Cdr> {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
        v.insert("id_sensor".into(), id_sensor.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null));
        Cdr::from_json(serde_json::to_string(&v).ok()?)
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// VoIPmonitor's `bye` column (reference §5.5).
pub fn bye_code(c: &Call, reason: EndReason) -> u8 {
    match reason {
        EndReason::Absolute => 102,
        EndReason::ByeTimeout => 103,
        EndReason::RtpTimeout => 104,
        EndReason::Oneway => 105,
        EndReason::Zombie => 107,
        EndReason::SipWithoutRtp => 108,
        EndReason::MaxPackets => 109,
        EndReason::Normal => {
            if c.bye_ts.is_some() && !c.answered && c.first_18x.is_none() {
                106
            } else if c.answered {
                match (c.bye_ts.is_some(), c.bye_confirmed) {
                    (true, true) => 3,
                    (true, false) => 2,
                    _ => 1,
                }
            } else {
                0
            }
        }
    }
}

/// The stream the caller (`Side::Caller`) or the callee sends: the non-video one with most packets.
fn pick(c: &Call, side: Side) -> Option<usize> {
    c.streams
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sender == side && !s.stats.video && s.stats.packets > 0)
        .max_by_key(|(i, s)| (s.stats.packets, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// A and B streams. When both sides' SDP routes every stream one way (a media relay announced on both legs,
/// both phones behind one address), the two busiest streams are split by source: the one sent from the caller's
/// address is A.
fn pick_ab(c: &Call) -> (Option<usize>, Option<usize>) {
    let (a, b) = (pick(c, Side::Caller), pick(c, Side::Callee));
    if a.is_some() && b.is_some() {
        return (a, b);
    }
    let mut cand: Vec<usize> =
        (0..c.streams.len()).filter(|&i| !c.streams[i].stats.video && c.streams[i].stats.packets > 0).collect();
    if cand.len() < 2 {
        return (a, b);
    }
    cand.sort_by_key(|&i| (std::cmp::Reverse(c.streams[i].stats.packets), i));
    let (x, y) = (cand[0], cand[1]);
    let from_caller = |i: usize| c.streams[i].src == c.sip_caller.0;
    match (from_caller(x), from_caller(y)) {
        (false, true) => (Some(y), Some(x)),
        (true, false) => (Some(x), Some(y)),
        // No address tells them apart: the stream that started first is A (streams are in start order).
        _ => (Some(x.min(y)), Some(x.max(y))),
    }
}

struct StreamOut {
    mos: [(f64, f64); 3],
}

pub fn build(c: &mut Call, reason: EndReason, id_sensor: Option<u16>) -> Cdr {
    // Streams in order of their first packet, so the output never depends on arrival interleaving.
    c.streams.sort_by(|a, b| {
        (a.stats.first_ts, a.src, a.sport, a.dst, a.dport, a.ssrc).cmp(&(
            b.stats.first_ts,
            b.src,
            b.sport,
            b.dst,
            b.dport,
            b.ssrc,
        ))
    });
    let outs: Vec<StreamOut> = c.streams.iter_mut().map(|s| StreamOut { mos: s.stats.mos() }).collect();
    let start = c.first_ts;
    let end = c.last_ts;
    let mut m = Obj::new(4096 + 512 * c.streams.len());
    m.put("callid", &c.callid);
    m.put("calldate", rfc3339_utc(round_micros(start)));
    m.put("callend", rfc3339_utc(round_micros(end)));
    m.put("duration", dur_secs(end - start));
    m.put("connect_duration", c.first_2xx.map(|t| dur_secs(end - t)));
    let progress = c.first_18x.or(c.first_2xx);
    m.put("progress_time", progress.map(|t| dur_secs(t - start)));
    m.put("first_rtp_time", c.first_rtp.map(|t| dur_secs(t - start)));
    let caller_user = if c.caller.user.eq_ignore_ascii_case("anonymous") && !c.pai_user.is_empty() {
        &c.pai_user
    } else {
        &c.caller.user
    };
    m.put("caller", caller_user);
    m.put("caller_domain", &c.caller.domain);
    m.put("callername", &c.caller.display);
    m.put("called", &c.called.user);
    m.put("called_domain", &c.called.domain);
    m.put("sipcallerip", c.sip_caller.0.to_string());
    m.put("sipcallerport", c.sip_caller.1);
    m.put("sipcalledip", c.sip_called.0.to_string());
    m.put("sipcalledport", c.sip_called.1);
    let last = c.ok_response.as_ref().or(c.final_fail.as_ref()).or(c.last_provisional.as_ref());
    m.put("lastSIPresponseNum", last.map(|l| l.0).unwrap_or(0));
    m.put("lastSIPresponse", last.map(|l| l.1.as_str()).unwrap_or(""));
    m.put("bye", bye_code(c, reason));
    m.put("whohanged", c.whohanged.map(Side::as_str));
    m.put("id_sensor", id_sensor);
    m.put("transport", c.transport.as_str());
    m.put("vlan", c.vlan);
    m.put("a_ua", &c.ua_caller);
    m.put("b_ua", &c.ua_called);
    m.put("reason_sip_cause", c.reason_sip.as_ref().map(|r| r.0));
    m.put("reason_sip_text", c.reason_sip.as_ref().map(|r| &r.1));
    m.put("reason_q850_cause", c.reason_q850.as_ref().map(|r| r.0));
    m.put("reason_q850_text", c.reason_q850.as_ref().map(|r| &r.1));
    let mut proxies = String::from("[");
    for (i, p) in c.proxies.iter().enumerate() {
        if i > 0 {
            proxies.push(',');
        }
        jsonw::write_str(&mut proxies, &p.to_string());
    }
    proxies.push(']');
    m.put_raw("proxies", &proxies);

    let (a, b) = pick_ab(c);
    let payload = a.or(b).and_then(|i| c.streams[i].stats.media_pt);
    m.put("payload", payload);
    let mut side_vals = Vec::new();
    for (prefix, idx) in [("a", a), ("b", b)] {
        side_vals.push(side_fields(&mut m, prefix, idx.map(|i| (i, &c.streams[i], &outs[i])), c, end));
    }
    let (sa, sb) = (side_vals[0], side_vals[1]);
    let maxo = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let mino = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    m.put("lost", maxo(sa.lost, sb.lost));
    m.put("jitter_mult10", maxo(sa.jitter10, sb.jitter10));
    m.put("mos_min_mult10", mino(sa.mos_min10, sb.mos_min10));
    m.put("packet_loss_perc_mult1000", maxo(sa.loss1000, sb.loss1000));

    let mut rtp = String::with_capacity(512 * c.streams.len() + 2);
    rtp.push('[');
    for (i, (s, o)) in c.streams.iter().zip(&outs).enumerate() {
        if i > 0 {
            rtp.push(',');
        }
        rtp.push_str(&stream_json(s, o, start));
    }
    rtp.push(']');
    m.put_raw("rtp", &rtp);
    m.put("fbasename", crate::store::spool::file_safe(&c.callid));
    Cdr {
        calldate: round_micros(start),
        callend: round_micros(end),
        callid: c.callid.clone(),
        json: m.finish(),
        streams: c.streams.len(),
    }
}

#[derive(Clone, Copy, Default)]
struct SideSummary {
    lost: Option<i64>,
    jitter10: Option<i64>,
    mos_min10: Option<i64>,
    loss1000: Option<i64>,
}

fn mult10_trunc(x: f64) -> i64 {
    (x * 10.0 + 1e-9).trunc() as i64
}

fn mult10_round(x: f64) -> i64 {
    (x * 10.0).round() as i64
}

fn side_fields(m: &mut Obj, p: &str, s: Option<(usize, &Stream, &StreamOut)>, c: &Call, end: Nanos) -> SideSummary {
    // Every side carries the same keys in the same order; a missing side or missing RTCP gives nulls.
    let mut vals: [Val; SIDE_KEYS.len()] = std::array::from_fn(|_| Val::Null);
    let summary = side_values(&mut vals, s, c, end);
    for (k, v) in SIDE_KEYS.iter().zip(&vals) {
        m.put_prefixed(p, k, v);
    }
    summary
}
/// Index of `sl1` in `SIDE_KEYS`.
const SL_FIRST: usize = 8;

/// The a_/b_ column suffixes, in output order.
const SIDE_KEYS: [&str; 45] = [
    "index",
    "payload",
    "saddr",
    "received",
    "lost",
    "seq_errors",
    "avgjitter_mult10",
    "maxjitter",
    "sl1",
    "sl2",
    "sl3",
    "sl4",
    "sl5",
    "sl6",
    "sl7",
    "sl8",
    "sl9",
    "sl10",
    "d50",
    "d70",
    "d90",
    "d120",
    "d150",
    "d200",
    "d300",
    "delay_sum",
    "delay_cnt",
    "delay_avg_mult100",
    "mos_f1_mult10",
    "mos_f2_mult10",
    "mos_adapt_mult10",
    "mos_f1_min_mult10",
    "mos_f2_min_mult10",
    "mos_adapt_min_mult10",
    "mos_min_mult10",
    "packet_loss_perc_mult1000",
    "last_rtp_from_end",
    "rtcp_loss",
    "rtcp_maxfr",
    "rtcp_avgfr_mult10",
    "rtcp_maxjitter",
    "rtcp_avgjitter_mult10",
    "rtcp_avgrtd_mult10",
    "rtcp_maxrtd_mult10",
    "mos_xr_mult10",
];

fn side_values(
    vals: &mut [Val; SIDE_KEYS.len()],
    s: Option<(usize, &Stream, &StreamOut)>,
    c: &Call,
    end: Nanos,
) -> SideSummary {
    let mut put = |k: &str, v: Val| match SIDE_KEYS.iter().position(|x| *x == k) {
        Some(i) => vals[i] = v,
        None => debug_assert!(false, "side key {k} missing from SIDE_KEYS"),
    };
    let Some((i, s, o)) = s else {
        return SideSummary::default();
    };
    let st = &s.stats;
    let lost = st.lost().max(0);
    let received = st.packets as i64;
    put("index", Val::from(i + 1));
    put("payload", Val::from(st.media_pt.unwrap_or(st.first_pt)));
    put("saddr", Val::from(s.src.to_string()));
    put("received", Val::from(received));
    put("lost", Val::from(lost));
    put("seq_errors", Val::from(st.seq_errors));
    let jitter10 = (st.mean_jitter * 10.0 - 1e-9).ceil().max(0.0) as i64;
    put("avgjitter_mult10", Val::from(jitter10));
    put("maxjitter", Val::from((st.max_jitter - 1e-9).ceil().max(0.0) as i64));
    for (k, v) in st.loss_bursts.iter().enumerate() {
        put(SIDE_KEYS[SL_FIRST + k], Val::from(*v));
    }
    let names = ["d50", "d70", "d90", "d120", "d150", "d200", "d300"];
    let weights = [60u64, 80, 105, 135, 175, 250, 300];
    let mut sum = 0u64;
    let mut cnt = 0u64;
    for (k, v) in st.delay_buckets.iter().enumerate() {
        put(names[k], Val::from(*v));
        sum += weights[k] * *v as u64;
        cnt += *v as u64;
    }
    put("delay_sum", Val::from(sum));
    put("delay_cnt", Val::from(cnt));
    put(
        "delay_avg_mult100",
        Val::from(if cnt > 0 { Some((sum as f64 / cnt as f64 * 100.0).round() as u64) } else { None }),
    );
    let [(f1, f1min), (f2, f2min), (ad, admin)] = o.mos;
    put("mos_f1_mult10", Val::from(mult10_trunc(f1)));
    put("mos_f2_mult10", Val::from(mult10_round(f2)));
    put("mos_adapt_mult10", Val::from(mult10_round(ad)));
    put("mos_f1_min_mult10", Val::from(mult10_round(f1min)));
    put("mos_f2_min_mult10", Val::from(mult10_round(f2min)));
    put("mos_adapt_min_mult10", Val::from(mult10_round(admin)));
    // mosmin_f2 = yes (VoIPmonitor's default): the side's minimum MOS is the f2 average.
    let mos_min10 = mult10_round(f2);
    put("mos_min_mult10", Val::from(mos_min10));
    let denom = (received + lost) as f64;
    let loss1000 = if denom > 0.0 { (lost as f64 / denom * 100_000.0).round() as i64 } else { 0 };
    put("packet_loss_perc_mult1000", Val::from(loss1000));
    put("last_rtp_from_end", Val::from(dur_secs((end - st.last_ts).max(0))));
    // RTCP reports about this stream (sent by the other side).
    let clock_ms = match c.pt_kind(st.media_pt.unwrap_or(st.first_pt)) {
        crate::rtp::stream::PtKind::Media { clock, .. } if clock > 0 => clock as f64 / 1000.0,
        _ => 8.0,
    };
    match c.rtcp.iter().find(|r| r.ssrc == s.ssrc) {
        Some(r) if r.reports > 0 => {
            put("rtcp_loss", Val::from(r.last_cumulative_lost));
            put("rtcp_maxfr", Val::from(r.max_fraction));
            put("rtcp_avgfr_mult10", Val::from((r.sum_fraction as f64 / r.reports as f64 * 10.0).round() as i64));
            put("rtcp_maxjitter", Val::from((r.max_jitter as f64 / clock_ms).round() as i64));
            put(
                "rtcp_avgjitter_mult10",
                Val::from((r.sum_jitter as f64 / r.reports as f64 / clock_ms * 10.0).round() as i64),
            );
            let rtd = (r.rtd_count > 0).then(|| r.rtd_sum_ms / r.rtd_count as f64);
            put("rtcp_avgrtd_mult10", Val::from(rtd.map(|x| (x * 10.0).round() as i64)));
            put("rtcp_maxrtd_mult10", Val::from((r.rtd_count > 0).then(|| (r.rtd_max_ms * 10.0).round() as i64)));
            put("mos_xr_mult10", Val::from(r.xr_mos_lq.filter(|v| *v != 127)));
        }
        _ => {}
    }
    SideSummary { lost: Some(lost), jitter10: Some(jitter10), mos_min10: Some(mos_min10), loss1000: Some(loss1000) }
}

fn stream_json(s: &Stream, o: &StreamOut, start: Nanos) -> String {
    let st = &s.stats;
    let digits: String = st
        .dtmf
        .iter()
        .map(|e| match e.event {
            0..=9 => (b'0' + e.event) as char,
            10 => '*',
            11 => '#',
            12..=15 => (b'A' + e.event - 12) as char,
            _ => '?',
        })
        .collect();
    let mut j = Obj::new(512);
    j.put("saddr", s.src.to_string());
    j.put("sport", s.sport);
    j.put("daddr", s.dst.to_string());
    j.put("dport", s.dport);
    j.put("ssrc", s.ssrc);
    j.put("sender", s.sender.as_str());
    j.put("payload", st.media_pt.unwrap_or(st.first_pt));
    j.put("received", st.packets);
    j.put("lost", st.lost());
    j.put("seq_errors", st.seq_errors);
    j.put("maxjitter", r3(st.max_jitter));
    j.put("avgjitter", r3(st.mean_jitter));
    j.put("max_delta", r3(st.max_delta));
    j.put("mos_f1", (o.mos[0].0 * 100.0).round() / 100.0);
    j.put("mos_f2", (o.mos[1].0 * 100.0).round() / 100.0);
    j.put("mos_adapt", (o.mos[2].0 * 100.0).round() / 100.0);
    j.put("first_time", dur_secs(st.first_ts - start));
    j.put("last_time", dur_secs(st.last_ts - start));
    j.put("video", st.video);
    j.put("dtmf", digits);
    j.finish()
}
