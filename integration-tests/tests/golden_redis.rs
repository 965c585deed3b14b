//! Redis golden tests: redis-cli, a client session with SELECT/MULTI/EXEC,
//! RESP3 (redis-cli -3), pub/sub, and redis-benchmark -P 16 pipelining against
//! a real redis-server; plus the same traffic joined mid-connection and cut
//! by a 200-byte snap length.
#[path = "../harness/golden.rs"]
mod golden;
use golden::*;

const FIELDS: &[&str] =
    &["/conn/id", "/detail/query_masked", "/detail/response_type", "/detail/error_prefix", "/outcome", "/partial"];

fn head() -> Vec<&'static str> {
    vec![
        "1 SET ? ? simple  complete false",
        "2 GET ? bulk  complete false",
        "3 GET ? null  complete false",
        "4 LPUSH ? ? error WRONGTYPE complete false",
        "5 CLIENT SETNAME ? simple  complete false",
        "6 SELECT ? simple  complete false",
        "6 MULTI simple  complete false",
        "6 INCR ? simple  complete false",
        "6 INCR ? simple  complete false",
        "6 EXEC array  complete false",
        "6 DEL ? integer  complete false",
        "7 SET ? ? simple  complete false",
        "8 GET ? bulk  complete false",
        "9 HELLO ? map  complete false",
        "9 HGETALL ? map  complete false",
        "10 SUBSCRIBE ? array  complete false",
        "11 PUBLISH ? ? integer  complete false",
        "12 PUBLISH ? ? integer  complete false",
    ]
}

#[test]
fn commands_transactions_pubsub_and_pipelining() {
    let exs = check_exchanges("redis.pcap", "redis.jsonl");
    let s = summary(&exs, FIELDS);
    assert_eq!(s[..18], head()[..]);
    assert_eq!(field(&exs[0], "/detail/query_raw"), "SET greeting hello");
    assert_eq!(field(&exs[8], "/detail/db_index"), "1");
    assert_eq!(field(&exs[14], "/detail/resp_version"), "3");
    // The published messages reach the subscriber as pushes, not as replies: SUBSCRIBE is its only exchange.
    assert_eq!(exs.iter().filter(|e| e["conn"]["id"] == 10).count(), 1);
    // redis-benchmark: CONFIG GETs, then 32 SETs and 32 GETs sent 16 at a time.
    let bench: Vec<_> = exs[18..].iter().map(|e| field(e, "/detail/command")).collect();
    assert_eq!(bench.iter().filter(|c| *c == "SET").count(), 32);
    assert_eq!(bench.iter().filter(|c| *c == "GET").count(), 32);
    assert!(exs[18..].iter().all(|e| e["outcome"] == "complete" && e["partial"] == false));
    // Pipelined requests of one batch share their send time.
    let sets: Vec<_> = exs[18..].iter().filter(|e| e["detail"]["command"] == "SET").collect();
    assert!(sets[..16].iter().all(|e| e["start_ns"] == sets[0]["start_ns"]));
}

#[test]
fn joined_mid_connection() {
    let exs = check_exchanges("redis_midconn.pcap", "redis_midconn.jsonl");
    let s = summary(&exs, FIELDS);
    let mut want = head();
    want[0] = "1 SET ? ? simple  complete true";
    assert_eq!(s[..18], want[..]);
}

#[test]
fn snap_length_200_degrades_to_partial() {
    let exs = check_exchanges("redis_snap200.pcap", "redis_snap200.jsonl");
    let s = summary(&exs, FIELDS);
    let mut want: Vec<String> = head().iter().map(|l| l.to_string()).collect();
    // Values longer than the snap length: commands and replies still pair, marked partial.
    for i in [11, 12, 13] {
        want[i] = want[i].replace(" false", " true");
    }
    assert_eq!(s[..18], want[..]);
    assert!(exs.iter().all(|e| e["outcome"] == "complete"));
}

/// Issue #13 item 4 (record_redis_noreply.sh, redis_noreply_client.py): a
/// raw client against redis-server 7 logs, after every command, what the
/// server sent back. Commands answered with nothing (CLIENT REPLY SKIP and the
/// command after it, CLIENT REPLY OFF and everything until ON) are exchanges
/// of their own (`response_type` "none", no response bytes), and the replies
/// that follow pair with the right commands; on the RESP3 connection the
/// attribute reply (DEBUG PROTOCOL attrib) counts with the reply it
/// prefixes, and pushes (tracking invalidation, pub/sub message) answer
/// nothing, while SUBSCRIBE/UNSUBSCRIBE take their push confirmations.
#[test]
fn client_reply_off_skip_resp3_attributes_and_pushes() {
    let exs = check_exchanges("redis_noreply_resp3.pcap", "redis_noreply_resp3.jsonl");
    let log = std::fs::read_to_string(pcap_path("redis_noreply_resp3.client.txt")).unwrap();
    // The client's view: per connection, each command and the RESP type of what came back.
    let mut want: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for line in log.lines().filter(|l| !l.contains("(push)")) {
        let (conn, rest) = line.split_once(' ').unwrap();
        let (command, reply) = rest.split_once(" -> ").unwrap();
        let ty = match reply.strip_prefix("b'").and_then(|r| r.chars().next()) {
            None => "none",
            Some('+') => "simple",
            Some('$') => "bulk",
            Some(':') => "integer",
            Some('%') => "map",
            Some('>') => "push",
            // An attribute, then the reply it belongs to (a bulk string here).
            Some('|') if reply.contains("\\r\\n:90\\r\\n$") => "bulk",
            Some(c) => panic!("unexpected reply type {c} in {line}"),
        };
        want.entry(conn).or_default().push(format!("{} {ty}", command.split(' ').next().unwrap()));
    }
    assert!(log.contains("c1 CLIENT REPLY OFF -> (nothing)") && log.contains("c2 (push) -> b'>2"), "{log}");
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in &exs {
        got.entry(field(e, "/conn/client")).or_default().push(format!(
            "{} {}",
            field(e, "/detail/command"),
            field(e, "/detail/response_type")
        ));
    }
    let mut want: Vec<Vec<String>> = want.into_values().collect();
    let mut got: Vec<Vec<String>> = got.into_values().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    for e in &exs {
        assert_eq!((e["outcome"].as_str(), e["partial"].as_bool()), (Some("complete"), Some(false)), "{e}");
        let none = e["detail"]["response_type"] == "none";
        assert_eq!(none, e["response_bytes"] == 0, "{e}");
    }
    let debug = exs.iter().find(|e| e["detail"]["command"] == "DEBUG").unwrap();
    assert_eq!((field(debug, "/detail/resp_version"), field(debug, "/response_bytes")), ("3".into(), "93".into()));
}
