#!/usr/bin/env bash
# The whole test suite (README's test command). Needs root for the eBPF/netns tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export CARGO_TERM_COLOR=never
echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"; cargo test --workspace -- --test-threads=1
