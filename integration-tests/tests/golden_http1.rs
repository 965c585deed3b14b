//! HTTP/1 golden tests: captures of nginx answering curl and a pipelining
//! client (see integration-tests/scripts/record_http1_dns_redis_icmp.sh),
//! replayed through the whole pipeline and compared with golden files.
#[path = "../harness/golden.rs"]
mod golden;
use golden::*;

const FIELDS: &[&str] =
    &["/conn/id", "/detail/method", "/detail/path", "/detail/status", "/detail/reason", "/outcome", "/partial"];

fn expected_full() -> Vec<&'static str> {
    vec![
        // Keep-alive: GET (query, traceparent), 404, HEAD on one connection.
        "1 GET /index.html 200 OK complete false",
        "1 GET /missing 404 Not Found complete false",
        "1 HEAD /index.html 200 OK complete false",
        // gzip on the fly: chunked body.
        "2 GET /big.txt 200 OK complete false",
        // Expect: 100-continue.
        "3 PUT /upload/f.bin 201 Created complete false",
        // Three pipelined requests in one segment, paired in order.
        "4 GET /index.html 200 OK complete false",
        "4 GET /nothing-here 404 Not Found complete false",
        "4 HEAD /big.txt 200 OK complete false",
    ]
}

#[test]
fn keep_alive_pipelining_chunked_and_continue() {
    let exs = check_exchanges("http1.pcap", "http1.jsonl");
    assert_eq!(summary(&exs, FIELDS), expected_full());
    assert_eq!(field(&exs[0], "/detail/query"), "user=alice");
    assert_eq!(field(&exs[0], "/detail/trace_headers/0/0"), "traceparent");
    assert_eq!(field(&exs[3], "/detail/trace_headers/0/0"), "b3");
    assert!(field(&exs[0], "/detail/user_agent").starts_with("curl/"));
    // The chunked body was counted to its end, not to the first segment.
    assert!(exs[3]["response_bytes"].as_u64().unwrap() > 10_000);
    // 100 Continue (25 bytes) plus the final response are one exchange; the body was 3000 bytes.
    assert!(exs[4]["request_bytes"].as_u64().unwrap() > 3000);
    assert!(exs[4]["response_bytes"].as_u64().unwrap() > 25 + 100);
    // HEAD: Content-Length describes the body that was not sent.
    assert_eq!(field(&exs[7], "/detail/response_content_length"), "20264");
    for e in &exs {
        assert!(e["end_ns"].as_u64() >= e["start_ns"].as_u64());
        assert!(duration_us(e) < 1_000_000, "{e}");
    }
}

#[test]
fn capture_joined_mid_connection() {
    // The handshake and first request are cut: the first response is reported with what it tells.
    let exs = check_exchanges("http1_midconn.pcap", "http1_midconn.jsonl");
    let mut want = expected_full();
    want[0] = "1   200 OK complete true";
    assert_eq!(summary(&exs, FIELDS), want);
}

#[test]
fn lost_segment_inside_a_chunked_body_is_skipped() {
    let exs = check_exchanges("http1_lost.pcap", "http1_lost.jsonl");
    assert_eq!(summary(&exs, FIELDS), expected_full());
    let full = exchanges("http1.pcap");
    assert_eq!(exs[3]["response_bytes"], full[3]["response_bytes"]);
    assert_eq!(exs[3]["end_ns"], full[3]["end_ns"]);
}

#[test]
fn snap_length_200_keeps_start_lines() {
    let exs = check_exchanges("http1_snap200.pcap", "http1_snap200.jsonl");
    let want: Vec<String> = expected_full().iter().map(|l| l.replace(" false", " true")).collect();
    assert_eq!(summary(&exs, FIELDS), want);
}
