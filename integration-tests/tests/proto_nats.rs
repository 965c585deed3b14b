//! NATS: golden replays of captures recorded by
//! `integration-tests/scripts/record_nats.sh` (nats-server 2.9 and two nats-py
//! clients running `scripts/nats_client.py`), and a live-through-eBPF session
//! running the same client. The expected facts come from what the client
//! did: 5 messages published (3 PUB to orders.new, 2 HPUB to orders.paid, one
//! with a traceparent header) by a verbose publisher and received by the
//! subscriber, 2 requests to svc.echo answered by the subscriber, 1 request
//! to svc.nobody answered "no responders".
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

/// `op subject response outcome`, inbox subjects templated (their ids are random).
fn key(e: &Value) -> String {
    let subject = field(e, "/detail/subject");
    let subject = if subject.starts_with("_INBOX.") { "_INBOX.*".to_string() } else { subject };
    format!(
        "{} {} {} {} {}",
        field(e, "/detail/client_name"),
        field(e, "/detail/op"),
        subject,
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

/// What the client script does, as exchanges: (key, count).
fn expected() -> BTreeMap<String, usize> {
    [
        // Subscriber: handshake, flush after subscribing, then deliveries.
        ("nats-sub CONNECT  PONG complete", 1),
        ("nats-sub PING  PONG complete", 2),
        ("nats-sub SUB orders.*  complete", 1),
        ("nats-sub SUB svc.echo  complete", 1),
        ("nats-sub MSG orders.new  complete", 3),
        ("nats-sub HMSG orders.paid  complete", 2),
        ("nats-sub MSG svc.echo  complete", 2),
        // The responder's replies go to the requester's inbox.
        ("nats-sub PUB _INBOX.*  complete", 2),
        // Verbose publisher: every op answered by +OK.
        ("nats-pub CONNECT  +OK complete", 1),
        ("nats-pub PING  PONG complete", 2),
        ("nats-pub PUB orders.new +OK complete", 3),
        ("nats-pub HPUB orders.paid +OK complete", 2),
        ("nats-pub SUB _INBOX.* +OK complete", 1),
        ("nats-pub PUB svc.echo MSG complete", 2),
        ("nats-pub PUB svc.nobody HMSG complete", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect()
}

fn check_facts(exs: &[Value]) {
    assert_eq!(counts(exs), expected());
    // Requests last until their reply; their reply subject is the inbox the publisher subscribed to.
    let reqs: Vec<_> = exs.iter().filter(|e| e["detail"]["request"] == true).collect();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|e| e["response_bytes"].as_u64() > Some(0) && duration_us(e) > 0));
    let nobody: Vec<_> = reqs.iter().filter(|e| e["detail"]["subject"] == "svc.nobody").collect();
    assert_eq!(field(nobody[0], "/detail/status"), "503");
    // The traceparent header is seen on the HPUB and on its delivery.
    let traced: Vec<_> = exs
        .iter()
        .filter(|e| field(e, "/detail/trace_headers/0/1") == TRACEPARENT)
        .map(|e| field(e, "/detail/op"))
        .collect();
    let mut traced = traced;
    traced.sort();
    assert_eq!(traced, ["HMSG", "HPUB"]);
    // Non-verbose ops nothing answers: no response, no waiting.
    for e in exs.iter().filter(|e| e["detail"]["client_name"] == "nats-sub" && e["detail"]["op"] == "SUB") {
        assert_eq!((e["response_bytes"].as_u64(), duration_us(e)), (Some(0), 0));
    }
    // Credentials would be in CONNECT: nothing of it but name/lang/version is kept.
    assert!(exs.iter().all(|e| e["detail"]["client_lang"] == "python3"));
}

#[test]
fn golden_publish_subscribe_request_reply() {
    let exs = check_exchanges("nats.pcap", "nats.jsonl");
    check_facts(&exs);
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn golden_detected_on_any_port() {
    let exs = check_exchanges("nats_4999.pcap", "nats_4999.jsonl");
    assert!(exs.iter().all(|e| e["conn"]["server"].as_str().unwrap().ends_with(":4999")));
    check_facts(&exs);
}

#[test]
fn golden_snap_length_200() {
    // 134 bytes of TCP payload per packet: the CONNECT lines (credentials
    // slot, name) are cut, so the client names are unknown and the publisher's
    // verbose mode is inferred from the server's first +OK; segments holding
    // several frames lose the frames after the cut. What is reported is right.
    let exs = check_exchanges("nats_snap200.pcap", "nats_snap200.jsonl");
    let got: BTreeMap<String, usize> = counts(&exs);
    for (k, n) in [
        (" MSG orders.new  complete", 3),
        (" PUB orders.new +OK complete", 3),
        (" HPUB orders.paid +OK complete", 1),
        (" HMSG orders.paid  complete", 1),
        (" PUB svc.echo MSG complete", 1),
        (" PUB svc.nobody HMSG complete", 1),
        (" SUB orders.*  complete", 1),
    ] {
        assert_eq!(got.get(k), Some(&n), "{k}: {got:#?}");
    }
    assert!(exs.iter().all(|e| e["outcome"] == "complete"));
    // The cut HPUB/HMSG frames are partial: their header block is incomplete.
    assert_eq!(exs.iter().filter(|e| e["partial"] == true).count(), 2);
}

#[test]
fn golden_joined_mid_connection() {
    // No INFO, no CONNECT: detected by whole PUB (to the server) and MSG (to
    // the client) frames. The publisher's verbose mode is learnt from its
    // first +OK, after its first batch of PUBs went out (those are send-only,
    // their 7 +OKs unmatched); its requests are recognised by the inbox SUB
    // seen in that batch.
    let exs = check_exchanges("nats_midconn.pcap", "nats_midconn.jsonl");
    let got: BTreeMap<String, usize> = counts(&exs);
    let want: BTreeMap<String, usize> = [
        (" PUB orders.new  complete", 3),
        (" HPUB orders.paid  complete", 2),
        (" SUB _INBOX.*  complete", 1),
        (" MSG orders.new  complete", 3),
        (" HMSG orders.paid  complete", 2),
        (" MSG svc.echo  complete", 2),
        (" PUB _INBOX.*  complete", 2),
        (" PUB svc.echo MSG complete", 2),
        (" PUB svc.nobody HMSG complete", 1),
        (" PING  PONG complete", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(got, want);
    assert!(exs.iter().all(|e| e["partial"] == false));
}

#[test]
fn telemetry_spans_and_trace_adoption() {
    let text = replay("nats.pcap", "text", &[]);
    // The capture is from the server's veth: broker-side spans.
    assert!(text.lines().filter(|l| l.contains("\"publish orders.new\"")).count() == 3, "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("\"receive orders.paid\"")).count(), 2);
    assert_eq!(text.lines().filter(|l| l.contains("\"publish _INBOX.{id}\"")).count(), 2);
    assert_eq!(text.lines().filter(|l| l.contains("trace=4bf92f3577b34da6a3ce929d0e0e4736")).count(), 2);
    assert!(text.lines().any(|l| l.contains("\"request svc.nobody\" ERROR") && l.contains("error.type=no_responders")));
}

#[test]
fn live_through_ebpf() {
    let mut s = live::LiveSession::new("nt");
    let ip = s.pair.ip_a.clone();
    s.spawn_server(&["nats-server", "-a", &ip, "-p", "4222"], "nats-server");
    s.start_capture();
    assert!(s.wait_tcp(&ip, 4222, Duration::from_secs(15)), "nats-server: {}", s.server_log("nats-server"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/nats_client.py");
    let printed = s.client(&["python3", script.to_str().unwrap(), &format!("{ip}:4222")], Duration::from_secs(30));
    assert!(printed.contains("published 5 received 5"), "{printed}");
    assert!(printed.contains("replies ['PING', 'PONG'] no_responders True"), "{printed}");
    let o = s.finish();
    o.assert_live_matches_replay();
    let (live, _) = o.of("nats");
    assert_eq!(live.len(), o.live.len(), "exchanges of another protocol");
    check_facts(&live);
}
