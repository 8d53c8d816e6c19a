//! Raw, generated bindings to the system DPDK (see build.rs). Nothing here is safe to use directly: voxtap wraps
//! it in `src/capture/dpdk.rs`, the only place in voxtap that touches these pointers (the test harness that
//! plays a NIC, `tests/common/nic.rs`, uses them for its side of the wire).
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/dpdk.rs"));

/// RSS hash function bits (`RTE_ETH_RSS_*` are function-like macros that bindgen cannot see).
pub const RSS_IPV4: u64 = 1 << 2;
pub const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
pub const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
pub const RSS_IPV6: u64 = 1 << 8;
pub const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
pub const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
/// `RTE_ETH_RX_OFFLOAD_TIMESTAMP` (also a macro built with `RTE_BIT64`).
pub const RX_OFFLOAD_TIMESTAMP: u64 = 1 << 14;
