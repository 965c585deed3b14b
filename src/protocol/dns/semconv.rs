//! DNS spans: `{type} {name}` names (`UPDATE {type} {name}` of the record
//! updated for RFC 2136 updates, `{OPCODE} {zone}` for other opcodes) and the `dns.lookup.duration` histogram.
//! ERROR on any rcode other than NOERROR and NXDOMAIN (NXDOMAIN is a normal
//! answer unless `CNFLOW_DNS_NXDOMAIN_IS_ERROR=true`).
use super::DnsDetail;
use crate::otel::attr::{Attrs, Put, Str, V};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, d: &DnsDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let mut a = Attrs::new();
    let mut m = Attrs::new();
    if let Some(q) = &d.question_name {
        a.put("dns.question.name", q.clone());
        m.put("dns.question.name", q.clone());
    }
    push_opt(&mut a, "cnflow.dns.question.type", d.question_type.clone());
    push_opt(&mut a, "cnflow.dns.rcode", d.rcode.clone());
    push_opt(&mut a, "cnflow.dns.opcode", d.opcode.clone());
    push_opt(&mut a, "cnflow.dns.update.name", d.update_name.clone());
    push_opt(&mut a, "cnflow.dns.update.type", d.update_type.clone());
    a.put("cnflow.dns.id", d.id as i64);
    if d.rcode.is_some() {
        a.put("cnflow.dns.answer_count", d.answer_count as i64);
    }
    if !d.answers.is_empty() {
        a.put("dns.answers", V::A(d.answers.clone()));
    }
    if d.truncated {
        a.put("cnflow.dns.truncated", true);
    }
    a.put("network.protocol.name", "dns");
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if let (None, Some(rc)) = (&error, d.rcode.as_deref()) {
        let bad = match rc {
            "NOERROR" => false,
            "NXDOMAIN" => opts.dns_nxdomain_is_error,
            _ => true,
        };
        if bad {
            a.put("error.type", Str::copy(rc));
            error = Some(String::new());
        }
    }
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    // UPDATE names the record changed, not the zone in its question section.
    let name = match (&d.opcode, &d.update_type, &d.update_name, &d.question_name) {
        (Some(op), Some(t), Some(n), _) => format!("{op} {t} {n}"),
        (Some(op), _, _, Some(zone)) => format!("{op} {zone}"),
        _ => base_name(d),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Dns, m)), peer: vec![] }
}

/// `{type} {name}` of a standard query.
fn base_name(d: &DnsDetail) -> String {
    match (&d.question_type, &d.question_name) {
        (Some(t), Some(n)) => format!("{t} {n}"),
        (None, Some(n)) => format!("DNS {n}"),
        _ => "DNS".to_string(),
    }
}

impl SpanMapping for DnsDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
