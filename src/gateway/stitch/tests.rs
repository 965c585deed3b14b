use super::*;
use crate::exchange::wire_attr;
use opentelemetry_proto::tonic::common::v1::AnyValue;

const CLIENT: i32 = SpanKind::Client as i32;
const SERVER: i32 = SpanKind::Server as i32;
const INTERNAL: i32 = SpanKind::Internal as i32;

fn cfg(window_ms: u64, max_entries: usize) -> StitchConfig {
    StitchConfig { window: Duration::from_millis(window_ms), max_entries, keep_keys: false, service_graph_edges: 0 }
}

fn int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        ..Default::default()
    }
}

fn span(kind: i32, trace: u8, id: u8, seq: Option<(i64, i64)>) -> Span {
    let mut attributes = vec![int("server.port", 80)];
    if let Some((rq, rs)) = seq {
        attributes.push(int(wire_attr::TCP_REQUEST_SEQ, rq));
        attributes.push(int(wire_attr::TCP_RESPONSE_SEQ, rs));
    }
    Span { trace_id: vec![trace; 16], span_id: vec![id; 8], kind, attributes, ..Default::default() }
}

fn request(node: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "host.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(node.into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

fn spans(r: &ExportTraceServiceRequest) -> Vec<&Span> {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect()
}

fn find(r: &ExportTraceServiceRequest, id: u8) -> &Span {
    spans(r).into_iter().find(|s| s.span_id == vec![id; 8]).expect("span present")
}

#[test]
fn client_first_then_server_moves_into_the_clients_trace() {
    let st = Stitcher::new(cfg(1000, 100));
    let mut a = request("node-a", vec![span(CLIENT, 1, 10, Some((7, 9)))]);
    st.ingest_at(&mut a, 0);
    assert_eq!(spans(&a).len(), 1, "a CLIENT half passes at once");
    assert!(!has_key(find(&a, 10)), "keys stripped");
    // The server's agent: its SERVER span and a span it parented under it.
    let mut child = span(INTERNAL, 2, 21, None);
    child.parent_span_id = vec![20; 8];
    let mut b = request("node-b", vec![span(SERVER, 2, 20, Some((7, 9))), child, span(SERVER, 3, 30, None)]);
    st.ingest_at(&mut b, 5);
    let s = find(&b, 20);
    assert_eq!((s.trace_id.clone(), s.parent_span_id.clone()), (vec![1; 16], vec![10; 8]));
    assert_eq!(find(&b, 21).trace_id, vec![1; 16], "its child follows");
    assert_eq!(find(&b, 21).parent_span_id, vec![20; 8]);
    assert_eq!(find(&b, 30).trace_id, vec![3; 16], "other traces untouched");
    assert!(st.is_empty());
}

#[test]
fn server_first_waits_for_its_client_inside_the_window() {
    let st = Stitcher::new(cfg(1000, 100));
    let mut child = span(INTERNAL, 2, 21, None);
    child.parent_span_id = vec![20; 8];
    let mut b = request("node-b", vec![span(SERVER, 2, 20, Some((7, 9))), child, span(INTERNAL, 4, 40, None)]);
    st.ingest_at(&mut b, 0);
    assert_eq!(spans(&b).len(), 1, "the SERVER half and its trace wait");
    assert!(st.expire_at(999).resource_spans.is_empty(), "still inside the window");
    // The CLIENT half comes late (its node's clock is irrelevant).
    let mut a = request("node-a", vec![span(CLIENT, 1, 10, Some((7, 9)))]);
    st.ingest_at(&mut a, 998);
    assert_eq!(spans(&a).len(), 3);
    assert_eq!(find(&a, 20).trace_id, vec![1; 16]);
    assert_eq!(find(&a, 20).parent_span_id, vec![10; 8]);
    assert_eq!(find(&a, 21).trace_id, vec![1; 16]);
    // The released spans keep their own resource.
    let hosts: Vec<_> = a.resource_spans.iter().map(|rs| format!("{:?}", rs.resource)).collect();
    assert!(hosts[1].contains("node-b") && hosts[0].contains("node-a"));
    assert!(st.is_empty());
}

#[test]
fn a_half_that_never_comes_is_exported_unjoined_after_the_window() {
    let st = Stitcher::new(cfg(1000, 100));
    let before = UNMATCHED.get();
    let mut b = request("node-b", vec![span(SERVER, 2, 20, Some((7, 9)))]);
    st.ingest_at(&mut b, 0);
    let mut a = request("node-a", vec![span(CLIENT, 1, 10, Some((8, 9)))]);
    st.ingest_at(&mut a, 10);
    let out = st.expire_at(1000);
    assert_eq!(spans(&out).len(), 1);
    assert_eq!(find(&out, 20).trace_id, vec![2; 16], "unjoined");
    assert!(!has_key(find(&out, 20)));
    assert!(st.expire_at(1010).resource_spans.is_empty());
    assert!(st.is_empty());
    assert!(UNMATCHED.get() >= before + 2);
    // Too late: the CLIENT is remembered again but nothing joins.
    let mut a = request("node-a", vec![span(CLIENT, 1, 11, Some((7, 9)))]);
    st.ingest_at(&mut a, 2000);
    assert_eq!(st.len(), 1);
}

#[test]
fn pair_inside_one_request_in_either_order_and_already_connected_pairs() {
    let st = Stitcher::new(cfg(1000, 100));
    let mut r = request("node-a", vec![span(SERVER, 2, 20, Some((1, 2))), span(CLIENT, 1, 10, Some((1, 2)))]);
    st.ingest_at(&mut r, 0);
    assert_eq!(spans(&r).len(), 2);
    assert_eq!(find(&r, 20).parent_span_id, vec![10; 8]);
    // Propagated traceparent: both in trace 5 already; nothing rewritten.
    let mut c = span(CLIENT, 5, 50, Some((3, 4)));
    c.parent_span_id = vec![49; 8];
    let mut s = span(SERVER, 5, 51, Some((3, 4)));
    s.parent_span_id = vec![50; 8];
    let shared = SHARED.get();
    let mut r = request("node-a", vec![c.clone()]);
    st.ingest_at(&mut r, 0);
    let mut r = request("node-b", vec![s.clone()]);
    st.ingest_at(&mut r, 1);
    assert_eq!(find(&r, 51).parent_span_id, vec![50; 8]);
    assert_eq!(find(&r, 51).flags, 0);
    assert!(SHARED.get() > shared);
    assert!(st.is_empty());
}

#[test]
fn memory_is_bounded_and_evicted_servers_are_exported() {
    let st = Stitcher::new(cfg(60_000, 3));
    let before = EVICTED.get();
    let mut out = 0;
    for i in 0..10u8 {
        let mut r = request("node-b", vec![span(SERVER, i, i, Some((i64::from(i), 0)))]);
        st.ingest_at(&mut r, u64::from(i));
        out += spans(&r).len();
        assert!(st.len() <= 3);
    }
    assert_eq!(out, 7, "the 7 oldest were pushed out, unjoined");
    assert!(EVICTED.get() >= before + 7);
    assert_eq!(spans(&st.drain()).len(), 3);
}

#[test]
fn keyless_requests_are_untouched_and_keys_can_be_kept() {
    let st = Stitcher::new(StitchConfig { keep_keys: true, ..cfg(1000, 100) });
    let plain = request("node-a", vec![span(SERVER, 1, 1, None), span(CLIENT, 2, 2, None)]);
    assert!(!request_has_keys(&plain));
    let mut r = plain.clone();
    st.ingest(&mut r);
    assert_eq!(r, plain);
    let mut r = request("node-a", vec![span(CLIENT, 1, 10, Some((7, 9)))]);
    st.ingest_at(&mut r, 0);
    assert!(has_key(find(&r, 10)));
}

#[test]
fn udp_halves_join_on_transaction_id_and_client_port() {
    let st = Stitcher::new(cfg(1000, 100));
    let udp = |kind, trace, id, port| {
        let mut s = span(kind, trace, id, None);
        s.attributes.push(int(wire_attr::UDP_TXN_ID, 0x1234));
        s.attributes.push(int(wire_attr::UDP_CLIENT_PORT, port));
        s
    };
    let mut a = request("node-a", vec![udp(CLIENT, 1, 10, 5353)]);
    st.ingest_at(&mut a, 0);
    // Another client port (a different lookup with the same id) does not join.
    let mut b = request("node-b", vec![udp(SERVER, 2, 20, 5354), udp(SERVER, 3, 30, 5353)]);
    st.ingest_at(&mut b, 1);
    assert_eq!(spans(&b).len(), 1);
    assert_eq!(find(&b, 30).parent_span_id, vec![10; 8]);
    assert_eq!(st.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_expiry_task_releases_unmatched_halves() {
    let st = Stitcher::new(cfg(100, 100));
    let mut b = request("node-b", vec![span(SERVER, 2, 20, Some((7, 9)))]);
    st.ingest(&mut b);
    assert!(spans(&b).is_empty());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let task = tokio::spawn(st.clone().run_expiry(move |r| g.lock().push(r)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    assert_eq!(got.lock().iter().map(|r| spans(r).len()).sum::<usize>(), 1);
}

/// Cost figures (release: `cargo test --release --lib gateway::stitch::tests::cost -- --ignored --nocapture`).
#[test]
#[ignore]
fn cost_of_the_hook_for_keyless_and_keyed_spans() {
    let st = Stitcher::new(cfg(60_000, 1 << 20));
    let keyless: Vec<ExportTraceServiceRequest> = (0..1000u32)
        .map(|r| request("n", (0..100).map(|i| span(SERVER, (r % 250) as u8, i as u8, None)).collect()))
        .collect();
    let t = std::time::Instant::now();
    for mut r in keyless {
        st.ingest(&mut r);
        assert_eq!(spans(&r).len(), 100);
    }
    let per = t.elapsed().as_nanos() as f64 / 100_000.0;
    eprintln!("FIGURE: keyless span through the stitch hook: {per:.1} ns");
    let mut client = Vec::new();
    let mut server = Vec::new();
    for r in 0..500i64 {
        let c: Vec<Span> = (0..100).map(|i| span(CLIENT, 1, 1, Some((r * 100 + i, 1)))).collect();
        let s: Vec<Span> = (0..100).map(|i| span(SERVER, 2, 2, Some((r * 100 + i, 1)))).collect();
        client.push(request("a", c));
        server.push(request("b", s));
    }
    let t = std::time::Instant::now();
    for (mut c, mut s) in client.into_iter().zip(server) {
        st.ingest_at(&mut s, 0);
        st.ingest_at(&mut c, 1);
    }
    let per = t.elapsed().as_nanos() as f64 / 100_000.0;
    eprintln!("FIGURE: keyed span (half of a pair, server first, held then joined): {per:.1} ns");
    assert!(st.is_empty());
}

proptest::proptest! {
    /// Any arrival order, duplicates, collisions and expiries: no span is
    /// lost or duplicated, and memory stays within the bound.
    #[test]
    fn spans_are_conserved_and_memory_bounded(
        events in proptest::collection::vec((0u8..4, 0u8..6, 0u8..4, 0u64..3), 0..80),
    ) {
        let st = Stitcher::new(cfg(5, 4));
        let (mut sent, mut out, mut now) = (0usize, 0usize, 0u64);
        for (i, (what, key, trace, dt)) in events.into_iter().enumerate() {
            now += dt;
            let id = i as u8;
            let mut r = match what {
                0 => request("a", vec![span(CLIENT, trace, id, Some((i64::from(key), 1)))]),
                1 => request("b", vec![span(SERVER, trace + 10, id, Some((i64::from(key), 1))), span(INTERNAL, trace + 10, id.wrapping_add(100), None)]),
                2 => request("b", vec![span(SERVER, trace, id, None)]),
                _ => {
                    out += spans(&st.expire_at(now)).len();
                    continue;
                }
            };
            sent += spans(&r).len();
            st.ingest_at(&mut r, now);
            out += spans(&r).len();
            proptest::prop_assert!(st.len() <= 4);
        }
        out += spans(&st.drain()).len();
        proptest::prop_assert_eq!(sent, out);
        proptest::prop_assert!(st.is_empty());
    }
}

// Service graph (CNFLOW_GATEWAY_SERVICE_GRAPH).

fn graph_cfg() -> StitchConfig {
    StitchConfig { service_graph_edges: 100, ..cfg(1000, 100) }
}

fn str_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// A keyed half as an agent in gateway mode exports it: `peer` is the mark
/// (None: an agent counting the edge itself), `ms` its duration.
fn graph_span(kind: i32, id: u8, seq: i64, peer: Option<&str>, ms: u64, error: bool) -> Span {
    let mut s = span(kind, id, id, Some((seq, 1)));
    if let Some(p) = peer {
        s.attributes.push(str_kv(graph::GATEWAY_PEER_ATTR, p));
    }
    s.start_time_unix_nano = 1_000_000_000;
    s.end_time_unix_nano = 1_000_000_000 + ms * 1_000_000;
    if error {
        s.status = Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, ..Default::default() });
    }
    s
}

fn service_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut r = request("node", spans);
    r.resource_spans[0].resource.as_mut().unwrap().attributes.push(str_kv("service.name", service));
    r
}

type Metrics = Vec<opentelemetry_proto::tonic::metrics::v1::Metric>;

fn edge_attrs(dp: &[KeyValue]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = dp
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn key(client: &str, server: &str, ct: &str) -> Vec<(String, String)> {
    vec![("client".into(), client.into()), ("connection_type".into(), ct.into()), ("server".into(), server.into())]
}

/// Counter value of one edge (0 when absent).
fn counter(ms: &Metrics, name: &str, edge: &[(String, String)]) -> i64 {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    ms.iter()
        .filter(|m| m.name == name)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => Some(&s.data_points),
            _ => None,
        })
        .flatten()
        .filter(|dp| edge_attrs(&dp.attributes) == edge)
        .map(|dp| match dp.value {
            Some(Value::AsInt(v)) => v,
            _ => 0,
        })
        .sum()
}

/// Series (data points) of a counter.
fn points(ms: &Metrics, name: &str) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    ms.iter()
        .filter(|m| m.name == name)
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.len(),
            _ => 0,
        })
        .sum()
}

/// (count, sum in seconds) of one edge's histogram.
fn hist(ms: &Metrics, name: &str, edge: &[(String, String)]) -> (u64, f64) {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    ms.iter()
        .filter(|m| m.name == name)
        .filter_map(|m| match &m.data {
            Some(Data::Histogram(h)) => Some(&h.data_points),
            _ => None,
        })
        .flatten()
        .filter(|dp| edge_attrs(&dp.attributes) == edge)
        .fold((0, 0.0), |(c, s), dp| (c + dp.count, s + dp.sum.unwrap_or(0.0)))
}

const TOTAL: &str = "traces_service_graph_request_total";
const FAILED: &str = "traces_service_graph_request_failed_total";
const CLIENT_S: &str = "traces_service_graph_request_client_seconds";
const SERVER_S: &str = "traces_service_graph_request_server_seconds";

#[test]
fn a_joined_pair_is_one_edge_with_both_durations() {
    let st = Stitcher::new(graph_cfg());
    // Server half first (held), then its client: one edge, whatever the order.
    let mut b = service_request("cart", vec![graph_span(SERVER, 20, 7, Some("front"), 30, false)]);
    st.ingest_at(&mut b, 0);
    let mut a = service_request("front", vec![graph_span(CLIENT, 10, 7, Some("cart-svc"), 50, false)]);
    st.ingest_at(&mut a, 1);
    // And client first.
    let mut a = service_request("front", vec![graph_span(CLIENT, 11, 8, Some("cart-svc"), 50, false)]);
    st.ingest_at(&mut a, 2);
    let mut b = service_request("cart", vec![graph_span(SERVER, 21, 8, Some("front"), 30, false)]);
    st.ingest_at(&mut b, 3);
    assert!(spans(&a).iter().chain(spans(&b).iter()).all(|s| !has_key(s)), "the mark is stripped with the keys");
    let ms = st.service_graph_metrics();
    let e = key("front", "cart", "");
    assert_eq!(counter(&ms, TOTAL, &e), 2);
    assert_eq!(counter(&ms, FAILED, &e), 0);
    let (n, sum) = hist(&ms, CLIENT_S, &e);
    assert_eq!(n, 2);
    assert!((sum - 0.100).abs() < 1e-9, "client seconds from the CLIENT spans: {sum}");
    let (n, sum) = hist(&ms, SERVER_S, &e);
    assert_eq!(n, 2);
    assert!((sum - 0.060).abs() < 1e-9, "server seconds from the SERVER spans: {sum}");
    assert_eq!(ms.iter().filter(|m| m.name == TOTAL).count(), 1);
    assert_eq!(points(&ms, TOTAL), 1, "no other edge");
    // Cumulative: the next collection repeats the totals.
    assert_eq!(counter(&st.service_graph_metrics(), TOTAL, &e), 2);
}

#[test]
fn an_unjoined_client_half_is_an_edge_to_a_virtual_node() {
    let st = Stitcher::new(graph_cfg());
    let mut a = service_request("front", vec![graph_span(CLIENT, 10, 7, Some("api.example.com"), 40, true)]);
    st.ingest_at(&mut a, 0);
    assert_eq!(counter(&st.service_graph_metrics(), TOTAL, &[]), 0, "counted when the window ends");
    let _ = st.expire_at(1000);
    let ms = st.service_graph_metrics();
    let e = key("front", "api.example.com", "virtual_node");
    assert_eq!(counter(&ms, TOTAL, &e), 1);
    assert_eq!(counter(&ms, FAILED, &e), 1);
    assert_eq!(hist(&ms, CLIENT_S, &e).0, 1);
    assert_eq!(hist(&ms, SERVER_S, &e).0, 0, "no server seconds without a SERVER span");
}

#[test]
fn an_unjoined_server_half_is_an_edge_from_user() {
    let st = Stitcher::new(graph_cfg());
    let mut b = service_request("cart", vec![graph_span(SERVER, 20, 7, Some("10.200.0.9"), 30, false)]);
    st.ingest_at(&mut b, 0);
    let out = st.expire_at(1000);
    assert_eq!(spans(&out).len(), 1, "exported unjoined");
    let ms = st.service_graph_metrics();
    let e = key("user", "cart", "virtual_node");
    assert_eq!(counter(&ms, TOTAL, &e), 1);
    assert_eq!(hist(&ms, SERVER_S, &e).0, 1);
    assert_eq!(hist(&ms, CLIENT_S, &e).0, 0);
    // Evicted halves leave unjoined too: counted the same way.
    let st = Stitcher::new(StitchConfig { service_graph_edges: 100, ..cfg(1000, 1) });
    let mut b = service_request("cart", vec![graph_span(SERVER, 20, 7, Some("x"), 30, false)]);
    st.ingest_at(&mut b, 0);
    let mut b = service_request("cart", vec![graph_span(SERVER, 21, 8, Some("x"), 30, false)]);
    st.ingest_at(&mut b, 1);
    assert_eq!(counter(&st.service_graph_metrics(), TOTAL, &e), 1);
}

#[test]
fn database_pairs_and_failures_on_either_side() {
    let st = Stitcher::new(graph_cfg());
    let mut c = graph_span(CLIENT, 10, 7, Some("redis"), 2, false);
    c.attributes.push(str_kv("db.system.name", "redis"));
    let mut a = service_request("cart", vec![c]);
    st.ingest_at(&mut a, 0);
    let mut b = service_request("redis", vec![graph_span(SERVER, 20, 7, Some("cart"), 1, true)]);
    st.ingest_at(&mut b, 1);
    // Plain pairs: failed client, failed server, both fine.
    for (i, (cf, sf)) in [(true, false), (false, true), (false, false)].into_iter().enumerate() {
        let seq = 100 + i as i64;
        let mut a = service_request("front", vec![graph_span(CLIENT, 30 + i as u8, seq, Some("cart"), 5, cf)]);
        st.ingest_at(&mut a, 2);
        let mut b = service_request("cart", vec![graph_span(SERVER, 40 + i as u8, seq, Some("front"), 4, sf)]);
        st.ingest_at(&mut b, 3);
    }
    // As agents in gateway mode send them: the CLIENT half unmarked (its
    // agent counted the database edge), the SERVER half marked.
    let mut c = graph_span(CLIENT, 50, 200, None, 2, false);
    c.attributes.push(str_kv("db.system.name", "redis"));
    let mut a = service_request("cart", vec![c]);
    st.ingest_at(&mut a, 4);
    let mut b = service_request("redis", vec![graph_span(SERVER, 60, 200, Some("cart"), 1, false)]);
    st.ingest_at(&mut b, 5);
    // Its SERVER half alone (a client without an agent): from `user`.
    let mut b = service_request("redis", vec![graph_span(SERVER, 61, 201, Some("10.200.0.9"), 1, false)]);
    st.ingest_at(&mut b, 6);
    let _ = st.expire_at(5000);
    let ms = st.service_graph_metrics();
    let db = key("cart", "redis", "database");
    assert_eq!((counter(&ms, TOTAL, &db), counter(&ms, FAILED, &db)), (1, 1), "only the pair with a marked CLIENT");
    assert_eq!(counter(&ms, TOTAL, &key("user", "redis", "virtual_node")), 1);
    let e = key("front", "cart", "");
    assert_eq!((counter(&ms, TOTAL, &e), counter(&ms, FAILED, &e)), (3, 2));
}

#[test]
fn pairs_the_agents_counted_are_not_counted_again() {
    // No mark: agents counting every edge themselves (CNFLOW_SERVICE_GRAPH_METRICS=true),
    // or a pair one agent saw both ends of.
    let st = Stitcher::new(graph_cfg());
    let mut a = service_request("front", vec![graph_span(CLIENT, 10, 7, None, 5, false)]);
    st.ingest_at(&mut a, 0);
    let mut b = service_request("cart", vec![graph_span(SERVER, 20, 7, None, 4, false)]);
    st.ingest_at(&mut b, 1);
    let mut a = service_request("front", vec![graph_span(CLIENT, 11, 8, None, 5, false)]);
    st.ingest_at(&mut a, 2);
    let _ = st.expire_at(5000);
    assert!(st.service_graph_metrics().is_empty());
    // Service graph off: nothing either, marks or not.
    let st = Stitcher::new(cfg(1000, 100));
    let mut a = service_request("front", vec![graph_span(CLIENT, 10, 7, Some("cart"), 5, false)]);
    st.ingest_at(&mut a, 0);
    let _ = st.expire_at(5000);
    assert!(st.service_graph_metrics().is_empty());
}

#[test]
fn service_graph_edges_are_bounded() {
    let st = Stitcher::new(StitchConfig { service_graph_edges: 3, ..cfg(1000, 1000) });
    for i in 0..20u8 {
        let svc = format!("client-{i}");
        let mut a = service_request(&svc, vec![graph_span(CLIENT, i, i64::from(i), Some("x"), 1, false)]);
        st.ingest_at(&mut a, 0);
        let mut b = service_request("cart", vec![graph_span(SERVER, 100 + i, i64::from(i), Some(&svc), 1, false)]);
        st.ingest_at(&mut b, 0);
    }
    let ms = st.service_graph_metrics();
    let overflow = vec![];
    assert_eq!(counter(&ms, TOTAL, &overflow), 17, "the overflow series (its only attribute is a bool)");
    assert_eq!(points(&ms, TOTAL), 4, "3 edges and the overflow series");
}

/// Spans sampled out by the agents but sent for the service graph
/// (`cnflow.graph.only`): counted exactly like kept ones, joined or not, and
/// never exported.
#[test]
fn graph_only_halves_are_counted_and_dropped() {
    let only = |mut s: Span| {
        s.attributes.push(KeyValue {
            key: graph::GRAPH_ONLY_ATTR.into(),
            value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
            ..Default::default()
        });
        s
    };
    let st = Stitcher::new(graph_cfg());
    // A joined pair, server half first (held, then released and dropped).
    let mut b = service_request("cart", vec![only(graph_span(SERVER, 20, 7, Some("front"), 30, false))]);
    st.ingest_at(&mut b, 0);
    let mut a = service_request("front", vec![only(graph_span(CLIENT, 10, 7, Some("cart-svc"), 50, false))]);
    st.ingest_at(&mut a, 1);
    assert!(spans(&a).is_empty() && spans(&b).is_empty(), "nothing of a graph-only pair is exported");
    // A kept pair beside it passes as before.
    let mut c = service_request("front", vec![graph_span(CLIENT, 11, 8, Some("cart-svc"), 50, false)]);
    st.ingest_at(&mut c, 2);
    let mut d = service_request("cart", vec![graph_span(SERVER, 21, 8, Some("front"), 30, false)]);
    st.ingest_at(&mut d, 3);
    assert_eq!(spans(&c).len() + spans(&d).len(), 2);
    // A graph-only SERVER half whose CLIENT never comes: a `user` edge, not exported.
    let mut e = service_request("cart", vec![only(graph_span(SERVER, 22, 9, Some("10.200.0.9"), 30, false))]);
    st.ingest_at(&mut e, 4);
    assert!(spans(&st.expire_at(2000)).is_empty());
    let ms = st.service_graph_metrics();
    assert_eq!(counter(&ms, TOTAL, &key("front", "cart", "")), 2, "the graph-only pair and the kept one");
    assert_eq!(hist(&ms, SERVER_S, &key("front", "cart", "")).0, 2);
    assert_eq!(counter(&ms, TOTAL, &key("user", "cart", "virtual_node")), 1);
}
