//! Encapsulations: every corpus capture with a tunnel decodes, frame by frame, to the innermost addresses, ports
//! and payload lengths tshark shows; generated calls wrapped in each encapsulation (and nested ones) give the
//! same CDRs as unwrapped; HEP gives the addresses and times it carries.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use voxtap::capture::pcapfile::CaptureFile;
use voxtap::decode::{Decoder, DecoderConfig, Inner};

fn decoder(tzsp_port: u16) -> Decoder {
    let mut ports = Box::new([false; 65536]);
    for p in [5060, 5061, 5062, 5070, 5080, 6060, 8080] {
        ports[p] = true;
    }
    Decoder::new(DecoderConfig {
        sip_ports: ports,
        keep_frames: false,
        gtp_port: 2152,
        hep_port: 9060,
        vxlan_port: 4789,
        tzsp_port,
        l2tp_port: 1701,
        audiocodes_port: 925,
    })
}

/// voxtap's innermost transport header per frame (frame numbers from 1), and its datagrams' (src, sport, dst,
/// dport) per frame.
type Decoded = (Vec<Option<Inner>>, HashMap<usize, Vec<(IpAddr, u16, IpAddr, u16, Vec<u8>)>>);

fn decode_file(p: &Path, tzsp_port: u16) -> Decoded {
    let mut d = decoder(tzsp_port);
    let mut inner = Vec::new();
    let mut out: HashMap<usize, Vec<_>> = HashMap::new();
    let cap = CaptureFile::open(p).expect("open capture");
    for (i, f) in cap.frames().enumerate() {
        let mut got = Vec::new();
        d.decode(f.ts, f.link_type, f.data, &mut |dg| {
            got.push((dg.src, dg.sport, dg.dst, dg.dport, dg.payload.to_vec()))
        });
        inner.push(d.inner);
        if !got.is_empty() {
            out.insert(i + 1, got);
        }
    }
    (inner, out)
}

fn tshark_opts(corpus: &Path, file: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let head: Vec<&str> = manifest.lines().next().unwrap().split('\t').collect();
    let col = head.iter().position(|h| *h == "tshark_options").unwrap();
    let row = manifest.lines().find(|l| l.split('\t').next() == Some(file)).unwrap_or_else(|| panic!("{file}"));
    let o = row.split('\t').nth(col).unwrap_or("-");
    if o == "-" {
        Vec::new()
    } else {
        o.split_whitespace().map(String::from).collect()
    }
}

/// tshark's innermost (src, dst, proto, sport, dport, payload length) per frame, `None` where the innermost IP
/// layer carries no UDP/TCP; frames with ICMP (quoted headers) or malformed ones are left out (`Skip`).
#[derive(Debug, PartialEq)]
enum Shark {
    Skip,
    /// Not IP at all.
    NoIp,
    /// The innermost IP packet carries no UDP/TCP (ICMP, PIM, a fragment…): its addresses, and the protocol
    /// for IPv4.
    Ip(IpAddr, IpAddr, Option<u8>),
    Inner(IpAddr, IpAddr, u8, u16, u16, usize),
}

fn tshark_inner(file: &Path, opts: &[String]) -> Vec<Shark> {
    let fields = [
        "frame.protocols",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "udp.srcport",
        "udp.dstport",
        "udp.length",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.len",
        "_ws.malformed",
        "ip.proto",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(opts).args(["-T", "fields", "-E", "occurrence=l", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split('|').collect();
            let protos: Vec<&str> = v[0].split(':').collect();
            let Some(ipl) = protos.iter().rposition(|p| *p == "ip" || *p == "ipv6") else {
                return Shark::NoIp;
            };
            // An ICMP error quotes an IP header that is not a packet of its own; malformed frames are tshark's
            // guess.
            let quoted = protos.iter().position(|p| p.starts_with("icmp")).is_some_and(|i| i < ipl);
            if quoted || !v[11].is_empty() {
                return Shark::Skip;
            }
            let (src, dst) = if protos[ipl] == "ip" { (v[1], v[2]) } else { (v[3], v[4]) };
            let tl = protos.iter().rposition(|p| *p == "udp" || *p == "tcp");
            let (Ok(src), Ok(dst)) = (src.parse(), dst.parse()) else { return Shark::Skip };
            match tl {
                Some(t) if t > ipl && protos[t] == "udp" => Shark::Inner(
                    src,
                    dst,
                    17,
                    v[5].parse().unwrap(),
                    v[6].parse().unwrap(),
                    v[7].parse::<usize>().unwrap() - 8,
                ),
                Some(t) if t > ipl => {
                    Shark::Inner(src, dst, 6, v[8].parse().unwrap(), v[9].parse().unwrap(), v[10].parse().unwrap())
                }
                _ => Shark::Ip(src, dst, if protos[ipl] == "ip" { v[12].parse().ok() } else { None }),
            }
        })
        .collect()
}

fn tshark_available() -> bool {
    if Command::new("tshark").arg("-v").output().is_ok() {
        return true;
    }
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "tshark is required under CI");
    eprintln!("SKIPPED: tshark is not installed");
    false
}

/// The corpus captures with each wrapping the issue names (and a few more): voxtap's innermost header equals
/// tshark's for every frame tshark decodes to a transport.
#[test]
fn corpus_tunnels_decode_to_tsharks_innermost_fields() {
    let Some(corpus) = corpus_dir() else { return };
    if !tshark_available() {
        return;
    }
    let files = [
        ("heplify_gre_teb_sip.pcapng", 0),
        ("ndpi_gre_ppp_sip.pcapng", 0),
        ("zeek_gre-sample.pcap", 0),
        ("tcpdump_erspan-type-ii-1.pcap", 0),
        ("tcpdump_erspan-type-iii-ft-0.pcap", 0),
        ("zeek_erspanII.pcap", 0),
        ("zeek_erspanIII.pcap", 0),
        ("zeek_vxlan-encapsulated-http.pcap", 0),
        ("arkime_gre-erspan-vxlan.pcap", 0),
        ("lwerdna_simple_http_tzsp.pcapng", 31337),
        ("sngrep_ipip_sip_tcp.pcap", 0),
        ("zeek_4in4.pcap", 0),
        ("heplify_rawip_sip.pcap", 0),
        ("zeek_http-qinq-0.pcap", 0),
        ("tcpdump_802.1ad_QinQ.pcap", 0),
        ("zeek_mpls-in-vlan.pcap", 0),
        ("zeek_linux_dlt_sll2.pcap", 0),
        ("arkime_gtp-iphone_volte.pcap", 0),
    ];
    let mut bad = Vec::new();
    for (name, tzsp) in files {
        let path = corpus.join(name);
        let shark = tshark_inner(&path, &tshark_opts(&corpus, name));
        let (ours, _) = decode_file(&path, if tzsp == 0 { 37008 } else { tzsp });
        assert_eq!(shark.len(), ours.len(), "{name}: frame count");
        let mut compared = 0;
        for (i, (s, o)) in shark.iter().zip(&ours).enumerate() {
            let ours = match (s, o) {
                (Shark::Ip(_, _, p), Some(o)) if o.sport == 0 && o.dport == 0 => {
                    Some(Shark::Ip(o.src, o.dst, p.map(|_| o.proto)))
                }
                (_, Some(o)) => Some(Shark::Inner(o.src, o.dst, o.proto, o.sport, o.dport, o.len)),
                (_, None) => None,
            };
            match (s, ours) {
                (Shark::Skip, _) => {}
                (Shark::NoIp, None) => compared += 1,
                (s, Some(o)) if *s == o => compared += 1,
                (s, o) => bad.push(format!("{name} frame {}: tshark {s:?}, voxtap {o:?}", i + 1)),
            }
        }
        assert!(compared > 0, "{name}: no frame compared");
        eprintln!("{name}: {compared} frames equal");
    }
    assert!(
        bad.is_empty(),
        "{} frames differ:\n{}",
        bad.len(),
        bad.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// HEP in the corpus (no HEP dissector in tshark 4.0: the oracle was made with hep.lua): every SIP message the
/// oracle lists comes out of that frame with the HEP addresses and ports; the compressed capture inflates to SIP.
#[test]
fn corpus_hep_gives_the_addresses_it_carries() {
    let Some(corpus) = corpus_dir() else { return };
    let oracle = load_json(&corpus.join("hepws_hep.pcap.oracle.json"));
    let (_, got) = decode_file(&corpus.join("hepws_hep.pcap"), 37008);
    let msgs = oracle["sip_messages"].as_array().unwrap();
    assert!(!msgs.is_empty());
    for m in msgs {
        let frame = m["frame"].as_u64().unwrap() as usize;
        let d = got.get(&frame).unwrap_or_else(|| panic!("frame {frame}: nothing decoded"));
        let want = (
            m["src"].as_str().unwrap().parse::<IpAddr>().unwrap(),
            m["sport"].as_str().unwrap().parse::<u16>().unwrap(),
            m["dst"].as_str().unwrap().parse::<IpAddr>().unwrap(),
            m["dport"].as_str().unwrap().parse::<u16>().unwrap(),
        );
        assert!(d.iter().any(|x| (x.0, x.1, x.2, x.3) == want), "frame {frame}: {want:?} not in {d:?}");
    }
    let path = corpus.join("hepws_hep3_compressed_sll.pcapng");
    let (_, got) = decode_file(&path, 37008);
    let frames = CaptureFile::open(&path).unwrap().frames().count();
    let sip = got
        .values()
        .flatten()
        .filter(|x| x.4.starts_with(b"SIP/2.0") || x.4.windows(8).any(|w| w == b" SIP/2.0"))
        .count();
    assert!(sip > 0 && sip == got.values().flatten().count(), "{sip} SIP of {} datagrams, {frames} frames", got.len());
}

fn wrap(input: &Path, out: &Path, layers: &str, extra: &[&str]) {
    let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/gen/wrap.py");
    let st = Command::new("python3").arg(w).arg(input).arg(out).args(["--wrap", layers]).args(extra).status().unwrap();
    assert!(st.success(), "wrap {layers}");
}

fn run_conf(conf: &Path, cap: &Path) -> (Vec<Value>, String) {
    let out = voxtap().arg("--config-file").arg(conf).arg("-r").arg(cap).arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect(), stderr)
}

fn without(cdrs: &[Value], key: &str) -> Vec<Value> {
    cdrs.iter()
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove(key);
            c
        })
        .collect()
}

fn oracle_calls(cap: &Path) -> Value {
    let corpus = corpus_dir().expect("corpus for oracle.py");
    let out = Command::new("python3").arg(corpus.join("tools/oracle.py")).arg("--file").arg(cap).output().unwrap();
    assert!(out.status.success(), "oracle.py: {}", String::from_utf8_lossy(&out.stderr));
    let o = load_json(&PathBuf::from(format!("{}.oracle.json", cap.display())));
    let strip = |v: &Value| {
        let mut calls = v["calls"].clone();
        for c in calls.as_array_mut().unwrap() {
            c.as_object_mut().unwrap().retain(|k, _| !k.contains("time") && !k.contains("frame"));
        }
        calls
    };
    strip(&o)
}

/// Generated calls (SIP over UDP with RTP and RTCP, and IPv6 with SIP over TCP) wrapped in every encapsulation
/// and in nested ones: the CDRs equal those of the unwrapped capture, but for `vlan` where an outer VLAN tag was
/// added. tshark's oracle finds the same calls in each wrapped file as in the plain one.
#[test]
fn wrapped_generated_calls_give_the_same_cdrs() {
    let dir = fresh_dir("tun-wrap");
    let conf = write_conf(&dir, "v.conf", "spool", "udp_port_tzsp = 31337\n");
    let oracle = corpus_dir().is_some() && tshark_available();
    for (base_name, args) in [
        ("v4udp", &["--calls", "8", "--cps", "4", "--duration", "2", "--mix", "--rtcp", "--dtmf", "--seed", "61"][..]),
        (
            "v6tcp",
            &["--calls", "4", "--cps", "4", "--duration", "2", "--ipv6", "--sip-transport", "tcp", "--seed", "62"],
        ),
    ] {
        let base = dir.join(format!("{base_name}.pcap"));
        voxgen(&base, args);
        let (plain, _) = run_conf(&conf, &base);
        assert!(plain.len() >= 4);
        let plain_calls = oracle.then(|| oracle_calls(&base));
        let wrappings: &[(&str, &[&str], Option<u64>)] = &[
            ("vxlan", &[], None),
            ("gre-teb", &[], None),
            ("erspan1", &[], None),
            ("erspan2", &[], None),
            ("erspan3", &["--outer6"], None),
            ("tzsp", &["--tzsp-port", "31337"], None),
            ("gre", &[], None),
            ("gre-ppp", &["--outer6"], None),
            ("gre-mpls", &[], None),
            ("ipip", &[], None),
            ("l2tp", &[], None),
            ("gtp", &[], None),
            ("vlan,mpls,erspan2,vxlan", &[], Some(100)),
            ("vxlan,gre", &[], None),
            ("qinq,l2tp", &[], Some(200)),
            ("ipip,gtp,gre-teb", &["--outer6"], None),
        ];
        for (layers, extra, vlan) in wrappings {
            let w = dir.join(format!("{base_name}-{}.pcap", layers.replace(',', "_")));
            wrap(&base, &w, layers, extra);
            let (cdrs, summary) = run_conf(&conf, &w);
            assert_eq!(without(&cdrs, "vlan"), without(&plain, "vlan"), "{base_name} in {layers}: CDRs differ");
            for c in &cdrs {
                assert_eq!(c["vlan"].as_u64(), *vlan, "{base_name} in {layers}: vlan");
            }
            assert!(summary.contains(" tunnels="), "{layers}: {summary}");
            let tunnel_errors =
                summary.split_whitespace().any(|kv| kv.starts_with("tunnel_") && kv.contains("_errors="));
            assert!(!tunnel_errors, "{layers}: {summary}");
            // tshark reads the TZSP file on the standard port only; the rest it finds by itself.
            if let (Some(p), false) = (&plain_calls, layers.contains("tzsp")) {
                assert_eq!(&oracle_calls(&w), p, "{base_name} in {layers}: tshark's calls differ");
            }
        }
    }
}

/// HEP v3, compressed HEP v3 and HEP v2 replace each UDP datagram (SIP, RTP, RTCP) by a HEP packet sent 2 ms
/// later from an agent: the CDRs carry HEP's addresses and times, so they equal the original capture's.
#[test]
fn hep_wrapped_calls_use_hep_addresses_and_times() {
    let dir = fresh_dir("tun-hep");
    let conf = write_conf(&dir, "v.conf", "spool", "");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "6", "--cps", "3", "--duration", "2", "--mix", "--rtcp", "--seed", "63"]);
    let (plain, _) = run_conf(&conf, &base);
    for layer in ["hep3", "hep3z", "hep2"] {
        let w = dir.join(format!("{layer}.pcap"));
        wrap(&base, &w, layer, &[]);
        let (cdrs, summary) = run_conf(&conf, &w);
        assert_eq!(cdrs, plain, "{layer}: CDRs differ");
        assert!(summary.contains("tunnel_hep="), "{summary}");
        assert!(!summary.contains("tunnel_hep_errors") && !summary.contains("tunnel_hep_unsupported"), "{summary}");
    }
    // Another UDP port for HEP: nothing is HEP any more.
    let conf2 = write_conf(&dir, "v2.conf", "spool", "udp_port_hep = 9999\n");
    let (cdrs, _) = run_conf(&conf2, &dir.join("hep3.pcap"));
    assert!(cdrs.is_empty());
}

/// AudioCodes debug recordings (`audiocodes = yes`): SIP recorded with its IP header, RTP and RTCP bare with the
/// far end in the header extension, recorded towards the network and towards the device. The CDRs equal the
/// original capture's; tshark's ACDR dissector reads every generated packet without complaint; with the key off,
/// port 925 is ordinary UDP and no call appears.
#[test]
fn audiocodes_recordings_give_the_same_cdrs() {
    let dir = fresh_dir("tun-acdr");
    let base = dir.join("base.pcap");
    voxgen(&base, &["--calls", "8", "--cps", "4", "--duration", "2", "--mix", "--rtcp", "--dtmf", "--seed", "64"]);
    let conf = write_conf(&dir, "v.conf", "spool", "audiocodes = yes\n");
    let (plain, _) = run_conf(&conf, &base);
    let w = dir.join("acdr.pcap");
    wrap(&base, &w, "acdr", &[]);
    let (cdrs, summary) = run_conf(&conf, &w);
    assert_eq!(cdrs, plain, "CDRs differ: {summary}");
    assert!(summary.contains("tunnel_audiocodes="), "{summary}");
    assert!(!summary.contains("tunnel_audiocodes_errors"), "{summary}");
    if tshark_available() {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&w)
            .args(["-d", "udp.port==925,acdr", "-Y", "_ws.malformed || _ws.expert.severity >= error || !acdr"])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let off = write_conf(&dir, "off.conf", "spool", "");
    let (none, _) = run_conf(&off, &w);
    assert!(none.is_empty());
}
