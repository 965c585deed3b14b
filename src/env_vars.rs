//! The environment variables of the config structs, declared beside each
//! struct: `impl EnvVars for XConfig` lists every variable in field order with
//! its reference text. `cnflow config --reference` (and from it the README
//! table and the Helm chart's values) is rendered from these tables and the
//! structs' `Default`; a test checks each table against the struct's serde
//! fields, so a field cannot be added without its variable.

/// One variable: its full name and its reference text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarDoc {
    pub name: &'static str,
    pub help: &'static str,
    /// Its value is a credential (or names one): `cnflow config` prints `<set, N chars>` instead.
    pub secret: bool,
}

impl VarDoc {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, secret: false }
    }
    pub const fn secret(name: &'static str, help: &'static str) -> Self {
        Self { name, help, secret: true }
    }
    /// The serde field this variable fills, given the struct's envy prefix.
    pub fn field(&self, prefix: &str) -> Option<String> {
        self.name.strip_prefix(prefix).map(str::to_ascii_lowercase)
    }
}

/// A config struct read from environment variables with one envy prefix.
pub trait EnvVars {
    /// Prefix envy strips to find the field (`CNFLOW_`, `OTEL_EXPORTER_OTLP_`, ...).
    const PREFIX: &'static str;
    /// Every variable, in field order.
    const VARS: &'static [VarDoc];
}

/// A config struct with every field at its serde default: what envy yields
/// for an empty environment, so `Default` and "variable unset" never disagree.
pub fn serde_defaults<T: serde::de::DeserializeOwned>() -> T {
    envy::prefixed("CNFLOW_UNUSED_DEFAULTS_").from_iter(std::iter::empty::<(String, String)>()).expect("defaults")
}

/// Whether a variable's name says it carries a credential (tokens, passwords,
/// keys, headers holding API keys). Every such variable must be declared with
/// [`VarDoc::secret`] (checked by a test in `cmd::show_config`).
pub fn looks_secret(name: &str) -> bool {
    ["TOKEN", "PASSWORD", "SECRET", "HEADERS", "CREDENTIAL"].iter().any(|w| name.contains(w)) || name.ends_with("_KEY")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn secret_names() {
        for n in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "CNFLOW_GATEWAY_AUTH_TOKENS",
            "X_API_KEY",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in ["CNFLOW_SNAPLEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "CNFLOW_K8S_OWNER_CACHE_SIZE"] {
            assert!(!looks_secret(n), "{n}");
        }
    }
}
