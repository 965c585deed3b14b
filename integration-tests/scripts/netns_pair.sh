# Sourced (not run) by the capture-recording and perf scripts: two network
# namespaces joined by a veth pair, torn down on exit however the script ends.
#
#   netns_pair TAG CLIENT_IP SERVER_IP [CLIENT_IP6 SERVER_IP6]
#
# Creates namespaces cnf-TAG-cli / cnf-TAG-srv with veth ends TAG-c / TAG-s
# and sets CLI, SRV, C, S (and C6, S6), SRV_DEV, TMP (a scratch dir) and PIDS (append
# background pids to it). The veth ends get no GRO/TSO/GSO so captures hold
# wire-sized segments. On exit: kills PIDS and anything left in the
# namespaces, deletes them and TMP.
netns_pair() {
    local tag=$1
    CLI=cnf-$tag-cli SRV=cnf-$tag-srv C=$2 S=$3 C6=${4:-} S6=${5:-} SRV_DEV=$tag-s
    TMP=$(mktemp -d)
    PIDS=()
    trap netns_pair_cleanup EXIT
    ip netns del "$CLI" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
    ip netns add "$CLI"
    ip netns add "$SRV"
    ip link add "$tag-c" netns "$CLI" type veth peer name "$tag-s" netns "$SRV"
    for ns in "$CLI" "$SRV"; do ip -n "$ns" link set lo up; done
    ip -n "$CLI" addr add "$C/24" dev "$tag-c"
    ip -n "$SRV" addr add "$S/24" dev "$tag-s"
    if [ -n "$C6" ]; then
        ip -n "$CLI" addr add "$C6/64" dev "$tag-c" nodad
        ip -n "$SRV" addr add "$S6/64" dev "$tag-s" nodad
    fi
    ip -n "$CLI" link set "$tag-c" up
    ip -n "$SRV" link set "$tag-s" up
    ip netns exec "$CLI" ethtool -K "$tag-c" tso off gso off gro off >/dev/null 2>&1 || true
    ip netns exec "$SRV" ethtool -K "$tag-s" tso off gso off gro off >/dev/null 2>&1 || true
}

netns_pair_cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for ns in "$CLI" "$SRV"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
    sleep 0.3
    ip netns del "$CLI" 2>/dev/null
    ip netns del "$SRV" 2>/dev/null
    rm -rf "$TMP"
}

# Helpers for the recording scripts (after netns_pair; OUT = the pcap folder):
#   cli CMD...                     run CMD in the client namespace
#   bg_srv CMD...                  run CMD in the server namespace in the background (killed on exit)
#   start_capture NAME [SNAPLEN]   tcpdump on the server end of the veth into
#                                  $OUT/NAME.pcap, filter $CAPTURE_FILTER (default tcp)
#   stop_captures                  stop every running capture once its last packets are written
#   wait_port HOST PORT [TRIES]    wait (TRIES x 0.1 s, default 50) until a client can connect
cli() { ip netns exec "$CLI" "$@"; }
bg_srv() {
    ip netns exec "$SRV" "$@" &
    PIDS+=($!)
}
CAPS=()
start_capture() {
    local name=$1 snap=${2:-0}
    ip netns exec "$SRV" tcpdump -i "$SRV_DEV" -s "$snap" -U --immediate-mode -B 16384 -w "$OUT/$name.pcap" \
        "${CAPTURE_FILTER:-tcp}" 2>"$TMP/tcpdump-$name.log" &
    CAPS+=($!)
    PIDS+=($!)
    # tcpdump needs a moment before it sees packets.
    sleep 1
}
stop_captures() {
    sleep 1
    for p in "${CAPS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${CAPS[@]}"; do wait "$p" 2>/dev/null || true; done
    CAPS=()
    cat "$TMP"/tcpdump-*.log >&2
    rm -f "$TMP"/tcpdump-*.log
}
wait_port() {
    for _ in $(seq "${3:-50}"); do
        if cli bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1:$2 never opened" >&2
    return 1
}
