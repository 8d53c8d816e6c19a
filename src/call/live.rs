//! A call in progress as the manager's `listcalls` shows it: a copy of a few fields, taken by the call's owner
//! between two batches, so the manager never touches call state itself.

use std::net::IpAddr;

use super::{Call, Side};
use crate::time::Nanos;

#[derive(Debug, Clone)]
pub struct LiveCall {
    pub key: u64,
    pub callid: String,
    pub calldate: Nanos,
    pub last_packet: Nanos,
    pub connect: Option<Nanos>,
    pub caller: String,
    pub called: String,
    pub callername: String,
    pub caller_domain: String,
    pub called_domain: String,
    pub caller_agent: String,
    pub called_agent: String,
    pub caller_ip: IpAddr,
    pub called_ip: IpAddr,
    pub last_response: Option<u16>,
    /// The busiest stream each side sent: its quality so far.
    pub caller_rtp: Option<LiveStream>,
    pub called_rtp: Option<LiveStream>,
    pub vlan: Option<u16>,
}

/// A stream's quality so far.
#[derive(Debug, Clone, Copy)]
pub struct LiveStream {
    pub received: u32,
    pub lost: i64,
    /// Largest and mean RFC 3550 jitter, ms.
    pub jitter_max: f64,
    pub jitter_avg: f64,
    /// (average, minimum) MOS of the f1, f2 and adaptive jitter-buffer simulations, as if the stream ended now.
    pub mos: [(f64, f64); 3],
}

impl LiveCall {
    pub fn of(c: &Call) -> LiveCall {
        let side = |s: Side| {
            c.streams.iter().filter(|x| x.sender == s).max_by_key(|x| x.stats.packets).map(|x| LiveStream {
                received: x.stats.packets,
                lost: x.stats.lost(),
                jitter_max: x.stats.max_jitter,
                jitter_avg: x.stats.mean_jitter,
                mos: x.stats.mos_so_far(),
            })
        };
        let last_response =
            c.final_fail.as_ref().or(c.ok_response.as_ref()).or(c.last_provisional.as_ref()).map(|(code, _)| *code);
        LiveCall {
            key: c.key,
            callid: c.callid.clone(),
            calldate: c.first_ts,
            last_packet: c.last_ts,
            connect: c.first_2xx,
            caller: c.caller.user.clone(),
            called: c.called.user.clone(),
            callername: c.caller.display.clone(),
            caller_domain: c.caller.domain.clone(),
            called_domain: c.called.domain.clone(),
            caller_agent: c.ua_caller.clone(),
            called_agent: c.ua_called.clone(),
            caller_ip: c.sip_caller.0,
            called_ip: c.sip_called.0,
            last_response,
            caller_rtp: side(Side::Caller),
            called_rtp: side(Side::Callee),
            vlan: c.vlan,
        }
    }
}
