//! What both receivers feed: admission (back-pressure) → GeoIP → batcher →
//! every configured exporter.
//!
//! Destinations are isolated: each has its own queue, and only the ones
//! marked `required` are consulted for admission. A batch that does not fit
//! in a non-required destination's queue is dropped there (counted in
//! `cnflow.export.dropped{destination=…}`) while the others still get it.
use super::batch::{merge_and_split, BatchConfig, Batcher};
use super::geo_attributes;
use super::geoip::GeoIp;
use super::journal::{Journal, Leftover};
use super::wire;
use crate::export::payload::Encoded;
use crate::export::{Exporter, Payload, Signal};
use crate::stats::{counter, Counter};
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The export queue cannot take this request now: the client should retry later.
    #[error("export queue full")]
    Busy,
    #[error("gateway shutting down")]
    ShuttingDown,
    /// The disk queue could not make the request durable: the client should retry.
    #[error("cannot persist the request")]
    Storage,
    /// The request is not a valid protobuf export request (not retryable).
    #[error("cannot decode the request: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy)]
struct SignalCounters {
    received: Counter,
    enriched: Counter,
    refused: Counter,
}

impl SignalCounters {
    fn new(s: Signal) -> Self {
        let a = [("signal", s.name())];
        Self {
            received: counter("cnflow.gateway.received", &a),
            enriched: counter("cnflow.gateway.enriched", &a),
            refused: counter("cnflow.gateway.refused", &a),
        }
    }
}

/// One destination's exporter and whether it may exert back-pressure.
pub struct Forward {
    pub exporter: Exporter,
    pub required: bool,
    pub name: String,
}

pub struct ForwardingPipeline {
    geo: Option<Arc<GeoIp>>,
    exporters: Arc<Vec<Forward>>,
    batchers: [Arc<Batcher>; 3],
    /// With CNFLOW_GATEWAY_QUEUE_DIR: each signal's open batch on disk.
    journals: Option<[Arc<Journal>; 3]>,
    counters: [SignalCounters; 3],
    closing: std::sync::atomic::AtomicBool,
    /// CNFLOW_GATEWAY_SAMPLING: the span sampling policy applied on receipt.
    sampling: std::sync::OnceLock<crate::telemetry::sampling::Policy>,
    /// CNFLOW_GATEWAY_STITCH_*: joins CLIENT and SERVER halves from different agents.
    stitch: std::sync::OnceLock<Arc<super::stitch::Stitcher>>,
}

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

impl ForwardingPipeline {
    /// `journals`: the signals' journals (traces, metrics, logs) and the
    /// batches they left uncommitted, re-committed here.
    pub fn new(
        geo: Option<Arc<GeoIp>>,
        exporters: Vec<Forward>,
        batch: BatchConfig,
        journals: Option<[(Journal, Vec<Leftover>); 3]>,
    ) -> Arc<Self> {
        let exporters = Arc::new(exporters);
        let journals = journals.map(|js| {
            js.map(|(j, leftovers)| {
                let j = Arc::new(j);
                for l in leftovers {
                    commit(&exporters, &j, l.id, &l.path, merge_and_split(l.requests, batch.max_size, batch.max_bytes));
                }
                j
            })
        });
        let batchers = SIGNALS.map(|s| {
            let ex = exporters.clone();
            let journal = journals.as_ref().map(|j| j[s.index()].clone());
            Batcher::new(
                batch,
                Box::new(move |parts: Vec<Payload>| match journal.as_ref().and_then(|j| Some((j, j.seal()?))) {
                    Some((j, (id, log))) => commit(&ex, j, id, &log, parts),
                    None => {
                        // Admission checked room in the required queues only; a
                        // full queue elsewhere refuses and counts the drop itself.
                        for f in ex.iter() {
                            for p in &parts {
                                let _ = f.exporter.send(p.clone());
                            }
                        }
                    }
                }),
            )
        });
        Arc::new(Self {
            geo,
            exporters,
            batchers,
            journals,
            counters: SIGNALS.map(SignalCounters::new),
            closing: false.into(),
            sampling: std::sync::OnceLock::new(),
            stitch: std::sync::OnceLock::new(),
        })
    }

    /// Sample received spans with `policy` (set once, before serving).
    pub fn set_sampling(&self, policy: crate::telemetry::sampling::Policy) {
        let _ = self.sampling.set(policy);
    }

    /// Join spans across agents (set once, before serving).
    pub fn set_stitch(&self, stitcher: Arc<super::stitch::Stitcher>) {
        let _ = self.stitch.set(stitcher);
    }

    /// Batch timers (and the stitcher's expiry); run for the pipeline's lifetime.
    pub fn spawn_timers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut t: Vec<_> = self.batchers.iter().map(|b| tokio::spawn(b.clone().run_timer())).collect();
        if let Some(st) = self.stitch.get() {
            // Halves whose partner never came: unjoined, past admission
            // (they were acknowledged when received).
            let b = self.batchers[Signal::Traces.index()].clone();
            t.push(tokio::spawn(st.clone().run_expiry(move |r| {
                b.try_add(Payload::Traces(r), |_| true);
            })));
        }
        t
    }

    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.geo.as_ref()
    }

    /// Counts the `n` items of an arriving request, refused while shutting
    /// down; false when there is nothing to admit.
    fn receive(&self, c: SignalCounters, n: usize) -> Result<bool, Refused> {
        c.received.add(n as u64);
        if self.closing.load(std::sync::atomic::Ordering::Relaxed) {
            c.refused.add(n as u64);
            return Err(Refused::ShuttingDown);
        }
        Ok(n > 0)
    }

    /// Accepts a request unless the required queues cannot hold it
    /// (back-pressure). With a journal, returns once the request is on disk.
    pub async fn ingest(&self, mut p: Payload) -> Result<(), Refused> {
        let c = self.counters[p.signal().index()];
        let n = p.items();
        if !self.receive(c, n)? {
            return Ok(());
        }
        // Sampled-out spans leave before admission: they are neither queued
        // nor counted as drops (cnflow.gateway.sampled_out counts them).
        let mut n = n;
        if let (Some(policy), Payload::Traces(r)) = (self.sampling.get(), &mut p) {
            // With the service graph on, a keyed half stays (marked
            // graph-only) for the stitcher to count, which then drops it.
            let graph = self.stitch.get().is_some_and(|st| st.counts_graph());
            let graph_needs = |s: &opentelemetry_proto::tonic::trace::v1::Span| graph && super::stitch::has_key(s);
            if crate::telemetry::sampling::apply_to_request_keeping(policy, r, graph_needs) > 0 {
                n = p.items();
                if n == 0 {
                    return Ok(());
                }
            }
        }
        // Stitching holds SERVER halves until their CLIENT comes (and releases
        // those whose CLIENT is in this request); requests without wire keys
        // are only scanned.
        if let (Some(st), Payload::Traces(r)) = (self.stitch.get(), &mut p) {
            st.ingest(r);
            n = p.items();
            if n == 0 {
                return Ok(());
            }
        }
        if let Some(geo) = &self.geo {
            let enriched = match &mut p {
                Payload::Traces(r) => geo_attributes::enrich_traces(geo, r),
                Payload::Metrics(r) => geo_attributes::enrich_metrics(geo, r),
                Payload::Logs(r) => geo_attributes::enrich_logs(geo, r),
                // Enriched on the wire by `ingest_encoded`.
                Payload::Encoded(_) => 0,
            };
            c.enriched.add(enriched);
        }
        self.admit(p, n).await
    }

    /// A protobuf request from a receiver. Trace and log requests are
    /// checked, counted and enriched on the wire and forwarded without a
    /// decode/encode round trip (`wire`); metrics, sampled traces and trace
    /// requests carrying wire attributes (`cnflow.tcp.*`, `cnflow.udp.*`) take the decoded path (`ingest`).
    pub async fn ingest_encoded(&self, signal: Signal, body: bytes::Bytes) -> Result<(), Refused> {
        let kind = match signal {
            Signal::Traces if self.sampling.get().is_none() => Some(wire::Kind::Traces),
            Signal::Logs => Some(wire::Kind::Logs),
            _ => None,
        };
        let processed = match kind.map(|k| wire::process(k, &body, self.geo.as_deref())) {
            Some(Ok(w)) if !w.needs_decode => w,
            Some(Err(e)) => return Err(Refused::Invalid(e.to_string())),
            _ => {
                let p = Payload::decode(signal, &body).map_err(|e| Refused::Invalid(e.to_string()))?;
                return self.ingest(p).await;
            }
        };
        let c = self.counters[signal.index()];
        let n = processed.items;
        if !self.receive(c, n)? {
            return Ok(());
        }
        if self.geo.is_some() {
            c.enriched.add(processed.enriched);
        }
        let bytes = processed.bytes.map(bytes::Bytes::from).unwrap_or(body);
        self.admit(Payload::Encoded(Encoded { signal, bytes, items: n }), n).await
    }

    /// Admission, journal and batching of a received (and enriched) request of `n` items.
    async fn admit(&self, p: Payload, n: usize) -> Result<(), Refused> {
        let s = p.signal();
        let c = self.counters[s.index()];
        let exporters = &self.exporters;
        // Room in the tightest required queue, counting what waits in the
        // batch: the same rule as the queue itself (an empty queue takes anything).
        let journal = self.journals.as_ref().map(|j| &j[s.index()]);
        let record = |p: &Payload| journal.map(|j| j.append(p)).transpose();
        let admitted = self.batchers[s.index()].try_add_recorded(
            p,
            |pending| {
                exporters.iter().filter(|f| f.required).map(|f| &f.exporter).filter(|e| e.exports(s)).all(|e| {
                    let queued = e.queued(s);
                    queued + pending == 0 || pending + n <= e.free(s)
                })
            },
            record,
        );
        let synced = match admitted {
            Ok(Some(None)) => return Ok(()),
            Ok(Some(Some(file))) => tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Ok(None) => {
                c.refused.add(n as u64);
                return Err(Refused::Busy);
            }
            Err(e) => Err(e),
        };
        // An fsync error after the append: the request may still be sent, but
        // it is not acknowledged (the client's retry may duplicate it).
        synced.map_err(|e| {
            tracing::warn!(signal = s.name(), "cannot write a request to the journal: {e}");
            c.refused.add(n as u64);
            Refused::Storage
        })
    }

    /// Items waiting (batch + largest export queue) for a signal.
    pub fn backlog(&self, s: Signal) -> usize {
        self.batchers[s.index()].pending_items()
            + self.exporters.iter().map(|f| f.exporter.queued(s)).max().unwrap_or(0)
    }

    pub fn send_direct(&self, p: Payload) {
        for f in self.exporters.iter() {
            let _ = f.exporter.send(p.clone());
        }
    }

    /// Refuse new data and hand the open batches to the exporters.
    pub fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(st) = self.stitch.get() {
            let r = st.drain();
            if !r.resource_spans.is_empty() {
                self.batchers[Signal::Traces.index()].try_add(Payload::Traces(r), |_| true);
            }
        }
        for b in &self.batchers {
            b.flush();
        }
    }

    /// Flush batches, then let every exporter deliver its queue until `timeout`.
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        self.close();
        futures::future::join_all(self.exporters.iter().map(|f| f.exporter.close(timeout))).await;
    }
}

/// Commits a journaled batch (see `journal`): durable in every destination's
/// queue, then the log deleted, then sendable. Required destinations take it
/// even above their bound (admission already counted it; the bound may only
/// be overrun by a race or a replay); the others drop it when full.
fn commit(exporters: &[Forward], journal: &Journal, id: u64, log: &std::path::Path, parts: Vec<Payload>) {
    let mut staged = Vec::new();
    for (i, f) in exporters.iter().enumerate() {
        for p in &parts {
            if let Some(st) = f.exporter.stage(p.clone(), id, f.required) {
                staged.push((i, st));
            }
        }
    }
    if staged.iter().all(|(_, st)| st.on_disk()) {
        journal.commit(log);
    } else {
        // A queue file could not be written: keep the journal so a restart
        // re-commits the batch (at-least-once rather than losing acknowledged data).
        tracing::warn!(batch = id, "a queue file could not be written; the batch stays journaled until restart");
    }
    for (i, st) in staged {
        exporters[i].exporter.release(st);
    }
}
