//! Redis spans: the command as name, `db.*` attributes (statement masked
//! unless configured otherwise) and the `db.client.operation.duration`
//! histogram. ERROR on an error reply, `error.type` = its prefix.
use super::RedisDetail;
use crate::otel::attr::{take_attrs, Attrs, Put, Str};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_status, push_opt};

/// The Redis span of `kind`. With `metric_only` (no span will be exported),
/// only the metric attributes and the error status (its message left out):
/// no name, statement, protocol or endpoint attributes.
pub fn span_parts(ex: &Exchange, r: &RedisDetail, kind: Kind, opts: &NamingOptions, metric_only: bool) -> SpanParts {
    // The detail's texts are inline when short (command, masked statement):
    // these clones and the metric attributes' copies allocate nothing.
    let op = match &r.subcommand {
        Some(s) => Str::concat(&[&r.command, " ", s]),
        None => r.command.clone(),
    };
    let ns = r.db_index.map(Str::int);
    // Sized for the whole span (endpoint, wire key, status): one allocation,
    // 21 × 48 bytes.
    // Reduced, the span's attributes are not read (the metric's are built
    // apart): none are pushed.
    let mut a: Attrs = if metric_only { Attrs::new() } else { take_attrs(21) };
    if !metric_only {
        a.put("db.system.name", "redis");
        if !op.is_empty() {
            a.put("db.operation.name", op.clone());
        }
        if let Some(db) = &ns {
            a.put("db.namespace", db.clone());
        }
        let text = if opts.unmask_db_statements { &r.query_raw } else { &r.query_masked };
        if !text.is_empty() {
            a.put("db.query.text", text.clone());
        }
        if r.resp_version > 0 {
            a.put("network.protocol.name", "resp");
            a.put("network.protocol.version", Str::int(i64::from(r.resp_version)));
        }
        push_opt(&mut a, "cnflow.redis.response_type", r.response_type.map(Str::lit));
        endpoint_attrs(ex, kind, None, &mut a);
    }
    // The status: a timeout or reset first, else an error reply (its prefix
    // as status code and error type). Known here, so the metric attributes
    // need no search of the span's.
    let (status, error_type, error) = match outcome_status(ex) {
        Some((ty, msg)) => (None, Some(Str::lit(ty)), Some(if metric_only { String::new() } else { msg.to_string() })),
        None if r.error.is_some() => {
            let prefix = r.error_prefix.clone().unwrap_or(Str::lit("ERR"));
            let error = if metric_only { Some(String::new()) } else { r.error.clone() };
            (Some(prefix.clone()), Some(prefix), error)
        }
        None => (None, None, None),
    };
    if !metric_only {
        if let Some(s) = &status {
            a.put("db.response.status_code", s.clone());
        }
        if let Some(t) = &error_type {
            a.put("error.type", t.clone());
        }
    }
    // The metric attributes, pushed in key order (`Metrics::record` sorts
    // them by key: then it only compares).
    let mut m: Attrs = take_attrs(5);
    if let Some(db) = ns {
        m.put("db.namespace", db);
    }
    if !op.is_empty() {
        m.put("db.operation.name", op.clone());
    }
    if let Some(s) = status {
        m.put("db.response.status_code", s);
    }
    m.put("db.system.name", "redis");
    if let Some(t) = error_type {
        m.put("error.type", t);
    }
    let name = if metric_only {
        Str::default()
    } else if op.is_empty() {
        Str::lit("redis")
    } else {
        op
    };
    SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
}

impl SpanMapping for RedisDetail {
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        cx.reduced = cx.metric_only;
        span_parts(ex, self, kind, cx.opts, cx.metric_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Direction;
    use crate::protocol::exchange::Outcome;
    use crate::protocol::span_common::outcome_error;
    use crate::telemetry::samples::redis_exchange;
    use proptest::prelude::*;

    /// The mapping before the status was known without searching the span's
    /// attributes (the oracle; metric attributes in the order it pushed them).
    fn span_parts_before(ex: &Exchange, r: &RedisDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
        // Short texts (command, database, masked statement) are kept inline in
        // the values: copying them into the metric attributes allocates nothing.
        let op = match &r.subcommand {
            Some(s) => Str::concat(&[&r.command, " ", s]),
            None => r.command.clone(),
        };
        // Sized for the whole span (endpoint, wire key, status): one allocation,
        // 21 × 48 bytes, within the allocator's per-thread cache (≤ 1032 bytes).
        let mut a: Attrs = Vec::with_capacity(21);
        a.push(("db.system.name", "redis".into()));
        if !op.is_empty() {
            a.push(("db.operation.name", op.clone().into()));
        }
        if let Some(db) = r.db_index {
            a.push(("db.namespace", Str::int(db).into()));
        }
        let mut m: Attrs = Vec::with_capacity(a.len() + 2);
        m.extend(a.iter().cloned());
        let text = if opts.unmask_db_statements { &r.query_raw } else { &r.query_masked };
        if !text.is_empty() {
            a.push(("db.query.text", text.clone().into()));
        }
        if r.resp_version > 0 {
            a.push(("network.protocol.name", "resp".into()));
            a.push(("network.protocol.version", Str::int(i64::from(r.resp_version)).into()));
        }
        push_opt(&mut a, "cnflow.redis.response_type", r.response_type.map(Str::lit));
        endpoint_attrs(ex, kind, None, &mut a);
        let mut error = outcome_error(ex, &mut a);
        if error.is_none() && r.error.is_some() {
            let prefix = r.error_prefix.clone().unwrap_or(Str::lit("ERR"));
            a.push(("db.response.status_code", prefix.clone().into()));
            a.push(("error.type", prefix.into()));
            error = r.error.clone();
        }
        for key in ["db.response.status_code", "error.type"] {
            if let Some((_, v)) = a.iter().find(|(k, _)| *k == key) {
                m.push((key, v.clone()));
            }
        }
        // The operation's inline text again (a copy, no allocation).
        let name = if op.is_empty() { Str::lit("redis") } else { op };
        SpanParts { name, kind, attrs: a, error, metric: Some((Instrument::Db, m)), peer: vec![] }
    }

    fn sorted(m: &Attrs) -> Attrs {
        let mut m = m.clone();
        m.sort_by(|a, b| a.0.cmp(b.0));
        m
    }

    proptest! {
        #[test]
        fn span_parts_as_before(
            error in proptest::option::of("[A-Z]{0,6}( [a-z ]{0,12})?"),
            prefix in proptest::option::of("[A-Z]{1,6}"),
            outcome in 0u8..3,
            sub in proptest::option::of("[A-Z]{1,12}"),
            command in "[A-Z]{0,30}",
            db in proptest::option::of(any::<i64>()),
            resp in 0u8..4,
            unmask in any::<bool>(),
            server in any::<bool>(),
        ) {
            let mut ex = redis_exchange(Direction::Egress, None, 1_000);
            ex.outcome = [Outcome::Complete, Outcome::Timeout, Outcome::Reset][usize::from(outcome)];
            let crate::protocol::exchange::Detail::Redis(r) = &mut ex.detail else { unreachable!() };
            r.error = error;
            r.error_prefix = prefix.as_deref().map(Str::copy);
            r.subcommand = sub.as_deref().map(Str::copy);
            r.command = Str::copy(&command);
            r.db_index = db;
            r.resp_version = resp;
            let r = r.clone();
            let opts = NamingOptions { unmask_db_statements: unmask, ..Default::default() };
            let kind = if server { Kind::Server } else { Kind::Client };
            let (new, old) = (span_parts(&ex, &r, kind, &opts, false), span_parts_before(&ex, &r, kind, &opts));
            // Reduced (`metric_only`): the same metric and error status.
            let reduced = span_parts(&ex, &r, kind, &opts, true);
            prop_assert_eq!(&reduced.metric, &new.metric);
            prop_assert_eq!(reduced.error.is_some(), new.error.is_some());
            prop_assert_eq!(&new.name, &old.name);
            prop_assert_eq!(new.kind, old.kind);
            prop_assert_eq!(&new.attrs, &old.attrs);
            prop_assert_eq!(&new.error, &old.error);
            let (ni, nm) = new.metric.unwrap();
            let (oi, om) = old.metric.unwrap();
            prop_assert_eq!(ni, oi);
            prop_assert_eq!(&nm, &sorted(&nm));
            prop_assert_eq!(nm, sorted(&om));
        }
    }
}
