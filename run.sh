#!/usr/bin/env bash
# Embedded default: install what is needed, build, and run `cnflow run` on this host.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh
cargo build --release
exec ./target/release/cnflow run "$@"
