#!/usr/bin/env bash
# Records the memcached golden captures and the odd-HTTP captures that no
# protocol but HTTP may claim, between real peers in two network namespaces.
# Needs root, memcached, nginx, netcat-openbsd, pymemcache and
# python-binary-memcached. Usage: record_memcached.sh [OUT_DIR]
#   memcached.pcap            pymemcache text session + meta commands via nc
#   memcached_snap100.pcap    the same, tcpdump -s 100
#   memcached_binary.pcap     python-binary-memcached (binary protocol)
#   memcached_midconn.pcap    a capture started in the middle of a connection
#   http_odd.pcap             HTTP/0.9, a request line without URI, headers first
#   http_odd_midconn.pcap     captures starting after the request line was sent
set -euo pipefail

HERE=$(realpath "$(dirname "$0")")
OUT=$(realpath "${1:-$HERE/../pcaps}")
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair mc 10.200.57.1 10.200.57.2
WORK=$TMP
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

# printf FORMAT | nc: one connection, closed a second after the last byte sent.
nc_send() { printf "$1" | cli nc -q 1 "$S" "$2" >/dev/null || true; }

if [[ " ${SECTIONS:-memcached http} " == *" memcached "* ]]; then
bg_srv memcached -u root -l "$S" -p 11211 -U 0 -m 16
wait_port "$S" 11211

start_capture memcached
start_capture memcached_snap100 100
cli python3 "$HERE/memcached/text_client.py" "$S"
# Meta commands, pipelined in one segment: set, get hit (value, flags, TTL),
# get miss, quiet miss (no reply), quiet hit, no-op, quiet delete (no reply),
# delete miss, arithmetic with auto-create, decrement returning the value, no-op.
nc_send 'ms mfoo 3 T0 F5 O1\r\nbar\r\nmg mfoo v f t O2\r\nmg mmissing v O3\r\nmg mmissing v q O4\r\nmg mfoo s v q O5\r\nmn\r\nmd mfoo q O6\r\nmd mfoo O7\r\nma mcount N0 J13 O8\r\nma mcount MD D3 v O9\r\nmn\r\n' 11211
stop_captures

start_capture memcached_binary
cli python3 "$HERE/memcached/binary_client.py" "$S"
stop_captures

cli python3 "$HERE/memcached/midconn_client.py" "$S" &
MID=$!
sleep 2
start_capture memcached_midconn
wait $MID
stop_captures
fi

if [[ " ${SECTIONS:-memcached http} " == *" http "* ]]; then
mkdir -p "$WORK/www"
echo "hello from nginx" >"$WORK/www/index.html"
cat >"$WORK/nginx.conf" <<NGINX
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
    server {
        listen $S:8080;
        root $WORK/www;
    }
}
NGINX
bg_srv nginx -c "$WORK/nginx.conf"
wait_port "$S" 8080

start_capture http_odd
nc_send 'GET /index.html\r\n' 8080                  # HTTP/0.9: body only in reply
nc_send 'GET /missing\r\n' 8080                     # HTTP/0.9 404: an error page body, no headers
nc_send 'GET\r\n\r\n' 8080                          # request line without URI: 400
nc_send 'Host: x\r\nAccept: */*\r\n\r\n' 8080       # headers first: 400
nc_send 'GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' 8080  # a normal request
stop_captures

cli python3 "$HERE/memcached/slow_http.py" "$S" "GET /index.html HTTP/1.1" &
A=$!
cli python3 "$HERE/memcached/slow_http.py" "$S" "GET /missing HTTP/1.1" &
B=$!
sleep 2
start_capture http_odd_midconn
wait $A $B
stop_captures
fi
ls -l "$OUT"
