//! SIP message parser (RFC 3261 §7): start line, headers with compact names, case-insensitive names, folded
//! continuation lines, and the body. Zero-copy: every field borrows from the packet. Hostile input gets an
//! error, never a panic; unknown headers are ignored.

use memchr::{memchr, memmem};
use thiserror::Error;

use super::framing::{content_length, trim};

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SipError {
    #[error("not a SIP start line")]
    NotSip,
    #[error("bad status code")]
    BadStatus,
    #[error("missing Call-ID")]
    NoCallId,
    #[error("missing or bad CSeq")]
    BadCseq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other,
}

impl Method {
    pub fn parse(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Other => "OTHER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: Method, uri: &'a [u8] },
    Response { code: u16, reason: &'a [u8] },
}

/// A name-addr / addr-spec header (From, To, P-Asserted-Identity, Contact): display name, URI user and host, tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: &'a [u8],
    pub user: &'a [u8],
    pub host: &'a [u8],
    pub tag: &'a [u8],
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    pub call_id: &'a [u8],
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub cseq_num: u32,
    pub cseq_method: Option<Method>,
    pub via_branch: &'a [u8],
    pub contact: NameAddr<'a>,
    pub user_agent: &'a [u8],
    pub server: &'a [u8],
    pub reason: &'a [u8],
    pub pai: NameAddr<'a>,
    pub content_type: &'a [u8],
    pub expires: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct SipMessage<'a> {
    pub start: StartLine<'a>,
    pub h: Headers<'a>,
    pub body: &'a [u8],
}

impl<'a> SipMessage<'a> {
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
}

/// Finds the Call-ID quickly without parsing the rest (the rx stage hashes it to pick an owner).
pub fn find_call_id(msg: &[u8]) -> Option<&[u8]> {
    let hend = memmem::find(msg, b"\r\n\r\n").unwrap_or(msg.len());
    let head = &msg[..hend];
    let mut pos = memchr(b'\n', head)? + 1;
    while pos < head.len() {
        let end = memchr(b'\n', &head[pos..]).map(|i| pos + i).unwrap_or(head.len());
        let line = &head[pos..end];
        if let Some(c) = memchr(b':', line) {
            let name = trim(&line[..c]);
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                let v = trim(&line[c + 1..]);
                return (!v.is_empty()).then_some(v);
            }
        }
        pos = end + 1;
    }
    None
}

/// Parses a whole SIP message.
pub fn parse(msg: &[u8]) -> Result<SipMessage<'_>, SipError> {
    let first_end = memchr(b'\n', msg).ok_or(SipError::NotSip)?;
    let start = parse_start_line(trim(&msg[..first_end]))?;
    let (hend, body_start) = match memmem::find(msg, b"\r\n\r\n") {
        Some(i) => (i + 2, i + 4),
        None => match memmem::find(msg, b"\n\n") {
            Some(i) => (i + 1, i + 2),
            None => (msg.len(), msg.len()),
        },
    };
    let head = &msg[first_end + 1..hend.max(first_end + 1)];
    let mut h = Headers::default();
    let mut cseq_seen = false;
    let mut pai_seen = false;
    // Walk logical header lines; a line starting with space or tab continues the previous one (folding).
    let mut lines = LogicalLines { b: head, pos: 0 };
    while let Some(line) = lines.next() {
        let Some(c) = memchr(b':', line) else {
            continue;
        };
        let name = trim(&line[..c]);
        let value = trim(&line[c + 1..]);
        match name.len() {
            1 => match name[0].to_ascii_lowercase() {
                b'i' => set_once(&mut h.call_id, value),
                b'f' => set_addr(&mut h.from, value),
                b't' => set_addr(&mut h.to, value),
                b'v' => set_branch(&mut h.via_branch, value),
                b'm' => set_addr(&mut h.contact, value),
                b'c' => set_once(&mut h.content_type, value),
                _ => {}
            },
            _ => {
                if name.eq_ignore_ascii_case(b"call-id") {
                    set_once(&mut h.call_id, value);
                } else if name.eq_ignore_ascii_case(b"from") {
                    set_addr(&mut h.from, value);
                } else if name.eq_ignore_ascii_case(b"to") {
                    set_addr(&mut h.to, value);
                } else if name.eq_ignore_ascii_case(b"cseq") {
                    if !cseq_seen {
                        cseq_seen = true;
                        let (n, m) = parse_cseq(value).ok_or(SipError::BadCseq)?;
                        h.cseq_num = n;
                        h.cseq_method = Some(m);
                    }
                } else if name.eq_ignore_ascii_case(b"via") {
                    set_branch(&mut h.via_branch, value);
                } else if name.eq_ignore_ascii_case(b"contact") {
                    set_addr(&mut h.contact, value);
                } else if name.eq_ignore_ascii_case(b"user-agent") {
                    set_once(&mut h.user_agent, value);
                } else if name.eq_ignore_ascii_case(b"server") {
                    set_once(&mut h.server, value);
                } else if name.eq_ignore_ascii_case(b"reason") {
                    set_once(&mut h.reason, value);
                } else if name.eq_ignore_ascii_case(b"p-asserted-identity") {
                    if !pai_seen {
                        pai_seen = true;
                        h.pai = parse_name_addr(value);
                    }
                } else if name.eq_ignore_ascii_case(b"content-type") {
                    set_once(&mut h.content_type, value);
                } else if name.eq_ignore_ascii_case(b"expires") {
                    h.expires = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                }
            }
        }
    }
    if h.call_id.is_empty() {
        return Err(SipError::NoCallId);
    }
    if !cseq_seen {
        return Err(SipError::BadCseq);
    }
    let mut body = &msg[body_start.min(msg.len())..];
    if let Some(cl) = content_length(head) {
        body = &body[..cl.min(body.len())];
    }
    Ok(SipMessage { start, h, body })
}

struct LogicalLines<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> LogicalLines<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.b.len() {
            return None;
        }
        let start = self.pos;
        let mut end;
        loop {
            end = memchr(b'\n', &self.b[self.pos..]).map(|i| self.pos + i).unwrap_or(self.b.len());
            self.pos = end + 1;
            match self.b.get(self.pos) {
                Some(b' ') | Some(b'\t') => continue,
                _ => break,
            }
        }
        Some(&self.b[start..end.min(self.b.len())])
    }
}

fn set_once<'a>(slot: &mut &'a [u8], v: &'a [u8]) {
    if slot.is_empty() {
        *slot = v;
    }
}

fn set_addr<'a>(slot: &mut NameAddr<'a>, v: &'a [u8]) {
    if slot.user.is_empty() && slot.host.is_empty() {
        *slot = parse_name_addr(v);
    }
}

fn set_branch<'a>(slot: &mut &'a [u8], v: &'a [u8]) {
    if slot.is_empty() {
        if let Some(b) = param(v, b"branch") {
            *slot = b;
        }
    }
}

fn parse_start_line(l: &[u8]) -> Result<StartLine<'_>, SipError> {
    if let Some(rest) = l.strip_prefix(b"SIP/2.0 ") {
        let rest = trim(rest);
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(SipError::BadStatus);
        }
        let code = (rest[0] - b'0') as u16 * 100 + (rest[1] - b'0') as u16 * 10 + (rest[2] - b'0') as u16;
        if !(100..=699).contains(&code) {
            return Err(SipError::BadStatus);
        }
        return Ok(StartLine::Response { code, reason: trim(&rest[3..]) });
    }
    let sp = memchr(b' ', l).ok_or(SipError::NotSip)?;
    let method_tok = &l[..sp];
    if method_tok.is_empty() || !method_tok.iter().all(|c| c.is_ascii_uppercase() || *c == b'-' || *c == b'_') {
        return Err(SipError::NotSip);
    }
    let rest = &l[sp + 1..];
    let sp2 = memchr(b' ', rest).ok_or(SipError::NotSip)?;
    if !trim(&rest[sp2 + 1..]).starts_with(b"SIP/2.0") {
        return Err(SipError::NotSip);
    }
    Ok(StartLine::Request { method: Method::parse(method_tok), uri: &rest[..sp2] })
}

fn parse_cseq(v: &[u8]) -> Option<(u32, Method)> {
    let v = trim(v);
    let sp = v.iter().position(|c| c.is_ascii_whitespace())?;
    let n = std::str::from_utf8(&v[..sp]).ok()?.parse::<u32>().ok()?;
    Some((n, Method::parse(trim(&v[sp..]))))
}

/// Value of a `;name=value` parameter (case-insensitive name), outside any `<...>`.
pub fn param<'a>(v: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut depth = 0i32;
    let mut in_quote = false;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'"' => in_quote = !in_quote,
            b'<' if !in_quote => depth += 1,
            b'>' if !in_quote => depth -= 1,
            b';' if !in_quote && depth <= 0 => {
                let rest = &v[i + 1..];
                let end = rest.iter().position(|&c| c == b';' || c == b',').unwrap_or(rest.len());
                let p = &rest[..end];
                let (k, val) = match memchr(b'=', p) {
                    Some(e) => (trim(&p[..e]), trim(&p[e + 1..])),
                    None => (trim(p), &p[p.len()..]),
                };
                if k.eq_ignore_ascii_case(name) {
                    return Some(val);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `"Display" <sip:user@host:port;params>;tag=x` or `sip:user@host;tag=x`.
pub fn parse_name_addr(v: &[u8]) -> NameAddr<'_> {
    let v = trim(v);
    let mut out = NameAddr::default();
    let (display, uri, params_from) = match memchr(b'<', v) {
        Some(lt) => {
            let gt = memchr(b'>', &v[lt..]).map(|i| lt + i).unwrap_or(v.len());
            let d = trim(&v[..lt]);
            let d = d.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")).unwrap_or(d);
            (trim(d), &v[lt + 1..gt], &v[gt.min(v.len())..])
        }
        None => {
            // addr-spec: URI parameters and header parameters cannot be told apart; tag is a header param.
            let semi = memchr(b';', v).unwrap_or(v.len());
            (&v[..0], &v[..semi], &v[semi..])
        }
    };
    out.display = display;
    let (user, host) = split_uri(uri);
    out.user = user;
    out.host = host;
    out.tag = param(params_from, b"tag").unwrap_or(&[]);
    out
}

/// URI → (user, host) for sip:, sips:, tel: and bare user@host.
pub fn split_uri(uri: &[u8]) -> (&[u8], &[u8]) {
    let uri = trim(uri);
    let body = if let Some(c) = memchr(b':', uri) {
        let scheme = &uri[..c];
        if scheme.eq_ignore_ascii_case(b"sip")
            || scheme.eq_ignore_ascii_case(b"sips")
            || scheme.eq_ignore_ascii_case(b"tel")
        {
            &uri[c + 1..]
        } else {
            uri
        }
    } else {
        uri
    };
    let is_tel = uri.len() >= 4 && uri[..4].eq_ignore_ascii_case(b"tel:");
    let end = body.iter().position(|&c| c == b';' || c == b'?' || c == b'>').unwrap_or(body.len());
    let body = &body[..end];
    if is_tel {
        return (body, &[]);
    }
    match memchr::memrchr(b'@', body) {
        Some(at) => {
            let user = &body[..at];
            let user = match memchr(b':', user) {
                Some(c) => &user[..c], // user:password
                None => user,
            };
            (user, strip_port(&body[at + 1..]))
        }
        None => (&body[..0], strip_port(body)),
    }
}

fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        return match memchr(b']', h) {
            Some(e) => &h[..e + 1],
            None => h,
        };
    }
    match memchr(b':', h) {
        Some(c) => &h[..c],
        None => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
from: \"Alice A\" <sip:alice:secret@atlanta.example.com:5060>\r\n ;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
User-Agent: test/1.0\r\n\
P-Asserted-Identity: <tel:+15551234>\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn request_with_compact_and_folded_headers() {
        let m = parse(INVITE).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.h.call_id, b"a84b4c76e66710@pc33.atlanta.example.com");
        assert_eq!(m.h.from.user, b"alice");
        assert_eq!(m.h.from.host, b"atlanta.example.com");
        assert_eq!(m.h.from.display, b"Alice A");
        assert_eq!(m.h.from.tag, b"1928301774");
        assert_eq!(m.h.to.user, b"bob");
        assert!(m.h.to.tag.is_empty());
        assert_eq!(m.h.cseq_num, 314159);
        assert_eq!(m.h.via_branch, b"z9hG4bK776asdhds");
        assert_eq!(m.h.pai.user, b"+15551234");
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(find_call_id(INVITE), Some(&b"a84b4c76e66710@pc33.atlanta.example.com"[..]));
    }

    #[test]
    fn response_line() {
        let m = parse(b"SIP/2.0 486 Busy Here\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(486));
        assert!(matches!(m.start, StartLine::Response { reason: b"Busy Here", .. }));
        assert!(parse(b"SIP/2.0 99 x\r\nCall-ID: x\r\nCSeq: 1 A\r\n\r\n").is_err());
        assert!(parse(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n").is_err());
        assert!(parse(b"hello world\r\n").is_err());
    }

    #[test]
    fn uris() {
        assert_eq!(split_uri(b"sip:[2001:db8::1]:5060"), (&b""[..], &b"[2001:db8::1]"[..]));
        assert_eq!(split_uri(b"sips:100@example.com;user=phone"), (&b"100"[..], &b"example.com"[..]));
        assert_eq!(parse_name_addr(b"sip:200@h;tag=abc").tag, b"abc");
    }
}
