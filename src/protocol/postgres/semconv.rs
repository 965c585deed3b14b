//! PostgreSQL spans: named by `db.query.summary` (else operation and
//! collection), `db.*` attributes with the statement masked unless configured
//! otherwise, and the `db.client.operation.duration` histogram. ERROR on an
//! ErrorResponse: `db.response.status_code` and `error.type` are its SQLSTATE.
use super::PostgresDetail;
use crate::otel::attr::{take_attrs, Attrs, Put, Str};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, push_opt, DbMetric, DbStatus};

/// The PostgreSQL span of `kind`. With `metric_only` (no span will be
/// exported), only the metric attributes and whether the exchange is an
/// error (its message left out): no name, statement or endpoint attributes.
pub fn span_parts(ex: &Exchange, d: &PostgresDetail, kind: Kind, opts: &NamingOptions, metric_only: bool) -> SpanParts {
    // An ErrorResponse's SQLSTATE as status code and error type.
    let server_error = d.sqlstate.is_some() || d.error_message.is_some();
    let st = DbStatus::of(ex, server_error.then(|| d.sqlstate.as_deref().map_or(Str::lit("_OTHER"), Str::copy)));
    let mut a: Attrs = if metric_only { Attrs::new() } else { take_attrs(24) };
    if !metric_only {
        a.put("db.system.name", "postgresql");
        push_opt(&mut a, "db.namespace", d.database.clone());
        push_opt(&mut a, "db.operation.name", d.operation.clone());
        push_opt(&mut a, "db.collection.name", d.collection.clone());
        push_opt(&mut a, "db.query.summary", d.summary.clone());
        let text = if opts.unmask_db_statements { &d.query_raw } else { &d.query_masked };
        push_opt(&mut a, "db.query.text", text.clone().filter(|t| !t.is_empty()));
        push_opt(&mut a, "db.response.returned_rows", d.returned_rows.map(|n| n as i64));
        push_opt(&mut a, "cnflow.postgres.affected_rows", d.affected_rows.map(|n| n as i64));
        push_opt(&mut a, "cnflow.postgres.command_tag", d.command_tag.clone());
        push_opt(&mut a, "cnflow.postgres.statement", d.statement.clone());
        push_opt(&mut a, "cnflow.postgres.copy", d.copy);
        a.put("cnflow.postgres.message", d.message);
        endpoint_attrs(ex, kind, None, &mut a);
        st.put(&mut a);
    }
    let m = DbMetric {
        system: Str::lit("postgresql"),
        namespace: d.database.as_ref(),
        operation: d.operation.as_ref(),
        collection: d.collection.as_ref(),
        summary: d.summary.as_ref(),
        status: &st,
    }
    .attrs(ex, kind, opts.metrics_server_address);
    let error = st.message(metric_only, || d.error_message.clone().unwrap_or_else(|| "error response".to_string()));
    // Semconv span name: the summary; else "{operation} {collection}"; else the system.
    let name = if metric_only {
        Str::default()
    } else {
        match (&d.summary, &d.operation, &d.collection) {
            (Some(s), _, _) if !s.is_empty() => s.clone(),
            (_, Some(op), Some(c)) => Str::concat(&[op, " ", c]),
            (_, Some(op), None) => op.clone(),
            _ => Str::lit("postgresql"),
        }
    };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for PostgresDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        cx.reduced = cx.metric_only;
        span_parts(ex, self, kind, cx.opts, cx.metric_only)
    }
}
