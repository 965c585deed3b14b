//! PostgreSQL: golden replays of captures recorded from a real PostgreSQL 15
//! (integration-tests/scripts/record_postgres.sh) and a live-through-eBPF
//! session. The expected facts come from the clients: psql's own output
//! (command tags, row counts, SQLSTATEs), the psycopg script's record of what
//! it ran and saw (postgres_facts.json), pgbench's transaction count.
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

const FIELDS: &[&str] =
    &["/conn/id", "/detail/message", "/detail/summary", "/detail/command_tag", "/detail/sqlstate", "/partial"];

fn golden_text(name: &str) -> String {
    std::fs::read_to_string(golden_path(name)).unwrap()
}

fn of_conn(exs: &[Value], id: u64) -> Vec<Value> {
    exs.iter().filter(|e| e["conn"]["id"] == id).cloned().collect()
}

/// psql's output: its command tags in order ("CREATE TABLE", "INSERT 0 3", …,
/// "(2 rows)" as "SELECT 2"), and the SQLSTATEs of its errors (VERBOSITY verbose).
fn psql_facts() -> (Vec<String>, Vec<String>) {
    let out = golden_text("postgres_psql.out");
    let mut tags = Vec::new();
    let mut states = Vec::new();
    for l in out.lines() {
        if let Some(i) = l.find("ERROR:  ") {
            states.push(l[i + 8..i + 13].to_string());
        } else if let Some(n) = l.strip_prefix('(').and_then(|r| r.split(' ').next()) {
            if l.ends_with("rows)") || l.ends_with("row)") {
                tags.push(format!("SELECT {n}"));
            }
        } else if l.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && l.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ')
        {
            tags.push(l.to_string());
        }
    }
    (tags, states)
}

#[test]
fn psql_psycopg_and_pgbench() {
    let exs = check_exchanges("postgres.pcap", "postgres.jsonl");
    // psql (connection 1): the tags it printed, in order, one exchange per statement.
    let (tags, states) = psql_facts();
    let psql = of_conn(&exs, 1);
    let got_tags: Vec<String> =
        psql.iter().map(|e| field(e, "/detail/command_tag")).filter(|t| !t.is_empty()).collect();
    // psql prints nothing for the COPY TO STDOUT tag (it prints the rows) nor for `\g /dev/null`.
    let want: Vec<String> = tags.clone();
    assert_eq!(got_tags.iter().filter(|t| *t != "COPY 5" && *t != "SELECT 1").cloned().collect::<Vec<_>>(), want);
    let got_states: Vec<String> = psql.iter().map(|e| field(e, "/detail/sqlstate")).filter(|s| !s.is_empty()).collect();
    assert_eq!(got_states, states);
    assert_eq!(states, ["42P01", "22012"]);
    let s = summary(&psql, FIELDS);
    assert_eq!(
        s,
        [
            "1 query CREATE TABLE items CREATE TABLE  false",
            "1 query INSERT items INSERT 0 3  false",
            "1 query SELECT items SELECT 2  false",
            "1 query UPDATE items UPDATE 1  false",
            "1 query SELECT missing_table  42P01 false",
            "1 query SELECT  22012 false",
            "1 query COPY items COPY 2  false",
            "1 query COPY items COPY 5  false",
            "1 query LISTEN LISTEN  false",
            "1 query NOTIFY NOTIFY  false",
            "1 query BEGIN BEGIN  false",
            "1 query DELETE items DELETE 1  false",
            "1 query COMMIT COMMIT  false",
            "1 query SELECT SELECT 1  false",
        ]
    );
    // Literals masked; COPY FROM STDIN counts the client's CopyData; the 3000-byte row is one response.
    assert_eq!(field(&psql[2], "/detail/query_masked"), "SELECT id, name FROM items WHERE price > ? ORDER BY id;");
    assert_eq!(field(&psql[2], "/detail/returned_rows"), "2");
    assert_eq!(field(&psql[6], "/detail/copy"), "in");
    assert_eq!(field(&psql[6], "/detail/affected_rows"), "2");
    assert_eq!(field(&psql[7], "/detail/returned_rows"), "5");
    assert!(psql[13]["response_bytes"].as_u64().unwrap() > 3000);
    assert!(psql.iter().all(|e| e["detail"]["database"] == "shop"));

    // psycopg (connection 2): what the script ran and saw.
    let facts: Vec<Value> = serde_json::from_str(&golden_text("postgres_facts.json")).unwrap();
    let pg = of_conn(&exs, 2);
    let execs: Vec<&Value> = pg.iter().filter(|e| e["detail"]["message"] == "execute").collect();
    let ran: usize = facts
        .iter()
        .filter(|f| !f["query"].as_str().unwrap().starts_with("COPY"))
        .map(|f| f["executes"].as_u64().unwrap_or(1) as usize)
        .sum();
    assert_eq!(execs.len(), ran, "one Execute exchange per statement the client ran");
    let mut i = 0;
    for f in facts.iter().filter(|f| !f["query"].as_str().unwrap().starts_with("COPY")) {
        let n = f["executes"].as_u64().unwrap_or(1) as usize;
        for e in &execs[i..i + n] {
            let q = f["query"].as_str().unwrap().trim_start_matches("executemany ");
            // psycopg sends %s placeholders as $n.
            let mut want = q.to_string();
            for k in 1..=3 {
                want = want.replacen("%s", &format!("${k}"), 1);
            }
            assert_eq!(field(e, "/detail/query_raw"), want);
            assert_eq!(field(e, "/detail/sqlstate"), f["sqlstate"].as_str().unwrap_or(""), "{q}");
            if let Some(rows) = f["rows"].as_u64() {
                assert_eq!(e["detail"]["returned_rows"].as_u64(), Some(rows), "{q}");
            }
            if f["executes"].is_u64() {
                assert_eq!(e["detail"]["affected_rows"].as_u64(), Some(1), "{q}");
            }
        }
        i += n;
    }
    // Prepared statements: the 2nd and 3rd run reuse the statement prepared by the 1st.
    // (executemany prepares its statement too.)
    let named = |q: &str| -> Vec<String> {
        execs
            .iter()
            .filter(|e| field(e, "/detail/query_raw").starts_with(q))
            .map(|e| field(e, "/detail/statement"))
            .collect()
    };
    let sel = named("SELECT name, price");
    assert_eq!(sel.len(), 3);
    assert!(!sel[0].is_empty() && sel.iter().all(|n| *n == sel[0]), "{sel:?}");
    let del = named("DELETE");
    assert!(del.len() == 2 && !del[0].is_empty() && del[0] != sel[0], "{del:?}");
    let copy = pg.iter().find(|e| e["detail"]["copy"] == "in").unwrap();
    let copied = facts.iter().find(|f| f["query"].as_str().unwrap().starts_with("COPY")).unwrap();
    assert_eq!(copy["detail"]["affected_rows"], copied["rowcount"]);

    // pgbench -M prepared -t 10: seven prepared statements per transaction.
    let done = golden_text("postgres_pgbench.out");
    let txns: usize = done.split(':').nth(1).unwrap().trim().split('/').next().unwrap().parse().unwrap();
    let bench = of_conn(&exs, 4);
    assert_eq!(bench.len(), 7 * txns);
    assert_eq!(bench.iter().filter(|e| e["detail"]["command_tag"] == "UPDATE 1").count(), 3 * txns);
    assert!(bench.iter().all(|e| !e["detail"]["statement"].is_null() && !e["detail"]["summary"].is_null()));
    assert!(exs.iter().all(|e| e["outcome"] == "complete" && e["partial"] == false));
}

#[test]
fn port_8000_by_content_and_tls_counted() {
    let exs = check_exchanges("postgres_8000.pcap", "postgres_8000.jsonl");
    assert_eq!(
        summary(&exs, FIELDS),
        [
            "1 query CREATE TABLE t8 CREATE TABLE  false",
            "1 query INSERT t8 SELECT INSERT 0 5  false",
            "1 query SELECT t8 SELECT 1  false",
        ]
    );
    // The sslmode=require session: detected, counted as encrypted, no exchange.
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .args(["replay", "--format", "count", "--stats"])
        .arg(pcap_path("postgres_8000.pcap"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stats.stderr);
    assert!(err.contains("cnflow.protocol.encrypted{protocol=postgres,method=ssl} 1"), "{err}");
    assert!(err.contains("cnflow.protocol.detected{protocol=postgres} 2"), "{err}");
}

#[test]
fn joined_mid_connection() {
    let exs = check_exchanges("postgres_midconn.pcap", "postgres_midconn.jsonl");
    let full = exchanges("postgres.pcap");
    // psql's session is joined at its division by zero: the rest matches the full capture.
    let psql = of_conn(&exs, 1);
    assert_eq!(field(&psql[0], "/detail/sqlstate"), "22012");
    assert_eq!(psql[0]["partial"], true);
    let tail = summary(&of_conn(&full, 1)[5..], &FIELDS[1..5]);
    assert_eq!(summary(&psql, &FIELDS[1..5]), tail);
    assert!(psql.iter().all(|e| e["detail"]["database"].is_null()), "the startup was not seen");
    // The other connections are whole.
    assert_eq!(exs.len() - psql.len(), full.len() - of_conn(&full, 1).len());
}

#[test]
fn snap_length_200_degrades_to_partial() {
    let exs = check_exchanges("postgres_snap200.pcap", "postgres_snap200.jsonl");
    let full = exchanges("postgres.pcap");
    // Every statement still gives one exchange, in order, with its operation
    // (a summary may lose tables named past the cut).
    let ops = ["/conn/id", "/detail/message", "/detail/operation"];
    assert_eq!(summary(&exs, &ops), summary(&full, &ops));
    assert!(exs.iter().all(|e| e["outcome"] == "complete"));
    // Whatever a cut removed is marked; SQLSTATEs that survived are the client's.
    let partial = exs.iter().filter(|e| e["partial"] == true).count();
    assert!(partial > 0 && partial < exs.len() / 2, "{partial} partial");
    for (a, b) in exs.iter().zip(&full) {
        if a["partial"] == false {
            assert_eq!(a["detail"], b["detail"]);
        }
    }
}

const PSYCOPG: &str = r#"
import sys, psycopg
conn = psycopg.connect(host=sys.argv[1], port=8000, dbname="postgres", user="postgres", password="pw", sslmode="disable", autocommit=True)
cur = conn.cursor()
cur.execute("CREATE TABLE live (id int PRIMARY KEY, v text)")
for i in range(4):
    cur.execute("INSERT INTO live VALUES (%s, %s)", (i, "v%d" % i), prepare=True)
cur.execute("SELECT v FROM live WHERE id < %s", (3,))
print("rows", len(cur.fetchall()))
try:
    cur.execute("INSERT INTO live VALUES (%s, %s)", (1, "dup"))
except psycopg.errors.UniqueViolation as e:
    print("sqlstate", e.sqlstate)
conn.close()
"#;

#[test]
fn live_psql_and_psycopg() {
    netns::require_root();
    let mut s = live::LiveSession::new("lpg");
    let ip = s.pair.ip_a.clone();
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL not installed (see .ci/setup.sh)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .max()
        .unwrap();
    let data = s.dir.path("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(s.dir.path("pw"), "pw\n").unwrap();
    let su = |cmd: String| {
        let st = std::process::Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    std::process::Command::new("chmod").args(["755", s.dir.0.to_str().unwrap()]).status().unwrap();
    std::process::Command::new("chown").args(["-R", "postgres", data.to_str().unwrap()]).status().unwrap();
    std::process::Command::new("chmod").args(["644", s.dir.path("pw").to_str().unwrap()]).status().unwrap();
    su(format!(
        "{}/initdb -D {} -U postgres --pwfile={} --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >/dev/null",
        bin.display(),
        data.display(),
        s.dir.path("pw").display()
    ));
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("pg_hba.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"host all all 0.0.0.0/0 scram-sha-256\n"))
        .unwrap();
    let server = format!(
        "exec {}/postgres -D {} -c listen_addresses={ip} -c port=8000 -c unix_socket_directories={} -c fsync=off",
        bin.display(),
        data.display(),
        data.display()
    );
    s.spawn_server(&["su", "postgres", "-s", "/bin/sh", "-c", &server], "postgres");
    s.start_capture();
    assert!(s.wait_tcp(&ip, 8000, Duration::from_secs(30)), "postgres did not come up: {}", s.server_log("postgres"));
    let t = Duration::from_secs(30);
    let uri = format!("postgresql://postgres:pw@{ip}:8000/postgres?sslmode=disable");
    s.client(&["psql", &uri, "-c", "SELECT 42"], t);
    // psql exits 1 on the error it reports.
    let err = s.client(&["sh", "-c", &format!("psql '{uri}' -c 'SELECT * FROM nowhere' 2>&1 || true")], t);
    assert!(err.contains("does not exist"), "{err}");
    let printed = s.client(&["python3", "-c", PSYCOPG, &ip], t);
    assert!(printed.contains("rows 3") && printed.contains("sqlstate 23505"), "{printed}");

    let o = s.finish();
    o.assert_live_matches_replay();
    o.assert_exactly(
        "postgres",
        &[
            ("postgres query SELECT SELECT 1  complete", 1),
            ("postgres query SELECT nowhere  42P01 complete", 1),
            ("postgres query CREATE TABLE live CREATE TABLE  complete", 1),
            ("postgres execute INSERT live INSERT 0 1  complete", 4),
            ("postgres execute SELECT live SELECT 3  complete", 1),
            ("postgres execute INSERT live  23505 complete", 1),
        ],
    );
}
