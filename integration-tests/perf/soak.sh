#!/usr/bin/env bash
# Soak (not in CI): mixed traffic with constant connection churn for a bounded
# time while the agent captures on the servers' veth. Redis (a new connection
# per request, plus pipelined keep-alive), HTTP/1.1 (ab, a connection per
# request), HTTP/2 (h2load, new connections each round) and DNS (dig, a new
# UDP flow per query) from one netns to servers in another. Every SAMPLE_S
# seconds the agent's RSS and its counters (flow-table size, flows created,
# spans, losses) go into a CSV; a summary follows (start/end/max RSS, RSS
# trend over the second half, flow-table size trend).
#
# Usage: soak.sh [DURATION_S=600] [SAMPLE_S=10] [OUT_DIR=target/soak]   (root)
#        BUILD=debug soak.sh ...  to soak the debug build (default: release)
#        CNFLOW_BIN=path soak.sh ... to use an already built binary
set -euo pipefail
cd "$(dirname "$0")/../.."
dur=${1:-600}
every=${2:-10}
out=${3:-$PWD/target/soak}
build=${BUILD:-release}
if [ -n "${CNFLOW_BIN:-}" ]; then
  bin=$(realpath "$CNFLOW_BIN")
elif [ "$build" = release ]; then
  cargo build --release -q --bin cnflow
  bin=$PWD/target/release/cnflow
else
  cargo build -q --bin cnflow
  bin=$PWD/target/debug/cnflow
fi
mkdir -p "$out"
A=cnfsoak-a B=cnfsoak-b
ipa=10.200.93.1 ipb=10.200.93.2
work=$(mktemp -d)
# nginx's workers run as nobody: they must reach $work/www (else every answer is a 403).
chmod 755 "$work"
agent=
cleanup() {
  set +e
  [ -n "$agent" ] && kill -INT "$agent" 2>/dev/null && sleep 5
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.5
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add vsa netns $A type veth peer name vsb netns $B
ip -n $A addr add $ipa/24 dev vsa; ip -n $B addr add $ipb/24 dev vsb
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set vsa up; ip -n $B link set vsb up
# Thousands of short client connections a second: reuse TIME_WAIT ports.
ip netns exec $A sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"

# Servers in B.
mkdir -p "$work/www/users"
for i in $(seq 0 49); do echo "user $i" > "$work/www/users/$i"; done
cat > "$work/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000;
  server { listen $ipb:8080; root $work/www; }
  server { listen $ipb:8081 http2; root $work/www; } }
EOF
ip netns exec $B nginx -c "$work/nginx.conf" &
ip netns exec $B redis-server --bind $ipb --port 6379 --save '' --appendonly no --protected-mode no >/dev/null &
ip netns exec $B dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=$ipb --address=/soak.test/10.200.93.9 --user=root --pid-file >/dev/null 2>&1 &
sleep 1

CNFLOW_INTERFACES=vsb CNFLOW_STATS_INTERVAL_SECS=$every RUST_LOG=info NO_COLOR=1 \
  ip netns exec $B "$bin" run --format otlp-json > /dev/null 2> "$out/agent.err" &
for _ in $(seq 300); do grep -q "capture attached" "$out/agent.err" && break; sleep 0.1; done
agent=$(pgrep -f "^$bin run --format otlp-json" | head -1)
[ -n "$agent" ] || { echo "agent did not start"; cat "$out/agent.err"; exit 1; }

end=$(( $(date +%s) + dur ))
for i in $(seq 200); do echo "q$i-$RANDOM.soak.test"; done > "$work/names.txt"
loop() { while [ "$(date +%s)" -lt "$end" ]; do "$@" >/dev/null 2>&1 || true; sleep 1; done; }
inA() { ip netns exec $A "$@"; }
# Redis: a new connection per request (churn) and pipelined keep-alive.
loop inA redis-benchmark -h $ipb -n 300 -c 10 -k 0 -t set,get,incr -q &
loop inA redis-benchmark -h $ipb -n 5000 -c 4 -P 8 -t set,get,lpush -q &
# HTTP/1.1 without keep-alive (one connection per request) and HTTP/2 (h2c, new connections per round).
loop inA ab -q -n 400 -c 8 http://$ipb:8080/users/7 &
loop inA h2load -n 400 -c 4 -m 8 http://$ipb:8081/users/3 &
# DNS: each query from a new source port = a new UDP flow.
loop inA dig @$ipb -f "$work/names.txt" +tries=1 +time=1 +short &

python3 - "$agent" "$out/agent.err" "$out/soak.csv" "$every" "$end" <<'PY'
import re, sys, time
pid, err, csv_path, every, end = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
cols = {
    "flows_active": "cnflow.flow.active",
    "flows_created_tcp": "cnflow.flow.created{transport=tcp}",
    "flows_created_udp": "cnflow.flow.created{transport=udp}",
    "flows_evicted": "cnflow.flow.closed{reason=evicted}",
    "spans": "cnflow.telemetry.spans{span.kind=server}",
    "ring_full": "cnflow.capture.packets{reason=ring_full}",
    "packets_delivered": "cnflow.capture.packets{reason=delivered}",
    "pending_evicted": "cnflow.protocol.pending_evicted",
    "parse_errors": "cnflow.protocol.parse_errors",
}
def status(key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key + ":"):
            return int(l.split()[1])
    return 0
def counters():
    line = ""
    for l in open(err, errors="replace"):
        if "counters:" in l:
            line = l
    kv = dict(re.findall(r"(\S+?)=(\d+)(?=\s|$)", line.split("counters:", 1)[-1]))
    row = {}
    for c, k in cols.items():
        # Sum over attribute sets when the key has none (e.g. parse_errors{protocol=...}).
        row[c] = sum(int(v) for n, v in kv.items() if n == k or ("{" not in k and n.startswith(k + "{")))
    return row
t0 = time.time()
with open(csv_path, "w") as f:
    f.write("t_s,rss_kib,hwm_kib," + ",".join(cols) + "\n")
    while True:
        try:
            rss, hwm = status("VmRSS"), status("VmHWM")
        except FileNotFoundError:
            sys.exit("agent exited")
        row = counters()
        f.write(f"{time.time() - t0:.0f},{rss},{hwm}," + ",".join(str(row[c]) for c in cols) + "\n")
        f.flush()
        if time.time() >= end:
            break
        time.sleep(every)
PY
wait_until=$(( $(date +%s) + 15 ))
while [ "$(date +%s)" -lt "$wait_until" ] && [ -n "$(jobs -pr | head -1)" ]; do sleep 1; done
kill -INT "$agent"
for _ in $(seq 60); do [ -d "/proc/$agent" ] || break; sleep 0.5; done
agent=

python3 - "$out/soak.csv" "$out/agent.err" "$build" "$dur" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
build, dur = sys.argv[3], sys.argv[4]
rss = [int(r["rss_kib"]) / 1024 for r in rows]
flows = [int(r["flows_active"]) for r in rows]
t = [int(r["t_s"]) for r in rows]
def slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
half = len(rows) // 2
last = rows[-1]
print(f"soak: {build} build, {dur} s, {len(rows)} samples every ~{t[1] - t[0] if len(t) > 1 else 0} s")
print(f"RSS MiB: start {rss[0]:.1f}, end {rss[-1]:.1f}, max {max(rss):.1f}; "
      f"trend over the second half {slope(t[half:], rss[half:]) * 60:+.2f} MiB/min")
print(f"flow table: start {flows[0]}, end {flows[-1]}, max {max(flows)}, mean of second half "
      f"{sum(flows[half:]) / max(1, len(flows) - half):.0f}; trend over the second half "
      f"{slope(t[half:], flows[half:]) * 60:+.0f} flows/min")
print(f"totals: {int(last['flows_created_tcp']):,} TCP + {int(last['flows_created_udp']):,} UDP flows created, "
      f"{int(last['spans']):,} spans, {int(last['packets_delivered']):,} packets; losses: ring_full "
      f"{last['ring_full']}, flows evicted {last['flows_evicted']}, pending requests evicted "
      f"{last['pending_evicted']}, parse errors {last['parse_errors']}")
final = [l for l in open(sys.argv[2], errors="replace") if "final counters" in l]
if final:
    print("agent final counters:", final[-1].split("final counters:", 1)[1].strip())
PY
echo "CSV: $out/soak.csv"
