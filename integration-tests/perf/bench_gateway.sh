#!/usr/bin/env bash
# Gateway throughput: the same OTLP/gRPC span load through `cnflow gateway` (GeoIP on,
# MaxMind's City + ASN test databases) and through rotel (PyPI, an independent
# collector, pass-through), each exporting to the same counting sink, in one run.
# Usage: bench_gateway.sh [SPANS]   (loopback only)
set -euo pipefail
cd "$(dirname "$0")/../.."
spans=${1:-400000}
cargo build --release -q --bin cnflow --example otlp_bench
bin=target/release/cnflow
load=target/release/examples/otlp_bench
rotel=$(python3 -c 'import rotel,os;print(os.path.dirname(rotel.__file__))')/rotel-agent
city=integration-tests/geoip/GeoLite2-City-Test.mmdb
asn=integration-tests/geoip/GeoLite2-ASN-Test.mmdb
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up"; exit 1; }

# cnflow gateway → sink on 14411
CNFLOW_GATEWAY_GRPC_LISTEN=127.0.0.1:14401 CNFLOW_GATEWAY_HTTP_LISTEN=127.0.0.1:14402 \
CNFLOW_GATEWAY_HEALTH_LISTEN=127.0.0.1:14403 CNFLOW_GATEWAY_GEOIP_CITY_DB=$city CNFLOW_GATEWAY_GEOIP_ASN_DB=$asn \
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14411 CNFLOW_SELF_TELEMETRY=false RUST_LOG=warn \
  taskset -c 1 "$bin" gateway > "$work/gw.log" 2>&1 & pids+=($!)
wait_port 14401
gw=$(taskset -c 0 "$load" --sink 127.0.0.1:14411 --target http://127.0.0.1:14401 --spans "$spans")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# rotel pass-through → sink on 14421
taskset -c 1 "$rotel" start --otlp-grpc-endpoint 127.0.0.1:14404 --otlp-http-endpoint 127.0.0.1:14405 \
  --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:14421 > "$work/rotel.log" 2>&1 & pids+=($!)
wait_port 14404
ro=$(taskset -c 0 "$load" --sink 127.0.0.1:14421 --target http://127.0.0.1:14404 --spans "$spans")
python3 - "$gw" "$ro" <<'PY'
import sys
def parse(s): return dict(kv.split("=") for kv in s.split())
g, r = parse(sys.argv[1]), parse(sys.argv[2])
print(f"cnflow gateway (GeoIP City+ASN, batching): {float(g['spans_per_sec']):12,.0f} spans/s  ({g['spans_received']}/{g['spans_sent']} delivered, 1 core)")
print(f"rotel pass-through                      : {float(r['spans_per_sec']):12,.0f} spans/s  ({r['spans_received']}/{r['spans_sent']} delivered, 1 core)")
print(f"ratio                                   : {float(g['spans_per_sec'])/float(r['spans_per_sec']):12.2f}x rotel")
PY
