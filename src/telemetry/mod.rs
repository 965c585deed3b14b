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
/// Re-exported: they moved to `crate::otel` (shared with the protocol mappings).
pub use crate::otel::{attr, route, semconv};
pub mod metrics;
pub mod resource;
pub mod samples;
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
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use parking_lot::Mutex;
use std::io::Write;
use std::sync::{Arc, LazyLock};

static SPANS_CLIENT: LazyLock<stats::Counter> =
    LazyLock::new(|| stats::counter("cnflow.telemetry.spans", &[("span.kind", "client")]));
static SPANS_SERVER: LazyLock<stats::Counter> =
    LazyLock::new(|| stats::counter("cnflow.telemetry.spans", &[("span.kind", "server")]));
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
            ids: IdGen::Random,
            outputs: Vec::new(),
            own_metrics: true,
        }
    }
}

pub struct TelemetrySink {
    opts: SinkOptions,
    naming: span::NamingOptions,
    routes: route::RouteTemplater,
    metrics: metrics::Metrics,
    batch: Vec<(Arc<Identity>, Vec<Span>)>,
    batch_len: usize,
    batch_first_ns: u64,
    last_metrics_ns: Option<u64>,
}

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
        let metrics =
            metrics::Metrics::new(c.temporality().unwrap_or(Temporality::Cumulative), c.metrics_cardinality_limit);
        Self {
            opts,
            naming,
            routes,
            metrics,
            batch: Vec::new(),
            batch_len: 0,
            batch_first_ns: 0,
            last_metrics_ns: None,
        }
    }

    /// Turn one exchange into its span(s) and metric measurements.
    pub fn record(&mut self, ex: &Exchange) {
        let sides = side::local_sides(&ex.conn, self.opts.enricher.as_ref(), &self.opts.local_addrs, &self.opts.host);
        let parent = trace_context::extract(ex.detail.trace_headers());
        let trace_id = parent.as_ref().map(|p| p.trace_id).unwrap_or_else(|| self.opts.ids.trace_id());
        let trace_state = parent.as_ref().map(|p| p.trace_state.clone()).unwrap_or_default();
        let start = ex.start_ns;
        let end = ex.end_ns.max(start);
        self.last_metrics_ns.get_or_insert(start);
        let mut parent_span: Vec<u8> = parent.as_ref().map(|p| p.span_id.to_vec()).unwrap_or_default();
        // Trace flags (sampled) plus the OTLP "parent is remote" bits.
        let mut flags = 0x01 | 0x100 | if parent.is_some() { 0x200 } else { 0 };
        let mut shared_metric_done = false;
        let todo = [(span::Kind::Client, sides.client.clone()), (span::Kind::Server, sides.server.clone())];
        for (kind, local) in todo {
            let Some(identity) = local else { continue };
            let resource = identity.unwrap_or_else(|| self.opts.host.clone());
            // `kind` is the side (Client or Server); the mapping may refine
            // a client-side span to Producer/Consumer (`parts.kind`).
            let peer_ip = match kind {
                span::Kind::Server => ex.conn.client.ip(),
                _ => ex.conn.server.ip(),
            };
            let peer = span::Peer {
                attributes: self.opts.enricher.peer_attributes(peer_ip),
                server_name: self.opts.enricher.address_name(ex.conn.server.ip()),
            };
            let parts = span::build_with_peer(ex, kind, &mut self.routes, &self.naming, peer);
            let span_id = self.opts.ids.span_id().to_vec();
            match kind {
                span::Kind::Server => SPANS_SERVER.inc(),
                _ => SPANS_CLIENT.inc(),
            }
            if let Some((inst, attrs)) = &parts.metric {
                let per_side = matches!(
                    inst,
                    semconv::Instrument::HttpServer
                        | semconv::Instrument::HttpClient
                        | semconv::Instrument::RpcServer
                        | semconv::Instrument::RpcClient
                );
                if per_side || !shared_metric_done {
                    self.metrics.record(&resource, *inst, attrs.clone(), end - start, end);
                    shared_metric_done = true;
                }
            }
            let line_needed = self.opts.outputs.iter().any(|o| matches!(o, Output::Write(Format::Text, _)));
            if line_needed {
                let line = stdout::text_line(
                    &parts,
                    start,
                    end,
                    &ex.conn.client,
                    &ex.conn.server,
                    (&trace_id, &span_id, &parent_span),
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
            let status = match &parts.error {
                Some(msg) => Status { message: msg.clone(), code: status::StatusCode::Error as i32 },
                None => Status::default(),
            };
            let span = Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.clone(),
                trace_state: trace_state.clone(),
                parent_span_id: parent_span.clone(),
                flags,
                name: parts.name,
                kind: parts.kind.otlp(),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: {
                    let mut a = attr::to_proto(&parts.attrs);
                    a.extend(parts.peer.iter().map(|(k, v)| resource::kv(k, string_value(v))));
                    a
                },
                dropped_attributes_count: 0,
                events: vec![],
                dropped_events_count: 0,
                links: vec![],
                dropped_links_count: 0,
                status: Some(status),
            };
            // A SERVER span seen on the same node is the child of our CLIENT span.
            parent_span = span_id;
            flags = 0x01 | 0x100;
            self.push_span(resource, span, start);
        }
        if self.batch_len >= self.opts.config.span_batch_size {
            self.emit_traces();
        }
    }

    fn push_span(&mut self, resource: Arc<Identity>, span: Span, ts: u64) {
        if self.batch_len == 0 {
            self.batch_first_ns = ts;
        }
        self.batch_len += 1;
        match self.batch.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &resource) || **r == *resource) {
            Some((_, spans)) => spans.push(span),
            None => self.batch.push((resource, vec![span])),
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
        let resource_spans = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|(res, spans)| ResourceSpans {
                resource: Some(resource::to_proto(&res)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(metrics::scope()),
                    spans,
                    schema_url: semconv::SCHEMA_URL.into(),
                }],
                schema_url: String::new(),
            })
            .collect();
        self.batch_len = 0;
        let req = ExportTraceServiceRequest { resource_spans };
        for o in &mut self.opts.outputs {
            match o {
                Output::Write(Format::OtlpJson, w) => write_json(w, &req),
                Output::Write(Format::Text, _) => {}
                Output::Export(e) => {
                    let _ = e.send_traces(req.clone());
                }
                Output::Collect(c) => c.lock().traces.push(req.clone()),
            }
        }
    }

    fn emit_metrics(&mut self, now_ns: u64) {
        self.last_metrics_ns = Some(now_ns);
        let wants = self.opts.outputs.iter().any(|o| !matches!(o, Output::Write(Format::Text, _)));
        if !wants {
            // Text output shows spans only; keep delta state from growing.
            let _ = self.metrics.collect(now_ns, &self.opts.host, false);
            return;
        }
        let Some(req) = self.metrics.collect(now_ns, &self.opts.host, self.opts.own_metrics) else { return };
        for o in &mut self.opts.outputs {
            match o {
                Output::Write(Format::OtlpJson, w) => write_json(w, &req),
                Output::Write(Format::Text, _) => {}
                Output::Export(e) => {
                    let _ = e.send_metrics(req.clone());
                }
                Output::Collect(c) => c.lock().metrics.push(req.clone()),
            }
        }
    }
}

fn string_value(v: &str) -> opentelemetry_proto::tonic::common::v1::any_value::Value {
    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v.to_string())
}

fn write_json<T: serde::Serialize>(w: &mut Box<dyn Write + Send>, req: &T) {
    let ok = serde_json::to_writer(&mut *w, req).is_ok() && w.write_all(b"\n").is_ok();
    if !ok {
        WRITE_ERRORS.inc();
    }
}

#[cfg(test)]
mod tests;
