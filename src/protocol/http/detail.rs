//! What an HTTP exchange carries (HTTP/1 and HTTP/2 alike; gRPC adds [`GrpcDetail`]).
use crate::otel::attr::Str;
use crate::protocol::http2::grpc::GrpcDetail;
use serde::Serialize;

/// Text fields are [`Str`]s: the short ones (methods, versions, hosts,
/// reasons, most paths) inline, so an exchange allocates no text for them,
/// and the span copies them without allocating either. The gRPC part is
/// boxed: the detail is moved several times per exchange (decoder, pairing,
/// the dispatcher's batch), and most HTTP exchanges have none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpDetail {
    /// "GET", "POST"... (None when not decoded).
    pub method: Option<Str>,
    /// Path without query.
    pub path: Option<Str>,
    /// Raw query string without '?', unmasked (telemetry masks it).
    pub query: Option<Str>,
    /// "1.0", "1.1", "2".
    pub version: Str,
    /// Host header or :authority.
    pub host: Option<Str>,
    pub user_agent: Option<Str>,
    pub status: Option<u16>,
    /// HTTP/1 reason phrase as sent ("OK", "Not Found"), bounded. `Some("")`
    /// when the status line ends in an empty one; None when it has none, when
    /// the status line was not seen, and always for HTTP/2 (which has none).
    /// Not exported as a span attribute: semconv defines none for it.
    pub reason: Option<Str>,
    pub request_content_length: Option<u64>,
    pub response_content_length: Option<u64>,
    /// Trace-context headers as seen on the request, lower-case names:
    /// traceparent, tracestate, b3, x-b3-traceid, x-b3-spanid, x-b3-sampled, x-b3-parentspanid.
    pub trace_headers: Vec<(String, String)>,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    /// Content-Type of the request (used to recognise gRPC).
    pub content_type: Option<Str>,
    pub grpc: Option<Box<GrpcDetail>>,
    /// RST_STREAM / GOAWAY error code, when the stream was reset.
    pub h2_error_code: Option<u32>,
}
