//! DNS golden tests: dig against dnsmasq over UDP and TCP (several queries on
//! one connection), NXDOMAIN, CNAME chains and a truncated (TC) response.
#[path = "../harness/golden.rs"]
mod golden;
use golden::*;

#[test]
fn udp_and_tcp_queries() {
    let exs = check_exchanges("dns.pcap", "dns.jsonl");
    let s = summary(
        &exs,
        &[
            "/conn/id",
            "/detail/transport",
            "/detail/question_name",
            "/detail/question_type",
            "/detail/rcode",
            "/detail/answers",
            "/detail/truncated",
            "/outcome",
            "/partial",
        ],
    );
    assert_eq!(
        s,
        vec![
            r#"1 udp example.test A NOERROR ["A 10.200.41.100"] false complete false"#,
            r#"2 udp h6.test AAAA NOERROR ["AAAA fd00:200:41::99"] false complete false"#,
            r#"3 udp www.test A NOERROR ["CNAME example.test","A 10.200.41.100"] false complete false"#,
            r#"4 udp nope.test A NXDOMAIN [] false complete false"#,
            r#"5 udp big.test TXT NOERROR [] true complete false"#,
            r#"6 tcp example.test A NOERROR ["A 10.200.41.100"] false complete false"#,
            r#"6 tcp h6.test AAAA NOERROR ["AAAA fd00:200:41::99"] false complete false"#,
            r#"6 tcp nope.test A NXDOMAIN [] false complete false"#,
        ]
    );
    for e in &exs {
        assert_eq!(field(e, "/detail/question_class"), "IN");
        assert!(duration_us(e) < 100_000, "{e}");
    }
}
