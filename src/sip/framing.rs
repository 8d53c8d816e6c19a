//! Where a SIP message ends in a byte stream (TCP, reassembled WebSocket): the header block ends at the first
//! empty line, and the body is `Content-Length` (or compact `l`) bytes long.

use memchr::memmem;

/// Result of looking for one complete message at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// A full message of this many bytes is available.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// The start of `buf` is not a SIP message; skip this many bytes to the next plausible start line.
    Garbage(usize),
}

const METHODS: &[&[u8]] = &[
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"OPTIONS ",
    b"REGISTER ",
    b"PRACK ",
    b"SUBSCRIBE ",
    b"NOTIFY ",
    b"PUBLISH ",
    b"INFO ",
    b"REFER ",
    b"MESSAGE ",
    b"UPDATE ",
];

/// Does `b` begin with a SIP request or status line?
pub fn looks_like_start(b: &[u8]) -> bool {
    if b.starts_with(b"SIP/2.0 ") {
        return true;
    }
    METHODS.iter().any(|m| b.starts_with(m))
}

/// A whole SIP message, judged by its first line only: a status line, or a request line that ends in `SIP/2.0`.
/// Stricter than `looks_like_start`, for datagrams on ports not known to carry SIP.
pub fn sip_first_line(b: &[u8]) -> bool {
    if b.starts_with(b"SIP/2.0 ") {
        return true;
    }
    if !looks_like_start(b) {
        return false;
    }
    let Some(end) = memchr::memchr(b'\n', &b[..b.len().min(2048)]) else {
        return false;
    };
    let line = b[..end].strip_suffix(b"\r").unwrap_or(&b[..end]);
    line.ends_with(b" SIP/2.0")
}

#[cfg(test)]
#[test]
fn sip_first_lines() {
    assert!(sip_first_line(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n"));
    assert!(sip_first_line(b"SIP/2.0 200 OK\r\n"));
    assert!(!sip_first_line(b"INVITE me to dinner\r\n"));
    assert!(!sip_first_line(b"\x80\x00\x01\x02"));
}

/// Frames one message at the start of `buf`.
pub fn frame(buf: &[u8]) -> Framing {
    // Keep-alive CRLFs (RFC 5626) between messages.
    let lead = buf.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
    if lead > 0 {
        return Framing::Garbage(lead);
    }
    if buf.len() < 8 {
        return if is_prefix_of_start(buf) { Framing::Partial } else { resync(buf) };
    }
    if !looks_like_start(buf) {
        return resync(buf);
    }
    let Some(hend) =
        memmem::find(buf, b"\r\n\r\n").map(|i| i + 4).or_else(|| memmem::find(buf, b"\n\n").map(|i| i + 2))
    else {
        return Framing::Partial;
    };
    let body = content_length(&buf[..hend]).unwrap_or(0);
    match hend.checked_add(body) {
        Some(total) if total <= buf.len() => Framing::Complete(total),
        Some(_) => Framing::Partial,
        None => Framing::Garbage(hend),
    }
}

fn is_prefix_of_start(b: &[u8]) -> bool {
    b"SIP/2.0 ".starts_with(b) || METHODS.iter().any(|m| m.starts_with(b))
}

/// Skip to the next line that starts like a SIP message, or everything but a possible partial line.
fn resync(buf: &[u8]) -> Framing {
    let mut i = 0;
    while let Some(nl) = memchr::memchr(b'\n', &buf[i..]) {
        let s = i + nl + 1;
        let rest = &buf[s..];
        if looks_like_start(rest) || (rest.len() < 8 && !rest.is_empty() && is_prefix_of_start(rest)) {
            return Framing::Garbage(s);
        }
        i = s;
    }
    // No newline after position i: keep the tail in case it is the start of a message.
    Framing::Garbage(i.max(if is_prefix_of_start(&buf[i..]) { i } else { buf.len() }))
}

/// The Content-Length header value (full or compact name), if present and valid.
pub fn content_length(headers: &[u8]) -> Option<usize> {
    for line in headers.split(|&c| c == b'\n') {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = trim(&line[colon + 1..]);
            let s = std::str::from_utf8(v).ok()?;
            return s.parse::<usize>().ok().filter(|&n| n <= 16 << 20);
        }
    }
    None
}

pub fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map(|i| i + 1).unwrap_or(s);
    &b[s..e.max(s)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_body_by_content_length() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nl: 4\r\n\r\nabcdNEXT";
        assert_eq!(frame(m), Framing::Complete(m.len() - 4));
        assert_eq!(frame(&m[..20]), Framing::Partial);
        assert_eq!(frame(b"\r\n\r\nSIP/2.0 200 OK\r\n"), Framing::Garbage(4));
    }

    #[test]
    fn resyncs_on_garbage() {
        let m = b"xx garbage\r\nSIP/2.0 200 OK\r\n\r\n";
        assert_eq!(frame(m), Framing::Garbage(12));
        assert_eq!(frame(b"zzzzzzzzzz"), Framing::Garbage(10));
        // A partial start line at the end is kept.
        assert_eq!(frame(b"garbage line\nINV"), Framing::Garbage(13));
    }

    #[test]
    fn hostile_content_length() {
        let m = b"BYE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(frame(m), Framing::Complete(m.len()));
    }
}
