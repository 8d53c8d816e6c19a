//! systemd's service notifications (the sd_notify protocol, spoken directly: one datagram to `$NOTIFY_SOCKET`).
//! A live sensor says READY=1 once its owners, storage and manager port run, STOPPING=1 when it starts draining,
//! and WATCHDOG=1 while every rx core still turns its loop: a wedged capture loop stops the pings and systemd
//! restarts the service (`WatchdogSec=` in the appliance's voxtap.service). Outside systemd all of it is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::stats::Live;
use crate::time::monotonic_secs;

/// Sends one notification; false when there is no notify socket or it cannot be reached.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket name (systemd uses one in some containers).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = &sent {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
    sent.is_ok()
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process per `$WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether every rx core has beaten within `stale` seconds; a core that has not beaten yet counts from `since`
/// (when the watchdog started), so a slow start is not a hang.
pub fn rx_cores_alive(live: &Live, now: i64, since: i64, stale: i64) -> bool {
    live.sources.iter().all(|s| {
        let b = s.beat.load(Ordering::Relaxed);
        now - if b == 0 { since } else { b } <= stale
    })
}

/// A live sensor's side of systemd: READY=1 when it starts, the watchdog fed while its rx cores turn, STOPPING=1
/// when it drains.
pub struct Service {
    watchdog: Option<Watchdog>,
}

impl Service {
    /// The sensor is up. `stopping` tells when it has been asked to stop (see `Watchdog::start`).
    pub fn start(live: Arc<Live>, stopping: fn() -> bool) -> Service {
        notify("READY=1");
        Service { watchdog: Watchdog::start(live, stopping) }
    }

    /// The sensor drains its calls: the watchdog is fed without rx heartbeats from now on.
    pub fn draining(&self) {
        if let Some(w) = &self.watchdog {
            w.draining.store(true, Ordering::Relaxed);
        }
        notify("STOPPING=1");
    }
}

/// Pings systemd's watchdog while the rx cores turn; ends when dropped.
struct Watchdog {
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging when systemd asked for a watchdog; `None` otherwise. `stopping` tells when the sensor has
    /// been asked to stop: its rx cores then end on purpose, and finishing the calls is progress enough.
    fn start(live: Arc<Live>, stopping: fn() -> bool) -> Option<Watchdog> {
        let interval = watchdog_interval()?;
        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        let (s, d) = (stop.clone(), draining.clone());
        // Ping three times per interval; a core silent for half of it is late (rx cores beat every second of
        // packet time, and every 50 ms on a quiet link).
        let period = interval / 3;
        let stale = (interval.as_secs() as i64 / 2).max(2);
        let since = monotonic_secs();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut late = false;
                while !s.load(Ordering::Relaxed) {
                    let draining = d.load(Ordering::Relaxed) || stopping();
                    if draining || rx_cores_alive(&live, monotonic_secs(), since, stale) {
                        notify("WATCHDOG=1");
                        late = false;
                    } else if !late {
                        late = true;
                        tracing::error!(
                            stale_s = stale,
                            "an rx core has stopped turning: systemd's watchdog is not fed"
                        );
                    }
                    std::thread::park_timeout(period);
                }
            })
            .ok()?;
        tracing::info!(interval_ms = interval.as_millis() as u64, "systemd watchdog on");
        Some(Watchdog { stop, draining, thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_that_stopped_beating_is_late() {
        let live = Live::new(2);
        // Neither has beaten: both count from the start.
        assert!(rx_cores_alive(&live, 105, 100, 10));
        assert!(!rx_cores_alive(&live, 111, 100, 10));
        live.sources[0].beat.store(110, Ordering::Relaxed);
        live.sources[1].beat.store(101, Ordering::Relaxed);
        assert!(rx_cores_alive(&live, 111, 100, 10));
        assert!(!rx_cores_alive(&live, 112, 100, 10));
    }
}
