//! AMQP 0-9-1 spans per the messaging conventions (RabbitMQ): names
//! `{operation} {destination}`; basic.publish is a PRODUCER `publish`
//! (type send), basic.deliver a CONSUMER `deliver` (type process),
//! basic.get a CLIENT `receive`, client ack/nack/reject CLIENT settles; the
//! other methods are CLIENT spans named after the method (`queue.declare`).
//!
//! `messaging.destination.name` is the exchange, as the RabbitMQ conventions
//! require: an empty string for the default exchange (the routing key, then
//! the queue name, is in `messaging.rabbitmq.destination.routing_key`, and
//! the span name is the operation alone); queue methods, basic.consume and
//! basic.get name the queue.
//! ERROR when the broker refused the method with a reply code >= 300
//! (`error.type` = the code, status message = the reply text), on a
//! publisher-confirm nack, and on timeouts/resets.
//! `messaging.client.operation.duration` is fed by answered operations
//! only (not by unconfirmed publishes nor deliveries: the wire shows when
//! they were sent, not how long the client's call took).
use super::AmqpDetail;
use crate::otel::attr::{Attrs, Put, Str};
use crate::otel::semconv::{Instrument, MessageCounter};
use crate::otel::span::{Kind, SpanCx, SpanParts};
use crate::protocol::exchange::{Exchange, Outcome};
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

/// (operation name, operation type, span kind on the client side).
fn operation(d: &AmqpDetail) -> (Str, Option<&'static str>, Kind) {
    match d.method.as_str() {
        "basic.publish" => ("publish".into(), Some("send"), Kind::Producer),
        "basic.deliver" => ("deliver".into(), Some("process"), Kind::Consumer),
        "basic.return" => ("return".into(), None, Kind::Consumer),
        "basic.get" => ("receive".into(), Some("receive"), Kind::Client),
        "basic.ack" => ("ack".into(), Some("settle"), Kind::Client),
        "basic.nack" => ("nack".into(), Some("settle"), Kind::Client),
        "basic.reject" => ("reject".into(), Some("settle"), Kind::Client),
        m => (Str::copy(m), None, Kind::Client),
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// See the module docs.
pub fn destination(d: &AmqpDetail) -> Option<&str> {
    let by_queue = d.method.starts_with("queue.") || matches!(d.method.as_str(), "basic.consume" | "basic.cancel");
    if by_queue {
        return non_empty(&d.queue);
    }
    d.exchange.as_deref().or(non_empty(&d.queue))
}

pub fn span_parts(ex: &Exchange, d: &AmqpDetail, side: Kind) -> SpanParts {
    let (op, op_type, client_kind) = operation(d);
    let kind = if side == Kind::Server { Kind::Server } else { client_kind };
    let dest = destination(d);
    let mut a: Attrs = vec![("messaging.system", "rabbitmq".into()), ("messaging.operation.name", op.clone().into())];
    push_opt(&mut a, "messaging.operation.type", op_type);
    push_opt(&mut a, "messaging.destination.name", dest.map(Str::copy));
    let mut m = a.clone();
    push_opt(&mut a, "messaging.rabbitmq.destination.routing_key", non_empty(&d.routing_key).map(Str::copy));
    push_opt(&mut a, "messaging.message.body.size", d.body_size.map(|n| n.min(i64::MAX as u64) as i64));
    push_opt(&mut a, "messaging.rabbitmq.message.delivery_tag", d.delivery_tag.map(|n| n.min(i64::MAX as u64) as i64));
    a.put("cnflow.amqp.method", d.method.clone());
    push_opt(&mut a, "cnflow.amqp.response", d.response.clone());
    a.put("cnflow.amqp.channel", d.channel as i64);
    push_opt(&mut a, "cnflow.amqp.exchange", d.exchange.clone());
    push_opt(&mut a, "cnflow.amqp.queue", d.queue.clone());
    push_opt(&mut a, "cnflow.amqp.consumer_tag", d.consumer_tag.clone());
    push_opt(&mut a, "cnflow.amqp.message_count", d.message_count.map(|n| n as i64));
    push_opt(&mut a, "cnflow.amqp.reply_code", d.reply_code.map(|n| n as i64));
    push_opt(&mut a, "cnflow.amqp.vhost", d.vhost.clone());
    push_opt(&mut a, "cnflow.amqp.mechanism", d.mechanism.clone());
    if d.multiple {
        a.put("cnflow.amqp.multiple", true);
    }
    if d.redelivered {
        a.put("cnflow.amqp.redelivered", true);
    }
    a.put("network.protocol.name", "amqp");
    a.put("network.protocol.version", "0.9.1");
    endpoint_attrs(ex, side, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        if let Some(code) = d.reply_code.filter(|c| *c >= 300) {
            a.put("error.type", code.to_string());
            error = Some(d.reply_text.clone().unwrap_or_else(|| code.to_string()));
        } else if d.method == "basic.publish" && d.response.as_deref() == Some("basic.nack") {
            a.put("error.type", "nack");
            error = Some("the broker did not accept the message (basic.nack)".into());
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    let answered = d.response.is_some() || ex.outcome != Outcome::Complete;
    let pushed = matches!(d.method.as_str(), "basic.deliver" | "basic.return");
    let metric = (answered && !pushed).then_some((Instrument::Messaging, m));
    let name = match dest.filter(|d| !d.is_empty()) {
        Some(dst) => format!("{op} {dst}"),
        None => op.to_string(),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric, peer: vec![] }
}

impl SpanMapping for AmqpDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, _cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind)
    }
    fn status_reason(&self) -> Option<&str> {
        self.reply_text.as_deref()
    }
    /// A publish sends one message; a delivery or a get-ok consumes one.
    fn messages(&self, _ex: &Exchange) -> Option<(MessageCounter, u64)> {
        match (self.method.as_str(), self.response.as_deref()) {
            ("basic.publish", _) => Some((MessageCounter::Sent, 1)),
            ("basic.deliver", _) | ("basic.get", Some("basic.get-ok")) => Some((MessageCounter::Consumed, 1)),
            _ => None,
        }
    }
}
