//! MySQL/MariaDB spans: named `{db.query.summary}` (else `{operation}
//! {target}`), `db.*` attributes (query text masked unless configured
//! otherwise) and the `db.client.operation.duration` histogram. ERROR on an
//! ERR packet: `db.response.status_code` and `error.type` = the error code.
use super::MysqlDetail;
use crate::otel::attr::{take_attrs, Attrs, Put, Str};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, push_opt, DbMetric, DbStatus};

/// The MySQL/MariaDB span of `kind`. With `metric_only` (no span will be
/// exported), only the metric attributes and whether the exchange is an
/// error (its message left out): no name, statement or endpoint attributes.
pub fn span_parts(ex: &Exchange, d: &MysqlDetail, kind: Kind, opts: &NamingOptions, metric_only: bool) -> SpanParts {
    let system = if d.system.is_empty() { Str::lit("mysql") } else { d.system.clone() };
    // An ERR packet's code as status code and error type.
    let st = DbStatus::of(ex, d.error_code.map(|c| Str::int(i64::from(c))));
    let mut a: Attrs = if metric_only { Attrs::new() } else { take_attrs(26) };
    if !metric_only {
        a.put("db.system.name", system.clone());
        push_opt(&mut a, "db.operation.name", d.operation.clone());
        push_opt(&mut a, "db.collection.name", d.collection.clone());
        push_opt(&mut a, "db.namespace", d.namespace.clone());
        push_opt(&mut a, "db.query.summary", d.summary.clone());
        let text = if opts.unmask_db_statements { &d.query_raw } else { &d.query_masked };
        push_opt(&mut a, "db.query.text", text.clone().filter(|t| !t.is_empty()));
        push_opt(&mut a, "db.response.returned_rows", d.returned_rows.map(|n| n as i64));
        a.put("cnflow.mysql.command", d.command.clone());
        push_opt(&mut a, "cnflow.mysql.affected_rows", d.affected_rows.map(|n| n as i64));
        push_opt(&mut a, "cnflow.mysql.statement_id", d.statement_id.map(|n| n as i64));
        push_opt(&mut a, "cnflow.mysql.sql_state", d.sql_state.clone());
        push_opt(&mut a, "cnflow.mysql.server_version", d.server_version.clone());
        endpoint_attrs(ex, kind, None, &mut a);
        st.put(&mut a);
    }
    let m = DbMetric {
        system: system.clone(),
        namespace: d.namespace.as_ref(),
        operation: d.operation.as_ref(),
        collection: d.collection.as_ref(),
        summary: d.summary.as_ref(),
        status: &st,
    }
    .attrs(ex, kind, opts.metrics_server_address);
    let error = st.message(metric_only, || {
        let code = d.error_code.map(|c| c.to_string()).unwrap_or_default();
        d.error_message.clone().filter(|m| !m.is_empty()).unwrap_or(code)
    });
    // Semconv: the summary, else operation and target, else the target, else the system.
    let name = if metric_only {
        Str::default()
    } else {
        let target = d.collection.as_ref().or(d.namespace.as_ref());
        match (&d.summary, &d.operation, target) {
            (Some(s), _, _) => s.clone(),
            (None, Some(op), Some(t)) => Str::concat(&[op, " ", t]),
            (None, Some(op), None) => op.clone(),
            (None, None, Some(t)) => t.clone(),
            (None, None, None) => system,
        }
    };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for MysqlDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        cx.reduced = cx.metric_only;
        span_parts(ex, self, kind, cx.opts, cx.metric_only)
    }
}
