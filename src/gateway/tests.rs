//! The gateway in-process: real gRPC/HTTP clients in, an in-process tonic
//! OTLP backend ([`OtlpSink`]) out, GeoIP from a database written with mmdb-writer.
use super::*;
use crate::export::test_sink::OtlpSink;
use crate::export::{Compression, OtlpProtocol};
use crate::telemetry::resource::{find, kv_str, trace_request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::time::Instant;

async fn serve_backend(listener: tokio::net::TcpListener) -> Arc<OtlpSink> {
    let b = Arc::new(OtlpSink::new());
    b.serve_grpc(listener);
    b
}

fn span(name: &str, attrs: Vec<KeyValue>) -> Span {
    Span { name: name.into(), attributes: attrs, ..Default::default() }
}

#[derive(serde::Serialize)]
struct TestCity {
    continent: std::collections::BTreeMap<&'static str, &'static str>,
    country: std::collections::BTreeMap<&'static str, &'static str>,
    city: std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, &'static str>>,
    location: std::collections::BTreeMap<&'static str, f64>,
}

#[derive(serde::Serialize)]
struct TestAsn {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// City + ASN databases knowing 1.2.3.0/24 (AU, Brisbane, AS64500).
pub fn write_test_dbs(dir: &Path) -> (String, String) {
    let mut city = mmdb_writer::Writer::builder("Test-City").description(&[("en", "cnflow test")]).build();
    let rec = TestCity {
        continent: [("code", "OC")].into(),
        country: [("iso_code", "AU")].into(),
        city: [("names", [("en", "Brisbane")].into())].into(),
        location: [("latitude", -27.5), ("longitude", 153.0)].into(),
    };
    city.insert("1.2.3.0/24".parse::<ipnet::IpNet>().unwrap(), &rec).unwrap();
    let mut asn = mmdb_writer::Writer::builder("Test-ASN").description(&[("en", "cnflow test")]).build();
    let a = TestAsn { autonomous_system_number: 64500, autonomous_system_organization: "Example Net" };
    asn.insert("1.2.3.0/24".parse::<ipnet::IpNet>().unwrap(), &a).unwrap();
    let (c, s) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    std::fs::write(&c, city.to_bytes().unwrap()).unwrap();
    std::fs::write(&s, asn.to_bytes().unwrap()).unwrap();
    (c.to_string_lossy().into(), s.to_string_lossy().into())
}

fn base_cfg() -> GatewayConfig {
    GatewayConfig {
        grpc_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        health_listen: "127.0.0.1:0".into(),
        batch_timeout_ms: 20,
        ..Default::default()
    }
}

fn dest(endpoint: &str, queue_size: usize) -> Vec<Destination> {
    let c = ExportConfig {
        signal: Signal::Traces,
        endpoint: endpoint.into(),
        protocol: OtlpProtocol::Grpc,
        compression: Compression::Gzip,
        timeout: Duration::from_secs(2),
        queue_size,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        retry_max_elapsed: None,
        ..Default::default()
    };
    vec![Destination { name: "primary".into(), required: true, signals: [Some(c), None, None] }]
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn grpc_and_http_in_enriched_batched_out() {
    let dir = tempfile::tempdir().unwrap();
    let (city, asn) = write_test_dbs(dir.path());
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("http://{}", bl.local_addr().unwrap());
    let backend = serve_backend(bl).await;
    let cfg = GatewayConfig { geoip_city_db: Some(city), geoip_asn_db: Some(asn), ..base_cfg() };
    let gw = start(cfg, dest(&ep, 1000)).await.unwrap();

    // gRPC with gzip: one role → unprefixed keys.
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(trace_request("svc", vec![span("a", vec![kv_str("client.address", "1.2.3.4")])])).await.unwrap();
    // HTTP protobuf, two roles → prefixed; a private server address is not looked up.
    let http = reqwest::Client::new();
    let body = trace_request(
        "svc",
        vec![
            span("b", vec![kv_str("client.address", "1.2.3.5"), kv_str("network.peer.address", "1.2.3.6")]),
            span("c", vec![kv_str("client.address", "10.0.0.1"), kv_str("server.address", "1.2.3.7")]),
        ],
    );
    let r = http
        .post(format!("http://{}/v1/traces", gw.http_addr))
        .header("content-type", "application/x-protobuf")
        .body(body.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // HTTP JSON.
    let r = http
        .post(format!("http://{}/v1/traces", gw.http_addr))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&trace_request("svc", vec![span("d", vec![kv_str("server.address", "8.8.8.8")])]))
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    wait_until("4 spans", || backend.spans().len() == 4).await;
    let spans = backend.spans();
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap().attributes.clone();
    let a = by("a");
    assert_eq!(find(&a, "geo.country.iso_code"), Some(&Value::StringValue("AU".into())));
    assert_eq!(find(&a, "geo.continent.code"), Some(&Value::StringValue("OC".into())));
    assert_eq!(find(&a, "geo.locality.name"), Some(&Value::StringValue("Brisbane".into())));
    assert_eq!(find(&a, "geo.location.lat"), Some(&Value::DoubleValue(-27.5)));
    assert_eq!(find(&a, "as.number"), Some(&Value::IntValue(64500)));
    assert_eq!(find(&a, "as.organization.name"), Some(&Value::StringValue("Example Net".into())));
    let b = by("b");
    assert_eq!(find(&b, "client.geo.country.iso_code"), Some(&Value::StringValue("AU".into())));
    assert_eq!(find(&b, "network.peer.as.number"), Some(&Value::IntValue(64500)));
    assert!(find(&b, "geo.country.iso_code").is_none());
    let c = by("c");
    assert_eq!(find(&c, "geo.country.iso_code"), Some(&Value::StringValue("AU".into())), "only one public role");
    assert!(find(&c, "client.geo.country.iso_code").is_none());
    let d = by("d");
    assert!(d.iter().all(|kv| !kv.key.contains("geo")), "8.8.8.8 is not in the test DB");
    // Same resource → merged into one ResourceSpans per exported request.
    assert!(backend.received.lock().iter().all(|r| r.resource_spans.len() == 1));

    let h = reqwest::get(format!("http://{}/readyz", gw.health_addr)).await.unwrap();
    assert_eq!(h.status(), 200);
    let h = reqwest::get(format!("http://{}/healthz", gw.health_addr)).await.unwrap();
    assert_eq!(h.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn auth_and_malformed_requests() {
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("http://{}", bl.local_addr().unwrap());
    let backend = serve_backend(bl).await;
    let cfg = GatewayConfig { auth_tokens: Some("t0ken".into()), max_request_bytes: 64 * 1024, ..base_cfg() };
    let gw = start(cfg, dest(&ep, 1000)).await.unwrap();
    let url = format!("http://{}/v1/traces", gw.http_addr);
    let http = reqwest::Client::new();
    let good = trace_request("svc", vec![span("ok", vec![])]).encode_to_vec();
    let post = |body: Vec<u8>, ct: &'static str, token: Option<&'static str>| {
        let mut r = http.post(&url).header("content-type", ct).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(good.clone(), "application/x-protobuf", None).await.unwrap().status(), 401);
    assert_eq!(post(good.clone(), "application/x-protobuf", Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(
        post(b"\xff\xff\xff garbage".to_vec(), "application/x-protobuf", Some("t0ken")).await.unwrap().status(),
        400
    );
    assert_eq!(post(b"{not json".to_vec(), "application/json", Some("t0ken")).await.unwrap().status(), 400);
    assert_eq!(post(good.clone(), "text/plain", Some("t0ken")).await.unwrap().status(), 415);
    assert_eq!(post(vec![0u8; 200 * 1024], "application/x-protobuf", Some("t0ken")).await.unwrap().status(), 413);
    // A gzip bomb: small on the wire, over the limit once inflated.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &vec![0u8; 1 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    let r = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth("t0ken")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    let e = client.export(trace_request("svc", vec![span("x", vec![])])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut req =
        tonic::Request::new(trace_request("svc", vec![span("big", vec![kv_str("x", &"y".repeat(100 * 1024))])]));
    req.metadata_mut().insert("authorization", "Bearer t0ken".parse().unwrap());
    let e = client.export(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");

    // Still serving.
    assert_eq!(post(good, "application/x-protobuf", Some("t0ken")).await.unwrap().status(), 200);
    let mut req = tonic::Request::new(trace_request("svc", vec![span("grpc-ok", vec![])]));
    req.metadata_mut().insert("authorization", "Bearer t0ken".parse().unwrap());
    client.export(req).await.unwrap();
    wait_until("2 spans", || backend.spans().len() == 2).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn back_pressure_when_the_queue_is_full() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let cfg = GatewayConfig { batch_size: 5, ..base_cfg() };
    let gw = start(cfg, dest(&format!("http://{addr}"), 20)).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    let mut sent = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let spans: Vec<Span> = (0..5).map(|j| span(&format!("s{i}-{j}"), vec![])).collect();
        match client.export(trace_request("svc", spans)).await {
            Ok(_) => sent.push(i),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                use tonic_types::StatusExt;
                assert!(e.get_details_retry_info().is_some(), "RetryInfo makes it retryable");
                refused += 1;
            }
        }
    }
    assert_eq!(sent.len(), 4, "20 spans fit");
    assert_eq!(refused, 6);
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", gw.http_addr))
        .header("content-type", "application/x-protobuf")
        .body(trace_request("svc", vec![span("h", vec![])]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    // Backend comes up: everything accepted arrives, once.
    let backend = serve_backend(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    wait_until("20 spans", || backend.spans().len() == 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.spans().len(), 20);
    gw.shutdown().await;
}

fn unused_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// Two destinations, the extra one down: with the extra not required nothing
/// is refused and the primary gets everything; the extra's queue (20 items)
/// holds the first batches and delivers them once it is up; its drops are
/// counted under its own name. With `required` it is the one pushing back.
#[tokio::test]
async fn a_down_destination_drops_its_own_share_only() {
    for required in [false, true] {
        let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let primary_ep = format!("http://{}", bl.local_addr().unwrap());
        let primary = serve_backend(bl).await;
        let down = unused_addr();
        let mut d = dest(&primary_ep, 1000);
        d[0].required = false;
        let mut extra = dest(&format!("http://{down}"), 20).remove(0);
        extra.name = format!("extra-test-{required}");
        extra.required = required;
        d.push(extra);
        let cfg = GatewayConfig { batch_size: 5, ..base_cfg() };
        let gw = start(cfg, d).await.unwrap();
        let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
        let mut acked = 0;
        for i in 0..10 {
            let spans: Vec<Span> = (0..5).map(|j| span(&format!("s{i}-{j}"), vec![])).collect();
            match client.export(trace_request("svc", spans)).await {
                Ok(_) => acked += 5,
                Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted),
            }
        }
        let dropped = crate::stats::counter(
            "cnflow.export.dropped",
            &[("signal", "traces"), ("destination", &format!("extra-test-{required}"))],
        );
        if required {
            assert_eq!(acked, 20, "the required extra's queue (20) pushes back");
            assert_eq!(dropped.get(), 0);
        } else {
            assert_eq!(acked, 50, "nothing refused for a non-required destination");
            wait_until("50 spans at the primary", || primary.spans().len() == 50).await;
            assert_eq!(dropped.get(), 30, "the extra dropped what its queue could not hold");
        }
        let back = serve_backend(tokio::net::TcpListener::bind(down).await.unwrap()).await;
        wait_until("20 spans at the extra", || back.spans().len() == 20).await;
        wait_until("the primary", || primary.spans().len() == acked).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut names: Vec<String> = back.spans().into_iter().map(|s| s.name).collect();
        names.sort();
        let mut want: Vec<String> = (0..4).flat_map(|i| (0..5).map(move |j| format!("s{i}-{j}"))).collect();
        want.sort();
        assert_eq!(names, want, "the extra gets what its queue held: the first 20 spans, once");
        assert_eq!(primary.spans().len(), acked);
        gw.shutdown().await;
    }
}

/// Each destination gets its own headers: the primary's API key never
/// reaches the extra endpoint, which gets the ones from CNFLOW_GATEWAY_EXTRA_HEADERS.
#[tokio::test]
async fn extra_endpoints_get_their_own_headers() {
    let (a, a_ep) = OtlpSink::new().grpc().await;
    let (b, b_ep) = OtlpSink::new().grpc().await;
    let env: Vec<(String, String)> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", a_ep.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=primary-key"),
        ("CNFLOW_GATEWAY_EXTRA_ENDPOINTS", b_ep.as_str()),
        ("CNFLOW_GATEWAY_EXTRA_HEADERS", "api-key=extra-key,x-team=net"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = GatewayConfig::from_vars(env.clone()).unwrap();
    let cfg = GatewayConfig {
        grpc_listen: base_cfg().grpc_listen,
        http_listen: base_cfg().http_listen,
        health_listen: base_cfg().health_listen,
        batch_timeout_ms: 20,
        ..cfg
    };
    let export = OtlpExportConfig::from_vars(env, &[Signal::Traces]).unwrap();
    let gw = start(cfg.clone(), destinations(&cfg, &export).unwrap()).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    client.export(trace_request("svc", vec![span("h", vec![])])).await.unwrap();
    wait_until("both destinations", || a.spans().len() == 1 && b.spans().len() == 1).await;
    let get = |s: &OtlpSink, k: &str| -> Vec<String> {
        s.headers.lock().iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect()
    };
    assert_eq!(get(&a, "api-key"), vec!["primary-key"]);
    assert_eq!(get(&b, "api-key"), vec!["extra-key"]);
    assert_eq!(get(&b, "x-team"), vec!["net"]);
    assert!(get(&a, "x-team").is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn corrupt_geoip_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"this is not a maxmind database").unwrap();
    let cfg = GatewayConfig { geoip_asn_db: Some(bad.to_string_lossy().into()), ..base_cfg() };
    let e = start(cfg, dest("http://127.0.0.1:9", 10)).await.err().expect("must fail");
    assert!(format!("{e:#}").contains("CNFLOW_GATEWAY_GEOIP_ASN_DB"), "{e:#}");
}

#[test]
fn destinations_from_env() {
    let vars = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    let all = [Signal::Traces, Signal::Metrics, Signal::Logs];
    let parsed = |v: Vec<(String, String)>| OtlpExportConfig::from_vars(v, &all).unwrap();
    let e = destinations(&GatewayConfig::default(), &parsed(vars(&[]))).unwrap_err();
    assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let cfg = GatewayConfig {
        extra_endpoints: Some("http://b:4318".into()),
        queue_dir: Some("/q".into()),
        ..Default::default()
    };
    let d = destinations(
        &cfg,
        &parsed(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])),
    )
    .unwrap();
    assert_eq!(d.len(), 2);
    let t1 = d[1].signals[0].as_ref().unwrap();
    assert_eq!(t1.endpoint, "http://b:4318/v1/traces");
    assert_eq!(t1.queue_dir.as_deref(), Some(Path::new("/q/destination-1")));
    assert_eq!(d[0].signals[1].as_ref().unwrap().endpoint, "http://a:4318/v1/metrics");
    assert!(!d[0].required && !d[1].required, "with an extra endpoint nothing is required by default");
    assert_eq!((d[0].name.as_str(), d[1].name.as_str()), ("primary", "extra-1"));

    // Per-endpoint options and headers; the primary's API key stays with the primary.
    let cfg = GatewayConfig {
        extra_endpoints: Some("http://b:4318;required, http://c:4318".into()),
        extra_headers: Some("api-key=b%2Dkey,x-team=net;".into()),
        primary_required: Some(true),
        ..Default::default()
    };
    let env = parsed(vars(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=primary-secret"),
    ]));
    let d = destinations(&cfg, &env).unwrap();
    assert_eq!(d.iter().map(|d| d.required).collect::<Vec<_>>(), vec![true, true, false]);
    let hdr = |i: usize| d[i].signals[0].as_ref().unwrap().headers.clone();
    assert_eq!(hdr(0), vec![("api-key".to_string(), "primary-secret".to_string())]);
    assert_eq!(hdr(1), vec![("api-key".to_string(), "b-key".to_string()), ("x-team".to_string(), "net".to_string())]);
    assert!(hdr(2).is_empty(), "no group for extra-2: no headers, not the primary's");
    assert_eq!(d[2].signals[0].as_ref().unwrap().destination, "extra-2");

    // Errors name the variable but never quote a header value.
    for (endpoints, headers, want) in [
        ("http://b:4318;mandatory", "", "unknown option"),
        ("http://b:4318", "a=1;b=2", "2 `;`-separated groups"),
        ("http://b:4318", "leaked-secret-no-equals", "CNFLOW_GATEWAY_EXTRA_HEADERS, group 1"),
    ] {
        let cfg = GatewayConfig {
            extra_endpoints: Some(endpoints.into()),
            extra_headers: Some(headers.into()),
            ..Default::default()
        };
        let e = format!("{:#}", destinations(&cfg, &env).unwrap_err());
        assert!(e.contains(want), "{e}");
        assert!(!e.contains("leaked-secret"), "{e}");
    }
}

#[tokio::test]
async fn stitching_joins_halves_from_two_agents_and_exports_unmatched_after_the_window() {
    use crate::exchange::wire_attr;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let int = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(Value::IntValue(v)) }),
        ..Default::default()
    };
    let half = |kind: SpanKind, trace: u8, id: u8, seq: i64| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        kind: kind as i32,
        name: format!("{kind:?}"),
        attributes: vec![int(wire_attr::TCP_REQUEST_SEQ, seq), int(wire_attr::TCP_RESPONSE_SEQ, 1)],
        ..Default::default()
    };
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("http://{}", bl.local_addr().unwrap());
    let backend = serve_backend(bl).await;
    let cfg = GatewayConfig { stitch_window_ms: 300, ..base_cfg() };
    let gw = start(cfg, dest(&ep, 1000)).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    // The server's node first: one half that will meet its client, one that never will.
    client
        .export(trace_request("server", vec![half(SpanKind::Server, 2, 20, 7), half(SpanKind::Server, 3, 30, 8)]))
        .await
        .unwrap();
    client.export(trace_request("client", vec![half(SpanKind::Client, 1, 10, 7)])).await.unwrap();
    wait_until("the joined pair", || backend.spans().len() == 2).await;
    let spans = backend.spans();
    let server = spans.iter().find(|s| s.span_id == vec![20; 8]).unwrap();
    assert_eq!((server.trace_id.clone(), server.parent_span_id.clone()), (vec![1; 16], vec![10; 8]));
    assert!(spans.iter().all(|s| s.attributes.is_empty()), "wire attributes stripped");
    let t = Instant::now();
    wait_until("the unmatched half", || backend.spans().len() == 3).await;
    assert!(t.elapsed() >= Duration::from_millis(100));
    let spans = backend.spans();
    let alone = spans.iter().find(|s| s.span_id == vec![30; 8]).unwrap();
    assert_eq!((alone.trace_id.clone(), alone.parent_span_id.clone()), (vec![3; 16], vec![]));
    gw.shutdown().await;
}

/// CNFLOW_GATEWAY_SERVICE_GRAPH in the running gateway: a CLIENT half marked
/// by an agent in `gateway` mode whose SERVER never comes is counted, when
/// shutdown drains it, as an edge to a virtual node, and that last count is
/// exported on the way out (no stats tick happens in this test).
#[tokio::test]
async fn service_graph_counts_are_exported_at_shutdown() {
    use crate::exchange::wire_attr;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("http://{}", bl.local_addr().unwrap());
    let backend = Arc::new(OtlpSink::new());
    backend.serve_grpc_all_signals(bl);
    let mut d = dest(&ep, 1000);
    let metrics = ExportConfig { signal: Signal::Metrics, ..d[0].signals[0].clone().unwrap() };
    d[0].signals[1] = Some(metrics);
    let cfg = GatewayConfig { stitch_window_ms: 60_000, service_graph: true, stats_interval_secs: 3600, ..base_cfg() };
    let gw = start(cfg, d).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    let int = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(Value::IntValue(v)) }),
        ..Default::default()
    };
    let half = Span {
        trace_id: vec![1; 16],
        span_id: vec![10; 8],
        kind: SpanKind::Client as i32,
        name: "GET".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2_000_001,
        attributes: vec![
            int(wire_attr::TCP_REQUEST_SEQ, 7),
            int(wire_attr::TCP_RESPONSE_SEQ, 1),
            kv_str(crate::telemetry::network::graph::GATEWAY_PEER_ATTR, "api.example.com"),
        ],
        ..Default::default()
    };
    client.export(trace_request("front", vec![half])).await.unwrap();
    wait_until("the CLIENT half passes", || backend.spans().len() == 1).await;
    gw.shutdown().await;
    let got = backend.metrics.lock().clone();
    let value = got
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "traces_service_graph_request_total")
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => Some(&s.data_points),
            _ => None,
        })
        .flatten()
        .filter(|dp| {
            let is = |k: &str, v: &str| find(&dp.attributes, k) == Some(&Value::StringValue(v.into()));
            is("client", "front") && is("server", "api.example.com") && is("connection_type", "virtual_node")
        })
        .map(|dp| match dp.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            _ => 0,
        })
        .max();
    assert_eq!(value, Some(1), "{got:?}");
}

/// A full batch of ordinary spans is larger than the 4 MiB message limit of
/// gRPC servers (the Collector, Tempo, Jaeger, rotel refuse it whole, and
/// the gateway used to retry it until it gave up): with the defaults every
/// exported request stays under it and every span arrives.
#[tokio::test]
async fn default_batches_fit_the_grpc_message_limit() {
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("http://{}", bl.local_addr().unwrap());
    let backend = serve_backend(bl).await;
    let gw = start(GatewayConfig { batch_timeout_ms: 5000, ..base_cfg() }, dest(&ep, 100_000)).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.unwrap();
    // ~700 bytes per span, like an agent's HTTP or database span.
    let text = "x".repeat(600);
    let (requests, per_request) = (8usize, 1024usize);
    for r in 0..requests {
        let spans = (0..per_request)
            .map(|i| {
                span(&format!("GET {r}/{i}"), vec![kv_str("url.full", &text), kv_str("client.address", "10.0.0.1")])
            })
            .collect();
        client.export(trace_request("svc", spans)).await.unwrap();
    }
    let total = (requests * per_request) as u64;
    wait_until("every span", || backend.span_count.load(std::sync::atomic::Ordering::SeqCst) == total).await;
    let sizes: Vec<usize> = backend.received.lock().iter().map(|r| r.encoded_len()).collect();
    assert!(sizes.len() > 1, "one request of {} bytes", sizes[0]);
    assert!(sizes.iter().all(|&s| s <= 4 << 20), "request sizes {sizes:?}");
    assert!(sizes.iter().sum::<usize>() > 5_000_000, "{sizes:?}");
    gw.shutdown().await;
}

/// Accepted gRPC and HTTP connections have TCP_NODELAY (a response must not
/// wait for the client's delayed ACK of an earlier small frame).
#[tokio::test]
async fn accepted_connections_have_nodelay() {
    use axum::serve::Listener;
    use futures::StreamExt;
    let bind = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    };
    let (l, addr) = bind().await;
    let mut grpc = grpc_receiver::incoming(l);
    let _c1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(grpc.next().await.unwrap().unwrap().nodelay().unwrap(), "gRPC receiver");
    let (l, addr) = bind().await;
    let mut http = http_receiver::plain(l);
    let _c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(http.accept().await.0.nodelay().unwrap(), "HTTP receiver");
}
