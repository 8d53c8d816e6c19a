//! A call: its SIP dialog state (reference §5), its media endpoints and RTP streams, and the timers that end
//! it — all on packet time. One owner core holds each call; nothing here is shared.

pub mod cdr;
pub mod owner;

use std::net::IpAddr;

use crate::config::Config;
use crate::decode::Transport;
use crate::rtp::stream::{PtKind, RtpStream};
use crate::rtp::{header, rtcp};
use crate::sip::msg::{Method, NameAddr, SipMessage};
use crate::sip::sdp;
use crate::time::{secs, Nanos};

const MAX_STREAMS: usize = 64;
const MAX_ENDPOINTS: usize = 64;
const MAX_RTPMAP: usize = 64;
const MAX_SIP_PACKETS: u32 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Caller,
    Callee,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// Why a call ended, as VoIPmonitor's `bye` column encodes the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Normal close (destroy wait passed, or end of capture): the code follows from the dialog state.
    Normal,
    Absolute,
    ByeTimeout,
    RtpTimeout,
    Oneway,
    Zombie,
    SipWithoutRtp,
    MaxPackets,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Party {
    pub user: String,
    pub domain: String,
    pub display: String,
}

impl Party {
    fn from(a: &NameAddr) -> Party {
        Party { user: lossy(a.user), domain: lossy(a.host), display: lossy(a.display) }
    }
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
    /// The side whose SDP announced it: RTP sent to it comes from the other side.
    pub side: Side,
    pub rtcp: bool,
    /// False for non-RTP media (T.38): its packets are not analysed as RTP.
    pub rtp: bool,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub ssrc: u32,
    pub sender: Side,
    /// The call's SDP generation when the stream was created: a later SDP re-checks its endpoint.
    pub gen: u32,
    /// Payload type → kind, for the last payload type seen.
    pub kind_cache: Option<(u8, PtKind)>,
    pub stats: RtpStream,
}

/// RTCP reports about one SSRC, aggregated.
#[derive(Debug, Clone, Default)]
pub struct RtcpAgg {
    pub ssrc: u32,
    pub reports: u32,
    pub last_cumulative_lost: i32,
    pub max_fraction: u8,
    pub sum_fraction: u64,
    pub max_jitter: u32,
    pub sum_jitter: u64,
    pub rtd_sum_ms: f64,
    pub rtd_max_ms: f64,
    pub rtd_count: u32,
    pub xr_mos_lq: Option<u8>,
}

pub struct Call {
    pub key: u64,
    pub callid: String,
    pub first_ts: Nanos,
    pub last_ts: Nanos,
    pub last_sip_ts: Nanos,
    pub caller: Party,
    pub called: Party,
    pub caller_tag: Vec<u8>,
    pub pai_user: String,
    pub sip_caller: (IpAddr, u16),
    pub sip_called: (IpAddr, u16),
    pub proxies: Vec<IpAddr>,
    pub transport: Transport,
    pub vlan: Option<u16>,
    pub first_invite_cseq: u32,
    pub invite_cseq: u32,
    pub invites: u32,
    pub sip_packets: u32,
    pub first_18x: Option<Nanos>,
    pub first_2xx: Option<Nanos>,
    pub answered: bool,
    pub bye_ts: Option<Nanos>,
    pub bye_cseq: Option<u32>,
    pub bye_confirmed: bool,
    pub bye_confirmed_ts: Option<Nanos>,
    pub whohanged: Option<Side>,
    pub cancel: bool,
    pub final_fail: Option<(u16, String)>,
    pub ok_response: Option<(u16, String)>,
    pub last_provisional: Option<(u16, String)>,
    pub destroy_at: Option<Nanos>,
    pub bye_deadline: Option<Nanos>,
    pub ua_caller: String,
    pub ua_called: String,
    pub reason_sip: Option<(u16, String)>,
    pub reason_q850: Option<(u16, String)>,
    pub endpoints: Vec<Endpoint>,
    pub rtpmap: Vec<sdp::RtpMap>,
    pub streams: Vec<Stream>,
    pub rtcp: Vec<RtcpAgg>,
    sr_seen: Vec<(u32, Nanos)>,
    pub first_rtp: Option<Nanos>,
    pub last_rtp: Option<Nanos>,
    pub seen_caller_side: bool,
    pub seen_callee_side: bool,
    /// RTP packets not analysed because the call already had the maximum number of streams.
    pub packets_over_stream_limit: u32,
    sdp_gen: u32,
    /// The media state before the last SDP offer in a request: (CSeq, endpoints, rtpmap).
    pending_offer: Option<Box<PendingOffer>>,
    /// Destinations of the call's INVITEs: an INVITE sent onward from one of them reveals a proxy.
    invite_dsts: Vec<IpAddr>,
    /// Endpoints a pending offer turns into non-RTP media, applied when the offer is accepted.
    deferred_non_rtp: Vec<(IpAddr, u16)>,
    pub spool: crate::store::spool::CallSpool,
}

/// The media state an SDP offer replaced: (CSeq of the offer, endpoints, rtpmap).
type PendingOffer = (u32, Vec<Endpoint>, Vec<sdp::RtpMap>);

/// The timeouts that apply (reference §5.4), in packet-time nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub absolute: Nanos,
    pub rtp: Nanos,
    pub sip_without_rtp: Nanos,
    pub oneway: Nanos,
    pub bye: Nanos,
    pub bye_confirmed: Nanos,
    pub zombie: Nanos,
}

impl Timeouts {
    pub fn from_config(c: &Config) -> Self {
        Timeouts {
            absolute: secs(c.absolute_timeout as i64),
            rtp: secs(c.rtptimeout as i64),
            sip_without_rtp: secs(c.sipwithoutrtptimeout as i64),
            oneway: secs(c.onewaytimeout as i64),
            bye: secs(c.bye_timeout as i64),
            bye_confirmed: secs(c.bye_confirmed_timeout as i64),
            zombie: secs(300),
        }
    }
}

/// A SIP packet as the call sees it.
pub struct SipPacket<'a> {
    pub ts: Nanos,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub transport: Transport,
    pub vlan: Option<u16>,
    pub msg: &'a SipMessage<'a>,
}

impl Call {
    /// A new call from its first INVITE.
    pub fn new(key: u64, p: &SipPacket) -> Call {
        let m = p.msg;
        Call {
            key,
            callid: lossy(m.h.call_id),
            first_ts: p.ts,
            last_ts: p.ts,
            last_sip_ts: p.ts,
            caller: Party::from(&m.h.from),
            called: Party::from(&m.h.to),
            caller_tag: m.h.from.tag.to_vec(),
            pai_user: lossy(m.h.pai.user),
            sip_caller: (p.src, p.sport),
            sip_called: (p.dst, p.dport),
            proxies: Vec::new(),
            transport: p.transport,
            vlan: p.vlan,
            first_invite_cseq: m.h.cseq_num,
            invite_cseq: m.h.cseq_num,
            invites: 0,
            sip_packets: 0,
            first_18x: None,
            first_2xx: None,
            answered: false,
            bye_ts: None,
            bye_cseq: None,
            bye_confirmed: false,
            bye_confirmed_ts: None,
            whohanged: None,
            cancel: false,
            final_fail: None,
            ok_response: None,
            last_provisional: None,
            destroy_at: None,
            bye_deadline: None,
            ua_caller: lossy(m.h.user_agent),
            ua_called: String::new(),
            reason_sip: None,
            reason_q850: None,
            endpoints: Vec::new(),
            rtpmap: Vec::new(),
            streams: Vec::new(),
            rtcp: Vec::new(),
            sr_seen: Vec::new(),
            first_rtp: None,
            last_rtp: None,
            seen_caller_side: false,
            seen_callee_side: false,
            packets_over_stream_limit: 0,
            sdp_gen: 0,
            pending_offer: None,
            invite_dsts: Vec::new(),
            deferred_non_rtp: Vec::new(),
            spool: Default::default(),
        }
    }

    /// Reads the state a media packet will touch, so that its cache misses happen early (see `Owner::warm`).
    pub fn warm(&self) -> u32 {
        let mut acc = self.sdp_gen ^ self.bye_confirmed as u32;
        for s in &self.streams {
            acc ^= s.ssrc ^ s.stats.warm();
        }
        acc
    }

    /// Which side sent a message: the caller's From tag identifies its requests and the responses to them.
    fn side_of(&self, p: &SipPacket) -> Side {
        let m = p.msg;
        if !self.caller_tag.is_empty() && !m.h.from.tag.is_empty() {
            let from_caller = m.h.from.tag == self.caller_tag.as_slice();
            return match (m.is_request(), from_caller) {
                (true, true) | (false, false) => Side::Caller,
                _ => Side::Callee,
            };
        }
        if (p.src, p.sport) == self.sip_caller || p.src == self.sip_caller.0 {
            Side::Caller
        } else {
            Side::Callee
        }
    }

    /// One SIP message of this call.
    pub fn sip(&mut self, p: &SipPacket) {
        let m = p.msg;
        self.sip_packets = self.sip_packets.saturating_add(1);
        self.last_sip_ts = p.ts;
        if !self.bye_confirmed || self.bye_confirmed_ts.is_some_and(|t| p.ts <= t) {
            self.last_ts = self.last_ts.max(p.ts);
        }
        let side = self.side_of(p);
        match side {
            Side::Caller => self.seen_caller_side = true,
            Side::Callee => self.seen_callee_side = true,
        }
        if let Some(text) = sdp::sdp_part(m.h.content_type, m.body) {
            let resent = self.pending_offer.as_ref().is_some_and(|o| o.0 == m.h.cseq_num);
            // Only a re-offer on an established call has a previous state worth restoring.
            if self.answered && matches!(m.method(), Some(Method::Invite | Method::Update)) && !resent {
                // An offer applies at once (media may follow before the answer), but a rejected offer must be
                // undone: keep what it replaced.
                self.pending_offer = Some(Box::new((m.h.cseq_num, self.endpoints.clone(), self.rtpmap.clone())));
            }
            let offer = self.answered && matches!(m.method(), Some(Method::Invite | Method::Update));
            self.sdp(&sdp::parse(text), side, offer);
        }
        match m.method() {
            Some(method) => self.request(p, method, side),
            None => self.response(p, m.status().unwrap_or(0), side),
        }
    }

    /// Applies an SDP. In a pending offer, turning an RTP endpoint into non-RTP media (a T.38 switch) waits for
    /// the answer: RTP keeps flowing there until the offer is accepted, and stops mattering if it is rejected.
    fn sdp(&mut self, s: &sdp::Sdp, side: Side, offer: bool) {
        self.sdp_gen = self.sdp_gen.wrapping_add(1);
        for m in &s.media {
            for r in &m.rtpmap {
                if let Some(x) = self.rtpmap.iter_mut().find(|x| x.pt == r.pt) {
                    *x = r.clone();
                } else if self.rtpmap.len() < MAX_RTPMAP {
                    self.rtpmap.push(r.clone());
                }
            }
        }
        for a in sdp::announced(s) {
            if let Some(e) = self.endpoints.iter_mut().find(|e| e.addr == a.addr && e.port == a.port) {
                e.side = side;
                e.rtcp = a.rtcp;
                if offer && e.rtp && !a.rtp {
                    if self.deferred_non_rtp.len() < MAX_ENDPOINTS {
                        self.deferred_non_rtp.push((a.addr, a.port));
                    }
                } else {
                    e.rtp = a.rtp;
                }
            } else if self.endpoints.len() < MAX_ENDPOINTS {
                self.endpoints.push(Endpoint { addr: a.addr, port: a.port, side, rtcp: a.rtcp, rtp: a.rtp });
            }
        }
    }

    fn request(&mut self, p: &SipPacket, method: Method, side: Side) {
        let m = p.msg;
        match method {
            Method::Invite => {
                self.invites += 1;
                if side == Side::Caller {
                    // The INVITE forwarded onward by a proxy: the forwarding hop was an earlier INVITE's
                    // destination. The CDR keeps the first INVITE's destination as the called address, like
                    // tshark's VoIP calls and VoIPmonitor; the hops are listed as proxies.
                    if self.invite_dsts.contains(&p.src) && !self.proxies.contains(&p.src) && self.proxies.len() < 16 {
                        self.proxies.push(p.src);
                    }
                    if !self.invite_dsts.contains(&p.dst) && self.invite_dsts.len() < 16 {
                        self.invite_dsts.push(p.dst);
                    }
                    if !self.answered {
                        // Authentication retries and the final target refine the called number.
                        self.invite_cseq = m.h.cseq_num;
                        if !m.h.to.user.is_empty() {
                            self.called = Party::from(&m.h.to);
                        }
                    }
                }
                // A new INVITE revives a call that was about to be closed (§5.4).
                self.destroy_at = None;
            }
            Method::Bye => {
                if self.bye_ts.is_none() {
                    self.bye_ts = Some(p.ts);
                    self.whohanged = Some(side);
                }
                self.bye_cseq = Some(m.h.cseq_num);
                self.destroy_at = Some(p.ts + secs(60));
                if self.bye_deadline.is_none() {
                    self.bye_deadline = Some(p.ts);
                }
                self.set_reason(m);
            }
            Method::Cancel => {
                self.cancel = true;
                self.destroy_at = Some(p.ts + secs(10));
                self.set_reason(m);
            }
            _ => {}
        }
    }

    fn set_reason(&mut self, m: &SipMessage) {
        if m.h.reason.is_empty() {
            return;
        }
        // Reason: SIP ;cause=200 ;text="Call completed elsewhere", Q.850 ;cause=16 ;text="..."
        for part in m.h.reason.split(|&c| c == b',') {
            let proto = crate::sip::framing::trim(part.split(|&c| c == b';').next().unwrap_or(&[]));
            let cause = crate::sip::msg::param(part, b"cause")
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.trim().parse::<u16>().ok());
            let text = crate::sip::msg::param(part, b"text").map(|t| lossy(t).trim_matches('"').to_string());
            let Some(cause) = cause else { continue };
            let v = Some((cause, text.unwrap_or_default()));
            if proto.eq_ignore_ascii_case(b"SIP") {
                self.reason_sip = v;
            } else if proto.eq_ignore_ascii_case(b"Q.850") {
                self.reason_q850 = v;
            }
        }
    }

    fn response(&mut self, p: &SipPacket, code: u16, side: Side) {
        let m = p.msg;
        let cseq_method = m.h.cseq_method.unwrap_or(Method::Other);
        let reason = match m.start {
            crate::sip::msg::StartLine::Response { reason, .. } => lossy(reason),
            _ => String::new(),
        };
        if side == Side::Callee && self.ua_called.is_empty() {
            let ua = if m.h.user_agent.is_empty() { m.h.server } else { m.h.user_agent };
            self.ua_called = lossy(ua);
        }
        if code >= 200 && matches!(cseq_method, Method::Invite | Method::Update) {
            if let Some(offer) = self.pending_offer.take() {
                if code >= 300 && offer.0 == m.h.cseq_num {
                    let (_, endpoints, rtpmap) = *offer;
                    self.endpoints = endpoints;
                    self.rtpmap = rtpmap;
                    self.deferred_non_rtp.clear();
                    self.sdp_gen = self.sdp_gen.wrapping_add(1);
                } else if offer.0 == m.h.cseq_num {
                    for (a, p) in std::mem::take(&mut self.deferred_non_rtp) {
                        if let Some(e) = self.endpoints.iter_mut().find(|e| e.addr == a && e.port == p) {
                            e.rtp = false;
                        }
                    }
                    self.sdp_gen = self.sdp_gen.wrapping_add(1);
                } else {
                    self.pending_offer = Some(offer);
                }
            }
        }
        match cseq_method {
            Method::Invite => {
                if (180..=189).contains(&code) {
                    self.first_18x.get_or_insert(p.ts);
                    self.destroy_at = None;
                }
                if (200..300).contains(&code) {
                    if !self.answered {
                        self.answered = true;
                        self.first_2xx = Some(p.ts);
                        self.ok_response = Some((code, format!("{code} {reason}")));
                    }
                    self.destroy_at = None;
                } else if !self.answered && m.h.cseq_num == self.invite_cseq {
                    if code >= 300 {
                        self.final_fail = Some((code, format!("{code} {reason}")));
                        self.destroy_at = match code {
                            401 | 407 | 491 | 501 => self.destroy_at,
                            300 => Some(p.ts + secs(300)),
                            481 => Some(p.ts + secs(180)),
                            _ => Some(p.ts + secs(5)),
                        };
                    } else {
                        self.last_provisional = Some((code, format!("{code} {reason}")));
                    }
                }
            }
            Method::Bye if (200..300).contains(&code) && self.bye_cseq == Some(m.h.cseq_num) && !self.bye_confirmed => {
                self.bye_confirmed = true;
                self.bye_confirmed_ts = Some(p.ts);
                self.destroy_at = Some(p.ts + secs(5));
            }
            _ => {}
        }
    }

    /// One RTP or RTCP packet routed to this call through `endpoint` (`via_dst` tells which end matched).
    #[allow(clippy::too_many_arguments)]
    pub fn media(
        &mut self,
        ts: Nanos,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        via_dst: bool,
        payload: &[u8],
        wire_len: usize,
        tail: u8,
    ) -> MediaOutcome {
        // Fast path: a known stream, and no SDP change since it was created.
        if !header::looks_like_rtcp(payload) {
            if let Some(h) = header::parse_prefix(payload, wire_len, tail) {
                let gen = self.sdp_gen;
                if let Some(s) = self.streams.iter_mut().find(|s| {
                    s.ssrc == h.ssrc
                        && s.sport == sport
                        && s.dport == dport
                        && s.gen == gen
                        && s.src == src
                        && s.dst == dst
                }) {
                    let sender = s.sender;
                    let kind = s.kind_cache.filter(|(pt, _)| *pt == h.pt).map(|(_, k)| k);
                    let body = &payload
                        [h.payload_offset.min(payload.len())..(h.payload_offset + h.payload_len).min(payload.len())];
                    let kind = match kind {
                        Some(k) => k,
                        None => {
                            let k = pt_kind_of(&self.rtpmap, h.pt);
                            s.kind_cache = Some((h.pt, k));
                            k
                        }
                    };
                    s.stats.bytes += h.payload_len as u64;
                    s.stats.packet(ts, h.seq, h.ts, h.pt, h.marker, kind, body);
                    match sender {
                        Side::Caller => self.seen_caller_side = true,
                        Side::Callee => self.seen_callee_side = true,
                    }
                    if !self.bye_confirmed {
                        self.last_ts = self.last_ts.max(ts);
                        self.last_rtp = Some(ts);
                    }
                    return MediaOutcome::Rtp;
                }
            }
        }
        let (ea, ep) = if via_dst { (dst, dport) } else { (src, sport) };
        let Some(e) = self.endpoints.iter().find(|e| e.addr == ea && e.port == ep) else {
            return MediaOutcome::Ignored;
        };
        if !e.rtp {
            return MediaOutcome::NotRtp;
        }
        let sender = if via_dst { e.side.other() } else { e.side };
        let rtcp_endpoint = e.rtcp;
        match sender {
            Side::Caller => self.seen_caller_side = true,
            Side::Callee => self.seen_callee_side = true,
        }
        // Media after the BYE was confirmed still counts in its stream (as on the wire) but no longer extends
        // the call (VoIPmonitor's ignore_rtp_after_bye_confirmed, on by default, for the call's duration).
        if !self.bye_confirmed {
            self.last_ts = self.last_ts.max(ts);
        }
        if rtcp_endpoint || header::looks_like_rtcp(payload) {
            if let Some(r) = rtcp::parse(payload) {
                self.rtcp_packet(ts, &r);
                return MediaOutcome::Rtcp;
            }
            return MediaOutcome::Ignored;
        }
        let Some(h) = header::parse_prefix(payload, wire_len, tail) else {
            return MediaOutcome::Ignored;
        };
        self.first_rtp.get_or_insert(ts);
        if !self.bye_confirmed {
            self.last_rtp = Some(ts);
        }
        let kind = self.pt_kind(h.pt);
        let idx = match self
            .streams
            .iter()
            .position(|s| s.ssrc == h.ssrc && s.sport == sport && s.dport == dport && s.src == src && s.dst == dst)
        {
            Some(i) => {
                // The endpoint was checked above against the current SDP: the fast path may serve it again.
                self.streams[i].gen = self.sdp_gen;
                i
            }
            None => {
                if self.streams.len() >= MAX_STREAMS {
                    self.packets_over_stream_limit = self.packets_over_stream_limit.saturating_add(1);
                    return MediaOutcome::Ignored;
                }
                // Most calls have two streams: grow one at a time (a stream is ~550 bytes).
                self.streams.reserve_exact(1);
                self.streams.push(Stream {
                    src,
                    sport,
                    dst,
                    dport,
                    ssrc: h.ssrc,
                    sender,
                    gen: self.sdp_gen,
                    kind_cache: None,
                    stats: RtpStream::new(ts),
                });
                self.streams.len() - 1
            }
        };
        let body = &payload[h.payload_offset.min(payload.len())..(h.payload_offset + h.payload_len).min(payload.len())];
        self.streams[idx].stats.bytes += h.payload_len as u64;
        self.streams[idx].stats.packet(ts, h.seq, h.ts, h.pt, h.marker, kind, body);
        MediaOutcome::Rtp
    }

    /// Clock rate and kind of a payload type: static table for 0–95, the call's SDP `rtpmap` otherwise.
    pub fn pt_kind(&self, pt: u8) -> PtKind {
        pt_kind_of(&self.rtpmap, pt)
    }

    fn rtcp_packet(&mut self, ts: Nanos, r: &rtcp::Rtcp) {
        if let Some(mid) = r.sr_ntp_mid {
            if self.sr_seen.len() >= 32 {
                self.sr_seen.remove(0);
            }
            self.sr_seen.push((mid, ts));
        }
        for b in &r.blocks {
            let rtd = (b.lsr != 0)
                .then(|| self.sr_seen.iter().rev().find(|(m, _)| *m == b.lsr).map(|(_, t)| *t))
                .flatten()
                .map(|seen| (ts - seen) as f64 / 1e6 - b.dlsr as f64 * 1000.0 / 65536.0);
            let agg = match self.rtcp.iter_mut().position(|a| a.ssrc == b.ssrc) {
                Some(i) => &mut self.rtcp[i],
                None => {
                    if self.rtcp.len() >= MAX_STREAMS {
                        continue;
                    }
                    self.rtcp.push(RtcpAgg { ssrc: b.ssrc, ..Default::default() });
                    self.rtcp.last_mut().expect("just pushed")
                }
            };
            agg.reports += 1;
            agg.last_cumulative_lost = b.cumulative_lost;
            agg.max_fraction = agg.max_fraction.max(b.fraction_lost);
            agg.sum_fraction += b.fraction_lost as u64;
            agg.max_jitter = agg.max_jitter.max(b.jitter);
            agg.sum_jitter += b.jitter as u64;
            if let Some(rtd) = rtd.filter(|r| *r >= 0.0) {
                agg.rtd_sum_ms += rtd;
                agg.rtd_max_ms = agg.rtd_max_ms.max(rtd);
                agg.rtd_count += 1;
            }
        }
        for x in &r.xr {
            if let Some(a) = self.rtcp.iter_mut().find(|a| a.ssrc == x.ssrc) {
                a.xr_mos_lq = Some(x.mos_lq);
            }
        }
    }

    /// Should the call close as of packet time `now`? (reference §5.4)
    pub fn expired(&self, now: Nanos, t: &Timeouts) -> Option<EndReason> {
        if let Some(d) = self.destroy_at {
            if now > d {
                return Some(EndReason::Normal);
            }
        }
        if let Some(b) = self.bye_deadline {
            // bye_timeout runs from the BYE, bye_confirmed_timeout from its 2xx.
            let (from, limit) = match self.bye_confirmed_ts {
                Some(c) => (c, t.bye_confirmed),
                None => (b, t.bye),
            };
            if now - from > limit {
                return Some(EndReason::ByeTimeout);
            }
        }
        if now - self.first_ts > t.absolute {
            return Some(EndReason::Absolute);
        }
        if self.sip_packets >= MAX_SIP_PACKETS {
            return Some(EndReason::MaxPackets);
        }
        match self.last_rtp {
            Some(l) => {
                if now - l.max(self.last_sip_ts) > t.rtp {
                    return Some(EndReason::RtpTimeout);
                }
            }
            None => {
                if now - self.first_ts > t.sip_without_rtp {
                    return Some(EndReason::SipWithoutRtp);
                }
                if !self.answered && self.first_18x.is_none() && now - self.last_ts > t.zombie {
                    return Some(EndReason::Zombie);
                }
            }
        }
        if !(self.seen_caller_side && self.seen_callee_side) && now - self.last_ts > t.oneway {
            return Some(EndReason::Oneway);
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaOutcome {
    Rtp,
    Rtcp,
    /// Packets of non-RTP media (T.38 fax over UDPTL).
    NotRtp,
    Ignored,
}

/// Clock rate and kind of a payload type: static table for 0–95, the call's SDP `rtpmap` otherwise.
fn pt_kind_of(rtpmap: &[sdp::RtpMap], pt: u8) -> PtKind {
    if pt == 13 || pt == 19 {
        return PtKind::ComfortNoise;
    }
    if pt < 96 {
        let clock = header::static_clock(pt);
        if clock == 0 {
            return PtKind::Unknown;
        }
        return PtKind::Media { clock, video: clock == 90_000 };
    }
    match rtpmap.iter().rev().find(|r| r.pt == pt) {
        Some(r) if r.encoding.eq_ignore_ascii_case("telephone-event") => PtKind::Event,
        Some(r) if r.encoding.eq_ignore_ascii_case("CN") => PtKind::ComfortNoise,
        Some(r) if r.clock > 0 => PtKind::Media { clock: r.clock, video: r.clock == 90_000 },
        _ => PtKind::Unknown,
    }
}
