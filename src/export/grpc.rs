//! OTLP/gRPC sender built on the tonic clients generated in opentelemetry-proto.
use super::config::{Compression, ExportConfig};
use super::payload::Payload;
use super::retry::SendOutcome;
use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub struct GrpcSender {
    channel: Channel,
    metadata: MetadataMap,
    compression: Option<CompressionEncoding>,
    timeout: Duration,
}

impl GrpcSender {
    pub fn new(cfg: &ExportConfig) -> Result<Self> {
        let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
            .with_context(|| format!("invalid gRPC endpoint {}", cfg.display_endpoint()))?
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout);
        if cfg.is_tls() {
            let mut tls = ClientTlsConfig::new();
            tls = match &cfg.ca_pem {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &cfg.client_identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            ep = ep.tls_config(tls).context("TLS configuration for the OTLP exporter")?;
        }
        let mut metadata = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.as_bytes()).with_context(|| format!("invalid header name {k:?}"))?;
            let val = MetadataValue::try_from(v.as_str()).with_context(|| format!("invalid value for header {k:?}"))?;
            metadata.insert(key, val);
        }
        let compression = match cfg.compression {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        };
        // Lazy: the backend may be down at start-up; sends then fail and retry.
        Ok(Self { channel: ep.connect_lazy(), metadata, compression, timeout: cfg.timeout })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        *r.metadata_mut() = self.metadata.clone();
        r.set_timeout(self.timeout);
        r
    }

    pub async fn send(&self, p: &Payload) -> SendOutcome {
        macro_rules! call {
            ($client:ident, $req:expr, $rejected:ident) => {{
                let mut c = $client::new(self.channel.clone()).max_decoding_message_size(16 << 20);
                if let Some(enc) = self.compression {
                    c = c.send_compressed(enc);
                }
                c = c.accept_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Zstd);
                match c.export(self.request($req.clone())).await {
                    Ok(resp) => {
                        let ps = resp.into_inner().partial_success.unwrap_or_default();
                        SendOutcome::Delivered { rejected: ps.$rejected as u64, message: ps.error_message }
                    }
                    Err(s) => classify(&s),
                }
            }};
        }
        match p {
            Payload::Traces(r) => call!(TraceServiceClient, r, rejected_spans),
            Payload::Metrics(r) => call!(MetricsServiceClient, r, rejected_data_points),
            Payload::Logs(r) => call!(LogsServiceClient, r, rejected_log_records),
        }
    }
}

/// Retryable codes per the OTLP specification; RESOURCE_EXHAUSTED only when
/// the server says when to come back (RetryInfo).
pub fn classify(s: &Status) -> SendOutcome {
    let reason = format!("gRPC {:?}: {}", s.code(), s.message());
    let hint = s.get_details_retry_info().and_then(|ri| ri.retry_delay);
    match s.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => SendOutcome::Retry { after: hint, reason },
        Code::ResourceExhausted if hint.is_some() => SendOutcome::Retry { after: hint, reason },
        _ => SendOutcome::Fail { reason },
    }
}
