//! OpenTelemetry semantic-convention names used by cnflow, kept in one place
//! so tests can check that every attribute we emit is either one of these
//! registry keys or lives in cnflow's own `cnflow.` namespace.

/// Schema of the conventions followed (span/metric names and attributes).
/// 1.39 renamed the RPC attributes and metrics (rpc.system → rpc.system.name,
/// rpc.grpc.status_code → rpc.response.status_code, fully-qualified rpc.method,
/// rpc.*.duration in ms → rpc.*.call.duration in s); cnflow follows 1.39 there.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.39.0";

/// Attribute keys from the OpenTelemetry semantic-conventions registry (v1.39)
/// that cnflow emits on spans and metrics. Not our own invention: each is a
/// registry entry (http.*, url.*, network.*, server.*, client.*, rpc.*,
/// db.*, messaging.*, dns.*, error.type, user_agent.original).
pub const REGISTRY_KEYS: &[&str] = &[
    "client.address",
    "client.port",
    "db.collection.name",
    "db.namespace",
    "db.operation.name",
    "db.query.summary",
    "db.query.text",
    "db.response.returned_rows",
    "db.response.status_code",
    "db.system.name",
    "dns.answers",
    "dns.question.name",
    "error.type",
    "http.request.body.size",
    "http.request.method",
    "http.request.method_original",
    "http.response.body.size",
    "http.response.status_code",
    "http.route",
    "messaging.batch.message_count",
    "messaging.client.id",
    "messaging.consumer.group.name",
    "messaging.destination.name",
    "messaging.destination.template",
    "messaging.destination.temporary",
    "messaging.message.body.size",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.rabbitmq.message.delivery_tag",
    "messaging.system",
    "network.local.address",
    "network.local.port",
    "network.peer.address",
    "network.peer.port",
    "network.protocol.name",
    "network.protocol.version",
    "network.transport",
    "network.type",
    "rpc.method",
    "rpc.response.status_code",
    "rpc.system.name",
    "server.address",
    "server.port",
    "url.path",
    "url.query",
    "url.scheme",
    "url.template",
    "user_agent.original",
    "tls.protocol.name",
    "tls.protocol.version",
];

/// SDK-defined attribute marking the series that absorbs attribute sets beyond the cardinality limit.
pub const OVERFLOW_KEY: &str = "otel.metric.overflow";

pub fn is_allowed_key(key: &str) -> bool {
    REGISTRY_KEYS.contains(&key) || key.starts_with("cnflow.") || key == OVERFLOW_KEY || is_peer_key(key)
}

/// Peer workload attributes added by the Kubernetes Enricher: semconv's
/// `service.peer.*` and the `k8s.*` resource keys under `k8s.peer.`.
pub fn is_peer_key(key: &str) -> bool {
    key.starts_with("k8s.peer.") || key == "service.peer.name" || key == "service.peer.namespace"
}

/// Explicit bucket boundaries advised by semconv for http.*.request.duration and
/// rpc.*.call.duration (s); also used by messaging.client.operation.duration and
/// dns.lookup.duration.
pub const HTTP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Advised for db.client.operation.duration (s).
pub const DB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
/// ICMP echo round trips are usually sub-millisecond on a LAN.
pub const ICMP_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A duration histogram cnflow produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Instrument {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
    Db,
    Messaging,
    Dns,
    IcmpRtt,
}

impl Instrument {
    pub fn name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http.server.request.duration",
            Instrument::HttpClient => "http.client.request.duration",
            Instrument::RpcServer => "rpc.server.call.duration",
            Instrument::RpcClient => "rpc.client.call.duration",
            Instrument::Db => "db.client.operation.duration",
            Instrument::Messaging => "messaging.client.operation.duration",
            Instrument::Dns => "dns.lookup.duration",
            Instrument::IcmpRtt => "cnflow.icmp.echo.rtt",
        }
    }
    pub fn unit(self) -> &'static str {
        "s"
    }
    pub fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::RpcServer => "Measures the duration of an incoming Remote Procedure Call (RPC).",
            Instrument::RpcClient => "Measures the duration of an outgoing Remote Procedure Call (RPC).",
            Instrument::Db => "Duration of database client operations.",
            Instrument::Messaging => "Duration of messaging operation initiated by a producer or consumer client.",
            Instrument::Dns => "Measures the time taken to perform a DNS lookup.",
            Instrument::IcmpRtt => "Round-trip time of ICMP echo requests.",
        }
    }
    pub fn buckets(self) -> &'static [f64] {
        match self {
            Instrument::Db => DB_BUCKETS,
            Instrument::IcmpRtt => ICMP_BUCKETS,
            _ => HTTP_BUCKETS,
        }
    }
    /// Value recorded for a duration in nanoseconds, in this instrument's unit (seconds).
    pub fn value(self, dur_ns: u64) -> f64 {
        dur_ns as f64 / 1e9
    }
}

/// A message counter cnflow produces for messaging protocols (semconv
/// `messaging.client.sent.messages` / `messaging.client.consumed.messages`),
/// incremented by what [`SpanMapping::messages`](crate::protocol::registry::SpanMapping::messages) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageCounter {
    /// Messages a producer sent (or attempted to send) to the broker.
    Sent,
    /// Messages delivered to a consumer (pushed or pulled).
    Consumed,
}

impl MessageCounter {
    pub fn name(self) -> &'static str {
        match self {
            MessageCounter::Sent => "messaging.client.sent.messages",
            MessageCounter::Consumed => "messaging.client.consumed.messages",
        }
    }
    pub fn unit(self) -> &'static str {
        "{message}"
    }
    pub fn description(self) -> &'static str {
        match self {
            MessageCounter::Sent => "Number of messages producer attempted to send to the broker.",
            MessageCounter::Consumed => "Number of messages that were delivered to the application.",
        }
    }
    /// The span attributes the counter keeps (semconv's, low cardinality):
    /// `messaging.destination.name` only when no template replaced it.
    pub fn keeps(key: &str) -> bool {
        matches!(
            key,
            "messaging.system"
                | "messaging.operation.name"
                | "messaging.destination.name"
                | "messaging.destination.template"
                | "messaging.consumer.group.name"
                | "error.type"
        )
    }
}
