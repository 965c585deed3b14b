//! Names, attributes and status of the span for one side of an exchange,
//! per protocol, following the OpenTelemetry semantic conventions (v1.37).
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
use super::semconv::{grpc_code_name, Instrument, HTTP_METHODS};
use crate::exchange::{Detail, DnsDetail, Exchange, HttpDetail, IcmpDetail, KafkaDetail, Outcome, RedisDetail};
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

/// Replace every query value with `?`, keeping parameter names (which are
/// low-cardinality and useful) and the order.
pub fn mask_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !v.is_empty() => format!("{k}=?"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
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

fn endpoint_attrs(ex: &Exchange, kind: Kind, host: Option<&str>, a: &mut Attrs) {
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

fn outcome_error(ex: &Exchange, a: &mut Attrs) -> Option<String> {
    let (ty, msg) = match ex.outcome {
        Outcome::Complete => return None,
        Outcome::Timeout => ("timeout", "no response before the timeout"),
        Outcome::Reset => ("reset", "connection or stream reset before the response"),
    };
    a.push(("error.type", ty.into()));
    Some(msg.to_string())
}

fn push_opt<T: Into<V>>(a: &mut Attrs, k: &'static str, v: Option<T>) {
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
    let mut p = match &ex.detail {
        Detail::Http(h) if h.grpc.is_some() => grpc(ex, h, kind, opts),
        Detail::Http(h) => http(ex, h, kind, routes, opts),
        Detail::Dns(d) => dns(ex, d, kind, opts),
        Detail::Redis(r) => redis(ex, r, kind, opts),
        Detail::Kafka(k) => kafka(ex, k, kind),
        Detail::Icmp(i) => icmp(ex, i, kind),
    };
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

fn http(ex: &Exchange, h: &HttpDetail, kind: Kind, routes: &mut RouteTemplater, opts: &NamingOptions) -> SpanParts {
    let mut a = Attrs::new();
    let mut m = Attrs::new();
    let method = h.method.as_deref().map(|m| {
        if HTTP_METHODS.contains(&m) {
            (m.to_string(), None)
        } else {
            ("_OTHER".to_string(), Some(m.to_string()))
        }
    });
    if let Some((meth, orig)) = &method {
        a.push(("http.request.method", meth.clone().into()));
        push_opt(&mut a, "http.request.method_original", orig.clone());
        m.push(("http.request.method", meth.clone().into()));
    }
    let route = h.path.as_deref().map(|p| routes.template(p));
    let route_key = if kind == Kind::Server { "http.route" } else { "url.template" };
    if let Some(r) = &route {
        a.push((route_key, r.clone().into()));
        m.push((route_key, r.clone().into()));
    }
    push_opt(&mut a, "url.path", h.path.clone());
    if let Some(q) = h.query.as_deref().filter(|q| !q.is_empty()) {
        a.push(("url.query", if opts.mask_query_values { mask_query(q) } else { q.to_string() }.into()));
    }
    a.push(("url.scheme", "http".into()));
    m.push(("url.scheme", "http".into()));
    if let Some(s) = h.status {
        a.push(("http.response.status_code", (s as i64).into()));
        m.push(("http.response.status_code", (s as i64).into()));
    }
    push_opt(&mut a, "user_agent.original", h.user_agent.clone());
    push_opt(&mut a, "http.request.body.size", h.request_content_length.map(|v| v as i64));
    push_opt(&mut a, "http.response.body.size", h.response_content_length.map(|v| v as i64));
    a.push(("network.protocol.name", "http".into()));
    m.push(("network.protocol.name", "http".into()));
    if !h.version.is_empty() {
        a.push(("network.protocol.version", h.version.clone().into()));
        m.push(("network.protocol.version", h.version.clone().into()));
    }
    endpoint_attrs(ex, kind, h.host.as_deref(), &mut a);
    if kind == Kind::Client && opts.metrics_server_address {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    let mut error = outcome_error(ex, &mut a);
    if let (Some(s), None) = (h.status, &error) {
        let bad = match kind {
            Kind::Server => s >= 500,
            Kind::Client => s >= 400,
        };
        if bad {
            a.push(("error.type", s.to_string().into()));
            error = Some(informative_reason(s, h.reason.as_deref()).unwrap_or_default());
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.push(("error.type", v.clone()));
    }
    let name = match (&method, &route) {
        (Some((meth, _)), Some(r)) if meth != "_OTHER" => format!("{meth} {r}"),
        (Some((meth, _)), None) if meth != "_OTHER" => meth.clone(),
        _ => "HTTP".to_string(),
    };
    let inst = if kind == Kind::Server { Instrument::HttpServer } else { Instrument::HttpClient };
    SpanParts { name, kind, attrs: a, error, metric: Some((inst, m)), peer: vec![] }
}

/// The HTTP/1 reason phrase as the status message of an error span, but only
/// when it says more than the code. Semconv's HTTP span status rules say
/// "don't set the span status description if the reason can be inferred from
/// `http.response.status_code`", and Beyla sets no HTTP status message at all;
/// yet a phrase of the server's own ("503 Backend pool exhausted", nginx's
/// "494 Request Header Or Cookie Too Large") cannot be inferred, and it is the
/// first thing someone opening the failed span in Jaeger looks for. Standard
/// phrases, including the older RFC 2616 wordings servers still send, are
/// dropped; there is no reason attribute because semconv defines none.
fn informative_reason(code: u16, reason: Option<&str>) -> Option<String> {
    let reason = reason?.trim();
    let norm = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>();
    let said = norm(reason);
    if said.is_empty() {
        return None;
    }
    let canonical = http::StatusCode::from_u16(code).ok().and_then(|c| c.canonical_reason());
    let legacy: &[&str] = match code {
        413 => &["Request Entity Too Large"],
        414 => &["Request-URI Too Long", "Request-URI Too Large"],
        416 => &["Requested Range Not Satisfiable"],
        422 => &["Unprocessable Content"],
        500 => &["Internal Error", "Server Error"],
        504 => &["Gateway Time-out"],
        505 => &["HTTP Version not supported"],
        _ => &[],
    };
    let standard = canonical.into_iter().chain(legacy.iter().copied()).any(|c| norm(c) == said);
    (!standard).then(|| reason.to_string())
}

/// Server-side gRPC codes that semconv treats as errors of the server.
fn grpc_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn grpc(ex: &Exchange, h: &HttpDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let g = h.grpc.as_ref().expect("grpc detail");
    let mut a: Attrs = vec![("rpc.system.name", "grpc".into())];
    // Since semconv 1.39 rpc.method is fully qualified and absorbs rpc.service.
    if !g.method.is_empty() {
        let full = if g.service.is_empty() { g.method.clone() } else { format!("{}/{}", g.service, g.method) };
        a.push(("rpc.method", full.into()));
    }
    if let Some(c) = g.status_code {
        a.push(("rpc.response.status_code", grpc_code_name(c).into()));
    }
    let mut m = a.clone();
    a.push(("network.protocol.name", "http".into()));
    a.push(("network.protocol.version", "2".into()));
    push_opt(&mut a, "user_agent.original", h.user_agent.clone());
    a.push(("cnflow.grpc.request_messages", (g.request_messages as i64).into()));
    a.push(("cnflow.grpc.response_messages", (g.response_messages as i64).into()));
    endpoint_attrs(ex, kind, h.host.as_deref(), &mut a);
    if kind == Kind::Client && opts.metrics_server_address {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        match (g.status_code, h.status) {
            (Some(c), _) if c != 0 && (kind == Kind::Client || grpc_server_error(c)) => {
                a.push(("error.type", grpc_code_name(c).into()));
                error = Some(g.message.clone().unwrap_or_default());
            }
            (None, Some(s)) if s != 200 => {
                a.push(("error.type", s.to_string().into()));
                error = Some(String::new());
            }
            _ => {}
        }
    }
    let name = match (g.service.is_empty(), g.method.is_empty()) {
        (false, false) => format!("{}/{}", g.service, g.method),
        (false, true) => g.service.clone(),
        _ => "gRPC".to_string(),
    };
    let inst = if kind == Kind::Server { Instrument::RpcServer } else { Instrument::RpcClient };
    SpanParts { name, kind, attrs: a, error, metric: Some((inst, m)), peer: vec![] }
}

fn dns(ex: &Exchange, d: &DnsDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let mut a = Attrs::new();
    let mut m = Attrs::new();
    if let Some(q) = &d.question_name {
        a.push(("dns.question.name", q.clone().into()));
        m.push(("dns.question.name", q.clone().into()));
    }
    push_opt(&mut a, "cnflow.dns.question.type", d.question_type.clone());
    push_opt(&mut a, "cnflow.dns.rcode", d.rcode.clone());
    a.push(("cnflow.dns.id", (d.id as i64).into()));
    if d.rcode.is_some() {
        a.push(("cnflow.dns.answer_count", (d.answer_count as i64).into()));
    }
    if !d.answers.is_empty() {
        a.push(("dns.answers", V::A(d.answers.clone())));
    }
    if d.truncated {
        a.push(("cnflow.dns.truncated", true.into()));
    }
    a.push(("network.protocol.name", "dns".into()));
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if let (None, Some(rc)) = (&error, d.rcode.as_deref()) {
        let bad = match rc {
            "NOERROR" => false,
            "NXDOMAIN" => opts.dns_nxdomain_is_error,
            _ => true,
        };
        if bad {
            a.push(("error.type", rc.into()));
            error = Some(String::new());
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.push(("error.type", v.clone()));
    }
    let name = match (&d.question_type, &d.question_name) {
        (Some(t), Some(n)) => format!("{t} {n}"),
        (None, Some(n)) => format!("DNS {n}"),
        _ => "DNS".to_string(),
    };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Dns, m)), peer: vec![] }
}

fn redis(ex: &Exchange, r: &RedisDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let op = match &r.subcommand {
        Some(s) => format!("{} {s}", r.command),
        None => r.command.clone(),
    };
    let mut a: Attrs = vec![("db.system.name", "redis".into())];
    if !op.is_empty() {
        a.push(("db.operation.name", op.clone().into()));
    }
    if let Some(db) = r.db_index {
        a.push(("db.namespace", db.to_string().into()));
    }
    let mut m = a.clone();
    let text = if opts.unmask_db_statements { &r.query_raw } else { &r.query_masked };
    if !text.is_empty() {
        a.push(("db.query.text", text.clone().into()));
    }
    if r.resp_version > 0 {
        a.push(("network.protocol.name", "resp".into()));
        a.push(("network.protocol.version", r.resp_version.to_string().into()));
    }
    push_opt(&mut a, "cnflow.redis.response_type", r.response_type.clone());
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && r.error.is_some() {
        let prefix = r.error_prefix.clone().unwrap_or_else(|| "ERR".to_string());
        a.push(("db.response.status_code", prefix.clone().into()));
        a.push(("error.type", prefix.into()));
        error = r.error.clone();
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.push((key, v.clone()));
        }
    }
    let name = if op.is_empty() { "redis".to_string() } else { op };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

/// "OffsetCommit" → "offset_commit".
fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn kafka(ex: &Exchange, k: &KafkaDetail, kind: Kind) -> SpanParts {
    let op = if k.api_name.is_empty() { format!("api_{}", k.api_key) } else { snake(&k.api_name) };
    let op_type = match k.api_key {
        0 => Some("send"),
        1 => Some("receive"),
        8 => Some("settle"),
        _ => None,
    };
    let mut a: Attrs = vec![("messaging.system", "kafka".into()), ("messaging.operation.name", op.clone().into())];
    push_opt(&mut a, "messaging.operation.type", op_type);
    let dest = (k.topics.len() == 1).then(|| k.topics[0].clone());
    push_opt(&mut a, "messaging.destination.name", dest.clone());
    let mut m = a.clone();
    if k.topics.len() > 1 {
        a.push(("cnflow.kafka.topics", V::A(k.topics.clone())));
    }
    push_opt(&mut a, "messaging.client.id", k.client_id.clone());
    // Produce and Fetch carry record batches on the wire, whichever client
    // call made them, so they are batch operations in semconv's sense (0 for
    // an empty long-poll Fetch). Only when the decoder counted every batch.
    push_opt(&mut a, "messaging.batch.message_count", k.record_count.map(|n| n as i64));
    push_opt(&mut a, "cnflow.kafka.record_bytes", k.record_bytes.map(|n| n as i64));
    a.push(("cnflow.kafka.api_key", (k.api_key as i64).into()));
    a.push(("cnflow.kafka.api_version", (k.api_version as i64).into()));
    a.push(("cnflow.kafka.correlation_id", (k.correlation_id as i64).into()));
    if k.error_code != 0 {
        a.push(("cnflow.kafka.error_code", (k.error_code as i64).into()));
    }
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && k.error_code != 0 {
        let name = k.error_name.clone().unwrap_or_else(|| k.error_code.to_string());
        a.push(("error.type", name.clone().into()));
        error = Some(name);
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.push(("error.type", v.clone()));
    }
    let name = match dest {
        Some(d) => format!("{op} {d}"),
        None => op,
    };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Messaging, m)), peer: vec![] }
}

fn icmp_is_error(i: &IcmpDetail) -> bool {
    if i.v6 {
        matches!(i.icmp_type, 1..=4)
    } else {
        matches!(i.icmp_type, 3 | 11 | 12)
    }
}

fn icmp(ex: &Exchange, i: &IcmpDetail, kind: Kind) -> SpanParts {
    let family = if i.v6 { "ICMPv6" } else { "ICMP" };
    let label = if i.name.is_empty() { format!("type_{}", i.icmp_type) } else { i.name.clone() };
    let mut a: Attrs = vec![
        ("cnflow.icmp.type", (i.icmp_type as i64).into()),
        ("cnflow.icmp.code", (i.code as i64).into()),
        ("cnflow.icmp.name", label.clone().into()),
    ];
    push_opt(&mut a, "cnflow.icmp.echo.id", i.echo_id.map(|v| v as i64));
    push_opt(&mut a, "cnflow.icmp.echo.seq", i.echo_seq.map(|v| v as i64));
    if let Some(o) = &i.original {
        a.push(("cnflow.icmp.original.protocol", (o.protocol as i64).into()));
        a.push(("cnflow.icmp.original.source", o.src.to_string().into()));
        a.push(("cnflow.icmp.original.destination", o.dst.to_string().into()));
    }
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && icmp_is_error(i) {
        a.push(("error.type", label.clone().into()));
        error = Some(String::new());
    }
    let echo_ok = i.echo_id.is_some() && ex.outcome == Outcome::Complete && !icmp_is_error(i);
    let metric = echo_ok.then(|| (Instrument::IcmpRtt, vec![("cnflow.icmp.family", V::from(family))]));
    SpanParts { name: format!("{family} {label}"), kind, attrs: a, error, metric, peer: vec![] }
}

#[cfg(test)]
mod tests;
