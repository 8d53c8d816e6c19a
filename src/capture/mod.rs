//! Sources of packets: capture files (plain, compressed, or on standard input), DPDK ports (feature `dpdk`),
//! AF_PACKET rings; socket ingests (HEP, IPFIX, sensor links) plug in beside them.

pub mod afpacket;
pub mod hep;
pub mod input;
pub mod ipfix;
pub mod pcapfile;
pub mod progress;
pub mod socket;

#[cfg(feature = "dpdk")]
pub mod dpdk;
