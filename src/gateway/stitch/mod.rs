//! Connected traces across nodes: joins the CLIENT span exported by the
//! client's node and the SERVER span exported by the server's node for the
//! same exchange, without header injection.
//!
//! Agents put the exchange's wire facts on every span (`cnflow.tcp.*`,
//! `cnflow.udp.*`, see [`crate::exchange::WireKey`]); they are the same at
//! both ends whatever NAT sits between them (sequence numbers survive DNAT
//! and SNAT, addresses do not), and matching uses them only, never time, so
//! clock skew between nodes does not matter.
//!
//! - A CLIENT (or PRODUCER) half passes through at once; its trace and span
//!   ids are remembered for the window.
//! - A SERVER (or CONSUMER) half whose CLIENT is known moves into the
//!   client's trace with the CLIENT span as parent, together with the spans
//!   of its old trace that arrived with it from the same agent (what the
//!   server side had parented under it). Otherwise it is held (with those
//!   spans) until its CLIENT comes, or exported unjoined when the window
//!   ends (`cnflow.gateway.stitch.unmatched`).
//! - Both halves already in one trace (the application propagated
//!   `traceparent`, or one node saw both sides): nothing is rewritten.
//! - Memory: at most `max_entries` remembered/held halves; beyond that the
//!   oldest goes (a held SERVER span is exported unjoined), counted in
//!   `cnflow.gateway.stitch.evicted`.
//!
//! - Service graph (`CNFLOW_GATEWAY_SERVICE_GRAPH`): each exchange an agent
//!   left to the gateway (its spans carry
//!   [`graph::GATEWAY_PEER_ATTR`], agents with
//!   `CNFLOW_SERVICE_GRAPH_METRICS=gateway`) is one edge, as Tempo's
//!   metrics-generator counts it: a joined pair gives client = the CLIENT
//!   span's `service.name`, server = the SERVER span's, both durations,
//!   failed when either span has an error status; a CLIENT half that leaves
//!   unjoined (window, eviction, duplicate) gives an edge to a virtual node
//!   named as the client's agent named the peer, a SERVER half one from
//!   `user`, both `connection_type=virtual_node`. Database and messaging
//!   calls are counted by the client's agent (their CLIENT half is not
//!   marked); only their SERVER half left unjoined is counted here.
//!
//! Spans without wire attributes cost one scan of their attribute keys.
use crate::exchange::{wire_attr, WireKey};
use crate::stats::{counter, gauge, Counter};
use crate::telemetry::network::graph::{self, CallKind, ServiceGraph};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

static JOINED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.stitch.joined", &[]));
/// Pairs found already in one trace (propagated traceparent, or both sides
/// seen by one agent): nothing rewritten.
static SHARED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.stitch.already_connected", &[]));
static UNMATCHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.stitch.unmatched", &[]));
static EVICTED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.stitch.evicted", &[]));
static HELD: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.gateway.stitch.entries", &[]));

/// Settings (CNFLOW_GATEWAY_STITCH_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StitchConfig {
    /// How long a half waits for the other one.
    pub window: Duration,
    /// Halves remembered or held at most.
    pub max_entries: usize,
    /// Export the wire attributes instead of stripping them.
    pub keep_keys: bool,
    /// Service-graph edges kept (0 = no service graph); further edges share
    /// the overflow series.
    pub service_graph_edges: usize,
}

/// Which half of an exchange a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Client,
    Server,
}

fn half_of(kind: i32) -> Option<Half> {
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Client | SpanKind::Producer => Some(Half::Client),
        SpanKind::Server | SpanKind::Consumer => Some(Half::Server),
        _ => None,
    }
}

/// A CLIENT half already exported: where its SERVER half goes.
struct ClientIds {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    graph: Option<GraphHalf>,
}

/// What the service graph needs of a keyed half (service graph on).
#[derive(Debug, Clone)]
struct GraphHalf {
    /// The agent left this exchange's edge to the gateway.
    marked: bool,
    /// The resource's `service.name`.
    service: String,
    /// The other end as the agent named it (mark value, else `peer.service`,
    /// else `server.address`).
    peer: String,
    dur_ns: u64,
    failed: bool,
    kind: CallKind,
}

fn str_attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(v) if !v.is_empty() => Some(v.as_str()),
        _ => None,
    })
}

/// Read before the wire attributes (and the mark) are stripped.
fn graph_half(resource: Option<&Resource>, s: &Span) -> GraphHalf {
    let mut marked = false;
    let mut kind = CallKind::Plain;
    for kv in &s.attributes {
        match kv.key.as_str() {
            graph::GATEWAY_PEER_ATTR => marked = true,
            "db.system.name" => kind = CallKind::Database,
            "messaging.system" => kind = CallKind::Messaging,
            _ => {}
        }
    }
    let peer = [graph::GATEWAY_PEER_ATTR, "peer.service", "server.address"]
        .iter()
        .find_map(|k| str_attr(&s.attributes, k))
        .unwrap_or("unknown");
    let service = resource.and_then(|r| str_attr(&r.attributes, "service.name")).unwrap_or("unknown_service");
    GraphHalf {
        marked,
        service: service.to_string(),
        peer: peer.to_string(),
        dur_ns: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
        // Status code 2: ERROR.
        failed: s.status.as_ref().is_some_and(|st| st.code == 2),
        kind,
    }
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A joined pair: one edge with both sides' seconds, when either agent left it here.
fn record_join(g: &mut Option<ServiceGraph>, c: Option<&GraphHalf>, s: Option<&GraphHalf>) {
    let (Some(g), Some(c), Some(s)) = (g.as_mut(), c, s) else { return };
    let kind = if c.kind != CallKind::Plain { c.kind } else { s.kind };
    // Left here by the CLIENT's agent, or by the SERVER's for a plain call
    // (an unmarked database/messaging CLIENT half: its agent counted the edge).
    if !(c.marked || (s.marked && kind == CallKind::Plain)) {
        return;
    }
    let pair = graph::Pair {
        client: &c.service,
        server: &s.service,
        connection_type: graph::connection_type(kind, false),
        client_ns: Some(c.dur_ns),
        server_ns: Some(s.dur_ns),
        failed: c.failed || s.failed,
    };
    g.record_pair(pair, wall_ns());
}

/// A half leaving unjoined: an edge to (CLIENT) or from (SERVER) a virtual node.
fn record_unjoined(g: &mut Option<ServiceGraph>, e: &Entry) {
    let Some(g) = g.as_mut() else { return };
    let (h, client) = match e {
        Entry::Client(c) => (c.graph.as_ref(), true),
        Entry::Server(h) => (h.graph.as_ref(), false),
    };
    let Some(h) = h.filter(|h| h.marked) else { return };
    let pair = if client {
        graph::Pair {
            client: &h.service,
            server: &h.peer,
            connection_type: graph::connection_type(h.kind, true),
            client_ns: Some(h.dur_ns),
            server_ns: None,
            failed: h.failed,
        }
    } else {
        graph::Pair {
            client: "user",
            server: &h.service,
            connection_type: "virtual_node",
            client_ns: None,
            server_ns: Some(h.dur_ns),
            failed: h.failed,
        }
    };
    g.record_pair(pair, wall_ns());
}

/// A SERVER half waiting for its CLIENT, with the spans of its trace that
/// came with it, and where they came from.
struct Held {
    resource: Option<Resource>,
    resource_schema: String,
    scope: Option<InstrumentationScope>,
    scope_schema: String,
    /// The SERVER span first.
    spans: Vec<Span>,
    graph: Option<GraphHalf>,
}

enum Entry {
    Client(ClientIds),
    Server(Held),
}

#[derive(Default)]
struct State {
    entries: HashMap<WireKey, (u64, Entry)>,
    /// (arrival ms, key), oldest first; stale when the entry was replaced/taken.
    order: VecDeque<(u64, WireKey)>,
    /// CNFLOW_GATEWAY_SERVICE_GRAPH.
    graph: Option<ServiceGraph>,
}

pub struct Stitcher {
    cfg: StitchConfig,
    state: Mutex<State>,
    epoch: tokio::time::Instant,
}

/// Whether a span carries wire attributes (the cheap check).
pub(crate) fn has_key(s: &Span) -> bool {
    s.attributes.iter().any(|kv| wire_attr::PREFIXES.iter().any(|p| kv.key.starts_with(p)))
}

fn key_of(s: &Span) -> Option<WireKey> {
    WireKey::from_attrs(s.attributes.iter().filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some((kv.key.as_str(), *i)),
        _ => None,
    }))
}

/// Removes the wire attributes, except the graph-only mark, which
/// [`drop_graph_only`] needs after the join.
fn strip(s: &mut Span) {
    s.attributes.retain(|kv: &KeyValue| {
        kv.key == graph::GRAPH_ONLY_ATTR || !wire_attr::PREFIXES.iter().any(|p| kv.key.starts_with(p))
    });
}

static GRAPH_ONLY: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.gateway.stitch.graph_only", &[]));

/// Spans the agents' sampling dropped and sent only for the service graph
/// ([`graph::GRAPH_ONLY_ATTR`]): counted there already (joined or not), they
/// leave the request here, so the backend gets exactly the sampled spans.
fn drop_graph_only(r: &mut ExportTraceServiceRequest) {
    let mut dropped = 0u64;
    for rs in &mut r.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| {
                let only = s.attributes.iter().any(|kv| kv.key == graph::GRAPH_ONLY_ATTR);
                dropped += u64::from(only);
                !only
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    GRAPH_ONLY.add(dropped);
}

/// Whether any span of the request carries wire attributes.
pub fn request_has_keys(r: &ExportTraceServiceRequest) -> bool {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).any(has_key)
}

/// Moves `server` (and `attached`, spans of its old trace) under `client`.
fn connect(client: &ClientIds, server: &mut Span, attached: &mut [Span]) {
    if server.trace_id == client.trace_id {
        SHARED.inc();
        return;
    }
    JOINED.inc();
    let old = std::mem::replace(&mut server.trace_id, client.trace_id.clone());
    server.parent_span_id = client.span_id.clone();
    // The client's span is a remote parent of the server's (another process).
    server.flags |= 0x300;
    for s in attached.iter_mut().filter(|s| s.trace_id == old) {
        s.trace_id = client.trace_id.clone();
    }
}

impl Stitcher {
    pub fn new(cfg: StitchConfig) -> Arc<Self> {
        for c in [&JOINED, &SHARED, &UNMATCHED, &EVICTED, &HELD, &GRAPH_ONLY] {
            LazyLock::force(c);
        }
        // Cumulative like the gateway's other metrics, exported with them.
        let graph = (cfg.service_graph_edges > 0)
            .then(|| ServiceGraph::new(crate::telemetry::Temporality::Cumulative, cfg.service_graph_edges));
        let state = State { graph, ..State::default() };
        Arc::new(Self { cfg, state: Mutex::new(state), epoch: tokio::time::Instant::now() })
    }

    /// The service-graph metrics so far (empty without CNFLOW_GATEWAY_SERVICE_GRAPH).
    pub fn service_graph_metrics(&self) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
        let mut st = self.state.lock();
        st.graph.as_mut().map(|g| g.collect(wall_ns())).unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The pipeline's hook: joins what can be joined, holds SERVER halves
    /// still waiting (removed from `r`), releases held halves whose CLIENT
    /// arrived (added to `r`), strips the wire attributes. Requests
    /// without wire attributes are left untouched.
    pub fn ingest(&self, r: &mut ExportTraceServiceRequest) {
        if request_has_keys(r) {
            let now = self.now_ms();
            self.ingest_at(r, now);
        }
    }

    /// [`Stitcher::ingest`] at a given time (ms on the stitcher's clock).
    pub fn ingest_at(&self, r: &mut ExportTraceServiceRequest, now: u64) {
        let mut st = self.state.lock();
        let with_graph = st.graph.is_some();
        let mut released: Vec<Held> = Vec::new();
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                let spans = std::mem::take(&mut ss.spans);
                // Spans passing now, and whether each is a keyed half.
                let mut keep: Vec<(Span, bool)> = Vec::with_capacity(spans.len());
                let mut servers: Vec<(WireKey, Span, Option<GraphHalf>)> = Vec::new();
                // CLIENT halves first, so that a pair inside one request meets
                // whatever its order.
                for mut s in spans {
                    let key = if has_key(&s) { key_of(&s) } else { None };
                    let gh = (with_graph && key.is_some()).then(|| graph_half(rs.resource.as_ref(), &s));
                    if !self.cfg.keep_keys {
                        strip(&mut s);
                    }
                    match (key, half_of(s.kind)) {
                        (Some(key), Some(Half::Client)) => {
                            let ids = ClientIds { trace_id: s.trace_id.clone(), span_id: s.span_id.clone(), graph: gh };
                            match st.entries.remove(&key) {
                                Some((_, Entry::Server(mut h))) => {
                                    let (first, rest) = h.spans.split_at_mut(1);
                                    connect(&ids, &mut first[0], rest);
                                    record_join(&mut st.graph, ids.graph.as_ref(), h.graph.as_ref());
                                    released.push(h);
                                }
                                // A CLIENT half with this key already: a duplicate
                                // or a collision; the newer one wins.
                                old @ (Some((_, Entry::Client(_))) | None) => {
                                    if let Some((_, e)) = &old {
                                        record_unjoined(&mut st.graph, e);
                                    }
                                    self.insert(&mut st, key, now, Entry::Client(ids), &mut released);
                                }
                            }
                            keep.push((s, true));
                        }
                        (Some(key), Some(Half::Server)) => servers.push((key, s, gh)),
                        _ => keep.push((s, false)),
                    }
                }
                for (key, mut s, gh) in servers {
                    let old = s.trace_id.clone();
                    match st.entries.remove(&key) {
                        Some((_, Entry::Client(ids))) => {
                            connect(&ids, &mut s, &mut []);
                            record_join(&mut st.graph, ids.graph.as_ref(), gh.as_ref());
                            // Spans of the SERVER half's old trace follow it.
                            if ids.trace_id != old {
                                for (x, _) in keep.iter_mut().filter(|(x, half)| !half && x.trace_id == old) {
                                    x.trace_id = ids.trace_id.clone();
                                }
                            }
                            keep.push((s, true));
                        }
                        other => {
                            // Two SERVER halves for one key: the older leaves unjoined.
                            if let Some((_, Entry::Server(h))) = other {
                                UNMATCHED.inc();
                                let e = Entry::Server(h);
                                record_unjoined(&mut st.graph, &e);
                                if let Entry::Server(h) = e {
                                    released.push(h);
                                }
                            }
                            // Spans of its trace wait with it.
                            let (with, rest): (Vec<_>, Vec<_>) =
                                std::mem::take(&mut keep).into_iter().partition(|(x, half)| !half && x.trace_id == old);
                            keep = rest;
                            let mut spans = vec![s];
                            spans.extend(with.into_iter().map(|(x, _)| x));
                            let h = Held {
                                resource: rs.resource.clone(),
                                resource_schema: rs.schema_url.clone(),
                                scope: ss.scope.clone(),
                                scope_schema: ss.schema_url.clone(),
                                spans,
                                graph: gh,
                            };
                            self.insert(&mut st, key, now, Entry::Server(h), &mut released);
                        }
                    }
                }
                ss.spans = keep.into_iter().map(|(s, _)| s).collect();
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        HELD.set(st.entries.len() as u64);
        drop(st);
        r.resource_spans.extend(released.into_iter().map(to_resource_spans));
        drop_graph_only(r);
    }

    fn insert(&self, st: &mut State, key: WireKey, now: u64, e: Entry, released: &mut Vec<Held>) {
        while st.entries.len() >= self.cfg.max_entries.max(1) {
            let Some((at, k)) = st.order.pop_front() else { break };
            if st.entries.get(&k).is_some_and(|(t, _)| *t == at) {
                EVICTED.inc();
                if let Some((_, e)) = st.entries.remove(&k) {
                    record_unjoined(&mut st.graph, &e);
                    if let Entry::Server(h) = e {
                        released.push(h);
                    }
                }
            }
        }
        st.order.push_back((now, key));
        st.entries.insert(key, (now, e));
        // Stale order entries (taken keys) would otherwise pile up.
        if st.order.len() > 2 * st.entries.len() + 64 {
            let entries = &st.entries;
            st.order.retain(|(at, k)| entries.get(k).is_some_and(|(t, _)| t == at));
        }
    }

    /// Halves older than the window: SERVER halves exported unjoined (the
    /// returned request), CLIENT ids forgotten; both counted unmatched.
    pub fn expire(&self) -> ExportTraceServiceRequest {
        let now = self.now_ms();
        self.expire_at(now)
    }

    pub fn expire_at(&self, now: u64) -> ExportTraceServiceRequest {
        let window = u64::try_from(self.cfg.window.as_millis()).unwrap_or(u64::MAX);
        let mut st = self.state.lock();
        let mut released = Vec::new();
        while let Some(&(at, k)) = st.order.front() {
            if at.saturating_add(window) > now {
                break;
            }
            st.order.pop_front();
            if st.entries.get(&k).is_some_and(|(t, _)| *t == at) {
                UNMATCHED.inc();
                if let Some((_, e)) = st.entries.remove(&k) {
                    record_unjoined(&mut st.graph, &e);
                    if let Entry::Server(h) = e {
                        released.push(h);
                    }
                }
            }
        }
        HELD.set(st.entries.len() as u64);
        let mut r = ExportTraceServiceRequest { resource_spans: released.into_iter().map(to_resource_spans).collect() };
        drop_graph_only(&mut r);
        r
    }

    /// Everything held, unjoined (shutdown).
    pub fn drain(&self) -> ExportTraceServiceRequest {
        self.expire_at(u64::MAX)
    }

    /// Whether joined pairs are counted in the service graph.
    pub fn counts_graph(&self) -> bool {
        self.cfg.service_graph_edges > 0
    }

    /// Halves remembered or held now.
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases expired halves through `send` every quarter window; runs
    /// until the task is aborted.
    pub async fn run_expiry(self: Arc<Self>, send: impl Fn(ExportTraceServiceRequest) + Send + 'static) {
        let every = (self.cfg.window / 4).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let r = self.expire();
            if !r.resource_spans.is_empty() {
                send(r);
            }
        }
    }
}

fn to_resource_spans(h: Held) -> ResourceSpans {
    ResourceSpans {
        resource: h.resource,
        scope_spans: vec![ScopeSpans { scope: h.scope, spans: h.spans, schema_url: h.scope_schema }],
        schema_url: h.resource_schema,
    }
}

#[cfg(test)]
mod tests;
