//! The gateway's own counters (cnflow::stats), logged and exported as OTLP
//! metrics through the same exporters (cumulative sums and gauges).
use crate::stats::{snapshot, Kind, Sample};
use crate::telemetry::resource::kv_str;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// One request holding every counter; `start_ns` is the process start (cumulative temporality).
pub fn to_otlp(samples: &[Sample], start_ns: u64) -> ExportMetricsServiceRequest {
    let now = now_ns();
    let mut by_name: BTreeMap<(&str, bool), Vec<NumberDataPoint>> = BTreeMap::new();
    for s in samples {
        let dp = NumberDataPoint {
            attributes: s.attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
            start_time_unix_nano: start_ns,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(s.value as i64)),
            ..Default::default()
        };
        by_name.entry((s.name, s.kind == Kind::Gauge)).or_default().push(dp);
    }
    let metrics = by_name
        .into_iter()
        .map(|((name, gauge), data_points)| Metric {
            name: name.to_string(),
            data: Some(if gauge {
                Data::Gauge(Gauge { data_points })
            } else {
                Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            }),
            ..Default::default()
        })
        .collect();
    request(metrics)
}

/// `metrics` under the gateway's resource (service.name cnflow-gateway, the host).
pub fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "cnflow-gateway"), kv_str("service.instance.id", host.trim())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "cnflow".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub use crate::stats::summary;

pub fn current() -> Vec<Sample> {
    snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn counters_become_sums_and_gauges() {
        let samples = vec![
            Sample { name: "a.x", attrs: vec![("signal", "traces".into())], kind: Kind::Counter, value: 3 },
            Sample { name: "a.x", attrs: vec![("signal", "logs".into())], kind: Kind::Counter, value: 0 },
            Sample { name: "a.depth", attrs: vec![], kind: Kind::Gauge, value: 7 },
        ];
        let r = to_otlp(&samples, 1);
        let m = &r.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m.len(), 2);
        assert!(matches!(&m[0].data, Some(Data::Gauge(g)) if g.data_points.len() == 1));
        assert!(matches!(&m[1].data, Some(Data::Sum(s)) if s.data_points.len() == 2 && s.is_monotonic));
        assert_eq!(summary(&samples), "a.x{signal=traces}=3 a.depth=7");
    }
}
