//! Kafka golden tests from captures of a tansu broker with confluent-kafka
//! (librdkafka) producing and consuming; see integration-tests/scripts/kafka_client.py
//! and record_kafka_fetch.sh.
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

/// A consumer that receives what was produced (record_kafka_fetch.sh): two
/// Produce v10 requests (topic by name) carrying 3 and 2 records, a Fetch v16
/// (topic by id, named from the Metadata v12 response on another connection)
/// answered with both record batches, an empty long-poll Fetch, and
/// OffsetCommit / OffsetFetch v9.
#[test]
fn fetch_returns_records() {
    let file = pcap("kafka_fetch.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka_fetch", &ex);
    assert_eq!(only(&replay(&file), &["kafka"]), ex, "cnflow replay (content detection) differs from direct decoding");
    let by = |api: &str| ex.iter().filter(|e| e["detail"]["api_name"] == api).collect::<Vec<_>>();
    let d = |e: &serde_json::Value, f: &str| e["detail"][f].clone();
    let orders = serde_json::json!(["orders"]);

    let produce = by("Produce");
    assert_eq!(produce.len(), 2);
    for (p, n) in produce.iter().zip([3, 2]) {
        assert_eq!((d(p, "api_version"), d(p, "topics"), d(p, "error_code")), (10.into(), orders.clone(), 0.into()));
        assert_eq!(d(p, "record_count"), n);
        assert_eq!((p["outcome"].as_str(), p["partial"].as_bool()), (Some("complete"), Some(false)));
    }
    let produced: u64 = produce.iter().map(|p| d(p, "record_bytes").as_u64().unwrap()).sum();

    let fetch = by("Fetch");
    assert_eq!(fetch.len(), 2);
    for f in &fetch {
        assert_eq!((d(f, "api_version"), d(f, "topics"), d(f, "error_code")), (16.into(), orders.clone(), 0.into()));
        assert_eq!((d(f, "header_only"), f["partial"].clone()), (false.into(), false.into()));
        assert_eq!(f["outcome"], "complete");
    }
    // Both batches come back in the first Fetch, byte for byte what was produced.
    assert_eq!((d(fetch[0], "record_count"), d(fetch[0], "record_bytes")), (5.into(), produced.into()));
    assert!(fetch[0]["response_bytes"].as_u64().unwrap() > produced);
    // The next one long-polls (fetch.wait.max.ms) and returns no records.
    assert_eq!((d(fetch[1], "record_count"), d(fetch[1], "record_bytes")), (0.into(), 0.into()));

    for api in ["OffsetCommit", "OffsetFetch"] {
        let e = by(api);
        assert_eq!(e.len(), 1, "{api}");
        assert_eq!(
            (d(e[0], "api_version"), d(e[0], "topics"), d(e[0], "error_code")),
            (9.into(), orders.clone(), 0.into())
        );
        assert_eq!(d(e[0], "record_count"), serde_json::Value::Null);
    }
}

/// A consumer-group member (record_kafka_fetch.sh, kafka_group_client.py):
/// JoinGroup v5 first refused with MEMBER_ID_REQUIRED and retried, SyncGroup
/// v3, Heartbeats, OffsetFetch / ListOffsets / Fetch, OffsetCommit and
/// LeaveGroup. The subscribed and assigned topic comes from the consumer
/// protocol blobs inside JoinGroup and SyncGroup.
#[test]
fn consumer_group_membership() {
    let file = pcap("kafka_group.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka_group", &ex);
    assert_eq!(only(&replay(&file), &["kafka"]), ex, "cnflow replay (content detection) differs from direct decoding");
    let by = |api: &str| ex.iter().filter(|e| e["detail"]["api_name"] == api).collect::<Vec<_>>();
    let summary = |e: &serde_json::Value| {
        let d = &e["detail"];
        format!("{} v{} {} {} {}", d["api_name"], d["api_version"], d["topics"], d["error_code"], d["error_name"])
    };
    let join: Vec<String> = by("JoinGroup").into_iter().map(summary).collect();
    assert_eq!(join, [r#""JoinGroup" v5 ["orders"] 79 "MEMBER_ID_REQUIRED""#, r#""JoinGroup" v5 ["orders"] 0 null"#]);
    let sync: Vec<String> = by("SyncGroup").into_iter().map(summary).collect();
    assert_eq!(sync, [r#""SyncGroup" v3 ["orders"] 0 null"#]);
    assert!(!by("Heartbeat").is_empty());
    assert_eq!(by("LeaveGroup").len(), 1);
    for api in ["JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit", "OffsetFetch", "ListOffsets"] {
        for e in by(api) {
            assert_eq!((e["outcome"].as_str(), e["partial"].as_bool()), (Some("complete"), Some(false)), "{api}");
            assert_eq!(e["detail"]["header_only"], false, "{api}");
        }
    }
    let fetched: u64 = by("Fetch").iter().filter_map(|e| e["detail"]["record_count"].as_u64()).sum();
    assert_eq!(fetched, 3);
}

/// kafka_fetch.pcap cut to 100 bytes per packet (`editcap -s 100`): every
/// exchange still pairs, with the sizes of the full capture, but no record
/// set is whole, so no record count is claimed and those exchanges are partial.
#[test]
fn fetch_snap_length_claims_no_record_counts() {
    let file = pcap("kafka_fetch_snaplen.pcap");
    let ex = decode_direct(&file, kafka::new_decoder);
    check_golden("kafka_fetch_snaplen", &ex);
    assert_eq!(only(&replay(&file), &["kafka"]), ex);
    let full = decode_direct(&pcap("kafka_fetch.pcap"), kafka::new_decoder);
    let key = |e: &serde_json::Value| {
        (
            e["detail"]["api_name"].clone(),
            e["detail"]["correlation_id"].clone(),
            e["request_bytes"].clone(),
            e["response_bytes"].clone(),
        )
    };
    assert_eq!(ex.iter().map(key).collect::<Vec<_>>(), full.iter().map(key).collect::<Vec<_>>());
    for e in ex.iter().filter(|e| e["detail"]["api_name"] == "Produce" || e["detail"]["api_name"] == "Fetch") {
        assert_eq!(
            (e["detail"]["record_count"].clone(), e["partial"].clone()),
            (serde_json::Value::Null, true.into()),
            "{e}"
        );
    }
}

/// Requests `tshark` dissects in `file` (port 19092 decoded as Kafka):
/// "api_key vVERSION #correlation_id client_id", the oracle for cnflow's.
fn tshark_requests(file: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-d", "tcp.port==19092,kafka", "-Y", "kafka && tcp.dstport==19092", "-T", "fields"])
        .args(["-e", "kafka.api_key", "-e", "kafka.api_version", "-e", "kafka.correlation_id", "-e", "kafka.client_id"])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{} v{} #{} {}", f[0], f[1], f[2], f.get(3).unwrap_or(&""))
        })
        .collect()
}

/// Issue #13 item 6 (record_kafka_flex_group.sh, kafka_flex_group_client.py):
/// a kafka-python group consumer against tansu on port 19092 negotiates the
/// flexible versions JoinGroup v7 and SyncGroup v5 (compact strings, tagged
/// fields). The capture cut at the first JoinGroup request (no SYN, no
/// ApiVersions) is detected by content on that non-standard port, and every
/// exchange from there on is what the whole capture gives. Oracles: tshark's
/// dissection of the requests, and what the client printed (its assignment's
/// topic, 3 records consumed).
#[test]
fn flexible_group_versions_mid_stream_on_a_non_standard_port() {
    let (full_file, mid_file) = (pcap("kafka_flex_group.pcap"), pcap("kafka_flex_group_midstream.pcap"));
    let full = only(&replay(&full_file), &["kafka"]);
    check_golden("kafka_flex_group", &full);
    let mid = only(&replay(&mid_file), &["kafka"]);
    check_golden("kafka_flex_group_midstream", &mid);
    let key = |e: &serde_json::Value| {
        let d = &e["detail"];
        format!(
            "{} v{} #{} {}",
            d["api_key"],
            d["api_version"],
            d["correlation_id"],
            d["client_id"].as_str().unwrap_or("")
        )
    };
    for (file, ex) in [(&full_file, &full), (&mid_file, &mid)] {
        let mut ours: Vec<String> = ex.iter().map(key).collect();
        let mut theirs = tshark_requests(file);
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{}", file.display());
        for e in ex.iter() {
            assert_eq!((e["outcome"].as_str(), e["partial"].as_bool()), (Some("complete"), Some(false)), "{e}");
            assert_eq!(e["detail"]["header_only"], false, "{e}");
        }
    }
    // Joining mid-stream loses nothing from the join point on.
    let join_start = mid[0]["start_ns"].as_u64().unwrap();
    let tail: Vec<String> = full
        .iter()
        .filter(|e| e["start_ns"].as_u64().unwrap() >= join_start)
        .map(|e| e["detail"].to_string())
        .collect();
    assert_eq!(mid.iter().map(|e| e["detail"].to_string()).collect::<Vec<_>>(), tail);
    let summary = |api: &str| -> Vec<String> {
        mid.iter()
            .filter(|e| e["detail"]["api_name"] == api)
            .map(|e| {
                let d = &e["detail"];
                format!("v{} {} {} {}", d["api_version"], d["topics"], d["error_code"], d["error_name"])
            })
            .collect()
    };
    assert_eq!(mid[0]["detail"]["api_name"], "JoinGroup");
    assert_eq!(summary("JoinGroup"), [r#"v7 ["payments"] 79 "MEMBER_ID_REQUIRED""#, r#"v7 ["payments"] 0 null"#]);
    assert_eq!(summary("SyncGroup"), [r#"v5 ["payments"] 0 null"#]);
    assert_eq!(summary("LeaveGroup").len(), 1);
    // What the client printed: its assignment (topic payments) and 3 records consumed.
    let client = std::fs::read_to_string(pcap("kafka_flex_group.client.txt")).unwrap();
    assert!(client.contains("assignment ['payments/0'"), "{client}");
    assert!(client.contains("consumed ['payment-0', 'payment-1', 'payment-2']"), "{client}");
    let fetched: u64 = mid.iter().filter_map(|e| e["detail"]["record_count"].as_u64()).sum();
    assert_eq!(fetched, 3);
}
