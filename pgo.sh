#!/usr/bin/env bash
# Builds target/release/cnflow with profile-guided optimisation (PGO): an
# instrumented build runs a training workload, LLVM merges the counts, and the
# release build lays out and inlines the code for the paths that ran. Measured
# 2026-12-06 (README "Session 25"): replay 16-21% fewer instructions; a live
# agent 0-5% less CPU metrics only, 7-8% exporting every span. The training
# has no kernel: the live agent's path runs on captures written as ring
# records (`cnflow run --simulate-capture`, README "Session 26").
# The container image is built this way; `cargo build --release` (run.sh, the
# test suite) stays a plain build.
#
# Usage: bash pgo.sh            instrumented build, training, PGO build
#        bash pgo.sh --check    only the training workload, with a debug build
#                               (the test suite runs this so the training
#                               cannot rot unnoticed)
# No root: the training replays the repository's captures (every protocol, spans
# as text and OTLP, metrics only) and exports spans and metrics over OTLP/HTTP
# and OTLP/gRPC (gzip, zstd) to a cnflow gateway with GeoIP on. Needs rustup
# (llvm-tools is added for llvm-profdata) and python3.
set -euo pipefail
cd "$(dirname "$0")"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "pgo.sh: port $1 not up" >&2; return 1; }

# train BIN: the workload (loopback only; its own ports 145xx).
train() {
  local bin=$1
  mapfile -t caps < <(find integration-tests -name '*.pcap' -o -name '*.pcapng' | sort)
  [ "${#caps[@]}" -gt 0 ] || { echo "pgo.sh: no captures under integration-tests" >&2; return 1; }
  echo "pgo.sh: training on ${#caps[@]} captures" >&2
  local n=0
  for f in "${caps[@]}"; do
    for fmt in text otlp none; do
      "$bin" replay "$f" --format "$fmt" > /dev/null 2>> "$work/replay.err" || { echo "pgo.sh: replay $f --format $fmt failed" >&2; cat "$work/replay.err" >&2; return 1; }
    done
    n=$((n + 1))
  done
  # Volume on the paths real traffic takes: the captures of ordinary sessions
  # (not the cut, lossy or mid-connection ones), copied with distinct addresses
  # to MIX_PACKETS. Without it the profile is mostly start-up and edge cases.
  # mysql.pcap (a 17 MB compressed row) and mongodb.pcap (compressed messages)
  # stay out: copied, their decompression was 99% of the counts, every decoder
  # looked cold next to it and the build gained 4% instead of 20%.
  local mix=()
  mapfile -t mix < <(bash integration-tests/perf/ordinary_captures.sh | grep -v -e '/mysql\.pcap$' -e '/mongodb\.pcap$')
  python3 integration-tests/perf/replicate_pcap.py "$work/mix.pcap" "${MIX_PACKETS:-300000}" "${mix[@]}" > /dev/null
  for fmt in text otlp none; do
    "$bin" replay "$work/mix.pcap" --format "$fmt" > /dev/null 2>> "$work/replay.err" \
      || { echo "pgo.sh: replay of the mix --format $fmt failed" >&2; cat "$work/replay.err" >&2; return 1; }
  done
  # Export through a gateway with GeoIP on, which exports to a second gateway
  # (itself exporting nowhere): both write profiles when stopped. Not per
  # capture: every process start loads the CA roots, and hundreds of them
  # made start-up look hot.
  gateway() { # grpc_port http_port health_port endpoint [env...]
    env CNFLOW_GATEWAY_GRPC_LISTEN=127.0.0.1:$1 CNFLOW_GATEWAY_HTTP_LISTEN=127.0.0.1:$2 \
      CNFLOW_GATEWAY_HEALTH_LISTEN=127.0.0.1:$3 OTEL_EXPORTER_OTLP_ENDPOINT=$4 \
      CNFLOW_GATEWAY_SHUTDOWN_TIMEOUT_SECS=2 RUST_LOG=error "${@:5}" "$bin" gateway >> "$work/gateway.log" 2>&1 &
    pids+=($!)
  }
  gateway 14511 14512 14513 http://127.0.0.1:14520
  gateway 14501 14502 14503 http://127.0.0.1:14511 \
    CNFLOW_GATEWAY_GEOIP_CITY_DB=integration-tests/geoip/GeoLite2-City-Test.mmdb \
    CNFLOW_GATEWAY_GEOIP_ASN_DB=integration-tests/geoip/GeoLite2-ASN-Test.mmdb
  wait_port 14511; wait_port 14501; wait_port 14502
  for exp in "http/protobuf http://127.0.0.1:14502 none" "http/protobuf http://127.0.0.1:14502 gzip" \
             "grpc http://127.0.0.1:14501 zstd"; do
    read -r proto ep comp <<< "$exp"
    OTEL_EXPORTER_OTLP_PROTOCOL=$proto OTEL_EXPORTER_OTLP_ENDPOINT=$ep OTEL_EXPORTER_OTLP_COMPRESSION=$comp \
      "$bin" replay "$work/mix.pcap" --format none > /dev/null 2>> "$work/replay.err" \
      || { echo "pgo.sh: replay of the mix exporting ($exp) failed" >&2; cat "$work/replay.err" >&2; return 1; }
  done
  # The live agent's own path (ring records, their merge, the agent's batch
  # loop) without a kernel: `run --simulate-capture`, metrics only and
  # exporting every span over gRPC.
  "$bin" run --simulate-capture "$work/mix.pcap" --format none > /dev/null 2>> "$work/replay.err" \
    || { echo "pgo.sh: simulated live capture of the mix failed" >&2; cat "$work/replay.err" >&2; return 1; }
  OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14501 \
    "$bin" run --simulate-capture "$work/mix.pcap" --format none > /dev/null 2>> "$work/replay.err" \
    || { echo "pgo.sh: simulated live capture of the mix exporting failed" >&2; cat "$work/replay.err" >&2; return 1; }
  # A clean exit writes a profile: the GeoIP gateway first, so it can still hand its last batch on.
  local p
  for p in "${pids[1]}" "${pids[0]}"; do
    kill -TERM "$p"; wait "$p" 2>/dev/null || true
  done
  pids=()
  echo "pgo.sh: trained: $n captures, a mix of ${#mix[@]} copied to ${MIX_PACKETS:-300000} packets replayed and fed to the live path, exported through two gateways" >&2
}

if [ "${1:-}" = --check ]; then
  cargo build --locked -q --bin cnflow
  export MIX_PACKETS=${MIX_PACKETS:-20000}
  train "${CARGO_TARGET_DIR:-target}/debug/cnflow"
  exit 0
fi

rustup component add llvm-tools >/dev/null 2>&1 || true
profdata=$(find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1)
if [ -z "$profdata" ]; then
  echo "pgo.sh: llvm-profdata not found (rustup component add llvm-tools); build without PGO: cargo build --release" >&2
  exit 1
fi
t=$(realpath -m "${CARGO_TARGET_DIR:-target}")
data=$t/pgo-data
rm -rf "$data"
# Separate target directory: the instrumented objects must not replace the
# release ones. The same targets as the release build: an example would bring
# in dev-dependency features, and dependencies built differently lose their profile.
RUSTFLAGS="-Cprofile-generate=$data" cargo build --release --locked --target-dir "$t/pgo-gen" --bin cnflow
train "$t/pgo-gen/release/cnflow"
"$profdata" merge -o "$t/cnflow.profdata" "$data"
# Functions the training never ran get no profile: not worth a warning each.
# -pgso=false: LLVM optimises code the profile calls cold for size; the live
# agent's ring reader and tasks are not in the training (no kernel here) and
# ran 2-5% slower that way (bench_pair.sh, README "Session 25").
RUSTFLAGS="-Cprofile-use=$t/cnflow.profdata -Cllvm-args=-pgo-warn-missing-function=false -Cllvm-args=-pgso=false" \
  cargo build --release --locked --bin cnflow
echo "pgo.sh: built $t/release/cnflow with $t/cnflow.profdata" >&2
