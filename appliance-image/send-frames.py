#!/usr/bin/env python3
"""Sends the frames of a pcap file, one UDP datagram each, to a QEMU `-netdev socket,udp=` (or `dgram`) NIC, so
the guest sees them arrive on that interface. usage: send-frames.py FILE HOST PORT [PPS]"""
import socket
import struct
import sys
import time


def frames(path):
    data = open(path, "rb").read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif struct.unpack_from(">I", data, 0)[0] in (0xA1B2C3D4, 0xA1B23C4D):
        endian = ">"
    else:
        sys.exit(f"{path}: not a classic pcap file")
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, at)
        at += 16
        yield data[at : at + incl]
        at += incl


def main(path, host, port, pps=500.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0
    start = time.monotonic()
    for f in frames(path):
        s.sendto(f, (host, port))
        n += 1
        # Paced: a software-emulated guest drops what it cannot take.
        delay = start + n / pps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(f"sent {n} frames to {host}:{port}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 500.0)
