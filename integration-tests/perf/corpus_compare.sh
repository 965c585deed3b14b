#!/usr/bin/env bash
# Outside-corpus match rate (issue #13): replay captures published by other projects
# and compare the exchanges cnflow finds with the requests tshark finds in the same
# files (corpus_compare.py). The captures are the test captures of two Debian source
# packages, fetched at run time with apt-get and never copied into this repository
# (the point is to measure, not to tune):
#   ndpi      4.2       tests/pcap/*        (258 files: office/mobile traffic, attacks, IoT)
#   wireshark 4.0.17    test/captures/*     (133 files, some gzipped)
# Usage: corpus_compare.sh [WORKDIR]   (default /tmp/corpus; kept for later runs)
# CNFLOW_BIN=path runs another build; SAMPLES=N misses shown per protocol.
# Not part of CI: it needs the Debian source archive and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/corpus}
mkdir -p "$work/apt/lists/partial" "$work/src"
if [ -z "${CNFLOW_BIN:-}" ]; then cargo build -q --bin cnflow; fi
bin=$(realpath "${CNFLOW_BIN:-target/debug/cnflow}")
command -v tshark >/dev/null || { echo "tshark is needed (apt-get install tshark)"; exit 1; }

# A private sources list with deb-src lines: the system's apt configuration is left alone.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
echo "deb-src http://deb.debian.org/debian $codename main" >"$work/apt/sources.list"
apto=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=-
  -o "Dir::State::Lists=$work/apt/lists")
fetch() { # PACKAGE SUBDIR PATTERN: the orig tarball's captures under $work/SUBDIR
  local pkg=$1 sub=$2 pat=$3
  [ -n "$(ls -A "$work/$sub" 2>/dev/null)" ] && return 0
  ls "$work/src/${pkg}_"*.orig.tar.* >/dev/null 2>&1 ||
    (cd "$work/src" && timeout 600 apt-get "${apto[@]}" source --download-only "$pkg" >/dev/null 2>&1) ||
    { echo "could not fetch the $pkg source package"; return 1; }
  mkdir -p "$work/$sub"
  tar xaf "$work/src/${pkg}_"*.orig.tar.* -C "$work/$sub" --wildcards --no-anchored \
    --transform='s|.*/||' "$pat"
  find "$work/$sub" -name '*.gz' -exec gunzip -f {} +
}
[ -s "$work/apt/lists/lock" ] || timeout 300 apt-get "${apto[@]}" update >/dev/null 2>&1 || true
fetch ndpi ndpi '*/tests/pcap/*'
fetch wireshark wireshark '*/test/captures/*'

echo "cnflow: $bin ($(git rev-parse --short HEAD 2>/dev/null || echo ?)); $(tshark -v 2>/dev/null | head -1)"
echo "date: $(date -u '+%F %H:%M UTC')"
for c in ndpi wireshark; do
  echo "== $c"
  python3 integration-tests/perf/corpus_compare.py "$bin" --samples "${SAMPLES:-5}" \
    --json "$work/$c.json" "$work/$c"
done
