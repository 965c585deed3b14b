//! What every protocol's span mapping shares: the endpoint attributes
//! (`server.*`, `client.*`, `network.*`) and the status of exchanges that
//! timed out or were reset.
use super::exchange::{Exchange, Outcome};
use crate::flow::Transport;
use crate::otel::attr::{Attrs, V};
use crate::otel::span::Kind;
use std::net::SocketAddr;

fn network_type(a: &SocketAddr) -> &'static str {
    match a.ip() {
        std::net::IpAddr::V4(_) => "ipv4",
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "ipv4",
        std::net::IpAddr::V6(_) => "ipv6",
    }
}

/// Split a Host header / :authority into host and port.
pub fn split_host(h: &str) -> (String, Option<u16>) {
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
    // Producer/Consumer spans are the client end's, like Client.
    let (peer, local) = match kind {
        Kind::Server => (c.client, c.server),
        Kind::Client | Kind::Producer | Kind::Consumer => (c.server, c.client),
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
