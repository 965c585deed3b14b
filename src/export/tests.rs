//! Exporter against in-process backends (the shared [`OtlpSink`]: OTLP/gRPC
//! and OTLP/HTTP) that fail on demand.
use super::*;
use crate::stats::counter;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::atomic::Ordering;
use test_sink::OtlpSink;
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

async fn grpc_backend(fail_first: usize, fail_with: fn() -> tonic::Status, rejected: u64) -> (Arc<OtlpSink>, String) {
    OtlpSink::new().with_failures(fail_first).with_grpc_error(fail_with).with_rejected_spans(rejected).grpc().await
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
    let retried = counter("cnflow.export.retried", &[("signal", "traces"), ("destination", "primary")]);
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
    let rejected = counter("cnflow.export.rejected", &[("signal", "traces"), ("destination", "primary")]);
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
    let dropped = counter("cnflow.export.dropped", &[("signal", "traces"), ("destination", "primary")]);
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

    let b = Arc::new(OtlpSink::new());
    b.serve_grpc(tokio::net::TcpListener::bind(addr).await.unwrap());
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

async fn http_backend(fail_first: usize, status: u16) -> (Arc<OtlpSink>, String) {
    OtlpSink::new().with_failures(fail_first).with_http_error(status).http().await
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

/// With a disk queue, a request the backend refuses for good (HTTP 400) and
/// one given up after the retry limit move to `dead-letter/<signal>/`, counted.
#[tokio::test]
async fn given_up_requests_go_to_the_dead_letter_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, ep) = http_backend(1, 400).await;
    let mut c = cfg(&ep, OtlpProtocol::HttpProtobuf);
    c.queue_dir = Some(dir.path().join("destination-0"));
    c.destination = "dead-letter-test".into();
    let e = Exporter::start(Some(c), None, None).unwrap();
    e.send_traces(spans(3, 1)).unwrap();
    e.send_traces(spans(2, 2)).unwrap();
    let dl = dir.path().join("destination-0/dead-letter/traces");
    let files = || std::fs::read_dir(&dl).map(|d| d.count()).unwrap_or(0);
    wait_until("a dead-lettered file", || files() == 1).await;
    let counted = counter("cnflow.export.dead_letter", &[("signal", "traces"), ("destination", "dead-letter-test")]);
    wait_until("the second request delivered", || e.queued(Signal::Traces) == 0).await;
    assert_eq!(counted.get(), 3);
    let f = std::fs::read_dir(&dl).unwrap().next().unwrap().unwrap().path();
    assert_eq!(Payload::decode(Signal::Traces, &std::fs::read(f).unwrap()).unwrap().items(), 3, "kept intact");
    assert_eq!(std::fs::read_dir(dir.path().join("destination-0/traces")).unwrap().count(), 0);
    e.shutdown(Duration::from_secs(1)).await;

    // Given up after CNFLOW_EXPORT_RETRY_MAX_ELAPSED_SECS: the backend never answers.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", probe.local_addr().unwrap());
    drop(probe);
    let mut c = cfg(&down, OtlpProtocol::Grpc);
    c.queue_dir = Some(dir.path().join("destination-1"));
    c.retry_max_elapsed = Some(Duration::from_millis(200));
    let e = Exporter::start(Some(c), None, None).unwrap();
    e.send_traces(spans(4, 3)).unwrap();
    let dl = dir.path().join("destination-1/dead-letter/traces");
    wait_until("given up → dead letter", || std::fs::read_dir(&dl).map(|d| d.count()).unwrap_or(0) == 1).await;
    e.shutdown(Duration::from_secs(1)).await;
}
