#!/usr/bin/env bash
# Completeness under load: redis-benchmark SETs (50 connections) at increasing
# load (pipeline depth 1..64, up to saturation) against a server in a netns
# while the agent, with default settings, captures on the server's veth and
# exports spans over OTLP/gRPC to rotel (blackhole exporter) in the same netns.
#
#   issued   = commands the Redis server executed during the round (INFO commandstats,
#              reset before the agent starts: ground truth independent of cnflow)
#   exported = spans rotel acknowledged (cnflow.export.sent{signal=traces})
#   CPU      = CPU seconds (user+sys) of the agent and of rotel during the round, and the
#              agent's peak RSS (ring mappings included): when export drops appear, they
#              show whether the agent or the receiver was the bottleneck
#
# and the loss counters that explain any gap: kernel ring full (packets), export
# drops, decoder evictions/parse errors, flow evictions.
# Usage: bench_completeness.sh [REQUESTS_PER_ROUND=200000]  (root)
#        CNFLOW_BIN=path to use an already built binary (default: cargo build --release)
#        DOWN=1 exports to a closed port instead (nothing is delivered, the queue fills
#               and stays full): the peak RSS is then the memory of a full export queue
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200000}
if [ -n "${CNFLOW_BIN:-}" ]; then
  bin=$(realpath "$CNFLOW_BIN")
else
  cargo build --release -q --bin cnflow
  bin=$PWD/target/release/cnflow
fi
rotel=$(python3 -c 'import rotel,os;print(os.path.dirname(rotel.__file__))')/rotel-agent
A=cnfcmp-a B=cnfcmp-b
work=$(mktemp -d)
cleanup() {
  set +e
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.5
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add vca netns $A type veth peer name vcb netns $B
ip -n $A addr add 10.200.92.1/24 dev vca; ip -n $B addr add 10.200.92.2/24 dev vcb
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set vca up; ip -n $B link set vcb up
ip netns exec $B redis-server --bind 10.200.92.2 --port 6379 --save '' --appendonly no --protected-mode no >/dev/null &
ip netns exec $B "$rotel" start --otlp-grpc-endpoint 127.0.0.1:14317 --otlp-http-endpoint 127.0.0.1:14318 \
  --exporter blackhole > "$work/rotel.log" 2>&1 &
rotel_pid=$!
# CPU seconds (utime+stime) of a process so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
sleep 1
rcli() { ip netns exec $A redis-cli -h 10.200.92.2 "$@"; }
# Commands executed so far, INFO itself excluded.
calls() { rcli INFO commandstats | python3 -c '
import re, sys
print(sum(int(m) for l in sys.stdin if not l.startswith("cmdstat_info") for m in re.findall(r"^cmdstat_\S+?:calls=(\d+)", l)))'; }
endpoint_port=14317
[ "${DOWN:-0}" = 1 ] && endpoint_port=14319  # nothing listens there
printf '%-5s %10s %10s %10s %9s %9s %9s %8s  %s\n' pipe "req/s" issued exported complete "agent s" "rotel s" "peak MiB" "loss counters (non-zero)"
for p in 1 4 16 64; do
  rcli CONFIG RESETSTAT > /dev/null
  before=$(calls)
  CNFLOW_INTERFACES=vcb OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$endpoint_port RUST_LOG=info NO_COLOR=1 \
    ip netns exec $B "$bin" run --format none > /dev/null 2> "$work/agent.err" &
  agent=$!
  # Up to 30 s: the verifier takes seconds on a loaded machine.
  for _ in $(seq 300); do grep -q "capture attached" "$work/agent.err" && break; sleep 0.1; done
  if ! grep -q "capture attached" "$work/agent.err"; then
    # A round without capture would read as "0 exported, no loss".
    echo "pipe $p: the agent did not attach within 30 s; round skipped"; kill -INT $agent; wait $agent 2>/dev/null || true; continue
  fi
  agent_cpu0=$(cpu_s $agent); rotel_cpu0=$(cpu_s $rotel_pid)
  rps=$(ip netns exec $A redis-benchmark -h 10.200.92.2 -n "$n" -c 50 -P "$p" -t set --csv 2>/dev/null |
        python3 -c 'import csv,sys;print(int(float(next(csv.DictReader(sys.stdin))["rps"])))')
  sleep 1
  res="$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]), float(sys.argv[3]) - float(sys.argv[4]))' \
    "$(cpu_s $agent)" "$agent_cpu0" "$(cpu_s $rotel_pid)" "$rotel_cpu0") $(awk '/^VmHWM/{print $2}' /proc/$agent/status)"
  kill -INT $agent; wait $agent 2>/dev/null || true
  issued=$(( $(calls) - before ))
  python3 - "$work/agent.err" "$p" "$rps" "$issued" $res <<'PY'
import re, sys
err, p, rps, issued = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
agent_s, rotel_s, peak_mib = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]) / 1024
line = [l for l in open(err, errors="replace") if "final counters:" in l][-1]
kv = dict(re.findall(r"(\S+?)=(\d+)(?=\s|$)", line.split("final counters:", 1)[1]))
# Summed over destinations (`{signal=traces,destination=primary}` since destinations are isolated).
sent = sum(int(v) for k, v in kv.items() if re.match(r"cnflow\.export\.sent\{signal=traces[,}]", k))
loss_keys = ("ring_full", "export.dropped", "export.failed", "export.rejected", "pending_evicted",
             "parse_errors", "unpaired", "unmatched", "closed{reason=evicted}", "gap_bytes", "buffer_overflows")
loss = " ".join(f"{k}={v}" for k, v in kv.items() if any(x in k for x in loss_keys) and int(v) > 0)
print(f"{p:<5} {rps:10,} {issued:10,} {sent:10,} {100 * sent / max(1, issued):8.2f}% {agent_s:9.2f} {rotel_s:9.2f} {peak_mib:8.0f}"
      f"  {loss or 'none'}")
PY
done
