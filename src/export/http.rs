//! OTLP/HTTP sender (protobuf or JSON bodies) on reqwest.
use super::config::{Compression, ExportConfig, OtlpProtocol};
use super::payload::Payload;
use super::retry::{http_retryable, parse_retry_after, SendOutcome};
use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use std::io::Write;

pub struct HttpSender {
    client: reqwest::Client,
    url: String,
    json: bool,
    compression: Compression,
}

impl HttpSender {
    pub fn new(cfg: &ExportConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("invalid header name {k:?}"))?;
            let val = HeaderValue::from_str(v).with_context(|| format!("invalid value for header {k:?}"))?;
            headers.insert(name, val);
        }
        let mut b = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("cnflow/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            for c in reqwest::Certificate::from_pem_bundle(pem).context("OTEL_EXPORTER_OTLP_CERTIFICATE")? {
                b = b.add_root_certificate(c);
            }
            b = b.tls_built_in_root_certs(false);
        }
        if let Some((cert, key)) = &cfg.client_identity_pem {
            let mut pem = cert.clone();
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(key);
            b = b.identity(
                reqwest::Identity::from_pem(&pem).context("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/CLIENT_KEY")?,
            );
        }
        Ok(Self {
            client: b.build().context("building the OTLP/HTTP client")?,
            url: cfg.endpoint.clone(),
            json: cfg.protocol == OtlpProtocol::HttpJson,
            compression: cfg.compression,
        })
    }

    pub async fn send(&self, p: &Payload) -> SendOutcome {
        let body = if self.json { p.to_json().into() } else { p.wire_bytes() };
        let (body, encoding) = match compress(self.compression, body) {
            Ok(x) => x,
            Err(e) => return SendOutcome::Fail { reason: format!("compression failed: {e}") },
        };
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, if self.json { "application/json" } else { "application/x-protobuf" })
            .body(body);
        if let Some(enc) = encoding {
            req = req.header(CONTENT_ENCODING, enc);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Connection refused, reset, timeout: the backend may come back.
            // Without the URL: it may carry credentials, and the log line names the endpoint.
            Err(e) => {
                return SendOutcome::Retry { after: None, reason: format!("HTTP request failed: {}", e.without_url()) }
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = resp.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            let (rejected, message) = partial_success(p, &bytes, self.json);
            return SendOutcome::Delivered { rejected, message };
        }
        let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let reason = format!("HTTP {status}: {snippet}");
        if http_retryable(status) {
            SendOutcome::Retry { after: retry_after, reason }
        } else {
            SendOutcome::Fail { reason }
        }
    }
}

fn compress(c: Compression, body: bytes::Bytes) -> std::io::Result<(bytes::Bytes, Option<&'static str>)> {
    Ok(match c {
        Compression::None => (body, None),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body)?;
            (e.finish()?.into(), Some("gzip"))
        }
        Compression::Zstd => (zstd::encode_all(&body[..], 3)?.into(), Some("zstd")),
    })
}

/// Rejected item count and message from a 2xx body (empty body = full success).
fn partial_success(p: &Payload, body: &[u8], json: bool) -> (u64, String) {
    if body.is_empty() {
        return (0, String::new());
    }
    macro_rules! ps {
        ($t:ty, $field:ident) => {{
            let r: Option<$t> = if json { serde_json::from_slice(body).ok() } else { <$t>::decode(body).ok() };
            r.and_then(|r| r.partial_success).map(|ps| (ps.$field as u64, ps.error_message)).unwrap_or_default()
        }};
    }
    match p.signal() {
        super::Signal::Traces => ps!(ExportTraceServiceResponse, rejected_spans),
        super::Signal::Metrics => ps!(ExportMetricsServiceResponse, rejected_data_points),
        super::Signal::Logs => ps!(ExportLogsServiceResponse, rejected_log_records),
    }
}
