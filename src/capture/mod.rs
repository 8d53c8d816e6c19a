//! Sources of packet bursts. Capture files now; DPDK, AF_PACKET and socket ingests plug in beside them.

pub mod pcapfile;

#[cfg(feature = "dpdk")]
pub mod dpdk;
