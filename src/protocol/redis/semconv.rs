//! Redis spans: the command as name, `db.*` attributes (statement masked
//! unless configured otherwise) and the `db.client.operation.duration`
//! histogram. ERROR on an error reply, `error.type` = its prefix.
use super::RedisDetail;
use crate::otel::attr::Attrs;
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, r: &RedisDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let op = match &r.subcommand {
        Some(s) => format!("{} {s}", r.command),
        None => r.command.clone(),
    };
    let mut a: Attrs = vec![("db.system.name", "redis".into())];
    if !op.is_empty() {
        a.push(("db.operation.name", op.clone().into()));
    }
    if let Some(db) = r.db_index {
        a.push(("db.namespace", db.to_string().into()));
    }
    let mut m = a.clone();
    let text = if opts.unmask_db_statements { &r.query_raw } else { &r.query_masked };
    if !text.is_empty() {
        a.push(("db.query.text", text.clone().into()));
    }
    if r.resp_version > 0 {
        a.push(("network.protocol.name", "resp".into()));
        a.push(("network.protocol.version", r.resp_version.to_string().into()));
    }
    push_opt(&mut a, "cnflow.redis.response_type", r.response_type.clone());
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && r.error.is_some() {
        let prefix = r.error_prefix.clone().unwrap_or_else(|| "ERR".to_string());
        a.push(("db.response.status_code", prefix.clone().into()));
        a.push(("error.type", prefix.into()));
        error = r.error.clone();
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.push((key, v.clone()));
        }
    }
    let name = if op.is_empty() { "redis".to_string() } else { op };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for RedisDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
