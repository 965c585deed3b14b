//! Kafka golden test from a capture of a tansu broker with confluent-kafka
//! (librdkafka) producing and consuming; see integration-tests/scripts/kafka_client.py.
#[path = "../harness/protob.rs"]
mod protob;

use cnflow::protocol::kafka;
use protob::{check_golden, decode_direct, only, pcap, replay};

#[test]
fn tansu_produce_and_consume() {
    let file = pcap("kafka.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka", &ex);
    let replayed = only(&replay(&file), &["kafka"]);
    assert_eq!(replayed, ex, "cnflow replay (content detection) differs from direct decoding");
    let apis: Vec<&str> = ex.iter().map(|e| e["detail"]["api_name"].as_str().unwrap()).collect();
    for want in ["ApiVersions", "Metadata", "Produce", "Fetch"] {
        assert!(apis.contains(&want), "{want} missing from {apis:?}");
    }
    let produce = ex.iter().find(|e| e["detail"]["api_name"] == "Produce").unwrap();
    assert_eq!(produce["detail"]["topics"][0], "orders");
    assert_eq!(produce["detail"]["client_id"], "cnflow-producer");
    assert!(ex.iter().all(|e| e["detail"]["header_only"] == false || e["detail"]["api_key"] == 71));
}

/// The segment carrying the first Produce request removed: its response is
/// unmatched (counted), everything else pairs as before.
#[test]
fn lost_segment() {
    let file = pcap("kafka_lost_segment.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka_lost_segment", &ex);
    assert_eq!(only(&replay(&file), &["kafka"]), ex);
    let produce: Vec<_> = ex.iter().filter(|e| e["detail"]["api_name"] == "Produce").collect();
    assert_eq!(produce.len(), 1);
    assert_eq!(produce[0]["detail"]["topics"][0], "orders");
    assert_eq!(ex.len(), 19);
}

/// 34 bytes of payload per packet: headers still pair, cut bodies are partial.
#[test]
fn snap_length() {
    let file = pcap("kafka_snaplen.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka_snaplen", &ex);
    assert_eq!(only(&replay(&file), &["kafka"]), ex);
    let full = decode_direct(&pcap("kafka.pcap"), kafka::new_decoder);
    let key = |v: &Vec<serde_json::Value>| -> Vec<(String, i64)> {
        v.iter()
            .map(|e| {
                (e["detail"]["api_name"].as_str().unwrap().to_string(), e["detail"]["correlation_id"].as_i64().unwrap())
            })
            .collect()
    };
    assert_eq!(key(&ex), key(&full));
    assert!(ex.iter().filter(|e| e["detail"]["api_name"] == "Fetch").all(|e| e["partial"] == true));
}
