#!/usr/bin/env bash
# The whole test suite (README's test command). Needs root for the eBPF/netns tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export CARGO_TERM_COLOR=never
# One build of a fresh clone: incremental caches would only add ~6 GB of disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The build and test binaries need ~15 GB; say so up front instead of failing mid-link.
mkdir -p "${CARGO_TARGET_DIR:-target}"
avail_kb=$(df -Pk "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR==2 {print $4}' || true)
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((15 * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024)) MiB free for the build (about 15 GiB needed)" >&2
fi
# Namespaces left by an earlier run that was killed (tests clean up after themselves otherwise).
for ns in $(ip netns list 2>/dev/null | awk '/^cnf/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
# Property-based fuzzing of decoders and the pipeline runs inside the unit tests;
# CI gives it more cases than a developer's quick `cargo test`.
export PROPTEST_CASES=${PROPTEST_CASES:-2048}
echo "== tests"; cargo test --workspace --lib --bins --tests -- --test-threads=1
# Criterion benches in test mode: every benchmark body runs once, so they don't rot.
echo "== benches (smoke)"; cargo test --workspace --benches
# The container image's PGO training workload (debug build): it cannot rot unnoticed.
echo "== pgo training (smoke)"; bash pgo.sh --check
echo "== all tests passed"
