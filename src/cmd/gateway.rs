//! `cnflow gateway`: OTLP receiver → GeoIP → batch → export.
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {}

pub fn main(_args: GatewayArgs) -> Result<()> {
    use crate::export::{OtlpExportConfig, Signal};
    let env = super::read_env();
    let cfg = crate::gateway::GatewayConfig::from_vars(env.clone())?;
    let export = OtlpExportConfig::from_vars(env.clone(), &[Signal::Traces, Signal::Metrics, Signal::Logs])?;
    let destinations = crate::gateway::destinations(&cfg, &export)?;
    let self_cfg = crate::self_telemetry::SelfTelemetryConfig::from_vars(env)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let own = {
        let _in_runtime = rt.enter();
        let cumulative = opentelemetry_sdk::metrics::Temporality::Cumulative;
        super::init_logging_and_self_telemetry("cnflow-gateway", &self_cfg, &export, cumulative, None)
    };
    let res = rt.block_on(async move {
        let mut running = crate::gateway::start(cfg, destinations).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
            e = running.failed() => e,
        };
        tracing::info!("gateway shutting down");
        running.shutdown().await;
        outcome
    });
    rt.block_on(own.shutdown());
    res
}
