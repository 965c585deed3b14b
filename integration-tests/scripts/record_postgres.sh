#!/usr/bin/env bash
# Records the PostgreSQL golden captures between a real PostgreSQL 15 server
# and real clients in two network namespaces joined by a veth pair:
#   postgres.pcap          psql (simple queries, errors, COPY in/out, LISTEN/NOTIFY,
#                          SCRAM authentication), psycopg 3 (extended protocol,
#                          prepared statements, pipeline mode, executemany, COPY),
#                          pgbench -M prepared (10 transactions)
#   postgres_8000.pcap     a server on port 8000: one clear-text psql session and
#                          one sslmode=require session (TLS: counted, not decoded)
#   postgres_midconn.pcap  postgres.pcap without its first packets (joined mid-connection)
#   postgres_snap200.pcap  the same traffic as postgres.pcap recorded with -s 200
# The clients' own view (queries, row counts, SQLSTATEs) is written next to the
# golden files: integration-tests/golden/postgres_facts.json (psycopg) and
# postgres_psql.out (psql's output). Needs root. Usage: record_postgres.sh [OUT_DIR]
set -euo pipefail

HERE=$(realpath "$(dirname "$0")")
OUT=$(realpath "${1:-$HERE/../pcaps}")
GOLD=$(realpath "$HERE/../golden")
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair pg 10.200.43.1 10.200.43.2
WORK=$TMP
chmod 755 "$WORK"
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PGPASSWORD=s3cret-pw

as_pg() { ip netns exec "$SRV" su postgres -s /bin/bash -c "$*"; }

# Two clusters (PostgreSQL listens on one port per cluster): 5432 clear text,
# 8000 with SSL enabled (Debian's snakeoil certificate).
echo "$PGPASSWORD" >"$WORK/pw"
chmod 644 "$WORK/pw"
for port in 5432 8000; do
    d=$WORK/data$port
    mkdir -p "$d" && chown postgres "$d"
    as_pg "$PGBIN/initdb -D $d -U postgres --pwfile=$WORK/pw --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C" >/dev/null
    echo "host all all 10.200.43.0/24 scram-sha-256" >>"$d/pg_hba.conf"
    ssl=off
    if [ $port = 8000 ]; then
        cp /etc/ssl/certs/ssl-cert-snakeoil.pem "$d/server.crt"
        cp /etc/ssl/private/ssl-cert-snakeoil.key "$d/server.key"
        chown postgres "$d/server.crt" "$d/server.key" && chmod 600 "$d/server.key"
        ssl=on
    fi
    as_pg "$PGBIN/pg_ctl -D $d -w -l $d/server.log -o \"-c listen_addresses=$S -c port=$port -c unix_socket_directories=$d -c ssl=$ssl -c fsync=off\" start" >/dev/null
done
as_pg "psql -h $WORK/data5432 -p 5432 -U postgres -q -c 'CREATE DATABASE shop'"
as_pg "psql -h $WORK/data8000 -p 8000 -U postgres -q -c 'CREATE DATABASE shop'"
# pgbench's tables are filled before recording (its 100000-row COPY would be most of the capture).
cli "$PGBIN/pgbench" -h $S -U postgres -i -s 1 -q shop >/dev/null 2>&1


cat >"$WORK/session.sql" <<'EOF'
\set VERBOSITY verbose
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', 2.25), (3, 'plum', 0.75);
SELECT id, name FROM items WHERE price > 1 ORDER BY id;
UPDATE items SET price = 1.75 WHERE name = 'apple';
SELECT * FROM missing_table;
SELECT 1 / 0;
\copy items FROM stdin
4	fig	3.5
5	kiwi	0.5
\.
COPY items TO STDOUT;
LISTEN news;
NOTIFY news, 'fresh fruit';
BEGIN; DELETE FROM items WHERE id = 5; COMMIT;
SELECT repeat('x', 3000) AS big \g /dev/null
EOF

cat >"$WORK/client.py" <<'EOF'
# psycopg 3: extended protocol. Prints what the client saw as JSON.
import json, sys, psycopg
facts = []
def run(cur, q, params=None, **kw):
    f = {"query": q}
    try:
        cur.execute(q, params, **kw)
        f["rowcount"] = cur.rowcount
        if cur.description is not None:
            f["rows"] = len(cur.fetchall())
    except psycopg.Error as e:
        f["sqlstate"] = e.sqlstate
        cur.connection.rollback()
    facts.append(f)
conn = psycopg.connect(host=sys.argv[1], dbname="shop", user="postgres", password=sys.argv[2],
                       sslmode="disable", autocommit=True)
cur = conn.cursor()
run(cur, "SELECT id, name FROM items WHERE id = %s", (2,))
for i in range(3):
    run(cur, "SELECT name, price FROM items WHERE id <= %s", (i + 1,), prepare=True)
run(cur, "SELECT * FROM nope WHERE id = %s", (1,))
run(cur, "INSERT INTO items VALUES (%s, %s, %s)", (2, "dup", 1))
with conn.pipeline():
    for i in range(10, 13):
        run(cur, "INSERT INTO items VALUES (%s, %s, %s)", (i, "p%d" % i, i))
    run(cur, "UPDATE items SET price = price + 1 WHERE id >= %s", (10,))
cur.executemany("DELETE FROM items WHERE id = %s", [(10,), (11,)])
facts.append({"query": "executemany DELETE FROM items WHERE id = %s", "rowcount": cur.rowcount, "executes": 2})
with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
    for i in range(20, 24):
        cp.write_row((i, "c%d" % i, i))
facts.append({"query": "COPY items (id, name, price) FROM STDIN", "rowcount": cur.rowcount})
conn.close()
json.dump(facts, sys.stdout, indent=1)
EOF

start_capture postgres
start_capture postgres_snap200 200
sleep 1
cli "$PGBIN/psql" -h $S -U postgres -d shop -f "$WORK/session.sql" >"$WORK/psql.out" 2>&1 || true
cli python3 "$WORK/client.py" $S "$PGPASSWORD" >"$WORK/facts.json"
cli "$PGBIN/pgbench" -h $S -U postgres -M prepared -c 1 -t 10 -n shop >"$WORK/pgbench.out" 2>&1
stop_captures
cp "$WORK/psql.out" "$GOLD/postgres_psql.out"
cp "$WORK/facts.json" "$GOLD/postgres_facts.json"
grep -E "transactions actually processed" "$WORK/pgbench.out" >"$GOLD/postgres_pgbench.out"

start_capture postgres_8000
sleep 1
cli "$PGBIN/psql" "host=$S port=8000 user=postgres dbname=shop sslmode=disable" -c "CREATE TABLE t8 (a int)" -c "INSERT INTO t8 SELECT generate_series(1, 5)" -c "SELECT count(*) FROM t8" >/dev/null
cli "$PGBIN/psql" "host=$S port=8000 user=postgres dbname=shop sslmode=require" -c "SELECT 1" >/dev/null
stop_captures

# Joined mid-connection: the first 24 packets (the psql startup and its first statements) are cut.
editcap -F pcap -r "$OUT/postgres.pcap" "$OUT/postgres_midconn.pcap" 25-100000 >/dev/null
ls -l "$OUT"/postgres*.pcap
