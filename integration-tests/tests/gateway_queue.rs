//! The gateway binary with real processes: its disk queue survives SIGKILL
//! (while the backend is down, and right after an acknowledgement), and a
//! destination that is down does not hold back the others.
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

struct Gateway(std::process::Child);
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(grpc: u16, backend: u16, dir: &std::path::Path) -> Gateway {
    start_gateway_with(grpc, backend, Some(dir), &[("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20")])
}

/// The gateway binary exporting over gRPC to 127.0.0.1:`backend`, with a disk
/// queue in `dir` (if any); `extra` variables are set last (they win).
fn start_gateway_with(grpc: u16, backend: u16, dir: Option<&std::path::Path>, extra: &[(&str, &str)]) -> Gateway {
    let mut cmd = std::process::Command::new(harness::cnflow_bin());
    cmd.arg("gateway")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{backend}"))
        // The backend counts spans: keep the gateway's own spans out of it.
        .env("CNFLOW_SELF_TELEMETRY", "false")
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_EXPORT_RETRY_INITIAL_BACKOFF_MS", "50")
        .env("CNFLOW_EXPORT_RETRY_MAX_BACKOFF_MS", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(d) = dir {
        cmd.env("CNFLOW_GATEWAY_QUEUE_DIR", d);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Gateway(cmd.spawn().unwrap())
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
    let [grpc, backend_port] = harness::free_ports();
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

/// `n` spans named `{prefix}-{i}` in one request.
fn request(prefix: &str, n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n).map(|i| Span { name: format!("{prefix}-{i}"), ..Default::default() }).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "port {port} not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `f()` stops changing for `quiet` (or `limit` passes); returns the last value.
async fn settle(limit: Duration, quiet: Duration, mut f: impl FnMut() -> usize) -> usize {
    let t = Instant::now();
    let (mut last, mut since) = (f(), Instant::now());
    while t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = f();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// The scenario: an extra destination is down, queues hold 200
/// items, 400 OTLP/HTTP requests of 10 spans arrive. Returns (requests
/// acknowledged, spans the healthy primary received, span names sent and
/// acknowledged) and leaves the gateway running.
async fn one_destination_down(
    dir: Option<&std::path::Path>,
    down_port: u16,
) -> (Gateway, u16, Arc<OtlpSink>, Vec<String>, usize) {
    let [grpc, http, primary_port] = harness::free_ports();
    let primary = Arc::new(OtlpSink::new().count_only());
    let primary_l = tokio::net::TcpListener::bind(("127.0.0.1", primary_port)).await.unwrap();
    primary.serve_grpc(primary_l);
    let extra = format!("http://127.0.0.1:{down_port}");
    let http_listen = format!("127.0.0.1:{http}");
    let gw = start_gateway_with(
        grpc,
        primary_port,
        dir,
        &[
            ("CNFLOW_GATEWAY_EXTRA_ENDPOINTS", &extra),
            ("CNFLOW_GATEWAY_HTTP_LISTEN", &http_listen),
            ("CNFLOW_EXPORT_QUEUE_SIZE", "200"),
        ],
    );
    wait_port(http);
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut refused = 0;
    let t = Instant::now();
    for r in 0..400 {
        let req = request(&format!("r{r}"), 10);
        let resp = client
            .post(format!("http://127.0.0.1:{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&req))
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            acked.extend((0..10).map(|i| format!("r{r}-{i}")));
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "FIGURE: 400 sequential requests answered in {:?} (disk queue: {})",
        t.elapsed(),
        if dir.is_some() { "on" } else { "off" }
    );
    (gw, http, primary, acked, refused)
}

/// Span names in the request files of a disk queue directory.
fn queued_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "pb") {
            let req: ExportTraceServiceRequest = prost::Message::decode(&std::fs::read(e.path()).unwrap()[..]).unwrap();
            let spans = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
            out.extend(spans.map(|s| s.name.clone()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_does_not_hold_back_the_primary() {
    // The scenario as reported (memory queues), then with a disk queue.
    let dir = tempfile::tempdir().unwrap();
    for qdir in [None, Some(dir.path())] {
        let [down] = harness::free_ports();
        let (_gw, _http, primary, acked, refused) = one_destination_down(qdir, down).await;
        let count = || primary.span_count.load(std::sync::atomic::Ordering::SeqCst) as usize;
        let got = settle(Duration::from_secs(20), Duration::from_millis(500), count).await;
        eprintln!(
            "FIGURE: primary received {got} of 4000 spans; {} requests acknowledged, {refused} refused",
            acked.len() / 10
        );
        assert_eq!(refused, 0, "no request refused because of the down destination");
        assert_eq!(got, 4000, "the healthy primary gets everything");
        let Some(qdir) = qdir else { continue };

        // What the down destination's queue holds (read from its files), then it comes back.
        let held = queued_names(&qdir.join("destination-1/traces"));
        // An empty queue takes a whole batch, so how much it holds depends on timing; the files say.
        assert!(!held.is_empty(), "the extra's queue holds the first batch at least");
        // Its memory queue (CNFLOW_EXPORT_QUEUE_SIZE=200) is full long before
        // 4,000 spans: the rest spilled to its disk queue instead of being dropped.
        eprintln!("FIGURE: the down extra destination holds {} of 4000 spans on disk (spill)", held.len());
        assert_eq!(held.len(), 4000, "with a disk queue a full destination spills instead of dropping");
        let extra = Arc::new(OtlpSink::new());
        extra.serve_grpc(tokio::net::TcpListener::bind(("127.0.0.1", down)).await.unwrap());
        let n = settle(Duration::from_secs(20), Duration::from_millis(500), || extra.spans().len()).await;
        let mut got = names_received(&extra);
        got.sort();
        assert_eq!(n, held.len());
        assert_eq!(got, held, "the extra receives exactly what its queue held, once");
        assert_eq!(count(), 4000, "and the primary nothing more");
    }
}

/// Acknowledged means durable: the gateway is SIGKILLed right after the last
/// acknowledgement, once with the batch still open (long batch timeout: only
/// the journal holds it) and once with batches committed on every second
/// request (the kill lands among commits). After a restart with the backend
/// up, every acknowledged span arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_span_survives_a_kill_right_after_the_ack() {
    for (batch_size, timeout_ms) in [("8192", "60000"), ("8", "60000")] {
        let dir = tempfile::tempdir().unwrap();
        let [grpc, backend_port] = harness::free_ports();
        let vars = [("CNFLOW_GATEWAY_BATCH_SIZE", batch_size), ("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", timeout_ms)];
        let mut acked = Vec::new();
        {
            let _gw = start_gateway_with(grpc, backend_port, Some(dir.path()), &vars);
            let mut client = connect(grpc).await;
            for r in 0..25 {
                let req = request(&format!("b{batch_size}-r{r}"), 4);
                let names: Vec<String> = (0..4).map(|i| format!("b{batch_size}-r{r}-{i}")).collect();
                client.export(req).await.expect("acknowledged");
                acked.extend(names);
            }
            // _gw dropped here, right after the last acknowledgement: SIGKILL.
        }
        let backend = Arc::new(OtlpSink::new());
        backend.serve_grpc(tokio::net::TcpListener::bind(("127.0.0.1", backend_port)).await.unwrap());
        let _gw =
            start_gateway_with(grpc, backend_port, Some(dir.path()), &[("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20")]);
        let n = settle(Duration::from_secs(20), Duration::from_millis(700), || backend.spans().len()).await;
        let mut got = names_received(&backend);
        got.sort();
        acked.sort();
        assert_eq!(n, acked.len(), "batch size {batch_size}");
        assert_eq!(got, acked, "batch size {batch_size}: every acknowledged span exactly once");
        let journal = dir.path().join("journal/traces");
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0, "journal empty once committed");
    }
}
