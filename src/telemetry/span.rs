//! Names, attributes and status of the span for one side of an exchange,
//! following the OpenTelemetry semantic conventions (v1.37). The per-protocol
//! part is each protocol's `SpanMapping` (`src/protocol/<name>/semconv.rs`,
//! reached through the registry); this module runs it for one side and adds
//! what only telemetry knows (the peer's workload). Shared span pieces are in
//! `crate::otel::span` and `crate::protocol::span_common`.
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
use crate::exchange::Exchange;
use crate::otel::attr::{Put, V};
use crate::otel::route::RouteTemplater;
pub use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};

/// What the Enricher knows about the other side of an exchange.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub attributes: Vec<(String, String)>,
    /// A name for the server address (e.g. a Service `name.namespace`), used
    /// as server.address when the request carried no Host/:authority.
    pub server_name: Option<String>,
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
    let mut p = ex.detail.span_parts(ex, kind, &mut SpanCx::new(opts, routes));
    finish(&mut p, ex, peer);
    p
}

/// The parts of `kind`'s side when its span will not be exported (no span
/// output, or the sampler drops the exchange unless it is an error): the
/// metric with its attributes and whether the span is an error are exact,
/// the rest may be missing (`true`: reduced, not a span). A mapping that
/// has no reduced form returns the whole span (`false`), then completed with
/// `peer()` like [`build_with_peer`].
pub fn build_for_metric(
    ex: &Exchange,
    kind: Kind,
    routes: &mut RouteTemplater,
    opts: &NamingOptions,
    peer: impl FnOnce() -> Peer,
) -> (SpanParts, bool) {
    let mut cx = SpanCx { metric_only: true, ..SpanCx::new(opts, routes) };
    let mut p = ex.detail.span_parts(ex, kind, &mut cx);
    if cx.reduced {
        // What `finish` changes in the metric: TLS makes the scheme https.
        if crate::capture::tls_stream::TlsSource::of_ifindex(ex.conn.ifindex).is_some() {
            if let Some((_, m)) = p.metric.as_mut() {
                https_scheme(m);
            }
        }
    } else {
        finish(&mut p, ex, peer());
    }
    (p, cx.reduced)
}

/// What only the capture and the Enricher add to a protocol's span.
fn finish(p: &mut SpanParts, ex: &Exchange, peer: Peer) {
    if ex.partial {
        p.attrs.put("cnflow.partial", true);
    }
    // The join key's facts (TCP sequence numbers, UDP transaction id), for
    // the gateway to connect this span with the other node's half of the
    // exchange (`gateway::stitch`); the gateway strips them before export.
    crate::exchange::WireKey::each_attr(ex, |k, v| p.attrs.put(k, V::I(v)));
    if let Some(tls) = crate::capture::tls_stream::TlsSource::of_ifindex(ex.conn.ifindex) {
        tls_attrs(p, tls);
    }
    if let Some(name) = peer.server_name {
        let ip = crate::protocol::span_common::ip_text(ex.conn.server.ip());
        if let Some((_, v)) = p.attrs.iter_mut().find(|(k, _)| *k == "server.address") {
            if matches!(v, V::S(s) if *s == ip) {
                *v = V::from(name);
            }
        }
    }
    p.peer = peer.attributes;
}

fn https_scheme(attrs: &mut crate::otel::attr::Attrs) {
    if let Some((_, v)) = attrs.iter_mut().find(|(k, _)| *k == "url.scheme") {
        *v = V::from("https");
    }
}

/// Plaintext read at the TLS library (uprobes): the request went over TLS,
/// so HTTP's scheme is https, and the connection carries the TLS facts.
fn tls_attrs(p: &mut SpanParts, tls: crate::capture::tls_stream::TlsSource) {
    let metric = p.metric.as_mut().map(|(_, m)| m);
    for attrs in std::iter::once(&mut p.attrs).chain(metric) {
        https_scheme(attrs);
    }
    p.attrs.put("tls.protocol.name", "tls");
    if let Some(v) = tls.version {
        p.attrs.put("tls.protocol.version", v);
    }
    // The traced process, on spans only: as metric attributes (or on the
    // resource) a pid would make one series per short-lived client process.
    p.attrs.put("process.pid", i64::from(tls.pid));
    if let Some(exe) = crate::process::get(tls.pid).and_then(|i| i.executable.clone()) {
        p.attrs.put("process.executable.name", exe);
    }
}

#[cfg(test)]
mod tests;
