//! ICMP golden tests: ping and ping -6 (echo pairs with RTT) and UDP to a
//! closed port (port unreachable naming the quoted original flow), v4 and v6.
#[path = "../harness/golden.rs"]
mod golden;
use golden::*;

#[test]
fn echo_and_port_unreachable() {
    let exs = check_exchanges("icmp.pcap", "icmp.jsonl");
    let s = summary(
        &exs,
        &[
            "/detail/v6",
            "/detail/name",
            "/detail/icmp_type",
            "/detail/code",
            "/detail/echo_seq",
            "/detail/original/protocol",
            "/detail/original/dst",
            "/outcome",
        ],
    );
    assert_eq!(
        s,
        vec![
            "false echo 8 0 1   complete",
            "false echo 8 0 2   complete",
            "false echo 8 0 3   complete",
            "true echo 128 0 1   complete",
            "true echo 128 0 2   complete",
            "true echo 128 0 3   complete",
            "false destination_unreachable 3 3  17 10.200.41.2:9 complete",
            "true destination_unreachable 1 4  17 [fd00:200:41::2]:9 complete",
        ]
    );
    for e in &exs[..6] {
        // The RTT on a veth pair is tens of microseconds, never zero, never seconds.
        let rtt = e["end_ns"].as_u64().unwrap() - e["start_ns"].as_u64().unwrap();
        assert!(rtt > 0 && rtt < 50_000_000, "{e}");
    }
}
