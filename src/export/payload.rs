//! One queued export request of any signal, with its size in telemetry items
//! (spans, metric data points, log records): queues are bounded in items
//! because that is what memory grows with.
use super::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};
use prost::Message;

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    /// A request already in protobuf form (the gateway edits requests on the
    /// wire and forwards them without decoding: see `gateway::wire`).
    Encoded(Encoded),
}

/// A protobuf-encoded export request of `signal` holding `items` items.
/// Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub signal: Signal,
    pub bytes: bytes::Bytes,
    pub items: usize,
}

impl Payload {
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
            Payload::Encoded(e) => e.signal,
        }
    }

    pub fn items(&self) -> usize {
        match self {
            Payload::Traces(r) => trace_items(r),
            Payload::Metrics(r) => metric_items(r),
            Payload::Logs(r) => log_items(r),
            Payload::Encoded(e) => e.items,
        }
    }

    /// Size of the protobuf form.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Traces(r) => r.encoded_len(),
            Payload::Metrics(r) => r.encoded_len(),
            Payload::Logs(r) => r.encoded_len(),
            Payload::Encoded(e) => e.bytes.len(),
        }
    }

    /// The protobuf form as shared bytes: an `Encoded` request's own bytes
    /// (no copy: a batch of spans is a few hundred kilobytes), the others
    /// encoded.
    pub fn wire_bytes(&self) -> bytes::Bytes {
        match self {
            Payload::Encoded(e) => e.bytes.clone(),
            p => p.encode().into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
            Payload::Encoded(e) => e.bytes.to_vec(),
        }
    }

    /// The request as prost types (an `Encoded` one is decoded; its bytes
    /// were checked when it was built, so this only fails on a bug).
    pub fn decoded(self) -> Result<Self, prost::DecodeError> {
        match self {
            Payload::Encoded(e) => Self::decode(e.signal, &e.bytes),
            p => Ok(p),
        }
    }

    pub fn decode(signal: Signal, buf: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => Payload::Traces(ExportTraceServiceRequest::decode(buf)?),
            Signal::Metrics => Payload::Metrics(ExportMetricsServiceRequest::decode(buf)?),
            Signal::Logs => Payload::Logs(ExportLogsServiceRequest::decode(buf)?),
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let r = match self {
            Payload::Traces(r) => serde_json::to_vec(r),
            Payload::Metrics(r) => serde_json::to_vec(r),
            Payload::Logs(r) => serde_json::to_vec(r),
            Payload::Encoded(_) => return self.clone().decoded().map(|p| p.to_json()).unwrap_or_default(),
        };
        // Serialising plain generated structs to a Vec cannot fail.
        r.unwrap_or_default()
    }
}

pub fn trace_items(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

pub fn log_items(r: &ExportLogsServiceRequest) -> usize {
    r.resource_logs.iter().flat_map(|rl| &rl.scope_logs).map(|sl| sl.log_records.len()).sum()
}

pub fn metric_items(r: &ExportMetricsServiceRequest) -> usize {
    r.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).map(metric_points).sum()
}

/// Data points of one metric (at least 1 so an empty metric still counts).
pub fn metric_points(m: &Metric) -> usize {
    let n = match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    };
    n.max(1)
}
