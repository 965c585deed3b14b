//! HTTP spans (HTTP/1 and HTTP/2 without gRPC) following the semantic
//! conventions: `{method} {route}` names, ERROR on 5xx for SERVER spans and
//! on 4xx/5xx for CLIENT spans, and the `http.{server,client}.request.duration`
//! histogram.
use super::HttpDetail;
use crate::otel::attr::{take_attrs, Attrs, Put, Str};
use crate::otel::route::RouteTemplater;
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::registry::SpanMapping;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

/// The known HTTP methods (RFC 9110 + PATCH + QUERY); others become `_OTHER`.
pub const HTTP_METHODS: &[&str] =
    &["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"];

/// The table's constant for a known method (a `match`: one length test and
/// one comparison, where a search of the table compared up to ten).
fn known_method(m: &str) -> Option<&'static str> {
    let k = match m {
        "CONNECT" => "CONNECT",
        "DELETE" => "DELETE",
        "GET" => "GET",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "POST" => "POST",
        "PUT" => "PUT",
        "QUERY" => "QUERY",
        "TRACE" => "TRACE",
        _ => return None,
    };
    debug_assert!(HTTP_METHODS.contains(&k));
    Some(k)
}

/// Replace every query value with `?`, keeping parameter names (which are
/// low-cardinality and useful) and the order.
pub fn mask_query(q: &str) -> String {
    // Written into one buffer (a masked query is never longer than the
    // query): a `String` per parameter and a `Vec` to join them cost more
    // than the rest of an HTTP span's attributes.
    let mut out = String::with_capacity(q.len());
    for (i, kv) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match kv.split_once('=') {
            Some((k, v)) if !v.is_empty() => {
                out.push_str(k);
                out.push_str("=?");
            }
            _ => out.push_str(kv),
        }
    }
    out
}

/// The HTTP span of `kind`. With `metric_only` (no span will be exported),
/// only what the histogram and the sampler need: the metric attributes,
/// `error.type` and whether the span is an error (its message left empty);
/// no name, no URL, user agent, sizes or endpoint attributes.
pub fn span_parts(
    ex: &Exchange,
    h: &HttpDetail,
    kind: Kind,
    routes: &mut RouteTemplater,
    opts: &NamingOptions,
    metric_only: bool,
) -> SpanParts {
    // Sized for the whole span (endpoint, wire key, status), and taken from
    // the lists given back after earlier spans were encoded (as Redis does):
    // no allocation and free per span. Reduced, it holds `error.type` and
    // the server address at most.
    let mut a = if metric_only { Attrs::new() } else { take_attrs(21) };
    // Known methods are the table's constants; values shared with the
    // metric attributes are constants or inline copies (no allocation).
    let method = h.method.as_deref().map(|m| match known_method(m) {
        Some(k) => (Str::lit(k), None),
        None => (Str::lit("_OTHER"), Some(Str::copy(m))),
    });
    let route = h.path.as_deref().map(|p| routes.template_str(p));
    let route_key = if kind == Kind::Server { "http.route" } else { "url.template" };
    let version = (!h.version.is_empty()).then(|| h.version.clone());
    if !metric_only {
        if let Some((meth, orig)) = &method {
            a.put("http.request.method", meth.clone());
            push_opt(&mut a, "http.request.method_original", orig.clone());
        }
        if let Some(r) = &route {
            a.put(route_key, r.clone());
        }
        push_opt(&mut a, "url.path", h.path.clone());
        if let Some(q) = h.query.as_deref().filter(|q| !q.is_empty()) {
            a.put("url.query", if opts.mask_query_values { mask_query(q) } else { q.to_string() });
        }
        a.put("url.scheme", "http");
        if let Some(s) = h.status {
            a.put("http.response.status_code", s as i64);
        }
        push_opt(&mut a, "user_agent.original", h.user_agent.clone());
        push_opt(&mut a, "http.request.body.size", h.request_content_length.map(|v| v as i64));
        push_opt(&mut a, "http.response.body.size", h.response_content_length.map(|v| v as i64));
        a.put("network.protocol.name", "http");
        if let Some(v) = &version {
            a.put("network.protocol.version", v.clone());
        }
    }
    // The client histogram may carry `server.address` and `server.port`.
    let address_in_metric = kind == Kind::Client && opts.metrics_server_address;
    if !metric_only || address_in_metric {
        endpoint_attrs(ex, kind, h.host.as_deref(), &mut a);
    }
    let mut error = outcome_error(ex, &mut a);
    if let (Some(s), None) = (h.status, &error) {
        let bad = match kind {
            Kind::Server => s >= 500,
            Kind::Client | Kind::Producer | Kind::Consumer => s >= 400,
        };
        if bad {
            a.put("error.type", Str::int(i64::from(s)));
            error = Some(if metric_only {
                String::new()
            } else {
                informative_reason(s, h.reason.as_deref()).unwrap_or_default()
            });
        }
    }
    // The histogram's attributes, pushed in key order: the series lookup
    // sorts them, and sorted ones cost it one comparison each.
    // From the spare lists: `Metrics::record` gives it back after the lookup.
    let mut m = take_attrs(10);
    if let Some((_, v)) = a.iter().find(|(k, _)| *k == "error.type") {
        m.put("error.type", v.clone());
    }
    if let Some((meth, _)) = &method {
        m.put("http.request.method", meth.clone());
    }
    if let Some(s) = h.status {
        m.put("http.response.status_code", s as i64);
    }
    if let (Some(r), Kind::Server) = (&route, kind) {
        m.put("http.route", r.clone());
    }
    m.put("network.protocol.name", "http");
    if let Some(v) = version {
        m.put("network.protocol.version", v);
    }
    if address_in_metric {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    m.put("url.scheme", "http");
    if let (Some(r), false) = (&route, kind == Kind::Server) {
        m.put("url.template", r.clone());
    }
    // Inline when short (`GET /users/{id}`): no allocation.
    let name = match (&method, &route) {
        _ if metric_only => Str::default(),
        (Some((meth, _)), Some(r)) if *meth != "_OTHER" => Str::concat(&[meth.as_str(), " ", r.as_str()]),
        (Some((meth, _)), None) if *meth != "_OTHER" => meth.clone(),
        _ => Str::lit("HTTP"),
    };
    let inst = if kind == Kind::Server { Instrument::HttpServer } else { Instrument::HttpClient };
    SpanParts { name, kind, attrs: a, error, metric: Some((inst, m)), peer: vec![] }
}

/// The HTTP/1 reason phrase as the status message of an error span, but only
/// when it says more than the code. Semconv's HTTP span status rules say
/// "don't set the span status description if the reason can be inferred from
/// `http.response.status_code`", and Beyla sets no HTTP status message at all;
/// yet a phrase of the server's own ("503 Backend pool exhausted", nginx's
/// "494 Request Header Or Cookie Too Large") cannot be inferred, and it is the
/// first thing someone opening the failed span in Jaeger looks for. Standard
/// phrases, including the older RFC 2616 wordings servers still send, are
/// dropped; there is no reason attribute because semconv defines none.
fn informative_reason(code: u16, reason: Option<&str>) -> Option<String> {
    let reason = reason?.trim();
    let norm = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>();
    let said = norm(reason);
    if said.is_empty() {
        return None;
    }
    let canonical = http::StatusCode::from_u16(code).ok().and_then(|c| c.canonical_reason());
    let legacy: &[&str] = match code {
        413 => &["Request Entity Too Large"],
        414 => &["Request-URI Too Long", "Request-URI Too Large"],
        416 => &["Requested Range Not Satisfiable"],
        422 => &["Unprocessable Content"],
        500 => &["Internal Error", "Server Error"],
        504 => &["Gateway Time-out"],
        505 => &["HTTP Version not supported"],
        _ => &[],
    };
    let standard = canonical.into_iter().chain(legacy.iter().copied()).any(|c| norm(c) == said);
    (!standard).then(|| reason.to_string())
}

impl SpanMapping for HttpDetail {
    /// gRPC calls are HTTP/2 exchanges with a gRPC part: they get gRPC's mapping.
    fn span_parts(&self, ex: &Exchange, kind: Kind, cx: &mut SpanCx) -> SpanParts {
        if self.grpc.is_some() {
            return crate::protocol::http2::grpc::semconv::span_parts(ex, self, kind, cx.opts);
        }
        cx.reduced = cx.metric_only;
        span_parts(ex, self, kind, cx.routes, cx.opts, cx.metric_only)
    }
    fn trace_headers(&self) -> &[(String, String)] {
        &self.trace_headers
    }
    fn status_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::mask_query;
    use proptest::prelude::*;

    proptest! {
        /// Reduced (`metric_only`), the mapping gives the whole span's metric
        /// and error status.
        #[test]
        fn reduced_parts_keep_metric_and_status(
            method in proptest::option::of(prop_oneof![Just("GET"), Just("POST"), Just("BREW")]),
            path in proptest::option::of("(/[a-z0-9]{1,4}){0,3}"),
            status in proptest::option::of(100u16..600),
            version in prop_oneof![Just(""), Just("1.1"), Just("2")],
            host in proptest::option::of("[a-z.]{0,6}(:[0-9]{1,5})?"),
            outcome in 0..3u8,
            server in any::<bool>(),
            address in any::<bool>(),
        ) {
            use crate::otel::attr::Str;
            use crate::otel::span::{Kind, NamingOptions};
            use crate::protocol::exchange::{Detail, Outcome};
            let mut ex = crate::telemetry::samples::http_exchange(crate::capture::Direction::Egress, "GET", "/", 200, 0);
            let h = super::HttpDetail {
                method: method.map(Str::lit),
                path: path.as_deref().map(Str::copy),
                status,
                version: Str::lit(version),
                host: host.as_deref().map(Str::copy),
                ..Default::default()
            };
            ex.detail = Detail::Http(Box::new(h.clone()));
            ex.outcome = [Outcome::Complete, Outcome::Timeout, Outcome::Reset][usize::from(outcome)];
            let kind = if server { Kind::Server } else { Kind::Client };
            let opts = NamingOptions { metrics_server_address: address, ..NamingOptions::default() };
            let mut routes = crate::otel::route::RouteTemplater::new(8, 1000, 8);
            let whole = super::span_parts(&ex, &h, kind, &mut routes, &opts, false);
            let reduced = super::span_parts(&ex, &h, kind, &mut routes, &opts, true);
            prop_assert_eq!(format!("{:?}", whole.metric), format!("{:?}", reduced.metric));
            prop_assert_eq!(whole.error.is_some(), reduced.error.is_some());
        }

        /// The same text as the `format!`-and-`join` form it replaced.
        #[test]
        fn known_method_is_the_table_search(m in "[A-Z]{0,8}|GET|POST|PUT|QUERY|CONNECT") {
            prop_assert_eq!(super::known_method(&m), super::HTTP_METHODS.iter().find(|k| **k == m).copied());
        }

        #[test]
        fn mask_query_as_before(q in "[a-z=&?é]{0,30}") {
            let before = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !v.is_empty() => format!("{k}=?"),
                    _ => kv.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            prop_assert_eq!(mask_query(&q), before);
        }
    }
}
