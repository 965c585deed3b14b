//! Kafka spans: `{operation} {topic}` names, `messaging.*` attributes and
//! the `messaging.client.operation.duration` histogram. ERROR on a non-zero
//! error code in the response.
use super::KafkaDetail;
use crate::otel::attr::{Attrs, Put, V};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

/// "OffsetCommit" → "offset_commit".
pub fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn span_parts(ex: &Exchange, k: &KafkaDetail, kind: Kind, _opts: &NamingOptions) -> SpanParts {
    let op = if k.api_name.is_empty() { format!("api_{}", k.api_key) } else { snake(&k.api_name) };
    let op_type = match k.api_key {
        0 => Some("send"),
        1 => Some("receive"),
        8 => Some("settle"),
        _ => None,
    };
    let mut a: Attrs = vec![("messaging.system", "kafka".into()), ("messaging.operation.name", op.clone().into())];
    push_opt(&mut a, "messaging.operation.type", op_type);
    let dest = (k.topics.len() == 1).then(|| k.topics[0].clone());
    push_opt(&mut a, "messaging.destination.name", dest.clone());
    let mut m = a.clone();
    if k.topics.len() > 1 {
        a.put("cnflow.kafka.topics", V::A(k.topics.clone()));
    }
    push_opt(&mut a, "messaging.client.id", k.client_id.clone());
    // Produce and Fetch carry record batches on the wire, whichever client
    // call made them, so they are batch operations in semconv's sense (0 for
    // an empty long-poll Fetch). Only when the decoder counted every batch.
    push_opt(&mut a, "messaging.batch.message_count", k.record_count.map(|n| n as i64));
    push_opt(&mut a, "cnflow.kafka.record_bytes", k.record_bytes.map(|n| n as i64));
    a.put("cnflow.kafka.api_key", k.api_key as i64);
    a.put("cnflow.kafka.api_version", k.api_version as i64);
    a.put("cnflow.kafka.correlation_id", k.correlation_id as i64);
    if k.error_code != 0 {
        a.put("cnflow.kafka.error_code", k.error_code as i64);
    }
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && k.error_code != 0 {
        let name = k.error_name.clone().unwrap_or_else(|| k.error_code.to_string());
        a.put("error.type", name.clone());
        error = Some(name);
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    let name = match dest {
        Some(d) => format!("{op} {d}"),
        None => op,
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Messaging, m)), peer: vec![] }
}

impl SpanMapping for KafkaDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
    /// Records in a Produce request (sent) or a Fetch response (consumed),
    /// when the decoder counted every record batch.
    fn messages(&self, _ex: &Exchange) -> Option<(crate::otel::semconv::MessageCounter, u64)> {
        use crate::otel::semconv::MessageCounter;
        match self.api_key {
            0 => self.record_count.map(|n| (MessageCounter::Sent, n)),
            1 => self.record_count.map(|n| (MessageCounter::Consumed, n)),
            _ => None,
        }
    }
}
