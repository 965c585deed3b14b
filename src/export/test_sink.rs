//! Test support, not part of cnflow's API: an in-process OTLP trace backend
//! (gRPC and OTLP/HTTP) that records what it receives and can fail on demand;
//! with `serve_grpc_all_signals` it also records metrics and logs (gRPC).
//! Shared by the exporter's and the gateway's unit tests, the integration
//! tests (`gateway_e2e`, `gateway_queue`) and `examples/otlp_bench.rs`.
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::CompressionEncoding;

/// What the backend received, and how it behaves. Build with [`OtlpSink::new`]
/// and the `with_*` methods, then serve it on a listener (or several).
pub struct OtlpSink {
    /// Every accepted request, in arrival order (unless `count_only`).
    pub received: Mutex<Vec<ExportTraceServiceRequest>>,
    /// Metrics and logs requests (only with `serve_grpc_all_signals`), in arrival order.
    pub metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    pub logs: Mutex<Vec<ExportLogsServiceRequest>>,
    /// Request headers (gRPC metadata) of every call, failed ones included.
    pub headers: Mutex<Vec<(String, String)>>,
    /// `content-encoding` of every accepted HTTP request ("" = none).
    pub encodings: Mutex<Vec<String>>,
    /// Calls answered so far, failed ones included.
    pub calls: AtomicUsize,
    /// Spans in accepted requests.
    pub span_count: AtomicU64,
    /// Fail this many calls first (gRPC: `grpc_error`, HTTP: `http_error` with `retry-after: 0`).
    pub fail_first: AtomicUsize,
    /// Each gRPC call takes this long (a slow backend).
    pub delay_ms: AtomicU64,
    /// gRPC calls in progress, and the most seen at once.
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
    grpc_error: fn() -> tonic::Status,
    http_error: u16,
    rejected_spans: u64,
    count_only: bool,
}

fn unavailable() -> tonic::Status {
    tonic::Status::unavailable("backend restarting")
}

impl Default for OtlpSink {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            metrics: Mutex::default(),
            logs: Mutex::default(),
            headers: Mutex::default(),
            encodings: Mutex::default(),
            calls: AtomicUsize::new(0),
            span_count: AtomicU64::new(0),
            fail_first: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            grpc_error: unavailable,
            http_error: 503,
            rejected_spans: 0,
            count_only: false,
        }
    }
}

fn span_count(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum()
}

impl OtlpSink {
    pub fn new() -> Self {
        Self::default()
    }
    /// The first `n` calls fail.
    pub fn with_failures(self, n: usize) -> Self {
        self.fail_first.store(n, Ordering::SeqCst);
        self
    }
    /// The status failing gRPC calls get (default UNAVAILABLE).
    pub fn with_grpc_error(mut self, f: fn() -> tonic::Status) -> Self {
        self.grpc_error = f;
        self
    }
    /// The HTTP status failing HTTP calls get (default 503).
    pub fn with_http_error(mut self, status: u16) -> Self {
        self.http_error = status;
        self
    }
    /// Accepted gRPC calls answer with a partial success rejecting this many spans.
    pub fn with_rejected_spans(mut self, n: u64) -> Self {
        self.rejected_spans = n;
        self
    }
    /// Only count spans, keep no requests (throughput runs).
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Serves OTLP/gRPC (gzip and zstd accepted) on `listener`, on a spawned task.
    pub fn serve_grpc(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let svc = TraceServiceServer::new(Grpc(self.clone()))
            .max_decoding_message_size(64 << 20)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
    }

    /// Serves OTLP/gRPC traces (like `serve_grpc`), metrics and logs on `listener`.
    pub fn serve_grpc_all_signals(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let traces = TraceServiceServer::new(Grpc(self.clone()))
            .max_decoding_message_size(64 << 20)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let metrics = MetricsServiceServer::new(Grpc(self.clone()))
            .max_decoding_message_size(64 << 20)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let logs = LogsServiceServer::new(Grpc(self.clone()))
            .max_decoding_message_size(64 << 20)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(traces)
                .add_service(metrics)
                .add_service(logs)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
    }

    /// Metric data points received, over every metrics request.
    pub fn data_points(&self) -> usize {
        self.metrics.lock().iter().map(crate::export::payload::metric_items).sum()
    }

    /// Log records received, over every logs request.
    pub fn log_records(&self) -> usize {
        self.logs.lock().iter().map(crate::export::payload::log_items).sum()
    }

    /// Serves OTLP/HTTP `/v1/traces` (protobuf or JSON, gzip/zstd) on `listener`, on a spawned task.
    pub fn serve_http(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(http_export)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    /// A sink serving gRPC on a fresh 127.0.0.1 port, and its endpoint (`http://addr`).
    pub async fn grpc(self) -> (Arc<Self>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let s = Arc::new(self);
        s.serve_grpc(listener);
        (s, format!("http://{addr}"))
    }

    /// A sink serving OTLP/HTTP on a fresh 127.0.0.1 port, and its traces URL.
    pub async fn http(self) -> (Arc<Self>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let s = Arc::new(self);
        s.serve_http(listener);
        (s, format!("http://{addr}/v1/traces"))
    }

    /// Every received span, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .lock()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether this call is one of the `fail_first` ones.
    fn take_failure(&self) -> bool {
        self.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    fn accept(&self, req: ExportTraceServiceRequest) {
        self.span_count.fetch_add(span_count(&req), Ordering::SeqCst);
        if !self.count_only {
            self.received.lock().push(req);
        }
    }
}

struct Grpc(Arc<OtlpSink>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metrics.lock().push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.logs.lock().push(req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let s = &self.0;
        s.count_call();
        let now = s.active.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_active.fetch_max(now, Ordering::SeqCst);
        let delay = s.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
        if !s.count_only {
            let mut h = s.headers.lock();
            for (k, v) in req.metadata().clone().into_headers().iter() {
                h.push((k.to_string(), v.to_str().unwrap_or("").to_string()));
            }
        }
        if s.take_failure() {
            return Err((s.grpc_error)());
        }
        s.accept(req.into_inner());
        let partial_success = (s.rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: s.rejected_spans as i64,
            error_message: "too old".into(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

async fn http_export(
    axum::extract::State(s): axum::extract::State<Arc<OtlpSink>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    s.count_call();
    for (k, v) in headers.iter() {
        s.headers.lock().push((k.to_string(), v.to_str().unwrap_or("").to_string()));
    }
    if s.take_failure() {
        let status = StatusCode::from_u16(s.http_error).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, [("retry-after", "0")], "busy").into_response();
    }
    let enc = headers.get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    s.encodings.lock().push(enc.clone());
    let raw = match enc.as_str() {
        "gzip" => {
            let mut out = vec![];
            if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).is_err() {
                return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
            }
            out
        }
        "zstd" => match zstd::decode_all(&body[..]) {
            Ok(v) => v,
            Err(_) => return (StatusCode::BAD_REQUEST, "bad zstd").into_response(),
        },
        _ => body.to_vec(),
    };
    let json = headers.get("content-type").is_some_and(|v| v == "application/json");
    let req = if json {
        serde_json::from_slice(&raw).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(&raw[..]).map_err(|e| e.to_string())
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    s.accept(req);
    let resp = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess { rejected_spans: 0, error_message: String::new() }),
    };
    ([("content-type", "application/x-protobuf")], resp.encode_to_vec()).into_response()
}
