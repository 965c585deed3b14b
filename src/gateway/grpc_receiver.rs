//! OTLP/gRPC receiver (traces, metrics, logs) on the tonic servers generated
//! in opentelemetry-proto: gzip/zstd accepted, size-limited, optional TLS and
//! bearer-token auth.
use super::auth::Auth;
use super::pipeline::{ForwardingPipeline, Refused};
use crate::export::{Payload, Signal};
use crate::stats::counter;
use anyhow::Context;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How long refused clients are told to wait (RetryInfo makes RESOURCE_EXHAUSTED retryable per OTLP).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

fn to_status(e: Refused) -> Status {
    match e {
        Refused::Busy => Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "gateway export queue is full",
            ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
        ),
        Refused::ShuttingDown => Status::unavailable("gateway is shutting down"),
        Refused::Storage => Status::unavailable("gateway cannot persist the request"),
        // What the generated servers answer for a request that fails to parse
        // (INTERNAL, per gRPC's status code mapping).
        Refused::Invalid(e) => Status::internal(e),
    }
}

#[derive(Clone)]
pub struct Svc(pub Arc<ForwardingPipeline>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.ingest(Payload::Traces(req.into_inner())).await.map_err(to_status)?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.ingest(Payload::Metrics(req.into_inner())).await.map_err(to_status)?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.ingest(Payload::Logs(req.into_inner())).await.map_err(to_status)?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// One OTLP export method served on the raw path (`RawServer`).
trait RawMethod: Send + Sync + 'static {
    const SERVICE: &'static str;
    const PATH: &'static str;
    const SIGNAL: Signal;
    type Response: prost::Message + Default + Send + 'static;
}

struct TracesMethod;
impl RawMethod for TracesMethod {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Traces;
    type Response = ExportTraceServiceResponse;
}

struct LogsMethod;
impl RawMethod for LogsMethod {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
    type Response = ExportLogsServiceResponse;
}

/// The generated Trace/LogsServiceServer with a codec that hands the request
/// bytes to `ingest_encoded` undecoded (edited on the wire, see `wire`).
struct RawServer<M> {
    pipeline: Arc<ForwardingPipeline>,
    max_request_bytes: usize,
    method: PhantomData<M>,
}

impl<M> Clone for RawServer<M> {
    fn clone(&self) -> Self {
        Self { pipeline: self.pipeline.clone(), max_request_bytes: self.max_request_bytes, method: PhantomData }
    }
}

impl<M: RawMethod> NamedService for RawServer<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M: RawMethod> tonic::codegen::Service<http::Request<tonic::body::Body>> for RawServer<M> {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != M::PATH {
            // As the generated servers answer unknown methods.
            return Box::pin(async move {
                let mut r = http::Response::new(tonic::body::Body::default());
                r.headers_mut().insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                r.headers_mut().insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(r)
            });
        }
        let unary = RawUnary::<M> { pipeline: self.pipeline.clone(), method: PhantomData };
        let max = self.max_request_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawServerCodec::<M::Response>(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            Ok(grpc.unary(unary, req).await)
        })
    }
}

struct RawUnary<M> {
    pipeline: Arc<ForwardingPipeline>,
    method: PhantomData<M>,
}

impl<M: RawMethod> tonic::server::UnaryService<bytes::Bytes> for RawUnary<M> {
    type Response = M::Response;
    type Future = BoxFuture<Response<M::Response>, Status>;

    fn call(&mut self, req: Request<bytes::Bytes>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            pipeline.ingest_encoded(M::SIGNAL, req.into_inner()).await.map_err(to_status)?;
            Ok(Response::new(M::Response::default()))
        })
    }
}

/// Server codec of the raw path: request bytes in as they came, typed response out.
/// Public for `examples/otlp_bench.rs` (a sink that counts on the wire).
pub struct RawServerCodec<R>(PhantomData<R>);

impl<R> Default for RawServerCodec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct ResponseEncoder<R>(PhantomData<R>);

pub struct BytesDecoder;

impl<R: prost::Message + Send + 'static> tonic::codec::Codec for RawServerCodec<R> {
    type Encode = R;
    type Decode = bytes::Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = BytesDecoder;
    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(PhantomData)
    }
    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

impl<R: prost::Message> tonic::codec::Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl tonic::codec::Decoder for BytesDecoder {
    type Item = bytes::Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The accepted connections, with TCP_NODELAY (see `super::accepted`).
pub(super) fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    pipeline: Arc<ForwardingPipeline>,
    auth: Auth,
    tls: Option<super::tls::TlsPem>,
    max_request_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let unauthenticated = counter("cnflow.gateway.unauthenticated", &[("protocol", "grpc")]);
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        if auth.check(req.metadata().get("authorization").map(|v| v.as_bytes())) {
            Ok(req)
        } else {
            unauthenticated.inc();
            Err(Status::unauthenticated("missing or invalid bearer token"))
        }
    };
    let svc = Svc(pipeline);
    macro_rules! server {
        ($server:ident) => {
            InterceptedService::new(
                $server::new(svc.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(max_request_bytes),
                check.clone(),
            )
        };
    }
    let mut b = Server::builder();
    if let Some(pem) = tls {
        let mut t = ServerTlsConfig::new().identity(Identity::from_pem(pem.cert, pem.key));
        if let Some(ca) = pem.client_ca {
            // Client certificate required (tonic's default once a client CA is set).
            t = t.client_ca_root(Certificate::from_pem(ca));
        }
        b = b.tls_config(t).context("CNFLOW_GATEWAY_TLS_*: gRPC receiver TLS")?;
    }
    let raw_traces = RawServer::<TracesMethod> { pipeline: svc.0.clone(), max_request_bytes, method: PhantomData };
    let raw_logs = RawServer::<LogsMethod> { pipeline: svc.0.clone(), max_request_bytes, method: PhantomData };
    b.add_service(InterceptedService::new(raw_traces, check.clone()))
        .add_service(server!(MetricsServiceServer))
        .add_service(InterceptedService::new(raw_logs, check.clone()))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}
