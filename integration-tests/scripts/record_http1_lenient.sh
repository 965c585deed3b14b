#!/usr/bin/env bash
# Records the HTTP/1 leniency captures (see proto_http1_lenient.rs) between
# real peers in two network namespaces: nginx (any-token methods, a malformed
# version, HTTP/0.9, obs-fold, request-smuggling shapes, a POST with 2 KB of
# headers), tinyproxy (CONNECT accepted and refused, tunnel traffic), and
# netcat-openbsd as a canned server (a lower-case status line, an answer that
# comes after the request timeout). Clients are curl and `printf | nc`.
# nginx's access log is written next to the captures as the oracle of what
# the server saw. Needs root. Usage: record_http1_lenient.sh [OUT_DIR]
#   http1_lenient.pcap         every case above but the POST and the slow answer
#   http1_lenient_nginx.log    nginx's access log of it: port "request" status "host"
#   http1_late.pcap            a request answered after 2.5 s, other traffic in between
#   http1_post.pcap            the POST with 2 KB of headers, whole
#   http1_post_midconn.pcap    the same, joined mid-connection: the handshake
#                              and every client segment after the first are cut
set -euo pipefail

OUT=$(realpath "${1:-$(dirname "$0")/../pcaps}")
mkdir -p "$OUT"
. "$(dirname "$0")/netns_pair.sh"
netns_pair hl 10.200.147.1 10.200.147.2
WORK=$TMP
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

# raw BYTES: one connection to nginx sending BYTES (printf format), half-closed after them.
raw() { cli sh -c "printf '$1' | nc -N -w 3 $S 8080 >/dev/null" || true; }
# canned PORT DELAY BYTES: netcat answers the next connection on PORT with BYTES after DELAY seconds.
canned() {
    ip netns exec "$SRV" sh -c "(sleep $2; printf '$3') | nc -N -l $S $1 >/dev/null" &
    PIDS+=($!)
    sleep 0.2
}

mkdir -p "$WORK/www"
echo "hello from nginx" >"$WORK/www/index.html"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx-error.log info;
pid $WORK/nginx.pid;
user root;
events { worker_connections 64; }
http {
    log_format oracle '\$remote_port "\$request" \$status "\$host"';
    access_log $WORK/access.log oracle;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    server {
        listen $S:8080;
        root $WORK/www;
        location /api/ { return 201 "created\n"; }
    }
}
EOF
bg_srv nginx -c "$WORK/nginx.conf"
cat >"$WORK/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port 8888
Listen $S
Timeout 10
Allow 10.200.147.0/24
ConnectPort 8080
LogLevel Info
EOF
bg_srv tinyproxy -d -c "$WORK/tinyproxy.conf"
wait_port $S 8080
wait_port $S 8888

start_capture http1_lenient
# Methods nginx does not implement are still requests (405/501 answers).
cli curl -s -o /dev/null -X QUERY -H 'Content-Type: application/json' --data-binary '{"q":1}' "http://$S:8080/search?q=1"
cli curl -s -o /dev/null -X PROPFIND -H 'Depth: 1' "http://$S:8080/dav/"
cli curl -s -o /dev/null -X PURGE "http://$S:8080/index.html"
# A malformed version, HTTP/0.9, an obs-folded header line.
raw 'GET /index.html HTTP/1.\r\nHost: badversion\r\n\r\n'
raw 'GET /index.html\r\n'
raw 'GET /index.html HTTP/1.1\r\nHost: folded\r\nX-Folded: first\r\n  second\r\nConnection: close\r\n\r\n'
# Request smuggling shapes, each followed by a request that must not be swallowed.
raw 'POST /api/a HTTP/1.1\r\nHost: smuggle\r\nContent-Length: 18446744073709551615\r\n\r\nGET /smuggled-1 HTTP/1.1\r\nHost: smuggle\r\n\r\n'
raw 'POST /api/b HTTP/1.1\r\nHost: smuggle\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nGET /smuggled-2 HTTP/1.1\r\nHost: smuggle\r\n\r\n'
raw 'POST /api/c HTTP/1.1\r\nHost: smuggle\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nGET /smuggled-3 HTTP/1.1\r\nHost: smuggle\r\n\r\n'
# CONNECT: accepted (a GET inside the tunnel), then refused (port not allowed).
cli curl -s -o /dev/null -p -x "http://$S:8888" "http://$S:8080/index.html"
cli curl -s -o /dev/null -p -x "http://$S:8888" "http://$S:9/" || true
# A lower-case status line from a canned server.
canned 8081 0.5 'http/1.1 200 ok\r\ncontent-length: 3\r\n\r\nok\n'
cli curl -s -o /dev/null --max-time 3 "http://$S:8081/lower" || true
stop_captures
cp "$WORK/access.log" "$OUT/http1_lenient_nginx.log"

# An answer 2.5 s late; a request to nginx 1.5 s in moves replay's clock on.
start_capture http1_late
canned 8082 2.5 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow!'
cli curl -s -o /dev/null --max-time 5 "http://$S:8082/slow" &
CURL=$!
sleep 1.5
cli curl -s -o /dev/null "http://$S:8080/index.html"
wait $CURL || true
stop_captures

# A POST whose head (2 KB of headers) spans two segments, then its body.
start_capture http1_post
PAD=()
for i in $(seq 40); do PAD+=(-H "X-Pad-$i: $(printf 'p%.0s' $(seq 40))"); done
head -c 3000 /dev/zero | tr '\0' 'b' >"$WORK/body.bin"
cli curl -s -o /dev/null "${PAD[@]}" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$WORK/body.bin" "http://$S:8080/api/orders?id=7"
stop_captures
# Joined mid-connection: keep the first client data segment and what the server sent.
FIRST=$(tshark -r "$OUT/http1_post.pcap" -Y "tcp.dstport==8080 && tcp.len>0" -T fields -e frame.number | head -1)
CUT=$(tshark -r "$OUT/http1_post.pcap" -Y "(tcp.dstport==8080 && tcp.len>0 && frame.number>$FIRST) || tcp.flags.syn==1" \
    -T fields -e frame.number | tr '\n' ' ')
# The bare ACK of the handshake goes too (frame 3): the capture starts at the first request segment.
editcap "$OUT/http1_post.pcap" "$OUT/http1_post_midconn.pcap" $CUT 3 >/dev/null

cat "$OUT/http1_lenient_nginx.log"
ls -l "$OUT"/http1_lenient* "$OUT"/http1_late.pcap "$OUT"/http1_post*
