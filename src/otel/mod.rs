//! OpenTelemetry vocabulary shared by the protocol mappings and the
//! telemetry sink: semantic-convention names and instruments, attribute
//! values, span parts, URL route templating. Depends on no other cnflow
//! module, so `protocol` (which maps exchanges to spans) and `telemetry`
//! (which sends them) both build on it without importing each other.
pub mod attr;
pub mod route;
pub mod semconv;
pub mod span;
