//! /healthz (liveness: the process serves requests) and /readyz (readiness:
//! receivers are up and the gateway is not shutting down), on the port the
//! Helm chart probes (13133 by default).
use super::pipeline::ForwardingPipeline;
use crate::export::Signal;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct GatewayHealth {
    pub ready: Arc<AtomicBool>,
    pub pipeline: Arc<ForwardingPipeline>,
}

async fn readyz(State(h): State<GatewayHealth>) -> (StatusCode, String) {
    let backlog = |s| h.pipeline.backlog(s);
    let body = serde_json::json!({
        "ready": h.ready.load(Ordering::Relaxed),
        "backlog": {"traces": backlog(Signal::Traces), "metrics": backlog(Signal::Metrics), "logs": backlog(Signal::Logs)},
    })
    .to_string();
    let code = if h.ready.load(Ordering::Relaxed) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, body)
}

pub fn router(h: GatewayHealth) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(h)
}
