//! Exporter against in-process backends: a tonic OTLP server and an axum
//! OTLP/HTTP server that fail on demand.
use super::*;
use crate::stats::counter;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::codec::CompressionEncoding;
use tonic_types::{ErrorDetails, StatusExt};

fn spans(n: usize, tag: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        span_id: vec![tag, i as u8, 0, 0, 0, 0, 0, 1],
                        name: format!("s{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[derive(Default)]
struct Backend {
    received: Mutex<Vec<ExportTraceServiceRequest>>,
    headers: Mutex<Vec<(String, String)>>,
    encodings: Mutex<Vec<String>>,
    /// Fail this many calls first with `fail_with`.
    fail_first: AtomicUsize,
    calls: AtomicUsize,
    /// Each call takes this long (a slow backend), and the most calls seen at once.
    delay_ms: std::sync::atomic::AtomicU64,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

#[derive(Clone)]
struct GrpcBackend(Arc<Backend>, fn() -> tonic::Status, u64);

#[tonic::async_trait]
impl TraceService for GrpcBackend {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.0.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_active.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.0.delay_ms.load(Ordering::SeqCst))).await;
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        for (k, v) in req.metadata().clone().into_headers().iter() {
            self.0.headers.lock().push((k.to_string(), v.to_str().unwrap_or("").to_string()));
        }
        if self.0.fail_first.load(Ordering::SeqCst) > 0 {
            self.0.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err((self.1)());
        }
        self.0.received.lock().push(req.into_inner());
        let partial_success = (self.2 > 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: self.2 as i64, error_message: "too old".into() });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

async fn grpc_backend(fail_first: usize, fail_with: fn() -> tonic::Status, rejected: u64) -> (Arc<Backend>, String) {
    let b = Arc::new(Backend { fail_first: AtomicUsize::new(fail_first), ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(GrpcBackend(b.clone(), fail_with, rejected))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(tokio_stream_from(listener)));
    (b, format!("http://{addr}"))
}

fn tokio_stream_from(
    l: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

fn cfg(endpoint: &str, protocol: OtlpProtocol) -> ExportConfig {
    ExportConfig {
        signal: Signal::Traces,
        endpoint: endpoint.into(),
        protocol,
        timeout: Duration::from_secs(2),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        retry_max_elapsed: Some(Duration::from_secs(10)),
        // Most tests check delivery order, which only one request in flight guarantees.
        max_concurrent: 1,
        ..Default::default()
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unavailable() -> tonic::Status {
    tonic::Status::unavailable("backend restarting")
}

#[tokio::test]
async fn grpc_retries_unavailable_with_headers_and_gzip() {
    let (b, ep) = grpc_backend(3, unavailable, 0).await;
    let mut c = cfg(&ep, OtlpProtocol::Grpc);
    c.headers = vec![("api-key".into(), "secret".into())];
    c.compression = Compression::Gzip;
    let retried = counter("cnflow.export.retried", &[("signal", "traces")]);
    let before = retried.get();
    let ex = Exporter::start(Some(c), None, None).unwrap();
    ex.send_traces(spans(3, 1)).unwrap();
    ex.send_traces(spans(2, 2)).unwrap();
    ex.shutdown(Duration::from_secs(10)).await;
    let got = b.received.lock().clone();
    assert_eq!(got, vec![spans(3, 1), spans(2, 2)], "delivered once each, in order");
    assert_eq!(b.calls.load(Ordering::SeqCst), 5);
    assert!(retried.get() >= before + 3);
    let h = b.headers.lock().clone();
    assert!(h.contains(&("api-key".into(), "secret".into())), "{h:?}");
    assert!(h.contains(&("grpc-encoding".into(), "gzip".into())), "{h:?}");
}

#[tokio::test]
async fn several_requests_in_flight_against_a_slow_backend() {
    let (b, ep) = grpc_backend(0, unavailable, 0).await;
    b.delay_ms.store(100, Ordering::SeqCst);
    let mut c = cfg(&ep, OtlpProtocol::Grpc);
    c.max_concurrent = 4;
    let ex = Exporter::start(Some(c), None, None).unwrap();
    let t0 = Instant::now();
    for tag in 0..12 {
        ex.send_traces(spans(1, tag)).unwrap();
    }
    ex.shutdown(Duration::from_secs(10)).await;
    let mut got = b.received.lock().clone();
    got.sort_by_key(|r| r.resource_spans[0].scope_spans[0].spans[0].span_id.clone());
    assert_eq!(got, (0..12).map(|tag| spans(1, tag)).collect::<Vec<_>>(), "every request delivered once");
    assert_eq!(b.max_active.load(Ordering::SeqCst), 4, "never more than the configured requests at once");
    // 12 sequential 100 ms calls would take 1.2 s; four at a time take ~0.3 s.
    assert!(t0.elapsed() < Duration::from_millis(1000), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn grpc_resource_exhausted_retried_only_with_retry_info() {
    fn plain() -> tonic::Status {
        tonic::Status::resource_exhausted("full")
    }
    fn with_info() -> tonic::Status {
        tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "full",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(10))),
        )
    }
    let (b, ep) = grpc_backend(1, plain, 0).await;
    let ex = Exporter::start(Some(cfg(&ep, OtlpProtocol::Grpc)), None, None).unwrap();
    ex.send_traces(spans(1, 1)).unwrap();
    ex.shutdown(Duration::from_secs(5)).await;
    assert_eq!(b.calls.load(Ordering::SeqCst), 1, "not retried without RetryInfo");
    assert!(b.received.lock().is_empty());

    let (b, ep) = grpc_backend(1, with_info, 0).await;
    let ex = Exporter::start(Some(cfg(&ep, OtlpProtocol::Grpc)), None, None).unwrap();
    ex.send_traces(spans(1, 1)).unwrap();
    ex.shutdown(Duration::from_secs(5)).await;
    assert_eq!(b.calls.load(Ordering::SeqCst), 2);
    assert_eq!(b.received.lock().len(), 1);
}

#[tokio::test]
async fn grpc_partial_success_counted() {
    let (b, ep) = grpc_backend(0, unavailable, 2).await;
    let rejected = counter("cnflow.export.rejected", &[("signal", "traces")]);
    let before = rejected.get();
    let ex = Exporter::start(Some(cfg(&ep, OtlpProtocol::Grpc)), None, None).unwrap();
    ex.send_traces(spans(5, 1)).unwrap();
    ex.shutdown(Duration::from_secs(5)).await;
    assert_eq!(b.received.lock().len(), 1);
    assert!(rejected.get() >= before + 2);
}

#[tokio::test]
async fn queue_full_while_backend_down_then_everything_queued_arrives() {
    // Reserve a port, keep it closed until the "backend comes up".
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut c = cfg(&format!("http://{addr}"), OtlpProtocol::Grpc);
    c.queue_size = 10;
    c.retry_max_elapsed = None;
    let dropped = counter("cnflow.export.dropped", &[("signal", "traces")]);
    let before = dropped.get();
    let ex = Exporter::start(Some(c), None, None).unwrap();
    let mut accepted = vec![];
    let mut refused = 0;
    for i in 0..8u8 {
        match ex.send_traces(spans(2, i)) {
            Ok(()) => accepted.push(spans(2, i)),
            Err(QueueFull) => refused += 1,
        }
    }
    assert_eq!(accepted.len(), 5);
    assert_eq!(refused, 3);
    assert!(dropped.get() >= before + 6);
    assert_eq!(ex.free(Signal::Traces), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let b = Arc::new(Backend::default());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcBackend(b.clone(), unavailable, 0)))
            .serve_with_incoming(tokio_stream_from(listener)),
    );
    wait_until("queued data delivered", || b.received.lock().len() == 5).await;
    assert_eq!(*b.received.lock(), accepted);
    ex.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn shutdown_gives_up_at_the_deadline() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut c = cfg(&format!("http://{addr}"), OtlpProtocol::Grpc);
    c.retry_max_elapsed = None;
    let ex = Exporter::start(Some(c), None, None).unwrap();
    ex.send_traces(spans(1, 1)).unwrap();
    let t = Instant::now();
    ex.shutdown(Duration::from_millis(300)).await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

// --- HTTP ---

#[derive(Clone)]
struct HttpState(Arc<Backend>, u16);

async fn http_handler(
    axum::extract::State(s): axum::extract::State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.0.calls.fetch_add(1, Ordering::SeqCst);
    for (k, v) in headers.iter() {
        s.0.headers.lock().push((k.to_string(), v.to_str().unwrap_or("").to_string()));
    }
    if s.0.fail_first.load(Ordering::SeqCst) > 0 {
        s.0.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (axum::http::StatusCode::from_u16(s.1).unwrap(), [("retry-after", "0")], "busy").into_response();
    }
    let enc = headers.get("content-encoding").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    s.0.encodings.lock().push(enc.clone());
    let raw = match enc.as_str() {
        "gzip" => {
            let mut out = vec![];
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
            out
        }
        "zstd" => zstd::decode_all(&body[..]).unwrap(),
        _ => body.to_vec(),
    };
    let req = if headers.get("content-type").unwrap() == "application/json" {
        serde_json::from_slice(&raw).unwrap()
    } else {
        ExportTraceServiceRequest::decode(&raw[..]).unwrap()
    };
    s.0.received.lock().push(req);
    let resp = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess { rejected_spans: 0, error_message: String::new() }),
    };
    ([("content-type", "application/x-protobuf")], resp.encode_to_vec()).into_response()
}

async fn http_backend(fail_first: usize, status: u16) -> (Arc<Backend>, String) {
    let b = Arc::new(Backend { fail_first: AtomicUsize::new(fail_first), ..Default::default() });
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(http_handler))
        .with_state(HttpState(b.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (b, format!("http://{addr}/v1/traces"))
}

#[tokio::test]
async fn http_retries_503_and_429_with_compression_and_headers() {
    for (status, compression, enc) in [(503, Compression::Gzip, "gzip"), (429, Compression::Zstd, "zstd")] {
        let (b, ep) = http_backend(2, status).await;
        let mut c = cfg(&ep, OtlpProtocol::HttpProtobuf);
        c.compression = compression;
        c.headers = vec![("x-api-key".into(), "k1".into())];
        let ex = Exporter::start(Some(c), None, None).unwrap();
        ex.send_traces(spans(4, 9)).unwrap();
        ex.shutdown(Duration::from_secs(10)).await;
        assert_eq!(*b.received.lock(), vec![spans(4, 9)]);
        assert_eq!(b.calls.load(Ordering::SeqCst), 3);
        assert_eq!(*b.encodings.lock(), vec![enc.to_string()]);
        assert!(b.headers.lock().contains(&("x-api-key".into(), "k1".into())));
    }
}

#[tokio::test]
async fn http_json_and_permanent_400() {
    let (b, ep) = http_backend(0, 400).await;
    let ex = Exporter::start(Some(cfg(&ep, OtlpProtocol::HttpJson)), None, None).unwrap();
    ex.send_traces(spans(2, 3)).unwrap();
    ex.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*b.received.lock(), vec![spans(2, 3)]);

    let (b, ep) = http_backend(5, 400).await;
    let ex = Exporter::start(Some(cfg(&ep, OtlpProtocol::HttpProtobuf)), None, None).unwrap();
    ex.send_traces(spans(2, 3)).unwrap();
    ex.shutdown(Duration::from_secs(5)).await;
    assert_eq!(b.calls.load(Ordering::SeqCst), 1, "400 is not retried");
}

#[tokio::test]
async fn signal_without_endpoint_is_discarded() {
    let ex = Exporter::start(None, None, None).unwrap();
    assert!(ex.send_traces(spans(1, 1)).is_ok());
    assert!(!ex.exports(Signal::Traces));
    ex.shutdown(Duration::from_millis(10)).await;
}
