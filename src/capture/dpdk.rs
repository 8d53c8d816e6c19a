//! The thin unsafe shell around DPDK: owned types for the EAL, an mbuf pool, a port with its rx queues, and a
//! burst of mbufs that frees itself. Nothing else in voxtap touches a DPDK pointer.
//!
//! One EAL per process (DPDK's rule): `Eal::init` succeeds once and returns the same handle afterwards.
//!
//! Ownership and drop order: a `Port` holds its `Mempool` (an `Arc`), and every `RxQueue` holds the port's
//! handle, so the port is stopped and closed only when the `Port` and all its queues are gone, and the pool is
//! freed only after that. A `MbufBurst` holds received mbufs of that pool: it must be cleared or dropped before
//! the last owner of the pool goes (the rx loops keep their burst inside the loop's function).

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock};

use dpdk_sys as sys;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DpdkError {
    #[error("DPDK EAL initialisation failed ({0}); EAL arguments were: {1}")]
    Eal(String, String),
    #[error("DPDK was already initialised with other arguments")]
    AlreadyInitialised,
    #[error("no DPDK port named '{0}' (available: {1})")]
    NoPort(String, String),
    #[error("cannot probe device '{0}': {1}")]
    Probe(String, String),
    #[error("cannot create the mbuf pool of {0} mbufs: {1}")]
    Pool(u32, String),
    #[error("port {port}: {what} failed: {why}")]
    Port { port: u16, what: &'static str, why: String },
}

fn rte_error(code: c_int) -> String {
    let code = if code < 0 { -code } else { code };
    // SAFETY: rte_strerror returns a pointer to a static or thread-local string for any errno value.
    unsafe { CStr::from_ptr(sys::rte_strerror(code)) }.to_string_lossy().into_owned()
}

fn last_error() -> String {
    // SAFETY: reads DPDK's per-thread errno through the shim.
    rte_error(unsafe { sys::vx_errno() })
}

/// A thread registered with DPDK (an lcore id, and so mempool caches); unregistered on drop.
pub struct RegisteredThread(std::marker::PhantomData<*const ()>);

impl RegisteredThread {
    /// Registers the calling thread; `None` when DPDK has no lcore left (the thread still works, uncached).
    pub fn register(_eal: &Eal) -> Option<RegisteredThread> {
        // SAFETY: registers the calling thread; paired with unregister in Drop on the same thread.
        (unsafe { sys::vx_thread_register() } == 0).then_some(RegisteredThread(std::marker::PhantomData))
    }
}

impl Drop for RegisteredThread {
    fn drop(&mut self) {
        // SAFETY: the same thread registered itself (the value is not Send).
        unsafe { sys::vx_thread_unregister() };
    }
}

/// The initialised Environment Abstraction Layer.
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

static EAL: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
/// Control-path calls (configure, probe, start, stop) are not thread-safe in DPDK: serialise them.
static CONTROL: Mutex<()> = Mutex::new(());

impl Eal {
    /// Initialises the EAL with these arguments (program name first is added here).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let r = EAL.get_or_init(|| {
            let mut all = vec!["voxtap".to_string()];
            all.extend(args.iter().cloned());
            let cstrings: Vec<CString> = all.iter().filter_map(|a| CString::new(a.as_str()).ok()).collect();
            // DPDK keeps pointers into argv for the process lifetime: leak them on purpose.
            let mut argv: Vec<*mut c_char> = cstrings.into_iter().map(|c| c.into_raw()).collect();
            let argc = argv.len() as c_int;
            let ptr = argv.as_mut_ptr();
            std::mem::forget(argv);
            // SAFETY: argv is a valid, leaked array of NUL-terminated strings; called at most once.
            let rc = unsafe { sys::rte_eal_init(argc, ptr) };
            if rc < 0 {
                Err(format!("{} (code {rc})", last_error()))
            } else {
                Ok(args.to_vec())
            }
        });
        match r {
            Ok(used) if used == args => Ok(Eal { _private: () }),
            Ok(_) => Err(DpdkError::AlreadyInitialised),
            Err(e) => Err(DpdkError::Eal(e.clone(), args.join(" "))),
        }
    }

    /// Hot-plugs a device (`net_pcap0,rx_pcap=/x.pcap`) after init.
    pub fn probe(&self, devargs: &str) -> Result<(), DpdkError> {
        let _g = CONTROL.lock().unwrap_or_else(|p| p.into_inner());
        let c = CString::new(devargs).map_err(|e| DpdkError::Probe(devargs.into(), e.to_string()))?;
        // SAFETY: c is a valid C string for the duration of the call.
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Probe(devargs.into(), rte_error(rc)));
        }
        Ok(())
    }

    /// Names of the available ports.
    pub fn port_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for id in 0..sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: plain query; avoids DPDK's error log for ids that are not ports.
            if unsafe { sys::rte_eth_dev_is_valid_port(id) } != 1 {
                continue;
            }
            let mut buf = [0 as c_char; 64];
            // SAFETY: the buffer is large enough (RTE_ETH_NAME_MAX_LEN is 64) and NUL-terminated on success.
            if unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
                let name = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
                out.push(name);
            }
        }
        out
    }

    /// A port by number (`dpdk:0` → "0") or by device name.
    pub fn port(&self, name: &str) -> Result<u16, DpdkError> {
        if let Ok(id) = name.parse::<u16>() {
            // SAFETY: plain query.
            if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 1 {
                return Ok(id);
            }
        }
        let c = CString::new(name).map_err(|_| DpdkError::NoPort(name.into(), String::new()))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) } == 0 {
            return Ok(id);
        }
        Err(DpdkError::NoPort(name.into(), self.port_names().join(", ")))
    }
}

/// A pool of packet buffers, freed on drop.
///
/// A port's receive queues allocate from it, so a `Port` keeps it alive through an `Arc`; see the module notes.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: an rte_mempool is designed to be used from many lcores/threads at once.
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `mbufs` packet buffers named `name` (names are unique per process while the pool lives).
    pub fn new(_eal: &Eal, name: &str, mbufs: u32, cache: u32) -> Result<Mempool, DpdkError> {
        let c = CString::new(name).map_err(|e| DpdkError::Pool(mbufs, e.to_string()))?;
        let cache = cache.min(512).min(mbufs / 2);
        // SAFETY: arguments are plain values and a valid C string; DPDK returns NULL on failure.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                c.as_ptr(),
                mbufs,
                cache,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                sys::rte_socket_id() as c_int,
            )
        };
        NonNull::new(p).map(|ptr| Mempool { ptr }).ok_or_else(|| DpdkError::Pool(mbufs, last_error()))
    }

    /// The DPDK pool, for harnesses that drive DPDK directly (a test or bench playing a NIC).
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours and no port uses it any more (a Port holds an Arc to it); every mbuf taken
        // from it must be back, which the owners of bursts see to (module notes).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}

/// Port configuration.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    /// Transmit queues (a capture port needs one; a test harness looping net_ring needs one per rx queue).
    pub tx_queues: u16,
    /// Ask the device for receive timestamps (net_pcap gives the capture file's times).
    pub timestamps: bool,
    pub promiscuous: bool,
}

/// Receive counters of a port.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortStats {
    pub ipackets: u64,
    pub ibytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub rx_nombuf: u64,
    pub q_ipackets: Vec<u64>,
}

/// A configured and started port; stopped and closed once it and all its receive queues are dropped.
pub struct Port {
    pub id: u16,
    /// The PMD's name (`net_pcap`, `net_ixgbe`…).
    pub driver: String,
    pub rx_queues: u16,
    pub rss: bool,
    pub timestamps: bool,
    /// Receive queues not handed out yet (index = queue id): each goes to one poller only.
    queues: Vec<Option<RxQueue>>,
    /// Shared with the queues: the last of them to go stops and closes the port.
    _open: Arc<PortHandle>,
}

/// The configured device and the pool its queues fill from. Field order matters: `Drop::drop` stops and closes
/// the port first, then the fields drop, and with them this holder's share of the pool.
struct PortHandle {
    id: u16,
    _pool: Arc<Mempool>,
}

impl Drop for PortHandle {
    fn drop(&mut self) {
        let _g = CONTROL.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the port was configured by Port::start and no queue handle is left to poll it; stopping a port
        // that never started is a no-op for DPDK.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

impl Port {
    /// Configures and starts port `id` with receive queues filled from `pool` (kept alive by the port).
    pub fn start(_eal: &Eal, id: u16, cfg: &PortConfig, pool: &Arc<Mempool>) -> Result<Port, DpdkError> {
        // Declared before the lock guard: locals drop in reverse order, so on an error the guard is released
        // before the handle's drop takes the lock again to close the port.
        let handle;
        let _g = CONTROL.lock().unwrap_or_else(|p| p.into_inner());
        let err = |what, rc: c_int| DpdkError::Port { port: id, what, why: rte_error(rc) };
        // SAFETY: zeroed rte_eth_dev_info is a valid out-parameter.
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(err("dev_info_get", rc));
        }
        let nq = cfg.rx_queues.clamp(1, info.max_rx_queues.max(1));
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: DPDK's driver name is a static NUL-terminated string.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        let rss_hf = info.flow_type_rss_offloads
            & (sys::RSS_IPV4
                | sys::RSS_NONFRAG_IPV4_TCP
                | sys::RSS_NONFRAG_IPV4_UDP
                | sys::RSS_IPV6
                | sys::RSS_NONFRAG_IPV6_TCP
                | sys::RSS_NONFRAG_IPV6_UDP);
        let rss = nq > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            // The symmetric key (0x6d5a repeated) keeps both directions of a flow on one queue.
            static SYMMETRIC_KEY: [u8; 40] = [
                0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d,
                0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
                0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
            ];
            conf.rx_adv_conf.rss_conf.rss_key = SYMMETRIC_KEY.as_ptr() as *mut u8;
            conf.rx_adv_conf.rss_conf.rss_key_len = 40;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        let timestamps = cfg.timestamps && info.rx_offload_capa & sys::RX_OFFLOAD_TIMESTAMP != 0;
        if timestamps {
            conf.rxmode.offloads |= sys::RX_OFFLOAD_TIMESTAMP;
        }
        // SAFETY: conf is fully initialised; the port id came from DPDK.
        let ntx = cfg.tx_queues.clamp(1, info.max_tx_queues.max(1));
        let rc = unsafe { sys::rte_eth_dev_configure(id, nq, ntx, &conf) };
        if rc != 0 {
            return Err(err("configure", rc));
        }
        // From here on the device holds queues on the pool: a failure below closes it again (drop) before the
        // pool can go.
        handle = PortHandle { id, _pool: pool.clone() };
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..nq {
            // SAFETY: NULL rxconf selects the driver's defaults; the pool outlives the port (owned by the caller).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(id, q, cfg.rx_descriptors, socket, std::ptr::null(), pool.as_ptr())
            };
            if rc != 0 {
                return Err(err("rx_queue_setup", rc));
            }
        }
        for q in 0..ntx {
            // SAFETY: NULL txconf selects the driver's defaults.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(id, q, 512, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(err("tx_queue_setup", rc));
            }
        }
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err("start", rc));
        }
        if cfg.promiscuous {
            // Virtual devices may not support it; that is not an error for capture.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        // Some drivers (net_pcap) register the rx timestamp field without announcing the offload: look it up
        // in any case; packets carry a timestamp only when the driver set the flag on them.
        // SAFETY: looks up DPDK's registered dynamic field; harmless if absent.
        let registered = unsafe { sys::vx_timestamp_init() } == 0;
        let open = Arc::new(handle);
        let queues = (0..nq).map(|queue| Some(RxQueue { port: id, queue, _open: open.clone() })).collect();
        Ok(Port { id, driver, rx_queues: nq, rss, timestamps: timestamps || registered, queues, _open: open })
    }

    /// Receive queue `q`, once: `None` when there is no such queue or it was handed out already (two pollers
    /// on one queue would corrupt it).
    pub fn take_rx_queue(&mut self, q: u16) -> Option<RxQueue> {
        self.queues.get_mut(q as usize)?.take()
    }

    /// Every receive queue not handed out yet, in queue order.
    pub fn take_rx_queues(&mut self) -> Vec<RxQueue> {
        self.queues.iter_mut().filter_map(Option::take).collect()
    }

    /// The port's receive counters now.
    pub fn stats(&self) -> PortStats {
        // SAFETY: zeroed stats is a valid out-parameter.
        let mut s: sys::rte_eth_stats = unsafe { std::mem::zeroed() };
        unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            ipackets: s.ipackets,
            ibytes: s.ibytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            rx_nombuf: s.rx_nombuf,
            q_ipackets: s.q_ipackets[..self.rx_queues as usize].to_vec(),
        }
    }
}

/// One receive queue, polled by exactly one rx core (the port hands each out once; it is not `Clone`).
pub struct RxQueue {
    port: u16,
    queue: u16,
    /// Keeps the port open while this queue may still be polled.
    _open: Arc<PortHandle>,
}

impl RxQueue {
    /// The queue id on its port.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Fills `burst` (emptied first) with up to `max` packets (at most `BURST_CAP`); returns how many.
    #[inline]
    pub fn poll(&mut self, burst: &mut MbufBurst, max: u16) -> usize {
        burst.clear();
        let max = max.clamp(1, BURST_CAP as u16);
        // SAFETY: the array has room for BURST_CAP pointers; rx_burst writes at most `max` owned mbufs.
        let n = unsafe { sys::vx_rx_burst(self.port, self.queue, burst.ptrs.as_mut_ptr(), max) };
        burst.n = n as usize;
        burst.n
    }
}

pub const BURST_CAP: usize = 512;

/// Up to `BURST_CAP` received mbufs, freed in bulk when cleared or dropped.
pub struct MbufBurst {
    ptrs: [*mut sys::rte_mbuf; BURST_CAP],
    n: usize,
}

// SAFETY: the burst owns its mbufs.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        MbufBurst { ptrs: [std::ptr::null_mut(); BURST_CAP], n: 0 }
    }
}

/// A received packet's bytes and what the device said about it.
pub struct Packet<'a> {
    pub data: &'a [u8],
    pub rss: Option<u32>,
    /// Receive timestamp from the device, in the device's unit (net_pcap: microseconds), if any.
    pub timestamp: Option<u64>,
    /// The frame continues in chained segments (jumbo frames): `data` is only the first one; use `copy_whole`.
    pub chained: bool,
}

impl MbufBurst {
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Called before packet `i` is read: starts loading the mbuf header four packets ahead and the frame's first
    /// bytes two ahead, so that decoding packet `i` overlaps the memory latency of the next ones (the NIC or
    /// another core wrote them, so they are rarely in this core's cache).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            if let Some(&m) = self.ptrs[..self.n].get(i + 4) {
                // SAFETY: prefetching is only a hint and never faults; m is a received mbuf.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(m as *const i8) };
            }
            if let Some(&m) = self.ptrs[..self.n].get(i + 2) {
                // SAFETY: m is an owned, received mbuf; reading its data address touches only its header.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(sys::vx_data(m) as *const i8) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        let m = *self.ptrs[..self.n].get(i)?;
        // SAFETY: m is an owned, received mbuf; its data lives until the burst is cleared (borrow of self).
        unsafe {
            let mut info: sys::vx_pkt = std::mem::zeroed();
            sys::vx_pkt_info(m, &mut info);
            let data = std::slice::from_raw_parts(info.data, info.data_len as usize);
            Some(Packet {
                data,
                rss: (info.rss_valid != 0).then_some(info.rss),
                timestamp: (info.timestamp != 0).then_some(info.timestamp),
                chained: info.pkt_len > u32::from(info.data_len),
            })
        }
    }

    /// Copies the whole of packet `i` (all its segments) into `out`.
    pub fn copy_whole(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let Some(&m) = self.ptrs[..self.n].get(i) else { return false };
        // SAFETY: m is an owned mbuf; out is resized to the packet length before the copy.
        unsafe {
            let len = sys::vx_pkt_len(m);
            out.clear();
            out.resize(len as usize, 0);
            sys::vx_read(m, len, out.as_mut_ptr().cast()) == 0
        }
    }

    pub fn clear(&mut self) {
        if self.n > 0 {
            // SAFETY: the first n pointers are owned mbufs.
            unsafe { sys::vx_free_bulk(self.ptrs.as_mut_ptr(), self.n as u32) };
            self.n = 0;
        }
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}
