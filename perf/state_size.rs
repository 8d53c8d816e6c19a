//! Measures the memory an owner core holds per active RTP stream: builds N answered calls with two G.711
//! streams each, through the same code the owners run (SIP parse, Call, RTP packets), and counts the live heap
//! bytes with a counting allocator. Run: `cargo run --release --example state_size -- 10000`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use voxtap::call::{Call, SipPacket};
use voxtap::decode::Transport;
use voxtap::sip::msg;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn sip(i: u32, first: &str, sdp_ip: Ipv4Addr, port: u16, from_tag: &str, to_tag: &str) -> Vec<u8> {
    let sdp = format!("v=0\r\no=- 1 1 IN IP4 {sdp_ip}\r\ns=-\r\nc=IN IP4 {sdp_ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n");
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{i}\r\nFrom: \"Caller {i}\" <sip:{i}@example.com>;tag={from_tag}\r\nTo: <sip:200@example.com>{to_tag}\r\nCall-ID: call-{i}@bench\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let caller = |i: u32| Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
    let callee = |i: u32| Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8);
    let before = LIVE.load(Ordering::Relaxed);
    let mut calls: HashMap<u64, Box<Call>> = HashMap::new();
    let mut rtp = vec![0x80u8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    rtp.extend_from_slice(&[0xd5; 160]);
    for i in 0..n {
        let inv = sip(i, "INVITE sip:200@example.com SIP/2.0", caller(i), 20000, "a", "");
        let ok = sip(i, "SIP/2.0 200 OK", callee(i), 30000, "a", ";tag=b");
        let (mi, mo) = (msg::parse(&inv).expect("invite"), msg::parse(&ok).expect("200"));
        let pk = |m, ts, src, dst| SipPacket {
            ts,
            src: IpAddr::V4(src),
            sport: 5060,
            dst: IpAddr::V4(dst),
            dport: 5060,
            transport: Transport::Udp,
            vlan: None,
            msg: m,
        };
        let p1 = pk(&mi, 0, caller(i), callee(i));
        let mut c = Box::new(Call::new(i as u64, &p1));
        c.sip(&p1);
        c.sip(&pk(&mo, 1_000_000, callee(i), caller(i)));
        for k in 0..50u32 {
            let ts = 2_000_000 + k as i64 * 20_000_000;
            rtp[2..4].copy_from_slice(&(k as u16).to_be_bytes());
            rtp[4..8].copy_from_slice(&(k * 160).to_be_bytes());
            rtp[8..12].copy_from_slice(&(i * 2).to_be_bytes());
            let (a, b) = (IpAddr::V4(caller(i)), IpAddr::V4(callee(i)));
            c.media(ts, a, 20000, b, 30000, true, &rtp, rtp.len(), 0xd5);
            rtp[8..12].copy_from_slice(&(i * 2 + 1).to_be_bytes());
            c.media(ts + 1000, b, 30000, a, 20000, true, &rtp, rtp.len(), 0xd5);
        }
        calls.insert(i as u64, c);
    }
    let live = LIVE.load(Ordering::Relaxed) - before;
    let streams: usize = calls.values().map(|c| c.streams.len()).sum();
    println!(
        "calls={n} streams={streams} heap_bytes={live} bytes_per_stream={:.0} (call state included, shared by its 2 streams)",
        live as f64 / streams as f64
    );
    println!(
        "size_of: Call={} Stream={} RtpStream={}",
        std::mem::size_of::<Call>(),
        std::mem::size_of::<voxtap::call::Stream>(),
        std::mem::size_of::<voxtap::rtp::stream::RtpStream>()
    );
}
