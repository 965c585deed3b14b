//! Real-world DNS captures (integration-tests/scripts/record_dns_realworld.sh):
//! mDNS from python-zeroconf (id 0, multicast announcements), RFC 2136 UPDATEs
//! from nsupdate against BIND, and dig queries of RR types hickory has no name
//! for. Expected values are what the clients printed while recording.
#[path = "../harness/golden.rs"]
mod golden;
use golden::*;

const COLS: &[&str] = &[
    "/detail/id",
    "/detail/question_name",
    "/detail/question_type",
    "/detail/rcode",
    "/detail/answers",
    "/outcome",
    "/partial",
];

/// Span names of `cnflow replay --format otlp-json`, in output order.
fn span_names(pcap: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in replay(pcap, "otlp-json", &[]).lines().filter(|l| l.contains("resourceSpans")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    names.push(s["name"].as_str().unwrap().to_string());
                }
            }
        }
    }
    names
}

#[test]
fn mdns_pairs_on_question_and_ignores_announcements() {
    let exs = check_exchanges("dns_mdns.pcap", "dns_mdns.jsonl");
    // dig -p 5353 (legacy unicast, id echoed), then three id-0 queries on one
    // socket: A and PTR answered (an=1 each), nothere.local never answered.
    assert_eq!(
        summary(&exs, COLS),
        vec![
            r#"22005 cnflowhost.local A NOERROR ["A 10.200.57.2"] complete false"#,
            r#"0 cnflowhost.local A NOERROR ["A 10.200.57.2"] complete false"#,
            r#"0 _http._tcp.local PTR NOERROR ["PTR cnflow-test._http._tcp.local"] complete false"#,
            r#"0 nothere.local A  [] timeout false"#,
        ]
    );
    // The responder's multicast announcements (4 in the capture) answer no query.
    assert!(exs.iter().all(|e| !e.to_string().contains("224.0.0.251")));
    for e in &exs {
        assert_eq!(field(e, "/detail/question_class"), "IN");
    }
    // ... and are counted: `tcpdump -nr dns_mdns.pcap` shows 4 responses `[0q]` to 224.0.0.251.
    assert_eq!(unsolicited_count("dns_mdns.pcap"), 4);
}

/// `cnflow.protocol.unmatched_responses{protocol=dns,reason=unsolicited}` at the end of a replay.
fn unsolicited_count(pcap: &str) -> i64 {
    let out = replay(pcap, "otlp-json", &[]);
    let mut last = 0;
    for line in out.lines().filter(|l| l.contains("resourceMetrics")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rm in v["resourceMetrics"].as_array().unwrap() {
            for sm in rm["scopeMetrics"].as_array().unwrap() {
                for m in sm["metrics"].as_array().unwrap() {
                    if m["name"] != "cnflow.protocol.unmatched_responses" {
                        continue;
                    }
                    for dp in m["sum"]["dataPoints"].as_array().unwrap() {
                        let attrs = dp["attributes"].to_string();
                        if attrs.contains(r#""dns""#) && attrs.contains(r#""unsolicited""#) {
                            last = dp["asInt"].as_str().unwrap().parse().unwrap();
                        }
                    }
                }
            }
        }
    }
    last
}

#[test]
fn update_is_named_after_the_updated_record() {
    let exs = check_exchanges("dns_update.pcap", "dns_update.jsonl");
    // nsupdate: add www.example.test A, delete old.example.test A (both sent,
    // nsupdate exited 0); dig then read www.example.test A = 10.200.57.80.
    let cols = [COLS, &["/detail/opcode", "/detail/update_name", "/detail/update_type"]].concat();
    let s = summary(&exs, &cols);
    assert_eq!(s.len(), 3, "{s:?}");
    for (e, rec) in exs.iter().zip(["www.example.test", "old.example.test"]) {
        assert_eq!(field(e, "/detail/question_name"), "example.test");
        assert_eq!(field(e, "/detail/question_type"), "SOA");
        assert_eq!(field(e, "/detail/opcode"), "UPDATE");
        assert_eq!(field(e, "/detail/update_name"), rec);
        assert_eq!(field(e, "/detail/update_type"), "A");
        assert_eq!(field(e, "/detail/rcode"), "NOERROR");
    }
    assert_eq!(field(&exs[2], "/detail/answers"), r#"["A 10.200.57.80"]"#);
    assert_eq!(
        span_names("dns_update.pcap"),
        vec!["UPDATE A www.example.test", "UPDATE A old.example.test", "A www.example.test"]
    );
}

#[test]
fn rr_types_have_iana_names() {
    let exs = check_exchanges("dns_rrtypes.pcap", "dns_rrtypes.jsonl");
    // dig -t WKS MD TKEY NSAP-PTR TYPE54 SVCB HTTPS; dig printed these statuses.
    let s = summary(&exs, &["/detail/question_type", "/detail/rcode", "/outcome"]);
    assert_eq!(
        s,
        vec![
            "WKS NOERROR complete",
            "MD NOERROR complete",
            "TKEY FORMERR complete",
            "NSAP-PTR NOERROR complete",
            "TYPE54 NOERROR complete",
            "SVCB NOERROR complete",
            "HTTPS NOERROR complete",
        ]
    );
}
