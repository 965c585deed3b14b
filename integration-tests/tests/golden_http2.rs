//! HTTP/2 golden tests from captures of real peers (h2o, curl, nghttp,
//! h2load; see integration-tests/scripts/record_h2_grpc_kafka.sh).
#[path = "../harness/protob.rs"]
mod protob;

use cnflow::protocol::http2;
use protob::{check_golden, decode_direct, only, pcap, replay};
use serde_json::Value;

/// Decode with the HTTP/2 decoder directly and check the golden file;
/// `cnflow replay` (which detects the protocol by content) must print the same.
fn case(name: &str) -> Vec<Value> {
    let file = pcap(&format!("{name}.pcap"));
    let direct = decode_direct(&file, http2::new_decoder);
    check_golden(name, &direct);
    let replayed = only(&replay(&file), &["http2", "grpc"]);
    assert_eq!(replayed, direct, "cnflow replay (content detection) differs from direct decoding");
    direct
}

fn http(e: &Value) -> &Value {
    &e["detail"]
}

#[test]
fn prior_knowledge_curl_and_nghttp() {
    let ex = case("h2_prior_knowledge");
    let got: Vec<(String, String, u64)> = ex
        .iter()
        .map(|e| {
            (
                http(e)["method"].as_str().unwrap().to_string(),
                http(e)["path"].as_str().unwrap().to_string(),
                http(e)["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET".into(), "/hello.txt".into(), 200),
            ("GET".into(), "/hello.txt".into(), 200),
            ("GET".into(), "/missing".into(), 404),
        ]
    );
    assert_eq!(http(&ex[0])["query"], "lang=en");
    assert_eq!(http(&ex[1])["trace_headers"][0][0], "traceparent");
    assert!(ex.iter().all(|e| e["outcome"] == "complete" && e["partial"] == false && e["protocol"] == "http2"));
}

#[test]
fn h2load_multiplexed_streams() {
    let ex = case("h2_h2load");
    assert_eq!(ex.len(), 4);
    let mut ids: Vec<u64> = ex.iter().map(|e| http(e)["stream_id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 3, 5, 7]);
    assert!(ex.iter().all(|e| e["outcome"] == "complete" && http(e)["status"] == 200));
}

#[test]
fn capture_started_mid_connection() {
    let ex = case("h2_mid_connection");
    assert!(!ex.is_empty());
    // Requests refer to HPACK entries the capture never saw: what was
    // decoded is right, the rest is marked partial, nothing is invented.
    for e in &ex {
        assert_eq!(e["outcome"], "complete");
        assert_eq!(http(e)["status"], 200);
        if e["partial"] == false {
            assert_eq!(http(e)["path"], "/hello.txt");
        }
    }
    assert!(ex.iter().any(|e| e["partial"] == true));
}

#[test]
fn h2c_upgrade_via_replay() {
    // Needs the HTTP/1 decoder to hand the connection over after `101`.
    let ex = only(&replay(&pcap("h2c_upgrade.pcap")), &["http2"]);
    check_golden("h2c_upgrade", &ex);
    assert!(ex.iter().any(|e| http(e)["stream_id"] == 1 && http(e)["status"] == 200));
}
