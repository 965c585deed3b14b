//! OTLP/gRPC sender built on the tonic clients generated in opentelemetry-proto.
use super::config::{Compression, ExportConfig};
use super::payload::{Encoded, Payload};
use super::retry::SendOutcome;
use super::Signal;
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

/// TLS for an https endpoint: OTEL_EXPORTER_OTLP_CERTIFICATE (else the
/// system roots) and the client identity for mutual TLS. Shared with the
/// self-telemetry exporter so both trust the same CA.
pub fn client_tls(cfg: &ExportConfig) -> Option<ClientTlsConfig> {
    if !cfg.is_tls() {
        return None;
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &cfg.ca_pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    };
    if let Some((cert, key)) = &cfg.client_identity_pem {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Some(tls)
}

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
        if let Some(tls) = client_tls(cfg) {
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

    /// Responses are not asked for compressed (no grpc-accept-encoding): an
    /// OTLP response is empty or a few bytes, and a server that compresses
    /// it anyway (rotel) sent a 20-byte gzip stream per request whose
    /// inflater set-up showed in the agent's profile.
    pub async fn send(&self, p: &Payload) -> SendOutcome {
        macro_rules! call {
            ($client:ident, $req:expr, $rejected:ident) => {{
                let mut c = $client::new(self.channel.clone()).max_decoding_message_size(16 << 20);
                if let Some(enc) = self.compression {
                    c = c.send_compressed(enc);
                }
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
            Payload::Encoded(e) => self.send_encoded(e).await,
        }
    }

    /// The same unary call as the generated clients, with the request bytes
    /// sent as they are (no decode/encode round trip).
    async fn send_encoded(&self, e: &Encoded) -> SendOutcome {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
        let mut g = tonic::client::Grpc::new(self.channel.clone()).max_decoding_message_size(16 << 20);
        if let Some(enc) = self.compression {
            g = g.send_compressed(enc);
        }
        if let Err(err) = g.ready().await {
            // What the generated clients return in this case.
            return classify(&Status::unknown(format!("Service was not ready: {err}")));
        }
        macro_rules! unary {
            ($resp:ty, $path:literal, $rejected:ident) => {{
                let path = http::uri::PathAndQuery::from_static($path);
                let codec = RawCodec::<$resp>(std::marker::PhantomData);
                match g.unary(self.request(e.bytes.clone()), path, codec).await {
                    Ok(resp) => {
                        let ps = resp.into_inner().partial_success.unwrap_or_default();
                        SendOutcome::Delivered { rejected: ps.$rejected as u64, message: ps.error_message }
                    }
                    Err(s) => classify(&s),
                }
            }};
        }
        match e.signal {
            Signal::Traces => unary!(
                ExportTraceServiceResponse,
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                rejected_spans
            ),
            Signal::Metrics => unary!(
                ExportMetricsServiceResponse,
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                rejected_data_points
            ),
            Signal::Logs => unary!(
                ExportLogsServiceResponse,
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                rejected_log_records
            ),
        }
    }
}

/// Client codec for `Payload::Encoded`: request bytes out as they are, typed response in.
struct RawCodec<R>(std::marker::PhantomData<R>);

struct RawEncoder;

struct ResponseDecoder<R>(std::marker::PhantomData<R>);

impl<R: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawCodec<R> {
    type Encode = bytes::Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder<R> {
        ResponseDecoder(std::marker::PhantomData)
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl<R: prost::Message + Default> tonic::codec::Decoder for ResponseDecoder<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src).map(Some).map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
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
