//! gRPC golden test from a capture of a grpcio server and client (unary,
//! server streaming, NOT_FOUND); see integration-tests/scripts/grpc/.
#[path = "../harness/protob.rs"]
mod protob;

use cnflow::protocol::http2;
use protob::{check_golden, decode_direct, only, pcap, replay};

#[test]
fn grpcio_unary_streaming_and_error() {
    let file = pcap("grpc.pcap");
    let ex = decode_direct(&file, http2::new_decoder);
    check_golden("grpc", &ex);
    let replayed = only(&replay(&file), &["http2", "grpc"]);
    assert_eq!(replayed, ex, "cnflow replay (content detection) differs from direct decoding");
    let calls: Vec<(String, String, u64, u64, u64)> = ex
        .iter()
        .map(|e| {
            let g = &e["detail"]["grpc"];
            assert_eq!(e["protocol"], "grpc");
            (
                g["service"].as_str().unwrap().to_string(),
                g["method"].as_str().unwrap().to_string(),
                g["status_code"].as_u64().unwrap(),
                g["request_messages"].as_u64().unwrap(),
                g["response_messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("cnflow.test.Echo".into(), "Say".into(), 0, 1, 1),
            ("cnflow.test.Echo".into(), "Count".into(), 0, 1, 3),
            ("cnflow.test.Echo".into(), "Say".into(), 5, 1, 0),
        ]
    );
    assert_eq!(ex[2]["detail"]["grpc"]["message"], "no such text: missing");
}

/// Same capture with the segment carrying the 2nd streamed message removed.
#[test]
fn lost_segment() {
    let file = pcap("grpc_lost_segment.pcap");
    let ex = decode_direct(&file, http2::new_decoder);
    check_golden("grpc_lost_segment", &ex);
    assert_eq!(only(&replay(&file), &["http2", "grpc"]), ex);
    assert_eq!(ex.len(), 3);
    // Untouched call stays exact.
    assert_eq!(ex[0]["partial"], false);
    assert_eq!(ex[0]["detail"]["grpc"]["response_messages"], 1);
    // The damaged stream is still one complete exchange, marked partial.
    assert_eq!(ex[1]["detail"]["grpc"]["method"], "Count");
    assert_eq!(ex[1]["outcome"], "complete");
    assert_eq!(ex[1]["partial"], true);
    // Decoding recovers for the next call (literal fields still decoded).
    assert_eq!(ex[2]["detail"]["grpc"]["status_code"], 5);
}

/// Same capture with an 84-byte payload snap length.
#[test]
fn snap_length() {
    let file = pcap("grpc_snaplen.pcap");
    let ex = decode_direct(&file, http2::new_decoder);
    check_golden("grpc_snaplen", &ex);
    assert_eq!(only(&replay(&file), &["http2", "grpc"]), ex);
    assert!(!ex.is_empty());
    assert!(ex.iter().all(|e| e["partial"] == true), "every call lost bytes");
    let ids: Vec<u64> = ex.iter().map(|e| e["detail"]["stream_id"].as_u64().unwrap()).collect();
    for id in [1, 3, 5] {
        assert!(ids.contains(&id), "stream {id} missing from {ids:?}");
    }
}
