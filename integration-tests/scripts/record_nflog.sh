#!/usr/bin/env bash
# Records integration-tests/pcaps/http1_nflog.pcap: three curl requests to
# python's http.server over loopback inside a namespace, captured by tcpdump
# on an NFLOG group (link type 239) fed by an iptables NFLOG rule.
# Needs root, iptables, tcpdump, curl. Cleans up on exit.
set -euo pipefail
OUT=$(cd "$(dirname "$0")/../pcaps" && pwd)
NS=cnfnflog$$
cleanup() { kill $(jobs -p) 2>/dev/null || true; sleep 0.3; ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" iptables -A OUTPUT -p tcp -j NFLOG --nflog-group 5
ip netns exec "$NS" tcpdump -i nflog:5 -U -w "$OUT/http1_nflog.pcap" 2>/dev/null &
ip netns exec "$NS" python3 -m http.server 8081 --bind 127.0.0.1 >/dev/null 2>&1 &
sleep 1.5
for p in / /missing /?q=1; do ip netns exec "$NS" curl -s -o /dev/null "http://127.0.0.1:8081$p"; done
sleep 1.5
