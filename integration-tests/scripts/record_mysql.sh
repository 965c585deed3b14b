#!/usr/bin/env bash
# Records the MySQL-protocol golden captures against a real MariaDB server
# (mariadbd from Debian, datadir made by mariadb-install-db in a temp dir) in
# two network namespaces joined by a veth pair. Needs root.
#   mysql.pcap          mysql CLI (queries, an error, `use`), PyMySQL (DDL/DML,
#                       a multi-statement call), mysql-connector-python with
#                       server-side prepared statements (cursor(prepared=True)),
#                       and `mysql --compress` with one row > 16 MB
#   mysql_snap200.pcap  the same traffic captured with a 200-byte snap length
#   mysql_midconn.pcap  mysql.pcap without its first packets (joined mid-connection)
#   mysql_port6033.pcap a PyMySQL session on port 6033 (no port hint applies)
# The clients write what they saw (rows, affected rows, error codes) to
# integration-tests/golden/mysql_facts.jsonl: the tests' oracle.
# Usage: record_mysql.sh [OUT_DIR]
set -euo pipefail

HERE=$(realpath "$(dirname "$0")")
OUT=$(realpath "${1:-$HERE/../pcaps}")
FACTS=$(realpath "$HERE/../golden")/mysql_facts.jsonl
mkdir -p "$OUT"
. "$HERE/netns_pair.sh"
netns_pair my 10.200.61.1 10.200.61.2
WORK=$TMP
trap 'echo "record: line $LINENO failed: $BASH_COMMAND" >&2' ERR
sleep 1

srv() { ip netns exec "$SRV" "$@"; }


# The server: its own datadir and socket, root as the OS user (it runs as root in the namespace).
mariadb-install-db --user=root --datadir="$WORK/data" --auth-root-authentication-method=socket >/dev/null
MARIADB_PID=
start_server() {
    ip netns exec "$SRV" mariadbd --no-defaults --user=root --datadir="$WORK/data" --socket="$WORK/mariadb.sock" \
        --pid-file="$WORK/mariadb.pid" --log-error="$WORK/mariadb.err" --bind-address="$S" --port="$1" \
        --skip-name-resolve --max-allowed-packet=64M --innodb-buffer-pool-size=16M --skip-log-bin &
    MARIADB_PID=$!
    PIDS+=($MARIADB_PID)
    wait_port "$S" "$1" 100 || { cat "$WORK/mariadb.err" >&2; return 1; }
}
stop_server() {
    kill "$MARIADB_PID"
    wait "$MARIADB_PID" 2>/dev/null || true
}
start_server 3306
srv mariadb --no-defaults -S "$WORK/mariadb.sock" -u root <<'SQL'
CREATE DATABASE shop;
CREATE DATABASE other;
CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret-pw';
GRANT ALL ON shop.* TO 'app'@'%';
GRANT ALL ON other.* TO 'app'@'%';
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2));
INSERT INTO shop.items VALUES (1,'apple',1.50),(2,'pear',2.25),(3,'plum',0.75),(4,'fig',3.00);
CREATE TABLE other.notes (id INT PRIMARY KEY, body TEXT);
INSERT INTO other.notes VALUES (1,'one'),(2,'two');
SQL

cat >"$WORK/clients.py" <<'EOF'
# The library clients. Each prints one JSON line per statement with what the
# client itself saw (rows fetched, affected rows, error code): the oracle.
import json, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
facts = open(sys.argv[4], "a")

def fact(**kw):
    facts.write(json.dumps(kw, sort_keys=True) + "\n")

if mode in ("pymysql", "pymysql6033"):
    import pymysql
    conn = pymysql.connect(host=host, port=port, user="app", password="app-secret-pw", database="shop",
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    cur = conn.cursor()
    stmts = [
        "CREATE TABLE IF NOT EXISTS orders (id INT PRIMARY KEY, item INT, qty INT)",
        "INSERT INTO orders VALUES (1, 1, 3), (2, 2, 1), (3, 4, 7)",
        "UPDATE orders SET qty = qty + 1 WHERE qty < 5",
        "SELECT o.id, i.name, o.qty FROM orders o JOIN items i ON i.id = o.item ORDER BY o.id",
        "SELECT name, price FROM items WHERE price > 1.00",
        "DELETE FROM orders WHERE id = 3",
        "SELECT COUNT(*) FROM orders",
        "INSERT INTO orders VALUES (1, 1, 1)",
        "DROP TABLE orders",
    ] if mode == "pymysql" else [
        "SELECT id, name FROM items ORDER BY id",
        "SELECT * FROM nowhere",
    ]
    for sql in stmts:
        try:
            n = cur.execute(sql)
            rows = cur.fetchall()
            if cur.description is not None:
                fact(client=mode, sql=sql, rows=len(rows))
            else:
                fact(client=mode, sql=sql, affected=n)
        except pymysql.MySQLError as e:
            fact(client=mode, sql=sql, error=e.args[0])
    if mode == "pymysql":
        # Two result sets and an OK in one COM_QUERY (MULTI_STATEMENTS).
        sql = "SELECT id FROM items; SELECT 1, 2; SET @x = 1"
        cur.execute(sql)
        rows = len(cur.fetchall())
        while cur.nextset():
            rows += len(cur.fetchall() or ())
        fact(client=mode, sql=sql, rows=rows)
        conn.select_db("other")
        fact(client=mode, command="COM_INIT_DB", namespace="other")
        cur.execute("SELECT body FROM notes")
        fact(client=mode, sql="SELECT body FROM notes", rows=len(cur.fetchall()))
        conn.ping()
        fact(client=mode, command="COM_PING")
    conn.close()
elif mode == "connector":
    import mysql.connector
    conn = mysql.connector.connect(host=host, port=port, user="app", password="app-secret-pw", database="shop",
                                   use_pure=True, ssl_disabled=True)
    cur = conn.cursor(prepared=True)
    for sql, params in [
        ("SELECT id, name FROM items WHERE id > %s", (1,)),
        ("SELECT id, name FROM items WHERE id > %s", (3,)),
        ("UPDATE items SET price = price + %s WHERE id = %s", (1, 2)),
        ("SELECT name FROM items WHERE name = %s", ("kiwi",)),
    ]:
        cur.execute(sql, params)
        if sql.startswith("SELECT"):
            fact(client=mode, sql=sql, prepared=True, rows=len(cur.fetchall()))
        else:
            fact(client=mode, sql=sql, prepared=True, affected=cur.rowcount)
    try:
        cur.execute("SELECT nope FROM items WHERE id = %s", (1,))
    except mysql.connector.Error as e:
        fact(client=mode, sql="SELECT nope FROM items WHERE id = %s", prepared=True, error=e.errno)
    cur.close()
    conn.close()
EOF

: >"$FACTS"
start_capture mysql
start_capture mysql_snap200 200
sleep 1

# 1. The mysql CLI: a session with statements, an error (--force goes on) and `use`.
# Statements from stdin (batch mode): --force goes on after the error, `use` is the CLI's COM_INIT_DB.
printf '%s\n' "SELECT id, name, price FROM items ORDER BY id;" "SELECT * FROM missing_table;" "use other" \
    "SELECT COUNT(*) FROM notes;" "SHOW TABLES;" >"$WORK/cli.sql"
cli mariadb --no-defaults -h "$S" -u app -papp-secret-pw --force --skip-ssl shop <"$WORK/cli.sql" >"$WORK/cli.out" 2>"$WORK/cli.err" || true
python3 - "$WORK/cli.out" "$WORK/cli.err" "$FACTS" <<'EOF'
# What the CLI printed: result rows per statement (tab-separated, header first) and its error lines.
import json, re, sys
out, err, facts = open(sys.argv[1]).read(), open(sys.argv[2]).read(), open(sys.argv[3], "a")
for m in re.finditer(r"ERROR (\d+) \((\w+)\)", err):
    facts.write(json.dumps({"client": "cli", "error": int(m.group(1)), "sql_state": m.group(2)}, sort_keys=True) + "\n")
facts.write(json.dumps({"client": "cli", "output_lines": len(out.splitlines())}, sort_keys=True) + "\n")
EOF
sleep 0.3

# 2. PyMySQL (text protocol).
cli python3 "$WORK/clients.py" "$S" 3306 pymysql "$FACTS"
sleep 0.3

# 3. mysql-connector-python, server-side prepared statements.
cli python3 "$WORK/clients.py" "$S" 3306 connector "$FACTS"
sleep 0.3

# 4. Compressed protocol, with a row of one 17 MB value (split into 16 MB packets inside the compressed frames).
cli mariadb --no-defaults -h "$S" -u app -papp-secret-pw --skip-ssl --compress --max-allowed-packet=64M shop \
    -e "SELECT name FROM items WHERE id < 3; SELECT LENGTH(REPEAT('x', 17000000)) AS n, REPEAT('x', 17000000) AS big" \
    | wc -l | python3 -c "import json,sys; print(json.dumps({'client': 'cli_compress', 'output_lines': int(sys.stdin.read())}))" >>"$FACTS"
sleep 0.3
stop_captures

# 5. Port 6033: same server, moved.
stop_server
start_server 6033
start_capture mysql_port6033
sleep 1
cli python3 "$WORK/clients.py" "$S" 6033 pymysql6033 "$FACTS"
sleep 0.5
stop_captures
stop_server

# Joined mid-connection: drop the first packets (the CLI's handshake and first statement).
editcap -F pcap -r "$OUT/mysql.pcap" "$OUT/mysql_midconn.pcap" 14-1000000 >/dev/null
chmod 0644 "$OUT"/mysql*.pcap
ls -l "$OUT"/mysql*.pcap
cat "$FACTS"
