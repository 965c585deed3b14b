//! NATS spans per the messaging conventions: `{operation} {destination}`
//! names; PRODUCER for publish/request, CONSUMER for deliveries, CLIENT for
//! the other client operations (SERVER when seen from the broker's end).
//! Inbox subjects (`_INBOX.…`, request-reply) are temporary destinations
//! named `_INBOX.{id}` in span names and metrics; id-like subject tokens
//! become `{id}` likewise. Only operations something answered (verbose +OK,
//! PONG, a request's reply) or that timed out feed
//! `messaging.client.operation.duration`: for a publish nothing answers, the
//! wire shows when it was sent, not how long the client's call took.
use super::NatsDetail;
use crate::otel::attr::{Attrs, Put};
use crate::otel::route::template_id_segments;
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, SpanCx, SpanParts};
use crate::protocol::exchange::{Exchange, Outcome};
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub const INBOX_TEMPLATE: &str = "_INBOX.{id}";

/// Low-cardinality template of a subject, and whether it is temporary.
/// None when the subject is its own template.
pub fn subject_template(subject: &str) -> (Option<String>, bool) {
    if subject == "_INBOX" || subject.starts_with("_INBOX.") {
        return (Some(INBOX_TEMPLATE.to_string()), true);
    }
    (template_id_segments(subject, '.'), false)
}

/// (operation name, operation type, span kind on the client end).
fn operation(d: &NatsDetail) -> (&'static str, Option<&'static str>, Kind) {
    match d.op.as_str() {
        "PUB" | "HPUB" if d.request => ("request", Some("send"), Kind::Producer),
        "PUB" | "HPUB" => ("publish", Some("send"), Kind::Producer),
        "MSG" | "HMSG" => ("receive", Some("receive"), Kind::Consumer),
        "SUB" => ("subscribe", None, Kind::Client),
        "UNSUB" => ("unsubscribe", None, Kind::Client),
        "CONNECT" => ("connect", None, Kind::Client),
        "PING" => ("ping", None, Kind::Client),
        _ => ("unknown", None, Kind::Client),
    }
}

/// -ERR texts carry subjects ("Permissions Violation for Publish to \"x\""):
/// the part before them is the error type.
fn error_type(text: &str) -> String {
    let cut = text.find([':', '"', '\'']).unwrap_or(text.len());
    let t = &text[..cut];
    let t = t.find(" for ").map_or(t, |i| &t[..i]).trim();
    if t.is_empty() {
        "nats_error".into()
    } else {
        t.to_string()
    }
}

pub fn span_parts(ex: &Exchange, d: &NatsDetail, side: Kind) -> SpanParts {
    let (op, op_type, client_kind) = operation(d);
    let kind = if side == Kind::Server { Kind::Server } else { client_kind };
    let mut a: Attrs = vec![("messaging.system", "nats".into()), ("messaging.operation.name", op.into())];
    push_opt(&mut a, "messaging.operation.type", op_type);
    let (template, temporary) = d.subject.as_deref().map(subject_template).unwrap_or((None, false));
    let mut m = a.clone();
    match (&template, &d.subject) {
        (Some(t), _) => m.put("messaging.destination.template", t.clone()),
        (None, Some(s)) => m.put("messaging.destination.name", s.clone()),
        _ => {}
    }
    push_opt(&mut a, "messaging.destination.name", d.subject.clone());
    push_opt(&mut a, "messaging.destination.template", template.clone());
    if temporary {
        a.put("messaging.destination.temporary", true);
    }
    push_opt(&mut a, "messaging.consumer.group.name", d.queue_group.clone());
    push_opt(&mut a, "messaging.message.body.size", d.payload_bytes.map(|n| n as i64));
    push_opt(&mut a, "messaging.client.id", d.client_name.clone());
    a.put("cnflow.nats.op", d.op.clone());
    push_opt(&mut a, "cnflow.nats.sid", d.sid.clone());
    push_opt(&mut a, "cnflow.nats.reply_to", d.reply_to.clone());
    push_opt(&mut a, "cnflow.nats.response", d.response.clone());
    endpoint_attrs(ex, side, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        let err = match (&d.error, d.status) {
            (Some(t), _) => Some((error_type(t), t.clone())),
            (None, Some(503)) => Some(("no_responders".to_string(), "no responders".to_string())),
            _ => None,
        };
        if let Some((ty, msg)) = err {
            a.put("error.type", ty);
            error = Some(msg);
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    let answered = d.response.is_some() || ex.outcome != Outcome::Complete;
    let metric = (answered && op_type != Some("receive")).then_some((Instrument::Messaging, m));
    let name = match (template, &d.subject) {
        (Some(t), _) => format!("{op} {t}"),
        (None, Some(s)) => format!("{op} {s}"),
        _ => op.to_string(),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric, peer: vec![] }
}

impl SpanMapping for NatsDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, _cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind)
    }
    fn trace_headers(&self) -> &[(String, String)] {
        &self.trace_headers
    }
    /// PUB/HPUB send one message (a request too); MSG/HMSG deliver one.
    fn messages(&self, _ex: &Exchange) -> Option<(crate::otel::semconv::MessageCounter, u64)> {
        use crate::otel::semconv::MessageCounter;
        match self.op.as_str() {
            "PUB" | "HPUB" => Some((MessageCounter::Sent, 1)),
            "MSG" | "HMSG" => Some((MessageCounter::Consumed, 1)),
            _ => None,
        }
    }
}
