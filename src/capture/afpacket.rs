//! Live capture without DPDK: Linux AF_PACKET with a TPACKET_V3 memory-mapped ring per interface (the kernel
//! fills whole blocks of packets; user space reads them in place and hands each block back), timestamps from
//! the kernel, promiscuous mode, PACKET_FANOUT so several sockets of one process can share an interface, and
//! the kernel's drop counters.

use std::ffi::CString;
use std::io;
use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;

use thiserror::Error;

use crate::decode::link::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use crate::time::Nanos;

#[derive(Debug, Error)]
pub enum AfPacketError {
    #[error("no network interface named '{0}'")]
    NoInterface(String),
    #[error("bad capture filter '{0}': {1}")]
    Filter(String, String),
    #[error("AF_PACKET {what} on '{iface}' failed: {}{}", crate::errors::plain(.error), crate::errors::privilege_hint(.error, "capturing"))]
    Sys { what: &'static str, iface: String, error: io::Error },
}

const BLOCK_SIZE: u32 = 1 << 20;
const BLOCK_COUNT: u32 = 32;
const FRAME_SIZE: u32 = 2048;
/// A block is handed to user space at the latest this long after its first packet, so quiet links still flow.
const BLOCK_TIMEOUT_MS: u32 = 20;
const ARPHRD_NONE: u16 = 0xfffe;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_ETHER: u16 = 1;

/// One TPACKET_V3 ring bound to an interface (or to every interface with "any").
pub struct Ring {
    fd: c_int,
    map: NonNull<u8>,
    map_len: usize,
    block: u32,
    iface: String,
}

// SAFETY: the ring is used by one thread at a time; moving it to the rx thread is fine.
unsafe impl Send for Ring {}

/// Kernel counters of a ring (PACKET_STATISTICS; reading resets them in the kernel, so they are accumulated).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RingStats {
    pub packets: u64,
    pub drops: u64,
    pub freezes: u64,
}

/// A packet in the ring: valid until the block is released (the next `poll`).
pub struct RingPacket<'a> {
    pub ts: Nanos,
    pub link_type: u16,
    pub data: &'a [u8],
}

fn sys_err(what: &'static str, iface: &str) -> AfPacketError {
    AfPacketError::Sys { what, iface: iface.to_string(), error: io::Error::last_os_error() }
}

fn setsockopt<T>(fd: c_int, level: c_int, name: c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a live value of the size passed.
    let rc = unsafe { libc::setsockopt(fd, level, name, (v as *const T).cast(), std::mem::size_of::<T>() as u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Ring {
    /// Opens a ring on `iface` ("any" for all interfaces). `fanout`: group id shared by the sockets that split
    /// one interface's traffic by flow hash.
    pub fn open(iface: &str, promisc: bool, fanout: Option<u16>) -> Result<Ring, AfPacketError> {
        let ifindex = if iface == "any" {
            0
        } else {
            let c = CString::new(iface).map_err(|_| AfPacketError::NoInterface(iface.into()))?;
            // SAFETY: valid C string.
            let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if i == 0 {
                return Err(AfPacketError::NoInterface(iface.into()));
            }
            i as c_int
        };
        // Protocol 0 first: nothing is queued while the ring is being set up; bind with ETH_P_ALL afterwards.
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(sys_err("socket", iface));
        }
        let fail = |what| {
            let e = sys_err(what, iface);
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            e
        };
        let version: c_int = libc::tpacket_versions::TPACKET_V3 as c_int;
        if setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version).is_err() {
            return Err(fail("PACKET_VERSION"));
        }
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: BLOCK_COUNT,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_COUNT,
            tp_retire_blk_tov: BLOCK_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        if setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req).is_err() {
            return Err(fail("PACKET_RX_RING"));
        }
        let map_len = (BLOCK_SIZE * BLOCK_COUNT) as usize;
        // SAFETY: maps the ring the kernel just created for this socket.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(fail("mmap"));
        }
        let ring = Ring {
            fd,
            map: NonNull::new(p.cast()).expect("mmap returned non-null"),
            map_len,
            block: 0,
            iface: iface.into(),
        };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
        };
        if rc != 0 {
            return Err(sys_err("bind", iface));
        }
        if promisc && ifindex != 0 {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            if setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq).is_err() {
                return Err(sys_err("promiscuous mode", iface));
            }
        }
        if let Some(group) = fanout {
            let arg: c_int =
                group as c_int | (((libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) as c_int) << 16);
            if setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).is_err() {
                return Err(sys_err("PACKET_FANOUT", iface));
            }
        }
        Ok(ring)
    }

    /// Attaches a BPF filter (tcpdump syntax, compiled by libpcap for Ethernet frames): the kernel drops what it
    /// does not match before it reaches the ring.
    pub fn set_filter(&self, expr: &str) -> Result<(), AfPacketError> {
        let prog = compile_filter(expr)?;
        let insns: Vec<libc::sock_filter> =
            prog.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
        let fprog = libc::sock_fprog { len: insns.len() as u16, filter: insns.as_ptr() as *mut libc::sock_filter };
        setsockopt(self.fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog).map_err(|error| AfPacketError::Sys {
            what: "SO_ATTACH_FILTER",
            iface: self.iface.clone(),
            error,
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn block_ptr(&self, i: u32) -> *mut libc::tpacket_block_desc {
        // SAFETY: i < BLOCK_COUNT, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add((i * BLOCK_SIZE) as usize).cast() }
    }

    /// Waits up to `timeout_ms` for the next block and calls `f` for each of its packets; returns the count.
    pub fn poll(&mut self, timeout_ms: i32, f: &mut dyn FnMut(RingPacket<'_>)) -> usize {
        let b = self.block_ptr(self.block);
        // SAFETY: b points into the mapping; block_status is written by the kernel, read with a volatile load.
        let ready = |b: *mut libc::tpacket_block_desc| unsafe {
            std::ptr::read_volatile(&(*b).hdr.bh1.block_status) & libc::TP_STATUS_USER != 0
        };
        if !ready(b) {
            let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN | libc::POLLERR, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if !ready(b) {
                return 0;
            }
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the block belongs to user space until its status is set back to TP_STATUS_KERNEL.
        let (n, first) = unsafe { ((*b).hdr.bh1.num_pkts, (*b).hdr.bh1.offset_to_first_pkt) };
        let base = b as *const u8;
        let mut off = first as usize;
        let mut count = 0;
        for _ in 0..n {
            if off + std::mem::size_of::<libc::tpacket3_hdr>() > BLOCK_SIZE as usize {
                break;
            }
            // SAFETY: off stays inside this block (checked above and by the kernel's layout).
            let h = unsafe { &*(base.add(off) as *const libc::tpacket3_hdr) };
            let mac = h.tp_mac as usize;
            let snap = h.tp_snaplen as usize;
            if off + mac + snap <= BLOCK_SIZE as usize {
                // The sockaddr_ll after the header tells the link type of the packet's interface.
                let sll_off = off + tpacket_align(std::mem::size_of::<libc::tpacket3_hdr>());
                // SAFETY: the kernel places a sockaddr_ll there, inside the block.
                let sll = unsafe { &*(base.add(sll_off) as *const libc::sockaddr_ll) };
                let hatype = sll.sll_hatype;
                // On loopback every packet shows up twice, outgoing and incoming: keep one (as libpcap does).
                let loop_copy = hatype == ARPHRD_LOOPBACK && sll.sll_pkttype == libc::PACKET_OUTGOING;
                let link_type = match hatype {
                    _ if loop_copy => None,
                    ARPHRD_ETHER | ARPHRD_LOOPBACK => Some(LINKTYPE_ETHERNET),
                    ARPHRD_NONE => Some(LINKTYPE_RAW),
                    _ => None,
                };
                if let Some(link_type) = link_type {
                    // SAFETY: [off+mac, off+mac+snap) is inside the block.
                    let data = unsafe { std::slice::from_raw_parts(base.add(off + mac), snap) };
                    let ts = h.tp_sec as i64 * 1_000_000_000 + h.tp_nsec as i64;
                    f(RingPacket { ts, link_type, data });
                    count += 1;
                }
            }
            if h.tp_next_offset == 0 {
                break;
            }
            off += h.tp_next_offset as usize;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: hand the block back to the kernel.
        unsafe { std::ptr::write_volatile(&mut (*b).hdr.bh1.block_status, libc::TP_STATUS_KERNEL) };
        self.block = (self.block + 1) % BLOCK_COUNT;
        count
    }

    /// Kernel counters since the last call.
    pub fn stats(&self) -> RingStats {
        // SAFETY: zeroed stats struct is a valid out-parameter of the size passed.
        let mut s: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as u32;
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut s as *mut libc::tpacket_stats_v3).cast::<c_void>(),
                &mut len,
            )
        };
        if rc != 0 {
            return RingStats::default();
        }
        RingStats { packets: s.tp_packets as u64, drops: s.tp_drops as u64, freezes: s.tp_freeze_q_cnt as u64 }
    }
}

fn tpacket_align(x: usize) -> usize {
    (x + 15) & !15
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping and closing what open() created.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
            libc::close(self.fd);
        }
    }
}

/// One classic BPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Compiles a tcpdump-style filter for Ethernet frames with libpcap (no capture device needed).
pub fn compile_filter(expr: &str) -> Result<Vec<BpfInsn>, AfPacketError> {
    let bad = |e: pcap::Error| AfPacketError::Filter(expr.to_string(), e.to_string());
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(bad)?;
    let prog = dead.compile(expr, true).map_err(bad)?;
    // The pcap crate exposes an instruction's fields only through Display ("code jt jf k").
    prog.get_instructions()
        .iter()
        .map(|i| {
            let text = i.to_string();
            let f: Vec<u32> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            match f[..] {
                [code, jt, jf, k] => Ok(BpfInsn { code: code as u16, jt: jt as u8, jf: jf as u8, k }),
                _ => Err(AfPacketError::Filter(expr.to_string(), format!("unreadable BPF instruction '{text}'"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_or_say_why() {
        let p = compile_filter("udp port 5060 or udp portrange 10000-20000").unwrap();
        assert!(p.len() > 5);
        // The program ends in return instructions (class RET = 6).
        assert!(p.iter().any(|i| i.code & 0x07 == 0x06));
        let e = compile_filter("udp prot 5060").unwrap_err().to_string();
        assert!(e.contains("udp prot 5060"), "{e}");
    }
}
