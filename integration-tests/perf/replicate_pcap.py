#!/usr/bin/env python3
"""Build a large capture from small real-peer captures for throughput benchmarks.

Copy k of each input gets its IP addresses rewritten consistently (a per-copy
offset in the second-to-last address byte) so every copy is a distinct set of
connections, and its timestamps shifted so copies follow each other in time.
Reassembly, pairing and flow-table work therefore scale with the copies, as in
real traffic, instead of re-hitting one connection. Checksums are left stale:
neither cnflow nor tshark (by default) validates them.

usage: replicate_pcap.py OUT.pcap MIN_PACKETS IN.pcap [IN.pcap ...]
Classic pcap inputs only (Ethernet, SLL, SLL2, raw IP); all copies are written with
the link type of the first input, so inputs must share it.
"""
import struct
import sys

L2_LEN = {1: 14, 113: 16, 276: 20, 101: 0, 12: 0, 228: 0, 229: 0}


def read_pcap(path):
    data = open(path, "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise SystemExit(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    _, _, _, _, snap, linktype = struct.unpack(end + "HHiIII", data[4:24])
    off, recs = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(end + "IIII", data[off:off + 16])
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        recs.append((ts, orig, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return linktype, snap, recs


def ip_offset(linktype, frame):
    """Offset of the IP header in a frame, or None when not IP."""
    off = L2_LEN.get(linktype)
    if off is None:
        return None
    if linktype == 1:
        ethertype = struct.unpack(">H", frame[12:14])[0]
        while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            ethertype = struct.unpack(">H", frame[off + 2:off + 4])[0]
            off += 4
        if ethertype not in (0x0800, 0x86DD):
            return None
    return off if len(frame) > off else None


def rewrite(frame, ip_off, k):
    b = bytearray(frame)
    version = b[ip_off] >> 4
    if version == 4 and len(b) >= ip_off + 20:
        for a in (ip_off + 12, ip_off + 16):
            b[a + 2] = (b[a + 2] + k) & 0xFF
    elif version == 6 and len(b) >= ip_off + 40:
        for a in (ip_off + 8, ip_off + 24):
            b[a + 14] = (b[a + 14] + k) & 0xFF
    return bytes(b)


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    out, want = sys.argv[1], int(sys.argv[2])
    inputs = [read_pcap(p) for p in sys.argv[3:]]
    linktype = inputs[0][0]
    inputs = [i for i in inputs if i[0] == linktype]
    per_copy = sum(len(r) for _, _, r in inputs)
    if per_copy == 0:
        raise SystemExit("no packets in inputs")
    copies = max(1, -(-want // per_copy))
    if copies > 255 * 255:
        raise SystemExit("too many copies needed; give more input")
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, linktype))
        t = 0
        n = 0
        for k in range(copies):
            for _, _, recs in inputs:
                if not recs:
                    continue
                base = recs[0][0]
                last = base
                for ts, orig, frame in recs:
                    off = ip_offset(linktype, frame)
                    # Copies more than 255 apart share addresses but never overlap in time.
                    if off is not None:
                        frame = rewrite(frame, off, k % 255 + 1 if k else 0)
                    rel = t + (ts - base)
                    f.write(struct.pack("<IIII", rel // 1_000_000_000, rel % 1_000_000_000, len(frame), orig))
                    f.write(frame)
                    last = ts
                    n += 1
                t += (last - base) + 1_000_000_000
    print(f"{out}: {n} packets, {copies} copies of {per_copy}", file=sys.stderr)


if __name__ == "__main__":
    main()
