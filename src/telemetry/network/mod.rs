//! Metrics about who talks to whom, next to the per-exchange RED metrics:
//! - [`l4`]: L4 network metrics per workload pair (bytes/packets per
//!   direction, TCP connections opened/closed/failed, retransmissions,
//!   handshake time), computed in userspace from the packets the capture
//!   already delivers (the eBPF side does no extra work).
//! - [`graph`]: Grafana/Tempo service-graph metrics
//!   (`traces_service_graph_request_*`) from the exchanges this agent sees.
//!
//! Both are off by default (`CNFLOW_NETWORK_METRICS`,
//! `CNFLOW_SERVICE_GRAPH_METRICS`); both keep a bounded number of series and
//! count what goes to their overflow series.
pub mod graph;
pub mod l4;
#[cfg(test)]
mod tests;

use super::attr::{self, Attrs};
use super::config::Temporality;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
};

/// Explicit-bucket histogram state (OTLP upper bounds are inclusive).
#[derive(Debug, Clone)]
pub(crate) struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    pub(crate) fn new(bounds: &[f64]) -> Self {
        Self { counts: vec![0; bounds.len() + 1], count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
    pub(crate) fn record(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
    fn point(&self, attrs: &Attrs, bounds: &[f64], start: u64, now: u64) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes: attr::to_proto(attrs),
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.counts.clone(),
            explicit_bounds: bounds.to_vec(),
            exemplars: vec![],
            flags: 0,
            min: (self.count > 0).then_some(self.min),
            max: (self.count > 0).then_some(self.max),
        }
    }
}

fn otlp_temporality(t: Temporality) -> i32 {
    match t {
        Temporality::Cumulative => 2,
        Temporality::Delta => 1,
    }
}

/// Builds the OTLP metrics of one collection: monotonic sums and histograms,
/// points with a zero value left out (a series appears once it has counted
/// something; in delta mode, only when it changed in the interval).
pub(crate) struct MetricsOut {
    temporality: Temporality,
    start: u64,
    now: u64,
    pub(crate) metrics: Vec<Metric>,
}

impl MetricsOut {
    pub(crate) fn new(temporality: Temporality, start: u64, now: u64) -> Self {
        Self { temporality, start, now, metrics: Vec::new() }
    }

    fn find(&mut self, name: &'static str, unit: &'static str, description: &'static str, hist: bool) -> &mut Metric {
        let i = match self.metrics.iter().position(|m| m.name == name) {
            Some(i) => i,
            None => {
                let temporality = otlp_temporality(self.temporality);
                let data = if hist {
                    metric::Data::Histogram(Histogram { data_points: vec![], aggregation_temporality: temporality })
                } else {
                    metric::Data::Sum(Sum {
                        data_points: vec![],
                        aggregation_temporality: temporality,
                        is_monotonic: true,
                    })
                };
                self.metrics.push(Metric {
                    name: name.into(),
                    description: description.into(),
                    unit: unit.into(),
                    metadata: vec![],
                    data: Some(data),
                });
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[i]
    }

    pub(crate) fn sum(&mut self, inst: &SumDesc, attrs: &Attrs, value: u64) {
        if value == 0 {
            return;
        }
        let (start, now) = (self.start, self.now);
        if let Some(metric::Data::Sum(s)) = &mut self.find(inst.name, inst.unit, inst.description, false).data {
            s.data_points.push(NumberDataPoint {
                attributes: attr::to_proto(attrs),
                start_time_unix_nano: start,
                time_unix_nano: now,
                exemplars: vec![],
                flags: 0,
                value: Some(number_data_point::Value::AsInt(value.min(i64::MAX as u64) as i64)),
            });
        }
    }

    pub(crate) fn hist(&mut self, inst: &HistDesc, attrs: &Attrs, h: &Hist) {
        if h.count == 0 {
            return;
        }
        let (start, now) = (self.start, self.now);
        if let Some(metric::Data::Histogram(d)) = &mut self.find(inst.name, "s", inst.description, true).data {
            d.data_points.push(h.point(attrs, inst.buckets, start, now));
        }
    }
}

/// A counter: name, unit, description.
pub(crate) struct SumDesc {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

/// A duration histogram in seconds.
pub(crate) struct HistDesc {
    pub name: &'static str,
    pub description: &'static str,
    pub buckets: &'static [f64],
}

/// Adds `metrics` to the request under the `own` resource (creating the
/// request or the resource entry when missing).
pub fn append(
    req: &mut Option<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>,
    own: &crate::workload::Identity,
    metrics: Vec<Metric>,
) {
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    if metrics.is_empty() {
        return;
    }
    let res = super::resource::to_proto(own);
    let req = req.get_or_insert_with(Default::default);
    match req.resource_metrics.iter_mut().find(|rm| rm.resource.as_ref() == Some(&res)) {
        Some(rm) => match rm.scope_metrics.first_mut() {
            Some(sm) => sm.metrics.extend(metrics),
            None => rm.scope_metrics.push(ScopeMetrics {
                scope: Some(super::metrics::scope()),
                metrics,
                schema_url: super::semconv::SCHEMA_URL.into(),
            }),
        },
        None => req.resource_metrics.push(ResourceMetrics {
            resource: Some(res),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(super::metrics::scope()),
                metrics,
                schema_url: super::semconv::SCHEMA_URL.into(),
            }],
            schema_url: String::new(),
        }),
    }
}
