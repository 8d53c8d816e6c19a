//! The manager's key-based mode for remote use (`manager_key`): a client that holds the 256-bit key opens the
//! manager port with `VXM1` and its 32-byte nonce; the sensor answers with its own nonce; both derive one key
//! per direction with HKDF-SHA256 from the shared key and the two nonces; the command and the reply then travel
//! as ChaCha20-Poly1305 frames (`u32` length, sealed bytes; nonces from a frame counter), the reply ending with
//! an empty frame. A wrong key, an altered frame or a recorded session played again (the sensor's nonce is new
//! each time) fails to open. VoIPmonitor's AES-CBC manager mode (`manager_aes_key`) has no integrity and a
//! fixed IV; this mode is voxtap's own, used by `voxtap --manager-client`.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"VXM1";
/// A reply frame the client accepts, at most (the sensor sends parts of `REPLY_CHUNK`).
const FRAME_MAX: usize = 16 << 20;
const REPLY_CHUNK: usize = 1 << 20;

/// `manager_key`: 64 hex digits (e.g. `openssl rand -hex 32`).
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 {
        return Err(format!("manager_key must be 64 hex digits (256 bits), not {} characters", t.len()));
    }
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("manager_key must be hex digits".to_string());
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| "manager_key must be hex digits".to_string())?;
    }
    Ok(k)
}

struct Dir {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Dir {
    fn nonce(&mut self) -> Nonce {
        crate::link::secure::counter_nonce(&mut self.counter)
    }

    fn seal(&mut self, out: &mut impl Write, plain: &[u8]) -> io::Result<()> {
        let mut buf = plain.to_vec();
        let len = ((plain.len() + 16) as u32).to_be_bytes();
        let n = self.nonce();
        self.aead.encrypt_in_place(&n, &len, &mut buf).map_err(|_| io::Error::other("seal failed"))?;
        out.write_all(&len)?;
        out.write_all(&buf)
    }

    fn open(&mut self, input: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if !(16..=FRAME_MAX).contains(&n) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame length"));
        }
        let mut buf = vec![0u8; n];
        input.read_exact(&mut buf)?;
        let nonce = self.nonce();
        self.aead.decrypt_in_place(&nonce, &len, &mut buf).map_err(|_| {
            io::Error::new(io::ErrorKind::PermissionDenied, "frame failed authentication (wrong manager_key?)")
        })?;
        Ok(buf)
    }
}

fn keys(key: &[u8; 32], client: &[u8; 32], server: &[u8; 32]) -> (Dir, Dir) {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(client);
    salt[32..].copy_from_slice(server);
    let hk = Hkdf::<Sha256>::new(Some(&salt), key);
    let (mut c2s, mut s2c) = ([0u8; 32], [0u8; 32]);
    let _ = hk.expand(b"voxtap manager c2s", &mut c2s);
    let _ = hk.expand(b"voxtap manager s2c", &mut s2c);
    let d = |k: [u8; 32]| Dir { aead: ChaCha20Poly1305::new(Key::from_slice(&k)), counter: 0 };
    (d(c2s), d(s2c))
}

fn random32() -> io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// The sensor's side, after `MAGIC` was read, up to the client's command: the first line of it (opened with the
/// key, so the client holds it), and the sealing state for the reply. The command frame is at most `frame_max`
/// bytes: nothing larger is accepted from a client that has not proven the key yet.
pub async fn open_command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8; 32],
    frame_max: usize,
) -> io::Result<(String, Replier)> {
    let mut cn = [0u8; 32];
    s.read_exact(&mut cn).await?;
    let sn = random32()?;
    s.write_all(&sn).await?;
    let (mut c2s, s2c) = keys(key, &cn, &sn);
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if !(16..=frame_max.max(32)).contains(&n) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame length"));
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    let nonce = c2s.nonce();
    c2s.aead.decrypt_in_place(&nonce, &len, &mut buf).map_err(|_| {
        io::Error::new(io::ErrorKind::PermissionDenied, "frame failed authentication (wrong manager_key?)")
    })?;
    let line = String::from_utf8_lossy(&buf);
    let first = line.split(['\r', '\n']).next().unwrap_or("").trim().to_string();
    Ok((first, Replier { s2c }))
}

/// Seals a reply's parts; an empty part ends it.
pub struct Replier {
    s2c: Dir,
}

impl Replier {
    pub async fn send<S: AsyncWrite + Unpin>(&mut self, s: &mut S, part: &[u8]) -> io::Result<()> {
        for chunk in part.chunks(REPLY_CHUNK) {
            let mut frame = Vec::new();
            self.s2c.seal(&mut frame, chunk)?;
            s.write_all(&frame).await?;
        }
        Ok(())
    }

    pub async fn end<S: AsyncWrite + Unpin>(&mut self, s: &mut S) -> io::Result<()> {
        let mut frame = Vec::new();
        self.s2c.seal(&mut frame, &[])?;
        s.write_all(&frame).await?;
        s.flush().await
    }
}

/// The client's side: sends one command, returns the reply.
pub fn ask<S: Read + Write>(s: &mut S, key: &[u8; 32], command: &str) -> io::Result<Vec<u8>> {
    let cn = random32()?;
    s.write_all(MAGIC)?;
    s.write_all(&cn)?;
    let mut sn = [0u8; 32];
    s.read_exact(&mut sn)?;
    let (mut c2s, mut s2c) = keys(key, &cn, &sn);
    c2s.seal(s, command.as_bytes())?;
    let mut out = Vec::new();
    loop {
        let part = s2c.open(s)?;
        if part.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let key = parse_key(&"ab".repeat(32)).unwrap();
        assert!(parse_key("abc").is_err() && parse_key(&"zz".repeat(32)).is_err());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = l.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            rt.block_on(async move {
                let mut results = Vec::new();
                for _ in 0..2 {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut m = [0u8; 4];
                    s.read_exact(&mut m).await.unwrap();
                    let r = async {
                        let (cmd, mut rep) = open_command(&mut s, &key, 4096).await?;
                        rep.send(&mut s, format!("you said {cmd}").repeat(100_000).as_bytes()).await?;
                        rep.end(&mut s).await
                    }
                    .await;
                    results.push(r.is_ok());
                }
                results
            })
        });
        let got = ask(&mut std::net::TcpStream::connect(addr).unwrap(), &key, "getversion\r\n").unwrap();
        assert_eq!(got.len(), "you said getversion".len() * 100_000);
        let wrong = parse_key(&"cd".repeat(32)).unwrap();
        assert!(ask(&mut std::net::TcpStream::connect(addr).unwrap(), &wrong, "getversion").is_err());
        assert_eq!(srv.join().unwrap(), [true, false]);
    }
}
