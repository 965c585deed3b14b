//! Metrics and logs through the gateway binary (issue #18 item 4): OTLP/gRPC
//! and OTLP/HTTP (protobuf, JSON, gzip, zstd) round trips with GeoIP
//! enrichment of resources and log records, batches bounded in data points
//! and log records, back-pressure while the backend is down then delivery of
//! everything accepted, and the gateway's own `cnflow.gateway.*` metrics
//! arriving through rotel (an independent collector) with the counts the
//! client produced.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use cnflow::export::payload::{log_items, metric_items};
use cnflow::export::test_sink::OtlpSink;
use cnflow::telemetry::resource::{kv_str, trace_request};
use netns::ChildGuard;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

const PUBLIC_GB: &str = "81.2.69.142";
const PUBLIC_US: &str = "216.160.83.56";
const PRIVATE: &str = "10.200.0.7";

fn geoip(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/geoip").join(name)
}

fn str_of(v: &Option<AnyValue>) -> Option<&str> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| str_of(&kv.value))
}

fn int_attr(kvs: &[KeyValue], key: &str) -> Option<i64> {
    match kvs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn has_geo(kvs: &[KeyValue]) -> bool {
    kvs.iter().any(|kv| kv.key.contains("geo.") || kv.key.starts_with("as."))
}

/// `metrics` gauges of `points` points each; every point carries `seq`
/// (`{prefix}/{metric}/{point}`) so arrivals can be matched one by one.
fn metrics_request(
    service: &str,
    client: &str,
    prefix: &str,
    metrics: usize,
    points: usize,
) -> ExportMetricsServiceRequest {
    let metrics = (0..metrics)
        .map(|m| Metric {
            name: format!("{prefix}.gauge{m}"),
            unit: "1".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|p| NumberDataPoint {
                        attributes: vec![
                            kv_str("seq", &format!("{prefix}/{m}/{p}")),
                            kv_str("client.address", PUBLIC_US),
                        ],
                        time_unix_nano: 1_700_000_000_000_000_000,
                        value: Some(number_data_point::Value::AsInt(p as i64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service), kv_str("client.address", client)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// `n` log records with body `{prefix}-{i}`, client.address cycling public GB, private, public US.
fn logs_request(service: &str, prefix: &str, n: usize) -> ExportLogsServiceRequest {
    let clients = [PUBLIC_GB, PRIVATE, PUBLIC_US];
    let log_records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("{prefix}-{i}"))) }),
            attributes: vec![kv_str("client.address", clients[i % 3])],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![kv_str("service.name", service)], ..Default::default() }),
            scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// The same in OTLP/JSON written by hand (the specification's encoding:
/// camelCase, 64-bit integers as strings), not by the gateway's serde types.
const METRICS_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"app-json"}},{"key":"client.address","value":{"stringValue":"81.2.69.142"}}]},"scopeMetrics":[{"scope":{"name":"hand"},"metrics":[{"name":"json.gauge","unit":"1","gauge":{"dataPoints":[{"attributes":[{"key":"seq","value":{"stringValue":"json/0/0"}}],"timeUnixNano":"1700000000000000000","asInt":"1"},{"attributes":[{"key":"seq","value":{"stringValue":"json/0/1"}}],"timeUnixNano":"1700000000000000000","asDouble":2.5},{"attributes":[{"key":"seq","value":{"stringValue":"json/0/2"}}],"timeUnixNano":"1700000000000000000","asInt":"3"},{"attributes":[{"key":"seq","value":{"stringValue":"json/0/3"}}],"timeUnixNano":"1700000000000000000","asInt":"4"}]}}]}]}]}"#;
const LOGS_JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"app-json"}}]},"scopeLogs":[{"scope":{"name":"hand"},"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":9,"body":{"stringValue":"json-0"},"attributes":[{"key":"client.address","value":{"stringValue":"81.2.69.142"}}]},{"timeUnixNano":"1700000000000000000","severityNumber":13,"body":{"stringValue":"json-1"},"attributes":[{"key":"client.address","value":{"stringValue":"10.200.0.7"}}]},{"timeUnixNano":"1700000000000000000","severityNumber":17,"body":{"stringValue":"json-2"}}]}]}]}"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

struct Gw {
    grpc: u16,
    http: u16,
    _proc: ChildGuard,
}

/// `cnflow gateway` exporting over gRPC to `backend`, receivers on fresh ports.
fn gateway(backend: &str, env: &[(&str, &str)]) -> Gw {
    let [grpc, http] = otel::free_ports_in(None);
    let mut c = Command::new(harness::cnflow_bin());
    c.arg("gateway")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", backend)
        // Exact counts at the backend: no SDK self-telemetry.
        .env("CNFLOW_SELF_TELEMETRY", "false")
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_EXPORT_RETRY_INITIAL_BACKOFF_MS", "50")
        .env("CNFLOW_EXPORT_RETRY_MAX_BACKOFF_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let g = ChildGuard::new(c.spawn().unwrap(), "cnflow gateway");
    for port in [grpc, http] {
        otel::wait_port(None, ([127, 0, 0, 1], port).into(), "gateway");
    }
    Gw { grpc, http, _proc: g }
}

async fn post(port: u16, path: &str, ct: &str, encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", ct)
        .timeout(Duration::from_secs(10));
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    r.body(body).send().await.expect("HTTP request")
}

async fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn points_seq(reqs: &[ExportMetricsServiceRequest], service: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let res = rm.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
        if !service(attr(res, "service.name").unwrap_or_default()) {
            continue;
        }
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if let Some(Data::Gauge(g)) = &m.data {
                out.extend(g.data_points.iter().filter_map(|p| attr(&p.attributes, "seq").map(str::to_string)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_round_trip_enriched_and_batched_in_items() {
    let sink = Arc::new(OtlpSink::new());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}", l.local_addr().unwrap());
    sink.serve_grpc_all_signals(l);
    let (city, asn) = (geoip("GeoLite2-City-Test.mmdb"), geoip("GeoLite2-ASN-Test.mmdb"));
    let gw = gateway(
        &backend,
        &[
            ("CNFLOW_GATEWAY_BATCH_SIZE", "100"),
            ("CNFLOW_GATEWAY_BATCH_MAX_SIZE", "100"),
            ("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "100"),
            // Its own metrics are checked in the rotel test; keep them out of the counts here.
            ("CNFLOW_GATEWAY_STATS_INTERVAL_SECS", "3600"),
            ("CNFLOW_GATEWAY_GEOIP_CITY_DB", city.to_str().unwrap()),
            ("CNFLOW_GATEWAY_GEOIP_ASN_DB", asn.to_str().unwrap()),
        ],
    );

    // Metrics: gRPC (gzip) 3 × 5 gauges × 10 points, HTTP protobuf (gzip) 2 × 3 × 10, HTTP JSON 4 points.
    let mut sent_points = BTreeSet::new();
    let mut mc = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", gw.grpc))
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    for r in 0..3 {
        let client = if r == 1 { PRIVATE } else { PUBLIC_GB };
        let req = metrics_request("app-grpc", client, &format!("grpc{r}"), 5, 10);
        sent_points.extend(points_seq(std::slice::from_ref(&req), |_| true));
        mc.export(req).await.expect("gRPC metrics export");
    }
    for r in 0..2 {
        let req = metrics_request("app-http", PUBLIC_GB, &format!("http{r}"), 3, 10);
        sent_points.extend(points_seq(std::slice::from_ref(&req), |_| true));
        let resp =
            post(gw.http, "/v1/metrics", "application/x-protobuf", Some("gzip"), gzip(&req.encode_to_vec())).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = post(gw.http, "/v1/metrics", "application/json", None, METRICS_JSON.into()).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    sent_points.extend((0..4).map(|p| format!("json/0/{p}")));
    assert_eq!(sent_points.len(), 3 * 50 + 2 * 30 + 4);

    // Logs: gRPC (zstd) 2 × 30 records, HTTP protobuf (zstd) 2 × 25, HTTP JSON 3.
    let mut sent_logs = BTreeSet::new();
    let mut lc = LogsServiceClient::connect(format!("http://127.0.0.1:{}", gw.grpc))
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Zstd);
    for r in 0..2 {
        let prefix = format!("grpc{r}");
        sent_logs.extend((0..30).map(|i| format!("{prefix}-{i}")));
        lc.export(logs_request("app-grpc", &prefix, 30)).await.expect("gRPC logs export");
    }
    for r in 0..2 {
        let prefix = format!("http{r}");
        sent_logs.extend((0..25).map(|i| format!("{prefix}-{i}")));
        let body = zstd::encode_all(&logs_request("app-http", &prefix, 25).encode_to_vec()[..], 3).unwrap();
        let resp = post(gw.http, "/v1/logs", "application/x-protobuf", Some("zstd"), body).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = post(gw.http, "/v1/logs", "application/json", None, LOGS_JSON.into()).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    sent_logs.extend((0..3).map(|i| format!("json-{i}")));

    wait("metrics and logs at the backend", Duration::from_secs(30), || {
        sink.data_points() >= sent_points.len() && sink.log_records() >= sent_logs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Every point and record exactly once.
    let metrics = sink.metrics.lock().clone();
    let got_points = points_seq(&metrics, |_| true);
    assert_eq!(got_points.len(), sent_points.len(), "data points (duplicates?)");
    assert_eq!(got_points.into_iter().collect::<BTreeSet<_>>(), sent_points);
    let logs = sink.logs.lock().clone();
    let got_logs: Vec<String> = logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .filter_map(|lr| str_of(&lr.body).map(str::to_string))
        .collect();
    assert_eq!(got_logs.len(), sent_logs.len(), "log records (duplicates?)");
    assert_eq!(got_logs.into_iter().collect::<BTreeSet<_>>(), sent_logs);

    // Batches are bounded in data points / log records (a metric of 10 points
    // weighs 10, so a request of 100 points holds 10 metrics).
    let sizes: Vec<usize> = metrics.iter().map(metric_items).collect();
    eprintln!("FIGURE: 214 data points from 6 requests exported as {} requests of {sizes:?} points", sizes.len());
    assert!(sizes.iter().all(|&n| n <= 100), "metrics export sizes {sizes:?}");
    assert!(sizes.len() >= 3, "214 points in batches of ≤ 100: {sizes:?}");
    let sizes: Vec<usize> = logs.iter().map(log_items).collect();
    eprintln!("FIGURE: 113 log records from 5 requests exported as {} requests of {sizes:?} records", sizes.len());
    assert!(sizes.iter().all(|&n| n <= 100), "logs export sizes {sizes:?}");
    assert!(sizes.len() >= 2, "113 records in batches of ≤ 100: {sizes:?}");

    // GeoIP: metric resources with a public client.address, not private ones;
    // data points are left alone (documented), log records enriched per record.
    for rm in metrics.iter().flat_map(|r| &r.resource_metrics) {
        let res = &rm.resource.as_ref().unwrap().attributes;
        match attr(res, "client.address") {
            Some(PUBLIC_GB) => assert_eq!(attr(res, "geo.country.iso_code"), Some("GB"), "{res:?}"),
            _ => assert!(!has_geo(res), "private resource enriched: {res:?}"),
        }
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if let Some(Data::Gauge(g)) = &m.data {
                assert!(g.data_points.iter().all(|p| !has_geo(&p.attributes)), "data point enriched");
            }
        }
    }
    let mut enriched = 0;
    for lr in logs.iter().flat_map(|r| &r.resource_logs).flat_map(|rl| &rl.scope_logs).flat_map(|s| &s.log_records) {
        match attr(&lr.attributes, "client.address") {
            Some(PUBLIC_GB) => {
                assert_eq!(attr(&lr.attributes, "geo.country.iso_code"), Some("GB"));
                enriched += 1;
            }
            Some(PUBLIC_US) => {
                assert_eq!(attr(&lr.attributes, "geo.country.iso_code"), Some("US"));
                assert!(int_attr(&lr.attributes, "as.number").is_some(), "ASN on {:?}", lr.attributes);
                enriched += 1;
            }
            _ => assert!(!has_geo(&lr.attributes), "log record enriched without a public address"),
        }
    }
    // Public in records 0 and 2 of every 3: 20 + 20 (gRPC), 17 + 17 (HTTP), 1 (JSON).
    assert_eq!(enriched, 20 + 20 + 17 + 17 + 1);
}

/// Back-pressure for metrics and logs while the only destination is down:
/// the gateway refuses (gRPC RESOURCE_EXHAUSTED, HTTP 503 + Retry-After) once
/// its queue holds CNFLOW_EXPORT_QUEUE_SIZE items, and delivers every accepted
/// data point and log record once the backend is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_back_pressure_then_delivery() {
    let port = otel::free_port();
    let gw = gateway(
        &format!("http://127.0.0.1:{port}"),
        &[
            ("CNFLOW_EXPORT_QUEUE_SIZE", "100"),
            ("CNFLOW_GATEWAY_BATCH_SIZE", "20"),
            ("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20"),
            ("CNFLOW_GATEWAY_STATS_INTERVAL_SECS", "3600"),
        ],
    );
    let mut mc = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", gw.grpc)).await.unwrap();
    let mut lc = LogsServiceClient::connect(format!("http://127.0.0.1:{}", gw.grpc)).await.unwrap();
    let (mut accepted_points, mut accepted_logs) = (BTreeSet::new(), BTreeSet::new());
    let (mut grpc_refused, mut http_refused) = (0, 0);
    for r in 0..20 {
        // 2 gauges × 5 points = 10 points per request, alternating gRPC and HTTP.
        let req = metrics_request("bp", PRIVATE, &format!("m{r}"), 2, 5);
        let seqs = points_seq(std::slice::from_ref(&req), |_| true);
        let ok = if r % 2 == 0 {
            match mc.export(req).await {
                Ok(_) => true,
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                    grpc_refused += 1;
                    false
                }
            }
        } else {
            let resp = post(gw.http, "/v1/metrics", "application/x-protobuf", None, req.encode_to_vec()).await;
            if resp.status() == 503 {
                assert!(resp.headers().contains_key("retry-after"));
                http_refused += 1;
            }
            resp.status() == 200
        };
        if ok {
            accepted_points.extend(seqs);
        }
        let prefix = format!("l{r}");
        let req = logs_request("bp", &prefix, 10);
        let ok = if r % 2 == 1 {
            lc.export(req).await.map_err(|s| assert_eq!(s.code(), tonic::Code::ResourceExhausted)).is_ok()
        } else {
            let resp = post(gw.http, "/v1/logs", "application/x-protobuf", None, req.encode_to_vec()).await;
            assert!(resp.status() == 200 || resp.status() == 503, "{}", resp.status());
            resp.status() == 200
        };
        if ok {
            accepted_logs.extend((0..10).map(|i| format!("{prefix}-{i}")));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    eprintln!(
        "FIGURE: backend down, queue 100: accepted {} of 200 points, {} of 200 records; refused gRPC {grpc_refused}, HTTP {http_refused} metrics requests",
        accepted_points.len(),
        accepted_logs.len()
    );
    // The queue (100 items) plus the open batch bound what is accepted.
    assert!((100..=130).contains(&accepted_points.len()), "accepted points {}", accepted_points.len());
    assert!((100..=130).contains(&accepted_logs.len()), "accepted records {}", accepted_logs.len());
    assert!(grpc_refused > 0 && http_refused > 0, "refused: gRPC {grpc_refused}, HTTP {http_refused}");

    // The backend comes up on the port the gateway exports to.
    let sink = Arc::new(OtlpSink::new());
    sink.serve_grpc_all_signals(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    wait("queued metrics and logs delivered", Duration::from_secs(30), || {
        sink.data_points() >= accepted_points.len() && sink.log_records() >= accepted_logs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = points_seq(&sink.metrics.lock(), |_| true);
    assert_eq!(got.len(), accepted_points.len(), "every accepted point once");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), accepted_points);
    assert_eq!(sink.log_records(), accepted_logs.len(), "every accepted record once");
    // And it accepts again.
    mc.export(metrics_request("bp", PRIVATE, "after", 1, 3)).await.expect("accepted after recovery");
    lc.export(logs_request("bp", "after", 3)).await.expect("accepted after recovery");
}

fn sum_value(reqs: &[ExportMetricsServiceRequest], name: &str, signal: &str) -> Option<i64> {
    let mut last = None;
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let res = rm.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
        if attr(res, "service.name") != Some("cnflow-gateway") {
            continue;
        }
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
            if let Some(Data::Sum(s)) = &m.data {
                for p in s.data_points.iter().filter(|p| attr(&p.attributes, "signal") == Some(signal)) {
                    if let Some(number_data_point::Value::AsInt(v)) = p.value {
                        last = Some(v); // cumulative: the latest wins
                    }
                }
            }
        }
    }
    last
}

/// gateway → rotel (OTLP/gRPC in and out) → backend: the client's spans,
/// data points and log records arrive, and so do the gateway's own
/// `cnflow.gateway.received` / `cnflow.export.sent` sums (resource
/// service.name=cnflow-gateway) equal to what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_metrics_and_client_signals_arrive_through_rotel() {
    let sink = Arc::new(OtlpSink::new());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_port = l.local_addr().unwrap().port();
    sink.serve_grpc_all_signals(l);
    let rotel = tokio::task::spawn_blocking(move || otel::Rotel::start(None, sink_port)).await.unwrap();
    let gw = gateway(
        &format!("http://127.0.0.1:{}", rotel.grpc_port),
        &[("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "50"), ("CNFLOW_GATEWAY_STATS_INTERVAL_SECS", "1")],
    );
    let spans: Vec<Span> = (0..7u64)
        .map(|i| Span {
            trace_id: vec![3; 16],
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: format!("s{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_100_000,
            ..Default::default()
        })
        .collect();
    let ch = format!("http://127.0.0.1:{}", gw.grpc);
    TraceServiceClient::connect(ch.clone()).await.unwrap().export(trace_request("app", spans)).await.unwrap();
    MetricsServiceClient::connect(ch.clone())
        .await
        .unwrap()
        .export(metrics_request("app", PRIVATE, "r", 3, 10))
        .await
        .unwrap();
    let resp =
        post(gw.http, "/v1/logs", "application/x-protobuf", None, logs_request("app", "r", 11).encode_to_vec()).await;
    assert_eq!(resp.status(), 200);

    wait("the gateway's counters at the backend", Duration::from_secs(30), || {
        let m = sink.metrics.lock();
        sum_value(&m, "cnflow.gateway.received", "traces") == Some(7)
            && sum_value(&m, "cnflow.gateway.received", "metrics") == Some(30)
            && sum_value(&m, "cnflow.gateway.received", "logs") == Some(11)
            && sum_value(&m, "cnflow.export.sent", "traces") == Some(7)
            && sum_value(&m, "cnflow.export.sent", "logs") == Some(11)
    })
    .await;
    assert_eq!(sink.span_count.load(std::sync::atomic::Ordering::SeqCst), 7);
    assert_eq!(points_seq(&sink.metrics.lock(), |s| s == "app").len(), 30);
    assert_eq!(sink.log_records(), 11);
}
