#!/usr/bin/env bash
# Records redis_noreply_resp3.pcap: redis_noreply_client.py (CLIENT REPLY
# SKIP/OFF/ON, RESP3 attribute reply, tracking invalidation and pub/sub
# pushes) against redis-server in two network namespaces
# (10.200.75.1 <-> 10.200.75.2). The client's own log of what came back is
# kept in redis_noreply_resp3.client.txt (the test's oracle).
# Usage (root): record_redis_noreply.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair rn 10.200.75.1 10.200.75.2
ip netns exec $SRV redis-server --port 6379 --bind "$S" --save '' --appendonly no --protected-mode no \
    --enable-debug-command yes >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$S/6379" 2>/dev/null && break
    sleep 0.1
done
ip netns exec $SRV tcpdump -i rn-s -U -s 0 -w "$OUT/redis_noreply_resp3.pcap" "tcp port 6379" 2>"$TMP/tcpdump.log" &
TD=$!
PIDS+=($TD)
sleep 1
ip netns exec $CLI timeout 30 python3 "$HERE/redis_noreply_client.py" "$S" | tee "$OUT/redis_noreply_resp3.client.txt"
sleep 0.5
kill -INT "$TD"
wait "$TD" 2>/dev/null || true
cat "$TMP/tcpdump.log"
