//! gRPC spans: `{service}/{method}` names, the `rpc.*` attributes and the
//! `rpc.{server,client}.call.duration` histogram. Any non-OK status is an
//! error on CLIENT spans; on SERVER spans only the codes semconv counts as
//! server faults.
use crate::otel::attr::{Attrs, Put};
use crate::otel::semconv::Instrument;
use crate::otel::span::{Kind, NamingOptions, SpanParts};
use crate::protocol::exchange::Exchange;
use crate::protocol::http::HttpDetail;
use crate::protocol::span_common::{endpoint_attrs, outcome_error, push_opt};

pub fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// Server-side gRPC codes that semconv treats as errors of the server.
fn grpc_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

pub fn span_parts(ex: &Exchange, h: &HttpDetail, kind: Kind, opts: &NamingOptions) -> SpanParts {
    let g = h.grpc.as_ref().expect("grpc detail");
    let mut a: Attrs = vec![("rpc.system.name", "grpc".into())];
    // Since semconv 1.39 rpc.method is fully qualified and absorbs rpc.service.
    if !g.method.is_empty() {
        let full = if g.service.is_empty() { g.method.clone() } else { format!("{}/{}", g.service, g.method) };
        a.put("rpc.method", full);
    }
    if let Some(c) = g.status_code {
        a.put("rpc.response.status_code", grpc_code_name(c));
    }
    let mut m = a.clone();
    a.put("network.protocol.name", "http");
    a.put("network.protocol.version", "2");
    push_opt(&mut a, "user_agent.original", h.user_agent.clone());
    a.put("cnflow.grpc.request_messages", g.request_messages as i64);
    a.put("cnflow.grpc.response_messages", g.response_messages as i64);
    endpoint_attrs(ex, kind, h.host.as_deref(), &mut a);
    if kind == Kind::Client && opts.metrics_server_address {
        m.extend(a.iter().filter(|(k, _)| matches!(*k, "server.address" | "server.port")).cloned());
    }
    let mut error = outcome_error(ex, &mut a);
    if error.is_none() {
        match (g.status_code, h.status) {
            (Some(c), _) if c != 0 && (kind == Kind::Client || grpc_server_error(c)) => {
                a.put("error.type", grpc_code_name(c));
                error = Some(g.message.clone().unwrap_or_default());
            }
            (None, Some(s)) if s != 200 => {
                a.put("error.type", s.to_string());
                error = Some(String::new());
            }
            _ => {}
        }
    }
    let name = match (g.service.is_empty(), g.method.is_empty()) {
        (false, false) => format!("{}/{}", g.service, g.method),
        (false, true) => g.service.clone(),
        _ => "gRPC".to_string(),
    };
    let inst = if kind == Kind::Server { Instrument::RpcServer } else { Instrument::RpcClient };
    SpanParts { name: name.into(), kind, attrs: a, error, metric: Some((inst, m)), peer: vec![] }
}
