//! What a gRPC call carries on top of its HTTP/2 exchange.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GrpcDetail {
    pub service: String,
    pub method: String,
    /// From trailers (or headers-only response). None when not seen.
    pub status_code: Option<u32>,
    pub message: Option<String>,
    /// Number of request / response messages (length-prefixed frames) seen.
    pub request_messages: u32,
    pub response_messages: u32,
}
