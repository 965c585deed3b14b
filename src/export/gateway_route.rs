//! Spans to several gateways so that both halves of an exchange meet in one
//! (`gateway::stitch`): like the OpenTelemetry Collector's load-balancing
//! exporter, each trace goes to the gateway chosen by a consistent hash of
//! its routing key, here the exchange's wire key
//! ([`WireKey`](crate::exchange::WireKey), equal on the client's and the
//! server's node) or else the trace id.
//!
//! Rendezvous (highest random weight) hashing: every node ranks the
//! endpoints alike for a key without coordination, and adding or removing a
//! gateway moves only the keys it gains or loses. Endpoints come from
//! CNFLOW_EXPORT_GATEWAY_ENDPOINTS and/or a headless Service name
//! (CNFLOW_EXPORT_GATEWAY_DNS, `host:port`, one endpoint per address,
//! re-resolved every CNFLOW_EXPORT_GATEWAY_RESOLVE_SECS). Metrics go to the
//! first endpoint in sorted order (no join needed).
use super::{ExportConfig, Exporter};
use crate::exchange::WireKey;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the gateways are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayRouting {
    /// Fixed endpoints (URLs, like OTEL_EXPORTER_OTLP_ENDPOINT).
    pub endpoints: Vec<String>,
    /// `host:port` of a headless Service: each resolved address is a gateway.
    pub dns: Option<String>,
    pub resolve_every: Duration,
}

impl GatewayRouting {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty() || self.dns.is_some()
    }
}

/// 64-bit mix (splitmix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of an endpoint name: fixed, so every node weighs it alike.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Index of the endpoint that owns `key` (rendezvous hashing); None when empty.
pub fn pick(key: u64, endpoints: &[String]) -> Option<usize> {
    (0..endpoints.len()).max_by_key(|&i| (mix(key ^ name_hash(&endpoints[i])), std::cmp::Reverse(i)))
}

/// The routing key of a span: its wire key, else its trace id.
fn span_key(s: &Span) -> (bool, u64) {
    let wire = WireKey::from_attrs(s.attributes.iter().filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some((kv.key.as_str(), *i)),
        _ => None,
    }));
    match wire {
        Some(k) => (true, k.0),
        None => (false, s.trace_id.iter().fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(*b))),
    }
}

/// Splits a request by endpoint: every span of a trace goes where the
/// trace's first keyed span's wire key says (else by trace id), so a SERVER
/// half and the spans of its trace stay together.
pub fn split(req: ExportTraceServiceRequest, endpoints: &[String]) -> Vec<(usize, ExportTraceServiceRequest)> {
    if endpoints.len() <= 1 {
        return if endpoints.is_empty() { vec![] } else { vec![(0, req)] };
    }
    let mut trace_key: HashMap<Vec<u8>, (bool, u64)> = HashMap::new();
    for s in req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|ss| &ss.spans) {
        let k = span_key(s);
        let e = trace_key.entry(s.trace_id.clone()).or_insert(k);
        if k.0 && !e.0 {
            *e = k;
        }
    }
    let mut out: Vec<(usize, ExportTraceServiceRequest)> = Vec::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            let mut parts: HashMap<usize, Vec<Span>> = HashMap::new();
            for s in ss.spans {
                let k = trace_key.get(&s.trace_id).map_or(0, |k| k.1);
                parts.entry(pick(k, endpoints).unwrap_or(0)).or_default().push(s);
            }
            for (i, spans) in parts {
                let piece = ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans { scope: ss.scope.clone(), spans, schema_url: ss.schema_url.clone() }],
                    schema_url: rs.schema_url.clone(),
                };
                match out.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, r)) => r.resource_spans.push(piece),
                    None => out.push((i, ExportTraceServiceRequest { resource_spans: vec![piece] })),
                }
            }
        }
    }
    out
}

/// One exporter per gateway, kept in step with the endpoint list.
pub struct GatewayRouter {
    traces: ExportConfig,
    metrics: Option<ExportConfig>,
    /// Sorted by endpoint.
    lanes: RwLock<Vec<(String, Arc<Exporter>)>>,
}

/// The endpoint URL of a resolved address, in the template's scheme and path.
fn url_for(template: &str, addr: std::net::SocketAddr) -> String {
    let scheme = template.split("://").next().filter(|_| template.contains("://")).unwrap_or("http");
    let path = template.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or("");
    format!("{scheme}://{addr}{path}")
}

impl GatewayRouter {
    /// `traces`/`metrics`: the OTLP settings (endpoint is replaced per
    /// gateway). Must run inside a tokio runtime.
    pub fn start(
        routing: &GatewayRouting,
        traces: ExportConfig,
        metrics: Option<ExportConfig>,
    ) -> anyhow::Result<Arc<Self>> {
        let r = Arc::new(Self { traces, metrics, lanes: RwLock::new(Vec::new()) });
        let mut initial = routing.endpoints.clone();
        if let Some(dns) = &routing.dns {
            initial.extend(resolve(dns, &r.traces.endpoint));
        }
        r.set_endpoints(initial)?;
        if let Some(dns) = routing.dns.clone() {
            let (weak, every) = (Arc::downgrade(&r), routing.resolve_every.max(Duration::from_secs(1)));
            let fixed = routing.endpoints.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(r) = weak.upgrade() else { break };
                    let (d, t) = (dns.clone(), r.traces.endpoint.clone());
                    let found = tokio::task::spawn_blocking(move || resolve(&d, &t)).await.unwrap_or_default();
                    // A failed lookup keeps the current gateways.
                    if !found.is_empty() {
                        let mut all = fixed.clone();
                        all.extend(found);
                        if let Err(e) = r.set_endpoints(all) {
                            tracing::warn!("gateway endpoints: {e:#}");
                        }
                    }
                }
            });
        }
        Ok(r)
    }

    /// Replaces the endpoint set (exporters of removed endpoints are dropped
    /// once their queued data is handed over: their queues flush on drop).
    pub fn set_endpoints(&self, mut endpoints: Vec<String>) -> anyhow::Result<()> {
        endpoints.sort();
        endpoints.dedup();
        let mut lanes = self.lanes.write();
        if lanes.iter().map(|(e, _)| e).eq(endpoints.iter()) {
            return Ok(());
        }
        let mut next = Vec::new();
        for (i, e) in endpoints.into_iter().enumerate() {
            if let Some(l) = lanes.iter().find(|(x, _)| *x == e) {
                next.push(l.clone());
                continue;
            }
            let t = ExportConfig { endpoint: e.clone(), ..self.traces.clone() };
            // Metrics to the first gateway only.
            let m = (i == 0).then(|| self.metrics.clone()).flatten().map(|m| ExportConfig { endpoint: e.clone(), ..m });
            next.push((e, Arc::new(Exporter::start(Some(t), m, None)?)));
        }
        tracing::info!(gateways = ?next.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), "gateway endpoints");
        *lanes = next;
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.lanes.read().iter().map(|(e, _)| e.clone()).collect()
    }

    pub fn send_traces(&self, req: ExportTraceServiceRequest) {
        let lanes = self.lanes.read();
        let names: Vec<String> = lanes.iter().map(|(e, _)| e.clone()).collect();
        for (i, part) in split(req, &names) {
            // A full queue counts its drop itself.
            let _ = lanes[i].1.send_traces(part);
        }
    }

    pub fn send_metrics(&self, req: ExportMetricsServiceRequest) {
        if let Some((_, e)) = self.lanes.read().first() {
            let _ = e.send_metrics(req);
        }
    }

    /// Flush every gateway's queue within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let lanes: Vec<Arc<Exporter>> = self.lanes.write().drain(..).map(|(_, e)| e).collect();
        for e in lanes {
            if let Ok(e) = Arc::try_unwrap(e) {
                e.shutdown(timeout).await;
            }
        }
    }
}

/// Addresses of `host:port` as endpoint URLs shaped like `template`.
fn resolve(dns: &str, template: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    match dns.to_socket_addrs() {
        Ok(addrs) => addrs.map(|a| url_for(template, a)).collect(),
        Err(e) => {
            tracing::warn!(%dns, "cannot resolve the gateway Service: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::wire_attr;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

    fn eps(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.200.0.{i}:4317")).collect()
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_what_it_must() {
        let (three, four) = (eps(3), eps(4));
        let mut moved = 0;
        let mut per = [0usize; 3];
        for k in 0..30_000u64 {
            let a = pick(k, &three).unwrap();
            per[a] += 1;
            assert_eq!(pick(k, &three), Some(a), "deterministic");
            let b = pick(k, &four).unwrap();
            if b != a {
                assert_eq!(b, 3, "a key only moves to the new gateway");
                moved += 1;
            }
        }
        assert!(per.iter().all(|&n| (9_000..11_000).contains(&n)), "{per:?}");
        assert!((6_500..8_500).contains(&moved), "about a quarter moves: {moved}");
        assert_eq!(pick(1, &[]), None);
    }

    #[test]
    fn both_halves_of_an_exchange_go_to_one_gateway_with_their_trace() {
        let int = |k: &str, v: i64| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
            ..Default::default()
        };
        let span = |trace: u8, seq: Option<i64>| Span {
            trace_id: vec![trace; 16],
            attributes: seq
                .map(|s| vec![int(wire_attr::TCP_REQUEST_SEQ, s), int(wire_attr::TCP_RESPONSE_SEQ, 5)])
                .unwrap_or_default(),
            ..Default::default()
        };
        let req = |spans| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let e = eps(5);
        for seq in 0..200i64 {
            // Client node: its half. Server node: its half (another trace)
            // plus a keyless span of that trace.
            let c = split(req(vec![span(1, Some(seq))]), &e);
            let s = split(req(vec![span(2, None), span(2, Some(seq))]), &e);
            assert_eq!((c.len(), s.len()), (1, 1));
            assert_eq!(c[0].0, s[0].0, "seq {seq}");
            assert_eq!(s[0].1.resource_spans[0].scope_spans[0].spans.len(), 2);
        }
        assert_eq!(url_for("http://gw:4317", "10.0.0.1:4317".parse().unwrap()), "http://10.0.0.1:4317");
        assert_eq!(
            url_for("https://gw/v1/traces", "10.0.0.1:4318".parse().unwrap()),
            "https://10.0.0.1:4318/v1/traces"
        );
    }
}
