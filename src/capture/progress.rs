//! The progress bar of a `-r` run, on standard error when it is a terminal: bytes read of the file's size
//! (compressed bytes for a compressed file), rate, ETA, packets. Standard input has no size: bytes and rate
//! only. The read loop hands over its counters every 1024 frames; the bar redraws at most every 100 ms.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

const EVERY: Duration = Duration::from_millis(100);

/// The bar on screen, if any, so that log lines can lift it while they are written.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    next: Instant,
    /// The reader's stop flag, looked at with the counters (see `CaptureInput::stop_on`).
    pub(crate) stop: Option<&'static std::sync::atomic::AtomicBool>,
}

impl Progress {
    pub(crate) fn hidden() -> Self {
        Progress { bar: None, next: Instant::now(), stop: None }
    }

    /// A bar towards `total` bytes (a spinner when the size is unknown), drawn on standard error if it is a
    /// terminal, hidden otherwise.
    pub(crate) fn on_terminal(total: Option<u64>) -> Self {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Self::hidden();
        }
        let target = ProgressDrawTarget::stderr_with_hz(10);
        let (bar, template) = match total {
            Some(len) => (
                ProgressBar::with_draw_target(Some(len), target),
                // The bar takes what the text leaves of the line: one line even on 80 columns.
                "{spinner} {percent:>3}% [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
                 {msg} ETA {eta}",
            ),
            None => (
                ProgressBar::with_draw_target(None, target),
                "{spinner} {binary_bytes} read, {binary_bytes_per_sec}, {msg} ({elapsed})",
            ),
        };
        // indicatif draws nothing on a terminal that cannot redraw a line (TERM=dumb or unset).
        if bar.is_hidden() {
            return Self::hidden();
        }
        // The templates are constants: a broken one is a bug caught by the first run on a terminal.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("0 packets");
        // Keeps the spinner and the elapsed time moving while a pipe is quiet.
        bar.enable_steady_tick(Duration::from_millis(200));
        *SHOWN.lock() = Some(bar.clone());
        Progress { bar: Some(bar), next: Instant::now() + EVERY, stop: None }
    }

    /// `packets` handed over so far, `pos` bytes read; cheap when hidden, and redraws at most every 100 ms.
    #[inline]
    pub(crate) fn update(&mut self, packets: u64, pos: u64) {
        if let Some(bar) = &self.bar {
            let now = Instant::now();
            if now >= self.next {
                self.next = now + EVERY;
                bar.set_position(pos);
                bar.set_message(format!("{} packets", HumanCount(packets)));
            }
        }
    }
}

impl Progress {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            *SHOWN.lock() = None;
            bar.finish_and_clear();
        }
    }
}

/// Standard error for log lines (`tracing_subscriber`'s writer): a progress bar on screen is lifted while a
/// line is written, so that the line does not land in the middle of the bar.
pub struct LogWriter;

/// A [`LogWriter`], as `tracing_subscriber::fmt().with_writer(log_writer)` takes it.
pub fn log_writer() -> LogWriter {
    LogWriter
}

fn lifted<R>(f: impl FnOnce() -> R) -> R {
    let bar = SHOWN.lock().clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lifted(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        lifted(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
