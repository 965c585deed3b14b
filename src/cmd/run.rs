//! `cnflow run` (standalone host) and `cnflow agent` (DaemonSet).
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Output on stdout: text (one line per span), otlp-json (OTLP/JSON lines), exchanges (one JSON line per
    /// decoded exchange), packets (one line per captured packet, for debugging) or none (OTLP export only).
    /// Defaults to text for `run`, and for `agent` to none when an OTLP endpoint is configured.
    #[arg(long)]
    pub format: Option<String>,
    /// Stop after this many seconds (0 = until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Feed these capture files through the live path (ring records, merge, the agent's loop) instead of
    /// eBPF, as fast as the agent takes them; ends after the last file. For profile training and tests.
    #[arg(long, hide = true, num_args = 1..)]
    pub simulate_capture: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Agent,
}

pub fn main(args: RunArgs, mode: Mode) -> Result<()> {
    use crate::export::{OtlpExportConfig, Signal};
    let env = super::read_env();
    let cfg = crate::agent::config::AgentConfig::from_vars(env.clone())?;
    let export = OtlpExportConfig::from_vars(env.clone(), &[Signal::Traces, Signal::Metrics])?;
    let format = args
        .format
        .clone()
        .unwrap_or_else(|| if mode == Mode::Agent && export.traces.is_some() { "none" } else { "text" }.to_string());
    let self_cfg = crate::self_telemetry::SelfTelemetryConfig::from_vars(env.clone())?;
    let tcfg = crate::telemetry::TelemetryConfig::from_vars(env.clone())?;
    let sampling = crate::telemetry::sampling::Policy::from_vars(env.clone())?;
    let k8s = if mode == Mode::Agent { Some(crate::k8s::K8sConfig::from_vars(env.clone())?) } else { None };
    let host = crate::telemetry::resource::host_identity(env).map(std::sync::Arc::new);
    let temporality = match tcfg.temporality()? {
        crate::telemetry::config::Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
        crate::telemetry::config::Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
    };
    // Before the runtime: its threads inherit the slice.
    let slice = crate::agent::sched::set_slice(cfg.sched_slice_us);
    // One worker: it runs the ring reader, the exporter's requests and the
    // watchers, while packets are decoded on this thread (the pipeline is
    // single-threaded, so a second worker adds no capacity). With two, the
    // reader and the senders hopped between workers that parked and woke
    // each other: `bench_pair.sh` two workers → one, 6 rounds each
    // (2026-12-06), agent CPU per request −1 to −2% metrics only and −3 to −4%
    // exporting every span; `bench_completeness.sh 200000` still 100% at
    // every depth (466k spans/s exported at depth 16).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let own = {
        let _in_runtime = rt.enter();
        let interval = Some(std::time::Duration::from_secs(tcfg.metric_export_interval_secs));
        super::init_logging_and_self_telemetry("cnflow-agent", &self_cfg, &export, temporality, interval)
    };
    match slice {
        Ok(()) if cfg.sched_slice_us > 0 => tracing::info!(us = cfg.sched_slice_us, "scheduler slice set"),
        Ok(()) => {}
        Err(e) => {
            tracing::warn!("CNFLOW_SCHED_SLICE_US: cannot set the scheduler slice ({e}); the kernel's default applies")
        }
    }
    let res = rt.block_on(async {
        let cancel = crate::agent::live::cancel_on_signal_or(args.duration)?;
        if format == "packets" && args.simulate_capture.is_empty() {
            return crate::agent::live::print_packets(&cfg.capture_settings()?, cancel).await;
        }
        let opts = crate::agent::AgentOptions {
            stdout: crate::agent::StdoutFormat::parse(&format)?,
            health_agent_default: mode == Mode::Agent,
            simulate: args.simulate_capture.clone(),
        };
        let setup = crate::agent::AgentSetup { agent: cfg, telemetry: tcfg, sampling, k8s, export, host };
        crate::agent::run(setup, opts, cancel).await
    });
    rt.block_on(own.shutdown());
    res
}
