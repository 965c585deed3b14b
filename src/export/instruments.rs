//! cnflow's own instruments for the OTLP exporter (`cnflow.export.duration`,
//! `cnflow.export.request.items`), created from the OpenTelemetry global meter
//! provider that self-telemetry installs (no-ops without it).
use super::Signal;
use opentelemetry::KeyValue;
use std::time::Duration;

/// Boundaries (s) of `cnflow.export.duration`: the semantic conventions'
/// advice for request durations. `crate::otel` is a leaf module, so export
/// takes them from there without depending on telemetry.
pub const DURATION_BUCKETS: &[f64] = crate::otel::semconv::HTTP_BUCKETS;

/// Instruments of the OTLP exporter, from the global meter provider (no-ops
/// unless self-telemetry installed one before the exporter started).
#[derive(Clone)]
pub struct ExportInstruments {
    duration: opentelemetry::metrics::Histogram<f64>,
    items: opentelemetry::metrics::Histogram<u64>,
}

impl ExportInstruments {
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("cnflow");
        Self {
            duration: meter
                .f64_histogram("cnflow.export.duration")
                .with_unit("s")
                .with_description("Time to deliver one OTLP request, retries included.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            items: meter
                .u64_histogram("cnflow.export.request.items")
                .with_unit("{item}")
                .with_description("Spans, data points or log records per OTLP request.")
                .with_boundaries(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 10000.0])
                .build(),
        }
    }

    pub fn record(&self, signal: Signal, outcome: &'static str, elapsed: Duration, items: usize) {
        let attrs = [KeyValue::new("signal", signal.name()), KeyValue::new("outcome", outcome)];
        self.duration.record(elapsed.as_secs_f64(), &attrs);
        self.items.record(items as u64, &attrs[..1]);
    }
}

impl Default for ExportInstruments {
    fn default() -> Self {
        Self::new()
    }
}
