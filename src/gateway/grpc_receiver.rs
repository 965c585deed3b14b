//! OTLP/gRPC receiver (traces, metrics, logs) on the tonic servers generated
//! in opentelemetry-proto: gzip/zstd accepted, size-limited, optional TLS and
//! bearer-token auth.
use super::auth::Auth;
use super::pipeline::{ForwardingPipeline, Refused};
use crate::export::Payload;
use crate::stats::counter;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
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

pub async fn serve(
    listener: tokio::net::TcpListener,
    pipeline: Arc<ForwardingPipeline>,
    auth: Auth,
    tls: Option<(Vec<u8>, Vec<u8>)>,
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
    if let Some((cert, key)) = tls {
        b = b.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    b.add_service(server!(TraceServiceServer))
        .add_service(server!(MetricsServiceServer))
        .add_service(server!(LogsServiceServer))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}
