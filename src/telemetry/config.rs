//! Telemetry settings (`CNFLOW_*`): metric temporality and interval, span
//! batching, route templating bounds, masking and error policies.
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

fn d_temporality() -> String {
    "cumulative".into()
}
fn d_metric_interval() -> u64 {
    60
}
fn d_batch_size() -> usize {
    512
}
fn d_batch_timeout() -> u64 {
    1000
}
fn d_route_fanout() -> usize {
    24
}
fn d_route_nodes() -> usize {
    10_000
}
fn d_route_depth() -> usize {
    12
}
fn d_cardinality() -> usize {
    2000
}
fn d_network_pairs() -> usize {
    1000
}
fn d_network_conns() -> usize {
    65_536
}
fn d_syn_timeout() -> u64 {
    3000
}

/// Settings of span and metric generation (agent and replay).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryConfig {
    /// Aggregation temporality of histograms and counters: cumulative or delta.
    #[serde(default = "d_temporality")]
    pub metrics_temporality: String,
    /// How often metrics are emitted (OTEL_METRIC_EXPORT_INTERVAL, in ms, overrides it when set).
    #[serde(default = "d_metric_interval")]
    pub metric_export_interval_secs: u64,
    /// Spans per OTLP request.
    #[serde(default = "d_batch_size")]
    pub span_batch_size: usize,
    /// Longest time a span waits in a batch before it is sent.
    #[serde(default = "d_batch_timeout")]
    pub span_batch_timeout_ms: u64,
    /// Distinct path segments seen at one route position before it collapses to `{param}`.
    #[serde(default = "d_route_fanout")]
    pub route_max_fanout: usize,
    /// Size cap of the route trie.
    #[serde(default = "d_route_nodes")]
    pub route_max_nodes: usize,
    /// Path segments kept in http.route.
    #[serde(default = "d_route_depth")]
    pub route_max_depth: usize,
    /// Put Redis commands with their argument values into db.query.text (default masks them as '?').
    #[serde(default)]
    pub unmask_db_statements: bool,
    /// Mark DNS spans answered with NXDOMAIN as errors.
    #[serde(default)]
    pub dns_nxdomain_is_error: bool,
    /// Add server.address/server.port to client-side duration metrics (higher cardinality).
    #[serde(default)]
    pub metrics_server_address: bool,
    /// Attribute sets kept per metric.
    #[serde(default = "d_cardinality")]
    pub metrics_cardinality_limit: usize,
    /// L4 network metrics per workload pair (cnflow.network.*).
    #[serde(default)]
    pub network_metrics: bool,
    /// Workload pairs with their own L4 series; further pairs share the overflow series.
    #[serde(default = "d_network_pairs")]
    pub network_metrics_max_pairs: usize,
    /// Connections tracked for the L4 connection counters.
    #[serde(default = "d_network_conns")]
    pub network_metrics_max_connections: usize,
    /// A SYN unanswered for this long counts as a failed connection.
    #[serde(default = "d_syn_timeout")]
    pub network_syn_timeout_ms: u64,
    /// Grafana/Tempo service-graph metrics (traces_service_graph_*): false, true or gateway.
    #[serde(default)]
    pub service_graph_metrics: ServiceGraphMode,
}

/// CNFLOW_SERVICE_GRAPH_METRICS: who counts the service-graph edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum ServiceGraphMode {
    #[default]
    #[serde(rename = "false")]
    Off,
    /// Every edge counted by the agents, split between the two ends' agents.
    #[serde(rename = "true")]
    Agents,
    /// Cross-node edges left to the gateway (CNFLOW_GATEWAY_SERVICE_GRAPH),
    /// which counts them from the joined pairs.
    #[serde(rename = "gateway")]
    Gateway,
}

/// By hand, so that a bad value names the variable.
impl<'de> Deserialize<'de> for ServiceGraphMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "false" | "" => Ok(Self::Off),
            "true" => Ok(Self::Agents),
            "gateway" => Ok(Self::Gateway),
            _ => Err(serde::de::Error::custom(format!(
                "CNFLOW_SERVICE_GRAPH_METRICS must be true, false or gateway (got {v:?})"
            ))),
        }
    }
}

impl EnvVars for TelemetryConfig {
    const PREFIX: &'static str = "CNFLOW_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new(
            "CNFLOW_METRICS_TEMPORALITY",
            "aggregation temporality of histograms and counters: cumulative or delta.",
        ),
        VarDoc::new(
            "CNFLOW_METRIC_EXPORT_INTERVAL_SECS",
            "how often metrics are emitted (OTEL_METRIC_EXPORT_INTERVAL, in ms, overrides it when set).",
        ),
        VarDoc::new("CNFLOW_SPAN_BATCH_SIZE", "spans per OTLP request; a full batch is sent at once."),
        VarDoc::new("CNFLOW_SPAN_BATCH_TIMEOUT_MS", "longest time a span waits in a batch before it is sent."),
        VarDoc::new(
            "CNFLOW_ROUTE_MAX_FANOUT",
            "distinct path segments seen at one route position before it collapses to `{param}`.",
        ),
        VarDoc::new(
            "CNFLOW_ROUTE_MAX_NODES",
            "size cap of the route trie; beyond it unseen segments become `{param}`.",
        ),
        VarDoc::new("CNFLOW_ROUTE_MAX_DEPTH", "path segments kept in http.route; deeper segments collapse into `/*`."),
        VarDoc::new(
            "CNFLOW_UNMASK_DB_STATEMENTS",
            "true: db.query.text carries statements with their argument values (default false: every value is '?', e.g. `SET ? ?`). Credentials are never shown either way (Redis AUTH, HELLO AUTH, MIGRATE AUTH/AUTH2, CONFIG SET requirepass/masterauth, ACL SETUSER passwords).",
        ),
        VarDoc::new(
            "CNFLOW_DNS_NXDOMAIN_IS_ERROR",
            "mark DNS spans answered with NXDOMAIN as errors (SERVFAIL, REFUSED etc. always are).",
        ),
        VarDoc::new(
            "CNFLOW_METRICS_SERVER_ADDRESS",
            "add server.address/server.port to client-side duration metrics (higher cardinality).",
        ),
        VarDoc::new(
            "CNFLOW_METRICS_CARDINALITY_LIMIT",
            "attribute sets kept per metric; further sets go to one `otel.metric.overflow=true` series.",
        ),
        VarDoc::new(
            "CNFLOW_NETWORK_METRICS",
            "true: L4 network metrics per workload pair (cnflow.network.flow.bytes/packets, cnflow.network.tcp.*), from the packets already captured.",
        ),
        VarDoc::new(
            "CNFLOW_NETWORK_METRICS_MAX_PAIRS",
            "workload pairs with their own L4 series; further pairs share one `otel.metric.overflow=true` series (counted in cnflow.network.dropped).",
        ),
        VarDoc::new(
            "CNFLOW_NETWORK_METRICS_MAX_CONNECTIONS",
            "connections tracked for the L4 connection counters; the least recently active is dropped first (counted).",
        ),
        VarDoc::new(
            "CNFLOW_NETWORK_SYN_TIMEOUT_MS",
            "a SYN without SYN/ACK or RST for this long counts as a failed connection (error.type=timeout).",
        ),
        VarDoc::new(
            "CNFLOW_SERVICE_GRAPH_METRICS",
            "true: Grafana/Tempo service-graph metrics (traces_service_graph_request_total, _failed_total, _client_seconds, _server_seconds), every edge counted by the agents (a cross-node edge split between the two ends' agents). gateway: with a gateway running CNFLOW_GATEWAY_SERVICE_GRAPH=true, the agent counts only pairs it sees both ends of, database/messaging calls at their client end and exchanges without a wire key, and leaves every other exchange to the gateway (marking its spans with cnflow.graph.peer), which counts it from the joined CLIENT/SERVER pair (or the unpaired half, as a virtual node). The Helm chart sets gateway when gateway.env.CNFLOW_GATEWAY_SERVICE_GRAPH is true.",
        ),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

impl TelemetryConfig {
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut cfg: Self = envy::prefixed("CNFLOW_")
            .from_iter(vars.iter().filter(|(k, _)| k.starts_with("CNFLOW_")).cloned())
            .map_err(|e| anyhow::anyhow!("invalid telemetry configuration: {e}"))?;
        if let Some((_, v)) = vars.iter().find(|(k, _)| k == "OTEL_METRIC_EXPORT_INTERVAL") {
            let ms: u64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("OTEL_METRIC_EXPORT_INTERVAL must be milliseconds (got {v:?})"))?;
            cfg.metric_export_interval_secs = ms.div_ceil(1000).max(1);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.temporality()?;
        if self.metric_export_interval_secs == 0 {
            bail!("CNFLOW_METRIC_EXPORT_INTERVAL_SECS must be > 0");
        }
        if self.span_batch_size == 0 {
            bail!("CNFLOW_SPAN_BATCH_SIZE must be > 0");
        }
        if self.route_max_fanout < 2 {
            bail!("CNFLOW_ROUTE_MAX_FANOUT must be ≥ 2 (got {})", self.route_max_fanout);
        }
        if self.route_max_nodes < 16 {
            bail!("CNFLOW_ROUTE_MAX_NODES must be ≥ 16 (got {})", self.route_max_nodes);
        }
        if self.route_max_depth == 0 {
            bail!("CNFLOW_ROUTE_MAX_DEPTH must be > 0");
        }
        if self.metrics_cardinality_limit == 0 {
            bail!("CNFLOW_METRICS_CARDINALITY_LIMIT must be > 0");
        }
        if self.network_metrics_max_pairs == 0 || self.network_metrics_max_connections == 0 {
            bail!("CNFLOW_NETWORK_METRICS_MAX_PAIRS and CNFLOW_NETWORK_METRICS_MAX_CONNECTIONS must be > 0");
        }
        Ok(())
    }

    pub fn temporality(&self) -> Result<Temporality> {
        match self.metrics_temporality.trim().to_ascii_lowercase().as_str() {
            "cumulative" => Ok(Temporality::Cumulative),
            "delta" => Ok(Temporality::Delta),
            other => bail!("CNFLOW_METRICS_TEMPORALITY must be cumulative or delta (got {other:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }
    #[test]
    fn defaults_and_errors_name_the_variable() {
        let c = TelemetryConfig::default();
        assert_eq!(c.temporality().unwrap(), Temporality::Cumulative);
        assert_eq!(c.metric_export_interval_secs, 60);
        let c = TelemetryConfig::from_vars(vars(&[
            ("CNFLOW_METRICS_TEMPORALITY", "Delta"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ]))
        .unwrap();
        assert_eq!(c.temporality().unwrap(), Temporality::Delta);
        assert_eq!(c.metric_export_interval_secs, 5);
        let e = TelemetryConfig::from_vars(vars(&[("CNFLOW_METRICS_TEMPORALITY", "x")])).unwrap_err();
        assert!(e.to_string().contains("CNFLOW_METRICS_TEMPORALITY"));
        let e = TelemetryConfig::from_vars(vars(&[("CNFLOW_ROUTE_MAX_FANOUT", "1")])).unwrap_err();
        assert!(e.to_string().contains("CNFLOW_ROUTE_MAX_FANOUT"));
        assert_eq!(c.service_graph_metrics, ServiceGraphMode::Off);
        for (v, want) in [
            ("true", ServiceGraphMode::Agents),
            ("false", ServiceGraphMode::Off),
            ("gateway", ServiceGraphMode::Gateway),
        ] {
            let c = TelemetryConfig::from_vars(vars(&[("CNFLOW_SERVICE_GRAPH_METRICS", v)])).unwrap();
            assert_eq!(c.service_graph_metrics, want, "{v}");
        }
        let e = TelemetryConfig::from_vars(vars(&[("CNFLOW_SERVICE_GRAPH_METRICS", "yes")])).unwrap_err();
        assert!(e.to_string().contains("CNFLOW_SERVICE_GRAPH_METRICS"), "{e}");
        let e = TelemetryConfig::from_vars(vars(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")])).unwrap_err();
        assert!(e.to_string().contains("OTEL_METRIC_EXPORT_INTERVAL"));
    }
}
