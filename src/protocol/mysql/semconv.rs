//! MySQL/MariaDB spans: named `{db.query.summary}` (else `{operation}
//! {target}`), `db.*` attributes (query text masked unless configured
//! otherwise) and the `db.client.operation.duration` histogram. ERROR on an
//! ERR packet: `db.response.status_code` and `error.type` = the error code.
use super::MysqlDetail;
use crate::otel::attr::{Attrs, Put, Str};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, d: &MysqlDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let system = if d.system.is_empty() { Str::lit("mysql") } else { Str::copy(&d.system) };
    let mut a: Attrs = vec![("db.system.name", system.clone().into())];
    push_opt(&mut a, "db.operation.name", d.operation.clone());
    push_opt(&mut a, "db.collection.name", d.collection.clone());
    push_opt(&mut a, "db.namespace", d.namespace.clone());
    push_opt(&mut a, "db.query.summary", d.summary.clone());
    let mut m = a.clone();
    let text = if opts.unmask_db_statements { &d.query_raw } else { &d.query_masked };
    push_opt(&mut a, "db.query.text", text.clone().filter(|t| !t.is_empty()));
    push_opt(&mut a, "db.response.returned_rows", d.returned_rows.map(|n| n as i64));
    push_opt(&mut a, "cnflow.mysql.command", Some(d.command.clone()));
    push_opt(&mut a, "cnflow.mysql.affected_rows", d.affected_rows.map(|n| n as i64));
    push_opt(&mut a, "cnflow.mysql.statement_id", d.statement_id.map(|n| n as i64));
    push_opt(&mut a, "cnflow.mysql.sql_state", d.sql_state.clone());
    push_opt(&mut a, "cnflow.mysql.server_version", d.server_version.clone());
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        if let Some(code) = d.error_code {
            a.put("db.response.status_code", code.to_string());
            a.put("error.type", code.to_string());
            error = Some(d.error_message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| code.to_string()));
        }
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.put(key, v.clone());
        }
    }
    // Semconv: the summary, else operation and target, else the target, else the system.
    let target = d.collection.as_ref().or(d.namespace.as_ref());
    let name = match (&d.summary, &d.operation, target) {
        (Some(s), _, _) => s.clone(),
        (None, Some(op), Some(t)) => format!("{op} {t}"),
        (None, Some(op), None) => op.clone(),
        (None, None, Some(t)) => t.clone(),
        (None, None, None) => system.to_string(),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for MysqlDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
