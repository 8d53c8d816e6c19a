//! The manager's listeners (TCP and `managersocket`) as tasks on the slow side's runtime. Each connection is
//! admitted by the listener's gate (`net_preauth_max`, `net_conn_max`, `net_per_ip_max`); a plaintext peer that
//! is not on the loopback is refused before anything of its request is read (unless
//! `manager_enable_unencrypted`); the whole request — every byte of it, however slowly they come — must arrive
//! within `net_handshake_timeout_s`; a sealed client's first frame is at most `net_preauth_frame_max` bytes. The
//! command then runs on the runtime's blocking pool and its reply is streamed out in bounded parts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::{sealed, State, REQUEST_MAX};
use crate::config::net::NetLimits;
use crate::edge::gate::{Admission, Gate, Limits};

/// A line end followed by this much quiet ends a request (VoIPmonitor's clients send one line and wait).
const QUIET: Duration = Duration::from_millis(500);
/// A client that reads no part of the reply for this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(30);

pub struct Manager {
    stop: tokio::sync::watch::Sender<bool>,
    addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
}

struct Ctx {
    state: Arc<State>,
    gate: Arc<Gate>,
    deadline: Duration,
    frame_max: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Commands running at once (each holds a thread of the runtime's blocking pool while it runs).
    running: Arc<tokio::sync::Semaphore>,
}

/// Manager commands at once: half the blocking pool, so slow clients cannot take the threads other slow-side
/// work needs.
const COMMANDS_AT_ONCE: usize = 8;

impl Manager {
    /// Binds the TCP port and/or the Unix socket (`managersocket`, mode 0600) and starts serving on `rt`; the caller
    /// decides what a failure to bind means.
    pub fn start(
        tcp: Option<SocketAddr>,
        unix: Option<&Path>,
        state: Arc<State>,
        net: &NetLimits,
        rt: &tokio::runtime::Handle,
    ) -> io::Result<Manager> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Ctx {
            state,
            gate: Gate::new(Limits::from_net(net)),
            deadline: Duration::from_secs(net.handshake_timeout_s as u64),
            frame_max: net.preauth_frame_max as usize,
            stop: stop_rx,
            running: Arc::new(tokio::sync::Semaphore::new(COMMANDS_AT_ONCE)),
        });
        let mut m = Manager { stop, addr: None, socket: None };
        if let Some(addr) = tcp {
            let listener = crate::edge::bind_tcp(addr, rt)?;
            m.addr = Some(listener.local_addr()?);
            let ctx = ctx.clone();
            rt.spawn(async move {
                let mut stop = ctx.stop.clone();
                while let Some((s, peer)) = crate::edge::accept(&listener, &mut stop, "manager").await {
                    let Ok(adm) = ctx.gate.admit(peer.ip()) else {
                        debug!(%peer, "manager port: too many connections from this address");
                        continue;
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client(s, Some(peer), adm, &ctx).await {
                            debug!(%peer, error = %e, "manager client");
                        }
                    });
                }
            });
        }
        if let Some(path) = unix {
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            // A socket left by a voxtap that died is replaced; any other file is not touched.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            let listener = {
                let _guard = rt.enter();
                tokio::net::UnixListener::from_std(l)?
            };
            m.socket = Some(path.to_path_buf());
            let ctx = ctx.clone();
            rt.spawn(async move {
                let mut stop = ctx.stop.clone();
                loop {
                    let s = tokio::select! {
                        _ = crate::edge::stopped(&mut stop) => return,
                        r = listener.accept() => match r {
                            Ok((s, _)) => s,
                            Err(e) => {
                                crate::edge::accept_pause(&e, "manager socket").await;
                                continue;
                            }
                        },
                    };
                    // Local by construction: counted as the loopback, never refused as remote.
                    let Ok(adm) = ctx.gate.admit(IpAddr::from([127, 0, 0, 1])) else { continue };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client(s, None, adm, &ctx).await {
                            debug!(error = %e, "manager socket client");
                        }
                    });
                }
            });
        }
        Ok(m)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request not complete within net_handshake_timeout_s")
}

/// One client: `peer` is `None` for the Unix socket.
async fn client<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut s: S,
    peer: Option<SocketAddr>,
    mut adm: Admission,
    ctx: &Ctx,
) -> io::Result<()> {
    let remote = peer.is_some_and(|p| !p.ip().is_loopback());
    let st = &ctx.state;
    // Nothing a remote peer sends is read unless it may be served: plaintext only when allowed, sealed only with
    // a key.
    if remote && !st.allow_remote && st.key.is_none() {
        warn!(?peer, "manager port: remote client refused (manager_enable_unencrypted = no, no manager_key)");
        return refuse(&mut s, b"access denied: plaintext manager access is allowed from this host only\n").await;
    }
    let until = tokio::time::Instant::now() + ctx.deadline;
    let head = tokio::select! {
        r = tokio::time::timeout_at(until, read_head(&mut s)) => r.map_err(|_| timed_out())??,
        _ = adm.evicted() => return Ok(()),
    };
    if head == sealed::MAGIC {
        let Some(key) = st.key else {
            warn!(?peer, "manager port: sealed client, but no manager_key is configured");
            return Ok(());
        };
        let opened = tokio::select! {
            r = tokio::time::timeout_at(until, sealed::open_command(&mut s, &key, ctx.frame_max)) => r.map_err(|_| timed_out())?,
            _ = adm.evicted() => return Ok(()),
        };
        let (line, mut replier) = match opened {
            Ok(x) => x,
            Err(e) => {
                warn!(?peer, error = %e, "manager port: sealed client refused");
                return Ok(());
            }
        };
        if adm.establish().is_err() {
            return Ok(());
        }
        let Some(_slot) = slot(ctx).await else {
            replier.send(&mut s, b"busy: too many manager commands at once\n").await?;
            return replier.end(&mut s).await;
        };
        let mut parts = run_command(line, ctx.state.clone());
        while let Some(part) = parts.recv().await {
            tokio::time::timeout(WRITE_STALL, replier.send(&mut s, &part)).await.map_err(|_| timed_out())??;
        }
        return replier.end(&mut s).await;
    }
    if remote && !st.allow_remote {
        warn!(?peer, "manager port: remote plaintext client refused (manager_enable_unencrypted = no)");
        return refuse(&mut s, b"access denied: plaintext manager access is allowed from this host only\n").await;
    }
    let line = tokio::select! {
        r = read_request(&mut s, head, until) => r?,
        _ = adm.evicted() => return Ok(()),
    };
    if adm.establish().is_err() {
        return refuse(&mut s, b"busy: too many manager clients\n").await;
    }
    let Some(_slot) = slot(ctx).await else {
        return refuse(&mut s, b"busy: too many manager commands at once\n").await;
    };
    let mut parts = run_command(line, ctx.state.clone());
    while let Some(part) = parts.recv().await {
        tokio::time::timeout(WRITE_STALL, s.write_all(&part)).await.map_err(|_| timed_out())??;
    }
    s.flush().await?;
    s.shutdown().await
}

/// Says why, then closes after reading (and dropping) what the client still sends for a moment: closing on
/// unread data would reset the connection before the client sees the reason.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, why: &[u8]) -> io::Result<()> {
    s.write_all(why).await?;
    let _ = s.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async {
        let mut total = 0;
        while total < REQUEST_MAX {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

/// Up to the first four bytes (fewer when a line ends first, or the client stops): `VXM1` marks a sealed client.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    let mut b = [0u8; 4];
    while head.len() < 4 && !head.contains(&b'\n') {
        let n = match tokio::time::timeout(QUIET, s.read(&mut b[..4 - head.len()])).await {
            Ok(r) => r?,
            Err(_) if !head.is_empty() => break,
            Err(_) => continue,
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    Ok(head)
}

/// A place among the commands running at once, waited for a few seconds.
async fn slot(ctx: &Ctx) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::time::timeout(Duration::from_secs(5), ctx.running.clone().acquire_owned()).await.ok()?.ok()
}

/// The request's first line: read until `\r\n\r\n`, or a line end followed by `QUIET`, or the end, or `until`
/// (what has come by then is the request, however slowly it came).
async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    head: Vec<u8>,
    until: tokio::time::Instant,
) -> io::Result<String> {
    let mut buf = head;
    let mut chunk = [0u8; 1024];
    let done = |b: &[u8]| b.len() >= REQUEST_MAX || b.windows(4).any(|w| w == b"\r\n\r\n");
    while !done(&buf) {
        let quiet_ends = buf.contains(&b'\n') || buf.contains(&b'\r');
        let by = if quiet_ends { until.min(tokio::time::Instant::now() + QUIET) } else { until };
        let n = match tokio::time::timeout_at(by, s.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(REQUEST_MAX);
    let first = buf.split(|&c| c == b'\r' || c == b'\n').next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(first).trim().to_string())
}

/// Runs a command on the blocking pool (it may read files or wait for the owners); its reply comes back in parts
/// through a small channel, so a slow client holds back the reader instead of filling memory.
fn run_command(line: String, state: Arc<State>) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    tokio::task::spawn_blocking(move || {
        super::answer(&line, &state, &mut |b| b.is_empty() || tx.blocking_send(b.to_vec()).is_ok());
    });
    rx
}
