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
    for _ in $(seq 50); do
        ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$S/$2" 2>/dev/null && break
        sleep 0.2
    done
    ip netns exec $SRV timeout 60 tcpdump -i mq-s --immediate-mode -U -s 0 -w "$OUT/$1" "tcp port $2" \
        2>"$TMP/tcpdump.log" &
    local td=$!
    PIDS+=("$td")
    sleep 1
    ip netns exec $CLI timeout 30 python3 "$HERE/mqtt_client.py" "$S:$2"
    sleep 0.5
    kill -INT "$td"
    wait "$td" 2>/dev/null || true
    kill "$srv"
    wait "$srv" 2>/dev/null || true
    cat "$TMP/tcpdump.log"
}

record mqtt.pcap 1883
record mqtt_8883.pcap 8883
editcap -s 120 "$OUT/mqtt.pcap" "$OUT/mqtt_snap120.pcap"
ls -l "$OUT"/mqtt*.pcap
