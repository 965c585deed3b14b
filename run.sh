#!/usr/bin/env bash
# Embedded default: install what building needs (not the test peers), build, and run `cnflow run` on this host.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh --build
cargo build --release
exec ./target/release/cnflow run "$@"
