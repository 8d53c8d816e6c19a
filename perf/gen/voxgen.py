#!/usr/bin/env python3
"""voxgen - deterministic generator of SIP calls with RTP, written as pcap or pcapng (Python 3.11, stdlib only).

For voxtap conformance tests (small files, cross-checked with tshark through
/work/shared/corpus/tools/oracle.py and the --truth JSON) and throughput benchmarks (millions of packets).
The same arguments and --seed always give byte-identical output.

Call i (1..N) starts at start + (i-1)/cps.  Caller UA sip:<1000+i>@10.1.(i>>8).(i&255):5060 (IPv6 fd00:1::i)
talks to the proxy 10.0.0.1:5060 (fd00::1); the callee's media is on 10.2.0.(1 + i%200) (fd00:2::...), with an
even RTP port unique among concurrently active calls.  Answered call: INVITE+SDP, 100 (+5 ms), 180 (+50 ms),
200+SDP (+1 s), ACK (+20 ms), RTP both ways from ACK+10 ms for --duration s every --ptime ms, BYE right after
the last RTP packet, 200 (+5 ms).  All packets of all calls are merged in capture-time order.

Options (see --help for defaults):
  -o OUT            output file              --truth J    JSON of what was intended (calls, streams, counts)
  --calls N  --cps R  --duration S  --ptime MS  --codec pcmu|pcma|g729|g722|opus|dyn-speex16
  --loss P          fraction of RTP packets dropped (never the first/last of a stream, never DTMF)
  --burst-loss K    with --loss: P is the probability that a run of K consecutive drops starts
  --reorder P       a packet is swapped with the next one    --dup P   a packet is repeated 50 us later
  --jitter MS       uniform 0..MS extra capture delay per RTP packet (RTP timestamps stay nominal)
  --ipv6            IPv6 everywhere (UDP checksums always computed)
  --sip-transport   udp|tcp: TCP = one connection per caller (3-way handshake, correct seq/ack/checksums)
  --tcp-segment B   split SIP messages into <= B byte segments; sometimes 100+180 share one write;
                    one retransmitted segment per call
  --fragment-mtu B  SIP/UDP datagrams above B bytes are IP-fragmented (IPv4 MF/offset, IPv6 header 44),
                    fragments of about a third of the datagrams in reverse order
  --mix             scenarios per call: answered+BYE (a third hung up by the callee), CANCEL/487, 486 Busy,
                    603 Decline, answered without BYE, re-INVITE moving the callee's RTP port
  --dtmf            RFC 2833 events (PT 101, same SSRC) in the caller stream, 3 end packets with one seq
  --rtcp            RTCP SR+SDES on port+1, 1 s after a stream starts and then every 5 s
  --register N      N REGISTER/401/REGISTER/200 transactions besides the calls
  --linktype        eth|raw|null|sll|sll2    --nanosecond   --pcapng    --seed    --start EPOCH
  --wrap LAYERS     re-encapsulate every frame (VXLAN, GRE, ERSPAN I-III, TZSP, L2TP, GTP-U, IP-in-IP, VLAN,
                    QinQ, MPLS, nested; HEP v2/v3 replace each UDP datagram): see perf/gen/wrap.py

Truth JSON: per call the Call-ID, scenario, users, INVITE addresses, final code, BYE and who sent it, number of
SIP messages, and per RTP stream (a re-INVITE splits each direction into two streams; the callee gets a new SSRC)
saddr/sport/daddr/dport/ssrc, packets (on the wire: with duplicates and DTMF), sent (seq numbers used), dropped,
duplicated, dtmf_packets and lost_rfc3550 = sent - packets, which is what tshark's rtp,streams 'Lost' shows
(duplicates and the 2 repeated DTMF end packets per event make it smaller than 'dropped').  To keep that exact,
the first packet of a stream is captured on time and the last one is delayed by the full --jitter (tshark counts
from the first and last packet it sees), and neither is dropped or reordered.
"""
import argparse
import bisect
import hashlib
import ipaddress
import json
import random
import struct
import sys
import time
from operator import itemgetter

NS, MS, US = 1_000_000_000, 1_000_000, 1_000
M32 = 0xFFFFFFFF
LINKTYPES = {"eth": 1, "raw": 101, "null": 0, "sll": 113, "sll2": 276}
# name: (payload type, rtpmap, RTP clock, payload bytes per 10 ms, telephone-event clock, fmtp)
CODECS = {
    "pcmu": (0, "PCMU/8000", 8000, 80, 8000, None),
    "pcma": (8, "PCMA/8000", 8000, 80, 8000, None),
    "g729": (18, "G729/8000", 8000, 10, 8000, "annexb=no"),
    "g722": (9, "G722/8000", 8000, 80, 8000, None),
    "opus": (111, "opus/48000/2", 48000, 40, 48000, "minptime=10;useinbandfec=1"),
    "dyn-speex16": (97, "speex/16000", 16000, 35, 16000, None),
}
DTMF_PT = 101
TS = struct.Struct("<II")            # record timestamp pair (pcap sec/frac, pcapng high/low)
IP4VAR = struct.Struct(">HHBBH")     # IPv4 id, flags+offset, ttl, protocol, header checksum
RTPVAR = struct.Struct(">BHI")       # RTP M|PT, seq, timestamp
UDPRTP6 = struct.Struct(">HBBHI")    # UDP checksum, RTP V, M|PT, seq, timestamp
KEY = itemgetter(0)
# scenario, weight (only with --mix)
MIX = [("answered", 55), ("cancel", 10), ("busy", 8), ("decline", 7), ("nobye", 8), ("reinvite", 12)]


# ------------------------------------------------------------------ packet building (slow path) ----
def csum(data):
    """Internet checksum (ones' complement of the ones' complement sum); never returns 0."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return 0xFFFF - int.from_bytes(data, "big") % 0xFFFF


def pseudo(v6, src, dst, proto, length):
    return src + dst + (struct.pack(">IxxxB", length, proto) if v6 else struct.pack(">xBH", proto, length))


def ip4_header(src, dst, proto, plen, ident, flags_off=0x4000, tos=0):
    h = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + plen, ident & 0xFFFF, flags_off, 64, proto, 0,
                              src, dst))
    struct.pack_into(">H", h, 10, csum(h))
    return bytes(h)


def ip6_header(src, dst, nh, plen, tos=0):
    return struct.pack(">IHBB16s16s", 0x60000000 | tos << 20, plen, nh, 64, src, dst)


def udp_segment(v6, src, dst, sp, dp, payload, checksum=True):
    n = 8 + len(payload)
    c = csum(pseudo(v6, src, dst, 17, n) + struct.pack(">HHHH", sp, dp, n, 0) + payload) if checksum else 0
    return struct.pack(">HHHH", sp, dp, n, c) + payload


def tcp_segment(v6, src, dst, sp, dp, seq, ack, flags, payload=b"", opts=b""):
    h = bytearray(struct.pack(">HHIIBBHHH", sp, dp, seq & M32, ack & M32, (20 + len(opts)) << 2, flags, 64240, 0, 0)
                  + opts)
    struct.pack_into(">H", h, 16, csum(pseudo(v6, src, dst, 6, len(h) + len(payload)) + h + payload))
    return bytes(h) + payload


def ip_packets(v6, src, dst, proto, l4, ident, tos=0, mtu=0):
    """One IP packet, or its fragments (payload chunks of a multiple of 8 bytes) if it is larger than mtu."""
    hl = 40 if v6 else 20
    if not mtu or hl + len(l4) <= mtu:
        return [ip6_header(src, dst, proto, len(l4), tos) + l4 if v6 else ip4_header(src, dst, proto, len(l4), ident,
                                                                                      0x4000, tos) + l4]
    step = (mtu - hl - (8 if v6 else 0)) // 8 * 8
    out = []
    for off in range(0, len(l4), step):
        chunk, more = l4[off:off + step], off + step < len(l4)
        if v6:
            fh = struct.pack(">BBHI", proto, 0, off | more, ident & M32)
            out.append(ip6_header(src, dst, 44, 8 + len(chunk), tos) + fh + chunk)
        else:
            out.append(ip4_header(src, dst, proto, len(chunk), ident, (off >> 3) | (0x2000 if more else 0), tos) + chunk)
    return out


def link_header(lt, v6, src, dst):
    et = 0x86DD if v6 else 0x0800
    smac, dmac = b"\x02\x00" + src[-4:], b"\x02\x00" + dst[-4:]
    if lt == 1:
        return dmac + smac + struct.pack(">H", et)
    if lt == 0:
        return struct.pack("<I", 30 if v6 else 2)          # host (= file, little-endian) byte order
    if lt == 113:
        return struct.pack(">HHH", 0, 1, 6) + smac + b"\0\0" + struct.pack(">H", et)
    if lt == 276:
        return struct.pack(">HHIHBB", et, 0, 1, 1, 0, 6) + smac + b"\0\0"
    return b""                                              # 101 raw IP


class Writer:
    """pcap / pcapng file. template() gives a complete record whose timestamp is patched with TS at ts_off."""

    def __init__(self, path, linktype, nano, pcapng, start_ns):
        self.f = open(path, "wb", buffering=1 << 22)
        self.ng, base = pcapng, start_ns   # ts(t): t (ns since start) -> the two 32-bit timestamp words

        def ts_ng_ns(t):
            return (base + t) >> 32, (base + t) & M32

        def ts_ng_us(t):
            u = (base + t) // US
            return u >> 32, u & M32

        def ts_ns(t):
            return divmod(base + t, NS)

        def ts_us(t):
            return divmod((base + t) // US, 1_000_000)

        if pcapng:
            shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
            opts = struct.pack("<HHB3xHH", 9, 1, 9, 0, 0) if nano else b""   # if_tsresol = 10^-9
            blen = 20 + len(opts)
            self.f.write(shb + struct.pack("<IIHHI", 1, blen, linktype, 0, 262144) + opts + struct.pack("<I", blen))
            self.ts_off = 12
            self.ts = ts_ng_ns if nano else ts_ng_us
        else:
            self.f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
            self.ts_off = 0
            self.ts = ts_ns if nano else ts_us

    def template(self, pkt):
        n = len(pkt)
        if self.ng:
            pad = -n & 3
            return bytearray(struct.pack("<7I", 6, 32 + n + pad, 0, 0, 0, n, n) + pkt + b"\0" * pad
                             + struct.pack("<I", 32 + n + pad))
        return bytearray(struct.pack("<IIII", 0, 0, n, n) + pkt)

    @property
    def data_off(self):
        return 28 if self.ng else 16

    def record(self, t, pkt):
        b = self.template(pkt)
        TS.pack_into(b, self.ts_off, *self.ts(t))
        return bytes(b)


# ------------------------------------------------------------------ generator context ----
class Gen:
    def __init__(self, a):
        self.a, self.v6, self.tcp = a, a.ipv6, a.sip_transport == "tcp"
        self.lt = LINKTYPES[a.linktype]
        self.pt, self.rtpmap, self.clock, per10, self.te_clock, self.fmtp = CODECS[a.codec]
        self.ptime, self.P = a.ptime, a.ptime * MS
        self.spp = self.clock * a.ptime // 1000
        self.plen = per10 * a.ptime // 10
        self.n = max(2, round(a.duration * 1000 / a.ptime))
        self.jit = int(a.jitter * MS)
        self.loss, self.burst, self.reorder, self.dup = a.loss, max(1, a.burst_loss or 1), a.reorder, a.dup
        self.w = Writer(a.o, self.lt, a.nanosecond, a.pcapng, round(a.start * NS))
        rng = random.Random(a.seed)
        self.payloads = [bytes(rng.getrandbits(8) for _ in range(self.plen * 3)) for _ in range(4)]
        self.proxy = self.addr(0, 1)

    def addr(self, net, n):
        """(packed, text, uri-host): net 0 proxy, 1 callers, 2 callee media, 3 registering UAs."""
        if self.v6:
            ip = ipaddress.IPv6Address((0xFD00 << 112) | (net << 96) | n)
            return ip.packed, ip.compressed, "[%s]" % ip.compressed
        ip = ipaddress.IPv4Address((10 << 24) | ((net + 16 * (n >> 16)) & 255) << 16 | (n & 0xFFFF))
        return ip.packed, str(ip), str(ip)

    def frame(self, t, src, dst, ippkt):
        return t, self.w.record(t, link_header(self.lt, self.v6, src, dst) + ippkt)

    def udp_recs(self, t, src, dst, sp, dp, payload, ident, tos, rng, mtu=0):
        pk = ip_packets(self.v6, src, dst, 17, udp_segment(self.v6, src, dst, sp, dp, payload), ident, tos, mtu)
        if len(pk) > 1 and rng.random() < 0.35:
            pk.reverse()
        return [self.frame(t + j * 20 * US, src, dst, p) for j, p in enumerate(pk)]

    def sdp(self, sess, ver, ip, port):
        fam = "IP6" if self.v6 else "IP4"
        s = (f"v=0\r\no=voxgen {sess} {ver} IN {fam} {ip}\r\ns=voxgen\r\nc=IN {fam} {ip}\r\nt=0 0\r\n"
             f"m=audio {port} RTP/AVP {self.pt} {DTMF_PT}\r\na=rtpmap:{self.pt} {self.rtpmap}\r\n")
        if self.fmtp:
            s += f"a=fmtp:{self.pt} {self.fmtp}\r\n"
        return s + (f"a=rtpmap:{DTMF_PT} telephone-event/{self.te_clock}\r\na=fmtp:{DTMF_PT} 0-16\r\n"
                    f"a=ptime:{self.ptime}\r\na=sendrecv\r\n")


def sip_msg(first, hdrs, body=""):
    b = body.encode()
    if b:
        hdrs = hdrs + [("Content-Type", "application/sdp")]
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
            + f"Content-Length: {len(b)}\r\n\r\n").encode() + b


def sip_records(g, rng, msgs, cli, cport, srv, close):
    """msgs: [(t, from_client, bytes)] in time order -> [(t, record)] over UDP (maybe fragmented) or TCP."""
    (cpk, _, _), (spk, _, _) = cli, srv
    v6, out = g.v6, []
    ident = rng.getrandbits(32 if v6 else 16)
    if not g.tcp:
        for t, up, data in msgs:
            s, d, sp, dp = (cpk, spk, cport, 5060) if up else (spk, cpk, 5060, cport)
            out += g.udp_recs(t, s, d, sp, dp, data, ident, 0x60, rng, g.a.fragment_mtu)
            ident += 1
        return out
    seg = g.a.tcp_segment
    if seg and len(msgs) > 2 and not msgs[1][1] and not msgs[2][1] and rng.random() < 0.5:
        msgs = [msgs[0], (msgs[2][0], False, msgs[1][2] + msgs[2][2])] + msgs[3:]   # 100+180 in one write
    isn = [rng.getrandbits(32), rng.getrandbits(32)]
    nxt = [isn[0] + 1, isn[1] + 1]
    mss = struct.pack(">BBH", 2, 4, 1460)
    t0 = msgs[0][0]
    segs = [(t0 - 3 * MS, True, isn[0], 0, 0x02, b"", mss), (t0 - 2 * MS, False, isn[1], nxt[0], 0x12, b"", mss),
            (t0 - MS, True, nxt[0], nxt[1], 0x10, b"", b"")]
    for t, up, data in msgs:
        d = 0 if up else 1
        chunks = [data[o:o + seg] for o in range(0, len(data), seg)] if seg else [data]
        for j, ch in enumerate(chunks):
            segs.append((t + j * 10 * US, up, nxt[d], nxt[1 - d], 0x18 if j == len(chunks) - 1 else 0x10, ch, b""))
            nxt[d] += len(ch)
    if seg:
        r = segs[3 + rng.randrange(len(segs) - 3)]
        segs.append((r[0] + 200 * MS,) + r[1:])                       # one retransmission
    if close:
        t = msgs[-1][0] + 500 * MS
        segs += [(t, True, nxt[0], nxt[1], 0x11, b"", b""), (t + MS, False, nxt[1], nxt[0] + 1, 0x11, b"", b""),
                 (t + 2 * MS, True, nxt[0] + 1, nxt[1] + 1, 0x10, b"", b"")]
    for t, up, seq, ack, fl, pl, op in segs:
        s, d, sp, dp = (cpk, spk, cport, 5060) if up else (spk, cpk, 5060, cport)
        for p in ip_packets(v6, s, d, 6, tcp_segment(v6, s, d, sp, dp, seq, ack, fl, pl, op), ident, 0x60):
            out.append(g.frame(t, s, d, p))
        ident += 1
    return out


# ------------------------------------------------------------------ RTP streams (fast path) ----
def dtmf_schedule(g, n, rng):
    """slot -> (event, end, duration, event start slot, marker, repeated end packet)."""
    nu = max(2, 100 // g.ptime)
    per, sched, start = nu + 3, {}, max(3, n // 4)
    for e in range(3):
        es, ev = start + e * (2 * per), rng.randrange(12)
        if es + per >= n - 2:
            break
        for j in range(nu):
            sched[es + j] = (ev, False, (j + 1) * g.spp, es, j == 0, False)
        for r in range(3):
            sched[es + nu + r] = (ev, True, (nu + 1) * g.spp, es, False, r > 0)
    return sched


class RtpStream:
    """Slots k0..k1-1 of one direction; slot k is sent at t0 + k*ptime with seq0+k (less repeated DTMF ends)."""

    def __init__(self, g, rng, src, dst, sport, dport, ssrc, seq0, ts0, t0, k0, k1, dtmf=None, marker=True):
        self.g, self.rng, self.ssrc, self.seq0, self.ts0, self.t0, self.k0, self.k1 = g, rng, ssrc, seq0, ts0, t0, k0, k1
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.dtmf = dtmf or {}
        self.mk = k0 if marker else -1
        self.packets = self.dropped = self.dups = self.ndtmf = 0
        self.ident = rng.getrandbits(16)
        v6, (spk, dpk) = g.v6, (src[0], dst[0])
        self.payload = g.payloads[rng.randrange(4)][:g.plen]
        if g.a.codec == "opus":   # TOC byte: SILK wideband config 8..11 = one 10/20/40/60 ms frame; 30 ms = 3 x 10 ms
            toc = bytes([8 << 3 | 3, 3]) if g.ptime == 30 else bytes([{10: 8, 20: 9, 40: 10, 60: 11}[g.ptime] << 3])
            self.payload = toc + g.payloads[0][:g.plen - 30 + 3 * rng.randrange(20)]     # VBR: size per stream
        rtp = struct.pack(">BBHII", 0x80, g.pt, 0, 0, ssrc) + self.payload
        if v6:
            l4 = struct.pack(">HHHH", sport, dport, 8 + len(rtp), 0) + rtp
            ip = ip6_header(spk, dpk, 17, len(l4), 0xB8) + l4
            z = pseudo(True, spk, dpk, 17, len(l4)) + l4[:8] + b"\0" * 8 + l4[16:]
            self.base = int.from_bytes(z + b"\0" * (len(z) & 1), "big") % 0xFFFF
        else:
            ip = ip4_header(spk, dpk, 17, 8 + len(rtp), 0, 0x4000, 0xB8) + struct.pack(">HHHH", sport, dport,
                                                                                     8 + len(rtp), 0) + rtp
            self.base = int.from_bytes(ip[:10] + b"\0\0" + ip[12:20], "big") % 0xFFFF
        self.buf = g.w.template(link_header(g.lt, v6, spk, dpk) + ip)
        self.ioff = g.w.data_off + len(link_header(g.lt, v6, spk, dpk))
        self.simple = not (self.dtmf or g.loss or g.reorder or g.dup or g.jit)
        self.kn, self.plan = k0, None if self.simple else self._plan()
        self.nxt = True if self.simple else next(self.plan, None)

    def _plan(self):
        """Yield (nominal, capture, slot, seq index, dtmf) in nominal-time order after loss/reorder/dup/jitter."""
        g, rng, dt = self.g, self.rng, self.dtmf
        k0, k1, t0, P, jit = self.k0, self.k1, self.t0, g.P, g.jit
        loss, burst, reo, dup = g.loss, g.burst, g.reorder, g.dup
        s = k0 - sum(1 for k, e in dt.items() if e[5] and k < k0)
        run, held = 0, None
        for k in range(k0, k1):
            ev = dt.get(k)
            if ev is not None and ev[5]:
                si = s - 1
            else:
                si, s = s, s + 1
            t = t0 + k * P
            if ev is None and k0 < k < k1 - 1:
                if run or (loss and rng.random() < loss):
                    run = run - 1 if run else burst - 1
                    self.dropped += 1
                    continue
                if held is None and reo and k < k1 - 2 and (k + 1) not in dt and rng.random() < reo:
                    held = (t, k, si)
                    continue
            if held is not None and k == k1 - 1:    # the next packet was lost: the held one is just late
                todo, held = ((held[0], held[1], held[2], None), (t, k, si, ev)), None
            elif held is not None:                   # swapped: this packet in the held slot, the held one now
                todo, held = ((held[0], k, si, ev), (t, held[1], held[2], None)), None
            else:
                todo = ((t, k, si, ev),)
            for tn, kk, ss, e in todo:
                # the first packet is on time and the last one is captured last (tshark counts lost
                # packets from the first and the last packet seen, not from the lowest and highest seq)
                cap = tn if not jit or kk == k0 else tn + jit if kk == k1 - 1 else tn + rng.randrange(jit + 1)
                self.packets += 1
                yield tn, cap, kk, ss, e
                if dup and e is None and rng.random() < dup:
                    self.packets += 1
                    self.dups += 1
                    yield tn, cap + 50 * US, kk, ss, e

    def pull(self, t_end, out):
        """Append (capture time, record) of every packet whose nominal time is < t_end."""
        if self.simple:               # no impairment, no DTMF: slot k is packet k, no plan generator needed
            k, kend = self.kn, min(self.k1, (t_end - self.t0 + self.g.P - 1) // self.g.P)
            if k < kend:
                self.kn, self.packets, self.nxt = kend, self.packets + kend - k, None if kend == self.k1 else True
                self._voice(out, [(self.t0 + j * self.g.P, j, j) for j in range(k, kend)])
            return
        nxt, plan, items = self.nxt, self.plan, []
        while nxt is not None and nxt[0] < t_end:
            if nxt[4] is None:
                items.append(nxt[1:4])
            else:
                self._voice(out, items)
                items = []
                out.append(self._dtmf(nxt[1], nxt[3], nxt[4]))
            nxt = next(plan, None)
        self._voice(out, items)
        self.nxt = nxt

    def _voice(self, out, items):
        """Voice packets (capture time, slot, seq index): patch the template, copy it out."""
        g, buf, app = self.g, self.buf, out.append
        tsf, tso, ioff, seq0, ts0, spp, pt, mk = g.w.ts, g.w.ts_off, self.ioff, self.seq0, self.ts0, g.spp, g.pt, self.mk
        base, ident = self.base, self.ident
        if g.v6:
            for cap, k, si in items:
                seq, ts, b1 = (seq0 + si) & 0xFFFF, (ts0 + k * spp) & M32, pt | 0x80 if k == mk else pt
                TS.pack_into(buf, tso, *tsf(cap))
                UDPRTP6.pack_into(buf, ioff + 46, 0xFFFF - (base + 0x8000 + b1 + seq + (ts >> 16) + (ts & 0xFFFF))
                                  % 0xFFFF, 0x80, b1, seq, ts)
                app((cap, bytes(buf)))
        else:
            for cap, k, si in items:
                ident = (ident + 1) & 0xFFFF
                TS.pack_into(buf, tso, *tsf(cap))
                IP4VAR.pack_into(buf, ioff + 4, ident, 0x4000, 64, 17, 0xFFFF - (base + ident) % 0xFFFF)
                RTPVAR.pack_into(buf, ioff + 29, pt | 0x80 if k == mk else pt, (seq0 + si) & 0xFFFF,
                                 (ts0 + k * spp) & M32)
                app((cap, bytes(buf)))
        self.ident = ident

    def _dtmf(self, cap, si, ev):
        g = self.g
        event, end, dur, es, marker, _ = ev
        self.ndtmf += 1
        rtp = struct.pack(">BBHII", 0x80, DTMF_PT | (0x80 if marker else 0), (self.seq0 + si) & 0xFFFF,
                          (self.ts0 + es * g.spp) & M32, self.ssrc) + struct.pack(">BBH", event, 0x8A if end else 10, dur)
        self.ident = (self.ident + 1) & 0xFFFF
        pk = ip_packets(g.v6, self.src[0], self.dst[0], 17, udp_segment(g.v6, self.src[0], self.dst[0], self.sport,
                                                                       self.dport, rtp), self.ident, 0xB8)[0]
        return g.frame(cap, self.src[0], self.dst[0], pk)

    def rtcp(self, rng, user, peer=None):
        """RTCP SR+SDES records, 1 s after the first slot and then every 5 s while the stream lasts; with `peer`
        (the opposite stream) the SR carries one report block about it."""
        g, out = self.g, []
        t, t_last = self.t0 + self.k0 * g.P + NS, self.t0 + (self.k1 - 1) * g.P
        cname = f"{user}@{self.src[1]}".encode()
        while t < t_last:
            k = (t - self.t0) // g.P
            sent = k - self.k0
            ntp = (round(g.a.start * NS) + t) * (1 << 32) // NS + (2208988800 << 32)
            rc, words = (1, 12) if peer is not None else (0, 6)
            sr = struct.pack(">BBHIQIII", 0x80 | rc, 200, words, self.ssrc, ntp, (self.ts0 + k * g.spp) & M32, sent,
                             sent * len(self.payload))
            if peer is not None:
                lost = min(peer.dropped, 0x7FFFFF)
                ext_seq = (peer.seq0 + max(k - peer.k0, 0)) & M32
                sr += struct.pack(">IB", peer.ssrc, 0) + lost.to_bytes(3, "big") + struct.pack(">IIII", ext_seq, 40, 0, 0)
            item = struct.pack(">BB", 1, len(cname)) + cname + b"\0"
            item += b"\0" * (-(4 + len(item)) & 3)
            sdes = struct.pack(">BBHI", 0x81, 202, (4 + len(item)) // 4, self.ssrc) + item
            out += g.udp_recs(t + 3 * MS, self.src[0], self.dst[0], self.sport + 1, self.dport + 1, sr + sdes,
                              rng.getrandbits(16), 0xB8, rng)
            t += 5 * NS
        return out

    def truth(self):
        rep = [k for k, e in self.dtmf.items() if e[5]]          # repeated DTMF end packets reuse a seq
        sent = self.k1 - self.k0 - sum(1 for k in rep if self.k0 <= k < self.k1)
        return dict(saddr=self.src[1], sport=self.sport, daddr=self.dst[1], dport=self.dport, ssrc="0x%08x" % self.ssrc,
                    pt=self.g.pt, packets=self.packets, sent=sent, dropped=self.dropped, duplicated=self.dups,
                    dtmf_packets=self.ndtmf, lost_rfc3550=sent - self.packets,   # expected - received
                    first_seq=(self.seq0 + self.k0 - sum(1 for k in rep if k < self.k0)) & 0xFFFF)


# ------------------------------------------------------------------ calls and registrations ----
class Source:
    """Prebuilt SIP/RTCP records plus lazily generated RTP streams of one call (or registration)."""

    def __init__(self, recs, streams, truth):
        self.recs, self.ri, self.streams, self.info = sorted(recs, key=KEY), 0, streams, truth

    def pull(self, t_end, out):
        recs, i = self.recs, self.ri
        while i < len(recs) and recs[i][0] < t_end:
            out.append(recs[i])
            i += 1
        self.ri = i
        alive = i < len(recs)
        for s in self.streams:
            s.pull(t_end, out)
            alive = alive or s.nxt is not None
        return alive

    def truth(self):
        if self.streams:
            self.info["rtp_streams"] = [s.truth() for s in self.streams]
        return self.info


def make_call(g, i, t0):
    a = g.a
    rng = random.Random(a.seed * 1_000_003 + i)
    scen = rng.choices([m for m, _ in MIX], [w for _, w in MIX])[0] if a.mix else "answered"
    if scen == "reinvite" and g.n * g.P < 400 * MS:     # too short to fit a re-INVITE transaction mid-call
        scen = "answered"
    bye_from = "callee" if scen in ("answered", "reinvite") and a.mix and rng.random() < 1 / 3 else "caller"
    caller, proxy, media = g.addr(1, i), g.proxy, g.addr(2, 1 + i % 200)
    user, called = str(1000 + i), str(500000 + i)
    c_rtp, e_rtp, e_rtp2 = 16384 + 2 * (i % 8000), 20000 + 2 * (i // 200 % 9000), 40000 + 2 * (i // 200 % 9000)
    sip_port = 49152 + i % 16000 if g.tcp else 5060
    T, tp = ("TCP", ";transport=tcp") if g.tcp else ("UDP", "")
    cid = "%016x@voxgen" % rng.getrandbits(64)
    ftag, ttag, sess_c, sess_e = "%08x" % rng.getrandbits(32), "%08x" % rng.getrandbits(32), rng.randrange(1, 10**9), \
        rng.randrange(1, 10**9)

    def br():
        return "z9hG4bK%012x" % rng.getrandbits(48)

    via_c = f"SIP/2.0/{T} {caller[2]}:{sip_port};branch={br()};rport"
    fr = f'"Caller {i}" <sip:{user}@{caller[2]}>;tag={ftag}'
    to0 = f"<sip:{called}@{proxy[2]}>"
    to1 = f"{to0};tag={ttag}"
    ruri = f"sip:{called}@{proxy[2]}{tp}"
    cc, ce = f"<sip:{user}@{caller[2]}:{sip_port}{tp}>", f"<sip:{called}@{proxy[2]}:5060{tp}>"
    ua = [("User-Agent", "voxgen")]

    def req(method, via, cseq, frm=fr, to=to1, uri=ruri, body="", contact=cc):
        h = [("Via", via), ("Max-Forwards", "70"), ("From", frm), ("To", to), ("Call-ID", cid), ("CSeq", cseq)]
        h += ([("Contact", contact)] if method in ("INVITE", "REGISTER") else []) + ua
        if method == "INVITE":
            h.append(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"))
        return sip_msg(f"{method} {uri} SIP/2.0", h, body)

    def resp(code, reason, via, cseq, to=to1, frm=fr, body="", contact=True):
        h = [("Via", via), ("From", frm), ("To", to), ("Call-ID", cid), ("CSeq", cseq)]
        h += ([("Contact", ce)] if contact and code in (180, 200) and "INVITE" in cseq else []) + ua
        return sip_msg(f"SIP/2.0 {code} {reason}", h, body)

    offer = g.sdp(sess_c, 1, caller[1], c_rtp)
    msgs = [(t0, True, req("INVITE", via_c, "1 INVITE", to=to0, body=offer)),
            (t0 + 5 * MS, False, resp(100, "Trying", via_c, "1 INVITE", to=to0)),
            (t0 + 50 * MS, False, resp(180, "Ringing", via_c, "1 INVITE"))]
    info = dict(index=i, call_id=cid, scenario=scen, from_user=user, to_user=called, transport=T,
                invite=dict(saddr=caller[1], sport=sip_port, daddr=proxy[1], dport=5060), final_code=200, bye=False,
                bye_from=None, cancel=False, reinvite=scen == "reinvite")
    streams, recs = [], []
    if scen in ("busy", "decline"):
        code, reason = (486, "Busy Here") if scen == "busy" else (603, "Decline")
        t = t0 + (1000 if scen == "busy" else 2500) * MS
        msgs += [(t, False, resp(code, reason, via_c, "1 INVITE")),
                 (t + 20 * MS, True, req("ACK", via_c, "1 ACK"))]
        info["final_code"] = code
    elif scen == "cancel":
        t = t0 + 50 * MS + rng.randrange(500, 3000) * MS
        msgs += [(t, True, req("CANCEL", via_c, "1 CANCEL", to=to0)),
                 (t + 5 * MS, False, resp(200, "OK", via_c, "1 CANCEL")),
                 (t + 7 * MS, False, resp(487, "Request Terminated", via_c, "1 INVITE")),
                 (t + 27 * MS, True, req("ACK", via_c, "1 ACK"))]
        info.update(final_code=487, cancel=True)
    else:
        t200 = t0 + NS
        t_ack = t200 + 20 * MS
        t_rtp = t_ack + 10 * MS
        msgs += [(t200, False, resp(200, "OK", via_c, "1 INVITE", body=g.sdp(sess_e, 1, media[1], e_rtp))),
                 (t_ack, True, req("ACK", f"SIP/2.0/{T} {caller[2]}:{sip_port};branch={br()};rport", "1 ACK"))]
        n, P, off = g.n, g.P, rng.randrange(max(1, g.ptime // 2)) * MS
        ssrc_a, ssrc_b = rng.getrandbits(32), rng.getrandbits(32)
        seq_a, seq_b, ts_a, ts_b = rng.getrandbits(16), rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
        ra, rb = random.Random(rng.getrandbits(64)), random.Random(rng.getrandbits(64))
        ep_c, ep_e = caller, media
        m = n
        cseq = 2
        if scen == "reinvite":
            m = n // 2
            t_ri = t_rtp + m * P - 80 * MS
            via2 = f"SIP/2.0/{T} {caller[2]}:{sip_port};branch={br()};rport"
            msgs += [(t_ri, True, req("INVITE", via2, "2 INVITE", body=g.sdp(sess_c, 2, caller[1], c_rtp))),
                     (t_ri + 50 * MS, False, resp(200, "OK", via2, "2 INVITE", body=g.sdp(sess_e, 2, media[1], e_rtp2))),
                     (t_ri + 70 * MS, True, req("ACK", f"SIP/2.0/{T} {caller[2]}:{sip_port};branch={br()};rport",
                                                "2 ACK"))]
            cseq = 3
        dt = dtmf_schedule(g, m, rng) if a.dtmf else None
        streams = [RtpStream(g, ra, ep_c, ep_e, c_rtp, e_rtp, ssrc_a, seq_a, ts_a, t_rtp, 0, m, dt),
                   RtpStream(g, rb, ep_e, ep_c, e_rtp, c_rtp, ssrc_b, seq_b, ts_b, t_rtp + off, 0, m)]
        if m < n:
            streams += [RtpStream(g, ra, ep_c, ep_e, c_rtp, e_rtp2, ssrc_a, seq_a, ts_a, t_rtp, m, n, dt, False),
                        RtpStream(g, rb, ep_e, ep_c, e_rtp2, c_rtp, rng.getrandbits(32), rng.getrandbits(16),
                                  rng.getrandbits(32), t_rtp + off, m, n)]
        if a.rtcp:
            for i, s in enumerate(streams):
                peer = streams[i ^ 1] if i ^ 1 < len(streams) else None
                recs += s.rtcp(rng, user if s.src is caller else called, peer)
        t_bye = t_rtp + off + (n - 1) * P + g.jit + 60 * US + MS
        if scen == "nobye":
            pass
        elif bye_from == "caller":
            vb = f"SIP/2.0/{T} {caller[2]}:{sip_port};branch={br()};rport"
            msgs += [(t_bye, True, req("BYE", vb, f"{cseq} BYE")),
                     (t_bye + 5 * MS, False, resp(200, "OK", vb, f"{cseq} BYE"))]
        else:
            vb = f"SIP/2.0/{T} {proxy[2]}:5060;branch={br()}"
            cs = f"{rng.randrange(1, 9000)} BYE"
            msgs += [(t_bye, False, req("BYE", vb, cs, frm=to1, to=fr, uri=f"sip:{user}@{caller[2]}:{sip_port}{tp}")),
                     (t_bye + 5 * MS, True, resp(200, "OK", vb, cs, frm=to1, to=fr))]
        info.update(bye=scen != "nobye", bye_from=None if scen == "nobye" else bye_from)
    info["sip_messages"] = len(msgs)
    recs += sip_records(g, rng, msgs, caller, sip_port, proxy, scen != "nobye")
    return Source(recs, streams, info)


def make_register(g, j, t0):
    rng = random.Random(g.a.seed * 1_000_003 + 900_000_000 + j)
    ua, proxy = g.addr(3, j), g.proxy
    user, port = str(3000 + j), (49152 + j % 16000 if g.tcp else 5060)
    T, tp = ("TCP", ";transport=tcp") if g.tcp else ("UDP", "")
    cid, tag, nonce = "%016x@voxgen" % rng.getrandbits(64), "%08x" % rng.getrandbits(32), "%032x" % rng.getrandbits(128)
    uri = f"sip:{proxy[2]}{tp}"
    aor = f"<sip:{user}@{proxy[2]}>"
    ha1 = hashlib.md5(f"{user}:voxgen:secret{j}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    digest = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    msgs, t = [], t0
    for n, extra, code in ((1, [], 401), (2, [("Authorization", f'Digest username="{user}", realm="voxgen", '
                                            f'nonce="{nonce}", uri="{uri}", response="{digest}", algorithm=MD5')], 200)):
        via = f"SIP/2.0/{T} {ua[2]}:{port};branch=z9hG4bK%012x;rport" % rng.getrandbits(48)
        base = [("Via", via), ("From", f"{aor};tag={tag}"), ("To", aor), ("Call-ID", cid), ("CSeq", f"{n} REGISTER")]
        msgs.append((t, True, sip_msg(f"REGISTER {uri} SIP/2.0", base[:1] + [("Max-Forwards", "70")] + base[1:] + [
            ("Contact", f"<sip:{user}@{ua[2]}:{port}{tp}>"), ("Expires", "3600"), ("User-Agent", "voxgen")] + extra)))
        to = f"{aor};tag=%08x" % rng.getrandbits(32)
        last = ([("WWW-Authenticate", f'Digest realm="voxgen", nonce="{nonce}", algorithm=MD5')] if code == 401 else
                [("Contact", f"<sip:{user}@{ua[2]}:{port}{tp}>;expires=3600")])
        msgs.append((t + 5 * MS, False, sip_msg(f"SIP/2.0 {code} {'Unauthorized' if code == 401 else 'OK'}",
                                                base[:2] + [("To", to)] + base[3:] + last + [("Server", "voxgen")])))
        t += 25 * MS
    info = dict(index=j, call_id=cid, user=user, saddr=ua[1], sport=port, daddr=proxy[1], dport=5060,
                final_code=200, sip_messages=len(msgs))
    return Source(sip_records(g, rng, msgs, ua, port, proxy, True), [], info)


# ------------------------------------------------------------------ main loop ----
def generate(a):
    t_wall = time.time()
    g = Gen(a)
    lead = 3 * MS if g.tcp else 0          # the TCP handshake precedes the first INVITE
    todo = [(lead + round((i - 1) * NS / a.cps), 0, i) for i in range(1, a.calls + 1)]
    span = max(NS, todo[-1][0] if todo else 0)
    todo += [(lead + j * span // max(1, a.register), 1, j) for j in range(1, a.register + 1)]
    todo.sort()
    W, LOOK = 200 * MS, 10 * MS   # output window; sources are built LOOK early (their handshake precedes t0)
    active, carry, truth_calls, truth_regs = [], [], [], []
    t_end, pi, npk, first, last = 0, 0, 0, None, 0
    f = g.w.f
    while pi < len(todo) or active or carry:
        t_end += W
        while pi < len(todo) and todo[pi][0] < t_end + LOOK:
            t0, kind, idx = todo[pi]
            active.append((make_register if kind else make_call)(g, idx, t0))
            pi += 1
        out = carry
        still = []
        for s in active:
            if s.pull(t_end, out):
                still.append(s)
            elif a.truth:
                (truth_regs if "user" in s.info else truth_calls).append(s.truth())
        active = still
        out.sort(key=KEY)
        cut = bisect.bisect_left(out, t_end, key=KEY) if (pi < len(todo) or active) else len(out)
        if cut:
            f.write(b"".join(map(itemgetter(1), out[:cut])))
            npk += cut
            first = out[0][0] if first is None else first
            last = out[cut - 1][0]
        carry = out[cut:]
    f.close()
    dur = (last - first) / NS if npk else 0.0
    if a.truth:
        truth_calls.sort(key=lambda c: c["index"])
        truth_regs.sort(key=lambda c: c["index"])
        with open(a.truth, "w") as o:
            json.dump(dict(generator="voxgen", args=vars(a), packets=npk, capture_seconds=round(dur, 6),
                           first_packet_epoch=round(a.start + (first or 0) / NS, 9), calls=truth_calls,
                           registers=truth_regs), o, indent=1)
    print(f"voxgen: {npk} packets, {a.calls} calls, {a.register} registrations, {dur:.3f} s of capture -> {a.o} "
          f"({time.time() - t_wall:.2f} s)", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", required=True, metavar="OUT.pcap")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--cps", type=float, default=10.0, help="new calls per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of RTP per answered call")
    p.add_argument("--ptime", type=int, default=20, choices=(10, 20, 30, 40, 60))
    p.add_argument("--codec", default="pcma", choices=sorted(CODECS))
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--burst-loss", type=int, default=0, metavar="K")
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--dup", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--sip-transport", default="udp", choices=("udp", "tcp"))
    p.add_argument("--tcp-segment", type=int, default=0, metavar="BYTES")
    p.add_argument("--fragment-mtu", type=int, default=0, metavar="BYTES")
    p.add_argument("--mix", action="store_true")
    p.add_argument("--dtmf", action="store_true")
    p.add_argument("--rtcp", action="store_true")
    p.add_argument("--register", type=int, default=0, metavar="N")
    p.add_argument("--linktype", default="eth", choices=sorted(LINKTYPES))
    p.add_argument("--nanosecond", action="store_true")
    p.add_argument("--pcapng", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, default=1700000000.0, help="epoch of the first packet")
    p.add_argument("--truth", metavar="OUT.json")
    p.add_argument("--wrap", metavar="LAYERS",
                   help="re-encapsulate every frame, layers outermost first (see wrap.py: vxlan, erspan2, gre, hep3, ...)")
    a = p.parse_args(argv)
    for name in ("loss", "reorder", "dup"):
        if not 0 <= getattr(a, name) <= 1:
            p.error(f"--{name} must be within 0..1")
    if a.cps <= 0 or a.calls < 0 or a.duration <= 0 or a.jitter < 0:
        p.error("--cps and --duration must be > 0, --calls and --jitter >= 0")
    if a.fragment_mtu and a.fragment_mtu < (96 if a.ipv6 else 68):
        p.error("--fragment-mtu must be >= 68 (IPv4) / 96 (IPv6)")
    if a.wrap:
        if a.pcapng or a.linktype not in ("eth", "raw"):
            p.error("--wrap needs a pcap with --linktype eth or raw")
        import os
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import wrap
        out, a.o = a.o, a.o + ".plain"
        generate(a)
        wrap.main([a.o, out, "--wrap", a.wrap])
        os.remove(a.o)
        return
    generate(a)


if __name__ == "__main__":
    main()
