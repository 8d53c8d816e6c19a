//! The media side of a call: RTP packets into per-SSRC streams (with a fast path for known streams), RTCP
//! reports attached to the streams they describe.

use super::*;

impl Call {
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
                        self.last_rtp = Some(self.last_rtp.map_or(ts, |l| l.max(ts)));
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
        self.first_rtp = Some(self.first_rtp.map_or(ts, |f| f.min(ts)));
        if !self.bye_confirmed {
            self.last_rtp = Some(self.last_rtp.map_or(ts, |l| l.max(ts)));
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
