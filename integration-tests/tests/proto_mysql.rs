//! MySQL protocol against a real MariaDB (integration-tests/scripts/record_mysql.sh):
//! golden replays of the mysql CLI, PyMySQL, mysql-connector-python's
//! server-side prepared statements and a compressed session with a 17 MB row,
//! checked against what the clients themselves saw (golden/mysql_facts.jsonl);
//! the same traffic cut by a 200-byte snap length and joined mid-connection;
//! a session on port 6033; and a live run through the eBPF capture.
#[path = "../harness/golden.rs"]
mod golden;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/live.rs"]
mod live;
#[path = "../harness/netns.rs"]
mod netns;
use golden::*;
use serde_json::Value;
use std::time::Duration;

const FIELDS: &[&str] = &[
    "/conn/id",
    "/detail/command",
    "/detail/summary",
    "/detail/namespace",
    "/detail/returned_rows",
    "/detail/affected_rows",
    "/detail/error_code",
    "/outcome",
    "/partial",
];

/// The client facts the recording script wrote (what each client saw).
fn facts(client: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(golden_path("mysql_facts.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|f| f["client"] == client).collect()
}

fn on_conn(exs: &[Value], id: u64) -> Vec<&Value> {
    exs.iter().filter(|e| e["conn"]["id"] == id).collect()
}

/// Each statement fact is matched, in order, by the exchange carrying its text:
/// rows, affected rows and error code are what the client saw.
fn check_facts(exs: &[&Value], facts: &[Value], prepared: bool) {
    let mut at = 0;
    for f in facts {
        let Some(sql) = f["sql"].as_str() else { continue };
        // mysql-connector sends `?` placeholders for its `%s`.
        let text = sql.replace("%s", "?");
        let failed_prepare = prepared && f.get("error").is_some();
        let want_cmd = match (prepared, failed_prepare) {
            (false, _) => "COM_QUERY",
            (true, true) => "COM_STMT_PREPARE",
            (true, false) => "COM_STMT_EXECUTE",
        };
        let i = exs[at..]
            .iter()
            .position(|e| field(e, "/detail/command") == want_cmd && field(e, "/detail/query_raw") == text)
            .unwrap_or_else(|| panic!("no {want_cmd} exchange for {text:?} after #{at}"))
            + at;
        let e = exs[i];
        assert_eq!(e["outcome"], "complete", "{text}");
        assert_eq!(e["partial"], false, "{text}");
        if let Some(rows) = f.get("rows") {
            assert_eq!(e["detail"]["returned_rows"], *rows, "{text}");
        }
        if let Some(n) = f.get("affected") {
            assert_eq!(e["detail"]["affected_rows"], *n, "{text}");
        }
        match f.get("error") {
            Some(code) => assert_eq!(e["detail"]["error_code"], *code, "{text}"),
            None => assert!(e["detail"]["error_code"].is_null(), "{text}"),
        }
        at = i + 1;
    }
}

/// The statements record_mysql.sh gives the mysql CLI, in order (`use other` is its COM_INIT_DB).
const CLI_STATEMENTS: &[&str] = &[
    "SELECT id, name, price FROM items ORDER BY id",
    "SELECT * FROM missing_table",
    "SELECT COUNT(*) FROM notes",
    "SHOW TABLES",
];

#[test]
fn cli_pymysql_prepared_and_compressed() {
    let exs = check_exchanges("mysql.pcap", "mysql.jsonl");
    assert!(exs.iter().all(|e| e["protocol"] == "mysql" && e["detail"]["system"] == "mariadb"));
    // No password, no auth response anywhere.
    let all = serde_json::to_string(&exs).unwrap();
    assert!(!all.contains("app-secret-pw"));

    // 1. mysql CLI (connection 1): its statements in order, the error it printed, `use` as COM_INIT_DB.
    let cli = on_conn(&exs, 1);
    let texts: Vec<String> = cli
        .iter()
        .filter(|e| e["detail"]["command"] == "COM_QUERY")
        .map(|e| field(e, "/detail/query_raw"))
        .filter(|t| !t.starts_with("SELECT DATABASE()"))
        .collect();
    assert_eq!(texts, CLI_STATEMENTS);
    let err = facts("cli").into_iter().find(|f| f.get("error").is_some()).unwrap();
    let e = cli.iter().find(|e| !e["detail"]["error_code"].is_null()).unwrap();
    assert_eq!((&e["detail"]["error_code"], &e["detail"]["sql_state"]), (&err["error"], &err["sql_state"]));
    assert_eq!(field(e, "/detail/summary"), "SELECT missing_table");
    let init = cli.iter().find(|e| e["detail"]["command"] == "COM_INIT_DB").unwrap();
    assert_eq!(field(init, "/detail/namespace"), "other");
    let after = cli.iter().find(|e| field(e, "/detail/query_raw") == "SELECT COUNT(*) FROM notes").unwrap();
    assert_eq!(field(after, "/detail/namespace"), "other");
    assert_eq!(field(cli[0], "/detail/returned_rows"), "4");
    assert_eq!(field(cli[0], "/detail/user"), "app");
    assert_eq!(field(cli.last().unwrap(), "/detail/command"), "COM_QUIT");

    // 2. PyMySQL (connection 2): every statement's rows / affected rows / error as the client saw them.
    let py = on_conn(&exs, 2);
    check_facts(&py, &facts("pymysql"), false);
    let masked: Vec<String> = py.iter().map(|e| field(e, "/detail/query_masked")).collect();
    assert!(masked.contains(&"INSERT INTO orders VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)".to_string()));
    let ping = py.iter().find(|e| e["detail"]["command"] == "COM_PING").unwrap();
    assert_eq!(field(ping, "/detail/namespace"), "other");

    // 3. mysql-connector-python prepared statements (connection 3).
    let conn3 = on_conn(&exs, 3);
    check_facts(&conn3, &facts("connector"), true);
    let execs: Vec<_> = conn3.iter().filter(|e| e["detail"]["command"] == "COM_STMT_EXECUTE").collect();
    assert_eq!(execs.len(), 4);
    assert!(execs.iter().all(|e| !e["detail"]["statement_id"].is_null()));
    assert_eq!(field(execs[0], "/detail/summary"), "SELECT items");
    let closes = conn3.iter().filter(|e| e["detail"]["command"] == "COM_STMT_CLOSE").count();
    assert_eq!(closes, 4);

    // 4. `mysql --compress` (connection 4): a 17 MB row inside compressed frames.
    let comp = on_conn(&exs, 4);
    assert!(comp.iter().all(|e| e["detail"]["compressed"] == true));
    let s = summary(&comp.iter().map(|e| (*e).clone()).collect::<Vec<_>>(), FIELDS);
    assert_eq!(
        s,
        [
            "4 COM_QUERY SELECT items shop 2   complete false",
            "4 COM_QUERY SELECT shop 1   complete false",
            "4 COM_QUIT  shop    complete false",
        ]
    );
    assert!(comp[1]["response_bytes"].as_u64().unwrap() > 17_000_000);
}

#[test]
fn snap_length_200_degrades_to_partial() {
    let full = exchanges("mysql.pcap");
    let exs = check_exchanges("mysql_snap200.pcap", "mysql_snap200.jsonl");
    // The same exchanges, paired the same way; every one complete.
    let key = |e: &Value| (field(e, "/conn/id"), field(e, "/detail/command"), field(e, "/detail/summary"));
    assert_eq!(exs.iter().map(key).collect::<Vec<_>>(), full.iter().map(key).collect::<Vec<_>>());
    assert!(exs.iter().all(|e| e["outcome"] == "complete"));
    for (cut, whole) in exs.iter().zip(&full) {
        if cut["partial"] == true {
            // A response cut by the snap length: no row count is claimed.
            assert!(cut["detail"]["returned_rows"].is_null());
        } else {
            assert_eq!(cut["detail"], whole["detail"]);
        }
    }
    // Responses larger than one segment's first 200 bytes are the partial ones.
    assert!(exs.iter().filter(|e| e["partial"] == true).count() >= 4);
    // The 17 MB row still pairs, partial.
    let big = exs.iter().find(|e| e["response_bytes"].as_u64().unwrap() > 17_000_000).unwrap();
    assert_eq!(big["partial"], true);
}

#[test]
fn joined_mid_connection() {
    let full = exchanges("mysql.pcap");
    let exs = check_exchanges("mysql_midconn.pcap", "mysql_midconn.jsonl");
    // The CLI connection is joined after its greeting and login: from its COM_INIT_DB on.
    let cli = on_conn(&exs, 1);
    let s = summary(&cli.iter().map(|e| (*e).clone()).collect::<Vec<_>>(), FIELDS);
    assert_eq!(
        s,
        [
            "1 COM_INIT_DB  other    complete false",
            "1 COM_QUERY SELECT notes other 1   complete false",
            "1 COM_QUERY SHOW other 1   complete false",
            "1 COM_QUIT  other    complete false",
        ]
    );
    // Without the greeting the server is not known to be MariaDB.
    assert!(cli.iter().all(|e| e["detail"]["system"] == "mysql"));
    // The other connections are whole.
    let rest: Vec<_> = exs.iter().filter(|e| e["conn"]["id"] != 1).map(|e| &e["detail"]).collect();
    let want: Vec<_> = full.iter().filter(|e| e["conn"]["id"] != 1).map(|e| &e["detail"]).collect();
    assert_eq!(rest, want);
}

#[test]
fn port_6033_is_found_by_content() {
    let exs = check_exchanges("mysql_port6033.pcap", "mysql_port6033.jsonl");
    assert!(exs.iter().all(|e| e["conn"]["server"].as_str().unwrap().ends_with(":6033")));
    let all: Vec<&Value> = exs.iter().collect();
    check_facts(&all, &facts("pymysql6033"), false);
    let text = replay("mysql_port6033.pcap", "text", &[]);
    assert!(text.contains("\"SELECT items\""), "{text}");
    assert!(text.contains("db.response.status_code=1146 error.type=1146"), "{text}");
    assert!(text.contains("db.response.returned_rows=4"), "{text}");
}

/// Live through the eBPF capture: a MariaDB server in the namespace, the
/// mysql CLI and PyMySQL as clients; live must equal the replay of a
/// simultaneous tcpdump, and hold exactly the statements the clients sent.
#[test]
fn live_mariadb_cli_and_pymysql() {
    netns::require_root();
    const T: Duration = Duration::from_secs(30);
    let mut s = live::LiveSession::new("lm");
    let ip = s.pair.ip_a.clone();
    let data = s.dir.path("data");
    let sock = s.dir.path("mariadb.sock");
    let st = std::process::Command::new("mariadb-install-db")
        .args(["--user=root", "--auth-root-authentication-method=socket"])
        .arg(format!("--datadir={}", data.display()))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mariadb-install-db (apt mariadb-server)");
    assert!(st.success());
    s.spawn_server(
        &[
            "mariadbd",
            "--no-defaults",
            "--user=root",
            &format!("--datadir={}", data.display()),
            &format!("--socket={}", sock.display()),
            &format!("--pid-file={}", s.dir.path("mariadb.pid").display()),
            &format!("--bind-address={ip}"),
            "--port=3306",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ],
        "mariadbd",
    );
    assert!(s.wait_tcp(&ip, 3306, T), "mariadbd did not come up: {}", s.server_log("mariadbd"));
    // Setup over the unix socket: not on the veth, so not captured.
    let setup =
        "CREATE DATABASE shop; CREATE USER 'app'@'%' IDENTIFIED BY 'live-pw'; GRANT ALL ON shop.* TO 'app'@'%'; \
                 CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20)); \
                 INSERT INTO shop.items VALUES (1,'a'),(2,'b'),(3,'c');";
    let st = netns::NetnsPair::cmd(&s.pair.ns_a, "mariadb")
        .args(["--no-defaults", "-u", "root", "-S"])
        .arg(&sock)
        .args(["-e", setup])
        .status()
        .unwrap();
    assert!(st.success());
    s.start_capture();

    let cli = |sql: &str| {
        s.client(&["mariadb", "--no-defaults", "-h", &ip, "-u", "app", "-plive-pw", "--skip-ssl", "shop", "-e", sql], T)
    };
    let out = cli("SELECT id, name FROM items WHERE id > 1 ORDER BY id");
    assert_eq!(out.lines().count(), 3, "{out}"); // header + 2 rows
    cli("UPDATE items SET name = 'z' WHERE id = 3");
    let py = format!(
        "import pymysql\n\
         c = pymysql.connect(host='{ip}', user='app', password='live-pw', database='shop')\n\
         cur = c.cursor()\n\
         print(cur.execute('SELECT name FROM items'))\n\
         try:\n    cur.execute('SELECT * FROM nothing_here')\n\
         except pymysql.MySQLError as e:\n    print(e.args[0])\n\
         c.ping()\n\
         c.close()\n"
    );
    let out = s.client(&["python3", "-c", &py], T);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["3", "1146"]);

    let o = s.finish();
    o.assert_live_matches_replay();
    let (live, _) = o.of("mysql");
    // Exactly the statements the clients sent (PyMySQL's own SET NAMES / SET AUTOCOMMIT included).
    o.assert_exactly(
        "mysql",
        &[
            (r#"mysql COM_QUERY SELECT "SELECT id, name FROM items WHERE id > ? ORDER BY id" rows=2 err= complete"#, 1),
            (r#"mysql COM_QUERY UPDATE "UPDATE items SET name = ? WHERE id = ?" rows= err= complete"#, 1),
            (r#"mysql COM_QUERY SET "SET NAMES utf8mb4" rows= err= complete"#, 1),
            (r#"mysql COM_QUERY SET "SET AUTOCOMMIT = ?" rows= err= complete"#, 1),
            (r#"mysql COM_QUERY SELECT "SELECT name FROM items" rows=3 err= complete"#, 1),
            (r#"mysql COM_QUERY SELECT "SELECT * FROM nothing_here" rows= err=1146 complete"#, 1),
            (r#"mysql COM_PING PING "" rows= err= complete"#, 1),
            (r#"mysql COM_QUIT QUIT "" rows= err= complete"#, 3),
        ],
    );
    assert!(live
        .iter()
        .all(|e| e["detail"]["system"] == "mariadb" && e["outcome"] == "complete" && e["partial"] == false));
}
