//! The sensor link's handshake and record layer (protocol version 2).
//!
//! VoIPmonitor's link sends the password under RSA, then uses AES-CBC with one fixed IV and a byte-sum as its
//! only integrity check. voxtap's link is built so that the password never crosses the wire, a recorded
//! session gives nothing to guess offline, and no passive listener learns which sensor is talking (an active
//! attacker posing as the central learns the identity, never the secret):
//!
//! 1. **Hidden identity.** Both sides run SPAKE2 (symmetric, Ed25519 group) on a public constant: an ephemeral
//!    key exchange that keeps the rest of the handshake (sensor id, name, queue) away from passive listeners.
//! 2. **Authentication.** Under those keys the remote names itself and sends a second SPAKE2 message made from
//!    its secret; the central answers with its own, made from that sensor's secret (`server_sensor_password`)
//!    or else the shared `server_password`. A secret of one sensor proves nothing for another.
//! 3. Both shared keys and a hash of every handshake message give, by HKDF-SHA256, one key per direction and
//!    two confirmation keys. Each side proves it holds them with an HMAC of the transcript (the central first).
//!    A wrong secret fails here on both sides; a tampered handshake fails the same way.
//! 4. Every later frame is ChaCha20-Poly1305 with a nonce made from a per-direction counter and the frame's
//!    length as associated data: a dropped, replayed, reordered or altered frame fails to open and ends the
//!    connection. Both exchanges are ephemeral, so a later leak of a secret does not open recorded sessions.
//!
//! Frames are `u32` big-endian length, then the body. Before the keys are confirmed a frame is at most
//! `HELLO_MAX` bytes, and buffers grow only with bytes that actually arrived, so a stranger's connection costs a
//! few KiB whatever length it announces. The caller bounds the whole handshake in time.

use std::io;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Protocol versions this build speaks, newest last.
pub const VERSIONS: &[u32] = &[2];
/// The largest handshake frame accepted.
pub const HELLO_MAX: usize = 4 << 10;
/// The largest record accepted after the handshake (a compressed batch is far smaller).
pub const RECORD_MAX: usize = 64 << 20;
const MAGIC: &str = "voxtap-link";
/// The first exchange's "password": public on purpose (it only hides the second exchange).
const STAGE1: &str = "voxtap-link identity protection";

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
    #[error("authentication failed: the secret differs on the two sides (server_password, or this sensor's own server_sensor_password on the central)")]
    Auth,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("a frame failed authentication (altered, replayed, reordered or cut): connection dropped")]
    Tampered,
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("the handshake took too long")]
    Timeout,
}

/// The clear first message: versions, the remote's clock, the first exchange. Nothing in it names the sensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientHello {
    pub magic: String,
    pub versions: Vec<u32>,
    /// The remote's wall clock, microseconds since the epoch.
    pub time_us: i64,
    /// hex of the first SPAKE2 message.
    pub spake2: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerHello {
    pub magic: String,
    pub version: u32,
    pub time_us: i64,
    pub spake2: String,
}

/// What the remote says about itself, sent only under the first exchange's keys and authenticated by the second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Identity2 {
    pub sensor_id: Option<u16>,
    pub sensor_name: String,
    /// `cdr`: the remote analyses and sends CDRs; `packets`: it sends raw packets (packetbuffer_sender).
    pub mode: String,
    /// The remote's on-disk queue identity, so the central tells a resent batch from a new one.
    pub queue_id: String,
    /// hex of the second SPAKE2 message (from the sensor's secret); filled in by `connect`.
    #[serde(default)]
    pub spake2: String,
}

/// One direction's cipher and frame counter.
struct Half {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Half {
    fn new(key: &[u8; 32]) -> Half {
        Half { aead: ChaCha20Poly1305::new(Key::from_slice(key)), counter: 0 }
    }

    fn nonce(&mut self) -> Nonce {
        counter_nonce(&mut self.counter)
    }

    /// `plain` sealed in place, with the frame's length header in front.
    fn seal(&mut self, body: &mut Vec<u8>) -> Result<[u8; 4], LinkError> {
        let len = body.len() + 16;
        if len > RECORD_MAX {
            return Err(LinkError::TooLarge(len));
        }
        let aad = (len as u32).to_be_bytes();
        let nonce = self.nonce();
        self.aead.encrypt_in_place(&nonce, &aad, body).map_err(|_| LinkError::TooLarge(len))?;
        Ok(aad)
    }

    fn open(&mut self, aad: [u8; 4], buf: &mut Vec<u8>) -> Result<(), LinkError> {
        let nonce = self.nonce();
        self.aead.decrypt_in_place(&nonce, &aad, buf).map_err(|_| LinkError::Tampered)
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

/// The sending direction (its own half of the socket, so one task can send while another receives).
pub struct SendHalf {
    w: OwnedWriteHalf,
    half: Half,
    scratch: Vec<u8>,
}

pub struct RecvHalf {
    r: OwnedReadHalf,
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

async fn write_frame<W: AsyncWrite + Unpin>(s: &mut W, body: &[u8]) -> io::Result<()> {
    let mut f = Vec::with_capacity(body.len() + 4);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    s.write_all(&f).await
}

/// Reads one frame of at most `max` bytes into `buf` (growing with the bytes that arrive, not with the length the
/// peer announced).
pub async fn read_frame<R: AsyncRead + Unpin>(s: &mut R, max: usize, buf: &mut Vec<u8>) -> Result<[u8; 4], LinkError> {
    let mut h = [0u8; 4];
    match s.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(h) as usize;
    if n > max {
        return Err(LinkError::TooLarge(n));
    }
    match crate::edge::read_growing(s, n, buf).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    Ok(h)
}

fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAGIC.as_bytes());
    for part in parts {
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

fn derive(shared: &[u8], th: &[u8; 32], stage: &str) -> Keys {
    let hk = Hkdf::<Sha256>::new(Some(th), shared);
    let mut k = Keys { c2s: [0; 32], s2c: [0; 32], confirm_c: [0; 32], confirm_s: [0; 32] };
    // 32-byte outputs of SHA-256 HKDF cannot fail.
    for (label, out) in [
        ("c2s", &mut k.c2s),
        ("s2c", &mut k.s2c),
        ("confirm client", &mut k.confirm_c),
        ("confirm server", &mut k.confirm_s),
    ] {
        let _ = hk.expand(format!("voxtap link {stage} {label}").as_bytes(), out);
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

fn finish(state: Spake2<Ed25519Group>, peer_hex: &str) -> Result<Vec<u8>, LinkError> {
    let peer = unhex(peer_hex).ok_or_else(|| LinkError::Protocol("bad SPAKE2 message".into()))?;
    state.finish(&peer).map_err(|_| LinkError::Protocol("bad SPAKE2 message".into()))
}

/// A sealed handshake frame (under the first exchange's keys).
async fn send_sealed<W: AsyncWrite + Unpin>(w: &mut W, half: &mut Half, body: &[u8]) -> Result<(), LinkError> {
    let mut b = body.to_vec();
    let aad = half.seal(&mut b)?;
    w.write_all(&aad).await?;
    w.write_all(&b).await?;
    Ok(())
}

async fn recv_sealed<R: AsyncRead + Unpin>(r: &mut R, half: &mut Half) -> Result<Vec<u8>, LinkError> {
    let mut b = Vec::new();
    let aad = read_frame(r, HELLO_MAX, &mut b).await?;
    half.open(aad, &mut b)?;
    Ok(b)
}

/// The central's second message: its SPAKE2 answer and its proof, or a refusal.
#[derive(Debug, Serialize, Deserialize)]
struct ServerAuth {
    #[serde(default)]
    spake2: String,
    #[serde(default)]
    proof: String,
    #[serde(default)]
    error: Option<String>,
}

fn channel(stream: TcpStream, tx: [u8; 32], rx: [u8; 32], version: u32) -> Channel {
    let (r, w) = stream.into_split();
    Channel {
        tx: SendHalf { w, half: Half::new(&tx), scratch: Vec::new() },
        rx: RecvHalf { r, half: Half::new(&rx), buf: Vec::new() },
        version,
    }
}

/// The remote's side: proves `password` for the identity `me` and returns the channel and the central's hello
/// (its clock). The caller bounds it in time.
pub async fn connect(
    mut stream: TcpStream,
    password: &str,
    mut me: Identity2,
    time_us: i64,
) -> Result<(Channel, ServerHello), LinkError> {
    stream.set_nodelay(true)?;
    let (s1, m1) = spake(STAGE1);
    let hello = ClientHello { magic: MAGIC.into(), versions: VERSIONS.to_vec(), time_us, spake2: hex(&m1) };
    let c_bytes = serde_json::to_vec(&hello).map_err(|e| LinkError::Protocol(e.to_string()))?;
    write_frame(&mut stream, &c_bytes).await?;
    let mut s_bytes = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut s_bytes).await?;
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
    let shared1 = finish(s1, &sh.spake2)?;
    let th1 = hash_parts(&[&c_bytes, &s_bytes]);
    let k1 = derive(&shared1, &th1, "identity");
    let (mut up, mut down) = (Half::new(&k1.c2s), Half::new(&k1.s2c));
    let (s2, m2) = spake(password);
    me.spake2 = hex(&m2);
    let id_bytes = serde_json::to_vec(&me).map_err(|e| LinkError::Protocol(e.to_string()))?;
    send_sealed(&mut stream, &mut up, &id_bytes).await?;
    let auth_bytes = recv_sealed(&mut stream, &mut down).await?;
    let auth: ServerAuth = serde_json::from_slice(&auth_bytes)
        .map_err(|e| LinkError::Protocol(format!("unreadable authentication message: {e}")))?;
    if let Some(e) = auth.error {
        return Err(LinkError::Refused(e));
    }
    let shared2 = finish(s2, &auth.spake2)?;
    let th = hash_parts(&[&th1, &id_bytes, auth.spake2.as_bytes()]);
    let keys = derive(&[shared1, shared2].concat(), &th, "session");
    // The central proves itself first, so a remote never reveals anything to a wrong central.
    let proof = unhex(&auth.proof).unwrap_or_default();
    if mac(&keys.confirm_s, &th).verify_slice(&proof).is_err() {
        // Tell the central, so it counts and logs a failed authentication rather than a dropped connection.
        let _ = send_sealed(&mut stream, &mut up, b"authentication failed").await;
        return Err(LinkError::Auth);
    }
    send_sealed(&mut stream, &mut up, hex(&mac(&keys.confirm_c, &th).finalize().into_bytes()).as_bytes()).await?;
    Ok((channel(stream, keys.c2s, keys.s2c, sh.version), sh))
}

/// The central's side, up to the remote's proof. `secret(id)` names the secret a sensor with that id must prove
/// (`None`: no sensor of that id may connect). `attempt` runs just before the central answers a guess (its
/// SPAKE2 message and proof let the peer test one secret, whether or not it then proves anything): the caller
/// counts it as a failure until the handshake succeeds. The caller then checks the clock and the sensor (and
/// answers with a record); the returned identity is authenticated. The caller bounds it in time.
pub async fn accept(
    mut stream: TcpStream,
    secret: &(dyn Fn(Option<u16>) -> Option<String> + Send + Sync),
    attempt: &(dyn Fn() + Send + Sync),
    now_us: i64,
) -> Result<(Channel, ClientHello, Identity2), LinkError> {
    stream.set_nodelay(true)?;
    let mut c_bytes = Vec::new();
    read_frame(&mut stream, HELLO_MAX, &mut c_bytes).await?;
    let ch: ClientHello =
        serde_json::from_slice(&c_bytes).map_err(|e| LinkError::Protocol(format!("unreadable client hello: {e}")))?;
    if ch.magic != MAGIC {
        return Err(LinkError::Protocol("bad magic in the client hello".into()));
    }
    let Some(version) = ch.versions.iter().copied().filter(|v| VERSIONS.contains(v)).max() else {
        let msg = format!("no common protocol version: central speaks {VERSIONS:?} (update both sides)");
        let _ = write_frame(&mut stream, serde_json::json!({ "error": msg }).to_string().as_bytes()).await;
        return Err(LinkError::Version { ours: VERSIONS.to_vec(), theirs: ch.versions });
    };
    let (s1, m1) = spake(STAGE1);
    let sh = ServerHello { magic: MAGIC.into(), version, time_us: now_us, spake2: hex(&m1) };
    let s_bytes = serde_json::to_vec(&sh).map_err(|e| LinkError::Protocol(e.to_string()))?;
    write_frame(&mut stream, &s_bytes).await?;
    let shared1 = finish(s1, &ch.spake2)?;
    let th1 = hash_parts(&[&c_bytes, &s_bytes]);
    let k1 = derive(&shared1, &th1, "identity");
    let (mut down, mut up) = (Half::new(&k1.c2s), Half::new(&k1.s2c));
    let id_bytes = recv_sealed(&mut stream, &mut down).await?;
    let ident: Identity2 =
        serde_json::from_slice(&id_bytes).map_err(|e| LinkError::Protocol(format!("unreadable identity: {e}")))?;
    let Some(password) = secret(ident.sensor_id) else {
        let refusal = ServerAuth { spake2: String::new(), proof: String::new(), error: Some("unknown sensor".into()) };
        let _ = send_sealed(&mut stream, &mut up, &serde_json::to_vec(&refusal).unwrap_or_default()).await;
        return Err(LinkError::Auth);
    };
    let (s2, m2) = spake(&password);
    let m2 = hex(&m2);
    let shared2 = finish(s2, &ident.spake2)?;
    let th = hash_parts(&[&th1, &id_bytes, m2.as_bytes()]);
    let keys = derive(&[shared1, shared2].concat(), &th, "session");
    let proof = hex(&mac(&keys.confirm_s, &th).finalize().into_bytes());
    let auth = ServerAuth { spake2: m2, proof, error: None };
    let auth = serde_json::to_vec(&auth).map_err(|e| LinkError::Protocol(e.to_string()))?;
    attempt();
    // From here the peer can test its guess against our proof: however the handshake ends now, it was a guess.
    send_sealed(&mut stream, &mut up, &auth).await.map_err(|_| LinkError::Auth)?;
    let theirs = recv_sealed(&mut stream, &mut down).await.map_err(|_| LinkError::Auth)?;
    let theirs = unhex(std::str::from_utf8(&theirs).unwrap_or("")).ok_or(LinkError::Auth)?;
    mac(&keys.confirm_c, &th).verify_slice(&theirs).map_err(|_| LinkError::Auth)?;
    Ok((channel(stream, keys.s2c, keys.c2s, version), ch, ident))
}

impl Channel {
    pub async fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), LinkError> {
        self.tx.send(kind, payload).await
    }

    pub async fn recv(&mut self) -> Result<(u8, &[u8]), LinkError> {
        self.rx.recv().await
    }
}

impl SendHalf {
    /// Seals and sends one record.
    pub async fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), LinkError> {
        let mut sealed = std::mem::take(&mut self.scratch);
        sealed.clear();
        sealed.reserve(payload.len() + 1 + 16);
        sealed.push(kind);
        sealed.extend_from_slice(payload);
        let r = async {
            let aad = self.half.seal(&mut sealed)?;
            self.w.write_all(&aad).await?;
            self.w.write_all(&sealed).await?;
            Ok(())
        }
        .await;
        // A large batch's buffer is not kept for the life of the connection.
        if sealed.capacity() <= 1 << 20 {
            self.scratch = sealed;
        }
        r
    }

    /// Closes the sending direction: the peer sees the end of the stream.
    pub async fn shutdown(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

impl RecvHalf {
    /// Receives and opens one record; the payload stays valid until the next call.
    pub async fn recv(&mut self) -> Result<(u8, &[u8]), LinkError> {
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        let aad = read_frame(&mut self.r, RECORD_MAX, &mut self.buf).await?;
        self.half.open(aad, &mut self.buf)?;
        if self.buf.is_empty() {
            return Err(LinkError::Tampered);
        }
        Ok((self.buf[0], &self.buf[1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn me(id: Option<u16>) -> Identity2 {
        Identity2 {
            sensor_id: id,
            sensor_name: "r1".into(),
            mode: "cdr".into(),
            queue_id: "q".into(),
            ..Default::default()
        }
    }

    type Ends = (Result<(Channel, ServerHello), LinkError>, Result<(Channel, ClientHello, Identity2), LinkError>);

    /// Runs a handshake: the remote proves `cpw` as sensor `id`; the central knows sensor 7's own secret `own7`
    /// and the shared one `shared`.
    async fn pair(cpw: &'static str, id: Option<u16>) -> Ends {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let secret = |id: Option<u16>| Some(if id == Some(7) { "own7".to_string() } else { "shared".to_string() });
            accept(s, &secret, &|| {}, 42).await
        });
        let c = connect(TcpStream::connect(addr).await.unwrap(), cpw, me(id), 1).await;
        (c, srv.await.unwrap())
    }

    #[tokio::test]
    async fn records_round_trip_both_ways() {
        let (c, s) = pair("own7", Some(7)).await;
        let (mut c, sh) = c.unwrap();
        let (mut s, ch, ident) = s.unwrap();
        assert_eq!((sh.time_us, ch.time_us, ident.sensor_id, ident.mode.as_str()), (42, 1, Some(7), "cdr"));
        for i in 0..5u8 {
            c.send(3, &vec![i; 1000 * i as usize]).await.unwrap();
            let (k, p) = s.recv().await.unwrap();
            assert_eq!((k, p.len()), (3, 1000 * i as usize));
            s.send(5, &[i]).await.unwrap();
            assert_eq!(c.recv().await.unwrap(), (5, &[i][..]));
        }
    }

    #[tokio::test]
    async fn a_sensor_secret_proves_that_sensor_only() {
        // The shared secret cannot speak for sensor 7, which has its own; sensor 7's cannot speak for sensor 8.
        let (c, s) = pair("shared", Some(7)).await;
        assert!(matches!(c, Err(LinkError::Auth)), "{:?}", c.err());
        assert!(matches!(s, Err(LinkError::Auth)), "{:?}", s.err());
        let (c, s) = pair("own7", Some(8)).await;
        assert!(matches!(c, Err(LinkError::Auth)) && matches!(s, Err(LinkError::Auth)));
        let (c, s) = pair("shared", Some(8)).await;
        assert!(c.is_ok() && s.is_ok());
    }

    #[tokio::test]
    async fn the_identity_never_crosses_in_the_clear() {
        // A recording of everything the remote sends holds neither its name nor its queue id.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, raddr) = (l.local_addr().unwrap(), relay.local_addr().unwrap());
        let tap = tokio::spawn(async move {
            let (from, _) = relay.accept().await.unwrap();
            let to = TcpStream::connect(addr).await.unwrap();
            let (mut fr, mut fw) = from.into_split();
            let (mut tr, mut tw) = to.into_split();
            let back = tokio::spawn(async move { tokio::io::copy(&mut tr, &mut fw).await });
            let mut seen = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n) = fr.read(&mut b).await {
                if n == 0 || tw.write_all(&b[..n]).await.is_err() {
                    break;
                }
                seen.extend_from_slice(&b[..n]);
            }
            back.abort();
            seen
        });
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let secret = |_| Some("pw".to_string());
            accept(s, &secret, &|| {}, 0).await.map(|_| ())
        });
        let mut who = me(Some(4242));
        who.sensor_name = "secret-sensor-name".into();
        who.queue_id = "queue-id-visible?".into();
        let (c, _) = connect(TcpStream::connect(raddr).await.unwrap(), "pw", who, 0).await.unwrap();
        srv.await.unwrap().unwrap();
        drop(c);
        let seen = String::from_utf8_lossy(&tap.await.unwrap()).into_owned();
        assert!(seen.contains("voxtap-link"), "the recording holds the clear hello");
        for word in ["secret-sensor-name", "queue-id-visible", "4242", "sensor_id"] {
            assert!(!seen.contains(word), "{word} crossed in the clear");
        }
    }

    #[tokio::test]
    async fn replayed_and_altered_frames_are_refused() {
        let (c, s) = pair("shared", Some(3)).await;
        let (mut c, _) = c.unwrap();
        let (mut s, _, _) = s.unwrap();
        // The same sealed bytes twice: the second fails (its counter is past).
        let mut body = vec![3u8, b'x'];
        let aad = c.tx.half.seal(&mut body).unwrap();
        for _ in 0..2 {
            c.tx.w.write_all(&aad).await.unwrap();
            c.tx.w.write_all(&body).await.unwrap();
        }
        assert_eq!(s.recv().await.unwrap(), (3, &b"x"[..]));
        assert!(matches!(s.recv().await, Err(LinkError::Tampered)));
    }

    #[tokio::test]
    async fn garbage_and_oversized_hellos_are_errors() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for junk in [&b"\x00\x00\x00\x05hello"[..], b"\xff\xff\xff\xffxx", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00"] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(junk).await.unwrap();
            c.shutdown().await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            let secret = |_| Some("pw".to_string());
            assert!(accept(s, &secret, &|| {}, 0).await.is_err());
        }
    }

    /// A guesser that checks the central's proof itself and hangs up without proving anything is still counted
    /// as an attempt, and the handshake ends as a failed authentication.
    #[tokio::test]
    async fn a_guess_that_hangs_up_is_counted() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c2 = counted.clone();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let secret = |_| Some("right".to_string());
            let attempt = move || c2.store(true, std::sync::atomic::Ordering::SeqCst);
            accept(s, &secret, &attempt, 0).await.map(|_| ())
        });
        // The guesser: the first exchange, an identity with a guessed secret, the central's answer; then it leaves.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (s1, m1) = spake(STAGE1);
        let hello = ClientHello { magic: MAGIC.into(), versions: VERSIONS.to_vec(), time_us: 0, spake2: hex(&m1) };
        let c_bytes = serde_json::to_vec(&hello).unwrap();
        write_frame(&mut stream, &c_bytes).await.unwrap();
        let mut s_bytes = Vec::new();
        read_frame(&mut stream, HELLO_MAX, &mut s_bytes).await.unwrap();
        let sh: ServerHello = serde_json::from_slice(&s_bytes).unwrap();
        let k1 = derive(&finish(s1, &sh.spake2).unwrap(), &hash_parts(&[&c_bytes, &s_bytes]), "identity");
        let (mut up, mut down) = (Half::new(&k1.c2s), Half::new(&k1.s2c));
        let (_, m2) = spake("guess");
        let mut who = me(Some(3));
        who.spake2 = hex(&m2);
        send_sealed(&mut stream, &mut up, &serde_json::to_vec(&who).unwrap()).await.unwrap();
        let auth = recv_sealed(&mut stream, &mut down).await.unwrap();
        assert!(serde_json::from_slice::<ServerAuth>(&auth).unwrap().error.is_none());
        drop(stream);
        assert!(matches!(srv.await.unwrap(), Err(LinkError::Auth)));
        assert!(counted.load(std::sync::atomic::Ordering::SeqCst));
    }
}
