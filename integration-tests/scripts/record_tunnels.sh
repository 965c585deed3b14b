#!/usr/bin/env bash
# Records tunnel_inner.pcap (HTTP/1, Redis and DNS over IPv4 and IPv6 between
# real peers: python http.server + curl, redis-server + redis-cli, dnsmasq +
# dig) and wraps every packet of it with make_tunnel_pcaps.py (scapy) in the
# encapsulations this test kernel cannot build: Geneve, GRE (checksum, key,
# sequence), GRE transparent Ethernet bridging, IPIP + SIT (Calico), VXLAN in
# GRE over IPv6. Needs root. Usage: record_tunnels.sh [OUT_DIR]
set -euo pipefail

OUT=$(realpath "${1:-$(dirname "$0")/../pcaps}")
HERE=$(realpath "$(dirname "$0")")
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair tn 10.200.71.1 10.200.71.2 fd00:200:71::1 fd00:200:71::2
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

mkdir -p "$TMP/www"
echo "inside a tunnel" >"$TMP/www/index.html"
head -c 6000 /dev/zero | tr '\0' 'y' >"$TMP/www/big.txt"
bg_srv python3 -m http.server 8000 --bind "$S" --directory "$TMP/www"
bg_srv python3 -m http.server 8001 --bind "$S6" --directory "$TMP/www"
bg_srv redis-server --port 6379 --bind "$S $S6" --save '' --appendonly no --protected-mode no
bg_srv dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
    --listen-address="$S" --listen-address="$S6" --local=/test/ --address=/tun.test/10.200.71.9 --user=root --pid-file
wait_port "$S" 8000
wait_port "$S6" 8001
wait_port "$S" 6379

CAPTURE_FILTER='not arp and not (ip6 and ip6[6] == 0) and not (icmp6 and ip6[40] >= 133)'
start_capture tunnel_inner
cli curl -s -o /dev/null "http://$S:8000/index.html"
cli curl -s -o /dev/null "http://$S:8000/missing"
cli curl -s -o /dev/null "http://[$S6]:8001/big.txt"
cli redis-cli -h "$S" SET tk tv >/dev/null
cli redis-cli -h "$S6" GET tk >/dev/null
cli dig +short +tries=1 "@$S" a.tun.test A >/dev/null
cli dig +short +tries=1 +tcp "@$S6" b.tun.test AAAA >/dev/null
stop_captures

python3 "$HERE/make_tunnel_pcaps.py" "$OUT/tunnel_inner.pcap" "$OUT"
