//! A tolerant SDP reader (RFC 4566/8866): session and media `c=` (IPv4/IPv6), every `m=` line, `a=rtpmap`,
//! `a=rtcp`, `a=rtcp-mux`, direction attributes and `a=ptime`. Also finds an SDP part inside a multipart body.

use std::net::IpAddr;

use memchr::memmem;

use super::framing::trim;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    pub addr: Option<IpAddr>,
    pub rtpmap: Vec<RtpMap>,
    /// Explicit RTCP port (and address) from `a=rtcp`.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    pub rtcp_mux: bool,
    pub direction: Direction,
    pub ptime: Option<u32>,
}

impl Media {
    pub fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP")
    }

    /// The address media is sent to: the media-level `c=` or the session one.
    pub fn address(&self, session: Option<IpAddr>) -> Option<IpAddr> {
        self.addr.or(session)
    }

    /// The RTCP endpoint, unless RTCP is multiplexed on the RTP port.
    pub fn rtcp_endpoint(&self, session: Option<IpAddr>) -> Option<(IpAddr, u16)> {
        if self.rtcp_mux {
            return None;
        }
        let addr = self.address(session)?;
        match self.rtcp {
            Some((p, a)) => Some((a.unwrap_or(addr), p)),
            None => self.port.checked_add(1).map(|p| (addr, p)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sdp {
    pub origin_session: String,
    pub addr: Option<IpAddr>,
    pub media: Vec<Media>,
    pub direction: Direction,
}

/// Returns the SDP text of a SIP body, whether the body is SDP itself or a multipart with an SDP part.
pub fn sdp_part<'a>(content_type: &[u8], body: &'a [u8]) -> Option<&'a [u8]> {
    let ct = trim(content_type);
    let lower: Vec<u8> = ct.iter().map(u8::to_ascii_lowercase).collect();
    if lower.starts_with(b"application/sdp") {
        return Some(body);
    }
    if lower.starts_with(b"multipart/") {
        let bpos = memmem::find(&lower, b"boundary=")?;
        let mut b = &ct[bpos + 9..];
        let end = b.iter().position(|&c| c == b';').unwrap_or(b.len());
        b = trim(&b[..end]);
        let b = b.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")).unwrap_or(b);
        let mut delim = b"--".to_vec();
        delim.extend_from_slice(b);
        let mut rest = body;
        while let Some(i) = memmem::find(rest, &delim) {
            rest = &rest[i + delim.len()..];
            let part_end = memmem::find(rest, &delim).unwrap_or(rest.len());
            let part = &rest[..part_end];
            let (hend, bstart) = match memmem::find(part, b"\r\n\r\n") {
                Some(h) => (h, h + 4),
                None => match memmem::find(part, b"\n\n") {
                    Some(h) => (h, h + 2),
                    None => continue,
                },
            };
            let ph: Vec<u8> = part[..hend].iter().map(u8::to_ascii_lowercase).collect();
            if memmem::find(&ph, b"application/sdp").is_some() {
                return Some(&part[bstart..]);
            }
        }
        return None;
    }
    // No or unknown Content-Type: accept a body that plainly is SDP.
    (ct.is_empty() && body.starts_with(b"v=0")).then_some(body)
}

/// Parses SDP text. Lines that do not parse are skipped; a body without `m=` lines gives an empty media list.
pub fn parse(text: &[u8]) -> Sdp {
    let mut sdp = Sdp::default();
    let mut cur: Option<Media> = None;
    for raw in text.split(|&c| c == b'\n') {
        let line = trim(raw);
        if line.len() < 2 || line[1] != b'=' {
            continue;
        }
        let Ok(val) = std::str::from_utf8(&line[2..]) else {
            continue;
        };
        match line[0] {
            b'o' if cur.is_none() => {
                sdp.origin_session = val.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            b'c' => {
                let addr = parse_conn(val);
                match cur.as_mut() {
                    Some(m) => m.addr = addr.or(m.addr),
                    None => sdp.addr = addr,
                }
            }
            b'm' => {
                if let Some(m) = cur.take() {
                    sdp.media.push(m);
                }
                if sdp.media.len() >= 16 {
                    continue;
                }
                let mut it = val.split_whitespace();
                let kind = it.next().unwrap_or("").to_string();
                let port_tok = it.next().unwrap_or("");
                let port = port_tok.split('/').next().and_then(|p| p.parse::<u16>().ok());
                let proto = it.next().unwrap_or("").to_string();
                let formats = it.filter_map(|f| f.parse::<u8>().ok()).filter(|&f| f < 128).take(32).collect();
                if let Some(port) = port {
                    cur = Some(Media {
                        kind,
                        port,
                        proto,
                        formats,
                        addr: None,
                        rtpmap: Vec::new(),
                        rtcp: None,
                        rtcp_mux: false,
                        direction: sdp.direction,
                        ptime: None,
                    });
                }
            }
            b'a' => {
                let (name, value) = match val.find(':') {
                    Some(i) => (&val[..i], val[i + 1..].trim()),
                    None => (val, ""),
                };
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match cur.as_mut() {
                    None => {
                        if let Some(d) = dir {
                            sdp.direction = d;
                        }
                    }
                    Some(m) => {
                        if let Some(d) = dir {
                            m.direction = d;
                        }
                        match name {
                            "rtpmap" => {
                                if let Some(r) = parse_rtpmap(value) {
                                    if m.rtpmap.len() < 32 {
                                        m.rtpmap.push(r);
                                    }
                                }
                            }
                            "rtcp" => {
                                let mut it = value.split_whitespace();
                                if let Some(p) = it.next().and_then(|p| p.parse::<u16>().ok()) {
                                    let rest: Vec<&str> = it.collect();
                                    let a = if rest.len() >= 3 { rest[2].parse::<IpAddr>().ok() } else { None };
                                    m.rtcp = Some((p, a));
                                }
                            }
                            "rtcp-mux" => m.rtcp_mux = true,
                            "ptime" => m.ptime = value.parse::<f32>().ok().map(|p| p as u32),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(m) = cur.take() {
        sdp.media.push(m);
    }
    sdp
}

fn parse_conn(v: &str) -> Option<IpAddr> {
    let mut it = v.split_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let _fam = it.next()?;
    let a = it.next()?;
    // Multicast notation addr/ttl[/count].
    a.split('/').next()?.parse().ok()
}

fn parse_rtpmap(v: &str) -> Option<RtpMap> {
    let mut it = v.split_whitespace();
    let pt = it.next()?.parse::<u8>().ok().filter(|&p| p < 128)?;
    let enc = it.next()?;
    let mut parts = enc.split('/');
    let encoding = parts.next()?.to_string();
    let clock = parts.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(8000);
    Some(RtpMap { pt, encoding, clock })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\no=- 123 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendonly\r\n\
m=video 5000 RTP/AVP 96\r\nc=IN IP6 2001:db8::2\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n\
m=image 6000 udptl t38\r\n";

    #[test]
    fn media_lines() {
        let s = parse(SDP);
        assert_eq!(s.origin_session, "123");
        assert_eq!(s.media.len(), 3);
        let a = &s.media[0];
        assert_eq!((a.port, a.formats.clone()), (4000, vec![0, 8, 101]));
        assert_eq!(a.direction, Direction::SendOnly);
        assert_eq!(a.rtcp_endpoint(s.addr), Some(("10.0.0.1".parse().unwrap(), 4001)));
        let v = &s.media[1];
        assert_eq!(v.address(s.addr), Some("2001:db8::2".parse().unwrap()));
        assert_eq!(v.rtpmap[0].clock, 90000);
        assert!(v.rtcp_endpoint(s.addr).is_none());
        assert!(!s.media[2].is_rtp());
    }

    #[test]
    fn multipart() {
        let body = b"--xyz\r\nContent-Type: application/isup\r\n\r\nabc\r\n--xyz\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nm=audio 1 RTP/AVP 0\r\n--xyz--";
        let p = sdp_part(b"multipart/mixed;boundary=xyz", body).unwrap();
        assert!(p.starts_with(b"v=0"));
        assert_eq!(parse(p).media[0].port, 1);
    }
}

/// A media endpoint announced in SDP: RTP sent to `addr:port` belongs to the announcing side's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub addr: IpAddr,
    pub port: u16,
    pub rtcp: bool,
    pub video: bool,
    /// False for media that is not RTP (T.38 over UDPTL, MSRP…): packets to it are routed to the call but not
    /// analysed as RTP.
    pub rtp: bool,
}

/// The endpoints of every `m=` line: RTP and RTCP for audio/video RTP media, the plain port for other media.
/// Port 0 (a rejected stream) and the unspecified address (old-style hold) announce nothing.
pub fn announced(sdp: &Sdp) -> Vec<Announced> {
    let mut out = Vec::new();
    for m in &sdp.media {
        if m.port == 0 {
            continue;
        }
        let Some(addr) = m.address(sdp.addr) else {
            continue;
        };
        if addr.is_unspecified() {
            continue;
        }
        let video = m.kind.eq_ignore_ascii_case("video");
        let rtp = m.is_rtp() && (video || m.kind.eq_ignore_ascii_case("audio"));
        out.push(Announced { addr, port: m.port, rtcp: false, video, rtp });
        if !rtp {
            continue;
        }
        if let Some((a, p)) = m.rtcp_endpoint(sdp.addr) {
            if !a.is_unspecified() {
                out.push(Announced { addr: a, port: p, rtcp: true, video, rtp });
            }
        }
    }
    out
}
