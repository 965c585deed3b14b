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
    ]
}

fn render_default(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Every variable of every component.
pub fn reference() -> Vec<EnvVar> {
    let mut out = Vec::new();
    for c in components() {
        let defaults = (c.defaults)();
        for v in c.vars {
            let default = render_default(v.field(c.prefix).and_then(|f| defaults.get(f)));
            out.push(EnvVar { component: c.name, name: v.name.to_string(), default, help: v.help.to_string() });
        }
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
