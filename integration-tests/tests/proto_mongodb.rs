//! MongoDB: golden replays of captures between pymongo and a scripted server
//! (integration-tests/scripts/record_mongodb.sh; no MongoDB server is
//! packaged), and a live-through-eBPF session. The expected facts are the
//! client's and the server's: pymongo's command monitoring (request id,
//! command, database, collection, rows in the reply, error code) in
//! `mongodb_facts_*.json`, and every message the server received (opcode,
//! compressor, command) in `mongodb_server_*.jsonl`.
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
use std::collections::BTreeMap;
use std::time::Duration;

fn facts(name: &str) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(golden_path(name)).unwrap()).unwrap()
}

fn server_log(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn is_handshake(op: &str) -> bool {
    matches!(op.to_ascii_lowercase().as_str(), "ismaster" | "hello")
}

fn op(e: &Value) -> String {
    field(e, "/detail/operation")
}

/// Every command pymongo ran (each fact with a request id; exhaust replies
/// have none) is one exchange with that request id, the same command,
/// database, collection, rows and error code. Returns the number of exhaust
/// replies pymongo saw without a request.
fn assert_matches_facts(exs: &[Value], facts: &[Value], what: &str) -> usize {
    let by_id: BTreeMap<i64, &Value> = exs.iter().map(|e| (e["detail"]["request_id"].as_i64().unwrap(), e)).collect();
    let mut extra = 0;
    for f in facts {
        let id = f["request_id"].as_i64().unwrap();
        if id == 0 {
            extra += 1;
            continue;
        }
        let e = by_id.get(&id).unwrap_or_else(|| panic!("{what}: no exchange for {f}"));
        let cmd = f["command"].as_str().unwrap();
        assert_eq!(op(e), cmd, "{what}: {f}");
        assert_eq!(field(e, "/detail/database"), field(f, "/db"), "{what}: {f}");
        assert_eq!(field(e, "/detail/collection"), field(f, "/collection"), "{what}: {f}");
        assert_eq!(e["detail"]["returned_rows"], f["rows"], "{what}: {f}");
        assert_eq!(e["detail"]["error_code"], f["code"], "{what}: {f}");
        let ok = f["code"].is_null() || !f["rows"].is_null();
        if cmd != "insert" {
            // ok:1 with writeErrors keeps ok true; ok:0 carries the code.
            assert_eq!(e["detail"]["ok"], ok, "{what}: {f}");
        }
        assert_eq!(e["outcome"], "complete");
    }
    extra
}

/// The exchanges of one capture against its facts and the server's log.
fn check_capture(pcap: &str, golden: &str, fact_files: &[(&str, &str)], log: &str) {
    let exs = check_exchanges(pcap, golden);
    assert!(exs.iter().all(|e| e["protocol"] == "mongodb" && e["partial"] == false));
    let mut extra = 0;
    let mut commands = 0;
    for (file, compressor) in fact_files {
        let f = facts(file);
        extra += assert_matches_facts(&exs, &f, file);
        commands += f.iter().filter(|f| f["request_id"] != 0).count();
        // After the handshake every command of a compressed session is compressed.
        for fact in f.iter().filter(|f| f["request_id"] != 0 && f["legacy"].is_null()) {
            let e = exs.iter().find(|e| e["detail"]["request_id"] == fact["request_id"]).unwrap();
            assert_eq!(field(e, "/detail/compressor"), *compressor, "{fact}");
        }
    }
    // The rest are the driver's connection handshakes (monitor and pool).
    let handshakes: Vec<&Value> = exs.iter().filter(|e| is_handshake(&op(e))).collect();
    assert_eq!(exs.len(), commands + handshakes.len() - fact_files.len(), "legacy hellos are in the facts");
    // Every message the server received is one exchange: same commands, opcodes, compressors.
    let log = server_log(&std::fs::read_to_string(golden_path(log)).unwrap());
    let key = |op: &str, c: &str, comp: &str| format!("{op} {c} {comp}");
    let mut want: Vec<String> = log
        .iter()
        .map(|l| key(&field(l, "/op"), &field(l, "/command"), &field(l, "/compressor").replace("noop", "")))
        .collect();
    let mut got: Vec<String> = exs
        .iter()
        .map(|e| key(&field(e, "/detail/op_code"), &op(e), &field(e, "/detail/compressor").replace("noop", "")))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Exhaust replies: one exchange for their getMore, the others counted.
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .args(["replay", "--format", "count", "--stats"])
        .arg(pcap_path(pcap))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stats.stderr);
    assert!(extra > 0);
    assert!(err.contains(&format!("cnflow.protocol.mongodb.exhaust_replies {extra}")), "{err}");
    assert!(!err.contains("cnflow.protocol.unmatched_responses{protocol=mongodb}"), "{err}");
    assert!(!err.contains("cnflow.protocol.parse_errors{protocol=mongodb}"), "{err}");
}

#[test]
fn pymongo_plain_and_zlib_on_27017() {
    check_capture(
        "mongodb.pcap",
        "mongodb.jsonl",
        &[("mongodb_facts_none.json", ""), ("mongodb_facts_zlib.json", "zlib")],
        "mongodb_server_27017.jsonl",
    );
    let exs = exchanges("mongodb.pcap");
    // A legacy OP_QUERY hello per session, answered by OP_REPLY.
    let legacy: Vec<&Value> = exs.iter().filter(|e| e["detail"]["op_code"] == "OP_QUERY").collect();
    assert_eq!(
        summary(
            &legacy.into_iter().cloned().collect::<Vec<_>>(),
            &["/detail/operation", "/detail/database", "/detail/ok"]
        ),
        ["isMaster admin true", "isMaster admin true"]
    );
    // Semantic conventions of one find and the duplicate-key error, values masked.
    let find = exs.iter().find(|e| op(e) == "find").unwrap();
    assert_eq!(field(find, "/detail/query_masked"), r#"{"find": "orders", "filter": {"status": ?}}"#);
    let dup = exs.iter().find(|e| e["detail"]["error_code"] == 11000).unwrap();
    assert!(field(dup, "/detail/error_message").starts_with("E11000 duplicate key"));
    let agg = exs.iter().find(|e| op(e) == "aggregate").unwrap();
    assert_eq!(
        field(agg, "/detail/query_masked"),
        r#"{"aggregate": "orders", "pipeline": [{"$match": {"total": {"$gte": ?}}}, {"$count": ?}], "cursor": {}}"#
    );
    let inserted = exs.iter().find(|e| op(e) == "insert").unwrap();
    assert_eq!(field(inserted, "/detail/query_masked"), r#"{"insert": "orders", "ordered": ?}"#);
}

#[test]
fn pymongo_snappy_and_zstd_on_port_3717() {
    check_capture(
        "mongodb_3717.pcap",
        "mongodb_3717.jsonl",
        &[("mongodb_facts_snappy.json", "snappy"), ("mongodb_facts_zstd.json", "zstd")],
        "mongodb_server_3717.jsonl",
    );
}

#[test]
fn joined_mid_connection_on_compressed_traffic() {
    let exs = check_exchanges("mongodb_midconn.pcap", "mongodb_midconn.jsonl");
    // The capture started while the client paused: what it ran afterwards,
    // in order, each exactly as pymongo saw it.
    let f = facts("mongodb_facts_midconn.json");
    let ids: Vec<i64> = f.iter().map(|f| f["request_id"].as_i64().unwrap()).filter(|&i| i != 0).collect();
    let got: Vec<i64> = exs.iter().map(|e| e["detail"]["request_id"].as_i64().unwrap()).collect();
    assert!(got.len() >= 8 && ids.ends_with(&got), "{got:?} is not the end of {ids:?}");
    let tail: Vec<Value> = f.iter().filter(|x| got.contains(&x["request_id"].as_i64().unwrap())).cloned().collect();
    assert_matches_facts(&exs, &tail, "midconn");
    assert!(exs.iter().all(|e| e["detail"]["compressor"] == "zlib" && e["partial"] == false));
}

#[test]
fn snap_length_200_degrades_to_partial() {
    let exs = check_exchanges("mongodb_snap200.pcap", "mongodb_snap200.jsonl");
    let full = exchanges("mongodb.pcap");
    // One exchange per command still, each with its command.
    let ops = ["/conn/id", "/detail/request_id", "/detail/operation"];
    assert_eq!(summary(&exs, &ops), summary(&full, &ops));
    assert!(exs.iter().all(|e| e["outcome"] == "complete"));
    let partial = exs.iter().filter(|e| e["partial"] == true).count();
    assert!(partial > 0, "messages over 200 bytes were cut");
    for (a, b) in exs.iter().zip(&full) {
        if a["partial"] == false {
            assert_eq!(a["detail"], b["detail"]);
        }
        // What a cut left is still right: collection, and rows or error code when read.
        for k in ["/detail/collection", "/detail/returned_rows", "/detail/error_code"] {
            let v = field(a, k);
            assert!(v.is_empty() || v == field(b, k), "{k}: {a} vs {b}");
        }
    }
}

#[test]
fn live_pymongo_on_3717() {
    netns::require_root();
    let mut s = live::LiveSession::new("lmg");
    let ip = s.pair.ip_a.clone();
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/mongodb");
    let server = scripts.join("server.py");
    let log = s.dir.path("server.jsonl");
    s.spawn_server(
        &["python3", server.to_str().unwrap(), &ip, "3717", "--log", log.to_str().unwrap()],
        "mongodb-server",
    );
    s.start_capture();
    assert!(
        s.wait_tcp(&ip, 3717, Duration::from_secs(20)),
        "server did not come up: {}",
        s.server_log("mongodb-server")
    );
    let facts_path = s.dir.path("facts.json");
    let client = scripts.join("client.py");
    let printed = s.client(
        &["python3", client.to_str().unwrap(), &ip, "3717", "zlib", facts_path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(printed.contains("duplicate 11000") && printed.contains("exhaust 7"), "{printed}");
    let o = s.finish();
    o.assert_live_matches_replay();
    // Expected: one exchange per command pymongo ran, summarised like live.rs
    // does, plus the handshakes the server answered.
    let f: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&facts_path).unwrap()).unwrap();
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for x in f.iter().filter(|x| x["request_id"] != 0) {
        let comp = if x["legacy"].is_null() { "zlib" } else { "" };
        let k = format!(
            "mongodb {} {} rows={} err={} {} complete",
            field(x, "/command"),
            field(x, "/collection"),
            field(x, "/rows"),
            field(x, "/code"),
            comp
        );
        *want.entry(k).or_default() += 1;
    }
    let received = server_log(&std::fs::read_to_string(&log).unwrap());
    let hellos = received.iter().filter(|l| l["op"] == "OP_MSG" && is_handshake(&field(l, "/command"))).count();
    assert!(hellos >= 2, "monitor and pool connections");
    *want.entry("mongodb ismaster  rows= err=  complete".to_string()).or_default() += hellos;
    let want: Vec<(&str, usize)> = want.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    o.assert_exactly("mongodb", &want);
}
