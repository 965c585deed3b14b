//! Sampling settings: the OpenTelemetry SDK's `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, and cnflow's keep rules (`CNFLOW_SAMPLING_*`).
//! Per-protocol ratios are `CNFLOW_SAMPLING_RATIO_<PROTOCOL>` with a
//! protocol name of the registry (`CNFLOW_SAMPLING_RATIO_DNS=0.01`).
use super::{Policy, Root};
use crate::env_vars::{EnvVars, VarDoc};
use crate::exchange::Protocol;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

fn d_sampler() -> String {
    "parentbased_always_on".into()
}
fn d_true() -> bool {
    true
}

/// The SDK's sampler variables (same names and values as every OpenTelemetry SDK).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TracesSamplerEnv {
    /// always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio.
    #[serde(default = "d_sampler")]
    pub sampler: String,
    /// The ratio of the traceidratio samplers.
    #[serde(default)]
    pub sampler_arg: Option<String>,
}

impl EnvVars for TracesSamplerEnv {
    const PREFIX: &'static str = "OTEL_TRACES_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new(
            "OTEL_TRACES_SAMPLER",
            "span sampler, as in the OpenTelemetry SDKs: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio. parentbased_*: a span that adopted a traceparent follows its sampled flag. Ratios use consistent probability sampling (kept spans carry `ot=th:...` in tracestate); RED metrics are computed before sampling.",
        ),
        VarDoc::new(
            "OTEL_TRACES_SAMPLER_ARG",
            "sampling ratio in [0, 1] of traceidratio and parentbased_traceidratio (unset = 1.0).",
        ),
    ];
}

impl Default for TracesSamplerEnv {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

/// cnflow's keep rules on top of the sampler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Keep every exchange with an error status, whatever the sampler says.
    #[serde(default = "d_true")]
    pub keep_errors: bool,
    /// Keep every exchange at least this slow (ms), whatever the sampler says.
    #[serde(default)]
    pub keep_slower_than_ms: Option<u64>,
}

impl EnvVars for SamplingConfig {
    const PREFIX: &'static str = "CNFLOW_SAMPLING_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new(
            "CNFLOW_SAMPLING_KEEP_ERRORS",
            "keep every span of an exchange with an error status, whatever OTEL_TRACES_SAMPLER decides (its tracestate says th:0).",
        ),
        VarDoc::new(
            "CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS",
            "keep every span of an exchange lasting at least this long (ms), whatever OTEL_TRACES_SAMPLER decides; unset = no such rule.",
        ),
    ];
}

impl Default for SamplingConfig {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

/// Prefix of the per-protocol ratio variables.
pub const RATIO_PREFIX: &str = "CNFLOW_SAMPLING_RATIO_";

/// The per-protocol ratio variables with their reference text (for `cnflow config --reference`).
pub fn ratio_vars() -> Vec<(String, String)> {
    Protocol::ALL
        .iter()
        .map(|p| {
            (
                format!("{RATIO_PREFIX}{}", p.name().to_ascii_uppercase()),
                format!(
                    "sampling ratio in [0, 1] for {} exchanges without a parent decision to follow; replaces the OTEL_TRACES_SAMPLER ratio for them.",
                    p.name()
                ),
            )
        })
        .collect()
}

fn parse_ratio(var: &str, v: &str) -> Result<Root> {
    let p: f64 = v.trim().parse().map_err(|_| anyhow!("{var} must be a number in [0, 1] (got {v:?})"))?;
    if !(0.0..=1.0).contains(&p) {
        bail!("{var} must be in [0, 1] (got {v:?})");
    }
    Root::ratio(p).ok_or_else(|| anyhow!("{var}: {v:?} is below the smallest sampling probability, 2^-56"))
}

pub(super) fn policy_from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Policy> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let sampler: TracesSamplerEnv = envy::prefixed(TracesSamplerEnv::PREFIX)
        .from_iter(vars.iter().filter(|(k, _)| k.starts_with("OTEL_TRACES_SAMPLER")).cloned())
        .map_err(|e| anyhow!("invalid OTEL_TRACES_SAMPLER/OTEL_TRACES_SAMPLER_ARG: {e}"))?;
    let rules: SamplingConfig = envy::prefixed(SamplingConfig::PREFIX)
        .from_iter(
            vars.iter().filter(|(k, _)| k.starts_with(SamplingConfig::PREFIX) && !k.starts_with(RATIO_PREFIX)).cloned(),
        )
        .map_err(|e| anyhow!("invalid sampling configuration (CNFLOW_SAMPLING_*): {e}"))?;
    let arg = || -> Result<Root> {
        match sampler.sampler_arg.as_deref().map(str::trim) {
            None | Some("") => Ok(Root::Ratio(super::Threshold::always())),
            Some(v) => parse_ratio("OTEL_TRACES_SAMPLER_ARG", v),
        }
    };
    let name = sampler.sampler.trim().to_ascii_lowercase();
    let (parent_based, root) = match name.as_str() {
        "" | "parentbased_always_on" => (true, Root::AlwaysOn),
        "always_on" => (false, Root::AlwaysOn),
        "always_off" => (false, Root::AlwaysOff),
        "parentbased_always_off" => (true, Root::AlwaysOff),
        "traceidratio" => (false, arg()?),
        "parentbased_traceidratio" => (true, arg()?),
        "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => {
            bail!("OTEL_TRACES_SAMPLER={name} is not supported by cnflow (no remote sampling configuration)")
        }
        other => bail!(
            "OTEL_TRACES_SAMPLER must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio (got {other:?})"
        ),
    };
    let mut per_protocol = Vec::new();
    for (k, v) in vars.iter().filter(|(k, _)| k.starts_with(RATIO_PREFIX)) {
        let wanted = k[RATIO_PREFIX.len()..].to_ascii_lowercase();
        let Some(p) = Protocol::ALL.iter().find(|p| p.name() == wanted) else {
            let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
            bail!("{k}: unknown protocol {wanted:?} (known: {})", names.join(", "));
        };
        per_protocol.push((*p, parse_ratio(k, v)?));
    }
    per_protocol.sort_by_key(|(p, _)| p.name());
    Ok(Policy {
        parent_based,
        root,
        per_protocol,
        keep_errors: rules.keep_errors,
        keep_slower_than_ns: rules.keep_slower_than_ms.map(|ms| ms.saturating_mul(1_000_000)),
    })
}
