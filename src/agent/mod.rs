//! The live agent: eBPF capture → pipeline → telemetry → stdout / OTLP, with
//! Kubernetes enrichment and attachment in agent mode, health probes, and
//! periodic counter logs. `cnflow run` and `cnflow agent` both end up here.
pub mod config;
pub mod health;
pub mod live;
pub mod own_sockets;
pub mod pipeline;
pub mod sched;

use crate::capture::ebpf::{self, LiveCapture};
use crate::capture::PacketEvent;
use crate::export::{Exporter, OtlpExportConfig};
use crate::stats;
use crate::telemetry::{Format, LocalAddrs, Output, SinkOptions, TelemetryConfig, TelemetrySink};
use crate::workload::{Enricher, Identity, NoEnrich};
use anyhow::{bail, Context, Result};
use config::AgentConfig;
use health::AgentHealth;
use own_sockets::OwnSockets;
use parking_lot::Mutex;
use pipeline::{LagClock, PacketPipeline};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutFormat {
    /// One readable line per span.
    Text,
    /// OTLP/JSON lines (ExportTraceServiceRequest / ExportMetricsServiceRequest).
    OtlpJson,
    /// One JSON line per exchange (before telemetry), for debugging decoders live.
    Exchanges,
    /// Nothing (OTLP export only).
    None,
}

impl StdoutFormat {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "text" => Self::Text,
            "otlp-json" => Self::OtlpJson,
            "exchanges" => Self::Exchanges,
            "none" => Self::None,
            other => bail!("unknown --format {other:?} (expected text, otlp-json, exchanges, packets, none)"),
        })
    }
}

pub struct AgentOptions {
    pub stdout: StdoutFormat,
    pub health_agent_default: bool,
    /// Capture files fed through the live path instead of eBPF
    /// (`capture::simulated`); empty = live capture.
    pub simulate: Vec<std::path::PathBuf>,
}

/// The agent's configuration, parsed once from the environment by the subcommand.
pub struct AgentSetup {
    pub agent: AgentConfig,
    pub telemetry: TelemetryConfig,
    /// Span sampling (OTEL_TRACES_SAMPLER, CNFLOW_SAMPLING_*).
    pub sampling: crate::telemetry::sampling::Policy,
    /// Kubernetes enrichment and pod attachment (cnflow agent) when set.
    pub k8s: Option<crate::k8s::K8sConfig>,
    pub export: OtlpExportConfig,
    /// Resource of the host (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), used
    /// when not in a cluster. Parsed up front; a parse error only stops the agent
    /// if that resource is used (in a cluster the pods' resources replace it).
    pub host: Result<Arc<Identity>>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn start_exporter(export: &OtlpExportConfig) -> Result<Option<Arc<Exporter>>> {
    if export.traces.is_none() && export.metrics.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Exporter::start(export.traces.clone(), export.metrics.clone(), None)?)))
}

/// Runs until `cancel` fires. Configuration errors are returned before anything is attached.
pub async fn run(setup: AgentSetup, opts: AgentOptions, cancel: CancellationToken) -> Result<()> {
    let AgentSetup { agent: cfg, telemetry: tcfg, sampling, k8s: k8s_cfg, export, host } = setup;
    let health_addr = cfg.health_socket(opts.health_agent_default).context("CNFLOW_HEALTH_ADDR")?;
    let simulate = !opts.simulate.is_empty();
    if !simulate {
        ebpf::check_requirements(cfg.capture_settings()?.tc_attach)?;
    }
    // Several gateways: traces routed by join key (the exporter is not started).
    let router = match (&export.traces, export.gateways.enabled()) {
        (Some(t), true) => Some(crate::export::gateway_route::GatewayRouter::start(
            &export.gateways,
            t.clone(),
            export.metrics.clone(),
        )?),
        _ => None,
    };
    let exporter = if router.is_some() { None } else { start_exporter(&export)? };

    let health = AgentHealth::new();
    if let Some(addr) = health_addr {
        let local = health::serve(addr, health.clone()).await?;
        tracing::info!(%local, "health endpoint: /healthz /readyz");
    }

    // Capture: Kubernetes mode attaches to pod veths as pods come; otherwise
    // follow CNFLOW_INTERFACES or every up interface.
    let Started { packets, capture_task, k8s_handle, enricher, host, kernel } = match &k8s_cfg {
        Some(kc) if !simulate => start_kubernetes(&cfg, kc, host, &health, cancel.clone()).await?,
        _ => {
            let session = if simulate {
                crate::capture::simulated::start(opts.simulate.clone(), cfg.snaplen, cancel.clone())?
            } else {
                ebpf::start_following(&cfg.capture_settings()?, cancel.clone())?
            };
            Started {
                packets: session.packets,
                capture_task: Some(session.task),
                k8s_handle: None,
                enricher: Arc::new(NoEnrich),
                host: host?,
                kernel: session.kernel,
            }
        }
    };

    let mut sopts = SinkOptions::new(tcfg, host);
    sopts.mask_query_values = cfg.mask_query_values;
    sopts.enricher = enricher;
    sopts.local_addrs = LocalAddrs::detect();
    if sampling != crate::telemetry::sampling::Policy::default() {
        tracing::info!("span sampling: {}", sampling.describe());
    }
    sopts.sampling = sampling;
    match opts.stdout {
        StdoutFormat::Text => sopts.outputs.push(Output::Write(Format::Text, Box::new(std::io::stdout()))),
        StdoutFormat::OtlpJson => sopts.outputs.push(Output::Write(Format::OtlpJson, Box::new(std::io::stdout()))),
        StdoutFormat::Exchanges | StdoutFormat::None => {}
    }
    if let Some(r) = &router {
        sopts.outputs.push(Output::Route(r.clone()));
    } else if let Some(e) = &exporter {
        sopts.outputs.push(Output::Export(e.clone()));
    } else if opts.stdout == StdoutFormat::None {
        tracing::warn!("no OTLP endpoint configured and --format none: spans go nowhere");
    }
    let sink = TelemetrySink::new(sopts);
    // Metrics only (no span output, no exchanges printed): what only spans show is not decoded.
    let span_fields = sink.spans_wanted() || opts.stdout == StdoutFormat::Exchanges;
    if !span_fields {
        tracing::info!("metrics only: statement texts, user agents, query strings and trace headers are not decoded");
    }
    health.set_ready(true);
    tracing::info!("capturing; spans follow");

    let stats_every = Duration::from_secs(cfg.stats_interval_secs.max(1));
    let own = OwnSockets::for_export(&export);
    let loop_res = process(
        PacketPipeline::with_span_fields(&cfg, span_fields),
        sink,
        packets,
        &kernel,
        own,
        opts.stdout,
        &health,
        stats_every,
        cancel.clone(),
    )
    .await;

    health.set_ready(false);
    if let Some(t) = capture_task {
        match t.await {
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "capture task ended with an error"),
            Err(e) => tracing::warn!(error = %e, "capture task panicked"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(h) = k8s_handle {
        h.shutdown().await;
    }
    // The sink (dropped with `process`) held the other references.
    if let Some(e) = exporter.and_then(|e| Arc::try_unwrap(e).ok()) {
        e.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(r) = router {
        r.shutdown(Duration::from_secs(5)).await;
    }
    log_counters("final counters");
    loop_res
}

/// Longest time spent on queued packets after a stop signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// The hot loop: packet batches into the pipeline, exchanges into telemetry,
/// housekeeping four times a second.
#[allow(clippy::too_many_arguments)]
async fn process(
    mut pipeline: PacketPipeline,
    mut sink: TelemetrySink,
    mut packets: mpsc::Receiver<Vec<PacketEvent>>,
    kernel: &ebpf::KernelCounterReader,
    mut own: OwnSockets,
    stdout: StdoutFormat,
    health: &AgentHealth,
    stats_every: Duration,
    cancel: CancellationToken,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stats = std::time::Instant::now();
    let mut clock = LagClock::default();
    let lag_gauge = stats::gauge("cnflow.capture.processing_lag_ms", &[]);
    // cnflow's own connections (OTLP export, self-telemetry) are not observed:
    // describing an export in a span that the next export carries never ends.
    let local = LocalAddrs::detect();
    let mut deliver = |pipeline: &mut PacketPipeline, sink: &mut TelemetrySink| -> Result<()> {
        let mut exchanges = pipeline.take_exchanges();
        exchanges.retain(|ex| !own.is_own(ex, |ip| local.contains(ip)));
        if stdout == StdoutFormat::Exchanges && !exchanges.is_empty() {
            let mut out = std::io::stdout().lock();
            for ex in &exchanges {
                serde_json::to_writer(&mut out, ex)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        for ex in &exchanges {
            sink.record(ex);
        }
        pipeline.recycle_exchanges(exchanges);
        Ok(())
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            b = packets.recv() => {
                let Some(batch) = b else { break };
                for ev in &batch {
                    pipeline.push(ev);
                    sink.observe_packet(ev);
                }
                if let Some(last) = batch.last() {
                    clock.on_batch(now_ns(), last.ts_ns);
                }
                deliver(&mut pipeline, &mut sink)?;
            }
            _ = tick.tick() => {
                let now = now_ns();
                let packet_now = clock.now(now);
                pipeline.tick(packet_now);
                sink.expire_network(packet_now);
                lag_gauge.set(clock.lag_ns() / 1_000_000);
                deliver(&mut pipeline, &mut sink)?;
                // Kernel losses in the metrics are as current as the spans.
                kernel.refresh();
                sink.flush(now);
                health.tick();
                if last_stats.elapsed() >= stats_every {
                    last_stats = std::time::Instant::now();
                    log_counters("counters");
                }
            }
        }
    }
    // Packets captured before the stop still count, within a bound: an agent
    // that fell far behind must still exit (and flush) within the grace period.
    let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while let Ok(batch) = packets.try_recv() {
        if std::time::Instant::now() >= deadline {
            let mut left = batch.len() as u64;
            while let Ok(b) = packets.try_recv() {
                left += b.len() as u64;
            }
            stats::counter("cnflow.capture.packets", &[("reason", "dropped_at_shutdown")]).add(left);
            tracing::warn!(packets = left, "stopping with a backlog: queued packets dropped");
            break;
        }
        for ev in &batch {
            pipeline.push(ev);
            sink.observe_packet(ev);
        }
    }
    pipeline.finish();
    deliver(&mut pipeline, &mut sink)?;
    kernel.refresh();
    sink.finish(now_ns());
    Ok(())
}

/// Logs every non-zero counter on one line (losses included, so gaps are explained).
fn log_counters(what: &str) {
    tracing::info!("{what}: {}", stats::summary(&stats::snapshot()));
}

/// The eBPF capture shared with the Kubernetes attacher (attach/detach come from watcher tasks).
struct SharedCapture(Mutex<Option<LiveCapture>>);

impl crate::k8s::Attacher for SharedCapture {
    fn attach(&self, ifname: &str, _ifindex: u32) -> Result<()> {
        match self.0.lock().as_mut() {
            Some(c) => c.attach(ifname),
            None => bail!("capture stopped"),
        }
    }
    fn detach(&self, ifname: &str, _ifindex: u32) {
        if let Some(c) = self.0.lock().as_mut() {
            c.detach(ifname)
        }
    }
}

struct Started {
    packets: mpsc::Receiver<Vec<PacketEvent>>,
    capture_task: Option<tokio::task::JoinHandle<Result<()>>>,
    k8s_handle: Option<crate::k8s::K8sHandle>,
    enricher: Arc<dyn Enricher>,
    host: Arc<Identity>,
    kernel: ebpf::KernelCounterReader,
}

/// Agent mode: pods' veths are attached as the Kubernetes integration finds them;
/// outside a cluster it falls back to host interfaces like `cnflow run`.
async fn start_kubernetes(
    cfg: &AgentConfig,
    kc: &crate::k8s::K8sConfig,
    host: Result<Arc<Identity>>,
    health: &Arc<AgentHealth>,
    cancel: CancellationToken,
) -> Result<Started> {
    let mut capture = cfg.capture_settings()?;
    // One /proc for everything that reads other processes: the pod
    // namespaces here, the TLS discovery and the pid → pod lookup there.
    if let Some(tls) = capture.tls.as_mut() {
        tls.proc_root = std::path::PathBuf::from(&kc.k8s_proc_root);
    }
    let (cap, rx) = LiveCapture::start(&capture)?;
    let kernel = cap.counter_reader();
    let shared = Arc::new(SharedCapture(Mutex::new(Some(cap))));
    let handle = crate::k8s::start(kc, cfg.capture_host, Some(shared.clone())).await?;
    if handle.mode == crate::k8s::RunMode::Standalone {
        let cap = shared.0.lock().take().context("capture already stopped")?;
        let task = cap.follow_configured(&capture, cancel)?;
        return Ok(Started {
            packets: rx,
            capture_task: Some(task),
            k8s_handle: Some(handle),
            enricher: Arc::new(NoEnrich),
            host: host?,
            kernel,
        });
    }
    health.set_k8s_synced(false);
    if handle.wait_synced(Duration::from_secs(15)).await {
        health.set_k8s_synced(true);
    } else {
        tracing::warn!(
            "Kubernetes metadata not synced after 15 s; continuing (not ready), spans are enriched once it is"
        );
        // Readiness follows the first complete lists, however late.
        let (h, synced) = (health.clone(), handle.synced_waiter());
        tokio::spawn(async move {
            synced.await;
            h.set_k8s_synced(true);
            tracing::info!("Kubernetes metadata synced");
        });
    }
    let enricher = handle.enricher.clone();
    let host = Arc::new(handle.host_resource.clone());
    let task = tokio::spawn(async move {
        cancel.cancelled().await;
        if let Some(cap) = shared.0.lock().take() {
            cap.shutdown();
        }
        Ok(())
    });
    Ok(Started { packets: rx, capture_task: Some(task), k8s_handle: Some(handle), enricher, host, kernel })
}
