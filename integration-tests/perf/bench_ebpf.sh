#!/usr/bin/env bash
# Cost of the eBPF TC program per packet kind, for one or more cnflow builds in one run.
# Usage: bench_ebpf.sh [BIN...]   (root, bpftool; default BIN: target/release/cnflow)
#   REPEAT=20000 ROUNDS=5 LIVE_MB=400 (0 skips the live part) RING_BYTES=268435456 (agent ring)
#
# 1. BPF_PROG_TEST_RUN (`bpftool prog run ... repeat N`) of the loaded cnflow_egress
#    program on crafted Ethernet frames; the kernel reports the mean ns per run.
#    Each build runs as a real agent (`cnflow run --format none`) attached to a
#    veth in a private netns, so the maps are configured as in production
#    (snaplen 2048, GSO split on) and the reader drains the ring meanwhile.
#    Kinds: TCP pure ACK; TCP with 64 B / 1448 B payload; a 2×1448 B GSO skb
#    (test runs take at most ~3.7 KB of data, so no 64 KB one here); UDP DNS-sized;
#    VXLAN-wrapped TCP with 64 B payload; IPv6 TCP with 64 B payload.
#    Rounds alternate between the builds; the median per kind is printed.
# 2. Live bulk TCP (kernel.bpf_stats_enabled): LIVE_MB of 64 KB writes over the veth
#    pair, agent attached to the sender side: egress sees TSO super-packets (64 KB
#    GSO split into wire segments), ingress the receiver's pure ACKs. Prints ns per
#    program run and records emitted per run, from run_time_ns/run_cnt and the
#    kernel's own counters.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v bpftool >/dev/null || { echo "needs bpftool (apt-get install bpftool)" >&2; exit 2; }
REPEAT=${REPEAT:-20000} ROUNDS=${ROUNDS:-5} LIVE_MB=${LIVE_MB:-400} RING_BYTES=${RING_BYTES:-268435456}
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then cargo build --release -q --bin cnflow; bins=(target/release/cnflow); fi
NS=cnfebpf-a NS2=cnfebpf-b
work=$(mktemp -d)
stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled)
agent=
cleanup() {
  set +e
  [ -n "$agent" ] && kill -INT "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  ip netns pids $NS2 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids $NS 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.2
  ip netns del $NS 2>/dev/null; ip netns del $NS2 2>/dev/null
  echo "$stats_was" > /proc/sys/kernel/bpf_stats_enabled
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $NS 2>/dev/null || true; ip netns del $NS2 2>/dev/null || true
ip netns add $NS; ip netns add $NS2
ip link add va netns $NS type veth peer name vb netns $NS2
ip -n $NS addr add 10.200.91.1/24 dev va; ip -n $NS2 addr add 10.200.91.2/24 dev vb
ip -n $NS link set va up; ip -n $NS2 link set vb up; ip -n $NS link set lo up; ip -n $NS2 link set lo up

# Crafted frames (data) and, for the GSO kind, a struct __sk_buff (ctx) with gso_size.
python3 - "$work" <<'PY'
import struct, sys
w = sys.argv[1]
def eth(t=0x0800): return b'\x02\x00\x00\x00\x00\x01' + b'\x02\x00\x00\x00\x00\x02' + struct.pack('!H', t)
def ip4(proto, l4, s=(10, 200, 91, 1), d=(10, 200, 91, 2)):
    return struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, bytes(s), bytes(d)) + l4
def ip6(nh, l4):
    return struct.pack('!IHBB16s16s', 6 << 28, len(l4), nh, 64, bytes.fromhex('fd00' + '00' * 13 + '01'),
                       bytes.fromhex('fd00' + '00' * 13 + '02')) + l4
# TCP header with the timestamp option (32 bytes), as Linux sends it.
def tcp(payload, flags=0x18): return struct.pack('!HHIIBBHHH', 40000, 6379, 1000, 2000, 8 << 4, flags, 512, 0, 0) + b'\x01\x01\x08\x0a' + b'\0' * 8 + payload
def udp(payload, dport=53): return struct.pack('!HHHH', 40000, dport, 8 + len(payload), 0) + payload
kinds = {
    'tcp_pure_ack': eth() + ip4(6, tcp(b'', 0x10)),
    'tcp_64B': eth() + ip4(6, tcp(b'r' * 64)),
    'tcp_1448B': eth() + ip4(6, tcp(b'h' * 1448)),
    'tcp_gso_2x1448B': eth() + ip4(6, tcp(b'g' * 2896)),
    'udp_dns_40B': eth() + ip4(17, udp(b'd' * 40)),
    'vxlan_tcp_64B': eth() + ip4(17, udp(b'\x08\0\0\0\0\0\x01\0' + eth() + ip4(6, tcp(b'v' * 64), (10, 200, 92, 1), (10, 200, 92, 2)), 4789)),
    'ipv6_tcp_64B': eth(0x86DD) + ip6(6, tcp(b's' * 64)),
}
for k, v in kinds.items():
    open(f'{w}/{k}.pkt', 'wb').write(v)
ctx = bytearray(192)  # struct __sk_buff; gso_size at byte 176 (BTF of 6.18)
struct.pack_into('<I', ctx, 176, 1448)
open(f'{w}/tcp_gso_2x1448B.ctx', 'wb').write(bytes(ctx))
PY
kinds="tcp_pure_ack tcp_64B tcp_1448B tcp_gso_2x1448B udp_dns_40B vxlan_tcp_64B ipv6_tcp_64B"

# Starts BIN as the agent on va; sets $agent, $prog_in, $prog_eg, $counters_map.
start_agent() {
  CNFLOW_INTERFACES=va CNFLOW_RING_BUFFER_BYTES=$RING_BYTES CNFLOW_TLS=false \
    ip netns exec $NS "$1" run --format none > /dev/null 2> "$work/agent.err" &
  agent=$!
  # Verification takes ~1M instructions (several seconds, more under load).
  for _ in $(seq 600); do grep -q "attached" "$work/agent.err" 2>/dev/null && break; sleep 0.1; done
  # The programs and maps this agent holds (its fds), not another cnflow's.
  local ids
  ids=$(cat /proc/$agent/fdinfo/* 2>/dev/null | awk '/^(prog_id|map_id):/{print $1 $2}' | sort -u)
  read -r prog_in prog_eg counters_map < <(bpftool -j prog show | python3 -c '
import json, sys, subprocess
ids = set(sys.argv[1].split())
ps = [p for p in json.load(sys.stdin) if "prog_id:%d" % p["id"] in ids]
by = {p["name"]: p["id"] for p in ps}
ms = json.loads(subprocess.check_output(["bpftool", "-j", "map", "show"]))
cm = [m["id"] for m in ms if m.get("name") == "COUNTERS" and "map_id:%d" % m["id"] in ids]
print(by["cnflow_ingress"], by["cnflow_egress"], cm[0])' "$ids") || { echo "agent $1 not attached:" >&2; tail -5 "$work/agent.err" >&2; exit 1; }
}
stop_agent() { kill -INT "$agent"; wait "$agent" 2>/dev/null || true; agent=; }
# Kernel counters of the running agent (summed over CPUs) as "name=value ..." for a few names.
counters() {
  bpftool -j map dump id "$counters_map" | python3 -c '
import json, sys
names = ["seen","filtered","emitted","ring_full","not_ip","truncated","no_payload","gso_split","decap_vxlan"]
out = {}
for e in json.load(sys.stdin):
    k = e["key"] if isinstance(e["key"], int) else int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little")
    vals = e.get("values", [])
    s = sum((v["value"] if isinstance(v["value"], int) else int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little")) for v in vals)
    if k < len(names): out[names[k]] = s
print(" ".join(f"{n}={out.get(n,0)}" for n in names))'
}

echo "bench_ebpf: ${#bins[@]} build(s), REPEAT=$REPEAT ROUNDS=$ROUNDS, $(nproc) cores, $(date -u '+%F %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A res
for r in $(seq "$ROUNDS"); do
  for i in "${!bins[@]}"; do
    start_agent "${bins[$i]}"
    for k in $kinds; do
      ctx=()
      [ -f "$work/$k.ctx" ] && ctx=(ctx_in "$work/$k.ctx")
      ns=$(bpftool -j prog run id "$prog_eg" data_in "$work/$k.pkt" "${ctx[@]}" repeat "$REPEAT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration"])')
      res[$i,$k]+="$ns "
      sleep 0.2  # let the reader drain the ring
    done
    [ "$r" = "$ROUNDS" ] && echo "  counters after the last round, build $i: $(counters); $(python3 integration-tests/perf/bpf_verified_insns.py "$prog_eg" | cut -d' ' -f3-) (limit 1000000)"
    stop_agent
  done
done
printf '%-18s' "kind (ns/run)"; for i in "${!bins[@]}"; do printf ' %14s' "build$i"; done; echo
for k in $kinds; do
  printf '%-18s' "$k"
  for i in "${!bins[@]}"; do
    printf ' %14s' "$(echo ${res[$i,$k]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
  done
  echo
done
for i in "${!bins[@]}"; do echo "build$i = ${bins[$i]}"; done

if [ "$LIVE_MB" != 0 ]; then
  echo 1 > /proc/sys/kernel/bpf_stats_enabled
  ip netns exec $NS2 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.200.91.2", 5001)); s.listen(4)
while True:
    c, _ = s.accept()
    while c.recv(1 << 20): pass
    c.close()' &
  sleep 0.5
  echo "live bulk TCP, $LIVE_MB MB in 64 KB writes (ns per program run; records per egress run):"
  for i in "${!bins[@]}"; do
    start_agent "${bins[$i]}"
    c0=$(counters)
    s0=$(bpftool -j prog show | python3 -c 'import json,sys; d={p["id"]:p for p in json.load(sys.stdin)}; a,b=map(int,sys.argv[1:]); print(d[a].get("run_time_ns",0), d[a].get("run_cnt",0), d[b].get("run_time_ns",0), d[b].get("run_cnt",0))' "$prog_in" "$prog_eg")
    ip netns exec $NS python3 -c '
import socket, sys
s = socket.create_connection(("10.200.91.2", 5001)); buf = b"x" * 65536
for _ in range(int(sys.argv[1]) * 16): s.sendall(buf)
s.close()' "$LIVE_MB"
    s1=$(bpftool -j prog show | python3 -c 'import json,sys; d={p["id"]:p for p in json.load(sys.stdin)}; a,b=map(int,sys.argv[1:]); print(d[a].get("run_time_ns",0), d[a].get("run_cnt",0), d[b].get("run_time_ns",0), d[b].get("run_cnt",0))' "$prog_in" "$prog_eg")
    c1=$(counters)
    python3 - "$s0" "$s1" "$c0" "$c1" "${bins[$i]}" <<'PY'
import sys
a = list(map(int, sys.argv[1].split())); b = list(map(int, sys.argv[2].split()))
c0 = dict(kv.split("=") for kv in sys.argv[3].split()); c1 = dict(kv.split("=") for kv in sys.argv[4].split())
d = {k: int(c1[k]) - int(c0[k]) for k in c0}
it, ir, et, er = (b[j] - a[j] for j in range(4))
print(f"  {sys.argv[5]}: egress {et/max(er,1):7.0f} ns/run over {er} runs ({d['emitted']/max(er,1):.1f} records/run, gso_split={d['gso_split']}); "
      f"ingress {it/max(ir,1):5.0f} ns/run over {ir} runs (no_payload={d['no_payload']}); ring_full={d['ring_full']}")
PY
    stop_agent
  done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
