//! Export settings from the standard `OTEL_EXPORTER_OTLP_*` variables (with the
//! per-signal `TRACES_`/`METRICS_`/`LOGS_` variants taking precedence, as the
//! OpenTelemetry specification says) plus cnflow's queue/retry knobs
//! (`CNFLOW_EXPORT_*`). Every bad value is rejected at start-up, naming the variable.
use super::Signal;
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The standard OTLP exporter variables. Read by hand (per-signal precedence),
/// declared here so `cnflow config --reference` and the chart list them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtlpEnv {
    /// OTLP endpoint for all signals (per-signal variables override it).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// OTLP transport: grpc (default), http/protobuf or http/json.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Extra request headers, `key=value,key2=value2` (values URL-encoded).
    #[serde(default)]
    pub headers: Option<String>,
    /// Per-request timeout in milliseconds (default 10000).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Compression: gzip, zstd or none (default none).
    #[serde(default)]
    pub compression: Option<String>,
    /// For gRPC endpoints without a scheme, true = plaintext, false (default) = TLS.
    #[serde(default)]
    pub insecure: Option<String>,
    /// PEM file of the CA(s) trusted for the backend's certificate (default: system roots).
    #[serde(default)]
    pub certificate: Option<String>,
    /// PEM client certificate for mutual TLS (with OTEL_EXPORTER_OTLP_CLIENT_KEY).
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// PEM private key for mutual TLS.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl EnvVars for OtlpEnv {
    const PREFIX: &'static str = "OTEL_EXPORTER_OTLP_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP endpoint for all signals (gRPC: used as-is; HTTP: /v1/traces, /v1/metrics, /v1/logs appended). OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT override it per signal and are used as-is."),
        VarDoc::new("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc (default), http/protobuf or http/json; per-signal variants OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_PROTOCOL."),
        VarDoc::secret("OTEL_EXPORTER_OTLP_HEADERS", "extra request headers, `key=value,key2=value2` (values URL-encoded), e.g. vendor API keys; per-signal variants too."),
        VarDoc::new("OTEL_EXPORTER_OTLP_TIMEOUT", "per-request timeout in milliseconds (default 10000); per-signal variants too."),
        VarDoc::new("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip, zstd or none (default none); per-signal variants too."),
        VarDoc::new("OTEL_EXPORTER_OTLP_INSECURE", "for gRPC endpoints without a scheme, true = plaintext, false (default) = TLS."),
        VarDoc::new("OTEL_EXPORTER_OTLP_CERTIFICATE", "PEM file of the CA(s) trusted for the backend's certificate (default: system roots)."),
        VarDoc::new("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "PEM client certificate for mutual TLS (with OTEL_EXPORTER_OTLP_CLIENT_KEY)."),
        VarDoc::secret("OTEL_EXPORTER_OTLP_CLIENT_KEY", "PEM private key for mutual TLS."),
    ];
}

/// Four times the 65,536 of before backlog compression (export::queue): a
/// burst of 200,000 Redis spans against a receiver on the same two cores
/// needed ~150,000; full, it holds no more memory than 65,536 uncompressed did.
fn d_queue() -> usize {
    262_144
}
fn d_initial() -> u64 {
    500
}
fn d_max_backoff() -> u64 {
    30_000
}
fn d_elapsed() -> u64 {
    300
}
/// The Collector's exporter default (sending_queue num_consumers). With 4,
/// a backend whose responses wait on delayed ACKs (a receiver without
/// TCP_NODELAY: rotel) let the agent's queue overflow at ~150k spans/s:
/// `bench_completeness.sh` 69–75% at pipeline depth 64 with 4, 100% with 10
/// (2026-12-05, two alternated runs each).
fn d_concurrent() -> usize {
    10
}
fn d_resolve() -> u64 {
    30
}

/// Queue and retry settings of the OTLP exporter (agent and gateway).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportTuning {
    /// Spans / metric data points / log records waiting for export per signal and endpoint.
    #[serde(default = "d_queue")]
    pub queue_size: usize,
    /// First retry delay (doubled per attempt, ±50% jitter).
    #[serde(default = "d_initial")]
    pub retry_initial_backoff_ms: u64,
    /// Upper bound of the retry delay.
    #[serde(default = "d_max_backoff")]
    pub retry_max_backoff_ms: u64,
    /// Give up on a request (counted as failed) after retrying this long.
    #[serde(default = "d_elapsed")]
    pub retry_max_elapsed_secs: u64,
    /// Export requests in flight at once per signal and endpoint (like the Collector's sending_queue num_consumers).
    #[serde(default = "d_concurrent")]
    pub max_concurrent_requests: usize,
    /// Comma-separated gateway endpoints; spans are routed among them by join key.
    #[serde(default)]
    pub gateway_endpoints: Option<String>,
    /// `host:port` of the gateways' headless Service, re-resolved periodically.
    #[serde(default)]
    pub gateway_dns: Option<String>,
    /// How often CNFLOW_EXPORT_GATEWAY_DNS is resolved again.
    #[serde(default = "d_resolve")]
    pub gateway_resolve_secs: u64,
}

impl EnvVars for ExportTuning {
    const PREFIX: &'static str = "CNFLOW_EXPORT_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("CNFLOW_EXPORT_QUEUE_SIZE", "spans / metric data points / log records waiting for export per signal and endpoint (gateway: per destination); beyond it new data is dropped and counted (cnflow.export.dropped), or refused by the gateway for a required destination. Once the waiting requests hold an eighth of it, further ones are held zstd-compressed (memory in the cnflow.export.queue.bytes gauge): ~70 bytes per Redis span instead of ~630."),
        VarDoc::new("CNFLOW_EXPORT_RETRY_INITIAL_BACKOFF_MS", "first retry delay (doubled per attempt, ±50% jitter)."),
        VarDoc::new("CNFLOW_EXPORT_RETRY_MAX_BACKOFF_MS", "upper bound of the retry delay."),
        VarDoc::new("CNFLOW_EXPORT_RETRY_MAX_ELAPSED_SECS", "give up on a request (counted as failed) after retrying this long; 0 = retry forever."),
        VarDoc::new("CNFLOW_EXPORT_MAX_CONCURRENT_REQUESTS", "export requests in flight at once per signal and endpoint (like the Collector's sending_queue num_consumers); 1 delivers strictly in queue order. 1–64 (default 10, as the Collector's sending_queue num_consumers)."),
        VarDoc::new("CNFLOW_EXPORT_GATEWAY_ENDPOINTS", "agent: comma-separated `cnflow gateway` endpoints (URLs) sharing the load; each trace goes to the one chosen by a consistent (rendezvous) hash of the exchange's join key, so the CLIENT and SERVER halves exported by two nodes meet in one gateway for CNFLOW_GATEWAY_STITCH_WINDOW_MS. The OTEL_EXPORTER_OTLP_* settings (protocol, TLS, headers; an endpoint is still required) apply to each; metrics go to the first. Unset = OTEL_EXPORTER_OTLP_ENDPOINT only."),
        VarDoc::new("CNFLOW_EXPORT_GATEWAY_DNS", "agent: `host:port` of the gateways' headless Service (e.g. `cnflow-gateway-headless.observability.svc:4317`): every address it resolves to is a gateway endpoint (scheme and path from OTEL_EXPORTER_OTLP_ENDPOINT), added to CNFLOW_EXPORT_GATEWAY_ENDPOINTS and re-resolved every CNFLOW_EXPORT_GATEWAY_RESOLVE_SECS."),
        VarDoc::new("CNFLOW_EXPORT_GATEWAY_RESOLVE_SECS", "how often CNFLOW_EXPORT_GATEWAY_DNS is resolved again (a failed lookup keeps the current gateways)."),
    ];
}

impl Default for ExportTuning {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Everything one exporter (one endpoint, one signal) needs.
/// Its Debug form shows header names only, never values or key material.
#[derive(Clone)]
pub struct ExportConfig {
    pub signal: Signal,
    /// Full URL: for HTTP the complete path (`.../v1/traces`), for gRPC scheme://host:port.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
    /// PEM contents (read at start-up so a missing file fails early).
    pub ca_pem: Option<Vec<u8>>,
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub queue_size: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// None = retry forever.
    pub retry_max_elapsed: Option<Duration>,
    /// Requests in flight at once; one round trip per request would cap
    /// throughput at batch size ÷ RTT.
    pub max_concurrent: usize,
    /// When set, queued requests are also written here and reloaded at start
    /// (nothing is lost across a restart while the backend is down).
    pub queue_dir: Option<PathBuf>,
    /// With `queue_dir`: bytes of requests that may wait on disk only when
    /// the memory queue is full, instead of being dropped (0 = drop).
    pub queue_spill_bytes: u64,
    /// Name of the destination in self-metrics (`destination` attribute):
    /// `primary`, or `extra-N` for the gateway's extra endpoints.
    pub destination: String,
}

impl std::fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExportConfig")
            .field("signal", &self.signal)
            .field("destination", &self.destination)
            .field("endpoint", &self.display_endpoint())
            .field("protocol", &self.protocol)
            .field("header_names", &header_names)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .field("queue_size", &self.queue_size)
            .field("queue_dir", &self.queue_dir)
            .field("queue_spill_bytes", &self.queue_spill_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        let t = ExportTuning::default();
        Self {
            signal: Signal::Traces,
            endpoint: "http://localhost:4317".into(),
            protocol: OtlpProtocol::Grpc,
            headers: vec![],
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            ca_pem: None,
            client_identity_pem: None,
            queue_size: t.queue_size,
            retry_initial: Duration::from_millis(t.retry_initial_backoff_ms),
            retry_max: Duration::from_millis(t.retry_max_backoff_ms),
            retry_max_elapsed: Some(Duration::from_secs(t.retry_max_elapsed_secs)),
            max_concurrent: t.max_concurrent_requests,
            queue_dir: None,
            queue_spill_bytes: 0,
            destination: "primary".into(),
        }
    }
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
    fn env_infix(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES_",
            Signal::Metrics => "METRICS_",
            Signal::Logs => "LOGS_",
        }
    }
    /// HTTP path appended to a generic endpoint.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }
}

struct Vars<'a> {
    vars: &'a HashMap<String, String>,
    signal: Signal,
}

impl Vars<'_> {
    /// (variable name, value) of the signal-specific variable if set, else the generic one. Empty = unset.
    fn get(&self, key: &str) -> Option<(String, &str)> {
        let specific = format!("OTEL_EXPORTER_OTLP_{}{key}", self.signal.env_infix());
        let generic = format!("OTEL_EXPORTER_OTLP_{key}");
        for name in [specific, generic] {
            if let Some(v) = self.vars.get(&name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                return Some((name, v));
            }
        }
        None
    }
}

/// The OTLP export settings of each signal, parsed once by the subcommand
/// and shared by everything that exports or needs to know where export goes
/// (the exporter, self-telemetry, the agent's own-socket filter).
#[derive(Debug, Clone, Default)]
pub struct OtlpExportConfig {
    pub traces: Option<ExportConfig>,
    pub metrics: Option<ExportConfig>,
    pub logs: Option<ExportConfig>,
    /// CNFLOW_EXPORT_GATEWAY_*: several gateways, spans routed by join key.
    pub gateways: super::gateway_route::GatewayRouting,
}

impl OtlpExportConfig {
    /// Parses the settings of `signals` (the others stay None, so their
    /// variables are not checked).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>, signals: &[Signal]) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut out = Self::default();
        for &s in signals {
            let c = ExportConfig::from_vars(s, vars.iter().cloned())?;
            match s {
                Signal::Traces => out.traces = c,
                Signal::Metrics => out.metrics = c,
                Signal::Logs => out.logs = c,
            }
        }
        let tuning: ExportTuning = envy::prefixed("CNFLOW_EXPORT_")
            .from_iter(vars.iter().filter(|(k, _)| k.starts_with("CNFLOW_EXPORT_")).cloned())
            .map_err(|e| anyhow::anyhow!("invalid export configuration (CNFLOW_EXPORT_*): {e}"))?;
        let nonempty = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        out.gateways = super::gateway_route::GatewayRouting {
            endpoints: nonempty(&tuning.gateway_endpoints)
                .map(|s| s.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect())
                .unwrap_or_default(),
            dns: nonempty(&tuning.gateway_dns),
            resolve_every: Duration::from_secs(tuning.gateway_resolve_secs.max(1)),
        };
        if out.gateways.enabled() && out.traces.is_none() {
            bail!("CNFLOW_EXPORT_GATEWAY_ENDPOINTS/CNFLOW_EXPORT_GATEWAY_DNS need OTEL_EXPORTER_OTLP_ENDPOINT (its protocol and TLS settings apply to every gateway)");
        }
        Ok(out)
    }

    /// Some signal has an endpoint.
    pub fn any(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some() || self.logs.is_some()
    }

    /// Ports of the configured endpoints.
    pub fn endpoint_ports(&self) -> Vec<u16> {
        [&self.traces, &self.metrics, &self.logs]
            .into_iter()
            .flatten()
            .map(|c| c.endpoint.as_str())
            .chain(self.gateways.endpoints.iter().map(String::as_str))
            .filter_map(|e| reqwest::Url::parse(e).ok()?.port_or_known_default())
            .collect()
    }
}

impl ExportConfig {
    pub fn from_vars(signal: Signal, vars: impl IntoIterator<Item = (String, String)>) -> Result<Option<Self>> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let v = Vars { vars: &vars, signal };
        let protocol = match v.get("PROTOCOL") {
            None => OtlpProtocol::Grpc,
            Some((_, "grpc")) => OtlpProtocol::Grpc,
            Some((_, "http/protobuf")) => OtlpProtocol::HttpProtobuf,
            Some((_, "http/json")) => OtlpProtocol::HttpJson,
            Some((n, other)) => bail!("{n}: unknown protocol {other:?} (expected grpc, http/protobuf or http/json)"),
        };
        let specific_name = format!("OTEL_EXPORTER_OTLP_{}ENDPOINT", signal.env_infix());
        let specific = vars.get(&specific_name).map(|s| s.trim()).filter(|s| !s.is_empty());
        let generic = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|s| s.trim()).filter(|s| !s.is_empty());
        let insecure = match v.get("INSECURE") {
            None => false,
            Some((n, s)) => parse_bool(s).with_context(|| format!("{n}: expected true or false, got {s:?}"))?,
        };
        let (endpoint, var) = match (specific, generic) {
            (Some(s), _) => (s.to_string(), specific_name),
            (None, Some(g)) => {
                let e = if protocol == OtlpProtocol::Grpc { g.to_string() } else { append_path(g, signal.http_path()) };
                (e, "OTEL_EXPORTER_OTLP_ENDPOINT".to_string())
            }
            (None, None) => return Ok(None),
        };
        let endpoint = normalize_endpoint(&endpoint, protocol, insecure).with_context(|| var.clone())?;

        let headers = match v.get("HEADERS") {
            None => vec![],
            Some((n, s)) => parse_headers(s).with_context(|| n.clone())?,
        };
        let timeout = match v.get("TIMEOUT") {
            None => Duration::from_secs(10),
            Some((n, s)) => {
                let ms: u64 = s.parse().with_context(|| format!("{n}: expected milliseconds, got {s:?}"))?;
                if ms == 0 {
                    bail!("{n}: must be > 0");
                }
                Duration::from_millis(ms)
            }
        };
        let compression = match v.get("COMPRESSION") {
            None => Compression::None,
            Some((_, "none")) => Compression::None,
            Some((_, "gzip")) => Compression::Gzip,
            Some((_, "zstd")) => Compression::Zstd,
            Some((n, s)) => bail!("{n}: unknown compression {s:?} (expected gzip, zstd or none)"),
        };
        let read_pem = |key: &str| -> Result<Option<Vec<u8>>> {
            match v.get(key) {
                None => Ok(None),
                Some((n, path)) => {
                    let data = std::fs::read(path).with_context(|| format!("{n}: cannot read {path}"))?;
                    if !String::from_utf8_lossy(&data).contains("-----BEGIN") {
                        bail!("{n}: {path} is not a PEM file");
                    }
                    Ok(Some(data))
                }
            }
        };
        let ca_pem = read_pem("CERTIFICATE")?;
        let client_identity_pem = match (read_pem("CLIENT_CERTIFICATE")?, read_pem("CLIENT_KEY")?) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together"),
        };

        let tuning: ExportTuning = envy::prefixed("CNFLOW_EXPORT_")
            .from_iter(
                vars.iter().filter(|(k, _)| k.starts_with("CNFLOW_EXPORT_")).map(|(k, v)| (k.clone(), v.clone())),
            )
            .map_err(|e| anyhow::anyhow!("invalid export configuration (CNFLOW_EXPORT_*): {e}"))?;
        if !(1..=64).contains(&tuning.max_concurrent_requests) {
            bail!("CNFLOW_EXPORT_MAX_CONCURRENT_REQUESTS must be between 1 and 64");
        }
        if tuning.queue_size == 0 {
            bail!("CNFLOW_EXPORT_QUEUE_SIZE must be > 0");
        }
        if tuning.retry_initial_backoff_ms == 0 || tuning.retry_max_backoff_ms < tuning.retry_initial_backoff_ms {
            bail!("CNFLOW_EXPORT_RETRY_INITIAL_BACKOFF_MS must be > 0 and ≤ CNFLOW_EXPORT_RETRY_MAX_BACKOFF_MS");
        }
        Ok(Some(Self {
            signal,
            endpoint,
            protocol,
            headers,
            timeout,
            compression,
            ca_pem,
            client_identity_pem,
            queue_size: tuning.queue_size,
            retry_initial: Duration::from_millis(tuning.retry_initial_backoff_ms),
            retry_max: Duration::from_millis(tuning.retry_max_backoff_ms),
            retry_max_elapsed: (tuning.retry_max_elapsed_secs > 0)
                .then(|| Duration::from_secs(tuning.retry_max_elapsed_secs)),
            max_concurrent: tuning.max_concurrent_requests,
            queue_dir: None,
            queue_spill_bytes: 0,
            destination: "primary".into(),
        }))
    }

    /// The same settings for another base endpoint (the gateway's extra
    /// destinations): HTTP paths are appended like for a generic endpoint.
    /// The headers are the destination's own: the primary's (vendor API keys)
    /// must not travel to another backend.
    pub fn for_extra_destination(&self, base: &str, headers: Vec<(String, String)>, name: &str) -> Result<Self> {
        Ok(Self { headers, destination: name.to_string(), ..self.with_base_endpoint(base)? })
    }

    /// The same settings (headers included) for another base endpoint.
    pub fn with_base_endpoint(&self, base: &str) -> Result<Self> {
        let e = if self.protocol == OtlpProtocol::Grpc {
            base.to_string()
        } else {
            append_path(base, self.signal.http_path())
        };
        let insecure = self.endpoint.starts_with("http://");
        Ok(Self { endpoint: normalize_endpoint(&e, self.protocol, insecure)?, ..self.clone() })
    }

    /// The endpoint for logs and metrics: without `user:password@` credentials.
    pub fn display_endpoint(&self) -> String {
        match reqwest::Url::parse(&self.endpoint) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            _ => self.endpoint.clone(),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

fn parse_bool(s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => bail!("not a boolean"),
    }
}

fn append_path(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn normalize_endpoint(e: &str, protocol: OtlpProtocol, insecure: bool) -> Result<String> {
    let with_scheme = if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if protocol == OtlpProtocol::Grpc && !e.contains("://") {
        // The spec lets gRPC endpoints omit the scheme; INSECURE then picks it.
        format!("{}://{e}", if insecure { "http" } else { "https" })
    } else {
        bail!("endpoint {e:?} must start with http:// or https://");
    };
    let uri: hyper::Uri = with_scheme.parse().with_context(|| format!("invalid endpoint URL {e:?}"))?;
    if uri.host().is_none_or(str::is_empty) {
        bail!("endpoint {e:?} has no host");
    }
    Ok(with_scheme)
}

/// `k=v,k2=v2` with percent-encoded values (W3C baggage-like format used by the spec).
pub fn parse_headers(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    // Errors never quote the text: header values are credentials.
    for (n, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let Some((k, v)) = part.split_once('=') else { bail!("header entry {} is not key=value", n + 1) };
        let k = percent_decode(k.trim()).with_context(|| format!("header entry {} name", n + 1))?.to_ascii_lowercase();
        let v = percent_decode(v.trim()).with_context(|| format!("value of header {k:?}"))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            bail!("invalid header name {k:?}");
        }
        if v.bytes().any(|b| b < 0x20 && b != b'\t') {
            bail!("invalid value for header {k:?}");
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else { bail!("bad percent-encoding") };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("not UTF-8 after percent-decoding")
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn no_endpoint_no_exporter() {
        assert!(ExportConfig::from_vars(Signal::Traces, vars(&[])).unwrap().is_none());
    }

    #[test]
    fn signal_specific_takes_precedence_and_http_paths_follow_the_spec() {
        let v = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m.example/custom"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,X-Team=net"),
            ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "zstd"),
        ]);
        let t = ExportConfig::from_vars(Signal::Traces, v.clone()).unwrap().unwrap();
        assert_eq!(t.endpoint, "http://gw:4318/v1/traces");
        assert_eq!(t.timeout, Duration::from_millis(1500));
        assert_eq!(t.headers, vec![("api-key".into(), "a b".into()), ("x-team".into(), "net".into())]);
        assert_eq!(t.compression, Compression::None);
        let m = ExportConfig::from_vars(Signal::Metrics, v.clone()).unwrap().unwrap();
        assert_eq!(m.endpoint, "https://m.example/custom");
        assert_eq!(m.timeout, Duration::from_millis(3000));
        let l = ExportConfig::from_vars(Signal::Logs, v).unwrap().unwrap();
        assert_eq!(l.compression, Compression::Zstd);
        assert_eq!(l.endpoint, "http://gw:4318/v1/logs");
    }

    #[test]
    fn grpc_endpoint_as_is_and_insecure_without_scheme() {
        let v = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "gw:4317"), ("OTEL_EXPORTER_OTLP_INSECURE", "true")]);
        let t = ExportConfig::from_vars(Signal::Traces, v).unwrap().unwrap();
        assert_eq!(t.endpoint, "http://gw:4317");
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
        let v = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "gw:4317")]);
        assert!(ExportConfig::from_vars(Signal::Traces, v).unwrap().unwrap().is_tls());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "OTEL_EXPORTER_OTLP_COMPRESSION"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "OTEL_EXPORTER_OTLP_HEADERS"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "OTEL_EXPORTER_OTLP_INSECURE"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "OTEL_EXPORTER_OTLP_CERTIFICATE"),
            ("CNFLOW_EXPORT_QUEUE_SIZE", "many", "CNFLOW_EXPORT"),
        ];
        for (k, val, want) in cases {
            let v = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4317"), (k, val)]);
            let e = format!("{:#}", ExportConfig::from_vars(Signal::Traces, v).unwrap_err());
            assert!(e.contains(want), "{k}={val}: {e}");
        }
        let v = vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x")]);
        let e = format!("{:#}", ExportConfig::from_vars(Signal::Traces, v).unwrap_err());
        assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "{e}");
    }

    #[test]
    fn debug_form_hides_header_values() {
        let v = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t"),
        ]);
        let t = ExportConfig::from_vars(Signal::Traces, v).unwrap().unwrap();
        let d = format!("{t:?} {:?}", OtlpExportConfig { traces: Some(t.clone()), ..Default::default() });
        assert!(d.contains("api-key") && !d.contains("s3cr3t"), "{d}");
        let v = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:pw-s3cr3t@gw:4317")]);
        let t = ExportConfig::from_vars(Signal::Traces, v).unwrap().unwrap();
        assert_eq!(t.display_endpoint(), "https://gw:4317/");
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[test]
    fn tuning_from_env() {
        let v = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4317"),
            ("CNFLOW_EXPORT_QUEUE_SIZE", "10"),
            ("CNFLOW_EXPORT_RETRY_MAX_ELAPSED_SECS", "0"),
        ]);
        let t = ExportConfig::from_vars(Signal::Traces, v).unwrap().unwrap();
        assert_eq!(t.queue_size, 10);
        assert_eq!(t.retry_max_elapsed, None);
    }
}
