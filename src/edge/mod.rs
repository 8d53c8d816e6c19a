//! What every listening socket shares: who may connect (`gate`: connection caps before and after
//! authentication, per source address, with the oldest unauthenticated connection evicted when a flood fills the
//! pre-authentication slots), who has guessed wrong too often (`throttle`), and the address forms they count by.
//! The listeners (manager, central link, mirror receiver, HEP, IPFIX) run as tasks on the slow side's tokio
//! runtime; a slow or silent peer costs a small task, never a thread.

pub mod gate;
pub mod throttle;

use std::net::{IpAddr, SocketAddr};

/// An address as the rest of voxtap should see it: an IPv4 client of a `::` listener arrives as
/// `::ffff:a.b.c.d`, which is the IPv4 address (and loopback when that one is).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(peer.ip()), peer.port())
}

/// What connections are counted by: an IPv4 address, or an IPv6 /64 (one host can hold a whole /64, so per
/// address would be no limit at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match canonical(ip) {
            IpAddr::V4(v4) => Source(u32::from(v4) as u128),
            IpAddr::V6(v6) => Source((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
        }
    }
}

/// Binds a TCP listener on the slow side's runtime. Bound synchronously (so a taken port is an error at once),
/// then handed to tokio.
pub fn bind_tcp(addr: SocketAddr, rt: &tokio::runtime::Handle) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    let _guard = rt.enter();
    tokio::net::TcpListener::from_std(l)
}

/// An accept error that is not the peer's doing (descriptors or memory running out) is waited out briefly instead
/// of spinning.
pub async fn accept_pause(e: &std::io::Error, what: &str) {
    tracing::warn!(error = %e, listener = what, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Refusals of strangers are logged, but a scan or a flood cannot fill the log: at most `PER_MINUTE` lines a
/// minute, then one line with how many were left out.
pub struct LogLimit {
    window: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    const PER_MINUTE: u32 = 20;

    pub fn new() -> LogLimit {
        LogLimit { window: std::time::Instant::now(), logged: 0, suppressed: 0 }
    }

    /// Whether this refusal may be logged; also logs how many were left out in the last minute.
    pub fn allow(&mut self) -> bool {
        if self.window.elapsed() >= std::time::Duration::from_secs(60) {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "more link connections were refused in the last minute (not logged one by one)"
                );
            }
            self.window = std::time::Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        self.logged += 1;
        if self.logged > Self::PER_MINUTE {
            self.suppressed += 1;
        }
        self.logged <= Self::PER_MINUTE
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new()
    }
}

/// The next connection of `listener` with its peer's canonical address, or `None` once `stop` is set. Accept
/// errors (descriptors running out) are waited out instead of spun on.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = stopped(stop) => return None,
            r = listener.accept() => match r {
                Ok((s, peer)) => return Some((s, canonical_peer(peer))),
                Err(e) => accept_pause(&e, what).await,
            },
        }
    }
}

/// Reads exactly `n` bytes into `buf` (emptied first), growing it only as the bytes arrive: a peer that announces
/// a large frame and then sends one byte costs one small read, not an allocation of what it announced.
pub async fn read_growing<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    n: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    const STEP: usize = 256 << 10;
    buf.clear();
    while buf.len() < n {
        let at = buf.len();
        buf.resize(at + (n - at).min(STEP), 0);
        r.read_exact(&mut buf[at..]).await?;
    }
    Ok(())
}

/// Resolves once the stop flag is set (or its sender is gone).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        let m: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(canonical(m).is_loopback());
        assert_eq!(canonical(m), IpAddr::from([127, 0, 0, 1]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(Source::of("2001:db8::1".parse().unwrap()), Source::of("2001:db8::ffff:2".parse().unwrap()));
        assert_ne!(Source::of("2001:db8::1".parse().unwrap()), Source::of("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(Source::of(m), Source::of("127.0.0.1".parse().unwrap()));
    }
}
