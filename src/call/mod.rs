//! A call: its SIP dialog state (reference §5), its media endpoints and RTP streams, and the timers that end
//! it — all on packet time. One owner core holds each call; nothing here is shared.

pub mod cdr;
pub mod jsonw;
pub mod live;
mod media;
pub mod owner;
mod signaling;

pub use media::MediaOutcome;

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
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }

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
    /// The remote sensor that captured the call's first INVITE, when a central analyses a remote's packets; its
    /// CDR carries that id_sensor rather than the central's.
    pub sensor: Option<u16>,
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
    /// The smallest `skew` (sender's time − rx clock) of the call's packets; `None` before the first.
    pub skew: Option<Nanos>,
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
            sensor: None,
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
            skew: None,
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

    /// A packet of the call came `skew` from the rx stage's clock (its sender's clock offset, plus the time it
    /// took to arrive).
    pub fn heard(&mut self, skew: Nanos) {
        // Called for every RTP packet: store only when it moves.
        if self.skew.is_none_or(|s| skew < s) {
            self.skew = Some(skew);
        }
    }

    /// Should the call close as of the rx stage's clock `clock` (a tick)? The call's times are its senders'
    /// (HEP's), so the clock is moved onto theirs. By the smallest skew seen: with a late copy, or several
    /// senders whose clocks disagree, the call waits for the slowest rather than closing under packets still
    /// to come.
    pub fn expired_at(&self, clock: Nanos, t: &Timeouts) -> Option<EndReason> {
        self.expired(clock.saturating_add(self.skew.unwrap_or(0)), t)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg;

    const UAC: (&str, u16) = ("127.0.0.1", 5090);
    const PROXY: (&str, u16) = ("127.0.0.1", 5070);
    const UAS: (&str, u16) = ("127.0.0.1", 5080);

    fn text(start: &str, cseq: &str, to_tag: &str) -> Vec<u8> {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1\r\nFrom: sipp <sip:sipp@127.0.0.1>;tag=a\r\n\
             To: uas <sip:uas@127.0.0.1>{to_tag}\r\nCall-ID: c1@127.0.0.1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// One message of the call at `ts`, from `src` to `dst`; creates the call from its first INVITE.
    fn feed(call: &mut Option<Call>, raw: &[u8], ts: Nanos, src: (&str, u16), dst: (&str, u16)) {
        let m = msg::parse(raw).expect("a SIP message");
        let p = SipPacket {
            ts,
            src: src.0.parse().unwrap(),
            sport: src.1,
            dst: dst.0.parse().unwrap(),
            dport: dst.1,
            transport: Transport::Udp,
            vlan: None,
            msg: &m,
        };
        call.get_or_insert_with(|| Call::new(1, &p)).sip(&p);
    }

    /// Kamailio's order for a proxied hang-up: the UAC's BYE, the UAS's 200 to the forwarded BYE, then the
    /// (late) copy of that forwarded BYE, then the 200 forwarded to the UAC.
    #[test]
    fn a_late_bye_copy_does_not_reopen_a_confirmed_call() {
        let t = Timeouts::from_config(&Config::default());
        let s = secs(1_800_000_000);
        let mut call = None;
        let invite = text("INVITE sip:uas@127.0.0.1:5070 SIP/2.0", "1 INVITE", "");
        let ok = text("SIP/2.0 200 OK", "1 INVITE", ";tag=b");
        let bye = text("BYE sip:uas@127.0.0.1:5080 SIP/2.0", "2 BYE", ";tag=b");
        let bye_ok = text("SIP/2.0 200 OK", "2 BYE", ";tag=b");
        feed(&mut call, &invite, s, UAC, PROXY);
        feed(&mut call, &invite, s + 100_000, PROXY, UAS);
        feed(&mut call, &ok, s + secs(1), UAS, PROXY);
        feed(&mut call, &ok, s + secs(1) + 100_000, PROXY, UAC);
        let end = s + secs(4);
        feed(&mut call, &bye, end, UAC, PROXY);
        feed(&mut call, &bye_ok, end + 200_000, UAS, PROXY);
        feed(&mut call, &bye, end + 300_000, PROXY, UAS);
        feed(&mut call, &bye_ok, end + 400_000, PROXY, UAC);
        let call = call.unwrap();
        assert!(call.bye_confirmed);
        assert_eq!(call.destroy_at, Some(end + 200_000 + secs(5)));
        assert_eq!(call.expired(end + secs(5), &t), None);
        assert_eq!(call.expired(end + secs(6), &t), Some(EndReason::Normal));
    }

    /// A sender 60 s behind: the call's times are its, the ticks the receive time's; timers move the tick onto
    /// the slowest clock the call's packets showed.
    #[test]
    fn timers_run_on_the_senders_clock() {
        let t = Timeouts::from_config(&Config::default());
        let rx = secs(1_800_000_000);
        let mut call = None;
        let invite = text("INVITE sip:uas@127.0.0.1:5070 SIP/2.0", "1 INVITE", "");
        feed(&mut call, &invite, rx - secs(60), UAC, PROXY);
        let mut call = call.unwrap();
        assert_eq!(call.skew, None);
        call.heard(-secs(60));
        call.heard(-secs(60) - 3_000_000);
        call.heard(-secs(59));
        assert_eq!(call.skew, Some(-secs(60) - 3_000_000));
        // Only the caller seen so far: on the receive time's clock the call would look one-way a minute ago.
        assert_eq!(call.expired(rx + secs(2), &t), Some(EndReason::Oneway));
        assert_eq!(call.expired_at(rx + secs(2), &t), None);
        assert_eq!(call.expired_at(rx + t.oneway + secs(1), &t), Some(EndReason::Oneway));
        // A packet time's own clock (no skew) is left as it is.
        call.skew = None;
        assert_eq!(call.expired_at(rx + secs(2), &t), Some(EndReason::Oneway));
    }
}
