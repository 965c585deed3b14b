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
