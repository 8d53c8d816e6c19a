//! VoIPmonitor's GUI reaching a remote through the central: one JSON line on the link port names the sensor and
//! the command, which is relayed over that sensor's link; the answer comes back in parts and is streamed out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::warn;

use super::{msg, State, COMMAND_TIMEOUT};

/// The GUI's request line, at most.
const GUI_LINE_MAX: usize = 64 << 10;

/// Sends a command to a registered remote; its answer arrives in parts on the returned channel.
pub(super) async fn relay(
    st: &State,
    sensor: &str,
    command: &str,
) -> Result<tokio::sync::mpsc::Receiver<(bool, Vec<u8>)>, String> {
    let (tx, pending) = {
        let reg = st.registry.lock();
        let e = reg.get(sensor).ok_or_else(|| format!("missing sniffer service - sensor {sensor} is not connected"))?;
        (e.tx.clone(), e.pending.clone())
    };
    let id = st.next_request.fetch_add(1, Ordering::Relaxed);
    let (w, answer) = tokio::sync::mpsc::channel(4);
    pending.lock().insert(id, w);
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(command.as_bytes());
    if let Err(e) = tx.lock().await.send(msg::COMMAND, &p).await {
        pending.lock().remove(&id);
        return Err(format!("link to sensor {sensor} failed: {e}"));
    }
    Ok(answer)
}

/// `{"type_connection":"gui_command","sensor_id":N,"command":"…"}` → the remote's answer, streamed back raw.
pub(super) async fn gui_command(mut s: TcpStream, peer: SocketAddr, st: &State, limit: Duration) {
    if !peer.ip().is_loopback() && !st.cfg.allow_remote_gui {
        warn!(%peer, "GUI command from a remote address refused (manager_enable_unencrypted = no)");
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // One line of JSON, at most GUI_LINE_MAX bytes, all of it within the deadline.
    let read = async {
        while !buf.contains(&b'\n') && buf.len() < GUI_LINE_MAX {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if serde_json::from_slice::<serde_json::Value>(buf.trim_ascii()).is_ok() {
                break;
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        return;
    }
    st.stats.lock().gui_commands += 1;
    let line = String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or(&[])).to_string();
    let (sensor, cmd) = match serde_json::from_str::<serde_json::Value>(line.trim()) {
        Ok(v) if v.get("type_connection").and_then(|t| t.as_str()) == Some("gui_command") => {
            let sensor = match v.get("sensor_id") {
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::String(t)) => t.clone(),
                _ => String::new(),
            };
            (sensor, v.get("command").and_then(|c| c.as_str()).unwrap_or("").to_string())
        }
        Ok(_) => {
            let _ = s.write_all(b"unsupported type_connection\n").await;
            return;
        }
        Err(_) => {
            let _ = s.write_all(b"bad request: expected one JSON line\n").await;
            return;
        }
    };
    let mut parts = match relay(st, &sensor, &cmd).await {
        Ok(r) => r,
        Err(e) => {
            let _ = s.write_all(e.as_bytes()).await;
            return;
        }
    };
    loop {
        match tokio::time::timeout(COMMAND_TIMEOUT, parts.recv()).await {
            Ok(Some((last, part))) => {
                let written = tokio::time::timeout(COMMAND_TIMEOUT, s.write_all(&part)).await;
                if !matches!(written, Ok(Ok(()))) || last {
                    return;
                }
            }
            Ok(None) => return,
            Err(_) => {
                let _ = s.write_all(b"timeout").await;
                return;
            }
        }
    }
}
