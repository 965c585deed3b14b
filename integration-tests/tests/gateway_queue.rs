//! Disk queue: the gateway binary is killed (SIGKILL) while the backend is
//! down and restarted; everything it accepted is delivered once the backend is up.
#[path = "../harness/mod.rs"]
mod harness;

use cnflow::export::test_sink::OtlpSink;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Names of the spans the backend received, in arrival order.
fn names_received(backend: &OtlpSink) -> Vec<String> {
    backend.spans().into_iter().map(|s| s.name).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Gateway(std::process::Child);
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(grpc: u16, backend: u16, dir: &std::path::Path) -> Gateway {
    let child = std::process::Command::new(harness::cnflow_bin())
        .arg("gateway")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{backend}"))
        // The backend counts spans: keep the gateway's own spans out of it.
        .env("CNFLOW_SELF_TELEMETRY", "false")
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_QUEUE_DIR", dir)
        .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20")
        .env("CNFLOW_EXPORT_RETRY_INITIAL_BACKOFF_MS", "50")
        .env("CNFLOW_EXPORT_RETRY_MAX_BACKOFF_MS", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Gateway(child)
}

async fn connect(port: u16) -> TraceServiceClient<tonic::transport::Channel> {
    let t = Instant::now();
    loop {
        if let Ok(c) = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "gateway did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn disk_queue_survives_a_kill_while_the_backend_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, backend_port) = (free_port(), free_port());
    let mut names = Vec::new();
    {
        let _gw = start_gateway(grpc, backend_port, dir.path());
        let mut client = connect(grpc).await;
        for i in 0..5 {
            let spans: Vec<Span> = (0..4)
                .map(|j| {
                    names.push(format!("s{i}-{j}"));
                    Span { name: format!("s{i}-{j}"), ..Default::default() }
                })
                .collect();
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            };
            client.export(req).await.unwrap();
        }
        // Batches reach the disk queue within the batch timeout.
        let qdir = dir.path().join("destination-0/traces");
        let t = Instant::now();
        while std::fs::read_dir(&qdir).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "nothing queued on disk");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // _gw dropped here: SIGKILL, no flush.
    }
    let backend = Arc::new(OtlpSink::new());
    backend.serve_grpc(tokio::net::TcpListener::bind(("127.0.0.1", backend_port)).await.unwrap());
    let _gw = start_gateway(grpc, backend_port, dir.path());
    let t = Instant::now();
    while names_received(&backend).len() < names.len() {
        assert!(t.elapsed() < Duration::from_secs(20), "delivered {:?}", names_received(&backend).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = names_received(&backend);
    got.sort();
    names.sort();
    assert_eq!(got, names, "every span exactly once");
}
