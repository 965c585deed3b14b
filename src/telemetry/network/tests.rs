use super::graph::{CallKind, End, ServiceGraph};
use super::l4::{L4Config, NetworkMetrics};
use crate::capture::{Direction, PacketEvent, L4};
use crate::telemetry::config::Temporality;
use crate::workload::{Enricher, Identity, NoEnrich};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use std::net::IpAddr;
use std::sync::Arc;

const MS: u64 = 1_000_000;

fn cfg() -> L4Config {
    L4Config { max_pairs: 100, max_conns: 1000, syn_timeout_ns: 3000 * MS, idle_timeout_ns: 120_000 * MS }
}

/// A TCP packet `from` → `to` ("ip:port").
fn tcp(ts: u64, from: &str, to: &str, seq: u32, flags: u8, len: u32) -> PacketEvent {
    let (s, d): (std::net::SocketAddr, std::net::SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
    PacketEvent {
        ts_ns: ts,
        ifindex: 1,
        direction: Direction::Egress,
        src: s.ip(),
        dst: d.ip(),
        src_port: s.port(),
        dst_port: d.port(),
        l4: L4::Tcp { seq, ack: 0, flags },
        payload_len: len,
        payload: bytes::Bytes::new(),
    }
}

fn attr(a: &[opentelemetry_proto::tonic::common::v1::KeyValue], k: &str) -> Option<String> {
    a.iter().find(|kv| kv.key == k).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Sum of the points of counter `name` whose attributes include every `want` pair.
fn sum(ms: &[Metric], name: &str, want: &[(&str, &str)]) -> i64 {
    ms.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| want.iter().all(|(k, v)| attr(&p.attributes, k).as_deref() == Some(*v)))
        .map(|p| match p.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        })
        .sum()
}

fn hist_count(ms: &[Metric], name: &str, want: &[(&str, &str)]) -> (u64, f64) {
    ms.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| want.iter().all(|(k, v)| attr(&p.attributes, k).as_deref() == Some(*v)))
        .fold((0, 0.0), |(c, s), p| (c + p.count, s + p.sum.unwrap_or(0.0)))
}

const C: &str = "10.200.0.1:40000";
const S: &str = "10.200.0.2:80";
const UP: &[(&str, &str)] = &[("src.address", "10.200.0.1"), ("dst.address", "10.200.0.2"), ("server.port", "80")];
const DOWN: &[(&str, &str)] = &[("src.address", "10.200.0.2"), ("dst.address", "10.200.0.1")];

#[test]
fn handshake_data_retransmission_and_fin() {
    let mut n = NetworkMetrics::new(cfg(), Temporality::Cumulative);
    let e = NoEnrich;
    n.packet(&tcp(0, C, S, 99, 0x02, 0), &e); // SYN
    n.packet(&tcp(250_000, S, C, 499, 0x12, 0), &e); // SYN/ACK after 250 µs
    n.packet(&tcp(300_000, C, S, 100, 0x18, 100), &e); // request
    n.packet(&tcp(301_000, C, S, 100, 0x18, 100), &e); // its retransmission
    n.packet(&tcp(400_000, S, C, 500, 0x18, 1000), &e); // response
    n.packet(&tcp(401_000, S, C, 1500, 0x18, 500), &e);
    n.packet(&tcp(500_000, C, S, 200, 0x11, 0), &e); // FIN
    n.packet(&tcp(510_000, S, C, 2000, 0x11, 0), &e); // FIN back: closed once
    let ms = n.collect(MS);
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", UP), 200);
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", DOWN), 1500);
    assert_eq!(sum(&ms, "cnflow.network.flow.packets", UP), 4);
    assert_eq!(sum(&ms, "cnflow.network.flow.packets", DOWN), 4);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.opened", UP), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.closed", &[("cnflow.tcp.close.reason", "fin")]), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.failed", &[]), 0);
    assert_eq!(sum(&ms, "cnflow.network.tcp.retransmissions", UP), 1);
    let (count, secs) = hist_count(&ms, "cnflow.network.tcp.handshake.duration", UP);
    assert_eq!(count, 1);
    assert!((secs - 0.00025).abs() < 1e-12, "{secs}");
    // Connection counters carry the client as src only.
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.opened", DOWN), 0);
}

#[test]
fn refused_and_unanswered_syns_fail() {
    let mut n = NetworkMetrics::new(cfg(), Temporality::Cumulative);
    let e = NoEnrich;
    // Refused: RST/ACK answers the SYN.
    n.packet(&tcp(0, "10.200.0.1:40001", "10.200.0.2:81", 7, 0x02, 0), &e);
    n.packet(&tcp(MS, "10.200.0.2:81", "10.200.0.1:40001", 0, 0x14, 0), &e);
    // Silent port: SYN and its retransmission 1 s later, then nothing.
    n.packet(&tcp(10 * MS, "10.200.0.1:40002", "10.200.0.2:82", 9, 0x02, 0), &e);
    n.packet(&tcp(1010 * MS, "10.200.0.1:40002", "10.200.0.2:82", 9, 0x02, 0), &e);
    n.expire(2000 * MS);
    let ms = n.collect(2000 * MS);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.failed", &[("error.type", "connection_refused")]), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.failed", &[("error.type", "timeout")]), 0, "not yet");
    n.expire(3010 * MS);
    let ms = n.collect(3010 * MS);
    let timeout = [("error.type", "timeout"), ("server.port", "82")];
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.failed", &timeout), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.retransmissions", &[("server.port", "82")]), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.opened", &[]), 0);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.closed", &[]), 0);
    // End of input fails what is still waiting.
    n.packet(&tcp(4000 * MS, "10.200.0.1:40003", "10.200.0.2:82", 9, 0x02, 0), &e);
    n.finish();
    let ms = n.collect(4000 * MS);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.failed", &timeout), 2);
}

#[test]
fn pairs_and_connections_are_bounded_and_overflow_counted() {
    let c = L4Config { max_pairs: 3, max_conns: 5, ..cfg() };
    let mut n = NetworkMetrics::new(c, Temporality::Delta);
    let e = NoEnrich;
    for i in 0..50u32 {
        let client = format!("10.200.1.{}:{}", i, 40000 + i);
        n.packet(&tcp(u64::from(i), &client, S, 1, 0x02, 0), &e);
        n.packet(&tcp(u64::from(i) + 1, S, &client, 1, 0x12, 0), &e);
        n.packet(&tcp(u64::from(i) + 2, &client, S, 2, 0x18, 10), &e);
        assert!(n.pair_count() <= 3);
        assert!(n.conn_count() <= 5);
    }
    let ms = n.collect(100);
    // Nothing lost: the overflow series holds what the three pairs do not.
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", &[]), 500);
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", &[("otel.metric.overflow", "true")]), 470);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.opened", &[]), 50);
    // Delta: the next interval starts from zero.
    assert!(n.collect(200).is_empty());
}

#[test]
fn workload_attributes_from_the_enricher() {
    struct Pods;
    impl Enricher for Pods {
        fn identity(&self, ip: IpAddr) -> Option<Arc<Identity>> {
            let pod = match ip.to_string().as_str() {
                "10.200.0.1" => "web-1",
                "10.200.0.2" => "db-0",
                _ => return None,
            };
            let mut attributes = vec![
                ("k8s.namespace.name".to_string(), "shop".to_string()),
                ("k8s.pod.name".to_string(), pod.to_string()),
            ];
            if pod == "web-1" {
                attributes.push(("k8s.deployment.name".into(), "web".into()));
            } else {
                attributes.push(("k8s.statefulset.name".into(), "db".into()));
            }
            Some(Arc::new(Identity { attributes }))
        }
    }
    let mut n = NetworkMetrics::new(cfg(), Temporality::Cumulative);
    n.packet(&tcp(0, C, S, 1, 0x18, 10), &Pods); // mid-stream: roles from the port
    let ms = n.collect(1);
    let want = [
        ("k8s.src.namespace", "shop"),
        ("k8s.src.name", "web-1"),
        ("k8s.src.owner.name", "web"),
        ("k8s.src.owner.type", "Deployment"),
        ("k8s.dst.name", "db-0"),
        ("k8s.dst.owner.type", "StatefulSet"),
        ("network.transport", "tcp"),
    ];
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", &want), 10);
}

fn seen(s: &str, failed: bool) -> End {
    End::Seen { service: s.into(), failed }
}

#[test]
fn service_graph_edges_follow_tempo() {
    let mut g = ServiceGraph::new(Temporality::Cumulative, 10);
    // Same node: both ends seen.
    g.record(CallKind::Plain, seen("front", false), seen("cart", false), 2 * MS, 1);
    g.record(CallKind::Plain, seen("front", false), seen("cart", true), 2 * MS, 2);
    // Server with an agent elsewhere: client seconds only here.
    let remote_cart = || End::Remote { name: "cart".into(), has_agent: true };
    g.record(CallKind::Plain, seen("front", false), remote_cart(), 3 * MS, 3);
    // ...and that server's agent counts the request.
    g.record(CallKind::Plain, End::Remote { name: "front".into(), has_agent: true }, seen("cart", false), MS, 4);
    // No agent behind the server: virtual node.
    g.record(CallKind::Plain, seen("front", true), End::Remote { name: "api.example".into(), has_agent: false }, MS, 5);
    // Unknown client: "user".
    g.record(CallKind::Plain, End::Remote { name: "1.2.3.4".into(), has_agent: false }, seen("front", false), MS, 6);
    // Database, counted by the client even when the server is seen too.
    g.record(CallKind::Database, seen("cart", false), End::Remote { name: "redis".into(), has_agent: true }, MS, 7);
    g.record(CallKind::Database, End::Remote { name: "cart".into(), has_agent: true }, seen("redis", false), MS, 8);
    let ms = g.collect(10);
    let edge =
        |c: &'static str, s: &'static str, t: &'static str| [("client", c), ("server", s), ("connection_type", t)];
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &edge("front", "cart", "")), 3);
    assert_eq!(sum(&ms, "traces_service_graph_request_failed_total", &edge("front", "cart", "")), 1);
    assert_eq!(hist_count(&ms, "traces_service_graph_request_client_seconds", &edge("front", "cart", "")).0, 3);
    assert_eq!(hist_count(&ms, "traces_service_graph_request_server_seconds", &edge("front", "cart", "")).0, 3);
    let v = edge("front", "api.example", "virtual_node");
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &v), 1);
    assert_eq!(sum(&ms, "traces_service_graph_request_failed_total", &v), 1);
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &edge("user", "front", "virtual_node")), 1);
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &edge("cart", "redis", "database")), 1);
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &[]), 6);
}

#[test]
fn service_graph_edges_are_capped() {
    let mut g = ServiceGraph::new(Temporality::Cumulative, 2);
    for i in 0..10 {
        g.record(CallKind::Plain, seen("a", false), End::Remote { name: format!("h{i}"), has_agent: false }, MS, i);
    }
    assert_eq!(g.edge_count(), 2);
    let ms = g.collect(20);
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &[("otel.metric.overflow", "true")]), 8);
    assert_eq!(sum(&ms, "traces_service_graph_request_total", &[]), 10);
}

/// Through the sink: off by default (nothing new in the output), on with the
/// variables, on the host resource next to the RED metrics.
#[test]
fn sink_emits_them_only_when_enabled() {
    use crate::telemetry::samples::{http_exchange, redis_exchange, T0};
    use crate::telemetry::{Collected, LocalAddrs, Output, SinkOptions, TelemetryConfig, TelemetrySink};
    let run = |vars: &[(&str, &str)]| {
        let cfg = TelemetryConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let host = Arc::new(Identity { attributes: vec![("service.name".into(), "front".into())] });
        let out = Arc::new(parking_lot::Mutex::new(Collected::default()));
        let mut o = SinkOptions::new(cfg, host);
        o.outputs.push(Output::Collect(out.clone()));
        o.own_metrics = false;
        // Both ends on this host: one same-node edge per exchange.
        o.local_addrs = LocalAddrs::new(["10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()]);
        let mut s = TelemetrySink::new(o);
        s.observe_packet(&tcp(T0, "10.200.0.1:40000", "10.200.0.2:8080", 1, 0x02, 0));
        s.observe_packet(&tcp(T0 + 1000, "10.200.0.2:8080", "10.200.0.1:40000", 1, 0x12, 0));
        s.record(&http_exchange(Direction::Egress, "GET", "/", 500, T0));
        s.record(&redis_exchange(Direction::Egress, None, T0));
        s.finish(T0 + 10 * MS);
        let c = out.lock();
        c.metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| s.metrics.clone())
            .collect::<Vec<_>>()
    };
    let off = run(&[]);
    assert!(off.iter().any(|m| m.name == "http.server.request.duration"));
    assert!(!off.iter().any(|m| m.name.starts_with("cnflow.network.") || m.name.starts_with("traces_service_graph")));
    let on = run(&[("CNFLOW_NETWORK_METRICS", "true"), ("CNFLOW_SERVICE_GRAPH_METRICS", "true")]);
    assert_eq!(sum(&on, "cnflow.network.tcp.connections.opened", &[("server.port", "8080")]), 1);
    let http = [("client", "front"), ("server", "front"), ("connection_type", "")];
    assert_eq!(sum(&on, "traces_service_graph_request_total", &http), 1);
    assert_eq!(sum(&on, "traces_service_graph_request_failed_total", &http), 1, "HTTP 500 is a server error");
    assert_eq!(hist_count(&on, "traces_service_graph_request_server_seconds", &http).0, 1);
    let db = [("client", "front"), ("connection_type", "database")];
    assert_eq!(sum(&on, "traces_service_graph_request_total", &db), 1);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn arb_packet() -> impl Strategy<Value = PacketEvent> {
        (0u8..4, 0u8..4, 0u64..10_000_000_000, any::<u32>(), any::<u8>(), 0u32..3000, 0u8..3).prop_map(
            |(a, b, ts, seq, flags, len, kind)| {
                let host = |x: u8| format!("10.200.0.{}", x % 3).parse().unwrap();
                let l4 = match kind {
                    0 | 1 => L4::Tcp { seq, ack: 0, flags: flags & 0x3F },
                    _ => L4::Udp,
                };
                PacketEvent {
                    ts_ns: ts,
                    ifindex: 1,
                    direction: Direction::Ingress,
                    src: host(a),
                    dst: host(b),
                    src_port: [80, 6379, 40000, 53][a as usize % 4],
                    dst_port: [80, 6379, 40000, 53][b as usize % 4],
                    l4,
                    payload_len: len,
                    payload: bytes::Bytes::new(),
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Arbitrary packets in any order: no panic, bounded state, and the
        /// byte totals equal what went in (nothing lost to the caps).
        #[test]
        fn arbitrary_packets_never_panic_and_stay_bounded(pkts in proptest::collection::vec(arb_packet(), 1..300)) {
            let c = L4Config { max_pairs: 2, max_conns: 3, syn_timeout_ns: 1_000_000_000, idle_timeout_ns: 5_000_000_000 };
            let mut n = NetworkMetrics::new(c, Temporality::Cumulative);
            for (i, ev) in pkts.iter().enumerate() {
                n.packet(ev, &NoEnrich);
                prop_assert!(n.pair_count() <= 2);
                prop_assert!(n.conn_count() <= 3);
                if i % 50 == 0 {
                    n.expire(ev.ts_ns);
                }
            }
            n.finish();
            let ms = n.collect(u64::MAX / 2);
            let total: i64 = pkts.iter().map(|p| i64::from(p.payload_len)).sum();
            prop_assert_eq!(sum(&ms, "cnflow.network.flow.bytes", &[]), total);
            prop_assert_eq!(sum(&ms, "cnflow.network.flow.packets", &[]), pkts.len() as i64);
        }
    }
}

#[test]
fn a_connection_seen_on_two_interfaces_counts_once() {
    let mut n = NetworkMetrics::new(cfg(), Temporality::Cumulative);
    for ifindex in [3, 4] {
        let mut syn = tcp(0, C, S, 99, 0x02, 0);
        let mut synack = tcp(1000, S, C, 499, 0x12, 0);
        let mut data = tcp(2000, C, S, 100, 0x18, 10);
        for p in [&mut syn, &mut synack, &mut data] {
            p.ifindex = ifindex;
            n.packet(p, &NoEnrich);
        }
    }
    let ms = n.collect(MS);
    assert_eq!(sum(&ms, "cnflow.network.flow.bytes", UP), 10);
    assert_eq!(sum(&ms, "cnflow.network.flow.packets", &[]), 3);
    assert_eq!(sum(&ms, "cnflow.network.tcp.connections.opened", &[]), 1);
    assert_eq!(sum(&ms, "cnflow.network.tcp.retransmissions", &[]), 0);
}

/// CNFLOW_SERVICE_GRAPH_METRICS=gateway: an exchange seen at one end with a
/// wire key is left to the gateway (its spans carry the mark naming the
/// peer); pairs seen at both ends, database calls and keyless exchanges are
/// still counted here.
#[test]
fn gateway_mode_leaves_one_sided_keyed_exchanges_to_the_gateway() {
    use crate::telemetry::samples::{http_exchange, redis_exchange, T0};
    use crate::telemetry::{Collected, LocalAddrs, Output, SinkOptions, TelemetryConfig, TelemetrySink};
    let run_sampled = |mode: &str, local: &[&str], keyed: bool, sampler: &str| {
        let vars = [("CNFLOW_SERVICE_GRAPH_METRICS".to_string(), mode.to_string())];
        let cfg = TelemetryConfig::from_vars(vars).unwrap();
        let host = Arc::new(Identity { attributes: vec![("service.name".into(), "front".into())] });
        let out = Arc::new(parking_lot::Mutex::new(Collected::default()));
        let mut o = SinkOptions::new(cfg, host);
        o.outputs.push(Output::Collect(out.clone()));
        o.own_metrics = false;
        o.local_addrs = LocalAddrs::new(local.iter().map(|a| a.parse().unwrap()));
        o.sampling =
            crate::telemetry::sampling::Policy::from_vars([("OTEL_TRACES_SAMPLER".to_string(), sampler.to_string())])
                .unwrap();
        let mut s = TelemetrySink::new(o);
        let mut http = http_exchange(Direction::Egress, "GET", "/", 200, T0);
        let mut redis = redis_exchange(Direction::Egress, None, T0);
        if keyed {
            http.wire.request_seq = Some(1000);
            http.wire.response_seq = Some(2000);
            redis.wire.request_seq = Some(3000);
            redis.wire.response_seq = Some(4000);
        }
        s.record(&http);
        s.record(&redis);
        s.finish(T0 + 10 * MS);
        let c = out.lock();
        let metrics: Vec<Metric> = c
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| s.metrics.clone())
            .collect();
        let marks: Vec<(String, String)> = c
            .spans()
            .flat_map(|s| s.attributes.iter().map(move |kv| (s.name.clone(), kv)))
            .filter(|(_, kv)| kv.key == super::graph::GATEWAY_PEER_ATTR)
            .map(|(n, kv)| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(v)) => (n, v.clone()),
                _ => (n, String::new()),
            })
            .collect();
        let graph_only =
            c.spans().filter(|s| s.attributes.iter().any(|kv| kv.key == super::graph::GRAPH_ONLY_ATTR)).count();
        (metrics, marks, graph_only)
    };
    let run = |mode: &str, local: &[&str], keyed: bool| {
        let (ms, marks, graph_only) = run_sampled(mode, local, keyed, "always_on");
        assert_eq!(graph_only, 0);
        (ms, marks)
    };
    let total = "traces_service_graph_request_total";
    let http = [("client", "front"), ("connection_type", "virtual_node"), ("server", "10.200.0.2")];
    let db = [("client", "front"), ("connection_type", "database")];
    // Client end only, keyed: the HTTP call goes to the gateway, the database call stays.
    let (ms, marks) = run("gateway", &["10.200.0.1"], true);
    assert_eq!(sum(&ms, total, &http), 0);
    assert_eq!(sum(&ms, total, &db), 1);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(marks[0].0.starts_with("GET"), "{marks:?}");
    assert!(!marks[0].1.is_empty(), "the peer's name: {marks:?}");
    // Server end only: both go to the gateway (a database call's edge is
    // the client agent's; the gateway counts its SERVER half only unpaired).
    let (ms, marks) = run("gateway", &["10.200.0.2", "10.200.0.6"], true);
    assert!(!ms.iter().any(|m| m.name.starts_with("traces_service_graph")), "{ms:?}");
    assert_eq!(marks.len(), 2, "{marks:?}");
    // The same in `true` mode: counted here (a virtual node: no agent known there), no mark.
    let (ms, marks) = run("true", &["10.200.0.1"], true);
    assert_eq!(sum(&ms, total, &http), 1);
    assert!(marks.is_empty());
    // Keyless: the gateway could not pair it, counted here.
    let (ms, marks) = run("gateway", &["10.200.0.1"], false);
    assert_eq!(sum(&ms, total, &http), 1);
    assert!(marks.is_empty());
    // Both ends here: a same-node pair, counted here.
    let (ms, marks) = run("gateway", &["10.200.0.1", "10.200.0.2"], true);
    assert_eq!(sum(&ms, total, &[("client", "front"), ("server", "front"), ("connection_type", "")]), 1);
    assert!(marks.is_empty());
    // Sampled out (always_off): an exchange the gateway counts still goes to
    // it, marked graph-only; one counted here does not leave at all.
    let (ms, marks, graph_only) = run_sampled("gateway", &["10.200.0.1"], true, "always_off");
    assert_eq!(sum(&ms, total, &db), 1, "the agent's own edges count sampled-out exchanges");
    // Both go: the HTTP span for its edge (marked with the peer), the
    // database call's CLIENT span (counted here, unmarked) so the gateway
    // pairs the call's SERVER half instead of counting it from `user`.
    assert_eq!((marks.len(), graph_only), (1, 2), "{marks:?}");
    let (_, marks, graph_only) = run_sampled("true", &["10.200.0.1"], true, "always_off");
    assert_eq!((marks.len(), graph_only), (0, 0));
}
