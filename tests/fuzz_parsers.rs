//! Property tests over every parser of untrusted bytes: arbitrary input never panics, and structured but
//! hostile input (SIP/SDP/RTP shapes with random fields) is handled. This is the short fuzz run CI does.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use voxtap::config::parse as cfg;
use voxtap::decode::tcp::{FlowKey, TcpReassembler};
use voxtap::decode::{Decoder, DecoderConfig};
use voxtap::rtp::{header, rtcp};
use voxtap::sip::{framing, msg, sdp};

fn decoder() -> Decoder {
    let mut ports = Box::new([false; 65536]);
    ports[5060] = true;
    Decoder::new(DecoderConfig {
        sip_ports: ports,
        keep_frames: true,
        gtp_port: 2152,
        hep_port: 9060,
        vxlan_port: 4789,
        tzsp_port: 37008,
        l2tp_port: 1701,
        audiocodes_port: 925,
    })
}

fn sip_like() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just("INVITE sip:a@b SIP/2.0".to_string()),
        Just("SIP/2.0 200 OK".to_string()),
        Just("BYE sip:x SIP/2.0".to_string()),
        "[A-Z]{1,8} [ -~]{0,20} SIP/2.0",
        "SIP/2.0 [0-9]{1,4} [ -~]{0,10}",
    ];
    let header = prop_oneof![
        "Call-ID: [ -~]{0,30}",
        "i:[ -~]{0,10}",
        "CSeq: [0-9 ]{0,12}[A-Z]{0,8}",
        "From: [ -~]{0,40}",
        "t: <sip:[ -~]{0,20}>;tag=[a-z]{0,5}",
        "Content-Length: [0-9]{0,25}",
        "Content-Type: (application/sdp|multipart/mixed;boundary=[a-z]{1,4})",
        "Reason: [ -~]{0,30}",
        " [ -~]{0,10}",
    ];
    let sdp_line = prop_oneof![
        "c=IN IP[46] [0-9a-f.:]{0,20}",
        "m=(audio|video|image) [0-9/]{0,8} [A-Z/]{0,10}( [0-9]{1,4}){0,5}",
        "a=rtpmap:[0-9]{0,4} [a-zA-Z0-9-]{0,10}/[0-9]{0,6}",
        "a=rtcp:[0-9]{0,6}( IN IP4 [0-9.]{0,15})?",
        "a=(rtcp-mux|sendonly|inactive|ptime:[0-9.]{0,4})",
        "o=[ -~]{0,20}",
        "--[a-z]{1,4}",
        "[ -~]{0,20}",
    ];
    (start, prop::collection::vec(header, 0..10), prop::collection::vec(sdp_line, 0..12)).prop_map(|(s, h, b)| {
        let mut out = s.into_bytes();
        for x in h {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(x.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\nv=0");
        for x in b {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(x.as_bytes());
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn sip_and_sdp_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = msg::parse(&b);
        let _ = msg::find_call_id(&b);
        let _ = framing::frame(&b);
        let s = sdp::parse(&b);
        let _ = sdp::announced(&s);
        let _ = sdp::sdp_part(b"multipart/mixed; boundary=\"x\"", &b);
    }

    #[test]
    fn hostile_sip_shapes(b in sip_like()) {
        if let Ok(m) = msg::parse(&b) {
            prop_assert!(!m.h.call_id.is_empty());
            if let Some(text) = sdp::sdp_part(m.h.content_type, m.body) {
                let s = sdp::parse(text);
                for a in sdp::announced(&s) {
                    prop_assert!(a.port != 0);
                }
            }
        }
        let _ = framing::frame(&b);
    }

    #[test]
    fn rtp_and_rtcp_never_panic(b in prop::collection::vec(any::<u8>(), 0..200), wire in 0usize..400, last in any::<u8>()) {
        if let Some(h) = header::parse(&b) {
            prop_assert!(h.payload_offset + h.payload_len <= b.len());
        }
        if let Some(h) = header::parse_prefix(&b, wire, last) {
            prop_assert!(h.payload_offset + h.payload_len <= wire);
        }
        let _ = rtcp::parse(&b);
    }

    #[test]
    fn decoder_never_panics(frames in prop::collection::vec((prop::sample::select(vec![0u16, 1, 12, 101, 108, 113, 228, 229, 276]), prop::collection::vec(any::<u8>(), 0..300)), 1..40)) {
        let mut d = decoder();
        let mut n = 0u64;
        for (i, (link, data)) in frames.iter().enumerate() {
            d.decode(i as i64 * 1_000_000, *link, data, &mut |_| n += 1);
        }
        prop_assert_eq!(d.stats.frames, frames.len() as u64);
    }

    #[test]
    fn decoder_on_mutated_valid_frames(flips in prop::collection::vec((0usize..120, any::<u8>()), 0..12), proto in prop::sample::select(vec![6u8, 17, 4, 41, 47, 132, 44])) {
        // Ethernet + IPv4 + UDP/TCP/tunnel header with random corruption.
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x20, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let mut l4 = vec![0x13, 0xc4, 0x13, 0xc4, 0, 60, 0, 0];
        l4.extend_from_slice(&[0x50, 0x18, 0, 0, 0, 0, 0, 0]);
        l4.extend_from_slice(b"INVITE sip:a SIP/2.0\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\nl: 3\r\n\r\nabc");
        let total = (ip.len() + l4.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        for (i, v) in flips {
            let i = i % f.len();
            f[i] = v;
        }
        let mut d = decoder();
        d.decode(0, 1, &f, &mut |_| {});
        d.decode(1, 1, &f, &mut |_| {});
    }

    #[test]
    fn tunnels_on_their_ports_never_panic(
        port in prop::sample::select(vec![4789u16, 37008, 1701, 2152, 9060, 925]),
        gre_proto in prop::sample::select(vec![0x88beu16, 0x22eb, 0x6558, 0x880b, 0x0800, 0x86dd, 0x8847]),
        gre_flags in any::<u8>(),
        head in prop::sample::select(vec![&b""[..], b"\x08\0\0\0", b"\x01\0\0\x01", b"\x4a\x02", b"\x34\xff", b"HEP3", b"\x02\x10\x02\x11", b"\x05\0\0\0\x01\0\x02"]),
        body in prop::collection::vec(any::<u8>(), 0..200),
        nested in any::<bool>(),
    ) {
        // UDP to an encapsulation port, and GRE with each payload type, carrying random bytes behind a plausible
        // start; `nested` puts a second copy of the frame inside the first.
        let mut payload = head.to_vec();
        payload.extend_from_slice(&body);
        let udp = |p: &[u8]| {
            let mut u = vec![0x30, 0x39];
            u.extend_from_slice(&port.to_be_bytes());
            u.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(p);
            u
        };
        let ip = |proto: u8, p: &[u8]| {
            let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
            let total = (20 + p.len()) as u16;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h.extend_from_slice(p);
            h
        };
        let eth = |p: &[u8]| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(p);
            f
        };
        let mut gre = vec![gre_flags & 0xb0, 0];
        gre.extend_from_slice(&gre_proto.to_be_bytes());
        gre.extend_from_slice(&payload);
        let mut d = decoder();
        for inner in [ip(17, &udp(&payload)), ip(47, &gre)] {
            let frame = if nested { eth(&ip(17, &udp(&[&[0x08, 0, 0, 0, 0, 0, 0, 0][..], &eth(&inner)].concat()))) } else { eth(&inner) };
            d.decode(0, 1, &frame, &mut |_| {});
        }
        let _ = voxtap::decode::hep::parse(&payload);
        let _ = voxtap::decode::tunnel::tzsp(&payload);
        let _ = voxtap::decode::tunnel::l2tp(&payload);
        let _ = voxtap::decode::tunnel::acdr(&payload);
        let _ = voxtap::decode::tunnel::erspan(gre_proto, nested, &payload);
        // An IPFIX message of each SIP set kind with this body.
        for set in [256u16, 258, 259, 260, 261, 268] {
            let mut m = vec![0, 10, 0, 0];
            m.extend_from_slice(&[0; 12]);
            m.extend_from_slice(&set.to_be_bytes());
            m.extend_from_slice(&((4 + payload.len()) as u16).to_be_bytes());
            m.extend_from_slice(&payload);
            let n = m.len() as u16;
            m[2..4].copy_from_slice(&n.to_be_bytes());
            let _ = voxtap::capture::ipfix::parse(&m);
            let _ = voxtap::capture::ipfix::parse(&m[..m.len().min(20 + payload.len() / 2)]);
        }
    }

    #[test]
    fn tcp_reassembly_bounded(segs in prop::collection::vec((any::<u16>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 0..60)) {
        let mut r = TcpReassembler::new(true);
        let key = FlowKey { src: IpAddr::V4(Ipv4Addr::LOCALHOST), dst: IpAddr::V4(Ipv4Addr::BROADCAST), sport: 5060, dport: 5060 };
        let mut out = Vec::new();
        for (i, (seq, flags, data)) in segs.iter().enumerate() {
            r.segment(i as i64, key, *seq as u32 * 7, *flags, data, (1, data), &mut out);
        }
        prop_assert!(r.flows() <= 1);
    }

    #[test]
    fn config_lines_never_panic(text in "[ -~\t\n#;=\\[\\]]{0,400}") {
        let (entries, _) = cfg::parse_text(std::path::Path::new("fuzz.conf"), &text);
        for e in entries {
            let _ = cfg::ports(&e.value);
            let _ = cfg::flag(&e.value);
        }
    }

    #[test]
    fn link_batches_never_panic(items in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20), cut in any::<usize>(), junk in prop::collection::vec(any::<u8>(), 0..80)) {
        use voxtap::link::msg as lm;
        // A well-formed batch, the same cut anywhere, and raw junk: errors, never a panic.
        let refs: Vec<&[u8]> = items.iter().map(|i| i.as_slice()).collect();
        let z = lm::pack(&refs);
        let raw = lm::inflate(&z).unwrap();
        prop_assert_eq!(lm::items(&raw).unwrap().len(), items.len());
        let _ = lm::frames(&raw);
        let c = cut % (raw.len() + 1);
        let _ = lm::items(&raw[..c]);
        let _ = lm::frames(&raw[..c]);
        let _ = lm::inflate(&z[..cut % (z.len() + 1)]);
        let _ = lm::read_pos(&junk);
        let _ = lm::inflate(&junk);
        let _ = lm::frames(&junk);
    }

    #[test]
    fn mirror_blocks_never_panic(frames in prop::collection::vec((any::<i64>(), prop::collection::vec(any::<u8>(), 0..80)), 0..12), flip in any::<usize>(), junk in prop::collection::vec(any::<u8>(), 0..200)) {
        use voxtap::link::mirror::{decode_body, encode_block, BlockHead};
        let refs: Vec<(i64, &[u8])> = frames.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        let b = encode_block(&refs, 1, 3, 9, true);
        let head = BlockHead::parse(&b).unwrap();
        prop_assert_eq!(decode_body(&head, b[64..].to_vec()).unwrap().frames.len(), frames.len());
        // Any flipped byte of the body: an error or (a flip the 16-bit sum misses) frames; never a panic.
        let mut bad = b.clone();
        let i = 64 + flip % (bad.len() - 63).max(1);
        if i < bad.len() {
            bad[i] ^= 0xa5;
        }
        let _ = decode_body(&head, bad[64..].to_vec());
        // Junk as a header and a body.
        let mut h = b[..64].to_vec();
        h[28..32].copy_from_slice(&(junk.len() as u32 / 4).to_le_bytes());
        if let Ok(hd) = BlockHead::parse(&h) {
            let _ = decode_body(&hd, junk.clone());
        }
        let _ = BlockHead::parse(&junk);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A stranger's first bytes on the central's port: the handshake ends with an error, never a panic or a hang.
    #[test]
    fn link_handshake_rejects_junk(first in prop::collection::vec(any::<u8>(), 0..64), len in 0u32..20_000) {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let failed = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(&first);
            c.write_all(&frame).await.unwrap();
            c.shutdown().await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            let secret = |_: Option<u16>| Some("pw".to_string());
            voxtap::link::secure::accept(s, &secret, &|| {}, 0).await.is_err()
        });
        prop_assert!(failed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// CDR JSON from the queue or from a remote sensor → database rows: junk is refused without a panic, and any
    /// text or number in a CDR gives rows with exactly their columns, the text cut to 255 characters and back
    /// unchanged through LOAD DATA's escaping.
    #[test]
    fn cdr_rows_keep_their_columns(
        name in "\\PC{0,300}",
        ua in "[\\x00-\\x7f]{0,40}",
        nums in prop::collection::vec(prop::num::f64::ANY, 6),
        ipv6 in any::<bool>(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        use voxtap::store::mysql::row::{cdr_columns, from_json, Dict, RTP_COLUMNS};
        use voxtap::store::mysql::schema::Shape;
        use voxtap::store::mysql::tsv;
        let shape = Shape { ipv6, ms: nums[0] > 0.0, partition: true };
        let _ = from_json(&String::from_utf8_lossy(&junk), &shape, true);
        let n = |x: f64| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null };
        let cdr = serde_json::json!({
            "callid": name, "calldate": "2026-11-27T01:02:03.456789Z", "callend": "2026-11-27T01:03:03Z",
            "callername": name, "caller": name, "a_ua": ua, "lastSIPresponse": name,
            "duration": n(nums[1]), "a_lost": n(nums[2]), "sipcallerport": n(nums[3]),
            "sipcallerip": "10.0.0.1", "proxies": ["2001:db8::1", name],
            "rtp": [{"saddr": "fe80::1", "received": n(nums[4]), "maxjitter": n(nums[5]), "sender": name}],
        });
        let row = from_json(&cdr.to_string(), &shape, true).expect("a CDR with every required field");
        let mut line = Vec::new();
        row.cdr_line(|d| matches!(d, Dict::Ua(_)).then_some(3), &mut line);
        let v = tsv::values(&line);
        let cols = cdr_columns();
        prop_assert_eq!(v.len(), cols.len());
        let cut: String = name.chars().take(255).collect();
        let at = |c: &str| v[cols.iter().position(|x| x == c).expect("column")].clone();
        prop_assert_eq!(at("callername"), mysql_async::Value::Bytes(cut.clone().into_bytes()));
        prop_assert_eq!(at("caller_reverse"), mysql_async::Value::Bytes(cut.chars().rev().collect::<String>().into_bytes()));
        prop_assert_eq!(row.fbasename.clone(), cut);
        let lines: Vec<&[u8]> = row.rtp.split(|&c| c == b'\n').filter(|l| !l.is_empty()).collect();
        prop_assert_eq!(lines.len(), 1);
        prop_assert_eq!(tsv::values(lines[0]).len(), RTP_COLUMNS.len());
        prop_assert!(row.proxies.iter().filter(|&&c| c == b'\n').count() <= 1);
    }
}
