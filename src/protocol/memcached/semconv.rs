//! memcached spans: the command as name, `db.*` attributes (query text
//! masked unless configured otherwise), `db.response.returned_rows` for
//! retrievals and the `db.client.operation.duration` histogram. ERROR only
//! on an error reply (ERROR, CLIENT_ERROR, SERVER_ERROR, a binary error
//! status), never on a miss.
use super::MemcachedDetail;
use crate::otel::attr::{Attrs, Put};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, d: &MemcachedDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let mut a: Attrs = vec![("db.system.name", "memcached".into())];
    if !d.command.is_empty() {
        a.put("db.operation.name", d.command.clone());
    }
    let mut m = a.clone();
    let text = if opts.unmask_db_statements { &d.query_raw } else { &d.query_masked };
    if !text.is_empty() {
        a.put("db.query.text", text.clone());
    }
    push_opt(&mut a, "db.response.returned_rows", d.hits.map(i64::from));
    push_opt(&mut a, "cnflow.memcached.response", d.response.clone());
    if d.noreply {
        a.put("cnflow.memcached.noreply", true);
    }
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = if d.noreply { None } else { outcome_error(ex, &mut a) };
    if error.is_none() {
        if let Some(code) = &d.error_code {
            a.put("db.response.status_code", code.clone());
            a.put("error.type", code.clone());
            error = Some(d.error.clone().unwrap_or_else(|| code.clone()));
        }
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.put(key, v.clone());
        }
    }
    let name = if d.command.is_empty() { "memcached".to_string() } else { d.command.clone() };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for MemcachedDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
