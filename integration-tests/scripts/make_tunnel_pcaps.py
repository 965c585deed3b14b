"""Wraps every packet of a plain Ethernet capture in overlay encapsulations
(scapy), keeping timestamps, so replay of each output must give exactly the
exchanges of the input. Usage: make_tunnel_pcaps.py INNER.pcap OUT_DIR

Underlay: the inner host .2 (or ::2) sits behind node 10.200.72.2 /
fd00:200:72::2, host .1 behind node .1 / ::1.
Destination MACs are not the capturing veth's, so injected copies are dropped
by the receiving stack after the TC hook has seen them.
"""
import struct
import sys
import zlib

from scapy.all import GRE, IP, UDP, Ether, IPv6, Raw, rdpcap, wrpcap  # noqa: F401
from scapy.layers.vxlan import VXLAN

inner_path, out = sys.argv[1], sys.argv[2]
pkts = rdpcap(inner_path)
MAC_A, MAC_B = "02:00:00:00:72:01", "02:00:00:00:72:02"


def side(p):
    """1 when the inner packet comes from host .2."""
    ip = p[IP] if IP in p else p[IPv6]
    return 1 if ip.src.endswith("2") else 0


def under4(p, proto=None):
    up = side(p)
    src, dst = ("10.200.72.2", "10.200.72.1") if up else ("10.200.72.1", "10.200.72.2")
    eth = Ether(src=MAC_B if up else MAC_A, dst=MAC_A if up else MAC_B)
    return eth / (IP(src=src, dst=dst, proto=proto) if proto is not None else IP(src=src, dst=dst))


def under6(p):
    up = side(p)
    src, dst = ("fd00:200:72::2", "fd00:200:72::1") if up else ("fd00:200:72::1", "fd00:200:72::2")
    return Ether(src=MAC_B if up else MAC_A, dst=MAC_A if up else MAC_B) / IPv6(src=src, dst=dst)


def l3(p):
    return p[IP] if IP in p else p[IPv6]


def ethertype(p):
    return 0x0800 if IP in p else 0x86DD


def sport(p):
    # Per-flow source port, as VXLAN/Geneve implementations derive it from the inner flow hash.
    return 49152 + (zlib.crc32(f"{l3(p).src} {l3(p).dst}".encode()) & 0x3FFF)


def geneve(p):
    # Version 0, 2 option words, protocol TEB, VNI 7; one option (class 0x0102, type 0x80, 4 data bytes).
    hdr = struct.pack("!BBHI", 0x02, 0x00, 0x6558, 7 << 8) + struct.pack("!HBB", 0x0102, 0x80, 1) + b"\x00\x00\x00\x2a"
    return under4(p) / UDP(sport=sport(p), dport=6081) / Raw(hdr) / p


def gre(p, i):
    g = GRE(chksum_present=1, key_present=1, seqnum_present=1, key=0x1234, sequence_number=i, proto=ethertype(p))
    return under4(p) / g / l3(p)


def gretap(p):
    return under4(p) / GRE(key_present=1, key=5, proto=0x6558) / p


def ipip_sit(p):
    # Calico: IPv4 pods over IP-in-IP, IPv6 pods over 6in4.
    return under4(p, 4 if IP in p else 41) / l3(p)


def nested(p):
    # VXLAN over IPv4, carried in GRE over an IPv6 underlay.
    up = side(p)
    vx = IP(src="10.200.73.2" if up else "10.200.73.1", dst="10.200.73.1" if up else "10.200.73.2")
    vx = vx / UDP(sport=sport(p), dport=4789) / VXLAN(vni=9, flags=0x08) / p
    return under6(p) / GRE(proto=0x0800) / vx


for name, wrap in [
    ("tunnel_geneve", lambda p, i: geneve(p)),
    ("tunnel_gre", gre),
    ("tunnel_gretap", lambda p, i: gretap(p)),
    ("tunnel_ipip_sit", lambda p, i: ipip_sit(p)),
    ("tunnel_vxlan_in_gre6", lambda p, i: nested(p)),
]:
    wrapped = []
    for i, p in enumerate(pkts):
        w = wrap(p, i)
        w.time = p.time
        wrapped.append(w)
    wrpcap(f"{out}/{name}.pcap", wrapped)
    print(f"{name}.pcap: {len(wrapped)} packets")
