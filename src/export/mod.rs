//! OTLP export shared by the agent and the gateway: bounded queue with counted
//! drops, retry with backoff, gRPC or HTTP (protobuf/JSON), headers, TLS,
//! compression, configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! API contract (used by telemetry and gateway):
//! - `ExportConfig::from_vars(Signal, vars)` reads OTEL_EXPORTER_OTLP_{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,PROTOCOL,INSECURE,CERTIFICATE,CLIENT_KEY,CLIENT_CERTIFICATE}
//!   with the TRACES_/METRICS_/LOGS_ variants taking precedence, plus `CNFLOW_EXPORT_*` (queue size, retry).
//!   `Ok(None)` when no endpoint is configured for that signal. `OtlpExportConfig` holds them for
//!   every signal, parsed once by the subcommand.
//! - `Exporter::start(traces, metrics, logs)` spawns one sending task per configured signal on the current tokio runtime.
//! - `send_traces` / `send_metrics` / `send_logs` enqueue without blocking; a full queue returns `Err(QueueFull)`
//!   and counts the drop. Data for a signal without a configured endpoint is discarded (Ok).
//! - `shutdown` flushes within a deadline.
//!
//! Self-metrics (cnflow::stats), all with `signal` and `destination` (`primary`, `extra-N`) attributes:
//! `cnflow.export.sent` (items delivered), `cnflow.export.failed` (items given up on),
//! `cnflow.export.dead_letter` (of those, items moved to the disk queue's dead-letter directory),
//! `cnflow.export.rejected` (items refused by the backend in a partial success), `cnflow.export.retried`
//! (retry attempts), `cnflow.export.dropped` (items refused because the queue was full), gauge
//! `cnflow.export.queue.depth` (items queued, per endpoint too),
//! `cnflow.export.queue.bytes` (memory they hold, compressed in a backlog).
pub mod config;
pub mod gateway_route;
pub mod grpc;
pub mod http;
pub mod instruments;
pub mod payload;
pub mod queue;
pub mod retry;
#[doc(hidden)]
pub mod test_sink;

pub use config::{Compression, ExportConfig, ExportTuning, OtlpEnv, OtlpExportConfig, OtlpProtocol};
pub use payload::Payload;

use crate::stats::{counter, gauge, Counter};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use queue::Queue;
use retry::{Backoff, SendOutcome};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// Position in per-signal arrays (`[T; 3]`), in declaration order.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
#[error("export queue full")]
pub struct QueueFull;

#[derive(Clone, Copy)]
struct Counters {
    sent: Counter,
    failed: Counter,
    rejected: Counter,
    retried: Counter,
    dropped: Counter,
    dead_letter: Counter,
    spilled: Counter,
}

impl Counters {
    fn new(s: Signal, destination: &str) -> Self {
        let a = [("signal", s.name()), ("destination", destination)];
        Self {
            sent: counter("cnflow.export.sent", &a),
            failed: counter("cnflow.export.failed", &a),
            rejected: counter("cnflow.export.rejected", &a),
            retried: counter("cnflow.export.retried", &a),
            dropped: counter("cnflow.export.dropped", &a),
            dead_letter: counter("cnflow.export.dead_letter", &a),
            spilled: counter("cnflow.export.spilled", &a),
        }
    }
}

enum Sender {
    Grpc(grpc::GrpcSender),
    Http(http::HttpSender),
}

impl Sender {
    async fn send(&self, p: &Payload) -> SendOutcome {
        match self {
            Sender::Grpc(s) => s.send(p).await,
            Sender::Http(s) => s.send(p).await,
        }
    }
}

struct Lane {
    queue: Arc<Queue>,
    counters: Counters,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub struct Exporter {
    lanes: [Option<Lane>; 3],
}

/// A request written to a queue but not yet sendable (see `Exporter::stage`).
pub struct Staged {
    lane: usize,
    entry: queue::Entry,
}

impl Staged {
    /// Whether its queue file was written (false: a disk error, memory only).
    pub fn on_disk(&self) -> bool {
        self.entry.on_disk()
    }
}

impl Exporter {
    /// Must be called inside a tokio runtime. Fails on TLS/header problems or
    /// an unusable queue directory; an unreachable backend is not an error.
    pub fn start(
        traces: Option<ExportConfig>,
        metrics: Option<ExportConfig>,
        logs: Option<ExportConfig>,
    ) -> anyhow::Result<Self> {
        let mut lanes = [None, None, None];
        for (signal, cfg) in [(Signal::Traces, traces), (Signal::Metrics, metrics), (Signal::Logs, logs)] {
            let Some(mut cfg) = cfg else { continue };
            cfg.signal = signal;
            lanes[signal.index()] = Some(Self::lane(cfg)?);
        }
        Ok(Self { lanes })
    }

    fn lane(cfg: ExportConfig) -> anyhow::Result<Lane> {
        let sender = match cfg.protocol {
            OtlpProtocol::Grpc => Sender::Grpc(grpc::GrpcSender::new(&cfg)?),
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => Sender::Http(http::HttpSender::new(&cfg)?),
        };
        let counters = Counters::new(cfg.signal, &cfg.destination);
        let endpoint = cfg.display_endpoint();
        let attrs = [("signal", cfg.signal.name()), ("destination", &cfg.destination), ("endpoint", &endpoint)];
        let depth = gauge("cnflow.export.queue.depth", &attrs);
        let dir = cfg.queue_dir.as_ref().map(|d| d.join(cfg.signal.name()));
        let mut queue = Queue::open(cfg.signal, cfg.queue_size, dir, depth, counters.dropped)?
            .with_destination(&cfg.destination)
            .with_bytes_gauge(gauge("cnflow.export.queue.bytes", &attrs));
        if let Some(d) = &cfg.queue_dir {
            queue = queue
                .with_dead_letter(d.join("dead-letter").join(cfg.signal.name()), counters.dead_letter)
                .with_spill(cfg.queue_spill_bytes, counters.spilled);
        }
        let queue = Arc::new(queue);
        tracing::info!(signal = cfg.signal.name(), destination = %cfg.destination, endpoint = %cfg.display_endpoint(), protocol = ?cfg.protocol, headers = cfg.headers.len(), "OTLP exporter started");
        let instruments = instruments::ExportInstruments::new();
        let task = tokio::spawn(run_lane(cfg, sender, queue.clone(), counters, instruments));
        Ok(Lane { queue, counters, task: parking_lot::Mutex::new(Some(task)) })
    }

    pub fn send(&self, p: Payload) -> Result<(), QueueFull> {
        match &self.lanes[p.signal().index()] {
            Some(l) => l.queue.push(p),
            None => Ok(()),
        }
    }
    pub fn send_traces(&self, req: ExportTraceServiceRequest) -> Result<(), QueueFull> {
        self.send(Payload::Traces(req))
    }
    pub fn send_metrics(&self, req: ExportMetricsServiceRequest) -> Result<(), QueueFull> {
        self.send(Payload::Metrics(req))
    }
    pub fn send_logs(&self, req: ExportLogsServiceRequest) -> Result<(), QueueFull> {
        self.send(Payload::Logs(req))
    }

    /// Reserves room and writes `p` durably (file tagged `tag`) without
    /// sending it yet; `release` makes it sendable. None when this signal is
    /// not exported or the queue is full (the drop is counted).
    pub fn stage(&self, p: Payload, tag: u64, force: bool) -> Option<Staged> {
        let i = p.signal().index();
        let l = self.lanes[i].as_ref()?;
        l.queue.stage(p, tag, force).ok().map(|entry| Staged { lane: i, entry })
    }

    pub fn release(&self, s: Staged) {
        if let Some(l) = &self.lanes[s.lane] {
            l.queue.release(s.entry);
        }
    }

    /// Whether an endpoint is configured for this signal.
    pub fn exports(&self, s: Signal) -> bool {
        self.lanes[s.index()].is_some()
    }

    /// Items that still fit in the signal's queue (usize::MAX when not exported).
    pub fn free(&self, s: Signal) -> usize {
        match &self.lanes[s.index()] {
            Some(l) => l.queue.capacity().saturating_sub(l.queue.len_items()),
            None => usize::MAX,
        }
    }

    /// Items queued (including the request being sent) for a signal.
    pub fn queued(&self, s: Signal) -> usize {
        self.lanes[s.index()].as_ref().map_or(0, |l| l.queue.len_items())
    }

    /// Stop accepting, deliver what is queued until `timeout`, then give up:
    /// items left in memory are counted as dropped, those in a disk queue stay for the next start.
    pub async fn shutdown(self, timeout: Duration) {
        self.close(timeout).await
    }

    /// `shutdown` for a shared exporter; later sends are refused.
    pub async fn close(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for l in self.lanes.iter().flatten() {
            l.queue.close();
        }
        for (i, l) in self.lanes.iter().enumerate() {
            let Some(l) = l else { continue };
            let Some(mut task) = l.task.lock().take() else { continue };
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let (left, on_disk) = l.queue.abandon();
                let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][i];
                if on_disk {
                    tracing::warn!(
                        signal = signal.name(),
                        items = left,
                        "export not finished at shutdown; kept in the disk queue"
                    );
                } else if left > 0 {
                    l.counters.dropped.add(left as u64);
                    tracing::warn!(signal = signal.name(), items = left, "export not finished at shutdown; dropped");
                }
            }
        }
    }
}

async fn run_lane(
    cfg: ExportConfig,
    sender: Sender,
    queue: Arc<Queue>,
    c: Counters,
    instruments: instruments::ExportInstruments,
) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let max = cfg.max_concurrent.max(1);
    // Once per lane: parsing the URL for every request showed in profiles.
    let endpoint = cfg.display_endpoint();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // `take` pops and returns in one poll, so losing this race never loses an entry.
            entry = queue.take(), if open && in_flight.len() < max => match entry {
                Some(entry) => in_flight.push(export_one(&cfg, &endpoint, &sender, &queue, &c, &instruments, entry)),
                None => open = false,
            },
        }
    }
}

/// One queued request: sent (with retries), recorded, released from the queue.
async fn export_one(
    cfg: &ExportConfig,
    endpoint: &str,
    sender: &Sender,
    queue: &Queue,
    c: &Counters,
    instruments: &instruments::ExportInstruments,
    entry: queue::Entry,
) {
    use tracing::Instrument;
    let started = Instant::now();
    // One CLIENT span per request in cnflow's own traces (self-telemetry).
    let span = tracing::info_span!(
        "otlp.export",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        cnflow.export.signal = cfg.signal.name(),
        cnflow.export.items = entry.items,
        cnflow.export.attempts = tracing::field::Empty,
        cnflow.export.outcome = tracing::field::Empty,
        server.address = endpoint,
    );
    let (outcome, attempts) = send_with_retry(cfg, sender, &entry, c, started).instrument(span.clone()).await;
    span.record("cnflow.export.attempts", attempts);
    span.record("cnflow.export.outcome", outcome);
    if outcome != "delivered" {
        span.record("otel.status_code", "ERROR");
    }
    drop(span);
    instruments.record(cfg.signal, outcome, started.elapsed(), entry.items);
    queue.complete(entry, outcome == "delivered");
}

/// Sends one request until delivered or given up: (outcome, attempts).
async fn send_with_retry(
    cfg: &ExportConfig,
    sender: &Sender,
    entry: &queue::Entry,
    c: &Counters,
    started: Instant,
) -> (&'static str, u32) {
    let signal = cfg.signal.name();
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
    let mut warned = false;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match sender.send(&entry.payload).await {
            SendOutcome::Delivered { rejected, message } => {
                let rejected = rejected.min(entry.items as u64);
                c.sent.add(entry.items as u64 - rejected);
                if rejected > 0 || !message.is_empty() {
                    c.rejected.add(rejected);
                    tracing::warn!(signal, rejected, "OTLP partial success: {message}");
                }
                if warned {
                    tracing::info!(signal, endpoint = %cfg.display_endpoint(), "OTLP export recovered");
                }
                return ("delivered", attempts);
            }
            SendOutcome::Fail { reason } => {
                c.failed.add(entry.items as u64);
                tracing::warn!(signal, endpoint = %cfg.display_endpoint(), items = entry.items, "OTLP export failed permanently: {reason}");
                return ("failed", attempts);
            }
            SendOutcome::Retry { after, reason } => {
                let delay = backoff.delay(after);
                if cfg.retry_max_elapsed.is_some_and(|m| started.elapsed() + delay > m) {
                    c.failed.add(entry.items as u64);
                    tracing::warn!(signal, endpoint = %cfg.display_endpoint(), items = entry.items, "OTLP export given up after retrying: {reason}");
                    return ("given_up", attempts);
                }
                c.retried.inc();
                if !warned {
                    tracing::warn!(signal, endpoint = %cfg.display_endpoint(), "OTLP export failed, retrying: {reason}");
                    warned = true;
                } else {
                    tracing::debug!(signal, "retrying in {delay:?}: {reason}");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
