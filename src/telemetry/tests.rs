use super::samples::*;
use super::*;
use crate::capture::Direction::{Egress, Ingress};
use opentelemetry_proto::tonic::metrics::v1::metric;

fn host() -> Arc<Identity> {
    Arc::new(Identity {
        attributes: vec![("service.name".into(), "unknown_service:cnflow".into()), ("host.name".into(), "test".into())],
    })
}

fn sink(cfg: TelemetryConfig, local: LocalAddrs) -> (TelemetrySink, Arc<Mutex<Collected>>) {
    let out = Arc::new(Mutex::new(Collected::default()));
    let mut o = SinkOptions::new(cfg, host());
    o.outputs.push(Output::Collect(out.clone()));
    o.ids = IdGen::Seeded(1);
    o.local_addrs = local;
    o.own_metrics = false;
    (TelemetrySink::new(o), out)
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_to_string(format: Format) -> String {
    let buf = Buf::default();
    let mut o = SinkOptions::new(TelemetryConfig::default(), host());
    o.outputs.push(Output::Write(format, Box::new(buf.clone())));
    o.ids = IdGen::Seeded(42);
    o.own_metrics = false;
    let mut s = TelemetrySink::new(o);
    for ex in one_of_each(T0) {
        s.record(&ex);
        s.flush(ex.end_ns);
    }
    s.finish(T0 + 1_000_000_000);
    let v = buf.0.lock().clone();
    String::from_utf8(v).unwrap()
}

#[test]
fn traceparent_is_adopted() {
    let (mut s, out) = sink(TelemetryConfig::default(), LocalAddrs::default());
    let mut ex = http_exchange(Ingress, "GET", "/a", 200, T0);
    if let crate::exchange::Detail::Http(h) = &mut ex.detail {
        h.trace_headers = vec![
            ("traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ("tracestate".into(), "vendor=x".into()),
        ];
    }
    s.record(&ex);
    s.finish(T0 + 10);
    let c = out.lock();
    let spans: Vec<_> = c.spans().collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(hex::encode(&spans[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(&spans[0].parent_span_id), "00f067aa0ba902b7");
    assert_eq!(spans[0].trace_state, "vendor=x");
    assert_eq!(spans[0].kind, 2);
    assert_eq!(spans[0].flags & 0x300, 0x300);
}

#[test]
fn both_sides_local_give_client_parent_of_server() {
    let local = LocalAddrs::new(["10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()]);
    let (mut s, out) = sink(TelemetryConfig::default(), local);
    s.record(&http_exchange(Egress, "GET", "/a", 200, T0));
    s.finish(T0 + 10);
    let c = out.lock();
    let spans: Vec<_> = c.spans().collect();
    assert_eq!(spans.len(), 2);
    let (client, server) = (spans[0], spans[1]);
    assert_eq!((client.kind, server.kind), (3, 2));
    assert_eq!(client.trace_id, server.trace_id);
    assert!(client.parent_span_id.is_empty());
    assert_eq!(server.parent_span_id, client.span_id);
    // Both HTTP histograms get the request.
    let names: Vec<_> =
        c.metrics[0].resource_metrics[0].scope_metrics[0].metrics.iter().map(|m| m.name.clone()).collect();
    assert!(names.contains(&"http.client.request.duration".to_string()), "{names:?}");
    assert!(names.contains(&"http.server.request.duration".to_string()), "{names:?}");
}

#[test]
fn shared_client_metrics_count_each_exchange_once() {
    let local = LocalAddrs::new(["10.200.0.1".parse().unwrap(), "10.200.0.6".parse().unwrap()]);
    let (mut s, out) = sink(TelemetryConfig::default(), local);
    s.record(&redis_exchange(Egress, None, T0));
    s.finish(T0 + 10);
    let c = out.lock();
    assert_eq!(c.spans().count(), 2);
    let m = &c.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0];
    match &m.data {
        Some(metric::Data::Histogram(h)) => assert_eq!(h.data_points[0].count, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn n_exchanges_give_n_spans_and_count_n() {
    let cfg = TelemetryConfig { span_batch_size: 7, ..Default::default() };
    let (mut s, out) = sink(cfg, LocalAddrs::default());
    let n = 100;
    for i in 0..n {
        let ex = http_exchange(Ingress, "GET", &format!("/items/{i}"), 200, T0 + i * 1000);
        s.record(&ex);
        s.flush(ex.end_ns);
    }
    s.finish(T0 + 1_000_000_000);
    let c = out.lock();
    assert_eq!(c.spans().count() as u64, n);
    assert!(c.traces.iter().all(|t| t.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).sum::<usize>() <= 7));
    let m = &c.metrics.last().unwrap().resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.name, "http.server.request.duration");
    match &m.data {
        Some(metric::Data::Histogram(h)) => {
            assert_eq!(h.data_points.len(), 1, "route collapsed to one series");
            assert_eq!(h.data_points[0].count, n);
            assert_eq!(h.aggregation_temporality, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn batches_wait_for_timeout_and_metrics_for_interval() {
    let cfg = TelemetryConfig { span_batch_timeout_ms: 1000, metric_export_interval_secs: 10, ..Default::default() };
    let (mut s, out) = sink(cfg, LocalAddrs::default());
    s.record(&http_exchange(Ingress, "GET", "/a", 200, T0));
    s.flush(T0 + 500_000_000);
    assert!(out.lock().traces.is_empty());
    s.flush(T0 + 1_000_000_000);
    assert_eq!(out.lock().traces.len(), 1);
    assert!(out.lock().metrics.is_empty());
    s.flush(T0 + 10_000_000_000);
    assert_eq!(out.lock().metrics.len(), 1);
}

#[test]
fn otlp_json_follows_the_protobuf_json_mapping_and_is_deterministic() {
    let a = run_to_string(Format::OtlpJson);
    assert_eq!(a, run_to_string(Format::OtlpJson));
    let lines: Vec<&str> = a.lines().collect();
    assert!(lines.len() >= 2);
    let t: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let span = &t["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    assert!(span["startTimeUnixNano"].is_string());
    assert!(span["kind"].is_number());
    assert_eq!(span["name"], "GET /users/{id}");
    let m: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let metric = &m["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0];
    assert!(metric["histogram"]["dataPoints"][0]["count"].is_string());
    // Parses back into the protobuf types.
    let _: ExportTraceServiceRequest = serde_json::from_str(lines[0]).unwrap();
    let _: ExportMetricsServiceRequest = serde_json::from_str(lines.last().unwrap()).unwrap();
}

#[test]
fn text_lines_one_per_span() {
    let t = run_to_string(Format::Text);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), one_of_each(T0).len());
    assert!(
        lines[0].starts_with(
            "2023-11-14T22:13:20.000000Z CLIENT \"GET /users/{id}\" OK 1.500ms 10.200.0.1:40000 -> 10.200.0.2:8080"
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("SERVER \"POST /orders\" ERROR"), "{}", lines[1]);
    assert!(lines.last().unwrap().contains("trace=4bf92f3577b34da6a3ce929d0e0e4736"), "{}", lines.last().unwrap());
    assert!(lines.last().unwrap().contains("url.query=token=?&page=?"), "{}", lines.last().unwrap());
}

#[test]
fn text_line_shows_http_reason_after_the_code() {
    let parts = crate::telemetry::span::build(
        &samples::http_exchange(crate::capture::Direction::Ingress, "GET", "/x", 404, samples::T0),
        crate::telemetry::span::Kind::Server,
        &mut crate::telemetry::route::RouteTemplater::new(24, 1000, 12),
        &Default::default(),
    );
    let (c, s) = ("10.200.0.1:1".parse().unwrap(), "10.200.0.2:80".parse().unwrap());
    let line = stdout::text_line(&parts, 0, 1, &c, &s, (&[1], &[2], &[]), Some("Not Found"));
    assert!(line.contains(" http.response.status_code=404 reason=\"Not Found\" "), "{line}");
    let line = stdout::text_line(&parts, 0, 1, &c, &s, (&[1], &[2], &[]), Some("OK\tfine"));
    assert!(line.contains(" reason=\"OK\\tfine\" "), "{line}");
    let line = stdout::text_line(&parts, 0, 1, &c, &s, (&[1], &[2], &[]), None);
    assert!(!line.contains("reason="), "{line}");
}

#[test]
fn enricher_resources_and_peer_attributes() {
    struct Pods;
    impl Enricher for Pods {
        fn identity(&self, ip: std::net::IpAddr) -> Option<Arc<Identity>> {
            let name = match ip.to_string().as_str() {
                "10.200.0.1" => "client-pod",
                "10.200.0.2" => "server-pod",
                _ => return None,
            };
            Some(Arc::new(Identity {
                attributes: vec![("service.name".into(), name.into()), ("k8s.pod.name".into(), name.into())],
            }))
        }
        fn address_name(&self, _ip: std::net::IpAddr) -> Option<String> {
            Some("web.shop".into())
        }
    }
    let out = Arc::new(Mutex::new(Collected::default()));
    let mut o = SinkOptions::new(TelemetryConfig::default(), host());
    o.outputs.push(Output::Collect(out.clone()));
    o.enricher = Arc::new(Pods);
    o.own_metrics = false;
    let mut s = TelemetrySink::new(o);
    let mut ex = http_exchange(Ingress, "GET", "/a", 200, T0);
    if let crate::exchange::Detail::Http(h) = &mut ex.detail {
        h.host = None;
    }
    s.record(&ex);
    s.finish(T0 + 10);
    let c = out.lock();
    let rs = &c.traces[0].resource_spans;
    assert_eq!(rs.len(), 2, "one ResourceSpans per workload");
    let svc = |r: &opentelemetry_proto::tonic::trace::v1::ResourceSpans| {
        r.resource.as_ref().unwrap().attributes[0].value.clone().unwrap().value.unwrap()
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
    assert_eq!(svc(&rs[0]), AV::StringValue("client-pod".into()));
    assert_eq!(svc(&rs[1]), AV::StringValue("server-pod".into()));
    let client = &rs[0].scope_spans[0].spans[0];
    let get = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()?.value);
    assert_eq!(get(client, "service.peer.name"), Some(AV::StringValue("server-pod".into())));
    assert_eq!(get(client, "k8s.peer.pod.name"), Some(AV::StringValue("server-pod".into())));
    assert_eq!(get(client, "server.address"), Some(AV::StringValue("web.shop".into())));
    let server = &rs[1].scope_spans[0].spans[0];
    assert_eq!(get(server, "service.peer.name"), Some(AV::StringValue("client-pod".into())));
    assert_eq!(server.parent_span_id, client.span_id);
    for kv in &server.attributes {
        assert!(semconv::is_allowed_key(&kv.key), "{}", kv.key);
    }
}

/// Spans the sampler drops are built reduced (the metric and the error
/// status only) and built again whole when an error keeps them: the metrics
/// are exactly those of a sink that keeps every span, and the error spans
/// exported are that sink's error spans, attribute for attribute.
#[test]
fn reduced_spans_change_neither_metrics_nor_kept_error_spans() {
    use crate::exchange::Outcome;
    use sampling::{Policy, Root};
    // Every sample address is local: each exchange has a CLIENT and a SERVER span.
    let local = LocalAddrs::new((1..=9).map(|i| format!("10.200.0.{i}").parse().unwrap()));
    let mut exs = one_of_each(T0);
    let mut t = T0 + 1_000_000_000;
    for (i, status) in [200u16, 404, 500, 503, 201, 302].into_iter().enumerate() {
        for dir in [Egress, Ingress] {
            t += 1_000_000;
            exs.push(http_exchange(dir, ["GET", "POST", "BREW"][i % 3], &format!("/users/{i}/x"), status, t));
        }
    }
    for (i, err) in [None, Some("WRONGTYPE Operation against a key"), Some("ERR")].into_iter().enumerate() {
        t += 1_000_000;
        exs.push(redis_exchange(if i % 2 == 0 { Egress } else { Ingress }, err, t));
    }
    for (i, (sqlstate, summary)) in [(None, true), (Some("42P01"), true), (None, false)].into_iter().enumerate() {
        t += 1_000_000;
        exs.push(postgres_exchange(if i % 2 == 0 { Egress } else { Ingress }, sqlstate, summary, t));
        t += 1_000_000;
        exs.push(mysql_exchange(if i % 2 == 0 { Ingress } else { Egress }, (i == 1).then_some(1146), t));
    }
    for outcome in [Outcome::Timeout, Outcome::Reset] {
        t += 1_000_000;
        let mut h = http_exchange(Egress, "GET", "/slow", 200, t);
        h.outcome = outcome;
        let mut r = redis_exchange(Ingress, None, t);
        r.outcome = outcome;
        let mut p = postgres_exchange(Egress, None, true, t);
        p.outcome = outcome;
        let mut m = mysql_exchange(Ingress, None, t);
        m.outcome = outcome;
        exs.extend([h, r, p, m]);
    }
    for metrics_server_address in [false, true] {
        let cfg = TelemetryConfig { metrics_server_address, ..TelemetryConfig::default() };
        let run = |policy: Policy| {
            let out = Arc::new(Mutex::new(Collected::default()));
            let mut o = SinkOptions::new(cfg.clone(), host());
            o.outputs.push(Output::Collect(out.clone()));
            o.ids = IdGen::Seeded(1);
            o.local_addrs = local.clone();
            o.own_metrics = false;
            o.sampling = policy;
            let mut s = TelemetrySink::new(o);
            for ex in &exs {
                s.record(ex);
            }
            s.finish(t + 1_000_000_000);
            let c = std::mem::take(&mut *out.lock());
            c
        };
        let all = run(Policy::always_on());
        let errors_only = run(Policy { parent_based: false, root: Root::AlwaysOff, ..Policy::default() });
        assert_eq!(all.metrics, errors_only.metrics, "metrics_server_address={metrics_server_address}");
        // Ids and tracestate differ (fewer spans drew ids; `th:0` on kept
        // errors). Both spans of an exchange with an error are kept (HTTP
        // 4xx is an error on the CLIENT span only).
        let view = |c: &Collected, errors: bool| {
            let failed: std::collections::HashSet<&[u8]> = c
                .spans()
                .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
                .map(|s| &s.trace_id[..])
                .collect();
            let mut v: Vec<String> = c
                .spans()
                .filter(|s| !errors || failed.contains(&s.trace_id[..]))
                .map(|s| format!("{} {} {} {:?} {:?}", s.start_time_unix_nano, s.name, s.kind, s.status, s.attributes))
                .collect();
            v.sort();
            v
        };
        let kept = view(&errors_only, false);
        assert_eq!(kept, view(&all, true), "metrics_server_address={metrics_server_address}");
        assert!(kept.len() >= 12 && kept.len() < view(&all, false).len(), "{}", kept.len());
    }
}

/// With only protobuf outputs each span is encoded when it is recorded (no
/// record kept); the bytes must be those of the batch encoded when sent
/// (an output that needs the records, here the collector, turns that off),
/// and decode to the request the collector got. Small batches, so encoded
/// buffers are reused.
#[test]
fn spans_encoded_when_recorded_are_the_ones_encoded_when_sent() {
    let run = |collect: bool| {
        let buf = Buf::default();
        let cfg = TelemetryConfig { span_batch_size: 3, ..Default::default() };
        let mut o = SinkOptions::new(cfg, host());
        o.outputs.push(Output::Write(Format::Otlp, Box::new(buf.clone())));
        let out = Arc::new(Mutex::new(Collected::default()));
        if collect {
            o.outputs.push(Output::Collect(out.clone()));
        }
        o.ids = IdGen::Seeded(7);
        o.own_metrics = false;
        let mut s = TelemetrySink::new(o);
        assert_eq!(s.encode_early, !collect);
        for ex in one_of_each(T0).iter().chain(one_of_each(T0 + 5_000_000_000).iter()) {
            s.record(ex);
            s.flush(ex.end_ns);
        }
        s.finish(T0 + 10_000_000_000);
        let v = buf.0.lock().clone();
        let traces = std::mem::take(&mut out.lock().traces);
        (v, traces)
    };
    let (early, _) = run(false);
    let (late, collected) = run(true);
    assert!(!collected.is_empty());
    assert_eq!(early, late);
    // The records: length-delimited envelopes; the trace ones decode to what was collected.
    let got: Vec<_> = stdout::read_otlp_records(&early).unwrap().into_iter().filter_map(|r| r.traces).collect();
    assert_eq!(got, collected);
}

/// Without a span output (`--format none` exporting metrics only) the span
/// parts are given back right after the metrics: the metrics are exactly
/// those of a sink whose spans are collected.
#[test]
fn metrics_without_span_outputs_are_the_metrics_with_them() {
    let local = LocalAddrs::new((1..=9).map(|i| format!("10.200.0.{i}").parse().unwrap()));
    let mut exs = one_of_each(T0);
    exs.extend(one_of_each(T0 + 1_000_000_000));
    let run = |spans: bool| {
        let out = Arc::new(Mutex::new(Collected::default()));
        let mut o = SinkOptions::new(TelemetryConfig::default(), host());
        o.outputs.push(Output::Collect(out.clone()));
        o.ids = IdGen::Seeded(1);
        o.local_addrs = local.clone();
        o.own_metrics = false;
        let mut s = TelemetrySink::new(o);
        // The collector takes spans; this sink behaves as one with no span output.
        s.spans_wanted = spans;
        for ex in &exs {
            s.record(ex);
        }
        s.finish(T0 + 5_000_000_000);
        let c = std::mem::take(&mut *out.lock());
        c
    };
    let (with, without) = (run(true), run(false));
    assert!(without.traces.is_empty());
    assert!(!with.traces.is_empty());
    assert!(!with.metrics.is_empty());
    assert_eq!(with.metrics, without.metrics);
}
