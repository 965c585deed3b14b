//! MongoDB spans: named by `db.query.summary` ("find orders"), `db.*`
//! attributes with the command masked, and the `db.client.operation.duration`
//! histogram. ERROR when the reply says so (`ok: 0`, write errors):
//! `db.response.status_code` and `error.type` are the server's error code.
use super::MongodbDetail;
use crate::otel::attr::{Attrs, Put};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn span_parts(ex: &Exchange, d: &MongodbDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let summary = d.summary();
    let mut a: Attrs = vec![("db.system.name", "mongodb".into())];
    push_opt(&mut a, "db.namespace", d.database.clone());
    push_opt(&mut a, "db.operation.name", d.operation.clone());
    push_opt(&mut a, "db.collection.name", d.collection.clone());
    push_opt(&mut a, "db.query.summary", summary.clone());
    // The histogram's attributes: all low-cardinality.
    let mut m = a.clone();
    push_opt(&mut a, "db.query.text", d.query_masked.clone());
    push_opt(&mut a, "db.response.returned_rows", d.returned_rows.map(|n| n as i64));
    a.put("cnflow.mongodb.op_code", d.op_code);
    push_opt(&mut a, "cnflow.mongodb.compressor", d.compressor);
    endpoint_attrs(ex, kind, None, &mut a);
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() && (d.ok == Some(false) || d.error_code.is_some()) {
        let code = d.error_code.map(|c| c.to_string()).unwrap_or_else(|| "_OTHER".to_string());
        a.put("db.response.status_code", code.clone());
        a.put("error.type", code);
        push_opt(&mut a, "cnflow.mongodb.error_name", d.error_name.clone());
        error = Some(d.error_message.clone().or_else(|| d.error_name.clone()).unwrap_or_else(|| "error reply".into()));
    }
    for key in ["db.response.status_code", "error.type"] {
        if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
            m.put(key, v.clone());
        }
    }
    if kind == Kind::Client && opts.metrics_server_address {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    let name = summary.unwrap_or_else(|| "mongodb".to_string());
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for MongodbDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        span_parts(ex, self, kind, cx.opts)
    }
}
