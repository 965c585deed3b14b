use super::*;
use crate::exchange::wire_attr;
use opentelemetry_proto::tonic::common::v1::AnyValue;

const CLIENT: i32 = SpanKind::Client as i32;
const SERVER: i32 = SpanKind::Server as i32;
const INTERNAL: i32 = SpanKind::Internal as i32;

fn cfg(window_ms: u64, max_entries: usize) -> StitchConfig {
    StitchConfig { window: Duration::from_millis(window_ms), max_entries, keep_keys: false }
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
