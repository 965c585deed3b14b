//! MQTT spans per the messaging conventions: `{operation} {destination}`
//! names; PRODUCER for a client's PUBLISH, CONSUMER for a delivery, CLIENT
//! for the other client operations (SERVER when seen from the broker's end).
//! Id-like topic levels (`devices/4711/temp`) become `{id}` in span names and
//! metrics (`messaging.destination.template`). Operations nothing answers
//! (QoS 0 PUBLISH, DISCONNECT) and deliveries do not feed
//! `messaging.client.operation.duration`: the wire shows when they were sent,
//! not how long the client's call took.
use super::MqttDetail;
use crate::otel::attr::{Attrs, Put, V};
use crate::otel::route::template_id_segments;
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, SpanCx, SpanParts};
use crate::protocol::exchange::{Exchange, Outcome};
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

/// Topic with id-like levels replaced by `{id}`; None when it has none.
pub fn topic_template(topic: &str) -> Option<String> {
    template_id_segments(topic, '/')
}

/// Name of a CONNACK return code (3.1/3.1.1) or an MQTT 5 reason code.
pub fn reason_name(code: u8, level: u8) -> &'static str {
    if level != 5 {
        return match code {
            0 => "accepted",
            1 => "unacceptable_protocol_version",
            2 => "identifier_rejected",
            3 => "server_unavailable",
            4 => "bad_user_name_or_password",
            5 => "not_authorized",
            0x80 => "failure",
            _ => "unknown",
        };
    }
    match code {
        0x00 => "success",
        0x80 => "unspecified_error",
        0x81 => "malformed_packet",
        0x82 => "protocol_error",
        0x83 => "implementation_specific_error",
        0x84 => "unsupported_protocol_version",
        0x85 => "client_identifier_not_valid",
        0x86 => "bad_user_name_or_password",
        0x87 => "not_authorized",
        0x88 => "server_unavailable",
        0x89 => "server_busy",
        0x8A => "banned",
        0x8C => "bad_authentication_method",
        0x8F => "topic_filter_invalid",
        0x90 => "topic_name_invalid",
        0x91 => "packet_identifier_in_use",
        0x92 => "packet_identifier_not_found",
        0x93 => "receive_maximum_exceeded",
        0x94 => "topic_alias_invalid",
        0x95 => "packet_too_large",
        0x97 => "quota_exceeded",
        0x99 => "payload_format_invalid",
        0x9A => "retain_not_supported",
        0x9B => "qos_not_supported",
        0x9C => "use_another_server",
        0x9D => "server_moved",
        0x9E => "shared_subscriptions_not_supported",
        0x9F => "connection_rate_exceeded",
        0xA1 => "subscription_identifiers_not_supported",
        0xA2 => "wildcard_subscriptions_not_supported",
        _ => "unknown",
    }
}

fn operation(d: &MqttDetail) -> (&'static str, Option<&'static str>, Kind) {
    match d.packet.as_str() {
        "PUBLISH" if d.delivery => ("receive", Some("receive"), Kind::Consumer),
        "PUBLISH" => ("publish", Some("send"), Kind::Producer),
        "SUBSCRIBE" => ("subscribe", None, Kind::Client),
        "UNSUBSCRIBE" => ("unsubscribe", None, Kind::Client),
        "CONNECT" => ("connect", None, Kind::Client),
        "PINGREQ" => ("ping", None, Kind::Client),
        "DISCONNECT" => ("disconnect", None, Kind::Client),
        _ => ("unknown", None, Kind::Client),
    }
}

pub fn span_parts(ex: &Exchange, d: &MqttDetail, side: Kind) -> SpanParts {
    let (op, op_type, client_kind) = operation(d);
    let kind = if side == Kind::Server { Kind::Server } else { client_kind };
    let mut a: Attrs = vec![("messaging.system", "mqtt".into()), ("messaging.operation.name", op.into())];
    push_opt(&mut a, "messaging.operation.type", op_type);
    let dest = d.topic.clone().or_else(|| (d.topics.len() == 1).then(|| d.topics[0].clone()));
    let template = dest.as_deref().and_then(topic_template);
    let mut m = a.clone();
    match (&template, &dest) {
        (Some(t), _) => m.put("messaging.destination.template", t.clone()),
        (None, Some(s)) => m.put("messaging.destination.name", s.clone()),
        _ => {}
    }
    push_opt(&mut a, "messaging.destination.name", dest.clone());
    push_opt(&mut a, "messaging.destination.template", template.clone());
    if d.topics.len() > 1 {
        a.put("cnflow.mqtt.topics", V::A(d.topics.clone()));
    }
    push_opt(&mut a, "messaging.message.body.size", d.payload_bytes.map(|n| n as i64));
    push_opt(&mut a, "messaging.client.id", d.client_id.clone());
    a.put("cnflow.mqtt.packet", d.packet.clone());
    push_opt(&mut a, "cnflow.mqtt.qos", d.qos.map(|q| q as i64));
    if d.retain {
        a.put("cnflow.mqtt.retain", true);
    }
    push_opt(&mut a, "cnflow.mqtt.response", d.response.clone());
    push_opt(&mut a, "cnflow.mqtt.reason_code", d.reason_code.map(|c| c as i64));
    a.put("network.protocol.name", "mqtt");
    let version = match d.protocol_level {
        3 => Some("3.1"),
        4 => Some("3.1.1"),
        5 => Some("5.0"),
        _ => None,
    };
    push_opt(&mut a, "network.protocol.version", version);
    endpoint_attrs(ex, side, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        // CONNACK: any non-zero code refuses; elsewhere codes >= 0x80 fail.
        let failed = match (d.packet.as_str(), d.reason_code) {
            ("CONNECT", Some(c)) => c != 0,
            (_, Some(c)) => c >= 0x80,
            _ => false,
        };
        if failed {
            let c = d.reason_code.unwrap_or(0);
            let name = reason_name(c, d.protocol_level);
            a.put("error.type", name);
            error = Some(format!("{name} (0x{c:02x})"));
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    let answered = d.response.is_some() || ex.outcome != Outcome::Complete;
    let metric = (answered && !d.delivery).then_some((Instrument::Messaging, m));
    let name = match (template, dest) {
        (Some(t), _) => format!("{op} {t}"),
        (None, Some(s)) => format!("{op} {s}"),
        _ => op.to_string(),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric, peer: vec![] }
}

impl SpanMapping for MqttDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, _cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind)
    }
    fn trace_headers(&self) -> &[(String, String)] {
        &self.trace_headers
    }
    /// A PUBLISH sends one message, or delivers one to this client.
    fn messages(&self, _ex: &Exchange) -> Option<(crate::otel::semconv::MessageCounter, u64)> {
        use crate::otel::semconv::MessageCounter;
        match (self.packet.as_str(), self.delivery) {
            ("PUBLISH", false) => Some((MessageCounter::Sent, 1)),
            ("PUBLISH", true) => Some((MessageCounter::Consumed, 1)),
            _ => None,
        }
    }
}
