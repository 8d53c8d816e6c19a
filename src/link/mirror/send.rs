//! The mirror sender (`mirror_destination`): frames gathered into blocks, delivered by a task on the slow side's
//! runtime, each until the receiver confirms it.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::block::{encode_block, PKTHDR};
use super::local_time_text;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MirrorSendStats {
    pub packets: u64,
    pub blocks_sent: u64,
    pub blocks_dropped: u64,
    pub connects: u64,
    pub refused: u64,
}

/// Gathers frames into blocks (1 MiB or 100 ms) and a task on the slow side's runtime delivers them, each until
/// the receiver confirms it.
pub struct MirrorSender {
    blocks: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// The gathered packets' bytes back to back, and each one's time and range in it (no allocation per packet).
    buf: Vec<u8>,
    spans: Vec<(i64, usize, usize)>,
    dlt: u16,
    started: Instant,
    counter: u32,
    sensor_id: i16,
    wait: bool,
    task: Option<tokio::task::JoinHandle<MirrorSendStats>>,
    rt: tokio::runtime::Handle,
    pub stats: MirrorSendStats,
}

impl MirrorSender {
    /// `wait`: a capture file waits while the receiver is away; a live capture drops blocks past the buffer.
    pub fn start(
        dest: String,
        sensor_id: Option<u16>,
        name: String,
        wait: bool,
        rt: &tokio::runtime::Handle,
    ) -> io::Result<MirrorSender> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        let sid = sensor_id.unwrap_or(0);
        let task = rt.spawn(async move { deliver(&dest, &format!("{sid}:{name}"), rx).await });
        Ok(MirrorSender {
            blocks: Some(tx),
            buf: Vec::new(),
            spans: Vec::new(),
            dlt: 1,
            started: Instant::now(),
            counter: 0,
            sensor_id: sensor_id.map(|i| i as i16).unwrap_or(0),
            wait,
            task: Some(task),
            rt: rt.clone(),
            stats: MirrorSendStats::default(),
        })
    }

    pub fn frame(&mut self, ts: crate::time::Nanos, link_type: u16, data: &[u8]) {
        // A block has one link type.
        if !self.spans.is_empty() && link_type != self.dlt {
            self.flush();
        }
        if self.spans.is_empty() {
            self.started = Instant::now();
            self.dlt = link_type;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.spans.push((ts, start, self.buf.len()));
        self.stats.packets += 1;
        if self.buf.len() + self.spans.len() * PKTHDR >= 1 << 20 {
            self.flush();
        }
    }

    pub fn tick(&mut self) {
        if !self.spans.is_empty() && self.started.elapsed() >= Duration::from_millis(100) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let refs: Vec<(i64, &[u8])> = self.spans.iter().map(|&(t, a, b)| (t, &self.buf[a..b])).collect();
        self.counter = self.counter.wrapping_add(1);
        let block = encode_block(&refs, self.dlt, self.sensor_id, self.counter, true);
        self.spans.clear();
        self.buf.clear();
        let Some(tx) = &self.blocks else { return };
        // The capture loop is a plain thread: it may wait on the channel (a file), or must not (live).
        let sent = if self.wait { tx.blocking_send(block).is_ok() } else { tx.try_send(block).is_ok() };
        if sent {
            self.stats.blocks_sent += 1;
        } else {
            self.stats.blocks_dropped += 1;
        }
    }

    /// Sends what is gathered and waits until the receiver has confirmed every block (or the sender gave up).
    pub fn finish(mut self) -> MirrorSendStats {
        self.flush();
        self.blocks = None;
        let t = self.task.take().and_then(|h| self.rt.block_on(h).ok()).unwrap_or_default();
        MirrorSendStats { connects: t.connects, refused: t.refused, ..self.stats.clone() }
    }
}

/// Connect and greeting, within this; and a block's confirmation.
const SEND_LIMIT: Duration = Duration::from_secs(30);

async fn connect(dest: &str, sensor: &str) -> io::Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(dest).await?;
    s.set_nodelay(true)?;
    s.write_all(format!("sensor_id_name: {sensor}\0sensor_time: {}\0", local_time_text()).as_bytes()).await?;
    let mut r = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(4), s.read(&mut r))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to the greeting"))??;
    match &r[..n] {
        b"ok" => Ok(s),
        other => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("mirror receiver refused: {}", String::from_utf8_lossy(other)),
        )),
    }
}

async fn deliver(dest: &str, sensor: &str, mut blocks: tokio::sync::mpsc::Receiver<Vec<u8>>) -> MirrorSendStats {
    let mut stats = MirrorSendStats::default();
    let mut conn: Option<tokio::net::TcpStream> = None;
    while let Some(block) = blocks.recv().await {
        let mut attempts = 0u32;
        loop {
            if conn.is_none() {
                match tokio::time::timeout(SEND_LIMIT, connect(dest, sensor)).await {
                    Ok(Ok(s)) => {
                        stats.connects += 1;
                        info!(%dest, "connected to the mirror receiver");
                        conn = Some(s);
                    }
                    Ok(Err(e)) => {
                        if e.kind() == io::ErrorKind::PermissionDenied {
                            stats.refused += 1;
                        }
                        if attempts.is_multiple_of(10) {
                            warn!(%dest, error = %e, "mirror receiver unreachable; retrying");
                        }
                    }
                    Err(_) => warn!(%dest, "mirror receiver did not answer the greeting; retrying"),
                }
            }
            if let Some(s) = conn.as_mut() {
                let mut ok = [0u8; 8];
                let sent = async {
                    s.write_all(&block).await?;
                    s.read_exact(&mut ok).await
                };
                if matches!(tokio::time::timeout(SEND_LIMIT, sent).await, Ok(Ok(_))) && &ok == b"block_ok" {
                    break;
                }
                warn!(%dest, "mirror block not confirmed; reconnecting and sending it again");
                conn = None;
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(if attempts < 10 { 1000 } else { 5000 })).await;
        }
    }
    stats
}
