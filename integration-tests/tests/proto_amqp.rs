//! AMQP 0-9-1: golden replays of captures recorded by
//! `integration-tests/scripts/record_amqp.sh` (a RabbitMQ 3.10 node from
//! Debian's rabbitmq-server and the pika client `scripts/amqp_client.py`),
//! and a live-through-eBPF session running the same client against a node
//! in a test namespace. The expected facts come from what the client did
//! (its fixed list of operations, and what it printed it saw): declare an
//! exchange and two queues, bind one, 3 publishes without confirms, 2
//! confirmed publishes, 3 deliveries settled by ack/reject/nack, 2 get-ok
//! (each acked) and 1 get-empty, a passive declare refused with 404, deletes, close.
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

/// `method response exchange routing_key queue reply_code outcome`.
fn key(e: &Value) -> String {
    [
        "/detail/method",
        "/detail/response",
        "/detail/exchange",
        "/detail/routing_key",
        "/detail/queue",
        "/detail/reply_code",
        "/outcome",
    ]
    .iter()
    .map(|p| field(e, p))
    .collect::<Vec<_>>()
    .join(" ")
}

fn counts(exs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in exs {
        *m.entry(key(e)).or_insert(0) += 1;
    }
    m
}

fn map(v: &[(&str, usize)]) -> BTreeMap<String, usize> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// The client script's operations, as exchanges.
const SESSION: &[(&str, usize)] = &[
    ("connection.open connection.open-ok     complete", 1),
    // Channels 1-4; pika closes 1-3 on connection close (4 was closed by the broker).
    ("channel.open channel.open-ok     complete", 4),
    ("channel.close channel.close-ok    200 complete", 3),
    ("exchange.declare exchange.declare-ok cnflow.logs    complete", 1),
    ("queue.declare queue.declare-ok   cnflow.q1  complete", 1),
    ("queue.declare queue.declare-ok   cnflow.q2  complete", 1),
    ("queue.bind queue.bind-ok cnflow.logs app.* cnflow.q2  complete", 1),
    // Default exchange, no confirms: request only.
    ("basic.publish   cnflow.q1   complete", 3),
    ("confirm.select confirm.select-ok     complete", 1),
    ("basic.publish basic.ack cnflow.logs app.info   complete", 2),
    ("basic.qos basic.qos-ok     complete", 1),
    ("basic.consume basic.consume-ok   cnflow.q1  complete", 1),
    ("basic.deliver   cnflow.q1 cnflow.q1  complete", 3),
    ("basic.ack   cnflow.q1   complete", 1),
    ("basic.reject   cnflow.q1   complete", 1),
    ("basic.nack   cnflow.q1   complete", 1),
    ("basic.cancel basic.cancel-ok     complete", 1),
    ("basic.get basic.get-ok cnflow.logs app.info cnflow.q2  complete", 2),
    ("basic.ack  cnflow.logs app.info   complete", 2),
    ("basic.get basic.get-empty   cnflow.q2  complete", 1),
    ("queue.declare channel.close   cnflow.missing 404 complete", 1),
    ("queue.delete queue.delete-ok   cnflow.q1  complete", 1),
    ("queue.delete queue.delete-ok   cnflow.q2  complete", 1),
    ("exchange.delete exchange.delete-ok cnflow.logs    complete", 1),
    ("connection.close connection.close-ok    200 complete", 1),
];

fn check_facts(exs: &[Value]) {
    assert_eq!(counts(exs), map(SESSION));
    let d = |e: &&Value, k: &str| e["detail"][k].clone();
    // Body sizes from the content headers: b"message N" (9 bytes), 100 bytes to cnflow.logs.
    for e in exs.iter().filter(|e| matches!(e["detail"]["method"].as_str(), Some("basic.publish" | "basic.deliver"))) {
        let want = if e["detail"]["exchange"] == "cnflow.logs" { 100 } else { 9 };
        assert_eq!(d(&e, "body_size"), want, "{e}");
    }
    // Publisher confirms carry sequence numbers 1 and 2; deliveries tags 1..3.
    let mut tags: Vec<(String, u64)> = exs
        .iter()
        .filter(|e| e["detail"]["delivery_tag"].is_u64())
        .map(|e| (key(e), e["detail"]["delivery_tag"].as_u64().unwrap()))
        .collect();
    tags.sort();
    let confirmed: Vec<u64> =
        tags.iter().filter(|(k, _)| k.starts_with("basic.publish basic.ack")).map(|t| t.1).collect();
    assert_eq!(confirmed, [1, 2]);
    let delivered: Vec<u64> = tags.iter().filter(|(k, _)| k.starts_with("basic.deliver")).map(|t| t.1).collect();
    assert_eq!(delivered, [1, 2, 3]);
    let refused = exs.iter().find(|e| e["detail"]["reply_code"] == 404).unwrap();
    assert!(field(refused, "/detail/reply_text").starts_with("NOT_FOUND - no queue 'cnflow.missing'"), "{refused}");
    // The broker's own counts: get-ok says how many were left (1, then 0);
    // both queues were empty when deleted (every message consumed and settled
    // without requeue).
    let mut left: Vec<(String, u64)> = exs
        .iter()
        .filter(|e| e["detail"]["message_count"].is_u64())
        .map(|e| (key(e), e["detail"]["message_count"].as_u64().unwrap()))
        .collect();
    left.sort();
    let left: Vec<(&str, u64)> = left.iter().map(|(k, n)| (k.split(' ').next().unwrap(), *n)).collect();
    assert_eq!(
        left,
        [
            ("basic.get", 0),
            ("basic.get", 1),
            ("queue.declare", 0),
            ("queue.declare", 0),
            ("queue.delete", 0),
            ("queue.delete", 0)
        ]
    );
    // Confirmed publishes and synchronous methods last until their answer.
    assert!(exs.iter().filter(|e| e["detail"]["response"].is_string()).all(|e| e["response_bytes"].as_u64() > Some(0)));
    // PLAIN credentials (guest/guest) never reach an exchange.
    let open = exs.iter().find(|e| e["detail"]["method"] == "connection.open").unwrap();
    assert_eq!((field(open, "/detail/mechanism"), field(open, "/detail/vhost")), ("PLAIN".into(), "/".into()));
    assert!(exs.iter().all(|e| !e.to_string().contains("guest")));
}

#[test]
fn golden_whole_session() {
    let exs = check_exchanges("amqp.pcap", "amqp.jsonl");
    check_facts(&exs);
    assert!(exs.iter().all(|e| e["partial"] == false && e["protocol"] == "amqp"));
}

#[test]
fn golden_detected_on_any_port() {
    let exs = check_exchanges("amqp_5673.pcap", "amqp_5673.jsonl");
    assert!(exs.iter().all(|e| e["conn"]["server"].as_str().unwrap().ends_with(":5673")));
    check_facts(&exs);
}

#[test]
fn golden_snap_length_150() {
    // 84 bytes of TCP payload per packet. pika sends each frame in its own
    // segment, so method frames survive and body frames are cut (sizes come
    // from the content header). The broker's consume-ok and the 3 deliveries
    // share one segment: the deliveries after the cut are lost, so the
    // settles name no destination. Nothing reported is wrong.
    let exs = check_exchanges("amqp_snap150.pcap", "amqp_snap150.jsonl");
    let mut want = map(SESSION);
    want.remove("basic.deliver   cnflow.q1 cnflow.q1  complete");
    for m in ["ack", "reject", "nack"] {
        want.remove(&format!("basic.{m}   cnflow.q1   complete"));
        want.insert(format!("basic.{m}      complete"), 1);
    }
    assert_eq!(counts(&exs), want);
    // Every cut ends a segment that ends a frame, so the framing survives
    // each gap and nothing is partial (bodies are never needed).
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn golden_joined_mid_connection() {
    // From the third unconfirmed publish on: no handshake, no declarations,
    // detected by whole frames; confirm mode is seen being selected.
    let exs = check_exchanges("amqp_midconn.pcap", "amqp_midconn.jsonl");
    let mut want = map(SESSION);
    for k in [
        "connection.open connection.open-ok     complete",
        "exchange.declare exchange.declare-ok cnflow.logs    complete",
        "queue.declare queue.declare-ok   cnflow.q1  complete",
        "queue.declare queue.declare-ok   cnflow.q2  complete",
        "queue.bind queue.bind-ok cnflow.logs app.* cnflow.q2  complete",
    ] {
        want.remove(k);
    }
    want.insert("basic.publish   cnflow.q1   complete".into(), 1);
    want.insert("channel.open channel.open-ok     complete".into(), 3);
    assert_eq!(counts(&exs), want);
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn telemetry_spans_and_message_counters() {
    let text = replay("amqp.pcap", "text", &[]);
    let n = |pat: &str| text.lines().filter(|l| l.contains(pat)).count();
    // The capture is from the broker's veth: broker-side (SERVER) spans.
    // Published to the default exchange: messaging.destination.name is ""
    // (RabbitMQ conventions) and the span is named after the operation alone.
    assert_eq!(n("\"publish\""), 3, "{text}");
    assert_eq!(n("\"publish cnflow.logs\""), 2);
    assert_eq!(n("\"deliver\""), 3);
    assert_eq!(n("\"receive cnflow.logs\""), 2);
    assert_eq!(n("\"receive cnflow.q2\""), 1);
    assert!(text.lines().any(|l| l.contains("\"queue.declare cnflow.missing\" ERROR") && l.contains("error.type=404")));
    // Counters from the OTLP metrics: 5 sent (3 + 2), 3 delivered + 2 got.
    let json = replay("amqp.pcap", "otlp-json", &[]);
    let mut sums: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for line in json.lines().filter(|l| l.contains("resourceMetrics")) {
        let v: Value = serde_json::from_str(line).unwrap();
        for m in v["resourceMetrics"].as_array().unwrap().iter().flat_map(|r| r["scopeMetrics"].as_array().unwrap()) {
            for m in m["metrics"].as_array().unwrap() {
                let name = m["name"].as_str().unwrap();
                if !name.starts_with("messaging.client.") || !name.ends_with(".messages") {
                    continue;
                }
                for dp in m["sum"]["dataPoints"].as_array().unwrap() {
                    let attr = |k: &str| {
                        dp["attributes"].as_array().unwrap().iter().find(|a| a["key"] == k).map_or(String::new(), |a| {
                            a["value"]["stringValue"].as_str().unwrap_or_default().to_string()
                        })
                    };
                    assert_eq!(attr("messaging.system"), "rabbitmq");
                    let v = dp["asInt"].as_str().map_or_else(|| dp["asInt"].as_i64().unwrap(), |s| s.parse().unwrap());
                    let k = (name.to_string(), attr("messaging.operation.name"), attr("messaging.destination.name"));
                    *sums.entry(k).or_default() = v; // cumulative: the last collection holds the total
                }
            }
        }
    }
    let k = |n: &str, op: &str, d: &str| (format!("messaging.client.{n}.messages"), op.to_string(), d.to_string());
    let want: BTreeMap<_, i64> = [
        (k("sent", "publish", ""), 3),
        (k("sent", "publish", "cnflow.logs"), 2),
        (k("consumed", "deliver", ""), 3),
        (k("consumed", "receive", "cnflow.logs"), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(sums, want);
}

/// Kills every process left in a namespace (the broker script forwards
/// only SIGTERM to its Erlang VM; SIGKILL of the script would orphan it).
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        netns::kill_all_in(&self.0, Duration::from_secs(10));
    }
}

#[test]
fn live_through_ebpf() {
    let mut s = live::LiveSession::new("aq");
    let _reaper = Reaper(s.pair.ns_a.clone());
    let ip = s.pair.ip_a.clone();
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/rabbitmq_node.sh");
    let dir = s.dir.path("rabbitmq");
    s.spawn_server(&["epmd", "-address", "127.0.0.1"], "epmd");
    s.spawn_server(&[node.to_str().unwrap(), dir.to_str().unwrap(), &ip, "5672"], "rabbitmq");
    assert!(s.wait_tcp(&ip, 5672, Duration::from_secs(90)), "rabbitmq: {}", s.server_log("rabbitmq"));
    s.start_capture();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/amqp_client.py");
    let printed = s.client(&["python3", script.to_str().unwrap(), &format!("{ip}:5672")], Duration::from_secs(60));
    assert!(printed.contains("published 3 confirmed 2 consumed 3 got 2 empty 1 refused 404"), "{printed}");
    let o = s.finish();
    o.assert_live_matches_replay();
    let (live, _) = o.of("amqp");
    assert_eq!(live.len(), o.live.len(), "exchanges of another protocol");
    check_facts(&live);
}
