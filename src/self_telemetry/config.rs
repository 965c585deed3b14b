//! Settings of cnflow's own telemetry (`CNFLOW_SELF_TELEMETRY`, `OTEL_SDK_DISABLED`).
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::Result;
use serde::{Deserialize, Serialize};

fn d_true() -> bool {
    true
}

/// cnflow's own telemetry (agent and gateway).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfTelemetryConfig {
    /// Also export cnflow's own traces and metrics when an OTLP endpoint is configured.
    #[serde(default = "d_true")]
    pub self_telemetry: bool,
    /// OTEL_SDK_DISABLED=true: the standard switch for the SDK (which only
    /// self-telemetry uses; captured spans are built without it).
    #[serde(skip)]
    pub sdk_disabled: bool,
}

impl EnvVars for SelfTelemetryConfig {
    const PREFIX: &'static str = "CNFLOW_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("CNFLOW_SELF_TELEMETRY", "when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_*), also export cnflow's own traces (export requests, capture attach/detach, Kubernetes re-lists) and metrics (cnflow.export.duration, cnflow.export.request.items) with the OpenTelemetry SDK, as service.name cnflow-agent / cnflow-gateway; false turns this off."),
    ];
}

impl Default for SelfTelemetryConfig {
    fn default() -> Self {
        Self { self_telemetry: true, sdk_disabled: false }
    }
}

impl SelfTelemetryConfig {
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut cfg: Self = envy::prefixed("CNFLOW_")
            .from_iter(vars.iter().filter(|(k, _)| k == "CNFLOW_SELF_TELEMETRY").cloned())
            .map_err(|e| anyhow::anyhow!("CNFLOW_SELF_TELEMETRY must be true or false: {e}"))?;
        cfg.sdk_disabled = vars.iter().any(|(k, v)| k == "OTEL_SDK_DISABLED" && v.trim().eq_ignore_ascii_case("true"));
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }
    #[test]
    fn config_defaults_on_and_bad_values_name_the_variable() {
        assert!(SelfTelemetryConfig::from_vars(vars(&[])).unwrap().self_telemetry);
        assert!(!SelfTelemetryConfig::from_vars(vars(&[("CNFLOW_SELF_TELEMETRY", "false")])).unwrap().self_telemetry);
        let e = SelfTelemetryConfig::from_vars(vars(&[("CNFLOW_SELF_TELEMETRY", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("CNFLOW_SELF_TELEMETRY"), "{e}");
    }
    #[test]
    fn sdk_disabled_is_read_from_the_standard_variable() {
        assert!(!SelfTelemetryConfig::from_vars(vars(&[])).unwrap().sdk_disabled);
        assert!(SelfTelemetryConfig::from_vars(vars(&[("OTEL_SDK_DISABLED", " TRUE")])).unwrap().sdk_disabled);
    }
}
