//! Plays a NIC on a `net_ring` device for tests and benches: frames copied into mbufs and sent on a transmit
//! queue, which the ring loops back to the receive queue of the same number. Test code only, so it drives the
//! raw bindings itself instead of widening voxtap's DPDK shell.
#![allow(dead_code)]

use dpdk_sys as sys;
use voxtap::capture::dpdk::Mempool;

/// Sends `frames` (bytes, and the RSS hash a NIC would store) as one burst on transmit queue `queue` of port
/// `port`, in mbufs from `pool`. Filling stops at the first frame that finds no mbuf or does not fit one;
/// returns how many frames went out (mbufs the device did not take are freed).
pub fn send<'a>(
    port: u16,
    queue: u16,
    pool: &Mempool,
    frames: impl IntoIterator<Item = (&'a [u8], Option<u32>)>,
) -> usize {
    let mut burst: Vec<*mut sys::rte_mbuf> = Vec::new();
    for (data, rss) in frames {
        // SAFETY: alloc returns an owned mbuf or NULL; fill copies within its tailroom or fails, and a failed
        // mbuf is freed here.
        unsafe {
            let mut m = sys::vx_alloc(pool.as_ptr());
            if m.is_null() {
                break;
            }
            if sys::vx_fill(m, data.as_ptr().cast(), data.len() as u16) != 0 {
                sys::vx_free_bulk(&mut m, 1);
                break;
            }
            if let Some(h) = rss {
                sys::vx_set_rss(m, h);
            }
            burst.push(m);
        }
    }
    // SAFETY: the mbufs are owned; tx_burst takes ownership of those it accepts, the rest are freed here.
    unsafe {
        let sent = sys::vx_tx_burst(port, queue, burst.as_mut_ptr(), burst.len() as u16) as usize;
        if sent < burst.len() {
            sys::vx_free_bulk(burst[sent..].as_mut_ptr(), (burst.len() - sent) as u32);
        }
        sent
    }
}

/// DPDK's own software Toeplitz hash over an IPv4 5-tuple (to cross-check voxtap's).
pub fn softrss_v4(src: u32, dst: u32, sport: u16, dport: u16, key: &[u8; 40]) -> u32 {
    // SAFETY: a pure function over a 40-byte key.
    unsafe { sys::vx_softrss_v4(src, dst, sport, dport, key.as_ptr()) }
}
