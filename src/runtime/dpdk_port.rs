//! Opening the configured DPDK port and handing a received burst on as frames: shared by the analysing capture
//! (`run_dpdk`) and the forwarding senders (packetbuffer_sender, mirror).

use anyhow::Result;

use crate::capture::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig};
use crate::config::Config;

/// The EAL and the started port. The port owns its mbuf pool and is closed when it and every receive queue
/// taken from it are dropped, and the pool is freed after that (see `capture::dpdk`), so no field order matters
/// here.
pub(super) struct OpenPort {
    pub port: Port,
    pub eal: Eal,
    pub port_id: u16,
    pub name: String,
    /// Packet times come from the file (a `net_pcap` replay that does not loop), not the host clock.
    pub file_times: bool,
}

pub(super) fn open(cfg: &Config, pool_prefix: &str) -> Result<OpenPort> {
    let name = cfg.interface.first().map(|i| i.trim_start_matches("dpdk:").to_string()).unwrap_or_else(|| "0".into());
    if cfg.interface.len() > 1 {
        tracing::warn!(interfaces = ?cfg.interface, "DPDK captures one port; only the first interface is used");
    }
    // The EAL pins the thread that initialises it, and threads started later would inherit that: keep the
    // process's CPU set and give it back to this thread once the EAL is up.
    let cpus = crate::os::thread_affinity();
    let eal = Eal::init(&super::eal_args(cfg))?;
    if let Ok(cpus) = &cpus {
        // Best effort, as before: a thread left pinned still works, only on fewer CPUs.
        let _ = crate::os::set_thread_affinity(cpus);
    }
    let port_id = eal.port(&name)?;
    let mbufs = cfg.dpdk_nb_mbufs.saturating_mul(1024);
    let pool = Mempool::new(&eal, &format!("{pool_prefix}_{port_id}"), mbufs, 256).map_err(|e| {
        // Each mbuf takes about 2.3 KiB with its headroom and headers: say what fits, not only that it failed.
        anyhow::anyhow!(
            "{e}; {mbufs} mbufs need about {} MiB of DPDK memory: lower dpdk_nb_mbufs (now {}, in thousands) or \
             give DPDK more memory (hugepages, or -m MiB in dpdk_eal_args; see docs/capture-setup.md)",
            (mbufs as u64 * 2368) >> 20,
            cfg.dpdk_nb_mbufs
        )
    })?;
    let pool = std::sync::Arc::new(pool);
    let port_cfg = PortConfig {
        rx_queues: cfg.dpdk_nb_rxq,
        rx_descriptors: cfg.dpdk_nb_rx,
        tx_queues: 1,
        timestamps: true,
        promiscuous: cfg.promisc,
    };
    let port = Port::start(&eal, port_id, &port_cfg, &pool)?;
    // Only a pcap virtual device stamps packets with wall-clock times (the file's, in microseconds); a NIC's
    // hardware timestamps run on its own clock, so live ports use the host clock. A looped replay (infinite_rx)
    // repeats the file's times, so it runs on the host clock instead.
    let looped = cfg.dpdk_vdev.iter().any(|v| v.contains("infinite_rx=1"));
    let file_times = port.timestamps && port.driver.starts_with("net_pcap") && !looped;
    Ok(OpenPort { port, eal, port_id, name, file_times })
}

/// The first `n` packets of a received burst, as frames (a chained jumbo frame is copied whole into `jumbo`).
pub(super) fn hand_on(
    burst: &MbufBurst,
    n: usize,
    file_times: bool,
    now: crate::time::Nanos,
    jumbo: &mut Vec<u8>,
    f: &mut super::FrameSink<'_>,
) {
    for i in 0..n {
        burst.prefetch(i);
        if let Some(p) = burst.get(i) {
            let ts = match p.timestamp {
                Some(t) if file_times => (t as i64).saturating_mul(1000),
                _ => now,
            };
            if p.chained && burst.copy_whole(i, jumbo) {
                f(ts, crate::decode::link::LINKTYPE_ETHERNET, jumbo);
            } else {
                f(ts, crate::decode::link::LINKTYPE_ETHERNET, p.data);
            }
        }
    }
}
