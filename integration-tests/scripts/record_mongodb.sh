#!/usr/bin/env bash
# Records the MongoDB golden captures between pymongo (client.py) and a
# scripted server (server.py; no MongoDB server is packaged) in two network
# namespaces. Needs root, tcpdump, pymongo, python-snappy and zstandard.
# Usage: record_mongodb.sh [PCAP_DIR] [GOLDEN_DIR]
#   mongodb.pcap          port 27017: uncompressed then zlib sessions, a legacy OP_QUERY hello
#   mongodb_snap200.pcap  the same, tcpdump -s 200
#   mongodb_3717.pcap     port 3717: snappy then zstd sessions
#   mongodb_midconn.pcap  a zlib session joined while it pauses
# and, in GOLDEN_DIR, what the client ran (mongodb_facts_*.json, pymongo's
# command monitoring) and what the server received (mongodb_server_*.jsonl).
set -euo pipefail

HERE=$(realpath "$(dirname "$0")")
OUT=$(realpath "${1:-$HERE/../pcaps}")
GOLD=$(realpath "${2:-$HERE/../golden}")
mkdir -p "$OUT" "$GOLD"
. "$HERE/netns_pair.sh"
netns_pair mg 10.200.58.1 10.200.58.2
WORK=$TMP
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

SERVER=
start_server() {
    local log=$1
    shift
    rm -f "$log"
    ip netns exec "$SRV" python3 "$HERE/mongodb/server.py" "$S" "$@" --log "$log" &
    SERVER=$!
    PIDS+=($SERVER)
    for port in "$@"; do
        for _ in $(seq 50); do
            if cli bash -c "exec 3<>/dev/tcp/$S/$port" 2>/dev/null; then break; fi
            sleep 0.1
        done
    done
}
stop_server() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}

start_server "$GOLD/mongodb_server_27017.jsonl" 27017
start_capture mongodb
start_capture mongodb_snap200 200
cli python3 "$HERE/mongodb/client.py" "$S" 27017 none "$GOLD/mongodb_facts_none.json"
cli python3 "$HERE/mongodb/client.py" "$S" 27017 zlib "$GOLD/mongodb_facts_zlib.json"
stop_captures
stop_server

start_server "$GOLD/mongodb_server_3717.jsonl" 3717
start_capture mongodb_3717
cli python3 "$HERE/mongodb/client.py" "$S" 3717 snappy "$GOLD/mongodb_facts_snappy.json"
cli python3 "$HERE/mongodb/client.py" "$S" 3717 zstd "$GOLD/mongodb_facts_zstd.json"
stop_captures
stop_server

start_server "$WORK/midconn.jsonl" 27017
cli python3 "$HERE/mongodb/client.py" "$S" 27017 zlib "$GOLD/mongodb_facts_midconn.json" 3 &
MID=$!
sleep 2
start_capture mongodb_midconn
wait $MID
stop_captures
stop_server
ls -l "$OUT"/mongodb* "$GOLD"/mongodb*
