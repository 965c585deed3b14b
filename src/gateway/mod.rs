//! The gateway: OTLP receiver (gRPC 4317, HTTP 4318) → GeoIP enrichment →
//! batching (journaled on disk with CNFLOW_GATEWAY_QUEUE_DIR) → export to one
//! or more OTLP destinations, each with its own queue; back-pressure only from
//! the destinations marked required; health endpoints and self-metrics.
pub mod auth;
pub mod batch;
pub mod config;
pub mod geo_attributes;
pub mod geoip;
pub mod grpc_receiver;
pub mod health;
pub mod http_receiver;
pub mod journal;
pub mod pipeline;
pub mod selfmetrics;
pub mod stitch;
pub mod tls;
pub mod wire;

pub use config::GatewayConfig;

use crate::export::{ExportConfig, Exporter, OtlpExportConfig, Payload, Signal};
use anyhow::{bail, Context, Result};
use pipeline::ForwardingPipeline;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One place the gateway forwards to.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `primary` or `extra-N` (the `destination` attribute of the export self-metrics).
    pub name: String,
    /// A full queue here makes the gateway refuse data (back-pressure); otherwise
    /// this destination drops (counted) and never holds back the others.
    pub required: bool,
    /// Export settings `[traces, metrics, logs]`.
    pub signals: [Option<ExportConfig>; 3],
}

/// Destinations from the standard OTLP variables plus CNFLOW_GATEWAY_EXTRA_ENDPOINTS,
/// each with its own disk-queue subdirectory when CNFLOW_GATEWAY_QUEUE_DIR is set.
pub fn destinations(cfg: &GatewayConfig, export: &OtlpExportConfig) -> Result<Vec<Destination>> {
    let primary = [export.traces.clone(), export.metrics.clone(), export.logs.clone()];
    if primary.iter().all(Option::is_none) {
        bail!("no OTLP destination: set OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_{{TRACES,METRICS,LOGS}}_ENDPOINT)");
    }
    let extras = cfg.extra_endpoints()?;
    let mut out = vec![Destination {
        name: "primary".into(),
        required: cfg.primary_is_required(extras.len()),
        signals: primary.clone(),
    }];
    for (n, extra) in extras.into_iter().enumerate() {
        let name = format!("extra-{}", n + 1);
        let mut signals: [Option<ExportConfig>; 3] = [None, None, None];
        for (i, c) in primary.iter().enumerate() {
            if let Some(c) = c {
                signals[i] = Some(
                    c.for_extra_destination(&extra.url, extra.headers.clone(), &name)
                        .with_context(|| format!("CNFLOW_GATEWAY_EXTRA_ENDPOINTS: {}", extra.url))?,
                );
            }
        }
        out.push(Destination { name, required: extra.required, signals });
    }
    if let Some(dir) = cfg.queue_dir() {
        for (i, d) in out.iter_mut().enumerate() {
            for c in d.signals.iter_mut().flatten() {
                c.queue_dir = Some(Path::new(dir).join(format!("destination-{i}")));
                c.queue_spill_bytes = cfg.queue_spill_bytes;
            }
        }
    }
    Ok(out)
}

pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub pipeline: Arc<ForwardingPipeline>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<()>>>,
    aux: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
    /// CNFLOW_GATEWAY_SERVICE_GRAPH: its last counts go out at shutdown.
    graph: Option<(Arc<stitch::Stitcher>, bool)>,
}

async fn bind(var: &str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("{var}: cannot listen on {addr}"))
}

/// Every receiver connection gets TCP_NODELAY. With Nagle on, a response
/// written while a small frame of the same connection (an HTTP/2
/// WINDOW_UPDATE, say) is still unacknowledged waits for the client's
/// delayed ACK, ~40 ms on Linux; a client with all its requests in flight
/// has nothing else to send, so every such episode stalls it that long
/// (seen on the wire against a sink without TCP_NODELAY: 40% of an agent's
/// export time spent in 40 ms gaps). Go servers (the Collector, Tempo) and
/// tonic's own `serve` set it; `serve_with_incoming` and `axum::serve` do not.
pub(crate) fn accepted(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Starts everything; returns once the receivers listen. Must run inside a tokio runtime.
pub async fn start(cfg: GatewayConfig, destinations: Vec<Destination>) -> Result<Running> {
    cfg.validate()?;
    let geo = {
        let (city, asn, cache) =
            (cfg.city_db().map(str::to_string), cfg.asn_db().map(str::to_string), cfg.geoip_cache_size);
        // Verification reads the whole file: keep it off the async workers.
        tokio::task::spawn_blocking(move || geoip::GeoIp::open(city.as_deref(), asn.as_deref(), cache)).await??
    };
    if geo.is_none() {
        tracing::info!(
            "GeoIP enrichment off: neither CNFLOW_GATEWAY_GEOIP_CITY_DB nor CNFLOW_GATEWAY_GEOIP_ASN_DB is set"
        );
    }
    let geo = geo.map(Arc::new);
    let tls_pem = cfg.tls().map(|(c, k)| tls::load_pem(c, k, cfg.tls_client_ca())).transpose()?;
    // Built now for both receivers so that a bad PEM fails the start, naming its variable.
    let http_tls = tls_pem.as_ref().map(tls::acceptor).transpose()?;
    if let Some(p) = &tls_pem {
        tracing::info!(mutual = p.client_ca.is_some(), "TLS on both receivers");
    }
    let auth = auth::Auth::new(cfg.tokens());
    if auth.enabled() {
        tracing::info!("bearer-token authentication required on both receivers");
    }

    // Before the exporters load their queues: the journal removes the queue
    // files of batches whose commit a crash interrupted.
    let journals = match cfg.queue_dir() {
        Some(dir) => Some([
            journal::Journal::open(Path::new(dir), Signal::Traces)?,
            journal::Journal::open(Path::new(dir), Signal::Metrics)?,
            journal::Journal::open(Path::new(dir), Signal::Logs)?,
        ]),
        None => None,
    };
    let mut exporters = Vec::new();
    for mut d in destinations {
        for c in d.signals.iter_mut().flatten() {
            c.destination = d.name.clone();
        }
        let [t, m, l] = d.signals;
        tracing::info!(destination = %d.name, required = d.required, "gateway destination");
        exporters.push(pipeline::Forward { exporter: Exporter::start(t, m, l)?, required: d.required, name: d.name });
    }
    for s in [Signal::Traces, Signal::Metrics, Signal::Logs] {
        if !exporters[0].exporter.exports(s) {
            tracing::info!(signal = s.name(), "no OTLP endpoint for this signal: received data is discarded");
        }
    }
    let exports_metrics = exporters[0].exporter.exports(Signal::Metrics);
    let batch = batch::BatchConfig {
        size: cfg.batch_size,
        timeout: cfg.batch_timeout(),
        max_size: cfg.batch_max_size,
        max_bytes: cfg.batch_max_bytes,
    };
    let pipeline = ForwardingPipeline::new(geo.clone(), exporters, batch, journals);
    if let Some(policy) = &cfg.sampling_policy {
        tracing::info!("span sampling: {}", policy.describe());
        pipeline.set_sampling(policy.clone());
    }
    // Kept here too: the service graph is exported with the self-metrics.
    let mut graph_of = None;
    if let Some(sc) = cfg.stitch() {
        tracing::info!(
            window_ms = cfg.stitch_window_ms,
            service_graph = cfg.service_graph,
            "stitching CLIENT and SERVER spans across agents"
        );
        let st = stitch::Stitcher::new(sc);
        if cfg.service_graph {
            graph_of = Some(st.clone());
        }
        pipeline.set_stitch(st);
    }
    let mut aux = pipeline.spawn_timers();

    let grpc_l = bind("CNFLOW_GATEWAY_GRPC_LISTEN", cfg.grpc_addr()?).await?;
    let http_l = bind("CNFLOW_GATEWAY_HTTP_LISTEN", cfg.http_addr()?).await?;
    let health_l = bind("CNFLOW_GATEWAY_HEALTH_LISTEN", cfg.health_addr()?).await?;
    let (grpc_addr, http_addr, health_addr) = (grpc_l.local_addr()?, http_l.local_addr()?, health_l.local_addr()?);

    let (stop, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    servers.push(tokio::spawn(grpc_receiver::serve(
        grpc_l,
        pipeline.clone(),
        auth.clone(),
        tls_pem,
        cfg.max_request_bytes,
        stopped(stop_rx.clone()),
    )));
    let app = http_receiver::router(pipeline.clone(), auth, cfg.max_request_bytes);
    servers.push(tokio::spawn(http_receiver::serve(http_l, app, http_tls, stopped(stop_rx.clone()))));
    let health_app = health::router(health::GatewayHealth { ready: ready.clone(), pipeline: pipeline.clone() });
    let health_stop = stopped(stop_rx.clone());
    servers.push(tokio::spawn(async move {
        axum::serve(health_l, health_app).with_graceful_shutdown(health_stop).await?;
        Ok(())
    }));

    if let (Some(geo), true) = (geo, cfg.geoip_reload_secs > 0) {
        let every = Duration::from_secs(cfg.geoip_reload_secs);
        aux.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let g = geo.clone();
                let _ = tokio::task::spawn_blocking(move || g.reload_if_changed()).await;
            }
        }));
    }
    {
        let every = Duration::from_secs(cfg.stats_interval_secs);
        let p = pipeline.clone();
        let graph_of_tick = graph_of.clone();
        let start_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        aux.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let samples = selfmetrics::current();
                tracing::info!("gateway stats: {}", selfmetrics::summary(&samples));
                if exports_metrics {
                    p.send_direct(Payload::Metrics(selfmetrics::to_otlp(&samples, start_ns)));
                    let graph = graph_of_tick.as_ref().map(|st| st.service_graph_metrics()).unwrap_or_default();
                    if !graph.is_empty() {
                        p.send_direct(Payload::Metrics(selfmetrics::request(graph)));
                    }
                }
            }
        }));
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(%grpc_addr, %http_addr, %health_addr, "gateway listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        health_addr,
        pipeline,
        ready,
        stop,
        servers,
        aux,
        shutdown_timeout: Duration::from_secs(cfg.shutdown_timeout_secs),
        graph: graph_of.map(|st| (st, exports_metrics)),
    })
}

impl Running {
    /// Stop receiving, flush batches and deliver queued data until the shutdown timeout.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for s in self.servers {
            let _ = tokio::time::timeout_at(deadline, s).await;
        }
        if let Some((st, true)) = &self.graph {
            // Halves still waiting leave unjoined (and are counted) first.
            self.pipeline.close();
            let graph = st.service_graph_metrics();
            if !graph.is_empty() {
                self.pipeline.send_direct(Payload::Metrics(selfmetrics::request(graph)));
            }
        }
        self.pipeline.shutdown(self.shutdown_timeout).await;
        for a in self.aux {
            a.abort();
        }
        tracing::info!("gateway stopped; stats: {}", selfmetrics::summary(&selfmetrics::current()));
    }

    /// Resolves when a receiver stops on its own (e.g. a fatal server error).
    pub async fn failed(&mut self) -> Result<()> {
        loop {
            if let Some(i) = self.servers.iter().position(|s| s.is_finished()) {
                return match self.servers.remove(i).await {
                    Ok(Ok(())) => bail!("a receiver stopped unexpectedly"),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.into()),
                };
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests;
