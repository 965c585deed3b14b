//! Gateway settings from `CNFLOW_GATEWAY_*` (envy). Downstream endpoints come
//! from the standard `OTEL_EXPORTER_OTLP_*` variables (see `export::config`).
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

fn d_grpc() -> String {
    "0.0.0.0:4317".into()
}
fn d_http() -> String {
    "0.0.0.0:4318".into()
}
fn d_health() -> String {
    "0.0.0.0:13133".into()
}
fn d_max_req() -> usize {
    4 * 1024 * 1024
}
fn d_cache() -> usize {
    65_536
}
fn d_reload() -> u64 {
    60
}
fn d_batch_max_bytes() -> usize {
    4_000_000
}
fn d_batch() -> usize {
    8192
}
fn d_batch_timeout() -> u64 {
    200
}
fn d_stats() -> u64 {
    10
}
fn d_spill() -> u64 {
    1 << 30
}
fn d_shutdown() -> u64 {
    10
}
fn d_stitch_entries() -> usize {
    100_000
}
fn d_graph_edges() -> usize {
    2000
}

/// One entry of CNFLOW_GATEWAY_EXTRA_ENDPOINTS (with its CNFLOW_GATEWAY_EXTRA_HEADERS group).
#[derive(Clone, PartialEq, Eq)]
pub struct ExtraEndpoint {
    pub url: String,
    pub required: bool,
    pub headers: Vec<(String, String)>,
}

/// Header values are credentials: Debug shows only the names.
impl std::fmt::Debug for ExtraEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExtraEndpoint")
            .field("url", &self.url)
            .field("required", &self.required)
            .field("header_names", &names)
            .finish()
    }
}

/// Settings of `cnflow gateway`. Its Debug form redacts the secret
/// variables (like `cnflow config`).
#[derive(Clone, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// Address of the OTLP/gRPC receiver.
    #[serde(default = "d_grpc")]
    pub grpc_listen: String,
    /// Address of the OTLP/HTTP receiver (/v1/traces, /v1/metrics, /v1/logs).
    #[serde(default = "d_http")]
    pub http_listen: String,
    /// Address serving /healthz (liveness) and /readyz (readiness).
    #[serde(default = "d_health")]
    pub health_listen: String,
    /// Largest accepted request, after decompression (gRPC and HTTP).
    #[serde(default = "d_max_req")]
    pub max_request_bytes: usize,
    /// PEM certificate (chain) for TLS on both receivers.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// PEM private key for CNFLOW_GATEWAY_TLS_CERT.
    #[serde(default)]
    pub tls_key: Option<String>,
    /// PEM CA(s) that client certificates must chain to (mutual TLS).
    #[serde(default)]
    pub tls_client_ca: Option<String>,
    /// Comma-separated bearer tokens accepted from agents (`authorization: Bearer TOKEN`).
    #[serde(default)]
    pub auth_tokens: Option<String>,
    /// Path of a MaxMind City (or Country) .mmdb.
    #[serde(default)]
    pub geoip_city_db: Option<String>,
    /// Path of a MaxMind ASN .mmdb.
    #[serde(default)]
    pub geoip_asn_db: Option<String>,
    /// Addresses whose GeoIP result is kept (LRU).
    #[serde(default = "d_cache")]
    pub geoip_cache_size: usize,
    /// How often the database files are checked for changes and reloaded.
    #[serde(default = "d_reload")]
    pub geoip_reload_secs: u64,
    /// Items (spans, data points, log records) that trigger sending a batch.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// A batch is sent at the latest this long after its first item.
    #[serde(default = "d_batch_timeout")]
    pub batch_timeout_ms: u64,
    /// Upper limit of items per exported request (larger batches are split).
    #[serde(default)]
    pub batch_max_size: usize,
    /// Upper limit of an exported request's encoded size (larger batches are split).
    #[serde(default = "d_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Directory for a disk-backed export queue (survives restarts).
    #[serde(default)]
    pub queue_dir: Option<String>,
    /// Disk budget per destination and signal for requests spilled past the memory queue.
    #[serde(default = "d_spill")]
    pub queue_spill_bytes: u64,
    /// Comma-separated further OTLP endpoints receiving the same data (`URL[;required]`).
    #[serde(default)]
    pub extra_endpoints: Option<String>,
    /// Request headers of each extra endpoint, groups separated by `;`.
    #[serde(default)]
    pub extra_headers: Option<String>,
    /// Whether a full primary queue makes the gateway refuse data (back-pressure).
    #[serde(default)]
    pub primary_required: Option<bool>,
    /// How often the gateway's own counters are logged and exported as OTLP metrics.
    #[serde(default = "d_stats")]
    pub stats_interval_secs: u64,
    /// On SIGTERM, time allowed to flush batches and queued data.
    #[serde(default = "d_shutdown")]
    pub shutdown_timeout_secs: u64,
    /// Apply the span sampling policy (OTEL_TRACES_SAMPLER, CNFLOW_SAMPLING_*) to received spans.
    #[serde(default)]
    pub sampling: bool,
    /// The policy itself, read by `from_vars` when `sampling` is set.
    #[serde(skip)]
    pub sampling_policy: Option<crate::telemetry::sampling::Policy>,
    /// Connected traces across nodes: how long a half waits for the other (0 = off).
    #[serde(default)]
    pub stitch_window_ms: u64,
    /// Halves remembered or held at most while stitching.
    #[serde(default = "d_stitch_entries")]
    pub stitch_max_entries: usize,
    /// Export the wire-key attributes instead of stripping them.
    #[serde(default)]
    pub stitch_keep_keys: bool,
    /// Service-graph metrics from the pairs joined by the stitcher.
    #[serde(default)]
    pub service_graph: bool,
    /// Service-graph edges with their own series.
    #[serde(default = "d_graph_edges")]
    pub service_graph_max_edges: usize,
}

impl EnvVars for GatewayConfig {
    const PREFIX: &'static str = "CNFLOW_GATEWAY_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("CNFLOW_GATEWAY_GRPC_LISTEN", "address of the OTLP/gRPC receiver."),
        VarDoc::new("CNFLOW_GATEWAY_HTTP_LISTEN", "address of the OTLP/HTTP receiver (/v1/traces, /v1/metrics, /v1/logs)."),
        VarDoc::new("CNFLOW_GATEWAY_HEALTH_LISTEN", "address serving /healthz (liveness) and /readyz (readiness)."),
        VarDoc::new("CNFLOW_GATEWAY_MAX_REQUEST_BYTES", "largest accepted request, after decompression (gRPC and HTTP)."),
        VarDoc::new("CNFLOW_GATEWAY_TLS_CERT", "PEM certificate (chain) for TLS on both receivers; set with CNFLOW_GATEWAY_TLS_KEY."),
        VarDoc::secret("CNFLOW_GATEWAY_TLS_KEY", "PEM private key for CNFLOW_GATEWAY_TLS_CERT."),
        VarDoc::new("CNFLOW_GATEWAY_TLS_CLIENT_CA", "PEM CA certificate(s) for mutual TLS: both receivers then refuse clients without a certificate signed by one of them (agents set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/CLIENT_KEY); needs CNFLOW_GATEWAY_TLS_CERT."),
        VarDoc::secret("CNFLOW_GATEWAY_AUTH_TOKENS", "comma-separated bearer tokens accepted from agents (`authorization: Bearer TOKEN`); unset = no authentication."),
        VarDoc::new("CNFLOW_GATEWAY_GEOIP_CITY_DB", "path of a MaxMind City (or Country) .mmdb; unset (with no ASN DB) = GeoIP off."),
        VarDoc::new("CNFLOW_GATEWAY_GEOIP_ASN_DB", "path of a MaxMind ASN .mmdb."),
        VarDoc::new("CNFLOW_GATEWAY_GEOIP_CACHE_SIZE", "addresses whose GeoIP result is kept (LRU)."),
        VarDoc::new("CNFLOW_GATEWAY_GEOIP_RELOAD_SECS", "how often the database files are checked for changes and reloaded; 0 = never."),
        VarDoc::new("CNFLOW_GATEWAY_BATCH_SIZE", "items (spans, data points, log records) that trigger sending a batch."),
        VarDoc::new("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "a batch is sent at the latest this long after its first item."),
        VarDoc::new("CNFLOW_GATEWAY_BATCH_MAX_SIZE", "upper limit of items per exported request (larger batches are split); 0 = no limit."),
        VarDoc::new("CNFLOW_GATEWAY_BATCH_MAX_BYTES", "upper limit of an exported request's encoded size in bytes (larger batches are split; a single larger span, data point or log record travels alone). The default stays under the 4 MiB message limit of gRPC servers (the Collector's max_recv_msg_size_mib, Tempo, Jaeger): 8,192 spans of ~600 bytes are ~5 MB and would be refused whole. 0 = no limit."),
        VarDoc::new("CNFLOW_GATEWAY_QUEUE_DIR", "directory for a disk-backed export queue: a request is acknowledged only once journaled and fsync'd, queued requests survive restarts and kill -9 (delivered once), requests given up on move to destination-N/dead-letter/; unset = memory only."),
        VarDoc::new("CNFLOW_GATEWAY_QUEUE_SPILL_BYTES", "with CNFLOW_GATEWAY_QUEUE_DIR: when a destination's memory queue (CNFLOW_EXPORT_QUEUE_SIZE) is full, further requests for it are written to its disk queue only and sent later, in order, instead of being dropped (counted in cnflow.export.spilled), up to this many bytes per destination and signal; beyond it they are dropped; 0 = never spill."),
        VarDoc::new("CNFLOW_GATEWAY_EXTRA_ENDPOINTS", "comma-separated further OTLP endpoints receiving the same data, with the OTEL_EXPORTER_OTLP_* protocol, timeout, compression and TLS settings (not its headers: see CNFLOW_GATEWAY_EXTRA_HEADERS). Each has its own queue; a full or unreachable one drops (counted in cnflow.export.dropped{destination=extra-N}) without holding back the others, unless the entry ends with `;required` (then a full queue makes the gateway refuse data: back-pressure)."),
        VarDoc::secret("CNFLOW_GATEWAY_EXTRA_HEADERS", "request headers of the extra endpoints, one group per endpoint in CNFLOW_GATEWAY_EXTRA_ENDPOINTS order, groups separated by `;`, each in the OTEL_EXPORTER_OTLP_HEADERS format (`k=v,k2=v2`, values URL-encoded), e.g. `api-key=AAA;;x-token=BBB` (the second endpoint gets none). Extra endpoints never get the primary's headers."),
        VarDoc::new("CNFLOW_GATEWAY_PRIMARY_REQUIRED", "true = a full primary (OTEL_EXPORTER_OTLP_*) queue makes the gateway refuse data (back-pressure); false = the primary drops like a non-required extra endpoint; unset = required only when there is no extra endpoint."),
        VarDoc::new("CNFLOW_GATEWAY_STATS_INTERVAL_SECS", "how often the gateway's own counters are logged and exported as OTLP metrics."),
        VarDoc::new("CNFLOW_GATEWAY_SHUTDOWN_TIMEOUT_SECS", "on SIGTERM, time allowed to flush batches and queued data."),
        VarDoc::new("CNFLOW_GATEWAY_SAMPLING", "true: apply the agents' span sampling policy (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, CNFLOW_SAMPLING_KEEP_*) to received spans, for agents that export unsampled; per-protocol ratios do not apply. Spans sampled out are counted in cnflow.gateway.sampled_out, not as drops."),
        VarDoc::new("CNFLOW_GATEWAY_STITCH_WINDOW_MS", "connected traces across nodes: the SERVER span one agent exports and the CLIENT span another agent exports for the same exchange (matched by TCP sequence numbers or DNS id + client port, the cnflow.tcp.*/cnflow.udp.* span attributes; NAT and clock skew do not matter) are joined: the SERVER span moves into the CLIENT span's trace with it as parent. A SERVER half waits this long for its CLIENT, then is exported unjoined (cnflow.gateway.stitch.unmatched). 0 = off (spans pass untouched, wire attributes included). With several gateways, agents must route by join key (CNFLOW_EXPORT_GATEWAY_ENDPOINTS)."),
        VarDoc::new("CNFLOW_GATEWAY_STITCH_MAX_ENTRIES", "halves remembered or held at most while stitching; beyond it the oldest goes (a waiting SERVER span is exported unjoined), counted in cnflow.gateway.stitch.evicted."),
        VarDoc::new("CNFLOW_GATEWAY_STITCH_KEEP_KEYS", "true: export the wire-key attributes (cnflow.tcp.*, cnflow.udp.*, cnflow.graph.*) instead of stripping them after stitching."),
        VarDoc::new("CNFLOW_GATEWAY_SERVICE_GRAPH", "true: Grafana/Tempo service-graph metrics (traces_service_graph_request_total, _failed_total, _client_seconds, _server_seconds; labels client, server, connection_type) from the CLIENT/SERVER pairs the stitcher joins, for the exchanges agents with CNFLOW_SERVICE_GRAPH_METRICS=gateway leave to it: one edge per pair with both durations, failed when either span has an error status; a half left unjoined after the window is an edge to (CLIENT) or from `user` (SERVER) a virtual node (connection_type=virtual_node), as Tempo's metrics-generator does. Exported cumulatively with the gateway's own metrics every CNFLOW_GATEWAY_STATS_INTERVAL_SECS. Needs CNFLOW_GATEWAY_STITCH_WINDOW_MS."),
        VarDoc::new("CNFLOW_GATEWAY_SERVICE_GRAPH_MAX_EDGES", "service-graph edges (client, server, connection_type) with their own series; further edges share one `otel.metric.overflow=true` series (counted in cnflow.telemetry.metric_overflow{metric=service_graph})."),
    ];
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        if let serde_json::Value::Object(fields) = &mut v {
            for var in Self::VARS.iter().filter(|v| v.secret) {
                if let Some(x) = var.field(Self::PREFIX).and_then(|k| fields.get_mut(&k)) {
                    if !x.is_null() {
                        *x = serde_json::Value::String("<set>".into());
                    }
                }
            }
        }
        write!(f, "GatewayConfig {v}")
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

fn addr(var: &str, s: &str) -> Result<SocketAddr> {
    s.parse().with_context(|| format!("{var}: expected IP:PORT, got {s:?}"))
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl GatewayConfig {
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut cfg: Self = envy::prefixed("CNFLOW_GATEWAY_")
            .from_iter(vars.iter().filter(|(k, _)| k.starts_with("CNFLOW_GATEWAY_")).cloned())
            .map_err(|e| anyhow::anyhow!("invalid gateway configuration (CNFLOW_GATEWAY_*): {e}"))?;
        if cfg.sampling {
            cfg.sampling_policy = Some(crate::telemetry::sampling::Policy::from_vars(vars)?);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.grpc_addr()?;
        self.http_addr()?;
        self.health_addr()?;
        if self.max_request_bytes < 1024 {
            bail!("CNFLOW_GATEWAY_MAX_REQUEST_BYTES must be ≥ 1024 (got {})", self.max_request_bytes);
        }
        if nonempty(&self.tls_cert).is_some() != nonempty(&self.tls_key).is_some() {
            bail!("CNFLOW_GATEWAY_TLS_CERT and CNFLOW_GATEWAY_TLS_KEY must be set together");
        }
        if nonempty(&self.tls_client_ca).is_some() && nonempty(&self.tls_cert).is_none() {
            bail!("CNFLOW_GATEWAY_TLS_CLIENT_CA needs CNFLOW_GATEWAY_TLS_CERT and CNFLOW_GATEWAY_TLS_KEY (mutual TLS is TLS)");
        }
        if self.batch_size == 0 {
            bail!("CNFLOW_GATEWAY_BATCH_SIZE must be > 0");
        }
        if self.batch_timeout_ms == 0 {
            bail!("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS must be > 0");
        }
        if self.batch_max_size != 0 && self.batch_max_size < self.batch_size {
            bail!("CNFLOW_GATEWAY_BATCH_MAX_SIZE must be 0 or ≥ CNFLOW_GATEWAY_BATCH_SIZE");
        }
        if self.geoip_cache_size == 0 {
            bail!("CNFLOW_GATEWAY_GEOIP_CACHE_SIZE must be > 0");
        }
        if self.stats_interval_secs == 0 {
            bail!("CNFLOW_GATEWAY_STATS_INTERVAL_SECS must be > 0");
        }
        if self.service_graph && self.stitch_window_ms == 0 {
            bail!("CNFLOW_GATEWAY_SERVICE_GRAPH=true needs stitching: set CNFLOW_GATEWAY_STITCH_WINDOW_MS > 0 (the edges come from the joined pairs)");
        }
        if self.service_graph_max_edges == 0 {
            bail!("CNFLOW_GATEWAY_SERVICE_GRAPH_MAX_EDGES must be > 0");
        }
        self.extra_endpoints()?;
        Ok(())
    }

    pub fn grpc_addr(&self) -> Result<SocketAddr> {
        addr("CNFLOW_GATEWAY_GRPC_LISTEN", &self.grpc_listen)
    }
    pub fn http_addr(&self) -> Result<SocketAddr> {
        addr("CNFLOW_GATEWAY_HTTP_LISTEN", &self.http_listen)
    }
    pub fn health_addr(&self) -> Result<SocketAddr> {
        addr("CNFLOW_GATEWAY_HEALTH_LISTEN", &self.health_listen)
    }
    pub fn tls(&self) -> Option<(&str, &str)> {
        Some((nonempty(&self.tls_cert)?, nonempty(&self.tls_key)?))
    }
    pub fn tls_client_ca(&self) -> Option<&str> {
        nonempty(&self.tls_client_ca)
    }
    pub fn tokens(&self) -> Vec<String> {
        nonempty(&self.auth_tokens)
            .map(|s| s.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
            .unwrap_or_default()
    }
    pub fn city_db(&self) -> Option<&str> {
        nonempty(&self.geoip_city_db)
    }
    pub fn asn_db(&self) -> Option<&str> {
        nonempty(&self.geoip_asn_db)
    }
    pub fn queue_dir(&self) -> Option<&str> {
        nonempty(&self.queue_dir)
    }
    /// The extra destinations: `URL[;required]` entries, with their header group.
    pub fn extra_endpoints(&self) -> Result<Vec<ExtraEndpoint>> {
        let entries: Vec<&str> = nonempty(&self.extra_endpoints)
            .map(|s| s.split(',').map(str::trim).filter(|t| !t.is_empty()).collect())
            .unwrap_or_default();
        let groups: Vec<&str> = nonempty(&self.extra_headers).map(|s| s.split(';').collect()).unwrap_or_default();
        if groups.len() > entries.len() {
            // Said without the values: they are credentials.
            bail!(
                "CNFLOW_GATEWAY_EXTRA_HEADERS has {} `;`-separated groups but CNFLOW_GATEWAY_EXTRA_ENDPOINTS only {} entries",
                groups.len(),
                entries.len()
            );
        }
        let mut out = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let mut parts = entry.split(';').map(str::trim);
            let url = parts.next().unwrap_or_default().to_string();
            let mut required = false;
            for opt in parts.filter(|p| !p.is_empty()) {
                match opt {
                    "required" => required = true,
                    other => bail!(
                        "CNFLOW_GATEWAY_EXTRA_ENDPOINTS: unknown option {other:?} after {url} (expected `required`)"
                    ),
                }
            }
            let headers = match groups.get(i) {
                Some(g) => crate::export::config::parse_headers(g).map_err(|e| {
                    anyhow::anyhow!("CNFLOW_GATEWAY_EXTRA_HEADERS, group {} (extra endpoint {url}): {e}", i + 1)
                })?,
                None => vec![],
            };
            out.push(ExtraEndpoint { url, required, headers });
        }
        Ok(out)
    }

    /// Whether the primary destination exerts back-pressure (see CNFLOW_GATEWAY_PRIMARY_REQUIRED).
    pub fn primary_is_required(&self, extra_destinations: usize) -> bool {
        self.primary_required.unwrap_or(extra_destinations == 0)
    }
    /// The stitcher's settings, when CNFLOW_GATEWAY_STITCH_WINDOW_MS is set.
    pub fn stitch(&self) -> Option<super::stitch::StitchConfig> {
        (self.stitch_window_ms > 0).then(|| super::stitch::StitchConfig {
            window: Duration::from_millis(self.stitch_window_ms),
            max_entries: self.stitch_max_entries.max(1),
            keep_keys: self.stitch_keep_keys,
            service_graph_edges: if self.service_graph { self.service_graph_max_edges } else { 0 },
        })
    }

    pub fn batch_timeout(&self) -> Duration {
        Duration::from_millis(self.batch_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }
    #[test]
    fn defaults_match_the_collector_batch_processor() {
        let c = GatewayConfig::default();
        assert_eq!((c.batch_size, c.batch_timeout_ms, c.batch_max_size, c.batch_max_bytes), (8192, 200, 0, 4_000_000));
        assert_eq!(c.grpc_listen, "0.0.0.0:4317");
        assert_eq!(c.health_listen, "0.0.0.0:13133");
    }
    #[test]
    fn bad_values_name_the_variable() {
        for (k, v, want) in [
            ("CNFLOW_GATEWAY_GRPC_LISTEN", "4317", "CNFLOW_GATEWAY_GRPC_LISTEN"),
            ("CNFLOW_GATEWAY_BATCH_SIZE", "0", "CNFLOW_GATEWAY_BATCH_SIZE"),
            ("CNFLOW_GATEWAY_BATCH_SIZE", "x", "CNFLOW_GATEWAY"),
            ("CNFLOW_GATEWAY_TLS_CERT", "/a.pem", "CNFLOW_GATEWAY_TLS_KEY"),
            ("CNFLOW_GATEWAY_TLS_CLIENT_CA", "/ca.pem", "CNFLOW_GATEWAY_TLS_CLIENT_CA"),
            ("CNFLOW_GATEWAY_SERVICE_GRAPH", "true", "CNFLOW_GATEWAY_SERVICE_GRAPH"),
        ] {
            let e = format!("{:#}", GatewayConfig::from_vars(vars(&[(k, v)])).unwrap_err());
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let c = GatewayConfig::from_vars(vars(&[("CNFLOW_GATEWAY_AUTH_TOKENS", "a, b,")])).unwrap();
        assert_eq!(c.tokens(), vec!["a", "b"]);
        let c = GatewayConfig::from_vars(vars(&[
            ("CNFLOW_GATEWAY_AUTH_TOKENS", "tok-s3cr3t"),
            ("CNFLOW_GATEWAY_EXTRA_ENDPOINTS", "http://b:4317"),
            ("CNFLOW_GATEWAY_EXTRA_HEADERS", "api-key=hdr-s3cr3t"),
        ]))
        .unwrap();
        let d = format!("{c:?} {:?}", c.extra_endpoints().unwrap());
        let g = GatewayConfig::from_vars(vars(&[
            ("CNFLOW_GATEWAY_SERVICE_GRAPH", "true"),
            ("CNFLOW_GATEWAY_STITCH_WINDOW_MS", "1000"),
        ]))
        .unwrap();
        assert_eq!(g.stitch().unwrap().service_graph_edges, 2000);
        assert!(!d.contains("s3cr3t") && d.contains("http://b:4317") && d.contains("api-key"), "{d}");
    }
}
