//! What every protocol's span mapping shares: the endpoint attributes
//! (`server.*`, `client.*`, `network.*`) and the status of exchanges that
//! timed out or were reset.
use super::exchange::{Exchange, Outcome};
use crate::flow::Transport;
use crate::otel::attr::{Attrs, KeptAttrs, Put, Str, V};
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

/// Slots of the per-thread endpoint cache (a power of two).
const ENDPOINT_SLOTS: usize = 256;

/// The endpoint attributes last built for a connection, side and host.
struct CachedEndpoint {
    // Everything the attributes are built from (the connection id only
    // picks the slot: correctness does not rest on ids being unique).
    client: SocketAddr,
    server: SocketAddr,
    transport: Transport,
    kind: Kind,
    host: Option<Str>,
    /// Filled at the key's second exchange: a connection with a single
    /// exchange (a DNS query from a fresh port) only costs the key.
    attrs: Option<KeptAttrs>,
}

thread_local! {
    /// Endpoint attributes by connection: every exchange of a keep-alive
    /// connection has the same ones, and building them (two addresses as
    /// text, the Host header split, ten entries) was ~830 instructions per
    /// exchange. Direct-mapped by the connection id (consecutive ids, so
    /// 256 live connections rarely evict each other); bounded (256 entries
    /// of ten attributes per thread).
    static ENDPOINTS: std::cell::RefCell<Vec<Option<CachedEndpoint>>> =
        std::cell::RefCell::new((0..ENDPOINT_SLOTS).map(|_| None).collect());
}

/// The endpoint attributes of `ex` seen from `kind` (see [`build_endpoint_attrs`]),
/// copied from the per-thread cache when this connection, side and host
/// were the last ones in their slot.
pub(crate) fn endpoint_attrs(ex: &Exchange, kind: Kind, host: Option<&str>, a: &mut Attrs) {
    let c = &ex.conn;
    let slot = (c.id as usize) & (ENDPOINT_SLOTS - 1);
    // `try_with`: during thread teardown, no cache (built every time).
    let cached = ENDPOINTS.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let same = |e: &CachedEndpoint| {
            e.client == c.client
                && e.server == c.server
                && e.transport == c.transport
                && e.kind == kind
                && e.host.as_deref() == host
        };
        match &mut cache[slot] {
            Some(e) if same(e) => match &mut e.attrs {
                Some(cached) => cached.append_to(a),
                None => {
                    let from = a.len();
                    build_endpoint_attrs(ex, kind, host, a);
                    e.attrs = Some(KeptAttrs::new(&a[from..]));
                }
            },
            entry => {
                build_endpoint_attrs(ex, kind, host, a);
                *entry = Some(CachedEndpoint {
                    client: c.client,
                    server: c.server,
                    transport: c.transport,
                    kind,
                    host: host.map(Str::copy),
                    attrs: None,
                });
            }
        }
    });
    if cached.is_err() {
        build_endpoint_attrs(ex, kind, host, a);
    }
}

/// `server.*`, `client.*` and `network.*` of the exchange's connection, the
/// peer and local ends as `kind` sees them; `host` (a Host header or
/// `:authority`) names the server when present.
fn build_endpoint_attrs(ex: &Exchange, kind: Kind, host: Option<&str>, a: &mut Attrs) {
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

/// The low-cardinality attributes of a database exchange's
/// `db.client.operation.duration` histogram (SQL protocols), pushed in key
/// order (`Metrics::record` sorts them by key: then it only compares).
pub(crate) struct DbMetric<'a> {
    pub system: Str,
    pub namespace: Option<&'a Str>,
    pub operation: Option<&'a Str>,
    pub collection: Option<&'a Str>,
    pub summary: Option<&'a Str>,
    pub status: &'a DbStatus,
}

impl DbMetric<'_> {
    /// The list; CLIENT metrics name the server when configured to, as the
    /// span's endpoint attributes do (no host name in these protocols).
    pub(crate) fn attrs(self, ex: &Exchange, kind: Kind, metrics_server_address: bool) -> Attrs {
        let mut m: Attrs = crate::otel::attr::take_attrs(9);
        push_opt(&mut m, "db.collection.name", self.collection.cloned());
        push_opt(&mut m, "db.namespace", self.namespace.cloned());
        push_opt(&mut m, "db.operation.name", self.operation.cloned());
        push_opt(&mut m, "db.query.summary", self.summary.cloned());
        push_opt(&mut m, "db.response.status_code", self.status.status.clone());
        m.put("db.system.name", self.system);
        push_opt(&mut m, "error.type", self.status.error_type.clone());
        if kind == Kind::Client && metrics_server_address {
            m.put("server.address", ip_text(ex.conn.server.ip()));
            if ex.conn.server.port() != 0 {
                m.put("server.port", i64::from(ex.conn.server.port()));
            }
        }
        m
    }
}

/// A database exchange's status: a timeout or reset first (its
/// `error.type`), else the server's error code (`db.response.status_code`
/// and `error.type`).
pub(crate) struct DbStatus {
    /// `db.response.status_code`.
    status: Option<Str>,
    error_type: Option<Str>,
    /// The status message of a timeout or reset.
    outcome: Option<&'static str>,
}

impl DbStatus {
    /// `code`: the server's error code, None when it answered without one.
    pub(crate) fn of(ex: &Exchange, code: Option<Str>) -> Self {
        match outcome_status(ex) {
            Some((ty, msg)) => DbStatus { status: None, error_type: Some(Str::lit(ty)), outcome: Some(msg) },
            None => DbStatus { status: code.clone(), error_type: code, outcome: None },
        }
    }

    /// The span's status attributes.
    pub(crate) fn put(&self, a: &mut Attrs) {
        push_opt(a, "db.response.status_code", self.status.clone());
        push_opt(a, "error.type", self.error_type.clone());
    }

    /// The span's status message: None when not an error, empty when no
    /// span will show it (`metric_only`), else the timeout's or reset's, or
    /// `server` (the server's message).
    pub(crate) fn message(&self, metric_only: bool, server: impl FnOnce() -> String) -> Option<String> {
        self.error_type.as_ref()?;
        Some(match self.outcome {
            _ if metric_only => String::new(),
            Some(msg) => msg.to_string(),
            None => server(),
        })
    }
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

#[cfg(test)]
mod endpoint_cache_tests {
    use super::*;
    use crate::capture::Direction;
    use crate::flow::{ConnInfo, RoleEvidence};
    use crate::protocol::exchange::Detail;
    use crate::telemetry::samples;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn exchange(id: u64, client: &str, server: &str, transport: Transport) -> Exchange {
        let conn = Arc::new(ConnInfo {
            id,
            ifindex: 1,
            transport,
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            client_to_server: Direction::Egress,
            evidence: RoleEvidence::Syn,
            first_ts_ns: 0,
        });
        let detail = Detail::Http(Box::new(samples::http("GET", "/", None, 200)));
        samples::exchange(conn, crate::protocol::exchange::Protocol::Http1, 0, 1, detail)
    }

    const CLIENTS: [&str; 3] = ["10.200.0.1:40000", "10.200.0.1:40001", "[fd00:200::1]:40000"];
    const SERVERS: [&str; 3] = ["10.200.0.2:80", "10.200.0.3:80", "[fd00:200:0:0:0:0:0:2]:8080"];
    const HOSTS: [Option<&str>; 4] = [
        None,
        Some("example.com"),
        Some("a-rather-long-service-name.default.svc.cluster.local:8080"),
        Some("[::1]:81"),
    ];
    const KINDS: [Kind; 3] = [Kind::Server, Kind::Client, Kind::Producer];
    const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Udp];

    proptest! {
        /// Whatever the sequence (ids that share a slot or are reused with
        /// other addresses, sides, hosts, long hosts kept on the heap), the
        /// cached attributes are the ones built afresh, after what the list
        /// already held.
        #[test]
        fn cached_endpoint_attrs_are_the_built_ones(
            seq in proptest::collection::vec((0u64..4, 0usize..3, 0usize..3, 0usize..2, 0usize..3, 0usize..4), 1..200),
        ) {
            // Most steps repeat the previous one with one input changed, so
            // that the cache is hit and each part of its key is tested.
            let mut prev = (0u64, 0usize, 0usize, 0usize, 0usize, 0usize);
            for (i, step) in seq.into_iter().enumerate() {
                let (id, c, s, t, k, h) = match i % 7 {
                    0 => step,
                    1 => (prev.0, prev.1, prev.2, prev.3, step.4, prev.5),
                    2 => (prev.0, prev.1, prev.2, step.3, prev.4, prev.5),
                    3 => (prev.0, prev.1, step.2, prev.3, prev.4, prev.5),
                    4 => (prev.0, step.1, prev.2, prev.3, prev.4, prev.5),
                    5 => (prev.0, prev.1, prev.2, prev.3, prev.4, step.5),
                    _ => prev,
                };
                prev = (id, c, s, t, k, h);
                // Ids 0..4 spread over slots 0 and 1, and 256 + 1 shares slot 1.
                let id = if id == 3 { 257 } else { id % 2 };
                let ex = exchange(id, CLIENTS[c], SERVERS[s], TRANSPORTS[t]);
                let mut got: Attrs = vec![("before", V::I(1))];
                endpoint_attrs(&ex, KINDS[k], HOSTS[h], &mut got);
                let mut want: Attrs = vec![("before", V::I(1))];
                build_endpoint_attrs(&ex, KINDS[k], HOSTS[h], &mut want);
                prop_assert_eq!(got, want);
            }
        }
    }
}
