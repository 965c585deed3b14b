#!/usr/bin/env bash
# Completeness under load: Redis SETs at increasing load (pipeline depth 1..64,
# 50 connections) against a server in a netns while the agent captures on the
# server's veth. Reports requests/s achieved, SET exchanges decoded ÷ SETs issued,
# and the loss counters that explain any gap (kernel ring full, channel full,
# flow/decoder drops).   Usage: bench_completeness.sh [REQUESTS_PER_ROUND]  (root)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200000}
cargo build --release -q --bin cnflow
bin=$PWD/target/release/cnflow
A=cnfcmp-a B=cnfcmp-b
work=$(mktemp -d)
cleanup() {
  set +e
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.3; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add vca netns $A type veth peer name vcb netns $B
ip -n $A addr add 10.200.92.1/24 dev vca; ip -n $B addr add 10.200.92.2/24 dev vcb
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set vca up; ip -n $B link set vcb up
ip netns exec $B redis-server --bind 10.200.92.2 --port 6379 --save '' --appendonly no --protected-mode no >/dev/null &
sleep 1
printf '%-6s %12s %10s %10s %9s  %s\n' pipe "req/s" issued decoded complete "loss counters (non-zero)"
for p in 1 4 16 64; do
  CNFLOW_INTERFACES=vcb ip netns exec $B "$bin" run --format exchanges > "$work/ex.jsonl" 2> "$work/agent.err" &
  agent=$!
  for _ in $(seq 100); do grep -q "capture attached" "$work/agent.err" && break; sleep 0.1; done
  rps=$(ip netns exec $A redis-benchmark -h 10.200.92.2 -n "$n" -c 50 -P "$p" -t set --csv 2>/dev/null |
        python3 -c 'import csv,sys;print(int(float(next(csv.DictReader(sys.stdin))["rps"])))')
  sleep 1; kill -INT $agent; wait $agent 2>/dev/null || true
  got=$(grep -c '"command":"SET"' "$work/ex.jsonl" || true)
  loss=$(grep "final counters" "$work/agent.err" | grep -oE "(ring_full|channel_full|evicted|overflow|pending_evicted|parse_errors|unpaired)[^ ]*=[0-9]+" | tr '\n' ' ' || true)
  python3 -c "import sys;n,g=int(sys.argv[1]),int(sys.argv[2]);print(f'{sys.argv[3]:<6} {int(sys.argv[4]):12,} {n:10,} {g:10,} {100*g/n:8.2f}%  {sys.argv[5]}')" "$n" "$got" "$p" "$rps" "${loss:-none}"
done
