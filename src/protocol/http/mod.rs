//! What HTTP/1 and HTTP/2 share: the exchange detail and the HTTP span
//! mapping. Not a protocol of its own (the registry lists `http1` and
//! `http2`); their decoders both fill an [`HttpDetail`].
mod detail;
pub mod semconv;

pub use detail::HttpDetail;
