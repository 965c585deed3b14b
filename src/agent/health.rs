//! Liveness and readiness over HTTP for the agent (Kubernetes probes).
//!
//! `/healthz` answers 200 while the main loop keeps ticking: a capture loop that
//! stalls (e.g. a wedged ring-buffer reader) makes it fail, so the kubelet
//! restarts the agent instead of leaving a node silently unobserved.
//! `/readyz` answers 200 once capture is attached (and Kubernetes metadata synced).
use axum::{extract::State, http::StatusCode, routing::get, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared state the main loop updates and the probe handlers read.
#[derive(Debug, Default)]
pub struct AgentHealth {
    ready: AtomicBool,
    last_tick_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl AgentHealth {
    pub fn new() -> Arc<Self> {
        let h = Arc::new(Self::default());
        h.tick();
        h
    }
    /// Called by the main loop on every iteration.
    pub fn tick(&self) {
        self.last_tick_ms.store(now_ms(), Ordering::Relaxed);
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// Alive when the loop ticked within `stall`.
    pub fn is_alive(&self, stall: Duration) -> bool {
        now_ms().saturating_sub(self.last_tick_ms.load(Ordering::Relaxed)) <= stall.as_millis() as u64
    }
}

const STALL: Duration = Duration::from_secs(30);

async fn healthz(State(h): State<Arc<AgentHealth>>) -> (StatusCode, &'static str) {
    if h.is_alive(STALL) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "main loop stalled\n")
    }
}

async fn readyz(State(h): State<Arc<AgentHealth>>) -> (StatusCode, &'static str) {
    if h.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub fn router(h: Arc<AgentHealth>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(h)
}

/// Bind `addr` and serve the probes on the current runtime. Binding errors are
/// returned so a port clash fails start-up instead of leaving probes dead.
pub async fn serve(addr: SocketAddr, h: Arc<AgentHealth>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("CNFLOW_HEALTH_ADDR: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(h)).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_status(addr: SocketAddr, path: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn probes_follow_state() {
        let h = AgentHealth::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), h.clone()).await.unwrap();
        assert_eq!(get_status(addr, "/healthz").await, 200);
        assert_eq!(get_status(addr, "/readyz").await, 503);
        h.set_ready(true);
        assert_eq!(get_status(addr, "/readyz").await, 200);
        h.last_tick_ms.store(0, Ordering::Relaxed);
        assert_eq!(get_status(addr, "/healthz").await, 503);
    }
}
