# Sourced (not run) by the capture-recording and perf scripts: two network
# namespaces joined by a veth pair, torn down on exit however the script ends.
#
#   netns_pair TAG CLIENT_IP SERVER_IP [CLIENT_IP6 SERVER_IP6]
#
# Creates namespaces cnf-TAG-cli / cnf-TAG-srv with veth ends TAG-c / TAG-s
# and sets CLI, SRV, C, S (and C6, S6), TMP (a scratch dir) and PIDS (append
# background pids to it). The veth ends get no GRO/TSO/GSO so captures hold
# wire-sized segments. On exit: kills PIDS and anything left in the
# namespaces, deletes them and TMP.
netns_pair() {
    local tag=$1
    CLI=cnf-$tag-cli SRV=cnf-$tag-srv C=$2 S=$3 C6=${4:-} S6=${5:-}
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
