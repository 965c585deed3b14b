#!/usr/bin/env bash
# Live overhead: the same workload with and without the agent attached, alternating,
# in one run. Server and client live in two network namespaces joined by a veth pair
# (10.200.90.0/24); the agent attaches to the server's veth inside the server's netns.
# Usage: bench_overhead.sh [ROUNDS] [shared|pinned]   (root; redis-server, redis-benchmark, nginx, wrk)
#   shared (default): client, servers and agent all float over every core.
#   pinned: client and servers on core 0, the agent on core 1, so the figure is the
#           overhead on the workload's core (the kernel side of capture still runs
#           there, in the packet path); needs ≥ 2 cores.
# Besides throughput and p99 it reports the agent's CPU time (utime+stime from
# /proc) per 1,000 requests, and with BPF_STATS=1 the eBPF program's run time per
# packet (kernel.bpf_stats_enabled, which itself adds a little overhead).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
mode=${2:-shared}
case "$mode" in
  shared) wl=(); ag=() ;;
  pinned) wl=(taskset -c 0); ag=(taskset -c 1) ;;
  *) echo "mode must be shared or pinned" >&2; exit 2 ;;
esac
# CNFLOW_BIN=path runs another build (e.g. to compare before/after a change).
if [ -z "${CNFLOW_BIN:-}" ]; then cargo build --release -q --bin cnflow; fi
bin=$(realpath "${CNFLOW_BIN:-target/release/cnflow}")
A=cnfperf-a B=cnfperf-b
work=$(mktemp -d)
stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled)
cleanup() {
  set +e
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null
  ip netns pids $B 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids $A 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.3
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
  echo "$stats_was" > /proc/sys/kernel/bpf_stats_enabled
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add va netns $A type veth peer name vb netns $B
ip -n $A addr add 10.200.90.1/24 dev va; ip -n $B addr add 10.200.90.2/24 dev vb
ip -n $A link set va up; ip -n $B link set vb up; ip -n $A link set lo up; ip -n $B link set lo up
ip netns exec $B "${wl[@]}" redis-server --bind 10.200.90.2 --port 6379 --save '' --appendonly no --protected-mode no --daemonize no >/dev/null &
mkdir -p "$work/www"; head -c 1024 /dev/urandom | base64 > "$work/www/index.html"
cat > "$work/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 10.200.90.2:8080; root $work/www; } }
NGX
ip netns exec $B "${wl[@]}" nginx -c "$work/nginx.conf" &
sleep 1
[ "${BPF_STATS:-0}" = 1 ] && echo 1 > /proc/sys/kernel/bpf_stats_enabled
start_agent() {
  CNFLOW_INTERFACES=vb ip netns exec $B "${ag[@]}" "$bin" run --format none > "$work/agent.out" 2> "$work/agent.err" &
  agent=$!
  for _ in $(seq 50); do grep -q "attached" "$work/agent.err" 2>/dev/null && break; sleep 0.2; done
}
stop_agent() { kill -INT "$agent"; wait "$agent" 2>/dev/null || true; agent=; }
# Agent CPU time so far in ms (0 when it is not running).
agent_ms() {
  if [ -n "${agent:-}" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$agent/stat"
  else echo 0; fi
}
# eBPF programs' total run time (ns) and runs, summed over cnflow's programs.
bpf_ns() {
  [ "${BPF_STATS:-0}" = 1 ] || { echo "0 0"; return; }
  bpftool -j prog show 2>/dev/null | python3 -c 'import json,sys
ps=[p for p in json.load(sys.stdin) if p.get("name","").startswith("cnflow_")]
print(sum(p.get("run_time_ns",0) for p in ps), sum(p.get("run_cnt",0) for p in ps))'
}
# Each prints "rps p99_ms requests".
redis_run() {
  ip netns exec $A "${wl[@]}" redis-benchmark -h 10.200.90.2 -p 6379 -n 200000 -c 50 -t set,get $1 --csv 2>/dev/null |
    python3 -c 'import csv,sys
rows=[r for r in csv.DictReader(sys.stdin)]
print(sum(float(r["rps"]) for r in rows)/len(rows), max(float(r["p99_latency_ms"]) for r in rows), 200000*len(rows))'
}
wrk_run() {
  ip netns exec $A "${wl[@]}" wrk -t1 -c32 -d5s --latency http://10.200.90.2:8080/ 2>/dev/null |
    python3 -c 'import sys,re
t=sys.stdin.read(); rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
m=re.search(r"99%\s+([\d.]+)(us|ms|s)",t); v=float(m.group(1))*{"us":0.001,"ms":1,"s":1000}[m.group(2)]
n=int(re.search(r"(\d+) requests in",t).group(1))
print(rps, v, n)'
}
# One workload run: "rps p99_ms agent_ms_per_1k_requests bpf_ns_per_run".
measure() {
  local c0 c1 b0 b1 out
  c0=$(agent_ms); b0=$(bpf_ns)
  out=$("$@")
  c1=$(agent_ms); b1=$(bpf_ns)
  python3 -c 'import sys
rps,p99,n=map(float,sys.argv[1].split()); c0,c1=float(sys.argv[2]),float(sys.argv[3])
t0,r0=map(int,sys.argv[4].split()); t1,r1=map(int,sys.argv[5].split())
print(rps, p99, 1000*(c1-c0)/n, (t1-t0)/(r1-r0) if r1>r0 else 0)' "$out" "$c0" "$c1" "$b0" "$b1"
}
echo "mode=$mode rounds=$rounds $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A res
for r in $(seq "$rounds"); do
  for m in off on; do
    [ $m = on ] && start_agent
    res[redis,$m]+="$(measure redis_run '') "$'\n'
    res[redisP16,$m]+="$(measure redis_run '-P 16') "$'\n'
    res[wrk,$m]+="$(measure wrk_run) "$'\n'
    [ $m = on ] && stop_agent
  done
done
for w in redis redisP16 wrk; do
  printf '%s\n' "${res[$w,off]}" > "$work/$w.off"; printf '%s\n' "${res[$w,on]}" > "$work/$w.on"
  python3 - "$w" "$work/$w.off" "$work/$w.on" <<'PY'
import sys, statistics
def load(p):
    rows=[l.split() for l in open(p) if l.strip()]
    return [statistics.median(float(r[i]) for r in rows) for i in range(4)]
name=sys.argv[1]; (b_rps,b_p99,_,_),(a_rps,a_p99,cpu,bpf)=load(sys.argv[2]),load(sys.argv[3])
extra=f" | eBPF {bpf:5.0f} ns/packet" if bpf else ""
print(f"{name:9s} baseline {b_rps:10,.0f} req/s p99 {b_p99:7.3f} ms | with agent {a_rps:10,.0f} req/s p99 {a_p99:7.3f} ms"
      f" | throughput {100*a_rps/b_rps:5.1f}% p99 {100*(a_p99/b_p99-1):+5.1f}% | agent CPU {cpu:6.2f} ms/1k req{extra}")
PY
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "agent counters (last run):"; grep -iE "ring_full|drop" "$work/agent.err" | tail -3 || true
