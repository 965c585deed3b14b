//! The protocol registry: the one list naming every L7 protocol cnflow
//! decodes. Detection ([`super::detect`]), dispatch ([`super::Dispatcher`]),
//! the exchange's `protocol` label and `detail` ([`Protocol`], [`Detail`],
//! re-exported from `crate::exchange`), the span and histogram of each
//! exchange (`telemetry::span`, through [`SpanMapping`]) and `cnflow replay --format count` all go
//! through it; none of them names a protocol.
//!
//! # Adding a protocol
//! 1. A folder `src/protocol/<name>/` with
//!    - `mod.rs`: the probe, the per-connection decoder (a [`ConnDecoder`]),
//!      and a unit struct implementing [`L7Protocol`];
//!    - `detail.rs`: its detail type (`Debug + Clone + Default + Serialize`);
//!    - `semconv.rs`: `impl SpanMapping for <Name>Detail` (span name, kind,
//!      attributes, status, which duration histogram with which attributes);
//!    - unit tests and a proptest fuzz of the decoder.
//! 2. `pub mod <name>;` in `src/protocol/mod.rs` (Rust needs the module
//!    declared there), and one line in the `registry!` list below:
//!    `Postgres => postgres::Postgres ; Postgres(postgres::PostgresDetail),`.
//!    The left name becomes the [`Protocol`] variant, `<Name>::NAME` its
//!    serialized name ("postgres") and the `protocol` attribute of
//!    `cnflow.protocol.detected`; the part after `;` adds the [`Detail`]
//!    variant (serialized as `"kind": "postgres"`), written once per detail
//!    type (HTTP/1, HTTP/2 and gRPC share `Http`).
//!
//! # Order
//! Append new protocols at the end: the list order is the order of the
//! `cnflow.protocol.detected` series in the output. When two probes are
//! equally confident, the higher [`L7Protocol::TIE_BREAK`] wins, then the
//! one listed first (HTTP/2 beats HTTP/1, whose probe also accepts the
//! `PRI * HTTP/2.0` preface line).
//!
//! # Cost
//! Everything here is static dispatch (a `match` generated from the list):
//! probes run only on a connection's first bytes, a decoder is chosen once
//! per connection and then called through one `Box<dyn ConnDecoder>`, the
//! span mapping once per exchange. Nothing runs per byte.
// Every protocol module (`pub mod <name>;` in protocol/mod.rs) is in scope here.
use super::*;
use crate::flow::{Conn, StreamDir, Transport};
use crate::otel::span::{Kind, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use serde::Serialize;

/// One L7 protocol: how it is recognised and decoded. Implemented by a unit
/// struct in the protocol's folder; only associated items, so every call is
/// resolved at compile time.
pub trait L7Protocol {
    /// Serialized name: the exchange JSON `"protocol"` value, the
    /// `protocol` attribute of `cnflow.protocol.detected`, replay's count key.
    /// Lower case, unique.
    const NAME: &'static str;
    /// Transports its probe is tried on. Empty for a label another decoder
    /// assigns (gRPC is found by the HTTP/2 decoder, never probed on its own).
    const TRANSPORTS: &'static [Transport];
    /// Content detection on the first bytes of one direction (`dir` is the
    /// direction of `data`). Claims a flow only on evidence: a wrong label is
    /// worse than none. For datagram transports `data` is one datagram.
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe;
    /// Content detection over the first bytes of both directions at once
    /// (either may be empty; for stream transports). The default merges
    /// [`probe`](Self::probe) of each non-empty direction, the stronger answer
    /// winning. A protocol whose evidence is the pairing of the two sides (a
    /// request shape that other protocols share, confirmed only by the reply
    /// it gets) overrides this instead.
    fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
        let mut answer = Probe::No;
        for (dir, data) in [(StreamDir::ToServer, to_server), (StreamDir::ToClient, to_client)] {
            if !data.is_empty() {
                answer = answer.merge(Self::probe(conn, dir, data));
            }
        }
        answer
    }
    /// Server ports the protocol commonly uses: a small confidence bonus,
    /// never sufficient on its own.
    fn port_hint(_port: u16) -> bool {
        false
    }
    /// Wins over a lower value when two probes are equally confident (the
    /// port bonus included). Only for probes known to overlap.
    const TIE_BREAK: u8 = 0;
    /// A decoder for one connection, fed from its first byte (or from the
    /// first byte captured).
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder>;
}

/// The semantic-convention mapping of one detail type: what telemetry makes
/// of an exchange carrying it. Implemented in each folder's `semconv.rs`.
pub trait SpanMapping {
    /// The span of `kind` for `ex` (whose detail is `self`): name, attributes,
    /// ERROR status, and which duration histogram with which low-cardinality
    /// attributes (`SpanParts::metric`). Shared pieces (`endpoint_attrs`,
    /// `outcome_error`, `push_opt`) are in `protocol::span_common`, the
    /// vocabulary (`SpanParts`, `Kind`, `Instrument`, `Attrs`) in `crate::otel`.
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts;
    /// Trace-context headers (W3C `traceparent`/`tracestate`, B3) the request
    /// carried, lower-case names: the span joins that trace.
    fn trace_headers(&self) -> &[(String, String)] {
        &[]
    }
    /// Status text as sent by the server (HTTP/1 reason phrase), shown in the
    /// text output.
    fn status_reason(&self) -> Option<&str> {
        None
    }
    /// Messages the exchange carried to or from a broker, for the
    /// `messaging.client.sent.messages` / `consumed.messages` counters
    /// (attributes taken from the span). None for everything else.
    fn messages(&self, _ex: &Exchange) -> Option<(crate::otel::semconv::MessageCounter, u64)> {
        None
    }
}

macro_rules! registry {
    ($( $id:ident => $imp:ty $(; $dv:ident($dt:ty))? ),+ $(,)?) => {
        /// An exchange's protocol (the registry's entries, in list order).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Protocol {
            $($id),+
        }

        impl Protocol {
            /// Every protocol, in list order.
            pub const ALL: &'static [Protocol] = &[$(Protocol::$id),+];

            /// Serialized name, e.g. "http1" ([`L7Protocol::NAME`]).
            pub fn name(self) -> &'static str {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::NAME),+
                }
            }
            /// Transports the protocol is probed on ([`L7Protocol::TRANSPORTS`]).
            pub fn transports(self) -> &'static [Transport] {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::TRANSPORTS),+
                }
            }
            pub fn probe(self, conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::probe(conn, dir, data)),+
                }
            }
            /// [`L7Protocol::probe_flow`].
            pub fn probe_flow(self, conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::probe_flow(conn, to_server, to_client)),+
                }
            }
            /// [`L7Protocol::TIE_BREAK`].
            pub fn tie_break(self) -> u8 {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::TIE_BREAK),+
                }
            }
            pub fn port_hint(self, port: u16) -> bool {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::port_hint(port)),+
                }
            }
            pub fn new_decoder(self, cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
                match self {
                    $(Protocol::$id => <$imp as L7Protocol>::new_decoder(cfg)),+
                }
            }
        }

        /// Protocol-specific fields of an exchange, one variant per detail type.
        #[derive(Debug, Clone, Serialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum Detail {
            $($($dv($dt),)?)+
        }

        impl Detail {
            /// The detail's semantic-convention mapping.
            pub fn mapping(&self) -> &dyn SpanMapping {
                match self {
                    $($(Detail::$dv(d) => d,)?)+
                }
            }
        }
    };
}

registry! {
//  Protocol => implementation      ; Detail variant (once per detail type)
    Http1 => http1::Http1           ; Http(Box<http::HttpDetail>),
    Http2 => http2::Http2,
    Grpc => http2::grpc::Grpc,
    Dns => dns::Dns                 ; Dns(dns::DnsDetail),
    Redis => redis::Redis           ; Redis(Box<redis::RedisDetail>),
    Kafka => kafka::Kafka           ; Kafka(kafka::KafkaDetail),
    Icmp => icmp::Icmp              ; Icmp(icmp::IcmpDetail),
    Memcached => memcached::Memcached ; Memcached(memcached::MemcachedDetail),
    Nats => nats::Nats              ; Nats(nats::NatsDetail),
    Mqtt => mqtt::Mqtt              ; Mqtt(mqtt::MqttDetail),
    Postgres => postgres::Postgres  ; Postgres(postgres::PostgresDetail),
    Mysql => mysql::Mysql           ; Mysql(mysql::MysqlDetail),
    Mongodb => mongodb::Mongodb     ; Mongodb(mongodb::MongodbDetail),
    Amqp => amqp::Amqp              ; Amqp(amqp::AmqpDetail),
}

/// A boxed detail maps as the detail. HTTP's and Redis's are boxed: the
/// decoder allocates it once per request and every move after that (pending
/// queue, response, exchange batch) is a pointer, not the detail's 224–270 bytes.
impl<T: SpanMapping + ?Sized> SpanMapping for Box<T> {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        (**self).span_parts(ex, kind, cx)
    }
    fn trace_headers(&self) -> &[(String, String)] {
        (**self).trace_headers()
    }
    fn status_reason(&self) -> Option<&str> {
        (**self).status_reason()
    }
    fn messages(&self, ex: &Exchange) -> Option<(crate::otel::semconv::MessageCounter, u64)> {
        (**self).messages(ex)
    }
}

/// Serialized as its [`L7Protocol::NAME`], so the name is declared once.
impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit_variant("Protocol", *self as u32, self.name())
    }
}

impl Detail {
    /// See [`SpanMapping::span_parts`].
    pub fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        self.mapping().span_parts(ex, kind, cx)
    }
    /// See [`SpanMapping::trace_headers`].
    pub fn trace_headers(&self) -> &[(String, String)] {
        self.mapping().trace_headers()
    }
    /// See [`SpanMapping::status_reason`].
    pub fn status_reason(&self) -> Option<&str> {
        self.mapping().status_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_case_and_serialized() {
        let mut seen = std::collections::HashSet::new();
        for p in Protocol::ALL {
            let n = p.name();
            assert!(seen.insert(n), "duplicate protocol name {n}");
            assert_eq!(n, n.to_ascii_lowercase());
            assert_eq!(serde_json::to_string(p).unwrap(), format!("\"{n}\""));
            assert_eq!(format!("{p:?}").to_ascii_lowercase(), n, "variant and NAME disagree");
        }
    }
}
