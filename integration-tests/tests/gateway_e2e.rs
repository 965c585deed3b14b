//! End to end through an independent collector: OTLP in over gRPC (gzip) and
//! HTTP/protobuf (gzip) → `cnflow gateway` (GeoIP with MaxMind's test City + ASN
//! databases) → rotel (PyPI, OTLP/gRPC in and out) → a receiver in this test.
//! Every span must arrive exactly once, public addresses enriched, private not.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use cnflow::export::test_sink::OtlpSink;
use cnflow::telemetry::resource::{kv_str, trace_request};
use netns::ChildGuard;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Received spans by name → their attributes (string form).
type Received = HashMap<String, Vec<HashMap<String, String>>>;

fn received(sink: &OtlpSink) -> Received {
    let mut got = Received::new();
    for s in sink.spans() {
        let attrs = s.attributes.iter().map(|kv| (kv.key.clone(), value_str(&kv.value))).collect();
        got.entry(s.name).or_default().push(attrs);
    }
    got
}

fn value_str(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn wait_port(port: u16, what: &str) {
    otel::wait_port(None, ([127, 0, 0, 1], port).into(), what);
}

fn geoip(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/geoip").join(name)
}

/// `n` spans named `{prefix}-{i}`, client.address cycling through public and private addresses.
fn request(prefix: &str, n: usize) -> ExportTraceServiceRequest {
    let clients = ["81.2.69.142", "10.200.0.7", "216.160.83.56"];
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: ((i as u64) + 1).to_be_bytes().to_vec(),
            name: format!("{prefix}-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_100_000,
            attributes: vec![
                kv_str("client.address", clients[i % clients.len()]),
                kv_str("server.address", "10.200.0.2"),
            ],
            ..Default::default()
        })
        .collect();
    trace_request("e2e", spans)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_grpc_and_http_arrive_once_enriched_through_rotel() {
    let [sink_port, gw_grpc, gw_http] = otel::free_ports_in(None);
    let sink = Arc::new(OtlpSink::new());
    sink.serve_grpc(tokio::net::TcpListener::bind(("127.0.0.1", sink_port)).await.unwrap());

    let rotel = otel::Rotel::start(None, sink_port);
    let rotel_grpc = rotel.grpc_port;
    let log = tempfile::NamedTempFile::new().unwrap();
    let _gw = ChildGuard::new(
        Command::new(harness::cnflow_bin())
            .arg("gateway")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{rotel_grpc}"))
            // Exact span counts below: the gateway's own spans are tested in e2e_rotel.
            .env("CNFLOW_SELF_TELEMETRY", "false")
            .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{gw_grpc}"))
            .env("CNFLOW_GATEWAY_HTTP_LISTEN", format!("127.0.0.1:{gw_http}"))
            .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "50")
            .env("CNFLOW_GATEWAY_GEOIP_CITY_DB", geoip("GeoLite2-City-Test.mmdb"))
            .env("CNFLOW_GATEWAY_GEOIP_ASN_DB", geoip("GeoLite2-ASN-Test.mmdb"))
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
        "cnflow gateway",
    );
    wait_port(gw_grpc, "gateway gRPC");
    wait_port(gw_http, "gateway HTTP");

    // gRPC with gzip: 3 requests of 100 spans.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{gw_grpc}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    for r in 0..3 {
        client.export(request(&format!("grpc{r}"), 100)).await.expect("gRPC export");
    }
    // HTTP/protobuf with gzip: 2 requests of 50 spans.
    let http = reqwest::Client::new();
    for r in 0..2 {
        let body = gzip(&request(&format!("http{r}"), 50).encode_to_vec());
        let resp = http
            .post(format!("http://127.0.0.1:{gw_http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .expect("HTTP export");
        assert!(resp.status().is_success(), "HTTP status {}", resp.status());
    }

    let want = 3 * 100 + 2 * 50;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: usize = received(&sink).values().map(Vec::len).sum();
        if n >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give duplicates a chance to show up before checking "exactly once".
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received(&sink);
    let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), want, "gateway log:\n{logs}");
    for (name, copies) in &got {
        assert_eq!(copies.len(), 1, "{name} arrived {} times", copies.len());
    }
    for (name, copies) in &got {
        let a = &copies[0];
        match a.get("client.address").map(String::as_str) {
            Some("81.2.69.142") => {
                assert_eq!(a.get("geo.country.iso_code").map(String::as_str), Some("GB"), "{name}: {a:?}");
                assert_eq!(a.get("geo.locality.name").map(String::as_str), Some("London"), "{name}: {a:?}");
                assert!(a.contains_key("geo.location.lat") && a.contains_key("geo.location.lon"), "{a:?}");
            }
            Some("216.160.83.56") => {
                assert_eq!(a.get("geo.country.iso_code").map(String::as_str), Some("US"), "{name}: {a:?}");
                assert!(a.contains_key("as.number"), "ASN missing: {a:?}");
            }
            Some("10.200.0.7") => {
                assert!(!a.keys().any(|k| k.contains("geo.") || k.starts_with("as.")), "private enriched: {a:?}");
            }
            other => panic!("{name}: unexpected client.address {other:?}"),
        }
    }
}
