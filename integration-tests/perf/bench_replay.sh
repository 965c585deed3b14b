#!/usr/bin/env bash
# Decode throughput: `cnflow replay` vs `tshark -r` on the same large mixed capture,
# both pinned to one core, in one run. Usage: bench_replay.sh [MIN_PACKETS]
# The capture is made from the committed real-peer captures (integration-tests/pcaps),
# replicated with distinct addresses per copy (replicate_pcap.py); which ones:
# ordinary_captures.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
want=${1:-1000000}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# CNFLOW_BIN=path runs another build (e.g. to compare before/after a change).
if [ -z "${CNFLOW_BIN:-}" ]; then cargo build --release -q --bin cnflow; fi
bin=$(realpath "${CNFLOW_BIN:-target/release/cnflow}")
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
mapfile -t inputs < <(bash integration-tests/perf/ordinary_captures.sh)
[ ${#inputs[@]} -gt 0 ] || { echo "no Ethernet captures under integration-tests/pcaps"; exit 1; }
python3 integration-tests/perf/replicate_pcap.py "$work/big.pcap" "$want" "${inputs[@]}"
pkts=$(python3 -c 'import os,sys,struct
d=open(sys.argv[1],"rb").read(); o=24; n=0
while o+16<=len(d): n+=1; o+=16+struct.unpack("<I",d[o+8:o+12])[0]
print(n)' "$work/big.pcap")
# cnflow: decode + pair (count only), and the same plus OTLP/JSON spans+metrics on stdout.
# tshark: dissect the same protocols and print one field per matching frame.
# (Debian 12's tshark 4.0 has no Redis dissector; port 6379 frames are selected instead.)
# Each run reports wall and CPU (user+sys) seconds; the ratios use CPU time, which other
# processes on a loaded machine disturb less than wall-clock time.
run() { # OUT CMD...: "wall cpu" of CMD with stdout to OUT (a failing CMD gives "0 0")
  local out=$1; shift
  python3 - "$out" "$@" <<'PYRUN'
import resource, subprocess, sys, time
t = time.time(); r = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "wb"), stderr=subprocess.DEVNULL)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{time.time()-t:.3f} {u.ru_utime+u.ru_stime:.3f}" if r.returncode == 0 else "0 0")
PYRUN
}
c=$(run "$work/count.txt" taskset -c 0 "$bin" replay "$work/big.pcap" --format count)
o=$(run /dev/null taskset -c 0 "$bin" replay "$work/big.pcap" --format otlp-json)
# The protobuf file format (a build without it prints no ratio for it).
p=$(run /dev/null taskset -c 0 "$bin" replay "$work/big.pcap" --format otlp)
t=$(run "$work/tshark.txt" taskset -c 0 tshark -r "$work/big.pcap" -n \
  -Y 'http || http2 || dns || kafka || icmp || icmpv6 || tcp.port == 6379' -T fields -e frame.number)
python3 - "$pkts" "$(cat "$work/count.txt")" "${#inputs[@]}" "$c" "$o" "$p" "$t" <<'PY'
import sys
pkts, counts, n_in = int(sys.argv[1]), sys.argv[2], sys.argv[3]
(cw, c), (ow, o), (pw, p), (tw, t) = (map(float, a.split()) for a in sys.argv[4:8])
ex = int(counts.split()[0].split("=")[1])
print(f"capture: {pkts} packets, {n_in} real-peer captures replicated; {counts}")
def line(what, wall, cpu, per_ex=True):
    extra = f" {ex/cpu:10,.0f} exchanges/CPU-s" if per_ex else ""
    print(f"{what:33s}: {wall:7.2f} s wall {cpu:7.2f} s CPU {pkts/cpu:12,.0f} packets/CPU-s{extra} (1 core)")
line("cnflow replay --format count", cw, c)
line("cnflow replay --format otlp-json", ow, o)
if p > 0:
    line("cnflow replay --format otlp", pw, p)
line("tshark -r -Y ... -T fields", tw, t, False)
print(f"ratio (CPU time): {t/c:.1f}x tshark (decode), {t/o:.1f}x tshark (with OTLP/JSON output)"
      + (f", {t/p:.1f}x tshark (with OTLP protobuf output)" if p > 0 else ""))
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
