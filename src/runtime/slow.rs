//! The slow side's one tokio runtime: the manager port, the central's and the remote's link, the mirror sender
//! and receiver, the HEP and IPFIX listeners and the MySQL writer run as tasks on it. Its worker threads are few
//! and fixed; blocking work (a manager command that reads a file or asks the owners, queue files) runs on its
//! blocking pool, which is bounded too — so thousands of peers cost tasks, not threads.

use std::time::Duration;

pub struct SlowSide {
    rt: Option<tokio::runtime::Runtime>,
}

/// Worker threads: the slow side moves bytes between sockets, files and channels; two keep a busy central's
/// links and database going without taking cores from the fast side.
const WORKERS: usize = 2;
/// Threads for blocking work at once (more waits in the runtime's queue).
const BLOCKING: usize = 16;

impl SlowSide {
    pub fn start() -> std::io::Result<SlowSide> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .max_blocking_threads(BLOCKING)
            .thread_name("slow")
            .enable_all()
            .build()?;
        Ok(SlowSide { rt: Some(rt) })
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime lives until drop"),
        }
    }
}

impl Drop for SlowSide {
    fn drop(&mut self) {
        // Tasks still running (a peer that never closes) must not hold up the exit.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
