//! Names, attributes and status of the span for one side of an exchange,
//! following the OpenTelemetry semantic conventions (v1.37). The per-protocol
//! part is each protocol's `SpanMapping` (`src/protocol/<name>/semconv.rs`,
//! reached through the registry); this module holds what they share.
//!
//! Status policy (ERROR, with `error.type`):
//! - any exchange that timed out (`timeout`) or was reset (`reset`);
//! - HTTP: 5xx on SERVER spans, 4xx and 5xx on CLIENT spans (semconv);
//! - gRPC: any non-OK status on CLIENT spans; on SERVER spans only the codes
//!   semconv counts as server faults (UNKNOWN, DEADLINE_EXCEEDED,
//!   UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS);
//! - Redis: an error reply (`error.type` = its prefix, e.g. `WRONGTYPE`);
//! - Kafka: a non-zero error code in the response;
//! - DNS: any rcode other than NOERROR and NXDOMAIN (NXDOMAIN is a normal
//!   answer; `CNFLOW_DNS_NXDOMAIN_IS_ERROR=true` makes it an error too);
//! - ICMP: errors received (unreachable, time exceeded, parameter problem).
use super::attr::{Attrs, V};
use super::route::RouteTemplater;
use super::semconv::Instrument;
use crate::exchange::{Exchange, Outcome};
use crate::flow::Transport;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
}

impl Kind {
    /// OTLP SpanKind value.
    pub fn otlp(self) -> i32 {
        match self {
            Kind::Server => 2,
            Kind::Client => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
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
}

/// Everything about one span except ids, times and resource.
#[derive(Debug, Clone)]
pub struct SpanParts {
    pub name: String,
    pub kind: Kind,
    pub attrs: Attrs,
    /// Some(message) when the status is ERROR.
    pub error: Option<String>,
    /// The duration histogram this span feeds, with its low-cardinality attributes.
    pub metric: Option<(Instrument, Attrs)>,
    /// Attributes from the Enricher naming the peer's workload (`k8s.peer.*`, `service.peer.*`).
    pub peer: Vec<(String, String)>,
}

/// What the Enricher knows about the other side of an exchange.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub attributes: Vec<(String, String)>,
    /// A name for the server address (e.g. a Service `name.namespace`), used
    /// as server.address when the request carried no Host/:authority.
    pub server_name: Option<String>,
}

fn network_type(a: &SocketAddr) -> &'static str {
    match a.ip() {
        std::net::IpAddr::V4(_) => "ipv4",
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "ipv4",
        std::net::IpAddr::V6(_) => "ipv6",
    }
}

/// Split a Host header / :authority into host and port.
fn split_host(h: &str) -> (String, Option<u16>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host.to_string(), after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().ok()),
        _ => (h.to_string(), None),
    }
}

pub(crate) fn endpoint_attrs(ex: &Exchange, kind: Kind, host: Option<&str>, a: &mut Attrs) {
    let c = &ex.conn;
    let (peer, local) = match kind {
        Kind::Client => (c.server, c.client),
        Kind::Server => (c.client, c.server),
    };
    let (server_addr, server_port) = match host.map(split_host) {
        Some((h, p)) if !h.is_empty() => (h, p.unwrap_or(c.server.port())),
        _ => (c.server.ip().to_string(), c.server.port()),
    };
    a.push(("server.address", server_addr.into()));
    if server_port != 0 {
        a.push(("server.port", (server_port as i64).into()));
    }
    a.push(("client.address", c.client.ip().to_string().into()));
    if c.client.port() != 0 {
        a.push(("client.port", (c.client.port() as i64).into()));
    }
    a.push(("network.peer.address", peer.ip().to_string().into()));
    if peer.port() != 0 {
        a.push(("network.peer.port", (peer.port() as i64).into()));
    }
    a.push(("network.local.address", local.ip().to_string().into()));
    if local.port() != 0 {
        a.push(("network.local.port", (local.port() as i64).into()));
    }
    match c.transport {
        Transport::Tcp => a.push(("network.transport", "tcp".into())),
        Transport::Udp => a.push(("network.transport", "udp".into())),
        Transport::Icmp => {}
    }
    a.push(("network.type", network_type(&c.server).into()));
}

pub(crate) fn outcome_error(ex: &Exchange, a: &mut Attrs) -> Option<String> {
    let (ty, msg) = match ex.outcome {
        Outcome::Complete => return None,
        Outcome::Timeout => ("timeout", "no response before the timeout"),
        Outcome::Reset => ("reset", "connection or stream reset before the response"),
    };
    a.push(("error.type", ty.into()));
    Some(msg.to_string())
}

pub(crate) fn push_opt<T: Into<V>>(a: &mut Attrs, k: &'static str, v: Option<T>) {
    if let Some(v) = v {
        a.push((k, v.into()));
    }
}

/// Build the span of `kind` for `ex`. `routes` learns from HTTP paths.
pub fn build(ex: &Exchange, kind: Kind, routes: &mut RouteTemplater, opts: &NamingOptions) -> SpanParts {
    build_with_peer(ex, kind, routes, opts, Peer::default())
}

/// [`build`] plus what the Enricher knows about the peer.
pub fn build_with_peer(
    ex: &Exchange,
    kind: Kind,
    routes: &mut RouteTemplater,
    opts: &NamingOptions,
    peer: Peer,
) -> SpanParts {
    // Each protocol's mapping lives in its folder (`protocol/<name>/semconv.rs`).
    let mut p = ex.detail.span_parts(ex, kind, &mut SpanCx { opts, routes });
    if ex.partial {
        p.attrs.push(("cnflow.partial", true.into()));
    }
    if let Some(name) = peer.server_name {
        let ip = ex.conn.server.ip().to_string();
        if let Some((_, v)) = p.attrs.iter_mut().find(|(k, _)| *k == "server.address") {
            if *v == V::S(ip) {
                *v = V::S(name);
            }
        }
    }
    p.peer = peer.attributes;
    p
}

#[cfg(test)]
mod tests;
