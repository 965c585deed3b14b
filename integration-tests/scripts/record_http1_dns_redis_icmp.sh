#!/usr/bin/env bash
# Records the golden captures for HTTP/1, DNS, Redis and ICMP between real
# peers (nginx + curl/python, dnsmasq + dig, redis-server + redis-cli/
# redis-benchmark, ping) in two network namespaces joined by a veth pair.
# Needs root. Usage: record_http1_dns_redis_icmp.sh [OUT_DIR]
# Derived captures (mid-connection start, a lost segment) are cut from the
# full ones with editcap; truncated ones come from a second tcpdump -s 200.
set -euo pipefail

OUT=$(realpath "${1:-$(dirname "$0")/../pcaps}")
mkdir -p "$OUT"
. "$(dirname "$0")/netns_pair.sh"
netns_pair pa 10.200.41.1 10.200.41.2 fd00:200:41::1 fd00:200:41::2
C4=$C S4=$S WORK=$TMP
# Everything but ARP and IPv6 neighbour discovery / hop-by-hop noise.
CAPTURE_FILTER='not arp and not (ip6 and ip6[6] == 0) and not (icmp6 and ip6[40] >= 133)'
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

# Small clients for what curl and redis-cli cannot do (pipelining; one session without COMMAND DOCS).
cat >"$WORK/pipeline.py" <<'EOF'
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080))
s.sendall(b"GET /index.html HTTP/1.1\r\nHost: pipe\r\n\r\n"
          b"GET /nothing-here HTTP/1.1\r\nHost: pipe\r\n\r\n"
          b"HEAD /big.txt HTTP/1.1\r\nHost: pipe\r\nConnection: close\r\n\r\n")
deadline = time.time() + 5
while time.time() < deadline:
    if not s.recv(65536):
        break
s.close()
EOF
cat >"$WORK/redis_session.py" <<'EOF'
# One connection, commands sent one at a time (as a client library would).
import socket, sys
s = socket.create_connection((sys.argv[1], 6379))
for cmd in sys.argv[2:]:
    parts = cmd.split()
    s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p.encode()) for p in parts))
    s.recv(65536)
s.close()
EOF

srv() { ip netns exec "$SRV" "$@"; }



if [[ " ${SECTIONS:-http1 dns redis icmp} " == *" http1 "* ]]; then
mkdir -p "$WORK/www"
echo "hello from nginx" >"$WORK/www/index.html"
# Random text: gzip output stays large, so the chunked body spans several segments.
head -c 15000 /dev/urandom | base64 >"$WORK/www/big.txt"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx-error.log;
pid $WORK/nginx.pid;
user root;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    keepalive_requests 100;
    server {
        listen $S4:8080;
        root $WORK/www;
        gzip on;
        gzip_types text/plain;
        gzip_min_length 0;
        location /upload/ { dav_methods PUT; create_full_put_path on; }
    }
}
EOF
bg_srv nginx -c "$WORK/nginx.conf"
wait_port $S4 8080

start_capture http1
start_capture http1_snap200 200
sleep 1
# One keep-alive connection: GET with query and traceparent, 404, then HEAD (--next keeps the connection).
cli curl -s -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
    -o /dev/null "http://$S4:8080/index.html?user=alice" -o /dev/null "http://$S4:8080/missing" \
    --next -s -I -o /dev/null "http://$S4:8080/index.html"
# gzip on the fly: chunked response.
cli curl -s -o /dev/null -H 'Accept-Encoding: gzip' -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' "http://$S4:8080/big.txt"
# PUT with Expect: 100-continue (nginx answers 100 before reading the body).
head -c 3000 /dev/zero | tr '\0' 'a' >"$WORK/body.bin"
cli curl -s -o /dev/null -H 'Expect: 100-continue' -T "$WORK/body.bin" "http://$S4:8080/upload/f.bin"
# Pipelining: three requests in one segment, then read all responses.
cli python3 "$WORK/pipeline.py" "$S4"
stop_captures
# Capture joined mid-connection: drop the handshake and the first exchange of the keep-alive connection.
editcap -r "$OUT/http1.pcap" "$OUT/http1_midconn.pcap" 6-100000 >/dev/null
# A lost segment: the second data segment of the chunked gzip body (second connection).
LOST=$(tshark -r "$OUT/http1.pcap" -Y 'tcp.stream==1 && tcp.srcport==8080 && tcp.len>0' -T fields -e frame.number 2>/dev/null | sed -n 2p)
editcap "$OUT/http1.pcap" "$OUT/http1_lost.pcap" "$LOST" >/dev/null

fi; if [[ " ${SECTIONS:-http1 dns redis icmp} " == *" dns "* ]]; then
bg_srv dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=$S4 --port 53 \
    --local=/test/ --host-record=example.test,10.200.41.100 --cname=www.test,example.test \
    --host-record=h6.test,fd00:200:41::99 \
    --txt-record=big.test,"$(printf 'x%.0s' $(seq 200))","$(printf 'y%.0s' $(seq 200))","$(printf 'z%.0s' $(seq 200))"
sleep 1
start_capture dns
sleep 1
cli dig +short +tries=1 @$S4 example.test A >/dev/null
cli dig +short +tries=1 @$S4 h6.test AAAA >/dev/null
cli dig +short +tries=1 @$S4 www.test A >/dev/null
cli dig +short +tries=1 @$S4 nope.test A >/dev/null || true
# Over 512 bytes without EDNS: truncated (TC) over UDP, not retried.
cli dig +short +tries=1 +noedns +ignore @$S4 big.test TXT >/dev/null || true
# TCP: several queries on one connection.
cli dig +short +tcp +keepopen +tries=1 @$S4 example.test A h6.test AAAA nope.test A >/dev/null || true
stop_captures

fi; if [[ " ${SECTIONS:-http1 dns redis icmp} " == *" redis "* ]]; then
bg_srv redis-server --bind $S4 --port 6379 --save '' --appendonly no --protected-mode no
wait_port $S4 6379
start_capture redis
start_capture redis_snap200 200
sleep 1
cli redis-cli -h $S4 SET greeting hello >/dev/null
cli redis-cli -h $S4 GET greeting >/dev/null
cli redis-cli -h $S4 GET missing >/dev/null
cli redis-cli -h $S4 LPUSH greeting x >/dev/null
cli redis-cli -h $S4 CLIENT SETNAME tester >/dev/null
cli python3 "$WORK/redis_session.py" $S4 "SELECT 1" "MULTI" "INCR counter" "INCR counter" "EXEC" "DEL counter"
cli redis-cli -h $S4 SET bigvalue "$(head -c 3000 /dev/zero | tr '\0' 'v')" >/dev/null
cli redis-cli -h $S4 GET bigvalue >/dev/null
cli redis-cli -3 -h $S4 HGETALL nohash >/dev/null
# Pub/sub: a subscriber gets two messages; the publisher's replies are counts.
cli timeout 3 redis-cli -h $S4 SUBSCRIBE news >/dev/null &
SUB=$!
sleep 1
cli redis-cli -h $S4 PUBLISH news first >/dev/null
cli redis-cli -h $S4 PUBLISH news second >/dev/null
wait $SUB 2>/dev/null || true
# Pipelining: 16 requests in flight per connection.
cli redis-benchmark -h $S4 -c 1 -n 32 -P 16 -t set,get -q >/dev/null
stop_captures
editcap -r "$OUT/redis.pcap" "$OUT/redis_midconn.pcap" 4-100000 >/dev/null

fi; if [[ " ${SECTIONS:-http1 dns redis icmp} " == *" icmp "* ]]; then
start_capture icmp
sleep 1
cli ping -c 3 -i 0.2 $S4 >/dev/null
cli ping -6 -c 3 -i 0.2 $S6 >/dev/null
# UDP to closed ports: ICMP (v4 and v6) port unreachable quoting the datagram.
cli python3 -c "
import socket
for fam, addr in ((socket.AF_INET, '$S4'), (socket.AF_INET6, '$S6')):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b'knock', (addr, 9))
    s.close()
"
stop_captures

fi
ls -l "$OUT"
