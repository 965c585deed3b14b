//! ICMP spans: `ICMP {type}` names, `cnflow.icmp.*` attributes and the
//! `cnflow.icmp.echo.rtt` histogram for answered echoes. ERROR for errors
//! received (unreachable, time exceeded, parameter problem).
use super::IcmpDetail;
use crate::otel::attr::{Attrs, Put, V};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::{Exchange, Outcome};
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

fn icmp_is_error(i: &IcmpDetail) -> bool {
    if i.v6 {
        matches!(i.icmp_type, 1..=4)
    } else {
        matches!(i.icmp_type, 3 | 11 | 12)
    }
}

pub fn span_parts(ex: &Exchange, i: &IcmpDetail, kind: Kind, _opts: &NamingOptions) -> SpanParts {
    let family = if i.v6 { "ICMPv6" } else { "ICMP" };
    let label = if i.name.is_empty() { format!("type_{}", i.icmp_type) } else { i.name.clone() };
    let mut a: Attrs = vec![
        ("cnflow.icmp.type", (i.icmp_type as i64).into()),
        ("cnflow.icmp.code", (i.code as i64).into()),
        ("cnflow.icmp.name", label.clone().into()),
    ];
    push_opt(&mut a, "cnflow.icmp.echo.id", i.echo_id.map(|v| v as i64));
    push_opt(&mut a, "cnflow.icmp.echo.seq", i.echo_seq.map(|v| v as i64));
    if let Some(o) = &i.original {
        a.put("cnflow.icmp.original.protocol", o.protocol as i64);
        a.put("cnflow.icmp.original.source", o.src.to_string());
        a.put("cnflow.icmp.original.destination", o.dst.to_string());
    }
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && icmp_is_error(i) {
        a.put("error.type", label.clone());
        error = Some(String::new());
    }
    let echo_ok = i.echo_id.is_some() && ex.outcome == Outcome::Complete && !icmp_is_error(i);
    let metric = echo_ok.then(|| (Instrument::IcmpRtt, vec![("cnflow.icmp.family", V::from(family))]));
    SpanParts { name: format!("{family} {label}").into(), kind, attrs: a, error, metric, peer: vec![] }
}

impl SpanMapping for IcmpDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
