#!/usr/bin/env bash
# Decode throughput: `cnflow replay` vs `tshark -r` on the same large mixed capture,
# both pinned to one core, in one run. Usage: bench_replay.sh [MIN_PACKETS]
# The capture is made from the committed real-peer captures (integration-tests/pcaps),
# replicated with distinct addresses per copy (replicate_pcap.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
want=${1:-1000000}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build --release -q --bin cnflow
bin=target/release/cnflow
# One link type per merged file: use the Ethernet captures (what tcpdump -i <veth> writes).
inputs=()
for f in integration-tests/pcaps/*.pcap; do
  lt=$(python3 -c 'import struct,sys;d=open(sys.argv[1],"rb").read(24);e="<" if d[:4] in (b"\xd4\xc3\xb2\xa1",b"\x4d\x3c\xb2\xa1") else ">";print(struct.unpack(e+"I",d[20:24])[0])' "$f")
  case "$(basename "$f")" in *trunc*|*lost*|*mid*|*snap*|*_dup*|*reordered*|*nsec*|*rawip*) continue;; esac
  [ "$lt" = 1 ] && inputs+=("$f")
done
[ ${#inputs[@]} -gt 0 ] || { echo "no Ethernet captures under integration-tests/pcaps"; exit 1; }
python3 integration-tests/perf/replicate_pcap.py "$work/big.pcap" "$want" "${inputs[@]}"
pkts=$(python3 -c 'import os,sys,struct
d=open(sys.argv[1],"rb").read(); o=24; n=0
while o+16<=len(d): n+=1; o+=16+struct.unpack("<I",d[o+8:o+12])[0]
print(n)' "$work/big.pcap")
# cnflow: decode + pair (count only), and the same plus OTLP/JSON spans+metrics on stdout.
# tshark: dissect the same protocols and print one field per matching frame.
# (Debian 12's tshark 4.0 has no Redis dissector; port 6379 frames are selected instead.)
t0=$(date +%s.%N)
taskset -c 0 "$bin" replay "$work/big.pcap" --format count > "$work/count.txt"
t1=$(date +%s.%N)
taskset -c 0 "$bin" replay "$work/big.pcap" --format otlp-json > /dev/null
t2=$(date +%s.%N)
taskset -c 0 tshark -r "$work/big.pcap" -n -Y 'http || http2 || dns || kafka || icmp || icmpv6 || tcp.port == 6379' \
  -T fields -e frame.number > "$work/tshark.txt"
t3=$(date +%s.%N)
python3 - "$pkts" "$(cat "$work/count.txt")" "$t0" "$t1" "$t2" "$t3" "${#inputs[@]}" <<'PY'
import sys
pkts, counts = int(sys.argv[1]), sys.argv[2]
t0, t1, t2, t3 = map(float, sys.argv[3:7])
ex = int(counts.split()[0].split("=")[1])
c, o, t = t1 - t0, t2 - t1, t3 - t2
print(f"capture: {pkts} packets, {sys.argv[7]} real-peer captures replicated; {counts}")
print(f"cnflow replay --format count     : {c:7.2f} s {pkts/c:12,.0f} packets/s {ex/c:10,.0f} exchanges/s (1 core)")
print(f"cnflow replay --format otlp-json : {o:7.2f} s {pkts/o:12,.0f} packets/s {ex/o:10,.0f} exchanges/s (1 core)")
print(f"tshark -r -Y ... -T fields       : {t:7.2f} s {pkts/t:12,.0f} packets/s (same file, same core)")
print(f"ratio: {t/c:.1f}x tshark (decode), {t/o:.1f}x tshark (with OTLP/JSON output)")
PY
