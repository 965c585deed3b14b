#!/usr/bin/env python3
"""Synthetic Redis capture with long-lived connections, as redis-benchmark and
connection pools make (replicate_pcap.py copies the short connections of a
capture): CONNS connections (10.200.1.x -> 10.200.0.1:6379), each EXCHANGES
SET/GET exchanges alternating, one segment per message, ACKs piggybacked,
checksums of IPv4 only (cnflow does not check TCP's). Deterministic.

Usage: python3 make_redis_longconn_pcap.py OUT.pcap CONNS EXCHANGES
(the #17 Redis third pass used 10 1000: 20,060 packets, 10,000 exchanges)."""
import struct, sys

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b)//2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def pkt(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return eth + ip + tcp

out, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
recs = []
t = 1_700_000_000_000_000  # µs
srv = [10, 200, 0, 1]
for c in range(conns):
    cli = [10, 200, 1, 1 + c]
    sp, dp = 40000 + c, 6379
    cs, ss = 1000, 5000
    recs.append((t, pkt(cli, srv, sp, dp, cs, 0, 0x02))); t += 5
    recs.append((t, pkt(srv, cli, dp, sp, ss, cs + 1, 0x12))); t += 5
    cs += 1; ss += 1
    recs.append((t, pkt(cli, srv, sp, dp, cs, ss, 0x10))); t += 5
    for i in range(n):
        key = b"key:%010d" % (i % 1000)
        if i % 2 == 0:
            req = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n" % (len(key), key)
            resp = b"+OK\r\n"
        else:
            req = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
            resp = b"$3\r\nxxx\r\n"
        recs.append((t, pkt(cli, srv, sp, dp, cs, ss, 0x18, req))); t += 20; cs += len(req)
        recs.append((t, pkt(srv, cli, dp, sp, ss, cs, 0x18, resp))); t += 20; ss += len(resp)
    recs.append((t, pkt(cli, srv, sp, dp, cs, ss, 0x11))); t += 5
    recs.append((t, pkt(srv, cli, dp, sp, ss, cs + 1, 0x11))); t += 5
    recs.append((t, pkt(cli, srv, sp, dp, cs + 1, ss + 1, 0x10))); t += 5
with open(out, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for ts, p in recs:
        f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(p), len(p)) + p)
print(out, len(recs), "packets")
