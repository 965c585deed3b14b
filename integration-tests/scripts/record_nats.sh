#!/usr/bin/env bash
# Records nats.pcap: a nats-server (Debian nats-server) and two nats-py
# clients (nats_client.py: a subscriber/responder and a verbose publisher
# with headers, request-reply and a no-responders request) in two network
# namespaces joined by a veth pair (10.200.44.1 <-> 10.200.44.2), server on
# port 4222; nats_4999.pcap: the same on port 4999 (detection by content);
# nats_snap200.pcap: nats.pcap cut to 200 bytes per packet;
# nats_midconn.pcap: nats.pcap from its 24th packet on (both connections
# joined after their INFO/CONNECT/handshake: from the publisher's first PUB).
# Everything is removed on exit.
# Usage (root): record_nats.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair nt 10.200.44.1 10.200.44.2

record() { # PCAP PORT
    ip netns exec $SRV timeout 60 nats-server -a "$S" -p "$2" >"$TMP/nats.log" 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    wait_port "$S" "$2" 100
    CAPTURE_FILTER="tcp port $2" start_capture "${1%.pcap}"
    ip netns exec $CLI timeout 30 python3 "$HERE/nats_client.py" "$S:$2"
    stop_captures
    kill "$srv"
    wait "$srv" 2>/dev/null || true
}

record nats.pcap 4222
record nats_4999.pcap 4999
editcap -s 200 "$OUT/nats.pcap" "$OUT/nats_snap200.pcap"
editcap -r "$OUT/nats.pcap" "$OUT/nats_midconn.pcap" 24-100000
ls -l "$OUT"/nats*.pcap
