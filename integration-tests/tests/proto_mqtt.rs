//! MQTT: golden replays of captures recorded by
//! `integration-tests/scripts/record_mqtt.sh` (mosquitto and the clients of
//! `scripts/mqtt_client.py`: paho-mqtt 3.1.1 and 5.0, a raw-socket pinger),
//! and a live-through-eBPF session running the same clients. Expected facts
//! come from what the clients did: 5 messages published (2 QoS 0, 2 QoS 1 of
//! which one is 6 kB, 1 QoS 2) and all 5 received by the subscriber at
//! min(publish, subscription) QoS; one SUBSCRIBE of two filters, one
//! UNSUBSCRIBE; an MQTT 5 QoS 1 publish with a traceparent user property and
//! an MQTT 5 SUBSCRIBE; a CONNECT, PINGREQ, DISCONNECT from a raw client;
//! every client sent a password-bearing or anonymous CONNECT and a DISCONNECT.
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

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `client packet[<] topic qos response outcome`.
fn key(e: &Value) -> String {
    let d = &e["detail"];
    let topic = if d["topic"].is_null() { field(e, "/detail/topics/0") } else { field(e, "/detail/topic") };
    format!(
        "{} {}{} {} q{} {} {}",
        field(e, "/detail/client_id"),
        field(e, "/detail/packet"),
        if d["delivery"] == true { "<" } else { "" },
        topic,
        field(e, "/detail/qos"),
        field(e, "/detail/response"),
        field(e, "/outcome")
    )
}

fn counts(exs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in exs {
        *m.entry(key(e)).or_insert(0) += 1;
    }
    m
}

fn expected() -> BTreeMap<String, usize> {
    [
        ("mqtt-sub CONNECT  q CONNACK complete", 1),
        ("mqtt-sub SUBSCRIBE sensors/+/temp q SUBACK complete", 1),
        ("mqtt-sub PUBLISH< sensors/42/temp q0  complete", 2),
        ("mqtt-sub PUBLISH< sensors/43/temp q1 PUBACK complete", 2),
        ("mqtt-sub PUBLISH< alerts q2 PUBCOMP complete", 1),
        ("mqtt-sub UNSUBSCRIBE alerts q UNSUBACK complete", 1),
        ("mqtt-sub DISCONNECT  q  complete", 1),
        ("mqtt-pub CONNECT  q CONNACK complete", 1),
        ("mqtt-pub PUBLISH sensors/42/temp q0  complete", 2),
        ("mqtt-pub PUBLISH sensors/43/temp q1 PUBACK complete", 2),
        ("mqtt-pub PUBLISH alerts q2 PUBCOMP complete", 1),
        ("mqtt-pub DISCONNECT  q  complete", 1),
        ("mqtt-v5 CONNECT  q CONNACK complete", 1),
        ("mqtt-v5 PUBLISH v5/topic q1 PUBACK complete", 1),
        ("mqtt-v5 SUBSCRIBE v5/# q SUBACK complete", 1),
        ("mqtt-v5 DISCONNECT  q  complete", 1),
        ("raw-ping CONNECT  q CONNACK complete", 1),
        ("raw-ping PINGREQ  q PINGRESP complete", 1),
        ("raw-ping DISCONNECT  q  complete", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect()
}

fn check_facts(exs: &[Value]) {
    assert_eq!(counts(exs), expected());
    let sub =
        exs.iter().find(|e| e["detail"]["packet"] == "SUBSCRIBE" && e["detail"]["client_id"] == "mqtt-sub").unwrap();
    assert_eq!(sub["detail"]["topics"], serde_json::json!(["sensors/+/temp", "alerts"]));
    assert_eq!(sub["detail"]["granted"], serde_json::json!([1, 2]));
    // The 6 kB message, in several segments both ways.
    let big: Vec<_> = exs.iter().filter(|e| e["detail"]["payload_bytes"] == 6000).collect();
    assert_eq!(big.len(), 2);
    assert!(big.iter().all(|e| e["partial"] == false));
    let traced: Vec<_> = exs.iter().filter(|e| field(e, "/detail/trace_headers/0/1") == TRACEPARENT).collect();
    assert_eq!(traced.len(), 1);
    assert_eq!(traced[0]["detail"]["protocol_level"], 5);
    assert!(exs.iter().all(|e| e["detail"]["reason_code"].is_null() || e["detail"]["reason_code"] == 0));
    // QoS 0 and DISCONNECT: nothing answers, nothing is waited for.
    for e in exs.iter().filter(|e| e["detail"]["response"].is_null()) {
        assert_eq!(duration_us(e), 0, "{e}");
    }
    // Passwords ("hunter2-secret") are never kept.
    assert!(exs.iter().all(|e| !e.to_string().contains("hunter2")));
}

#[test]
fn golden_all_qos_subscribe_v5_and_ping() {
    let exs = check_exchanges("mqtt.pcap", "mqtt.jsonl");
    check_facts(&exs);
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn golden_detected_on_any_port() {
    let exs = check_exchanges("mqtt_8883.pcap", "mqtt_8883.jsonl");
    assert!(exs.iter().all(|e| e["conn"]["server"].as_str().unwrap().ends_with(":8883")));
    check_facts(&exs);
}

#[test]
fn golden_joined_mid_connection() {
    // mqtt_8883.pcap from frame 16 on: the subscriber's CONNECT/SUBSCRIBE and
    // the publisher's CONNECT are gone, so those two connections are
    // recognised by content alone (a packet id asked for by one side and
    // answered by the other) and carry no client id; everything the clients
    // did after the cut is there.
    let exs = check_exchanges("mqtt_midconn.pcap", "mqtt_midconn.jsonl");
    let mut want = BTreeMap::new();
    for (k, n) in expected() {
        if k.starts_with("mqtt-sub CONNECT") || k.starts_with("mqtt-sub SUBSCRIBE") || k.starts_with("mqtt-pub CONNECT")
        {
            continue;
        }
        let k = k.strip_prefix("mqtt-sub").or_else(|| k.strip_prefix("mqtt-pub")).unwrap_or(&k).to_string();
        *want.entry(k).or_insert(0) += n;
    }
    assert_eq!(counts(&exs), want);
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn golden_snap_length_120() {
    // 54 bytes of TCP payload per packet: the 6 kB messages and the MQTT 5
    // PUBLISH (properties) lose their tails; every exchange still pairs.
    let exs = check_exchanges("mqtt_snap120.pcap", "mqtt_snap120.jsonl");
    assert_eq!(counts(&exs), expected());
    let partial: Vec<_> = exs.iter().filter(|e| e["partial"] == true).map(key).collect();
    assert!(partial.iter().all(|k| k.contains("PUBLISH")), "{partial:?}");
}

#[test]
fn telemetry_spans_and_trace_adoption() {
    let text = replay("mqtt.pcap", "text", &[]);
    assert_eq!(text.lines().filter(|l| l.contains("\"publish sensors/{id}/temp\"")).count(), 4, "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("\"receive sensors/{id}/temp\"")).count(), 4);
    assert_eq!(text.lines().filter(|l| l.contains("trace=4bf92f3577b34da6a3ce929d0e0e4736")).count(), 1);
    assert!(text.lines().all(|l| !l.contains("ERROR")));
}

#[test]
fn live_through_ebpf() {
    let mut s = live::LiveSession::new("mq");
    let ip = s.pair.ip_a.clone();
    let conf = s.dir.path("mosquitto.conf");
    std::fs::write(&conf, format!("listener 1883 {ip}\nallow_anonymous true\npersistence false\n")).unwrap();
    s.spawn_server(&["mosquitto", "-c", conf.to_str().unwrap()], "mosquitto");
    s.start_capture();
    assert!(s.wait_tcp(&ip, 1883, Duration::from_secs(15)), "mosquitto: {}", s.server_log("mosquitto"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/mqtt_client.py");
    let printed = s.client(&["python3", script.to_str().unwrap(), &format!("{ip}:1883")], Duration::from_secs(30));
    assert!(printed.contains("received 5"), "{printed}");
    assert!(printed.contains("v5 published 1 subscribed 1") && printed.contains("raw ping ok"), "{printed}");
    let o = s.finish();
    o.assert_live_matches_replay();
    let (live, _) = o.of("mqtt");
    assert_eq!(live.len(), o.live.len(), "exchanges of another protocol");
    check_facts(&live);
}
