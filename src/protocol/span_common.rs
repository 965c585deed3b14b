//! What every protocol's span mapping shares: the endpoint attributes
//! (`server.*`, `client.*`, `network.*`) and the status of exchanges that
//! timed out or were reset.
use super::exchange::{Exchange, Outcome};
use crate::flow::Transport;
use crate::otel::attr::{Attrs, Put, Str, V};
use crate::otel::span::Kind;
use std::net::SocketAddr;

fn network_type(a: &SocketAddr) -> &'static str {
    match a.ip() {
        std::net::IpAddr::V4(_) => "ipv4",
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "ipv4",
        std::net::IpAddr::V6(_) => "ipv6",
    }
}

/// Bytes from the wire as text, invalid sequences replaced as
/// `String::from_utf8_lossy` does (same result). Valid UTF-8, the usual case,
/// goes through `str::from_utf8`, whose ASCII fast path is cheaper than the
/// lossy decoder's chunk iterator.
pub(crate) fn lossy_text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Split a Host header / :authority into host and port.
pub fn split_host(h: &str) -> (String, Option<u16>) {
    let (host, port) = split_host_str(h);
    (host.to_string(), port)
}

/// [`split_host`] without a copy (the host is a part of `h`).
pub fn split_host_str(h: &str) -> (&str, Option<u16>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    // One pass over the bytes for the colons (every HTTP span splits its
    // Host; the `str` searches and `parse` cost a few hundred instructions).
    let b = h.as_bytes();
    let mut colons = 0;
    let mut last = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b':' {
            colons += 1;
            last = i;
        }
    }
    match colons {
        1 => (&h[..last], port_number(&b[last + 1..])),
        _ => (h, None),
    }
}

/// A port as `u16::from_str` reads it: an optional '+', then one or more
/// ASCII digits, at most 65535.
fn port_number(b: &[u8]) -> Option<u16> {
    let digits = b.strip_prefix(b"+").unwrap_or(b);
    if digits.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
        if v > u32::from(u16::MAX) {
            return None;
        }
    }
    Some(v as u16)
}

/// The text of an address (as `Display` writes it). Every span carries three
/// or four of these: IPv4 is written digit by digit into an inline [`Str`],
/// without the formatting machinery or an allocation.
pub fn ip_text(ip: std::net::IpAddr) -> Str {
    match ip {
        std::net::IpAddr::V4(v4) => Str::ipv4(v4),
        ip => Str::copy(&ip.to_string()),
    }
}

pub(crate) fn endpoint_attrs(ex: &Exchange, kind: Kind, host: Option<&str>, a: &mut Attrs) {
    let c = &ex.conn;
    // Each address is formatted once (the peer and local ones are the client
    // and server); copies of the inline texts allocate nothing.
    let client_ip = ip_text(c.client.ip());
    let server_ip = ip_text(c.server.ip());
    // Producer/Consumer spans are the client end's, like Client.
    let ((peer, peer_ip), (local, local_ip)) = match kind {
        Kind::Server => ((c.client, client_ip.clone()), (c.server, server_ip.clone())),
        Kind::Client | Kind::Producer | Kind::Consumer => {
            ((c.server, server_ip.clone()), (c.client, client_ip.clone()))
        }
    };
    // The host copied inline when short: the metric series key copies it too.
    let (server_addr, server_port) = match host.map(split_host_str) {
        Some((h, p)) if !h.is_empty() => (Str::copy(h), p.unwrap_or(c.server.port())),
        _ => (server_ip, c.server.port()),
    };
    a.reserve(10);
    a.put("server.address", server_addr);
    if server_port != 0 {
        a.put("server.port", server_port as i64);
    }
    a.put("client.address", client_ip);
    if c.client.port() != 0 {
        a.put("client.port", c.client.port() as i64);
    }
    a.put("network.peer.address", peer_ip);
    if peer.port() != 0 {
        a.put("network.peer.port", peer.port() as i64);
    }
    a.put("network.local.address", local_ip);
    if local.port() != 0 {
        a.put("network.local.port", local.port() as i64);
    }
    match c.transport {
        Transport::Tcp => a.put("network.transport", "tcp"),
        Transport::Udp => a.put("network.transport", "udp"),
        Transport::Icmp => {}
    }
    a.put("network.type", network_type(&c.server));
}

pub(crate) fn outcome_error(ex: &Exchange, a: &mut Attrs) -> Option<String> {
    let (ty, msg) = outcome_status(ex)?;
    a.put("error.type", ty);
    Some(msg.to_string())
}

/// The `error.type` and status message of an exchange that timed out or was
/// reset (what [`outcome_error`] pushes and returns), `None` when complete.
pub(crate) fn outcome_status(ex: &Exchange) -> Option<(&'static str, &'static str)> {
    match ex.outcome {
        Outcome::Complete => None,
        Outcome::Timeout => Some(("timeout", "no response before the timeout")),
        Outcome::Reset => Some(("reset", "connection or stream reset before the response")),
    }
}

pub(crate) fn push_opt<T: Into<V>>(a: &mut Attrs, k: &'static str, v: Option<T>) {
    if let Some(v) = v {
        a.put(k, v);
    }
}

#[cfg(test)]
mod split_host_tests {
    use super::split_host_str;
    use proptest::prelude::*;

    /// The `str`-search form this replaced.
    fn reference(h: &str) -> (&str, Option<u16>) {
        let h = h.trim();
        if let Some(rest) = h.strip_prefix('[') {
            if let Some((host, after)) = rest.split_once(']') {
                return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
            }
        }
        match h.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
            _ => (h, None),
        }
    }

    proptest! {
        #[test]
        fn splits_as_before(h in "[ a-z0-9.:+\\[\\]-]{0,24}", port in any::<u32>(), host in "[a-z0-9.-]{0,12}") {
            prop_assert_eq!(split_host_str(&h), reference(&h));
            let hp = format!("{host}:{port}");
            prop_assert_eq!(split_host_str(&hp), reference(&hp));
        }
    }

    #[test]
    fn edges() {
        for h in [
            "a:80",
            "a:+80",
            "a:+",
            "a:",
            ":80",
            "a:65535",
            "a:65536",
            "a:0080",
            "a:-1",
            "::1",
            "[::1]:8080",
            " a:1 ",
            "a:1:2",
            "é:80",
            "a:８0",
        ] {
            assert_eq!(split_host_str(h), reference(h), "{h}");
        }
    }
}

#[cfg(test)]
mod ip_text_tests {
    use super::ip_text;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ip_text_is_display(b in any::<[u8; 16]>(), v4 in any::<bool>()) {
            let ip: std::net::IpAddr = if v4 {
                std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
            } else {
                std::net::Ipv6Addr::from(b).into()
            };
            prop_assert_eq!(ip_text(ip).to_string(), ip.to_string());
        }
    }

    #[test]
    fn ip_text_edges() {
        for s in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.20.199.250", "::ffff:10.0.0.1", "::1"] {
            assert_eq!(ip_text(s.parse().unwrap()).as_str(), s);
        }
    }
}
