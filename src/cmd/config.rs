//! `cnflow config`: print the effective configuration of every component, or
//! (`--reference`) the reference of every environment variable.
//!
//! The reference is generated from the config structs themselves: each field's
//! doc comment starts with the variable it is read from (`/// CNFLOW_X: ...`),
//! the sources are embedded with `include_str!`, and defaults come from
//! serialising each struct's `Default`. A test checks that every field has such
//! a line, and that the README and the Helm chart name the same variables.
use anyhow::Result;
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

/// One configurable component: where its struct lives and how to get its defaults / effective values.
pub struct Component {
    pub name: &'static str,
    /// Source text of the file holding the struct (doc comments name the variables).
    pub source: &'static str,
    /// Name of the struct inside `source`.
    pub struct_name: &'static str,
    /// Prefix envy uses for the struct's fields.
    pub prefix: &'static str,
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

pub fn components() -> Vec<Component> {
    vec![
        Component {
            name: "agent",
            source: include_str!("../agent/config.rs"),
            struct_name: "AgentConfig",
            prefix: "CNFLOW_",
            defaults: || serde_json::to_value(crate::agent::config::AgentConfig::default()).unwrap_or(Value::Null),
            effective: |env| {
                Ok(serde_json::to_value(crate::agent::config::AgentConfig::from_vars(env.iter().cloned())?)?)
            },
        },
        Component {
            name: "telemetry",
            source: include_str!("../telemetry/config.rs"),
            struct_name: "TelemetryConfig",
            prefix: "CNFLOW_",
            defaults: || serde_json::to_value(crate::telemetry::TelemetryConfig::default()).unwrap_or(Value::Null),
            effective: |env| {
                Ok(serde_json::to_value(crate::telemetry::TelemetryConfig::from_vars(env.iter().cloned())?)?)
            },
        },
        Component {
            name: "export",
            source: include_str!("../export/config.rs"),
            struct_name: "OtlpEnv",
            prefix: "OTEL_EXPORTER_OTLP_",
            defaults: || serde_json::to_value(crate::export::OtlpEnv::default()).unwrap_or(Value::Null),
            effective: |env| {
                let v: crate::export::OtlpEnv = envy::prefixed("OTEL_EXPORTER_OTLP_").from_iter(env.iter().cloned())?;
                Ok(serde_json::to_value(v)?)
            },
        },
        Component {
            name: "export",
            source: include_str!("../export/config.rs"),
            struct_name: "ExportTuning",
            prefix: "CNFLOW_EXPORT_",
            defaults: || serde_json::to_value(crate::export::ExportTuning::default()).unwrap_or(Value::Null),
            effective: |env| {
                let v: crate::export::ExportTuning = envy::prefixed("CNFLOW_EXPORT_").from_iter(env.iter().cloned())?;
                Ok(serde_json::to_value(v)?)
            },
        },
        Component {
            name: "self-telemetry",
            source: include_str!("../self_telemetry/mod.rs"),
            struct_name: "SelfTelemetryConfig",
            prefix: "CNFLOW_",
            defaults: || {
                serde_json::to_value(crate::self_telemetry::SelfTelemetryConfig::default()).unwrap_or(Value::Null)
            },
            effective: |env| {
                Ok(serde_json::to_value(crate::self_telemetry::SelfTelemetryConfig::from_vars(env.iter().cloned())?)?)
            },
        },
        Component {
            name: "k8s",
            source: include_str!("../k8s/config.rs"),
            struct_name: "K8sConfig",
            prefix: "CNFLOW_",
            defaults: || serde_json::to_value(crate::k8s::K8sConfig::default()).unwrap_or(Value::Null),
            effective: |env| Ok(serde_json::to_value(crate::k8s::K8sConfig::from_vars(env.iter().cloned())?)?),
        },
        Component {
            name: "gateway",
            source: include_str!("../gateway/config.rs"),
            struct_name: "GatewayConfig",
            prefix: "CNFLOW_GATEWAY_",
            defaults: || serde_json::to_value(crate::gateway::GatewayConfig::default()).unwrap_or(Value::Null),
            effective: |env| Ok(serde_json::to_value(crate::gateway::GatewayConfig::from_vars(env.iter().cloned())?)?),
        },
    ]
}

/// Doc-comment variable lines (`/// NAME: help`) inside `struct_name`'s body, in order.
pub fn documented_vars(source: &str, struct_name: &str) -> Vec<(String, String)> {
    let start = source
        .find(&format!("pub struct {struct_name} "))
        .or_else(|| source.find(&format!("pub struct {struct_name}{{")));
    let Some(start) = start else { return vec![] };
    let body = &source[start..];
    let end = body.find("\n}").unwrap_or(body.len());
    let mut out = Vec::new();
    for line in body[..end].lines() {
        let Some(doc) = line.trim().strip_prefix("///") else { continue };
        let doc = doc.trim();
        let Some((name, help)) = doc.split_once(':') else { continue };
        if !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && name.contains('_')
        {
            out.push((name.to_string(), help.trim().to_string()));
        }
    }
    out
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
        for (name, help) in documented_vars(c.source, c.struct_name) {
            let field = name.strip_prefix(c.prefix).map(|f| f.to_ascii_lowercase());
            let default = render_default(field.as_deref().and_then(|f| defaults.get(f)));
            out.push(EnvVar { component: c.name, name, default, help });
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

pub fn main(args: ConfigArgs) -> Result<()> {
    if args.reference && args.json {
        println!("{}", serde_json::to_string_pretty(&reference())?);
        return Ok(());
    }
    if args.reference {
        print!("{}", reference_markdown());
        return Ok(());
    }
    let env = super::read_env();
    let mut all = serde_json::Map::new();
    for c in components() {
        // A component may span several structs (export: OTEL_* and CNFLOW_EXPORT_*): merge them.
        match (all.get_mut(c.name), (c.effective)(&env)?) {
            (Some(Value::Object(prev)), Value::Object(more)) => prev.extend(more),
            (_, v) => {
                all.insert(c.name.to_string(), v);
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(all))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_every_config_struct_names_its_variable() {
        for c in components() {
            let documented = documented_vars(c.source, c.struct_name);
            assert!(!documented.is_empty(), "{}: no documented variables", c.name);
            if let Value::Object(fields) = (c.defaults)() {
                for field in fields.keys() {
                    let var = format!("{}{}", c.prefix, field.to_ascii_uppercase());
                    assert!(
                        documented.iter().any(|(n, _)| *n == var),
                        "{}: field `{field}` has no `/// {var}: ...` doc line in {}",
                        c.name,
                        c.struct_name
                    );
                }
            }
        }
    }
}
