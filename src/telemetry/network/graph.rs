//! Service-graph metrics with the names, labels and meaning of Grafana
//! Tempo's metrics-generator (and the Collector's servicegraph connector), so
//! Grafana's service graph view draws them as it draws Tempo's:
//! `traces_service_graph_request_total`, `…_request_failed_total` (either
//! side's span has an error status), histograms
//! `traces_service_graph_request_client_seconds` / `…_server_seconds`;
//! labels `client`, `server` (service names) and `connection_type`.
//!
//! An edge is counted once across agents:
//! - both ends seen here (same node): everything, `connection_type=""`;
//! - only the client end, the server a known workload (its node's agent sees
//!   the server end): client seconds only; the server's agent counts the request;
//! - only the server end, the client a known workload: request, failure and
//!   server seconds;
//! - the other end unknown (no agent there): a virtual node, as Tempo does for
//!   an unpaired span: the server is named after the peer (its service, a
//!   name for its address, or the address) with `connection_type=virtual_node`;
//!   a client is `user`.
//!
//! Database and messaging calls are counted from the client end (like Tempo's
//! `database` edges, completed without a server span), with
//! `connection_type=database` / `messaging_system`.
//!
//! With `CNFLOW_SERVICE_GRAPH_METRICS=gateway` an exchange seen at one end
//! only and carrying a wire key (except a database/messaging call's client
//! end) is not counted here: its spans carry [`GATEWAY_PEER_ATTR`] and the
//! gateway's stitcher counts it from the joined pair ([`ServiceGraph::record_pair`]).
use super::{Hist, HistDesc, MetricsOut, SumDesc};
use crate::otel::attr::{Attrs, Str, V};
use crate::otel::semconv::OVERFLOW_KEY;
use crate::stats::{self, Counter};
use crate::telemetry::config::Temporality;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Span attribute an agent in `gateway` mode (`CNFLOW_SERVICE_GRAPH_METRICS=gateway`)
/// puts on both spans of an exchange whose edge it leaves to the gateway
/// (one end seen here, joinable by wire key, not a database/messaging call);
/// value: the name this agent gives the other end (the server of an unpaired
/// CLIENT span is named after it). Stripped by the gateway with the wire keys.
pub const GATEWAY_PEER_ATTR: &str = "cnflow.graph.peer";

/// Span attribute (bool) of a span that span sampling dropped but that still
/// goes to the gateway, because its edge is counted there (gateway mode):
/// the gateway counts it in the service graph, then drops it instead of
/// exporting it, so the graph stays exact under sampling.
pub const GRAPH_ONLY_ATTR: &str = "cnflow.graph.only";

static EDGES_OVERFLOW: LazyLock<Counter> =
    LazyLock::new(|| stats::counter("cnflow.telemetry.metric_overflow", &[("metric", "service_graph")]));

/// Tempo's default buckets (0.1 s … 12.8 s) below which finer ones are added
/// for in-cluster calls.
pub(crate) const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];
pub(crate) const TOTAL: SumDesc = SumDesc {
    name: "traces_service_graph_request_total",
    unit: "{request}",
    description: "Requests between two nodes of the service graph.",
};
pub(crate) const FAILED: SumDesc = SumDesc {
    name: "traces_service_graph_request_failed_total",
    unit: "{request}",
    description: "Failed requests between two nodes of the service graph.",
};
pub(crate) const CLIENT_SECONDS: HistDesc = HistDesc {
    name: "traces_service_graph_request_client_seconds",
    description: "Duration of requests between two nodes as seen from the client.",
    buckets: BUCKETS,
};
pub(crate) const SERVER_SECONDS: HistDesc = HistDesc {
    name: "traces_service_graph_request_server_seconds",
    description: "Duration of requests between two nodes as seen from the server.",
    buckets: BUCKETS,
};

/// What the call is, from its span attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Plain,
    Database,
    Messaging,
}

/// One end of an exchange.
#[derive(Debug, Clone)]
pub enum End {
    /// Seen by this agent: its service name and whether its span failed.
    Seen { service: String, failed: bool },
    /// Not seen here. `has_agent`: a known workload, whose node's agent sees that end.
    Remote { name: String, has_agent: bool },
}

/// One edge measured from a pair of spans (or an unpaired half).
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub connection_type: &'static str,
    /// The CLIENT span's duration, when that half was seen.
    pub client_ns: Option<u64>,
    /// The SERVER span's duration, when that half was seen.
    pub server_ns: Option<u64>,
    /// Either span has an error status.
    pub failed: bool,
}

/// What one exchange adds to its edge.
struct Sample {
    count: bool,
    failed: bool,
    client_ns: Option<u64>,
    server_ns: Option<u64>,
}

struct Edge {
    total: u64,
    failed: u64,
    client: Hist,
    server: Hist,
}

impl Edge {
    fn new() -> Self {
        Self { total: 0, failed: 0, client: Hist::new(BUCKETS), server: Hist::new(BUCKETS) }
    }
}

pub struct ServiceGraph {
    temporality: Temporality,
    limit: usize,
    edges: BTreeMap<(String, String, &'static str), Edge>,
    overflow: Edge,
    start_ns: Option<u64>,
}

impl ServiceGraph {
    pub fn new(temporality: Temporality, limit: usize) -> Self {
        LazyLock::force(&EDGES_OVERFLOW);
        Self { temporality, limit: limit.max(1), edges: BTreeMap::new(), overflow: Edge::new(), start_ns: None }
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Account one exchange of duration `dur_ns` ending at `ts_ns`.
    pub fn record(&mut self, kind: CallKind, client: End, server: End, dur_ns: u64, ts_ns: u64) {
        // (client name, server name, connection_type, count request, client seconds, server seconds, failed)
        let (c, s, ct, count, cs, ss, failed) = match (client, server) {
            (End::Seen { service: c, failed: fc }, End::Seen { service: s, failed: fs }) => {
                (c, s, connection_type(kind, false), true, true, true, fc || fs)
            }
            (End::Seen { service: c, failed }, End::Remote { name, has_agent }) => {
                let db_or_msg = kind != CallKind::Plain;
                let counted_here = db_or_msg || !has_agent;
                (c, name, connection_type(kind, !has_agent), counted_here, true, false, failed)
            }
            (End::Remote { name, has_agent }, End::Seen { service: s, failed }) => {
                if has_agent && kind != CallKind::Plain {
                    // The client's agent counts database/messaging calls.
                    return;
                }
                let (c, ct) = if has_agent { (name, "") } else { ("user".to_string(), "virtual_node") };
                (c, s, ct, true, false, true, failed)
            }
            (End::Remote { .. }, End::Remote { .. }) => return,
        };
        self.add(
            (c, s, ct),
            Sample { count, failed, client_ns: cs.then_some(dur_ns), server_ns: ss.then_some(dur_ns) },
            ts_ns,
        );
    }

    /// Account one edge measured from spans (the gateway's joined pairs and
    /// expired halves): the request is counted, each side's seconds when known.
    pub fn record_pair(&mut self, p: Pair<'_>, ts_ns: u64) {
        let sample = Sample { count: true, failed: p.failed, client_ns: p.client_ns, server_ns: p.server_ns };
        let key = (p.client.to_string(), p.server.to_string(), p.connection_type);
        self.add(key, sample, ts_ns);
    }

    fn add(&mut self, key: (String, String, &'static str), x: Sample, ts_ns: u64) {
        self.start_ns.get_or_insert(ts_ns);
        let edge = if self.edges.contains_key(&key) || self.edges.len() < self.limit {
            self.edges.entry(key).or_insert_with(Edge::new)
        } else {
            EDGES_OVERFLOW.inc();
            &mut self.overflow
        };
        if x.count {
            edge.total += 1;
            edge.failed += u64::from(x.failed);
        }
        if let Some(ns) = x.client_ns {
            edge.client.record(BUCKETS, ns as f64 / 1e9);
        }
        if let Some(ns) = x.server_ns {
            edge.server.record(BUCKETS, ns as f64 / 1e9);
        }
    }

    pub fn collect(&mut self, now_ns: u64) -> Vec<Metric> {
        let start = self.start_ns.unwrap_or(now_ns).min(now_ns);
        let mut out = MetricsOut::new(self.temporality, start, now_ns);
        let emit = |out: &mut MetricsOut, attrs: Attrs, e: &Edge| {
            out.sum(&TOTAL, &attrs, e.total);
            out.sum(&FAILED, &attrs, e.failed);
            out.hist(&CLIENT_SECONDS, &attrs, &e.client);
            out.hist(&SERVER_SECONDS, &attrs, &e.server);
        };
        for ((c, s, ct), e) in &self.edges {
            let attrs = vec![
                ("client", V::from(Str::copy(c))),
                ("connection_type", V::from(*ct)),
                ("server", V::from(Str::copy(s))),
            ];
            emit(&mut out, attrs, e);
        }
        emit(&mut out, vec![(OVERFLOW_KEY, V::B(true))], &self.overflow);
        if self.temporality == Temporality::Delta {
            self.edges.clear();
            self.overflow = Edge::new();
            self.start_ns = Some(now_ns);
        }
        out.metrics
    }
}

/// Tempo's `connection_type` of an edge: `database` / `messaging_system` for
/// such calls, else `virtual_node` when the peer is not instrumented, else "".
pub fn connection_type(kind: CallKind, virtual_peer: bool) -> &'static str {
    match kind {
        CallKind::Database => "database",
        CallKind::Messaging => "messaging_system",
        CallKind::Plain if virtual_peer => "virtual_node",
        CallKind::Plain => "",
    }
}

/// Database or messaging call, from a span's attributes.
pub fn call_kind(attrs: &Attrs) -> Option<CallKind> {
    attrs.iter().find_map(|(k, _)| match *k {
        "db.system.name" => Some(CallKind::Database),
        "messaging.system" => Some(CallKind::Messaging),
        _ => None,
    })
}

/// The end at `ip` that this agent does not see: named after its workload's
/// service, else (a server) a name for its address, else the address.
pub fn remote(enricher: &dyn crate::workload::Enricher, ip: std::net::IpAddr, server: bool) -> End {
    let id = enricher.identity(ip);
    let name = id
        .as_ref()
        .and_then(|id| id.get("service.name").map(str::to_string))
        .or_else(|| if server { enricher.address_name(ip) } else { None })
        .unwrap_or_else(|| ip.to_string());
    End::Remote { name, has_agent: id.is_some() }
}
