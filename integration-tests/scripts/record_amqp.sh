#!/usr/bin/env bash
# Records amqp.pcap: a RabbitMQ node (Debian rabbitmq-server, run by
# rabbitmq_node.sh with all state in a temp dir, its own epmd) and the pika
# client amqp_client.py in two network namespaces joined by a veth pair
# (10.200.46.1 <-> 10.200.46.2), broker on port 5672; amqp_5673.pcap: the
# same on port 5673 (detection by content); amqp_snap150.pcap: amqp.pcap
# cut to 150 bytes per packet; amqp_midconn.pcap: amqp.pcap from its
# MIDCONN-th packet on (joined after the handshake and declarations).
# Everything (node, epmd, namespaces, temp dir) is removed on exit.
# Usage (root): record_amqp.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
MIDCONN=${MIDCONN:-30}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair aq 10.200.46.1 10.200.46.2

record() { # PCAP PORT
    ip netns exec $SRV epmd -address 127.0.0.1 >"$TMP/epmd.log" 2>&1 &
    local epmd=$!
    PIDS+=("$epmd")
    rm -rf "$TMP/rmq"
    ip netns exec $SRV timeout 120 "$HERE/rabbitmq_node.sh" "$TMP/rmq" "$S" "$2" >"$TMP/rmq.log" 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    wait_port "$S" "$2" 600
    CAPTURE_FILTER="tcp port $2" start_capture "${1%.pcap}"
    ip netns exec $CLI timeout 30 python3 "$HERE/amqp_client.py" "$S:$2"
    stop_captures
    kill "$srv"
    wait "$srv" 2>/dev/null || true
    kill "$epmd"
    wait "$epmd" 2>/dev/null || true
}

record amqp.pcap 5672
record amqp_5673.pcap 5673
editcap -s 150 "$OUT/amqp.pcap" "$OUT/amqp_snap150.pcap"
n=$(capinfos -c -M "$OUT/amqp.pcap" | awk '/Number of packets/ {print $NF}')
editcap -r "$OUT/amqp.pcap" "$OUT/amqp_midconn.pcap" "$MIDCONN-$n"
ls -l "$OUT"/amqp*.pcap
