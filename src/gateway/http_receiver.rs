//! OTLP/HTTP receiver: POST /v1/traces, /v1/metrics, /v1/logs with
//! protobuf or JSON bodies, gzip/zstd content encoding, size limit, optional
//! TLS and bearer-token auth. Errors answer with a google.rpc.Status body in
//! the request's content type, as the OTLP specification asks.
use super::auth::Auth;
use super::pipeline::{ForwardingPipeline, Refused};
use crate::export::{Payload, Signal};
use crate::stats::counter;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;

#[derive(Clone)]
struct Ctx {
    pipeline: Arc<ForwardingPipeline>,
    auth: Auth,
    max: usize,
}

/// google.rpc.Status (code, message) for error bodies.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

fn reply(format: Format, status: StatusCode, grpc_code: tonic::Code, msg: &str) -> Response {
    counter("cnflow.gateway.http.errors", &[("status", status.as_str())]).inc();
    let s = RpcStatus { code: grpc_code as i32, message: msg.to_string() };
    let (ct, body) = match format {
        Format::Protobuf => ("application/x-protobuf", s.encode_to_vec()),
        Format::Json => ("application/json", serde_json::to_vec(&s).unwrap_or_default()),
    };
    let mut r = (status, [(header::CONTENT_TYPE, ct)], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut().insert(header::RETRY_AFTER, super::grpc_receiver::RETRY_AFTER.as_secs().into());
    }
    r
}

/// Decompresses with a hard output limit (a small gzip bomb must not expand unbounded).
fn decompress(encoding: &str, body: &[u8], max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    let res = match encoding {
        "" | "identity" => return Ok(body.to_vec()),
        "gzip" => flate2::read::GzDecoder::new(body).take(max as u64 + 1).read_to_end(&mut out),
        "zstd" => zstd::Decoder::new(body).and_then(|d| d.take(max as u64 + 1).read_to_end(&mut out)),
        other => return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported content-encoding {other:?}"))),
    };
    match res {
        Ok(_) if out.len() > max => Err((StatusCode::PAYLOAD_TOO_LARGE, format!("request larger than {max} bytes"))),
        Ok(_) => Ok(out),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("cannot decompress {encoding} body: {e}"))),
    }
}

fn decode(signal: Signal, format: Format, raw: &[u8]) -> Result<Payload, String> {
    match format {
        Format::Protobuf => Payload::decode(signal, raw).map_err(|e| e.to_string()),
        Format::Json => match signal {
            Signal::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(raw).map(Payload::Traces),
            Signal::Metrics => serde_json::from_slice::<ExportMetricsServiceRequest>(raw).map(Payload::Metrics),
            Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(raw).map(Payload::Logs),
        }
        .map_err(|e| e.to_string()),
    }
}

fn ok_body(signal: Signal, format: Format) -> Response {
    let body = match (signal, format) {
        (Signal::Traces, Format::Protobuf) => ExportTraceServiceResponse::default().encode_to_vec(),
        (Signal::Metrics, Format::Protobuf) => ExportMetricsServiceResponse::default().encode_to_vec(),
        (Signal::Logs, Format::Protobuf) => ExportLogsServiceResponse::default().encode_to_vec(),
        (_, Format::Json) => b"{}".to_vec(),
    };
    let ct = if format == Format::Json { "application/json" } else { "application/x-protobuf" };
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
}

async fn handle(signal: Signal, ctx: Ctx, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            return reply(
                Format::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                &format!("unsupported content-type {ct:?} (expected application/x-protobuf or application/json)"),
            )
        }
    };
    if !ctx.auth.check(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        counter("cnflow.gateway.unauthenticated", &[("protocol", "http")]).inc();
        let mut r =
            reply(format, StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated, "missing or invalid bearer token");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        return r;
    }
    let enc =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    let raw = match decompress(&enc, &body, ctx.max) {
        Ok(r) => r,
        Err((status, msg)) => return reply(format, status, tonic::Code::InvalidArgument, &msg),
    };
    // Protobuf trace and log bodies are handled on the wire (see `wire`).
    let ingested = if format == Format::Protobuf {
        ctx.pipeline.ingest_encoded(signal, raw.into()).await
    } else {
        let payload = match decode(signal, format, &raw) {
            Ok(p) => p,
            Err(e) => {
                return reply(
                    format,
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    &format!("cannot decode body: {e}"),
                )
            }
        };
        ctx.pipeline.ingest(payload).await
    };
    match ingested {
        Ok(()) => ok_body(signal, format),
        Err(Refused::Invalid(e)) => {
            reply(format, StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, &format!("cannot decode body: {e}"))
        }
        Err(Refused::Busy) => reply(
            format,
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::ResourceExhausted,
            "gateway export queue is full",
        ),
        Err(Refused::ShuttingDown) => {
            reply(format, StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable, "gateway is shutting down")
        }
        Err(Refused::Storage) => reply(
            format,
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "gateway cannot persist the request",
        ),
    }
}

pub fn router(pipeline: Arc<ForwardingPipeline>, auth: Auth, max: usize) -> Router {
    let ctx = Ctx { pipeline, auth, max };
    Router::new()
        .route("/v1/traces", post(|State(c): State<Ctx>, h: HeaderMap, b: Bytes| handle(Signal::Traces, c, h, b)))
        .route("/v1/metrics", post(|State(c): State<Ctx>, h: HeaderMap, b: Bytes| handle(Signal::Metrics, c, h, b)))
        .route("/v1/logs", post(|State(c): State<Ctx>, h: HeaderMap, b: Bytes| handle(Signal::Logs, c, h, b)))
        // The compressed body cannot be larger than the decompressed limit.
        .layer(DefaultBodyLimit::max(max))
        .with_state(ctx)
}

/// The plain-TCP listener, its connections with TCP_NODELAY (see `super::accepted`).
pub(super) fn plain(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| super::accepted(tcp))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match tls {
        None => axum::serve(plain(listener), app).with_graceful_shutdown(shutdown).await?,
        Some(acceptor) => {
            axum::serve(super::tls::TlsListener { inner: listener, acceptor }, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod fuzz {
    //! Receiver fuzzing at the function level (the binary is fuzzed over the
    //! network in `integration-tests/tests/gateway_fuzz.rs`).
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary bodies in either format and any signal decode or fail, never panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048), s in 0..3usize) {
            let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][s];
            let _ = decode(signal, Format::Protobuf, &body);
            let _ = decode(signal, Format::Json, &body);
        }

        /// Whatever the encoding and bytes, the output never exceeds the limit.
        #[test]
        fn decompression_is_bounded(body in proptest::collection::vec(any::<u8>(), 0..4096), enc in 0..3usize, max in 1024usize..8192) {
            let enc = ["gzip", "zstd", "identity"][enc];
            if let Ok(out) = decompress(enc, &body, max) {
                prop_assert!(enc == "identity" || out.len() <= max);
            }
        }

        /// Compressed valid data of any size: accepted up to the limit, 413 above, never more in memory.
        #[test]
        fn compressed_sizes_around_the_limit(len in 0usize..20_000, zstd_enc in any::<bool>(), cut in any::<bool>()) {
            let raw = vec![b'x'; len];
            let (enc, mut body) = if zstd_enc { ("zstd", zstd::encode_all(&raw[..], 1).unwrap()) } else { ("gzip", gzip(&raw)) };
            if cut {
                // A truncated stream is refused (or yields no more than it holds).
                body.truncate(body.len() / 2);
            }
            match decompress(enc, &body, 10_000) {
                Ok(out) => prop_assert!(out.len() <= 10_000 && (!cut || out.len() <= len) && (cut || out == raw)),
                Err((status, _)) => prop_assert!(
                    (status == StatusCode::PAYLOAD_TOO_LARGE && len > 10_000) || (status == StatusCode::BAD_REQUEST && cut)
                ),
            }
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        // 64 MiB of zeros: a ~64 KiB gzip body, a ~2 KiB zstd one.
        let zeros = vec![0u8; 64 << 20];
        for (enc, body) in [("gzip", gzip(&zeros)), ("zstd", zstd::encode_all(&zeros[..], 3).unwrap())] {
            let (status, msg) = decompress(enc, &body, 4 << 20).unwrap_err();
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{enc}: {msg}");
        }
    }
}
