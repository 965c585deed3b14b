//! Subcommands. Each file is the entry point of one `cnflow` subcommand.
//!
//! Configuration is read here, once: a subcommand takes one snapshot of the
//! environment ([`read_env`]), parses the `CNFLOW_*` / `OTEL_*` variables it
//! needs into the config structs (`AgentConfig`, `TelemetryConfig`,
//! `OtlpExportConfig`, ...) and passes those down; nothing below `cmd` reads
//! the environment.
pub mod gateway;
pub mod replay;
pub mod run;
pub mod show_config;

use crate::export::OtlpExportConfig;
use crate::self_telemetry::{SelfTelemetry, SelfTelemetryConfig};

/// The process environment, read once per subcommand (then parsed by the
/// config structs' `from_vars`).
pub fn read_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// Logs go to stderr (stdout is reserved for spans/OTLP JSON), filtered by RUST_LOG.
pub fn init_logging() {
    init_logging_with(None)
}

/// Logging plus, when `tracer` is given, cnflow's own `tracing` spans (target
/// `cnflow`, INFO and above, whatever RUST_LOG says) bridged to OpenTelemetry.
pub fn init_logging_with(tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in `kubectl logs`, files
    // and CI output they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter);
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(Targets::new().with_target("cnflow", LevelFilter::INFO))
    });
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
}

/// Sets up logging and, when configured, cnflow's own telemetry for `service`.
/// Call inside the command's tokio runtime. A self-telemetry set-up problem
/// is logged and leaves it off; it never stops the command.
pub fn init_logging_and_self_telemetry(
    service: &'static str,
    cfg: &SelfTelemetryConfig,
    export: &OtlpExportConfig,
    temporality: opentelemetry_sdk::metrics::Temporality,
    interval: Option<std::time::Duration>,
) -> SelfTelemetry {
    match SelfTelemetry::build(service, cfg, export, temporality, interval) {
        Ok(Some(st)) => {
            init_logging_with(st.tracer());
            tracing::info!(
                service.name = service,
                "exporting cnflow's own traces and metrics (CNFLOW_SELF_TELEMETRY=false turns this off)"
            );
            st
        }
        Ok(None) => {
            init_logging();
            SelfTelemetry::default()
        }
        Err(e) => {
            init_logging();
            tracing::warn!("cnflow's own telemetry is off: {e:#}");
            SelfTelemetry::default()
        }
    }
}
