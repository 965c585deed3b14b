//! `cnflow config`: print the effective configuration of every component
//! (secrets redacted), or (`--reference`) the reference of every environment
//! variable.
//!
//! The reference comes from the config structs themselves: each declares its
//! variables in an [`EnvVars`] table beside it (name, text, secret or not),
//! and defaults come from serialising the struct's `Default`. A test checks
//! every table against its struct's fields; the README table and the Helm
//! chart's values are generated from this output
//! (integration-tests/scripts/update_env_reference.py) and checked by the
//! `deploy_env_reference` test.
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Print the environment-variable reference as a Markdown table instead.
    #[arg(long)]
    pub reference: bool,
    /// With --reference: print JSON (used by the README/chart generator) instead of Markdown.
    #[arg(long, requires = "reference")]
    pub json: bool,
}

/// One config struct of a component: its variables, defaults and effective values.
pub struct Component {
    pub name: &'static str,
    /// Prefix envy uses for the struct's fields.
    pub prefix: &'static str,
    pub vars: &'static [VarDoc],
    pub defaults: fn() -> Value,
    pub effective: fn(&[(String, String)]) -> Result<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvVar {
    pub component: &'static str,
    pub name: String,
    pub default: String,
    pub help: String,
}

fn defaults_of<T: Default + Serialize>() -> Value {
    serde_json::to_value(T::default()).unwrap_or(Value::Null)
}

fn component<T: EnvVars + Default + Serialize>(
    name: &'static str,
    effective: fn(&[(String, String)]) -> Result<Value>,
) -> Component {
    Component { name, prefix: T::PREFIX, vars: T::VARS, defaults: defaults_of::<T>, effective }
}

pub fn components() -> Vec<Component> {
    use crate::agent::config::AgentConfig;
    use crate::export::{ExportTuning, OtlpEnv};
    use crate::gateway::GatewayConfig;
    use crate::k8s::K8sConfig;
    use crate::self_telemetry::SelfTelemetryConfig;
    use crate::telemetry::TelemetryConfig;
    vec![
        component::<AgentConfig>("agent", |env| Ok(serde_json::to_value(AgentConfig::from_vars(env.to_vec())?)?)),
        component::<TelemetryConfig>("telemetry", |env| {
            Ok(serde_json::to_value(TelemetryConfig::from_vars(env.to_vec())?)?)
        }),
        component::<OtlpEnv>("export", |env| {
            let v: OtlpEnv = envy::prefixed(OtlpEnv::PREFIX).from_iter(env.to_vec())?;
            Ok(serde_json::to_value(v)?)
        }),
        component::<ExportTuning>("export", |env| {
            let v: ExportTuning = envy::prefixed(ExportTuning::PREFIX).from_iter(env.to_vec())?;
            Ok(serde_json::to_value(v)?)
        }),
        component::<SelfTelemetryConfig>("self-telemetry", |env| {
            Ok(serde_json::to_value(SelfTelemetryConfig::from_vars(env.to_vec())?)?)
        }),
        component::<K8sConfig>("k8s", |env| Ok(serde_json::to_value(K8sConfig::from_vars(env.to_vec())?)?)),
        component::<GatewayConfig>("gateway", |env| Ok(serde_json::to_value(GatewayConfig::from_vars(env.to_vec())?)?)),
        component::<crate::telemetry::sampling::TracesSamplerEnv>("sampling", |env| {
            crate::telemetry::sampling::Policy::from_vars(env.to_vec())?;
            let v: crate::telemetry::sampling::TracesSamplerEnv =
                envy::prefixed(crate::telemetry::sampling::TracesSamplerEnv::PREFIX).from_iter(env.to_vec())?;
            Ok(serde_json::to_value(v)?)
        }),
        component::<crate::telemetry::sampling::SamplingConfig>("sampling", |env| {
            let v: crate::telemetry::sampling::SamplingConfig =
                envy::prefixed(crate::telemetry::sampling::SamplingConfig::PREFIX).from_iter(env.to_vec())?;
            Ok(serde_json::to_value(v)?)
        }),
    ]
}

fn render_default(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Variables read as they are found instead of through a config struct: the
/// OpenTelemetry SDK's standard ones and Kubernetes client discovery. Listed
/// here so the reference names every variable cnflow reads (a test greps the
/// source for variable names and checks each is in [`reference`]).
pub const STANDARD_VARS: &[VarDoc] = &[
    VarDoc::new("OTEL_SERVICE_NAME", "service.name of the host resource when there is no Kubernetes workload identity (cnflow run, standalone agent); cnflow's own telemetry is always cnflow-agent / cnflow-gateway."),
    VarDoc::new("OTEL_RESOURCE_ATTRIBUTES", "`key=value,...` (percent-encoded values) added to the host resource and to cnflow's own telemetry resource; malformed values fail at start-up."),
    VarDoc::new("OTEL_METRIC_EXPORT_INTERVAL", "metric export interval in milliseconds; overrides CNFLOW_METRIC_EXPORT_INTERVAL_SECS when set."),
    VarDoc::new("OTEL_SDK_DISABLED", "true turns cnflow's own telemetry off (like CNFLOW_SELF_TELEMETRY=false); spans and metrics of the observed traffic are unaffected."),
    VarDoc::new("KUBECONFIG", "kubeconfig file used when there is no in-cluster service account (CNFLOW_K8S=auto enriches when either is present)."),
    VarDoc::new("KUBERNETES_SERVICE_HOST", "set by Kubernetes in every pod; with the service-account token it means in-cluster configuration."),
    VarDoc::new("RUST_LOG", "log filter for stderr (tracing EnvFilter syntax, e.g. info or cnflow=debug); default info."),
];

/// Per-signal variants of the OTLP exporter variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, ...):
/// each takes precedence over the generic variable for its signal, as in the OTel SDKs.
fn per_signal_vars() -> Vec<EnvVar> {
    use crate::export::OtlpEnv;
    let mut out = Vec::new();
    for signal in ["TRACES", "METRICS", "LOGS"] {
        for v in OtlpEnv::VARS {
            let Some(key) = v.name.strip_prefix(OtlpEnv::PREFIX) else { continue };
            out.push(EnvVar {
                component: "export-per-signal",
                name: format!("{}{signal}_{key}", OtlpEnv::PREFIX),
                default: String::new(),
                help: format!("{} for {} only (overrides it).", v.name, signal.to_ascii_lowercase()),
            });
        }
    }
    out
}

/// Every variable of every component, then the per-signal OTLP variants and
/// the standard variables.
pub fn reference() -> Vec<EnvVar> {
    let mut out = Vec::new();
    for c in components() {
        let defaults = (c.defaults)();
        for v in c.vars {
            let default = render_default(v.field(c.prefix).and_then(|f| defaults.get(f)));
            out.push(EnvVar { component: c.name, name: v.name.to_string(), default, help: v.help.to_string() });
        }
    }
    out.extend(per_signal_vars());
    out.extend(crate::telemetry::sampling::config::ratio_vars().into_iter().map(|(name, help)| EnvVar {
        component: "sampling",
        name,
        default: String::new(),
        help,
    }));
    for v in STANDARD_VARS {
        out.push(EnvVar {
            component: "standard",
            name: v.name.to_string(),
            default: String::new(),
            help: v.help.to_string(),
        });
    }
    out
}

pub fn reference_markdown() -> String {
    let mut s = String::from("| variable | component | default | meaning |\n|---|---|---|---|\n");
    for v in reference() {
        let default = if v.default.is_empty() { String::from("(unset)") } else { format!("`{}`", v.default) };
        s.push_str(&format!("| `{}` | {} | {} | {} |\n", v.name, v.component, default, v.help.replace('|', "\\|")));
    }
    s
}

/// Secret values (tokens, headers carrying API keys, private keys) are shown
/// only as `<set, N chars>`: `cnflow config` output ends up in logs and tickets.
fn redact(c: &Component, mut effective: Value) -> Value {
    if let Value::Object(fields) = &mut effective {
        for v in c.vars.iter().filter(|v| v.secret) {
            let Some(field) = v.field(c.prefix) else { continue };
            if let Some(value) = fields.get_mut(&field) {
                if let Value::String(s) = value {
                    *value = Value::String(format!("<set, {} chars>", s.chars().count()));
                }
            }
        }
    }
    effective
}

/// The effective configuration of every component from `env`, secrets redacted.
pub fn effective(env: &[(String, String)]) -> Result<Value> {
    let mut all = serde_json::Map::new();
    for c in components() {
        let v = redact(&c, (c.effective)(env)?);
        // A component may span several structs (export: OTEL_* and CNFLOW_EXPORT_*): merge them.
        match (all.get_mut(c.name), v) {
            (Some(Value::Object(prev)), Value::Object(more)) => prev.extend(more),
            (_, v) => {
                all.insert(c.name.to_string(), v);
            }
        }
    }
    Ok(Value::Object(all))
}

pub fn main(args: ConfigArgs) -> Result<()> {
    if args.reference && args.json {
        println!("{}", serde_json::to_string_pretty(&reference())?);
        return Ok(());
    }
    if args.reference {
        print!("{}", reference_markdown());
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&effective(&super::read_env())?)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_field_of_every_config_struct_names_its_variable() {
        for c in components() {
            assert!(!c.vars.is_empty(), "{}: no documented variables", c.name);
            let Value::Object(fields) = (c.defaults)() else { panic!("{}: defaults are not an object", c.name) };
            let fields: BTreeSet<String> = fields.keys().cloned().collect();
            let declared: BTreeSet<String> = c.vars.iter().filter_map(|v| v.field(c.prefix)).collect();
            assert_eq!(fields, declared, "{}: struct fields and EnvVars::VARS differ", c.name);
            assert_eq!(declared.len(), c.vars.len(), "{}: a variable is declared twice or lacks the prefix", c.name);
        }
    }

    /// String literals made only of `A-Z0-9_` that start with CNFLOW, OTEL or KUBE.
    fn quoted_names(text: &str) -> Vec<String> {
        text.split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                ["CNFLOW", "OTEL", "KUBE"].iter().any(|p| s.starts_with(p))
                    && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .map(str::to_string)
            .collect()
    }

    /// Every `CNFLOW_*`/`OTEL_*`/`KUBE*` name quoted in the source (outside
    /// tests) is in the reference, so users can find every variable cnflow reads.
    #[test]
    fn every_variable_read_is_in_the_reference() {
        let known: BTreeSet<String> = reference().into_iter().map(|v| v.name).collect();
        let mut missing = BTreeSet::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".rs") || name == "tests.rs" || name == "test_sink.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                // Unit tests sit at the end of a file, after `#[cfg(test)]`.
                let text = text.split("#[cfg(test)]").next().unwrap_or("");
                for n in quoted_names(text) {
                    // Prefixes (`CNFLOW_GATEWAY`, `CNFLOW_EXPORT_`) are not variables.
                    if n.ends_with('_') {
                        continue;
                    }
                    if !known.contains(&n) && !known.iter().any(|k| k.starts_with(&format!("{n}_"))) {
                        missing.insert(format!("{n} ({})", p.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "variables read but not in the reference: {missing:?}");
    }

    #[test]
    fn every_secret_looking_variable_is_declared_secret() {
        for c in components() {
            for v in c.vars {
                assert!(!crate::env_vars::looks_secret(v.name) || v.secret, "{} must use VarDoc::secret", v.name);
            }
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let env: Vec<(String, String)> = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t-value"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("CNFLOW_GATEWAY_AUTH_TOKENS", "tok-one,tok-two"),
            ("CNFLOW_GATEWAY_EXTRA_ENDPOINTS", "http://b:4317,http://c:4317"),
            ("CNFLOW_GATEWAY_EXTRA_HEADERS", "api-key=xh-s3cr3t;"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = effective(&env).unwrap();
        let text = out.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("tok-one"), "{text}");
        assert_eq!(out["export"]["headers"], "<set, 20 chars>");
        assert_eq!(out["gateway"]["auth_tokens"], "<set, 15 chars>");
        assert_eq!(out["gateway"]["extra_headers"], "<set, 18 chars>");
        assert_eq!(out["export"]["endpoint"], "http://collector:4317");
        // Unset secrets stay null.
        assert_eq!(out["export"]["client_key"], Value::Null);
    }
}
