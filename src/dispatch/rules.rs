//! What `reload` changes while the capture runs: the SIP ports and the capture filter. The manager stores new
//! rules and bumps the generation; each rx core looks at the generation about once a second and takes a copy
//! when it moved, so the packet path reads only its own copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub struct Rules {
    generation: AtomicU64,
    current: RwLock<Arc<Current>>,
}

pub struct Current {
    pub sip_ports: Box<[bool; 65536]>,
    /// `sipport` as the manager prints it.
    pub sip_ports_text: String,
    /// The AF_PACKET capture filter.
    pub filter: Option<String>,
}

impl Current {
    /// The rules a configuration sets: at start, and at each reload.
    pub fn from_config(cfg: &crate::config::Config) -> Current {
        Current { sip_ports: cfg.sip_port_matrix(), sip_ports_text: cfg.sipports_text(), filter: cfg.filter.clone() }
    }
}

impl Rules {
    pub fn new(current: Current) -> Rules {
        Rules { generation: AtomicU64::new(0), current: RwLock::new(Arc::new(current)) }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.read().clone()
    }

    pub fn set(&self, c: Current) {
        *self.current.write() = Arc::new(c);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
