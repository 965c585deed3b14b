//! The parts of a span a protocol's mapping produces, and the settings that
//! shape them. Protocol-independent; the mappings are in
//! `src/protocol/<name>/semconv.rs`, the assembly into OTLP in `telemetry`.
use super::attr::{Attrs, Str};
use super::route::RouteTemplater;
use super::semconv::Instrument;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
    /// Messaging send (publish) seen from the client end.
    Producer,
    /// Messaging receive (delivery) seen from the client end.
    Consumer,
}

impl Kind {
    /// OTLP SpanKind value.
    pub fn otlp(self) -> i32 {
        match self {
            Kind::Server => 2,
            Kind::Client => 3,
            Kind::Producer => 4,
            Kind::Consumer => 5,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }
}

/// Settings that shape names and attributes.
#[derive(Debug, Clone)]
pub struct NamingOptions {
    pub mask_query_values: bool,
    pub unmask_db_statements: bool,
    pub dns_nxdomain_is_error: bool,
    pub metrics_server_address: bool,
}

impl Default for NamingOptions {
    fn default() -> Self {
        Self {
            mask_query_values: true,
            unmask_db_statements: false,
            dns_nxdomain_is_error: false,
            metrics_server_address: false,
        }
    }
}

/// What a protocol's span mapping may use besides the exchange.
pub struct SpanCx<'a> {
    pub opts: &'a NamingOptions,
    /// Learns URL path templates (HTTP routes) across exchanges.
    pub routes: &'a mut RouteTemplater,
    /// Set by the caller when no span will be exported for this exchange
    /// (metrics-only output, or the sampler drops it unless it is an error):
    /// only `metric`, whether `error` is set, and the `error.type` the metric
    /// copies are needed. A mapping may then skip the span's name and other
    /// attributes (most of its cost) and says so in `reduced`; one that
    /// ignores it builds the whole span, which is always correct.
    pub metric_only: bool,
    /// Set by a mapping that honoured `metric_only`: the parts are not a span
    /// (the caller builds the whole span again if it keeps one after all).
    pub reduced: bool,
}

impl<'a> SpanCx<'a> {
    /// For a whole span.
    pub fn new(opts: &'a NamingOptions, routes: &'a mut RouteTemplater) -> Self {
        Self { opts, routes, metric_only: false, reduced: false }
    }
}

/// Everything about one span except ids, times and resource.
#[derive(Debug, Clone)]
pub struct SpanParts {
    /// Inline when short (`GET`, `SET`, `GET /users/{id}`): no allocation per span.
    pub name: Str,
    pub kind: Kind,
    pub attrs: Attrs,
    /// Some(message) when the status is ERROR.
    pub error: Option<String>,
    /// The duration histogram this span feeds, with its low-cardinality attributes.
    pub metric: Option<(Instrument, Attrs)>,
    /// Attributes from the Enricher naming the peer's workload (`k8s.peer.*`, `service.peer.*`).
    pub peer: Vec<(String, String)>,
}
