#!/usr/bin/env bash
# Live overhead: the same workload with and without the agent attached, alternating,
# in one run. Server and client live in two network namespaces joined by a veth pair
# (10.200.90.0/24); the agent attaches to the server's veth inside the server's netns.
# Usage: bench_overhead.sh [ROUNDS] [shared|pinned]   (root; redis-server, redis-benchmark, nginx, wrk, openssl)
# WORKLOADS="wrk_https" (default "redis redisP16 wrk wrk_https") runs a subset.
# Workloads: redis, redis pipelined, wrk over HTTP, and wrk over HTTPS (nginx `ssl`;
# with the agent on, both wrk and nginx run under the TLS uprobes). Not in the default:
# wrk_paced, the HTTP workload below saturation (PACED_CONNS connections, default 48,
# each waiting PACED_MS, default 1, after every response: about a third of what the
# two cores serve flat out), for the latency a node that is not saturated sees.
#   shared (default): client, servers and agent all float over every core.
#   pinned: client and servers on core 0, the agent on core 1, so the figure is the
#           overhead on the workload's core (the kernel side of capture still runs
#           there, in the packet path); needs ≥ 2 cores.
# Besides throughput and p99 it reports the agent's CPU time (utime+stime from
# /proc) per 1,000 requests, and with BPF_STATS=1 the run time of the agent's eBPF TC programs per
# packet and of its TLS programs per request (kernel.bpf_stats_enabled, which itself
# adds a little overhead).
# AGENT_ENV="K=V K2=V2" passes variables to the agent (e.g. OTEL_TRACES_SAMPLER=traceidratio
# OTEL_TRACES_SAMPLER_ARG=0.01). EXPORT=1 gives the agent a real OTLP/HTTP protobuf endpoint
# (a small receiver on 127.0.0.1 in the server's netns that counts body bytes and answers 200),
# so its CPU includes export, and reports the export bytes per 1,000 requests and the
# receiver's own CPU per 1,000 requests (it shares the two cores with the workload).
set -euo pipefail
# Per-program run time comes from bpftool's JSON: say so before setting anything up.
if [ "${BPF_STATS:-0}" = 1 ] && ! command -v bpftool >/dev/null; then
  echo "BPF_STATS=1 needs bpftool (apt-get install bpftool)" >&2; exit 2
fi
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
# Per-run namespace names: two runs (e.g. by different sessions) do not tear down each other.
A=cnfperf-a-$$ B=cnfperf-b-$$
work=$(mktemp -d)
# nginx's workers run as nobody: without this they cannot reach $work/www and
# answer every request with a 153-byte 403 (all wrk figures before session 33).
chmod 755 "$work"
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
# HTTPS workload: the agent reads its plaintext through the TLS uprobes (CNFLOW_TLS, default on).
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat > "$work/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 10.200.90.2:8080; root $work/www; }
  server { listen 10.200.90.2:8443 ssl; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; root $work/www; } }
NGX
ip netns exec $B "${wl[@]}" nginx -c "$work/nginx.conf" &
sleep 1
if [ "${BPF_STATS:-0}" = 1 ]; then
  echo 1 > /proc/sys/kernel/bpf_stats_enabled
fi
# The OTLP receiver (EXPORT=1): appends the body size of every request to $work/export.bytes.
if [ "${EXPORT:-0}" = 1 ]; then
  cat > "$work/recv.py" <<'PY'
import http.server, sys
out = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); self.rfile.read(n)
        out.write(f"{self.path} {n}\n")
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 4318), H).serve_forever()
PY
  : > "$work/export.bytes"
  ip netns exec $B python3 "$work/recv.py" "$work/export.bytes" &
  # Its CPU (utime+stime) is reported at the end: it runs on the same cores
  # as the workload and the agent, so part of what exporting costs the
  # workload is the receiver's (a collector elsewhere would not be).
  receiver=$!
  export_env=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
else
  export_env=()
fi
# Bytes the receiver got so far for one signal path (traces or metrics).
export_bytes() {
  if [ "${EXPORT:-0}" = 1 ]; then awk -v p="/v1/$1" '$1==p{s+=$2} END{print s+0}' "$work/export.bytes"; else echo 0; fi
}
read -r -a agent_env <<< "${AGENT_ENV:-}"
start_agent() {
  env CNFLOW_INTERFACES=vb "${export_env[@]}" "${agent_env[@]}" ip netns exec $B "${ag[@]}" "$bin" run --format none > "$work/agent.out" 2> "$work/agent.err" &
  agent=$!
  for _ in $(seq 50); do grep -q "attached" "$work/agent.err" 2>/dev/null && break; sleep 0.2; done
}
stop_agent() {
  # Per-program cost over the agent's whole run (the TLS uprobes count one run per SSL call).
  if [ "${BPF_STATS:-0}" = 1 ]; then
    bpftool -j prog show 2>/dev/null | python3 -c 'import json,sys
for p in json.load(sys.stdin):
    n=p.get("name","")
    if n.startswith("cnflow_") and p.get("run_cnt",0):
        print(n, p["run_cnt"], p.get("run_time_ns",0))' >> "$work/progs"
  fi
  kill -INT "$agent"; wait "$agent" 2>/dev/null || true; agent=
  # Spans still batched at the stop are flushed at exit: count them with this round.
  sleep 0.3
  export_round_traces=$(( $(export_bytes traces) - ${traces_at_start:-0} ))
  export_round_metrics=$(( $(export_bytes metrics) - ${metrics_at_start:-0} ))
}
# Agent CPU time so far in ms (0 when it is not running).
agent_ms() {
  if [ -n "${agent:-}" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$agent/stat"
  else echo 0; fi
}
# Total run time (ns) and runs of the agent's TC programs (once per packet), then
# of its TLS programs (uprobes and socket tracepoints). Only the programs whose
# fds this agent holds: another cnflow on the machine is not counted.
bpf_ns() {
  [ "${BPF_STATS:-0}" = 1 ] && [ -n "${agent:-}" ] || { echo "0 0 0 0"; return; }
  local ids
  ids=$(cat /proc/"$agent"/fdinfo/* 2>/dev/null | awk '/^prog_id:/{print $2}' | sort -u | tr '\n' ' ')
  bpftool -j prog show 2>/dev/null | python3 -c 'import json,sys
ids=set(map(int,sys.argv[1].split()))
ps=[p for p in json.load(sys.stdin) if p["id"] in ids]
tc=[p for p in ps if p.get("name") in ("cnflow_ingress","cnflow_egress")]
tls=[p for p in ps if p not in tc]
print(*(sum(p.get(k,0) for p in g) for g in (tc,tls) for k in ("run_time_ns","run_cnt")))' "$ids"
}
# Each prints "rps p99_ms requests".
redis_run() {
  ip netns exec $A "${wl[@]}" redis-benchmark -h 10.200.90.2 -p 6379 -n 200000 -c 50 -t set,get $1 --csv 2>/dev/null |
    python3 -c 'import csv,sys
rows=[r for r in csv.DictReader(sys.stdin)]
print(sum(float(r["rps"]) for r in rows)/len(rows), max(float(r["p99_latency_ms"]) for r in rows), 200000*len(rows))'
}
# wrk's report on stdin -> "rps p99_ms requests"; fails when any answer was not 2xx/3xx.
wrk_report() {
  python3 -c 'import sys,re
t=sys.stdin.read(); rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
m=re.search(r"99%\s+([\d.]+)(us|ms|s)",t); v=float(m.group(1))*{"us":0.001,"ms":1,"s":1000}[m.group(2)]
n=int(re.search(r"(\d+) requests in",t).group(1))
bad=re.search(r"Non-2xx or 3xx responses:\s+(\d+)",t)
if bad: sys.exit(f"wrk: {bad.group(1)} of {n} responses were not 2xx/3xx")
print(rps, v, n)'
}
wrk_run() {
  ip netns exec $A "${wl[@]}" wrk -t1 -c32 -d5s --latency ${1:-http://10.200.90.2:8080/} 2>/dev/null | wrk_report
}
# Think time after every response (wrk's `delay` hook, whole milliseconds): the
# offered load is set by the connections, not by how fast the server answers.
printf 'function delay() return %s end\n' "${PACED_MS:-1}" > "$work/paced.lua"
wrk_paced_run() {
  ip netns exec $A "${wl[@]}" wrk -t1 -c"${PACED_CONNS:-48}" -d5s --latency -s "$work/paced.lua" http://10.200.90.2:8080/ 2>/dev/null |
    wrk_report
}
# One workload run: "rps p99_ms agent_ms_per_1k_requests tc_ns_per_packet tls_ns_per_request"
# (the TLS programs' time per request: their runs differ in kind and cost,
# e.g. no socket tracepoint runs before the node's first TLS use).
measure() {
  local c0 c1 b0 b1 out
  c0=$(agent_ms); b0=$(bpf_ns)
  out=$("$@") || exit 1  # (a subshell: errexit does not reach in here)
  c1=$(agent_ms); b1=$(bpf_ns)
  python3 -c 'import sys
rps,p99,n=map(float,sys.argv[1].split()); c0,c1=float(sys.argv[2]),float(sys.argv[3])
b0=list(map(int,sys.argv[4].split())); b1=list(map(int,sys.argv[5].split()))
per=lambda i: (b1[i]-b0[i])/(b1[i+1]-b0[i+1]) if b1[i+1]>b0[i+1] else 0
print(rps, p99, 1000*(c1-c0)/n, per(0), (b1[2]-b0[2])/n, int(n))' "$out" "$c0" "$c1" "$b0" "$b1"
}
echo "mode=$mode rounds=$rounds $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${AGENT_ENV:-}" ] && echo "agent environment: $AGENT_ENV"
declare -A res
workloads=${WORKLOADS:-redis redisP16 wrk wrk_https}
has() { [[ " $workloads " == *" $1 "* ]]; }
requests_on=0; export_traces=0; export_metrics=0
for r in $(seq "$rounds"); do
  for m in off on; do
    if [ $m = on ]; then traces_at_start=$(export_bytes traces); metrics_at_start=$(export_bytes metrics); start_agent; fi
    if has redis; then res[redis,$m]+="$(measure redis_run '') "$'\n'; fi
    if has redisP16; then res[redisP16,$m]+="$(measure redis_run '-P 16') "$'\n'; fi
    if has wrk; then res[wrk,$m]+="$(measure wrk_run) "$'\n'; fi
    if has wrk_https; then res[wrk_https,$m]+="$(measure wrk_run https://10.200.90.2:8443/) "$'\n'; fi
    if has wrk_paced; then res[wrk_paced,$m]+="$(measure wrk_paced_run) "$'\n'; fi
    if [ $m = on ]; then
      stop_agent
      export_traces=$((export_traces + export_round_traces)); export_metrics=$((export_metrics + export_round_metrics))
      for w in $workloads; do
        requests_on=$((requests_on + $(printf '%s\n' "${res[$w,on]}" | awk 'NF{l=$6} END{print l+0}')))
      done
    fi
  done
done
for w in $workloads; do
  printf '%s\n' "${res[$w,off]}" > "$work/$w.off"; printf '%s\n' "${res[$w,on]}" > "$work/$w.on"
  python3 - "$w" "$work/$w.off" "$work/$w.on" <<'PY'
import sys, statistics
def rows(p):
    return [list(map(float, l.split())) for l in open(p) if l.strip()]
off, on = rows(sys.argv[2]), rows(sys.argv[3])
def med(rs):
    return [statistics.median(r[i] for r in rs) for i in range(5)]
name=sys.argv[1]; (b_rps,b_p99,_,_,_),(a_rps,a_p99,cpu,bpf,tls)=med(off),med(on)
extra=f" | eBPF TC {bpf:5.0f} ns/packet" if bpf else ""
extra+=f", TLS {tls:5.0f} ns/request" if tls else ""
print(f"{name:9s} baseline {b_rps:10,.0f} req/s p99 {b_p99:7.3f} ms | with agent {a_rps:10,.0f} req/s p99 {a_p99:7.3f} ms"
      f" | throughput {100*a_rps/b_rps:5.1f}% p99 {100*(a_p99/b_p99-1):+5.1f}% | agent CPU {cpu:6.2f} ms/1k req{extra}")
# Each round with the agent against the round without it just before: the
# host's own capacity drifts by tens of percent within minutes on a shared
# VM, which the medians above mix in and a ratio of neighbours mostly cancels.
if len(off) > 1:
    ratios = [100 * agent[0] / base[0] for base, agent in zip(off, on)]
    # The standard error says how far the mean of these rounds may be from
    # the agent's true cost: an agent that costs nothing (burn_cpu.py with
    # BURST_US=0) gave rounds with a standard deviation of 2-3 points on the
    # 2-vCPU test VM, 8 for wrk on shared cores (README, "Session 32").
    se = statistics.stdev(ratios) / len(ratios) ** 0.5
    print(f"{'':9s} per round (with / the baseline just before): "
          + " / ".join(f"{r:.1f}" for r in ratios) + f"%, median {statistics.median(ratios):.1f}%"
          + f", mean {statistics.mean(ratios):.1f} ± {se:.1f}% (standard error)")
    p99s = [100 * (agent[1] / base[1] - 1) for base, agent in zip(off, on)]
    print(f"{'':9s} p99 per round (against the baseline just before): "
          + " / ".join(f"{r:+.1f}" for r in p99s) + f"%, median {statistics.median(p99s):+.1f}%")
PY
done
if [ "${EXPORT:-0}" = 1 ]; then
  # `ip netns exec` execs the receiver: $receiver is the Python process.
  receiver_ticks=$(awk '{print $14 + $15}' "/proc/$receiver/stat" 2>/dev/null || echo -1)
  python3 -c 'import sys, os
t,m,n,ticks=map(int,sys.argv[1:5])
print(f"export (OTLP/HTTP protobuf, all rounds with the agent): traces {t:,} B, metrics {m:,} B for {n:,} requests"
      f" = {1000*t/max(n,1):,.0f} B of traces per 1k requests")
if ticks >= 0:
    ms = 1000 * ticks / os.sysconf("SC_CLK_TCK")
    print(f"the receiver (same cores as the workload, not part of the agent CPU above) used {ms:,.0f} ms CPU"
          f" = {1000*ms/max(n,1):.2f} ms per 1k requests")' "$export_traces" "$export_metrics" "$requests_on" "$receiver_ticks"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -s "$work/progs" ]; then
  echo "eBPF cost per program run (all agent runs; the cnflow_ssl_* runs are SSL calls):"
  python3 - "$work/progs" <<'PY'
import sys, collections
agg = collections.defaultdict(lambda: [0, 0])
for l in open(sys.argv[1]):
    n, c, t = l.split(); agg[n][0] += int(c); agg[n][1] += int(t)
for n, (c, t) in sorted(agg.items()):
    print(f"  {n:28s} {c:12,d} runs {t / c:8.0f} ns/run")
PY
fi
echo "agent counters (last run):"; grep -iE "ring_full|drop" "$work/agent.err" | tail -3 || true
