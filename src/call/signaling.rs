//! The SIP side of a call: which side sent a message, SDP offers and answers, requests and responses, and the
//! dialog state the CDR reports (reference §5).

use super::*;

impl Call {
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
                // Once a 2xx confirmed the BYE, the call ends 5 s after it: a BYE seen after that (the copy of a
                // proxy's forwarded BYE that its HEP sender stamped or sent after the answer, a retransmission)
                // must not hold the call open for another minute.
                if !self.bye_confirmed {
                    self.bye_cseq = Some(m.h.cseq_num);
                    self.destroy_at = Some(p.ts + secs(60));
                }
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
}
