//! cnflow's own traces and metrics through the OpenTelemetry SDK, sent to the
//! endpoint of the standard `OTEL_EXPORTER_OTLP_*` variables as
//! `service.name=cnflow-agent` (run/agent) or `cnflow-gateway`.
//!
//! - Traces: `tracing` spans of the `cnflow` crate at INFO and above, bridged by
//!   tracing-opentelemetry: `otlp.export` (one CLIENT span per OTLP request the
//!   exporter sends, with its outcome and attempts), `capture.attach` /
//!   `capture.detach`, `k8s.relist` (a watch's full list, start to end).
//! - Metrics (SDK meter "cnflow"): `cnflow.export.duration` (s, per OTLP
//!   request including retries; `signal`, `outcome`) and
//!   `cnflow.export.request.items` (items per request). The process counters of
//!   `crate::stats` are not repeated here: the telemetry sink and the gateway
//!   already send them as OTLP metrics.
//!
//! The SDK's own exports are not observed by cnflow: exporters and the SDK
//! create no `cnflow` spans (the bridge only takes the `cnflow` target), and
//! the agent skips exchanges on its own sockets (`crate::agent::own_sockets`).
//! A self-telemetry problem never stops cnflow: a failing export is logged
//! (once per outage) and counted in `cnflow.self_telemetry.export_failed`.
pub mod config;

use crate::export::{OtlpExportConfig, OtlpProtocol, Signal};
use crate::stats::{counter, Counter};
use anyhow::{Context, Result};
pub use config::SelfTelemetryConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The SDK providers; `shutdown` flushes them.
#[derive(Default)]
pub struct SelfTelemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    service: &'static str,
}

impl SelfTelemetry {
    /// Builds the providers for `service`, or `Ok(None)` when turned off or no
    /// endpoint is configured in `export`. Must run inside a tokio runtime (the gRPC
    /// exporter's channel lives on it). `interval` = metric export interval
    /// (the SDK's OTEL_METRIC_EXPORT_INTERVAL handling when None).
    pub fn build(
        service: &'static str,
        cfg: &SelfTelemetryConfig,
        export: &OtlpExportConfig,
        temporality: Temporality,
        interval: Option<Duration>,
    ) -> Result<Option<Self>> {
        if !cfg.self_telemetry || cfg.sdk_disabled {
            return Ok(None);
        }
        let (traces, metrics) = (export.traces.as_ref(), export.metrics.as_ref());
        if traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        // OTEL_RESOURCE_ATTRIBUTES applies (node name from the chart, ...), but the
        // service is cnflow itself whatever OTEL_SERVICE_NAME says (that one names
        // the host workload of captured spans in `cnflow run`).
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", host.clone()),
                KeyValue::new("host.name", host),
            ])
            .build();
        let mut st = SelfTelemetry { tracer: None, meter: None, service };
        if let Some(t) = traces {
            let exporter = match t.protocol {
                OtlpProtocol::Grpc => match crate::export::grpc::client_tls(t) {
                    // The data exporter's CA and client certificate (the SDK reads neither variable).
                    Some(tls) => opentelemetry_otlp::SpanExporter::builder().with_tonic().with_tls_config(tls).build(),
                    None => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
                },
                // http/json is sent as http/protobuf: the same endpoint accepts both.
                OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .build(),
            }
            .context("self-telemetry trace exporter")?;
            let exporter = Warning::new(exporter, Signal::Traces);
            st.tracer = Some(
                SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(exporter).build(),
            );
        }
        if let Some(m) = metrics {
            let exporter = match m.protocol {
                OtlpProtocol::Grpc => {
                    let b = opentelemetry_otlp::MetricExporter::builder().with_tonic().with_temporality(temporality);
                    match crate::export::grpc::client_tls(m) {
                        Some(tls) => b.with_tls_config(tls).build(),
                        None => b.build(),
                    }
                }
                OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_temporality(temporality)
                    .build(),
            }
            .context("self-telemetry metric exporter")?;
            let mut reader = PeriodicReader::builder(Warning::new(exporter, Signal::Metrics));
            if let Some(i) = interval {
                reader = reader.with_interval(i);
            }
            let provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.build()).build();
            // Instruments are created from the global provider (export lanes);
            // they are no-ops when self-telemetry is off.
            opentelemetry::global::set_meter_provider(provider.clone());
            st.meter = Some(provider);
        }
        Ok(Some(st))
    }

    /// Tracer for the tracing-opentelemetry layer.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::Tracer> {
        self.tracer.as_ref().map(|p| p.tracer("cnflow"))
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Flushes what is buffered, within a few seconds even when the endpoint is down.
    pub async fn shutdown(self) {
        let (tracer, meter) = (self.tracer, self.meter);
        if tracer.is_none() && meter.is_none() {
            return;
        }
        // The SDK blocks while flushing; keep that off the async workers.
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(t) = tracer {
                let _ = t.shutdown_with_timeout(Duration::from_secs(3));
            }
            if let Some(m) = meter {
                let _ = m.shutdown_with_timeout(Duration::from_secs(3));
            }
        });
        if tokio::time::timeout(Duration::from_secs(8), flush).await.is_err() {
            tracing::warn!("cnflow's own telemetry not flushed at shutdown (endpoint unreachable?)");
        }
    }
}

/// Wraps an SDK exporter to say clearly, once per outage, that cnflow's own
/// telemetry cannot be delivered (and when it can again); counted per signal.
struct Warning<E> {
    inner: E,
    signal: Signal,
    failing: AtomicBool,
    failed: Counter,
}

impl<E: std::fmt::Debug> std::fmt::Debug for Warning<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warning").field("inner", &self.inner).field("signal", &self.signal).finish()
    }
}

impl<E> Warning<E> {
    fn new(inner: E, signal: Signal) -> Self {
        let failed = counter("cnflow.self_telemetry.export_failed", &[("signal", signal.name())]);
        Self { inner, signal, failing: AtomicBool::new(false), failed }
    }

    fn note(&self, r: &OTelSdkResult) {
        match r {
            Err(e) => {
                self.failed.inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        signal = self.signal.name(),
                        "cnflow's own telemetry cannot be exported (capture and export of spans go on): {e}"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(signal = self.signal.name(), "cnflow's own telemetry export recovered");
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Warning<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let r = self.inner.export(batch).await;
        self.note(&r);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Warning<E>
{
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        self.note(&r);
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    // Here because self_telemetry may see both modules; export must not import telemetry.
    #[test]
    fn export_duration_buckets_are_the_semconv_ones() {
        assert_eq!(crate::export::instruments::DURATION_BUCKETS, crate::telemetry::semconv::HTTP_BUCKETS);
    }
}
