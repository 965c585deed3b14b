#!/usr/bin/env bash
# A/B replay throughput: two cnflow binaries (e.g. a previous build and this one) on the same
# large capture, alternating rounds, CPU time (user+sys) per run, pinned to core 0.
# Usage: bench_replay_ab.sh OLD NEW PCAPDIR MIN_PACKETS ROUNDS
set -euo pipefail
old=$1 new=$2 dir=$3 want=${4:-1000000} rounds=${5:-3}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
inputs=()
for f in "$dir"/*.pcap; do
  lt=$(python3 -c 'import struct,sys;d=open(sys.argv[1],"rb").read(24);e="<" if d[:4] in (b"\xd4\xc3\xb2\xa1",b"\x4d\x3c\xb2\xa1") else ">";print(struct.unpack(e+"I",d[20:24])[0])' "$f")
  case "$(basename "$f")" in *trunc*|*lost*|*mid*|*snap*|*_dup*|*reordered*|*nsec*|*rawip*) continue;; esac
  [ "$lt" = 1 ] && inputs+=("$f")
done
python3 "$(dirname "$0")/replicate_pcap.py" "$work/big.pcap" "$want" "${inputs[@]}" >/dev/null
pkts=$(python3 -c 'import sys,struct
d=open(sys.argv[1],"rb").read(); o=24; n=0
while o+16<=len(d): n+=1; o+=16+struct.unpack("<I",d[o+8:o+12])[0]
print(n)' "$work/big.pcap")
echo "inputs=${#inputs[@]} packets=$pkts load=$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for b in old new; do
    bin=${!b}
    for fmt in count otlp-json; do
      /usr/bin/time -f "%U %S %e" -o "$work/t" taskset -c 0 "$bin" replay "$work/big.pcap" --format $fmt > "$work/out.$b.$fmt"
      read u s e < "$work/t"
      python3 -c "import sys;u,s,e,p=map(float,sys.argv[1:5]);print(f'round $r $b $fmt: cpu {u+s:.2f}s wall {e:.2f}s -> {p/(u+s)/1e6:.2f}M packets per CPU-second')" "$u" "$s" "$e" "$pkts"
    done
  done
done
echo "count old: $(head -c 300 $work/out.old.count)"; echo "count new: $(head -c 300 $work/out.new.count)"
