#!/usr/bin/env bash
# Gateway throughput: the same OTLP/gRPC span load through `cnflow gateway` (GeoIP on,
# MaxMind's City + ASN test databases) and through rotel (PyPI, an independent
# collector, pass-through), each exporting to the same counting sink, in one run.
# Usage: bench_gateway.sh [SPANS]   (loopback only)
#   CNFLOW_BIN=path      the gateway binary (default: target/release/cnflow, built here)
#   CNFLOW_BASE_BIN=path a second gateway binary (e.g. a release build of main) measured
#                        in the same rounds, for a before/after figure
#   ROUNDS=N             alternate the contenders N times and report each one's median
#   WIRE_SINK=1          the sink counts spans on the wire instead of decoding them with
#                        prost (its cost on core 0 then depends less on what is forwarded)
# Besides spans/s (end to end, the load generator and sink share core 0), the CPU
# seconds the gateway/rotel process used (utime+stime) are reported per 100k spans:
# less sensitive to other load on the machine than the wall-clock rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
spans=${1:-400000}
rounds=${ROUNDS:-1}
sink_flag=${WIRE_SINK:+--wire-sink}
cargo build --release -q --bin cnflow --example otlp_bench
bin=${CNFLOW_BIN:-target/release/cnflow}
base=${CNFLOW_BASE_BIN:-}
load=target/release/examples/otlp_bench
rotel=$(python3 -c 'import rotel,os;print(os.path.dirname(rotel.__file__))')/rotel-agent
city=integration-tests/geoip/GeoLite2-City-Test.mmdb
asn=integration-tests/geoip/GeoLite2-ASN-Test.mmdb
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up"; exit 1; }
cpu_secs() { awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/$1/stat"; }

# One contender: start it on core 1, load it from core 0, append "LABEL <load output> cpu_secs=X".
run_gateway() { # label binary
  CNFLOW_GATEWAY_GRPC_LISTEN=127.0.0.1:14401 CNFLOW_GATEWAY_HTTP_LISTEN=127.0.0.1:14402 \
  CNFLOW_GATEWAY_HEALTH_LISTEN=127.0.0.1:14403 CNFLOW_GATEWAY_GEOIP_CITY_DB=$city CNFLOW_GATEWAY_GEOIP_ASN_DB=$asn \
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14411 CNFLOW_SELF_TELEMETRY=false RUST_LOG=warn \
    taskset -c 1 "$2" gateway > "$work/gw.log" 2>&1 & pids+=($!)
  wait_port 14401
  local out; out=$(taskset -c 0 "$load" --sink 127.0.0.1:14411 --target http://127.0.0.1:14401 --spans "$spans" $sink_flag)
  echo "$1 $out cpu_secs=$(cpu_secs "${pids[-1]}")" >> "$work/results"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
}
run_rotel() {
  taskset -c 1 "$rotel" start --otlp-grpc-endpoint 127.0.0.1:14404 --otlp-http-endpoint 127.0.0.1:14405 \
    --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:14421 > "$work/rotel.log" 2>&1 & pids+=($!)
  wait_port 14404
  local out; out=$(taskset -c 0 "$load" --sink 127.0.0.1:14421 --target http://127.0.0.1:14404 --spans "$spans" $sink_flag)
  echo "rotel $out cpu_secs=$(cpu_secs "${pids[-1]}")" >> "$work/results"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
}

: > "$work/results"
for r in $(seq "$rounds"); do
  run_gateway gw "$bin"
  if [ -n "$base" ]; then run_gateway base "$base"; fi
  run_rotel
done
python3 - "$work/results" "$rounds" "${sink_flag:+ (wire sink)}" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    who, *kv = line.split()
    rows.setdefault(who, []).append(dict(x.split("=") for x in kv))
def med(who, k): return statistics.median(float(r[k]) for r in rows[who])
names = {"gw": "cnflow gateway (GeoIP City+ASN, batching)", "base": "base gateway (CNFLOW_BASE_BIN)", "rotel": "rotel pass-through"}
print(f"median of {sys.argv[2]} round(s), alternated; gateway/rotel pinned to core 1, load + sink on core 0{sys.argv[3]}")
for who in ("gw", "base", "rotel"):
    if who not in rows: continue
    r = rows[who][-1]
    cpu = med(who, "cpu_secs") / int(r["spans_sent"]) * 1e5
    print(f"{names[who]:42}: {med(who, 'spans_per_sec'):12,.0f} spans/s  ({r['spans_received']}/{r['spans_sent']} delivered)  {cpu:6.3f} CPU s per 100k spans")
for who in ("gw", "base"):
    if who not in rows: continue
    print(f"ratio {who:36}: {med(who, 'spans_per_sec') / med('rotel', 'spans_per_sec'):12.2f}x rotel (spans/s), "
          f"{med('rotel', 'cpu_secs') / med(who, 'cpu_secs'):.2f}x rotel (CPU efficiency)")
PY
