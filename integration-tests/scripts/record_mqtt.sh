#!/usr/bin/env bash
# Records mqtt.pcap: mosquitto (Debian) and the clients of mqtt_client.py
# (paho-mqtt 3.1.1 and 5.0 clients, a raw-socket ping client) in two network
# namespaces joined by a veth pair (10.200.45.1 <-> 10.200.45.2), broker on
# port 1883; mqtt_8883.pcap: the same on port 8883 (detection by content);
# mqtt_snap120.pcap: mqtt.pcap cut to 120 bytes per packet.
# Everything is removed on exit.
# Usage (root): record_mqtt.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair mq 10.200.45.1 10.200.45.2

record() { # PCAP PORT
    printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$2" "$S" >"$TMP/mosquitto.conf"
    ip netns exec $SRV timeout 60 mosquitto -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    wait_port "$S" "$2" 100
    CAPTURE_FILTER="tcp port $2" start_capture "${1%.pcap}"
    ip netns exec $CLI timeout 30 python3 "$HERE/mqtt_client.py" "$S:$2"
    stop_captures
    kill "$srv"
    wait "$srv" 2>/dev/null || true
}

record mqtt.pcap 1883
record mqtt_8883.pcap 8883
editcap -s 120 "$OUT/mqtt.pcap" "$OUT/mqtt_snap120.pcap"
# Joined mid-connection: from frame 16 on, after the subscriber's SUBSCRIBE and the
# publisher's CONNECT (no CONNECT left for those two; detection by content on 8883).
editcap -r "$OUT/mqtt_8883.pcap" "$OUT/mqtt_midconn.pcap" 16-100000
ls -l "$OUT"/mqtt*.pcap
