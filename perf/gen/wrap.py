#!/usr/bin/env python3
"""wrap - re-encapsulate every frame of a pcap the way a switch, a cloud or a probe would deliver it.

    python3 perf/gen/wrap.py IN.pcap OUT.pcap --wrap vlan,mpls,erspan2,vxlan

--wrap lists the layers outermost first, like a protocol stack read left to right: the example above gives
Ethernet / 802.1Q / MPLS / IPv4 / GRE / ERSPAN II / Ethernet / IPv4 / UDP 4789 / VXLAN / <original frame>.

Layers that carry an Ethernet frame: vxlan, gre-teb, erspan1, erspan2, erspan3 (with the platform sub-header),
tzsp (with tagged fields); vlan, qinq and mpls add tags to the Ethernet frame they are given. Layers that carry
an IP packet: gre (checksum, key and sequence fields), gre-mpls, gre-ppp, ipip (IPv4 in IPv4, IPv6 in IPv6 as the inner
packet is; ip6 outer with --outer6), l2tp (L2TPv2 with length, sequence and offset fields, PPP), gtp (GTP-U with
an extension header). hep3, hep3z (compressed payload) and hep2 replace each UDP datagram of the original by a HEP
packet describing it (addresses, ports, the original time), sent from a capture agent 2 ms later. acdr replaces
each IPv4/UDP datagram by an AudioCodes debug recording (v0.5) sent by the device to UDP 925: SIP with its IP
header, RTP and RTCP bare with the far end in the header extension.

Input: Ethernet (link type 1) or raw IP (101) pcap, microsecond or nanosecond. Output: Ethernet pcap, same
timestamps (HEP: 2 ms later). Python 3 standard library only.
"""

import argparse
import gzip
import struct
import sys

ETH_IP4, ETH_IP6 = 0x0800, 0x86DD
OUTER4 = (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))          # tunnel endpoints (TEST-NET-1)
OUTER6 = (bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002"))


def csum(data):
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(payload, et):
    return bytes.fromhex("020000000002020000000001") + struct.pack(">H", et) + payload


def ip_version(pkt):
    return pkt[0] >> 4


def outer_ip(payload, proto, v6, ident, src=None):
    if v6:
        return struct.pack(">IHBB16s16s", 0x60000000, len(payload), proto, 64, *OUTER6) + payload
    h = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0,
                              src or OUTER4[0], OUTER4[1]))
    struct.pack_into(">H", h, 10, csum(bytes(h)))
    return bytes(h) + payload


def outer_udp(payload, sport, dport, v6, ident):
    # Checksum 0 (allowed over IPv4; over IPv6 tunnels commonly send it so too, RFC 6935).
    return outer_ip(struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload, 17, v6, ident)


def split_eth(frame):
    """(ethertype, payload) of an Ethernet frame, skipping VLAN tags."""
    et, off = struct.unpack_from(">H", frame, 12)[0], 14
    while et in (0x8100, 0x88A8):
        et, off = struct.unpack_from(">H", frame, off + 2)[0], off + 4
    return et, frame[off:]


def as_eth(kind, pkt):
    return pkt if kind == "eth" else eth(pkt, ETH_IP6 if ip_version(pkt) == 6 else ETH_IP4)


def as_ip(kind, pkt):
    if kind == "ip":
        return pkt
    et, rest = split_eth(pkt)
    if et not in (ETH_IP4, ETH_IP6):
        return None
    return rest


def gre(proto, body, flags=0, key=None, seq=None, checksum=False):
    h = struct.pack(">BBH", (0x80 if checksum else 0) | (0x20 if key is not None else 0)
                    | (0x10 if seq is not None else 0) | flags, 0, proto)
    opt = b""
    if checksum:
        opt += b"\0\0\0\0"
    if key is not None:
        opt += struct.pack(">I", key)
    if seq is not None:
        opt += struct.pack(">I", seq)
    pkt = bytearray(h + opt + body)
    if checksum:
        struct.pack_into(">H", pkt, 4, csum(bytes(pkt)))
    return bytes(pkt)


def layer(name, kind, pkt, n, a):
    """Applies one layer; returns (kind, packet) or None to drop the frame (a layer that cannot carry it)."""
    v6 = a.outer6
    if name in ("vlan", "qinq", "mpls"):
        f = as_eth(kind, pkt)
        et, rest = struct.unpack_from(">H", f, 12)[0], f[14:]
        if name == "vlan":
            return "eth", f[:12] + struct.pack(">HHH", 0x8100, 100, et) + rest
        if name == "qinq":
            return "eth", f[:12] + struct.pack(">HHHHH", 0x88A8, 200, 0x8100, 300, et) + rest
        ip = as_ip("eth", f)
        if ip is None:
            return None
        # Two labels, the bottom one with the S bit; the IP version nibble tells the payload.
        return "eth", f[:12] + struct.pack(">HII", 0x8847, (16 << 12) | 64, (17 << 12) | 0x100 | 64) + ip
    if name in ("vxlan", "gre-teb", "erspan1", "erspan2", "erspan3", "tzsp"):
        f = as_eth(kind, pkt)
        if name == "vxlan":
            return "ip", outer_udp(struct.pack(">BxxxI", 0x08, 4242 << 8) + f, 49152 + n % 1000, a.vxlan_port, v6, n)
        if name == "gre-teb":
            return "ip", outer_ip(gre(0x6558, f, key=7), 47, v6, n)
        if name == "erspan1":
            return "ip", outer_ip(gre(0x88BE, f), 47, v6, n)
        if name == "erspan2":
            hdr = struct.pack(">HHI", 0x1000 | 100, 0x0000 | 5, 0)     # version 1, VLAN 100; session 5; index 0
            return "ip", outer_ip(gre(0x88BE, hdr + f, seq=n), 47, v6, n)
        if name == "erspan3":
            hdr = struct.pack(">HHIHBB", 0x2000 | 100, 5, n * 1000, 0, 0, 0x01)   # ver 2, O flag in byte 11
            platform = struct.pack(">II", 3 << 26, n)                             # platform id 3, timestamp
            return "ip", outer_ip(gre(0x22EB, hdr + platform + f, seq=n), 47, v6, n)
        # TZSP: received, Ethernet; a padding byte, an RX-channel tag (0x12), then END.
        tz = struct.pack(">BBH", 1, 0, 1) + b"\x00" + bytes([0x12, 1, 6]) + b"\x01"
        return "ip", outer_udp(tz + f, 37008, a.tzsp_port, v6, n)
    ip = as_ip(kind, pkt)
    if ip is None:
        return None
    inner6 = ip_version(ip) == 6
    if name == "gre":
        return "ip", outer_ip(gre(ETH_IP6 if inner6 else ETH_IP4, ip, key=9, seq=n, checksum=True), 47, v6, n)
    if name == "gre-mpls":
        # One MPLS label (bottom of stack) over GRE; the IP version nibble tells the payload.
        return "ip", outer_ip(gre(0x8847, struct.pack(">I", (18 << 12) | 0x100 | 64) + ip, key=5), 47, v6, n)
    if name == "gre-ppp":
        return "ip", outer_ip(gre(0x880B, b"\xff\x03" + struct.pack(">H", 0x57 if inner6 else 0x21) + ip, seq=n),
                              47, v6, n)
    if name == "ipip":
        return "ip", outer_ip(ip, 41 if inner6 else 4, v6, n)
    if name == "l2tp":
        # T=0 L=1 S=1 O=1, version 2; tunnel 1, session 2; Ns, Nr; offset 2 + 2 pad bytes; PPP with a compressed
        # protocol field for IPv4, address/control + 2-byte protocol for IPv6.
        ppp = (b"\xff\x03\x00\x57" if inner6 else b"\x21") + ip
        body = struct.pack(">HHHHHHHH", 0x4A02, 0, 1, 2, n & 0xFFFF, 0, 2, 0) + ppp
        body = body[:2] + struct.pack(">H", len(body)) + body[4:]
        return "ip", outer_udp(body, 1701, a.l2tp_port, v6, n)
    if name == "gtp":
        # Version 1, PT, E flag; G-PDU; length; TEID; sequence, N-PDU, next ext 0x85 (PDU session container).
        ext = bytes([1, 0x00, 0x09, 0x00])          # length 1 (4 bytes), content, next = none
        body = struct.pack(">BBHIHBB", 0x34, 0xFF, 4 + len(ext) + len(ip), 0x1234, n & 0xFFFF, 0, 0x85) + ext + ip
        return "ip", outer_udp(body, 2152, 2152, v6, n)
    raise SystemExit(f"wrap: unknown layer {name}")


def acdr_packet(ip, n, ts_us):
    """An AudioCodes debug recording (version 0.5) of an IPv4/UDP packet, and the device address it comes from:
    SIP with its IP header added; RTP/RTCP bare, the far end in the header extension, alternately recorded towards
    the network (Dsp2Net) and towards the device (Net2Dsp)."""
    if ip_version(ip) != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 15) * 4
    src, dst = ip[12:16], ip[16:20]
    sport, dport, ulen = struct.unpack_from(">HHH", ip, ihl)
    payload = ip[ihl + 8:ihl + ulen]
    if 5060 in (sport, dport):
        flags, tp, media, ext, body, device = 0x08, 6, 10, b"", ip, src
    else:
        media = 2 if (sport | dport) & 1 else 1
        if n % 2:
            tp, ext, device = 1, dst + struct.pack(">HHB", dport, sport, 0), src      # Dsp2Net: far end = dst
        else:
            tp, ext, device = 0, src + struct.pack(">HHB", sport, dport, 0), dst      # Net2Dsp: far end = src
        flags, body = 0, payload
    hdr = struct.pack(">BIHHHBBBBI", 0x05, ts_us & 0xFFFFFFFF, n & 0xFFFF, 1, 2, flags, tp, media, len(ext), n)
    return hdr + ext + body, device


def hep_packet(version, ip, ts_us, compress):
    """A HEP packet for an IP/UDP datagram, or None when it is not UDP."""
    v6 = ip_version(ip) == 6
    if v6:
        if ip[6] != 17:
            return None
        src, dst, l4 = ip[8:24], ip[24:40], ip[40:]
    else:
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17 or struct.unpack_from(">H", ip, 6)[0] & 0x3FFF:
            return None                      # not UDP, or a fragment
        src, dst, l4 = ip[12:16], ip[16:20], ip[ihl:]
    sport, dport, ulen = struct.unpack_from(">HHH", l4)
    payload = l4[8:ulen]
    sec, usec = divmod(ts_us, 1_000_000)
    if version == 2:
        hdr = struct.pack(">BBBBHH", 2, 8 + 2 * len(src), 10 if v6 else 2, 17, sport, dport) + src + dst
        return hdr + struct.pack("<IIHxx", sec, usec, 77) + payload

    def chunk(t, data):
        return struct.pack(">HHH", 0, t, 6 + len(data)) + data

    body = (chunk(1, bytes([10 if v6 else 2])) + chunk(2, bytes([17]))
            + chunk(5 if v6 else 3, src) + chunk(6 if v6 else 4, dst)
            + chunk(7, struct.pack(">H", sport)) + chunk(8, struct.pack(">H", dport))
            + chunk(9, struct.pack(">I", sec)) + chunk(10, struct.pack(">I", usec))
            + chunk(11, bytes([1])) + chunk(12, struct.pack(">I", 2001)))
    body += chunk(16, gzip.compress(payload, mtime=0)) if compress else chunk(15, payload)
    return b"HEP3" + struct.pack(">H", 6 + len(body)) + body


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--wrap", required=True, help="layers, outermost first")
    p.add_argument("--outer6", action="store_true", help="IPv6 tunnel endpoints")
    p.add_argument("--vxlan-port", type=int, default=4789)
    p.add_argument("--tzsp-port", type=int, default=37008)
    p.add_argument("--l2tp-port", type=int, default=1701)
    p.add_argument("--hep-port", type=int, default=9060)
    p.add_argument("--acdr-port", type=int, default=925)
    a = p.parse_args(argv)
    layers = [x.strip() for x in a.wrap.split(",") if x.strip()]
    hep = [x for x in layers if x.startswith("hep") or x == "acdr"]
    if hep and len(layers) > 1:
        p.error("a hep or acdr layer replaces the packets: use it alone")
    data = open(a.input, "rb").read()
    magic = struct.unpack_from("<I", data)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        p.error("input must be a little-endian pcap (not pcapng)")
    nano = magic == 0xA1B23C4D
    lt = struct.unpack_from("<I", data, 20)[0]
    if lt not in (1, 101):
        p.error("input link type must be Ethernet (1) or raw IP (101)")
    out = [data[:20] + struct.pack("<I", 1)]
    off, n, kept, dropped = 24, 0, 0, 0
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, off)
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        n += 1
        kind = "eth" if lt == 1 else "ip"
        if hep == ["acdr"]:
            ip = as_ip(kind, pkt)
            r = acdr_packet(ip, n, sec * 1_000_000 + (frac // 1000 if nano else frac)) if ip else None
            if r is None:
                dropped += 1
                continue
            body, device = r
            udp = struct.pack(">HHHH", 925, a.acdr_port, 8 + len(body), 0) + body
            res = ("ip", outer_ip(udp, 17, False, n, device))
        elif hep:
            ip = as_ip(kind, pkt)
            h = hep_packet(2 if hep[0] == "hep2" else 3, ip, sec * 1_000_000 + (frac // 1000 if nano else frac),
                           hep[0] == "hep3z") if ip else None
            if h is None:
                dropped += 1
                continue
            res = ("ip", outer_udp(h, 40000 + n % 1000, a.hep_port, a.outer6, n))
            delay = 2_000_000 if nano else 2000
            frac += delay
            unit = 1_000_000_000 if nano else 1_000_000
            sec, frac = sec + frac // unit, frac % unit
        else:
            res = (kind, pkt)
            for name in reversed(layers):
                res = layer(name, res[0], res[1], n, a)
                if res is None:
                    break
            if res is None:
                dropped += 1
                continue
        f = as_eth(*res) if res[0] == "ip" else res[1]
        out.append(struct.pack("<IIII", sec, frac, len(f), len(f)) + f)
        kept += 1
    open(a.output, "wb").write(b"".join(out))
    print(f"wrap: {kept} frames wrapped as {a.wrap}, {dropped} dropped -> {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
