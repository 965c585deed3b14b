//! PostgreSQL spans: named by `db.query.summary` (else operation and
//! collection), `db.*` attributes with the statement masked unless configured
//! otherwise, and the `db.client.operation.duration` histogram. ERROR on an
//! ErrorResponse: `db.response.status_code` and `error.type` are its SQLSTATE.
use super::PostgresDetail;
use crate::otel::attr::{Attrs, Put};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, d: &PostgresDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let mut a: Attrs = vec![("db.system.name", "postgresql".into())];
    push_opt(&mut a, "db.namespace", d.database.clone());
    push_opt(&mut a, "db.operation.name", d.operation.clone());
    push_opt(&mut a, "db.collection.name", d.collection.clone());
    push_opt(&mut a, "db.query.summary", d.summary.clone());
    // The histogram's attributes: all low-cardinality (literals are never in the summary).
    let mut m = a.clone();
    let text = if opts.unmask_db_statements { &d.query_raw } else { &d.query_masked };
    push_opt(&mut a, "db.query.text", text.clone().filter(|t| !t.is_empty()));
    push_opt(&mut a, "db.response.returned_rows", d.returned_rows.map(|n| n as i64));
    push_opt(&mut a, "cnflow.postgres.affected_rows", d.affected_rows.map(|n| n as i64));
    push_opt(&mut a, "cnflow.postgres.command_tag", d.command_tag.clone());
    push_opt(&mut a, "cnflow.postgres.statement", d.statement.clone());
    push_opt(&mut a, "cnflow.postgres.copy", d.copy);
    a.put("cnflow.postgres.message", d.message);
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && (d.sqlstate.is_some() || d.error_message.is_some()) {
        let code = d.sqlstate.clone().unwrap_or_else(|| "_OTHER".to_string());
        a.put("db.response.status_code", code.clone());
        a.put("error.type", code);
        error = Some(d.error_message.clone().unwrap_or_else(|| "error response".to_string()));
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.put(key, v.clone());
        }
    }
    if kind == Kind::Client && opts.metrics_server_address {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    // Semconv span name: the summary; else "{operation} {collection}"; else the system.
    let name = match (&d.summary, &d.operation, &d.collection) {
        (Some(s), _, _) if !s.is_empty() => s.clone(),
        (_, Some(op), Some(c)) => format!("{op} {c}"),
        (_, Some(op), None) => op.clone(),
        _ => "postgresql".to_string(),
    };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for PostgresDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
