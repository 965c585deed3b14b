#!/usr/bin/env bash
# Records real-world DNS captures for the decoder's pairing and naming:
#   dns_mdns.pcap     python-zeroconf (a real mDNS responder) answering dig's
#                     legacy unicast query and id-0 queries on one socket, then
#                     its goodbye announcements (multicast, unsolicited)
#   dns_update.pcap   nsupdate adding and deleting records in a BIND zone that
#                     allows updates, then dig reading the added record back
#   dns_rrtypes.pcap  dig queries of types hickory has no name for (WKS, MD,
#                     TKEY, NSAP-PTR, an unassigned one) and SVCB/HTTPS against BIND
# Needs root, bind9 (named), bind9-dnsutils, python3 zeroconf.
# Usage: record_dns_realworld.sh [OUT_DIR]
set -euo pipefail

OUT=$(realpath "${1:-$(dirname "$0")/../pcaps}")
mkdir -p "$OUT"
. "$(dirname "$0")/netns_pair.sh"
netns_pair dr 10.200.57.1 10.200.57.2
CAPTURE_FILTER="udp or tcp"
WORK=$TMP
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
# Multicast leaves through the veth (mDNS announcements, RFC 6762).
ip -n "$CLI" route add 224.0.0.0/4 dev dr-c
ip -n "$SRV" route add 224.0.0.0/4 dev dr-s
sleep 1


# --- mDNS -------------------------------------------------------------------
cat >"$WORK/responder.py" <<'EOF'
import socket, sys, time
from zeroconf import IPVersion, ServiceInfo, Zeroconf
ip = sys.argv[1]
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
info = ServiceInfo("_http._tcp.local.", "cnflow-test._http._tcp.local.", addresses=[socket.inet_aton(ip)],
                   port=8080, server="cnflowhost.local.")
zc.register_service(info)  # probes and announces before returning
open(sys.argv[2], "w").write("ready")
while not open(sys.argv[2]).read().startswith("stop"):
    time.sleep(0.1)
zc.unregister_service(info)  # goodbye announcements: unsolicited responses
zc.close()
EOF
# id-0 queries from one socket (as an mDNS "one-shot" querier does, RFC 6762 §5.1);
# prints what came back so the test's facts come from the client.
cat >"$WORK/oneshot.py" <<'EOF'
import socket, struct, sys
def q(name, qtype):
    b = struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 0)
    for label in name.split("."):
        b += bytes([len(label)]) + label.encode()
    return b + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
for name, t in [("cnflowhost.local", 1), ("_http._tcp.local", 12), ("nothere.local", 1)]:
    s.sendto(q(name, t), (sys.argv[1], 5353))
    try:
        r, _ = s.recvfrom(9000)
        hdr = struct.unpack(">HHHHHH", r[:12])
        print(name, t, "id", hdr[0], "qd", hdr[2], "an", hdr[3])
    except socket.timeout:
        print(name, t, "no answer")
EOF
echo -n > "$WORK/zc.state"
ip netns exec "$SRV" python3 "$WORK/responder.py" 10.200.57.2 "$WORK/zc.state" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/zc.state" ] && break; sleep 0.1; done
sleep 1
start_capture dns_mdns
cli dig -p 5353 +tries=1 +time=2 @10.200.57.2 cnflowhost.local A | tee "$WORK/dig_mdns.txt" | grep -E "status|IN\s+A" >&2
cli python3 "$WORK/oneshot.py" 10.200.57.2 >&2
echo stop > "$WORK/zc.state"
sleep 2
stop_captures

# --- BIND with a zone that accepts updates ----------------------------------
mkdir -p "$WORK/named"
cat >"$WORK/named/example.test.db" <<'EOF'
$TTL 300
@   IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300
    IN NS  ns.example.test.
ns  IN A   10.200.57.2
old IN A   10.200.57.70
svc IN HTTPS 1 . alpn=h2
EOF
cat >"$WORK/named/named.conf" <<EOF
options {
    directory "$WORK/named";
    pid-file "$WORK/named/named.pid";
    listen-on port 53 { 10.200.57.2; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
};
zone "example.test" { type primary; file "$WORK/named/example.test.db"; allow-update { any; }; };
EOF
ip netns exec "$SRV" named -g -u root -c "$WORK/named/named.conf" >"$WORK/named.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "running" "$WORK/named.log" && break; sleep 0.1; done

start_capture dns_update
cli nsupdate <<'EOF'
server 10.200.57.2
zone example.test
update add www.example.test 300 A 10.200.57.80
send
update delete old.example.test A
send
EOF
cli dig +short +tries=1 @10.200.57.2 www.example.test A >&2
stop_captures

start_capture dns_rrtypes
for t in WKS MD TKEY NSAP-PTR TYPE54 SVCB HTTPS; do
    cli dig +tries=1 +time=2 @10.200.57.2 svc.example.test "$t" | grep -E "status:" >&2 || true
done
stop_captures
ls -l "$OUT"/dns_mdns.pcap "$OUT"/dns_update.pcap "$OUT"/dns_rrtypes.pcap >&2
