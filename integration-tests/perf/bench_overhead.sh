#!/usr/bin/env bash
# Live overhead: the same workload with and without the agent attached, alternating,
# in one run. Server and client live in two network namespaces joined by a veth pair
# (10.200.90.0/24); the agent attaches to the server's veth inside the server's netns.
# Usage: bench_overhead.sh [ROUNDS]   (root; redis-server, redis-benchmark, nginx, wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
cargo build --release -q --bin cnflow
bin=$PWD/target/release/cnflow
A=cnfperf-a B=cnfperf-b
work=$(mktemp -d)
cleanup() {
  set +e
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null
  ip netns pids $B 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids $A 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.3
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add va netns $A type veth peer name vb netns $B
ip -n $A addr add 10.200.90.1/24 dev va; ip -n $B addr add 10.200.90.2/24 dev vb
ip -n $A link set va up; ip -n $B link set vb up; ip -n $A link set lo up; ip -n $B link set lo up
ip netns exec $B redis-server --bind 10.200.90.2 --port 6379 --save '' --appendonly no --protected-mode no --daemonize no >/dev/null &
mkdir -p "$work/www"; head -c 1024 /dev/urandom | base64 > "$work/www/index.html"
cat > "$work/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 10.200.90.2:8080; root $work/www; } }
NGX
ip netns exec $B nginx -c "$work/nginx.conf" &
sleep 1
start_agent() {
  CNFLOW_INTERFACES=vb ip netns exec $B "$bin" run --format none > "$work/agent.out" 2> "$work/agent.err" &
  agent=$!
  for _ in $(seq 50); do grep -q "attached" "$work/agent.err" 2>/dev/null && break; sleep 0.2; done
}
stop_agent() { kill -INT "$agent"; wait "$agent" 2>/dev/null || true; agent=; }
redis_run() { # prints "rps p99_ms"
  ip netns exec $A redis-benchmark -h 10.200.90.2 -p 6379 -n 200000 -c 50 -t set,get $1 --csv 2>/dev/null |
    python3 -c 'import csv,sys
rows=[r for r in csv.DictReader(sys.stdin)]
print(sum(float(r["rps"]) for r in rows)/len(rows), max(float(r["p99_latency_ms"]) for r in rows))'
}
wrk_run() {
  ip netns exec $A wrk -t1 -c32 -d5s --latency http://10.200.90.2:8080/ 2>/dev/null |
    python3 -c 'import sys,re
t=sys.stdin.read(); rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
m=re.search(r"99%\s+([\d.]+)(us|ms|s)",t); v=float(m.group(1))*{"us":0.001,"ms":1,"s":1000}[m.group(2)]
print(rps, v)'
}
declare -A res
for r in $(seq "$rounds"); do
  for mode in off on; do
    [ $mode = on ] && start_agent
    res[redis,$mode]+="$(redis_run '') "$'\n'
    res[redisP16,$mode]+="$(redis_run '-P 16') "$'\n'
    res[wrk,$mode]+="$(wrk_run) "$'\n'
    [ $mode = on ] && stop_agent
  done
done
for w in redis redisP16 wrk; do
  printf '%s\n' "${res[$w,off]}" > "$work/$w.off"; printf '%s\n' "${res[$w,on]}" > "$work/$w.on"
  python3 - "$w" "$work/$w.off" "$work/$w.on" <<'PY'
import sys, statistics
def load(p):
    rows=[l.split() for l in open(p) if l.strip()]
    return statistics.median(float(r[0]) for r in rows), statistics.median(float(r[1]) for r in rows)
name=sys.argv[1]; (b_rps,b_p99),(a_rps,a_p99)=load(sys.argv[2]),load(sys.argv[3])
print(f"{name:9s} baseline {b_rps:10,.0f} req/s p99 {b_p99:7.3f} ms | with agent {a_rps:10,.0f} req/s p99 {a_p99:7.3f} ms | throughput {100*a_rps/b_rps:5.1f}% p99 {100*(a_p99/b_p99-1):+5.1f}%")
PY
done
echo "agent counters (last run):"; grep -iE "ring_full|drop" "$work/agent.err" | tail -3 || true
