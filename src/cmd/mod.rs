//! Subcommands. Each file is the entry point of one `cnflow` subcommand.
pub mod config;
pub mod gateway;
pub mod replay;
pub mod run;

use crate::self_telemetry::{SelfTelemetry, SelfTelemetryConfig};

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
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
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
    temporality: opentelemetry_sdk::metrics::Temporality,
    interval: Option<std::time::Duration>,
) -> SelfTelemetry {
    match SelfTelemetry::build(service, cfg, temporality, interval) {
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
