//! Live IPFIX ingest from an Oracle/Acme SBC: voxtap listens (`ipfix = yes`), a capture's SIP messages arrive as
//! the SBC's SIP sets (received and sent, over UDP and over TCP) after its handshake, which voxtap answers; voxtap
//! is stopped with SIGTERM, and the CDRs equal those of reading the capture's SIP packets.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use voxtap::capture::pcapfile::CaptureFile;
use voxtap::decode::{Decoder, DecoderConfig, Transport};

/// The frames of `input` whose UDP or TCP port is 5060, as a new pcap: what an SBC sees of a call.
fn sip_only(input: &Path, out: &Path) {
    let mut w = Vec::new();
    w.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    w.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
    for f in CaptureFile::open(input).unwrap().frames() {
        let d = f.data;
        let ihl = ((d[14] & 15) * 4) as usize;
        let ports = [u16::from_be_bytes([d[14 + ihl], d[15 + ihl]]), u16::from_be_bytes([d[16 + ihl], d[17 + ihl]])];
        if !ports.contains(&5060) {
            continue;
        }
        w.extend_from_slice(&((f.ts / 1_000_000_000) as u32).to_le_bytes());
        w.extend_from_slice(&((f.ts % 1_000_000_000 / 1000) as u32).to_le_bytes());
        w.extend_from_slice(&(d.len() as u32).to_le_bytes());
        w.extend_from_slice(&(d.len() as u32).to_le_bytes());
        w.extend_from_slice(d);
    }
    std::fs::write(out, w).unwrap();
}

/// The SIP messages of a capture as the SBC's sets: received (258/260) when sent to the proxy, else sent
/// (259/261, with the Call-ID).
fn sets(cap: &Path) -> Vec<Vec<u8>> {
    let mut ports = Box::new([false; 65536]);
    ports[5060] = true;
    let mut d = Decoder::new(DecoderConfig {
        sip_ports: ports,
        keep_frames: false,
        gtp_port: 0,
        hep_port: 0,
        vxlan_port: 0,
        tzsp_port: 0,
        l2tp_port: 0,
        audiocodes_port: 0,
    });
    let mut out = Vec::new();
    for f in CaptureFile::open(cap).unwrap().frames() {
        d.decode(f.ts, f.link_type, f.data, &mut |dg| {
            if dg.sport != 5060 && dg.dport != 5060 {
                return;
            }
            let (IpAddr::V4(src), IpAddr::V4(dst)) = (dg.src, dg.dst) else { panic!("IPv4 only") };
            let received = dst.octets()[1] == 0; // the proxy is 10.0.0.1
            let tcp = dg.transport == Transport::Tcp;
            let set = match (tcp, received) {
                (false, true) => 258,
                (false, false) => 259,
                (true, true) => 260,
                (true, false) => 261,
            };
            let callid = b"0123456789@sbc";
            let mut b = Vec::new();
            b.extend_from_slice(&((dg.ts / 1_000_000_000) as u32).to_be_bytes());
            b.extend_from_slice(&((dg.ts % 1_000_000_000 / 1000) as u32).to_be_bytes());
            b.extend_from_slice(&[1, 2, 0, 0]);
            if tcp {
                b.extend_from_slice(&dst.octets());
                b.extend_from_slice(&src.octets());
                b.extend_from_slice(&dg.dport.to_be_bytes());
                b.extend_from_slice(&dg.sport.to_be_bytes());
                b.extend_from_slice(&42u32.to_be_bytes());
                if !received {
                    b.push(callid.len() as u8);
                    b.extend_from_slice(callid);
                }
                b.push(0);
            } else {
                if !received {
                    b.push(callid.len() as u8);
                    b.extend_from_slice(callid);
                }
                b.push(0);
                let iplen = (28 + dg.payload.len()) as u16;
                b.extend_from_slice(&iplen.to_be_bytes());
                b.extend_from_slice(&[0x45, 0]);
                b.extend_from_slice(&iplen.to_be_bytes());
                b.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
                b.extend_from_slice(&src.octets());
                b.extend_from_slice(&dst.octets());
                b.extend_from_slice(&dg.dport.to_be_bytes());
                b.extend_from_slice(&dg.sport.to_be_bytes());
                b.extend_from_slice(&((8 + dg.payload.len()) as u16).to_be_bytes());
            }
            b.extend_from_slice(&(dg.payload.len() as u16).to_be_bytes());
            b.extend_from_slice(dg.payload);
            out.push(ipfix_message(set, &b, out.len() as u32));
        });
    }
    out
}

fn live(dir: &Path, name: &str, msgs: &[Vec<u8>]) -> (Vec<Value>, String) {
    let [port] = free_ports::<1>();
    let conf = write_conf(
        dir,
        &format!("{name}.conf"),
        "spool",
        &format!("ipfix = yes\nipfix_bind_ip = 127.0.0.1\nipfix_bind_port = {port}\n"),
    );
    let run = LiveVoxtap::start(&conf, port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The SBC's handshake comes back as set 257.
    let mut hs = vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0, 9, 0, 1, 9, 2, 1, 3];
    hs.extend_from_slice(b"sbc");
    let hello = ipfix_message(256, &hs, 0);
    s.write_all(&hello).unwrap();
    let mut reply = vec![0; hello.len()];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[16..18], &257u16.to_be_bytes());
    assert_eq!(reply[20..], hello[20..]);
    s.write_all(&msgs.concat()).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(800));
    run.stop()
}

#[test]
fn ipfix_sip_sets_give_the_captures_cdrs() {
    let dir = fresh_dir("ipfix");
    for (name, extra) in [("udp", &[][..]), ("tcp", &["--sip-transport", "tcp"][..])] {
        let base = dir.join(format!("{name}.pcap"));
        let args = [&["--calls", "8", "--cps", "8", "--duration", "1", "--mix", "--seed", "81"][..], extra].concat();
        voxgen(&base, &[&args[..], &["--start", &start_now()]].concat());
        let sip = dir.join(format!("{name}-sip.pcap"));
        sip_only(&base, &sip);
        let expected = sorted_by_callid(run_json(&sip, &[]));
        assert!(expected.len() >= 6);
        let msgs = sets(&base);
        let (cdrs, summary) = live(&dir, name, &msgs);
        assert_eq!(sorted_by_callid(cdrs), expected, "{name}: {summary}");
        assert!(summary.contains(&format!("ipfix_sip_messages={} ", msgs.len())), "{summary}");
        assert!(summary.contains("ipfix_handshakes=1 ") && summary.contains("ipfix_errors=0"), "{summary}");
    }
}

/// An SBC whose clock reads 1970 (no RTC, no NTP): its record times are held one `sender_time_window_s` (a day
/// by default) before the receive time, so its calls are still one CDR each, dated yesterday, not 1970.
#[test]
fn an_sbc_clock_far_off_is_held_near_the_receive_time() {
    let dir = fresh_dir("ipfix-clock");
    let base = dir.join("old.pcap");
    voxgen(&base, &["--calls", "6", "--cps", "6", "--duration", "1", "--seed", "82", "--start", "1000"]);
    let sip = dir.join("old-sip.pcap");
    sip_only(&base, &sip);
    let expected = sorted_by_callid(run_json(&sip, &[]));
    assert!(expected.len() >= 5);
    let (cdrs, summary) = live(&dir, "old", &sets(&base));
    let cdrs = sorted_by_callid(cdrs);
    let ids =
        |v: &[Value]| v.iter().map(|c| (c["callid"].clone(), c["lastSIPresponseNum"].clone())).collect::<Vec<_>>();
    assert_eq!(ids(&cdrs), ids(&expected), "{summary}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for c in &cdrs {
        let t = voxtap::time::parse_rfc3339_utc(c["calldate"].as_str().unwrap()).unwrap() as f64 / 1e9;
        let behind = now - t;
        assert!((86_400.0..=86_430.0).contains(&behind), "calldate {behind:.1} s before now, expected one day: {c}");
    }
}
