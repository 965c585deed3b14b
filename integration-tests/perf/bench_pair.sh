#!/usr/bin/env bash
# Two builds side by side on the same traffic: CPU per 1,000 requests of each.
# Usage: bench_pair.sh OLD_BIN NEW_BIN [ROUNDS]   (root; nginx, wrk, redis-server, redis-benchmark, python3)
# WRK_HEADERS="User-Agent: x|traceparent: 00-…-01" (headers separated by |) and WRK_PATH="index.html?a=1"
# give wrk's requests what real clients send (plain wrk sends only Host).
# WORKLOADS="wrk redis" (default) runs a subset; "wrk_paced" is wrk below saturation (PACED_CONNS
# connections, default 144, each waiting PACED_MS, default 1, after every response: with many
# connections and cold caches between drains, the per-packet state lookups cost more); "pgbench" adds PostgreSQL (pgbench -S, simple
# protocol: every statement a new text with its literal inline; needs postgresql), "mysqlslap"
# MariaDB (8 clients, one SELECT by primary key; needs mariadb-server, mariadb-client). EXPORT=1: each agent exports every span to its
# own OTLP/HTTP protobuf receiver (127.0.0.1:4318 and :4319 in the server's netns).
#
# Why: bench_overhead.sh compares rounds taken one after another, and on a shared
# host the speed of the machine drifts between rounds by ±20%, more than most
# changes to the agent. Here both agents attach to the same veth at the same time
# (each its own TC programs, rings and process) and see the same packets, so
# whatever the host does happens to both: the ratio NEW/OLD of their CPU per
# request is steady to about ±2% (an OLD/OLD run shows the noise). They share the
# two cores with the workload, so the absolute figures are higher than one
# agent's; use bench_overhead.sh for those. Rounds alternate which agent starts first.
set -euo pipefail
wrk_headers=()
if [ -n "${WRK_HEADERS:-}" ]; then
  IFS='|' read -r -a hs <<< "$WRK_HEADERS"
  for h in "${hs[@]}"; do wrk_headers+=(-H "$h"); done
fi
[ $# -ge 2 ] || { sed -n 2,5p "$0" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-4}
A=cnfpair-a-$$ B=cnfpair-b-$$
work=$(mktemp -d)
# nginx's workers (nobody) and PostgreSQL read below it: without this nginx
# answers every request with a 153-byte 403 (all wrk figures before session 33).
chmod 755 "$work"
cleanup() {
  set +e
  ip netns pids $B 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids $A 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.3
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add va netns $A type veth peer name vb netns $B
ip -n $A addr add 10.200.97.1/24 dev va; ip -n $B addr add 10.200.97.2/24 dev vb
ip -n $A link set va up; ip -n $B link set vb up; ip -n $A link set lo up; ip -n $B link set lo up
mkdir -p "$work/www"; head -c 1024 /dev/urandom | base64 > "$work/www/index.html"
cat > "$work/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 10.200.97.2:8080; root $work/www; } }
NGX
ip netns exec $B nginx -c "$work/nginx.conf" &
ip netns exec $B redis-server --bind 10.200.97.2 --port 6379 --save '' --appendonly no --protected-mode no >/dev/null &
cat > "$work/recv.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
if [ "${EXPORT:-0}" = 1 ]; then
  for port in 4318 4319; do ip netns exec $B python3 "$work/recv.py" $port & done
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ " ${WORKLOADS:-} " == *" pgbench "* ]]; then
  # A throw-away cluster in the server's netns (trust authentication, no fsync),
  # pgbench's tables at scale 1 filled before any agent starts.
  [ -n "$pgbin" ] || { echo "pgbench workload: PostgreSQL is not installed" >&2; exit 2; }
  mkdir -p "$work/pg"; chown postgres "$work/pg"
  as_pg() { ip netns exec $B su postgres -s /bin/bash -c "$*"; }
  as_pg "$pgbin/initdb -D $work/pg -U postgres --auth=trust -E UTF8 --locale=C" >/dev/null
  echo "host all all 10.200.97.0/24 trust" >> "$work/pg/pg_hba.conf"
  as_pg "$pgbin/pg_ctl -D $work/pg -w -l $work/pg/log -o \"-c listen_addresses=10.200.97.2 -c unix_socket_directories=$work/pg -c fsync=off -c synchronous_commit=off\" start" >/dev/null
  ip netns exec $A "$pgbin/pgbench" -h 10.200.97.2 -U postgres -i -s 1 -q postgres >/dev/null 2>&1
fi
if [[ " ${WORKLOADS:-} " == *" mysqlslap "* ]]; then
  # A throw-away MariaDB in the server's netns, its datadir and socket in $work.
  command -v mariadbd >/dev/null || { echo "mysqlslap workload: mariadb-server is not installed" >&2; exit 2; }
  mariadb-install-db --user=root --datadir="$work/my" --auth-root-authentication-method=socket >/dev/null 2>&1
  ip netns exec $B mariadbd --no-defaults --user=root --datadir="$work/my" --socket="$work/my.sock" \
    --pid-file="$work/my.pid" --log-error="$work/my.err" --bind-address=10.200.97.2 --port=3306 \
    --skip-name-resolve --innodb-buffer-pool-size=16M --skip-log-bin &
  for _ in $(seq 100); do ip netns exec $B mariadb --no-defaults -S "$work/my.sock" -u root -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  ip netns exec $B mariadb --no-defaults -S "$work/my.sock" -u root -e "CREATE DATABASE shop;
    CREATE USER 'app'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON shop.* TO 'app'@'%';
    CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2));
    INSERT INTO shop.items VALUES (1,'apple',1.50),(2,'pear',2.25),(3,'plum',0.75);"
fi
sleep 1

start() { # BIN PORT -> pid
  local env=(CNFLOW_INTERFACES=vb)
  if [ "${EXPORT:-0}" = 1 ]; then
    env+=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$2 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
  fi
  ip netns exec $B env "${env[@]}" "$1" run --format none > /dev/null 2> "$work/agent$2.err" &
  echo $!
}
# Requests wrk made, or a failure when some were answered with anything but 2xx/3xx.
wrk_requests() {
  awk '/requests in/{n=$1} /Non-2xx or 3xx responses/{bad=$NF}
       END{if (bad) {print "wrk: " bad " of " n " responses were not 2xx/3xx" > "/dev/stderr"; exit 1} print n}'
}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
workload() { # NAME -> requests done
  case $1 in
    wrk) ip netns exec $A wrk -t1 -c32 -d6s "${wrk_headers[@]}" "http://10.200.97.2:8080/${WRK_PATH:-}" | wrk_requests ;;
    wrk_paced) printf 'function delay() return %s end\n' "${PACED_MS:-1}" > "$work/paced.lua"
               ip netns exec $A wrk -t1 -c"${PACED_CONNS:-144}" -d6s -s "$work/paced.lua" "http://10.200.97.2:8080/${WRK_PATH:-}" |
                 wrk_requests ;;
    redis) local n=300000  # per test: SET and GET
           ip netns exec $A redis-benchmark -h 10.200.97.2 -p 6379 -n $n -c 50 -t set,get --csv 2>/dev/null >/dev/null
           echo $((2 * n)) ;;
    pgbench) ip netns exec $A "$pgbin/pgbench" -h 10.200.97.2 -U postgres -c 8 -T 6 -S -M simple postgres 2>/dev/null |
               awk '/transactions actually processed/{split($NF, a, "/"); print a[1]}' ;;
    mysqlslap) local q=120000
               ip netns exec $A mysqlslap --no-defaults -h 10.200.97.2 -u app -ppw --create-schema=shop --concurrency=8 \
                 --iterations=1 --number-of-queries=$q --query="SELECT name, price FROM items WHERE id = 2" >/dev/null 2>&1
               echo $q ;;
    *) echo "unknown workload $1" >&2; exit 2 ;;
  esac
}
echo "old: $old"; echo "new: $new"; echo "export every span: ${EXPORT:-0}; $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
for w in ${WORKLOADS:-wrk redis}; do
  ratios=()
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then po=$(start "$old" 4318); pn=$(start "$new" 4319)
    else pn=$(start "$new" 4319); po=$(start "$old" 4318); fi
    for _ in $(seq 150); do
      grep -q attached "$work/agent4318.err" && grep -q attached "$work/agent4319.err" && break; sleep 0.2
    done
    sleep 0.5
    o0=$(cpu "$po"); n0=$(cpu "$pn")
    reqs=$(workload "$w")
    o1=$(cpu "$po"); n1=$(cpu "$pn")
    kill -INT "$po" "$pn"; wait "$po" "$pn" 2>/dev/null || true
    line=$(python3 -c "
k = $reqs / 1000; o = ($o1 - $o0) * 10 / k; n = ($n1 - $n0) * 10 / k
print(f'{o:.2f} {n:.2f} {n / o:.3f}')")
    read -r oc nc ratio <<< "$line"
    ratios+=("$ratio")
    echo "$w round $r: $reqs requests; agent CPU per 1k requests old $oc ms, new $nc ms; new/old $ratio"
  done
  python3 -c "
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
print(f'$w: new/old median {statistics.median(r):.3f} (range {r[0]:.3f}-{r[-1]:.3f}, {len(r)} rounds)')" "${ratios[@]}"
done
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
