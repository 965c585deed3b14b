//! Exchanges → OTLP spans and RED metrics following OpenTelemetry semantic
//! conventions, grouped per resource; printed on stdout or handed to the
//! OTLP [`Exporter`](crate::export::Exporter).
//!
//! One entry point for `cnflow run`, `cnflow agent` and `cnflow replay`:
//! ```no_run
//! use cnflow::telemetry::{Format, Output, SinkOptions, TelemetryConfig, TelemetrySink};
//! let cfg = TelemetryConfig::from_vars(std::env::vars())?;
//! let host = std::sync::Arc::new(cnflow::telemetry::resource::host_identity(std::env::vars())?);
//! let mut opts = SinkOptions::new(cfg, host);
//! opts.outputs.push(Output::Write(Format::Text, Box::new(std::io::stdout())));
//! let mut sink = TelemetrySink::new(opts);
//! # let exchanges: Vec<cnflow::exchange::Exchange> = vec![];
//! for ex in &exchanges {
//!     sink.record(ex); // spans (text lines are printed at once) + metrics
//! }
//! sink.flush(1_700_000_000_000_000_000); // call often with "now": sends due span batches / metrics
//! sink.finish(1_700_000_000_000_000_000); // at exit: sends everything left
//! # Ok::<(), anyhow::Error>(())
//! ```
//! Time only moves through the `now_ns` arguments and exchange timestamps,
//! so replay passes capture time and gets byte-identical output
//! (with [`IdGen::Seeded`] ids).
pub mod config;
pub mod encode;
/// Re-exported: they moved to `crate::otel` (shared with the protocol mappings).
pub use crate::otel::{attr, route, semconv};
pub mod metrics;
pub mod network;
pub mod resource;
pub mod samples;
pub mod sampling;
pub mod side;
pub mod span;
pub mod stdout;
pub mod trace_context;

pub use config::{TelemetryConfig, Temporality};
pub use side::LocalAddrs;
pub use stdout::Format;
pub use trace_context::IdGen;

use crate::exchange::Exchange;
use crate::export::Exporter;
use crate::stats;
use crate::workload::{Enricher, Identity, NoEnrich};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use std::io::Write;
use std::sync::{Arc, LazyLock};

static SPANS_CLIENT: LazyLock<stats::Counter> =
    LazyLock::new(|| stats::counter("cnflow.telemetry.spans", &[("span.kind", "client")]));
static SPANS_SERVER: LazyLock<stats::Counter> =
    LazyLock::new(|| stats::counter("cnflow.telemetry.spans", &[("span.kind", "server")]));
/// Counts one span of `kind` (`cnflow.telemetry.spans`), exported or not.
fn count_span(kind: span::Kind) {
    match kind {
        span::Kind::Server => SPANS_SERVER.inc(),
        _ => SPANS_CLIENT.inc(),
    }
}
static WRITE_ERRORS: LazyLock<stats::Counter> = LazyLock::new(|| stats::counter("cnflow.telemetry.output_errors", &[]));

/// What the sink produced, kept in memory (tests, benchmarks).
#[derive(Default, Debug)]
pub struct Collected {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
}

impl Collected {
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.traces.iter().flat_map(|t| &t.resource_spans).flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
    }
}

pub enum Output {
    /// Print on a writer (stdout) in a format.
    Write(Format, Box<dyn Write + Send>),
    /// Enqueue to an OTLP exporter (drops on a full queue are counted by the exporter).
    Export(Arc<Exporter>),
    /// Keep the requests in memory.
    Collect(Arc<Mutex<Collected>>),
    /// Several gateways, each trace to the one its join key picks.
    Route(Arc<crate::export::gateway_route::GatewayRouter>),
}

pub struct SinkOptions {
    pub config: TelemetryConfig,
    /// CNFLOW_MASK_QUERY_VALUES from the agent config.
    pub mask_query_values: bool,
    pub enricher: Arc<dyn Enricher>,
    /// Addresses of this host (`LocalAddrs::detect()` live; empty in replay).
    pub local_addrs: LocalAddrs,
    /// Resource for spans whose local side has no identity, and for cnflow's own counters.
    pub host: Arc<Identity>,
    pub ids: IdGen,
    pub outputs: Vec<Output>,
    /// Add cnflow's own counters (stats registry) to every metrics request.
    pub own_metrics: bool,
    /// Which spans are exported (metrics are recorded before it decides).
    pub sampling: sampling::Policy,
}

impl SinkOptions {
    /// No enrichment, no known local addresses, random ids, no outputs yet.
    pub fn new(config: TelemetryConfig, host: Arc<Identity>) -> Self {
        Self {
            config,
            mask_query_values: true,
            enricher: Arc::new(NoEnrich),
            local_addrs: LocalAddrs::default(),
            host,
            ids: IdGen::random(),
            outputs: Vec::new(),
            own_metrics: true,
            sampling: sampling::Policy::default(),
        }
    }
}

pub struct TelemetrySink {
    opts: SinkOptions,
    naming: span::NamingOptions,
    routes: route::RouteTemplater,
    metrics: metrics::Metrics,
    batch: Vec<encode::ResourceBatch>,
    batch_len: usize,
    /// Reused output buffer of the OTLP writers, and the span bodies encoded
    /// before their request.
    out_buf: Vec<u8>,
    prepared: encode::Prepared,
    /// Span lists of sent batches, emptied, for the next batch's resources
    /// (a list grown from empty to a full batch was copied at each doubling).
    spare_spans: Vec<Vec<encode::SpanRec>>,
    /// Encoded span bodies of sent batches, emptied, likewise.
    spare_bodies: Vec<encode::Bodies>,
    /// Capacity for a new span buffer: the last one sent as a request held about this much.
    bodies_hint: usize,
    /// Every output takes spans as protobuf (trace exporters, the `otlp`
    /// writer) or as text lines: each span is encoded when it is recorded
    /// and no record is kept (see [`encode::Bodies`]).
    encode_early: bool,
    batch_first_ns: u64,
    last_metrics_ns: Option<u64>,
    /// CNFLOW_NETWORK_METRICS.
    network: Option<network::l4::NetworkMetrics>,
    /// CNFLOW_SERVICE_GRAPH_METRICS.
    graph: Option<network::graph::ServiceGraph>,
    /// Some output takes spans (a writer, a trace exporter, the router, the
    /// collector). Without one (`--format none` exporting metrics only) the
    /// span records are not built: metrics and the service graph still are.
    spans_wanted: bool,
    /// Some output prints text lines.
    text_wanted: bool,
}

/// Emptied span lists kept for reuse, and the largest kept (184 bytes a
/// span record: at most 8 × 1024 records' worth, 1.5 MiB).
const SPARE_SPAN_LISTS: usize = 8;
const SPARE_SPAN_CAP: usize = 1024;
/// The largest encoded-body buffer kept for reuse (~1,000 spans' worth).
const SPARE_BODIES_CAP: usize = 1 << 20;

/// Connections silent this long are forgotten by the L4 metrics (the flow table's default idle timeout).
const NETWORK_IDLE_NS: u64 = 120_000_000_000;

impl TelemetrySink {
    pub fn new(opts: SinkOptions) -> Self {
        let c = &opts.config;
        let naming = span::NamingOptions {
            mask_query_values: opts.mask_query_values,
            unmask_db_statements: c.unmask_db_statements,
            dns_nxdomain_is_error: c.dns_nxdomain_is_error,
            metrics_server_address: c.metrics_server_address,
        };
        let routes = route::RouteTemplater::new(c.route_max_fanout, c.route_max_nodes, c.route_max_depth);
        let temporality = c.temporality().unwrap_or(Temporality::Cumulative);
        let metrics = metrics::Metrics::new(temporality, c.metrics_cardinality_limit);
        let network = c.network_metrics.then(|| {
            let cfg = network::l4::L4Config {
                max_pairs: c.network_metrics_max_pairs,
                max_conns: c.network_metrics_max_connections,
                syn_timeout_ns: c.network_syn_timeout_ms.saturating_mul(1_000_000),
                idle_timeout_ns: NETWORK_IDLE_NS,
            };
            network::l4::NetworkMetrics::new(cfg, temporality)
        });
        let graph = (c.service_graph_metrics != config::ServiceGraphMode::Off)
            .then(|| network::graph::ServiceGraph::new(temporality, c.metrics_cardinality_limit));
        let spans_wanted = opts.outputs.iter().any(|o| match o {
            Output::Export(e) => e.exports(crate::export::Signal::Traces),
            Output::Write(..) | Output::Collect(_) | Output::Route(_) => true,
        });
        let text_wanted = opts.outputs.iter().any(|o| matches!(o, Output::Write(Format::Text, _)));
        let encode_early = spans_wanted
            && opts
                .outputs
                .iter()
                .all(|o| matches!(o, Output::Export(_) | Output::Write(Format::Otlp | Format::Text, _)))
            && opts.outputs.iter().any(|o| matches!(o, Output::Export(_) | Output::Write(Format::Otlp, _)));
        Self {
            spans_wanted,
            text_wanted,
            encode_early,
            spare_bodies: Vec::new(),
            bodies_hint: 0,
            opts,
            naming,
            routes,
            metrics,
            batch: Vec::new(),
            batch_len: 0,
            out_buf: Vec::new(),
            prepared: encode::Prepared::default(),
            spare_spans: Vec::new(),
            batch_first_ns: 0,
            last_metrics_ns: None,
            network,
            graph,
        }
    }

    /// L4 network metrics housekeeping at packet time `now_ns` (unanswered
    /// SYNs fail, idle connections are forgotten). Live, pass the lag-corrected
    /// clock: a SYN/ACK still queued must not make its SYN a timeout.
    pub fn expire_network(&mut self, now_ns: u64) {
        if let Some(n) = &mut self.network {
            n.expire(now_ns);
        }
    }

    /// Account one captured packet in the L4 network metrics (when enabled).
    #[inline]
    pub fn observe_packet(&mut self, ev: &crate::capture::PacketEvent) {
        if let Some(n) = &mut self.network {
            n.packet(ev, self.opts.enricher.as_ref());
        }
    }

    /// Some output takes spans. Without one, what only spans show need not
    /// be decoded at all (`DecodeConfig::span_fields`).
    pub fn spans_wanted(&self) -> bool {
        self.spans_wanted
    }

    /// Turn one exchange into its span(s) and metric measurements.
    pub fn record(&mut self, ex: &Exchange) {
        let sides = side::local_sides(&ex.conn, self.opts.enricher.as_ref(), &self.opts.local_addrs, &self.opts.host);
        let parent = trace_context::extract(ex.detail.trace_headers());
        // No output takes spans (metrics only): no trace id is drawn and no
        // sampling decided (nothing would be exported either way).
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None if self.spans_wanted => self.opts.ids.trace_id(),
            None => [0; 16],
        };
        let start = ex.start_ns;
        let end = ex.end_ns.max(start);
        self.last_metrics_ns.get_or_insert(start);
        let messages = ex.detail.mapping().messages(ex).filter(|(_, n)| *n > 0);
        let can_drop = self.spans_wanted && self.opts.sampling.can_drop();
        let parent_trace_state = parent.as_ref().map(|p| p.trace_state.clone()).unwrap_or_default();
        let decide = |policy: &sampling::Policy, error: bool| {
            if parent.is_none() && policy.keeps_every_root(Some(ex.protocol)) {
                return sampling::Decision::sampled();
            }
            policy.decide(&sampling::Input {
                protocol: Some(ex.protocol),
                parent_sampled: parent.as_ref().map(|p| p.sampled),
                trace_id: &trace_id,
                trace_state: &parent_trace_state,
                wire_randomness: parent.is_none().then(|| sampling::wire_randomness(ex)),
                // Either side's error status keeps the pair (HTTP 4xx is an error on the client span only).
                error,
                duration_ns: end - start,
                downstream: false,
            })
        };
        // The sampler's decision as if the exchange were no error (decided
        // again for an error: the keep rule turns a drop into a keep and
        // rewrites the threshold): a drop here means no span unless the
        // mapping finds an error.
        let early = can_drop.then(|| decide(&self.opts.sampling, false));
        // No span will be exported unless it is an error: the mappings that
        // can build only the metric and the error status do (most of a
        // span's cost is in its other attributes), and a span kept after all
        // is built again whole. The service graph and the message counters
        // read the span's attributes: then the whole span is built.
        let lazy = self.graph.is_none()
            && messages.is_none()
            && (!self.spans_wanted || early.as_ref().is_some_and(|d| !d.keep));
        // 1. Each local side's span parts, and the RED metrics: recorded
        //    before sampling so histograms count every exchange.
        let metrics_only = !self.spans_wanted && self.graph.is_none();
        let mut built: [Option<Side>; 2] = [None, None];
        let mut shared_metric_done = false;
        let mut counted = false;
        let todo = [(span::Kind::Client, sides.client), (span::Kind::Server, sides.server)];
        for (slot, (kind, local)) in built.iter_mut().zip(todo) {
            let Some(identity) = local else { continue };
            let resource = identity.unwrap_or_else(|| self.opts.host.clone());
            // `kind` is the side (Client or Server); the mapping may refine
            // a client-side span to Producer/Consumer (`parts.kind`).
            let enricher = self.opts.enricher.as_ref();
            let (mut parts, reduced) = if lazy {
                span::build_for_metric(ex, kind, &mut self.routes, &self.naming, || peer_of(enricher, ex, kind))
            } else {
                (span::build_with_peer(ex, kind, &mut self.routes, &self.naming, peer_of(enricher, ex, kind)), false)
            };
            // Message counters: once per exchange, like the shared histograms.
            if !counted {
                counted = true;
                if let Some((c, n)) = messages {
                    let templated = parts.attrs.iter().any(|(k, _)| *k == "messaging.destination.template");
                    let attrs = parts
                        .attrs
                        .iter()
                        .filter(|(k, _)| {
                            semconv::MessageCounter::keeps(k) && !(templated && *k == "messaging.destination.name")
                        })
                        .cloned()
                        .collect();
                    self.metrics.count(&resource, c, attrs, n, end);
                }
            }
            // Moved out: the span record does not carry the metric attributes.
            if let Some((inst, attrs)) = parts.metric.take() {
                let per_side = matches!(
                    inst,
                    semconv::Instrument::HttpServer
                        | semconv::Instrument::HttpClient
                        | semconv::Instrument::RpcServer
                        | semconv::Instrument::RpcClient
                );
                if per_side || !shared_metric_done {
                    self.metrics.record(&resource, inst, attrs, end - start, end);
                    shared_metric_done = true;
                } else {
                    crate::otel::attr::recycle_attrs(attrs);
                }
            }
            if metrics_only {
                // Nothing reads the parts after the metrics (no span output,
                // no service graph): counted and given back here, not moved
                // into `built` and out again.
                count_span(kind);
                crate::otel::attr::recycle_attrs(parts.attrs);
                continue;
            }
            *slot = Some((kind, resource, parts, reduced));
        }
        if metrics_only {
            return;
        }
        // Service graph, like the RED metrics, before sampling: every exchange
        // once, from the ends seen here.
        let mut graph_at_gateway = false;
        if let Some(g) = &mut self.graph {
            use network::graph::{call_kind, remote, CallKind, End};
            let mut ends: [Option<End>; 2] = [None, None];
            let mut kind_of_call = CallKind::Plain;
            for (kind, resource, parts, _) in built.iter().flatten() {
                let service = resource.get("service.name").unwrap_or("unknown_service").to_string();
                ends[usize::from(*kind == span::Kind::Server)] =
                    Some(End::Seen { service, failed: parts.error.is_some() });
                kind_of_call = call_kind(&parts.attrs).unwrap_or(kind_of_call);
            }
            let e = self.opts.enricher.as_ref();
            let [client, server] = ends;
            let client = client.unwrap_or_else(|| remote(e, ex.conn.client.ip(), false));
            let server = server.unwrap_or_else(|| remote(e, ex.conn.server.ip(), true));
            // Gateway mode: an exchange seen at one end only, that the gateway
            // can pair by its wire key, is counted there (from both halves, or
            // the unpaired one as a virtual node); its spans carry the name
            // this agent gives the other end. Whether the peer runs an agent
            // is not known here (outside Kubernetes nothing is), the gateway
            // sees whether the other half came.
            // Database and messaging calls stay with the client's agent (an
            // edge complete from the client span, as Tempo's `database` edges);
            // their server end goes to the gateway, which counts it only when
            // no CLIENT half comes (a client without an agent: `user`).
            let to_gateway = self.opts.config.service_graph_metrics == config::ServiceGraphMode::Gateway
                && crate::exchange::WireKey::of(ex).is_some();
            let peer = match (&client, &server) {
                (End::Seen { .. }, End::Remote { name, .. }) if to_gateway && kind_of_call == CallKind::Plain => {
                    Some(name.clone())
                }
                (End::Remote { name, .. }, End::Seen { .. }) if to_gateway => Some(name.clone()),
                _ => None,
            };
            // Sampled out, a one-sided keyed exchange still goes to the
            // gateway (marked graph-only): marked ones for their edge, a
            // database/messaging CLIENT half (counted here) so that the
            // gateway pairs its SERVER half instead of counting a `user` edge.
            graph_at_gateway = to_gateway
                && matches!(
                    (&client, &server),
                    (End::Seen { .. }, End::Remote { .. }) | (End::Remote { .. }, End::Seen { .. })
                );
            match peer {
                Some(peer) => {
                    let v = crate::otel::attr::V::from(crate::otel::attr::Str::copy(&peer));
                    for (_, _, parts, _) in built.iter_mut().flatten() {
                        parts.attrs.push((network::graph::GATEWAY_PEER_ATTR, v.clone()));
                    }
                }
                None => g.record(kind_of_call, client, server, end - start, end),
            }
        }
        let n_spans = built.iter().flatten().count() as u64;
        if n_spans == 0 {
            return;
        }
        // 2. One sampling decision for the exchange: both spans of a pair
        //    seen on this node are kept or dropped together.
        let mut graph_only = false;
        let mut new_trace_state = None;
        if can_drop {
            let error = built.iter().flatten().any(|(_, _, p, _)| p.error.is_some());
            let decision = match early {
                Some(d) if !error => d,
                _ => decide(&self.opts.sampling, error),
            };
            sampling::count(decision.reason, n_spans);
            if !decision.keep {
                if !graph_at_gateway {
                    for (_, _, parts, _) in built.into_iter().flatten() {
                        crate::otel::attr::recycle_attrs(parts.attrs);
                    }
                    return;
                }
                graph_only = true;
                // The gateway counts this exchange's edge: it still gets the
                // spans, marked, counts them and drops them (so the service
                // graph stays exact under sampling; the vendor gets only
                // the sampled spans).
                for (_, _, parts, _) in built.iter_mut().flatten() {
                    parts.attrs.push((network::graph::GRAPH_ONLY_ATTR, crate::otel::attr::V::B(true)));
                }
            }
            new_trace_state = decision.trace_state;
        }
        let trace_state = new_trace_state.unwrap_or(parent_trace_state);
        // 3. The spans.
        let mut parent_span: Option<[u8; 8]> = parent.as_ref().map(|p| p.span_id);
        // Trace flags (sampled) plus the OTLP "parent is remote" bits.
        let mut flags = 0x01 | 0x100 | if parent.is_some() { 0x200 } else { 0 };
        for (kind, resource, parts, reduced) in built.into_iter().flatten() {
            count_span(kind);
            if !self.spans_wanted {
                // No output takes spans (`--format none` without a trace
                // exporter): the list goes back for the next exchange.
                crate::otel::attr::recycle_attrs(parts.attrs);
                continue;
            }
            // Kept after all (an error): the whole span, its metric already recorded.
            let parts = if reduced {
                crate::otel::attr::recycle_attrs(parts.attrs);
                let peer = peer_of(self.opts.enricher.as_ref(), ex, kind);
                let mut whole = span::build_with_peer(ex, kind, &mut self.routes, &self.naming, peer);
                if let Some((_, m)) = whole.metric.take() {
                    crate::otel::attr::recycle_attrs(m);
                }
                whole
            } else {
                parts
            };
            let span_id = self.opts.ids.span_id();
            // A graph-only span (sampled out, sent for the gateway's service
            // graph) is no span for a reader of the text output.
            if self.text_wanted && !graph_only {
                let line = stdout::text_line(
                    &parts,
                    start,
                    end,
                    &ex.conn.client,
                    &ex.conn.server,
                    (&trace_id, &span_id, parent_span.as_ref().map_or(&[][..], |p| &p[..])),
                    ex.detail.status_reason(),
                );
                for o in &mut self.opts.outputs {
                    if let Output::Write(Format::Text, w) = o {
                        if writeln!(w, "{line}").is_err() {
                            WRITE_ERRORS.inc();
                        }
                    }
                }
            }
            let span = encode::SpanRec {
                trace_id,
                span_id,
                parent_span_id: parent_span,
                trace_state: trace_state.clone(),
                flags,
                start_ns: start,
                end_ns: end,
                name: parts.name,
                kind: parts.kind,
                attrs: parts.attrs,
                peer: parts.peer,
                error: parts.error,
            };
            // A SERVER span seen on the same node is the child of our CLIENT span.
            parent_span = Some(span_id);
            flags = 0x01 | 0x100;
            self.push_span(resource, span, start);
        }
        if self.batch_len >= self.opts.config.span_batch_size {
            self.emit_traces();
        }
    }

    fn push_span(&mut self, resource: Arc<Identity>, span: encode::SpanRec, ts: u64) {
        if self.batch_len == 0 {
            self.batch_first_ns = ts;
        }
        self.batch_len += 1;
        let b = match self.batch.iter().position(|b| Arc::ptr_eq(&b.resource, &resource) || *b.resource == *resource) {
            Some(i) => &mut self.batch[i],
            None => {
                let rb = if self.encode_early {
                    let bodies = match self.spare_bodies.pop() {
                        Some(mut b) => {
                            b.reuse_for(&resource);
                            b
                        }
                        // The last one went out as a request: about as many bytes as it held.
                        None => encode::Bodies::for_resource(&resource, self.bodies_hint),
                    };
                    let mut rb = encode::ResourceBatch::new(resource, Vec::new());
                    rb.bodies = bodies;
                    rb
                } else {
                    // A batch usually holds several spans of a resource: fewer regrowths.
                    encode::ResourceBatch::new(
                        resource,
                        self.spare_spans.pop().unwrap_or_else(|| Vec::with_capacity(16)),
                    )
                };
                self.batch.push(rb);
                self.batch.last_mut().expect("just pushed")
            }
        };
        if self.encode_early {
            b.bodies.push(&span);
            crate::otel::attr::recycle_attrs(span.attrs);
        } else {
            b.spans.push(span);
        }
    }

    /// Send what is due at `now_ns`: the span batch once it is older than the
    /// batch timeout, metrics once per export interval. Call it regularly.
    pub fn flush(&mut self, now_ns: u64) {
        let timeout = self.opts.config.span_batch_timeout_ms * 1_000_000;
        if self.batch_len > 0 && now_ns >= self.batch_first_ns.saturating_add(timeout) {
            self.emit_traces();
        }

        let interval = self.opts.config.metric_export_interval_secs * 1_000_000_000;
        let last = *self.last_metrics_ns.get_or_insert(now_ns);
        if now_ns >= last.saturating_add(interval) {
            self.emit_metrics(now_ns);
        }
        self.flush_writers();
    }

    /// Send everything left (span batch and a final metrics collection).
    pub fn finish(&mut self, now_ns: u64) {
        if let Some(n) = &mut self.network {
            n.finish();
        }
        self.emit_traces();
        self.emit_metrics(now_ns);
        self.flush_writers();
    }

    fn flush_writers(&mut self) {
        for o in &mut self.opts.outputs {
            if let Output::Write(_, w) = o {
                if w.flush().is_err() {
                    WRITE_ERRORS.inc();
                }
            }
        }
    }

    fn emit_traces(&mut self) {
        if self.batch_len == 0 {
            return;
        }
        self.batch_len = 0;
        let mut batch = std::mem::take(&mut self.batch);
        // Like the output buffer: a moderate scratch, not the largest batch ever seen.
        if self.prepared.capacity() > 4 << 20 {
            self.prepared = encode::Prepared::default();
        }
        // Writers encode straight from the span records; the prost request
        // is built only for the outputs that take one.
        let mut buf = std::mem::take(&mut self.out_buf);
        for o in &mut self.opts.outputs {
            let Output::Write(format, w) = o else { continue };
            buf.clear();
            match format {
                Format::Text => continue,
                Format::OtlpJson => {
                    encode::encode_json(&batch, &mut buf);
                    buf.push(b'\n');
                }
                Format::Otlp => {
                    // Envelope field 1: an ExportTraceServiceRequest.
                    let len = encode::prepare_proto(&batch, &mut self.prepared);
                    stdout::otlp_record_header(&mut buf, stdout::OTLP_RECORD_TRACES, len);
                    buf.reserve(len);
                    encode::write_proto(&batch, &self.prepared, &mut buf);
                }
            }
            if w.write_all(&buf).is_err() {
                WRITE_ERRORS.inc();
            }
        }
        // Keep a moderate buffer for the next batch, not the largest ever seen.
        if buf.capacity() <= 4 << 20 {
            self.out_buf = buf;
        }

        // Exporters take the protobuf bytes written straight from the records
        // (once, shared): building the prost request only to encode it again
        // was the largest per-span cost left with an OTLP endpoint.
        if self.opts.outputs.iter().any(|o| matches!(o, Output::Export(_))) {
            let items = encode::span_count(&batch);
            if let [rb] = &batch[..] {
                self.bodies_hint = rb.bodies.capacity().min(SPARE_BODIES_CAP);
            }
            // One resource encoded as recorded: its buffer is the request.
            let bytes = encode::request_in_place(&mut batch).unwrap_or_else(|| {
                let mut bytes = Vec::new();
                encode::encode_proto(&batch, &mut bytes, &mut self.prepared);
                bytes.into()
            });
            let enc = crate::export::payload::Encoded { signal: crate::export::Signal::Traces, bytes, items };
            for o in &mut self.opts.outputs {
                if let Output::Export(e) = o {
                    let _ = e.send(crate::export::Payload::Encoded(enc.clone()));
                }
            }
        }
        // The other outputs take the prost request: the last one gets it
        // moved, the others a copy (usually there is just one).
        let takers = self.opts.outputs.iter().filter(|o| !matches!(o, Output::Write(..) | Output::Export(_))).count();
        if takers == 0 {
            // Not moved into a request: the span lists are kept (bounded) for the next batch.
            for rb in batch {
                let (mut spans, bodies) = (rb.spans, rb.bodies);
                spans.clear();
                if self.spare_spans.len() < SPARE_SPAN_LISTS && (1..=SPARE_SPAN_CAP).contains(&spans.capacity()) {
                    self.spare_spans.push(spans);
                }
                if self.spare_bodies.len() < SPARE_SPAN_LISTS && (1..=SPARE_BODIES_CAP).contains(&bodies.capacity()) {
                    self.spare_bodies.push(bodies);
                }
            }
            return;
        }
        let mut req = Some(encode::to_request(batch));
        let mut left = takers;
        for o in &mut self.opts.outputs {
            if matches!(o, Output::Write(..) | Output::Export(_)) {
                continue;
            }
            left -= 1;
            let r =
                if left == 0 { req.take().expect("moved once, last") } else { req.clone().expect("kept until last") };
            match o {
                Output::Write(..) | Output::Export(_) => {}
                Output::Route(rt) => rt.send_traces(r),
                Output::Collect(c) => c.lock().traces.push(r),
            }
        }
    }

    /// L4 and service-graph metrics of this interval (they go on the host resource).
    fn network_metrics(&mut self, now_ns: u64) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
        let mut out = Vec::new();
        if let Some(n) = &mut self.network {
            out.extend(n.collect(now_ns));
        }
        if let Some(g) = &mut self.graph {
            out.extend(g.collect(now_ns));
        }
        out
    }

    fn emit_metrics(&mut self, now_ns: u64) {
        self.last_metrics_ns = Some(now_ns);
        let wants = self.opts.outputs.iter().any(|o| !matches!(o, Output::Write(Format::Text, _)));
        if !wants {
            // Text output shows spans only; keep delta state from growing.
            let _ = self.metrics.collect(now_ns, &self.opts.host, false);
            let _ = self.network_metrics(now_ns);
            return;
        }
        let mut req = self.metrics.collect(now_ns, &self.opts.host, self.opts.own_metrics);
        let extra = self.network_metrics(now_ns);
        network::append(&mut req, &self.opts.host, extra);
        let Some(req) = req else { return };
        for o in &mut self.opts.outputs {
            match o {
                Output::Write(Format::OtlpJson, w) => write_json(w, &req),
                Output::Write(Format::Otlp, w) => {
                    use prost::Message;
                    let mut buf = Vec::with_capacity(req.encoded_len() + 16);
                    stdout::otlp_record_header(&mut buf, stdout::OTLP_RECORD_METRICS, req.encoded_len());
                    req.encode_raw(&mut buf);
                    if w.write_all(&buf).is_err() {
                        WRITE_ERRORS.inc();
                    }
                }
                Output::Write(Format::Text, _) => {}
                Output::Export(e) => {
                    let _ = e.send_metrics(req.clone());
                }
                Output::Route(r) => r.send_metrics(req.clone()),
                Output::Collect(c) => c.lock().metrics.push(req.clone()),
            }
        }
    }
}

/// One local side's span: its kind, resource, parts, and whether the parts
/// are reduced (metric and error status only, see [`span::build_for_metric`]).
type Side = (span::Kind, Arc<Identity>, span::SpanParts, bool);

/// What the Enricher knows about the other side of `kind`'s span.
fn peer_of(enricher: &dyn crate::workload::Enricher, ex: &Exchange, kind: span::Kind) -> span::Peer {
    let peer_ip = match kind {
        span::Kind::Server => ex.conn.client.ip(),
        _ => ex.conn.server.ip(),
    };
    span::Peer {
        attributes: enricher.peer_attributes(peer_ip),
        server_name: enricher.address_name(ex.conn.server.ip()),
    }
}

fn write_json<T: serde::Serialize>(w: &mut Box<dyn Write + Send>, req: &T) {
    let ok = serde_json::to_writer(&mut *w, req).is_ok() && w.write_all(b"\n").is_ok();
    if !ok {
        WRITE_ERRORS.inc();
    }
}

#[cfg(test)]
mod tests;
