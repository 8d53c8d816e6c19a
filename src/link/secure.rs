//! The sensor link's handshake and record layer.
//!
//! VoIPmonitor's link sends the password under RSA, then uses AES-CBC with one fixed IV and a byte-sum as its
//! only integrity check. voxtap's link is built so that the password never crosses the wire and a recorded
//! session gives nothing to guess offline:
//!
//! 1. Both sides run SPAKE2 (symmetric, Ed25519 group) on `server_password`. A passive listener learns nothing
//!    that tests a password guess; an active attacker gets one guess per connection, which the central logs.
//! 2. The two hello frames (versions, sensor identity, clocks, the SPAKE2 messages) are hashed into a transcript;
//!    HKDF-SHA256 over the SPAKE2 key and that hash gives one key per direction and two confirmation keys.
//! 3. Each side proves it holds the key with an HMAC of the transcript (the central first). A wrong password
//!    fails here on both sides, with a message that says so; a tampered hello fails the same way.
//! 4. Every later frame is ChaCha20-Poly1305 with a nonce made from a per-direction counter and the frame's
//!    length as associated data: a dropped, replayed, reordered or altered frame fails to open and ends the
//!    connection. The SPAKE2 exchange is ephemeral, so a later password leak does not open recorded sessions.
//!
//! Frames are `u32` big-endian length, then the body. Before the keys exist bodies are JSON and at most
//! `HELLO_MAX` bytes, so a port scan or a stranger's bytes cost a few reads and a log line.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Protocol versions this build speaks, newest last.
pub const VERSIONS: &[u32] = &[1];
/// The largest handshake frame accepted.
const HELLO_MAX: usize = 16 << 10;
/// The largest record accepted after the handshake (a compressed batch is far smaller).
pub const RECORD_MAX: usize = 64 << 20;
/// How long a peer may take over the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAGIC: &str = "voxtap-link";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("not a voxtap link peer: {0}")]
    Protocol(String),
    #[error("no common protocol version (ours {ours:?}, theirs {theirs:?})")]
    Version { ours: Vec<u32>, theirs: Vec<u32> },
    #[error("authentication failed: server_password differs on the two sides (or the peer is not who it claims)")]
    Auth,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("a frame failed authentication (altered, replayed, reordered or cut): connection dropped")]
    Tampered,
    #[error("refused by the peer: {0}")]
    Refused(String),
}

/// What the remote says about itself; hashed into the transcript, so it is authenticated once the keys confirm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientHello {
    pub magic: String,
    pub versions: Vec<u32>,
    pub sensor_id: Option<u16>,
    pub sensor_name: String,
    /// `cdr`: the remote analyses and sends CDRs; `packets`: it sends raw packets (packetbuffer_sender).
    pub mode: String,
    /// The remote's on-disk queue identity, so the central tells a resent batch from a new one.
    pub queue_id: String,
    /// The remote's wall clock, microseconds since the epoch.
    pub time_us: i64,
    /// hex of the SPAKE2 message.
    pub spake2: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerHello {
    pub magic: String,
    pub version: u32,
    pub time_us: i64,
    pub spake2: String,
}

/// One direction's cipher and frame counter.
struct Half {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Half {
    fn nonce(&mut self) -> Nonce {
        counter_nonce(&mut self.counter)
    }
}

/// The nonce of a direction's next frame: four zero bytes, then the frame counter (big-endian), which moves
/// on. A key is only ever used for one direction of one connection, so a nonce never repeats under a key.
pub fn counter_nonce(counter: &mut u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    *counter += 1;
    Nonce::clone_from_slice(&n)
}

/// An authenticated, encrypted connection: records are `kind` byte + payload.
pub struct Channel {
    pub tx: SendHalf,
    pub rx: RecvHalf,
    pub version: u32,
}

/// The sending direction (its own socket handle, so one thread can send while another receives).
pub struct SendHalf {
    stream: TcpStream,
    half: Half,
}

pub struct RecvHalf {
    stream: TcpStream,
    half: Half,
    buf: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut f = Vec::with_capacity(body.len() + 4);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    s.write_all(&f)
}

/// Reads one frame of at most `max` bytes into `buf`.
fn read_frame(s: &mut TcpStream, max: usize, buf: &mut Vec<u8>) -> Result<[u8; 4], LinkError> {
    let mut h = [0u8; 4];
    match s.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(h) as usize;
    if n > max {
        return Err(LinkError::TooLarge(n));
    }
    buf.clear();
    buf.resize(n, 0);
    s.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LinkError::Closed,
        _ => e.into(),
    })?;
    Ok(h)
}

fn transcript(client: &[u8], server: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAGIC.as_bytes());
    for part in [client, server] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

struct Keys {
    c2s: [u8; 32],
    s2c: [u8; 32],
    confirm_c: [u8; 32],
    confirm_s: [u8; 32],
}

fn derive(shared: &[u8], th: &[u8; 32]) -> Keys {
    let hk = Hkdf::<Sha256>::new(Some(th), shared);
    let mut k = Keys { c2s: [0; 32], s2c: [0; 32], confirm_c: [0; 32], confirm_s: [0; 32] };
    // 32-byte outputs of SHA-256 HKDF cannot fail.
    for (label, out) in [
        (&b"voxtap link c2s"[..], &mut k.c2s),
        (b"voxtap link s2c", &mut k.s2c),
        (b"voxtap link confirm client", &mut k.confirm_c),
        (b"voxtap link confirm server", &mut k.confirm_s),
    ] {
        let _ = hk.expand(label, out);
    }
    k
}

fn mac(key: &[u8; 32], th: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(th);
    m
}

fn spake(password: &str) -> (Spake2<Ed25519Group>, Vec<u8>) {
    Spake2::<Ed25519Group>::start_symmetric(&Password::new(password.as_bytes()), &Identity::new(MAGIC.as_bytes()))
}

fn channel(stream: TcpStream, tx: [u8; 32], rx: [u8; 32], version: u32) -> Result<Channel, LinkError> {
    Ok(Channel {
        tx: SendHalf {
            stream: stream.try_clone()?,
            half: Half { aead: ChaCha20Poly1305::new(Key::from_slice(&tx)), counter: 0 },
        },
        rx: RecvHalf {
            stream,
            half: Half { aead: ChaCha20Poly1305::new(Key::from_slice(&rx)), counter: 0 },
            buf: Vec::new(),
        },
        version,
    })
}

/// The remote's side: returns the channel and the central's hello (its clock).
pub fn connect(
    mut stream: TcpStream,
    password: &str,
    mut hello: ClientHello,
) -> Result<(Channel, ServerHello), LinkError> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let (state, msg) = spake(password);
    hello.magic = MAGIC.into();
    hello.versions = VERSIONS.to_vec();
    hello.spake2 = hex(&msg);
    let c_bytes = serde_json::to_vec(&hello).map_err(|e| LinkError::Protocol(e.to_string()))?;
    write_frame(&mut stream, &c_bytes)?;
    let mut s_bytes = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut s_bytes)?;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s_bytes) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(LinkError::Refused(e.to_string()));
        }
    }
    let sh: ServerHello =
        serde_json::from_slice(&s_bytes).map_err(|e| LinkError::Protocol(format!("unreadable server hello: {e}")))?;
    if sh.magic != MAGIC {
        return Err(LinkError::Protocol("bad magic in the server hello".into()));
    }
    if !VERSIONS.contains(&sh.version) {
        return Err(LinkError::Version { ours: VERSIONS.to_vec(), theirs: vec![sh.version] });
    }
    let peer = unhex(&sh.spake2).ok_or_else(|| LinkError::Protocol("bad SPAKE2 message".into()))?;
    let shared = state.finish(&peer).map_err(|_| LinkError::Protocol("bad SPAKE2 message".into()))?;
    let th = transcript(&c_bytes, &s_bytes);
    let keys = derive(&shared, &th);
    // The central proves itself first, so a remote never reveals anything to a wrong central.
    let mut proof = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut proof)?;
    let proof = unhex(std::str::from_utf8(&proof).unwrap_or("")).unwrap_or_default();
    if mac(&keys.confirm_s, &th).verify_slice(&proof).is_err() {
        // Tell the central, so it counts and logs a failed authentication rather than a dropped connection.
        let _ = write_frame(&mut stream, b"authentication failed");
        return Err(LinkError::Auth);
    }
    write_frame(&mut stream, hex(&mac(&keys.confirm_c, &th).finalize().into_bytes()).as_bytes())?;
    Ok((channel(stream, keys.c2s, keys.s2c, sh.version)?, sh))
}

/// The central's side, up to the remote's proof: the caller then checks the clock and the sensor id (and
/// answers with a record) — the remote's hello is authenticated once this returns.
pub fn accept(mut stream: TcpStream, password: &str, now_us: i64) -> Result<(Channel, ClientHello), LinkError> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut c_bytes = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut c_bytes)?;
    let ch: ClientHello =
        serde_json::from_slice(&c_bytes).map_err(|e| LinkError::Protocol(format!("unreadable client hello: {e}")))?;
    if ch.magic != MAGIC {
        return Err(LinkError::Protocol("bad magic in the client hello".into()));
    }
    let Some(version) = ch.versions.iter().copied().filter(|v| VERSIONS.contains(v)).max() else {
        let msg = format!("no common protocol version: central speaks {VERSIONS:?}");
        let _ = write_frame(&mut stream, serde_json::json!({ "error": msg }).to_string().as_bytes());
        return Err(LinkError::Version { ours: VERSIONS.to_vec(), theirs: ch.versions });
    };
    let peer = unhex(&ch.spake2).ok_or_else(|| LinkError::Protocol("bad SPAKE2 message".into()))?;
    let (state, msg) = spake(password);
    let sh = ServerHello { magic: MAGIC.into(), version, time_us: now_us, spake2: hex(&msg) };
    let s_bytes = serde_json::to_vec(&sh).map_err(|e| LinkError::Protocol(e.to_string()))?;
    write_frame(&mut stream, &s_bytes)?;
    let shared = state.finish(&peer).map_err(|_| LinkError::Protocol("bad SPAKE2 message".into()))?;
    let th = transcript(&c_bytes, &s_bytes);
    let keys = derive(&shared, &th);
    write_frame(&mut stream, hex(&mac(&keys.confirm_s, &th).finalize().into_bytes()).as_bytes())?;
    let mut proof = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut proof)?;
    let proof = unhex(std::str::from_utf8(&proof).unwrap_or("")).ok_or(LinkError::Auth)?;
    mac(&keys.confirm_c, &th).verify_slice(&proof).map_err(|_| LinkError::Auth)?;
    Ok((channel(stream, keys.s2c, keys.c2s, version)?, ch))
}

impl Channel {
    pub fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), LinkError> {
        self.tx.send(kind, payload)
    }

    pub fn recv(&mut self) -> Result<(u8, &[u8]), LinkError> {
        self.rx.recv()
    }

    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.tx.stream.peer_addr().ok()
    }
}

impl SendHalf {
    /// Seals and sends one record.
    pub fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), LinkError> {
        let len = payload.len() + 1 + 16;
        if len > RECORD_MAX {
            return Err(LinkError::TooLarge(len));
        }
        let aad = (len as u32).to_be_bytes();
        let mut sealed = Vec::with_capacity(len);
        sealed.push(kind);
        sealed.extend_from_slice(payload);
        let nonce = self.half.nonce();
        self.half.aead.encrypt_in_place(&nonce, &aad, &mut sealed).map_err(|_| LinkError::TooLarge(len))?;
        self.stream.write_all(&aad)?;
        self.stream.write_all(&sealed)?;
        Ok(())
    }

    /// Closes the connection for both halves (wakes a thread blocked in `recv`).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }
}

impl RecvHalf {
    /// Receives and opens one record; the payload stays valid until the next call.
    pub fn recv(&mut self) -> Result<(u8, &[u8]), LinkError> {
        let mut buf = std::mem::take(&mut self.buf);
        let aad = match read_frame(&mut self.stream, RECORD_MAX, &mut buf) {
            Ok(a) => a,
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        };
        let nonce = self.half.nonce();
        let opened = self.half.aead.decrypt_in_place(&nonce, &aad, &mut buf);
        self.buf = buf;
        if opened.is_err() || self.buf.is_empty() {
            return Err(LinkError::Tampered);
        }
        Ok((self.buf[0], &self.buf[1..]))
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn hello() -> ClientHello {
        ClientHello {
            magic: String::new(),
            versions: vec![],
            sensor_id: Some(7),
            sensor_name: "r1".into(),
            mode: "cdr".into(),
            queue_id: "q".into(),
            time_us: 1,
            spake2: String::new(),
        }
    }

    type Ends = (Result<(Channel, ServerHello), LinkError>, Result<(Channel, ClientHello), LinkError>);

    /// Runs a handshake with the two passwords; returns both ends' results.
    fn pair(cpw: &'static str, spw: &'static str) -> Ends {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            accept(s, spw, 42)
        });
        let c = connect(TcpStream::connect(addr).unwrap(), cpw, hello());
        (c, t.join().unwrap())
    }

    #[test]
    fn records_round_trip_both_ways() {
        let (c, s) = pair("secret", "secret");
        let (mut c, sh) = c.unwrap();
        let (mut s, ch) = s.unwrap();
        assert_eq!((sh.time_us, ch.sensor_id, ch.mode.as_str()), (42, Some(7), "cdr"));
        for i in 0..5u8 {
            c.send(3, &vec![i; 1000 * i as usize]).unwrap();
            let (k, p) = s.recv().unwrap();
            assert_eq!((k, p.len()), (3, 1000 * i as usize));
            s.send(5, &[i]).unwrap();
            assert_eq!(c.recv().unwrap(), (5, &[i][..]));
        }
    }

    #[test]
    fn wrong_password_fails_on_both_sides() {
        let (c, s) = pair("secret", "other");
        assert!(matches!(c, Err(LinkError::Auth)), "{:?}", c.err());
        // The remote says so after the central's proof fails: the central knows it was the password.
        assert!(matches!(s, Err(LinkError::Auth)), "{:?}", s.err());
    }

    #[test]
    fn replayed_and_altered_frames_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // A man in the middle that records the remote's frames and plays one twice, then flips a bit.
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let raddr = relay.local_addr().unwrap();
        let mitm = std::thread::spawn(move || {
            let (mut from, _) = relay.accept().unwrap();
            let mut to = TcpStream::connect(addr).unwrap();
            let mut back = to.try_clone().unwrap();
            let mut from2 = from.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = io::copy(&mut back, &mut from2);
            });
            let mut frames = Vec::new();
            let mut buf = Vec::new();
            // Hello and proof pass through.
            for _ in 0..2 {
                let h = read_frame(&mut from, HELLO_MAX, &mut buf).unwrap();
                to.write_all(&h).unwrap();
                to.write_all(&buf).unwrap();
            }
            let h = read_frame(&mut from, RECORD_MAX, &mut buf).unwrap();
            frames.push((h, buf.clone()));
            to.write_all(&h).unwrap();
            to.write_all(&buf).unwrap();
            // Replay.
            to.write_all(&h).unwrap();
            to.write_all(&buf).unwrap();
        });
        let srv = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let (mut ch, _) = accept(s, "pw", 0).unwrap();
            let first = ch.recv().map(|(k, p)| (k, p.to_vec()));
            let second = ch.recv().map(|(k, p)| (k, p.to_vec()));
            (first, second)
        });
        let (mut c, _) = connect(TcpStream::connect(raddr).unwrap(), "pw", hello()).unwrap();
        c.send(3, b"batch").unwrap();
        let (first, second) = srv.join().unwrap();
        mitm.join().unwrap();
        assert_eq!(first.unwrap(), (3, b"batch".to_vec()));
        assert!(matches!(second, Err(LinkError::Tampered)));
    }

    #[test]
    fn garbage_and_oversized_hellos_are_errors() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for junk in [&b"\x00\x00\x00\x05hello"[..], b"\xff\xff\xff\xffxx", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00"] {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(junk).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let (s, _) = l.accept().unwrap();
            assert!(accept(s, "pw", 0).is_err());
        }
    }
}
