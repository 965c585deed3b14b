//! Liveness and readiness over HTTP for the agent (Kubernetes probes).
//!
//! `/healthz` answers 200 while the main loop keeps ticking: a capture loop that
//! stalls (e.g. a wedged ring-buffer reader) makes it fail, so the kubelet
//! restarts the agent instead of leaving a node silently unobserved.
//! `/readyz` answers 200 once the agent runs, at least one interface is
//! attached, Kubernetes metadata has synced (when enrichment is on) and no
//! watch is refused by RBAC; otherwise 503 with the reason in the body.
use axum::{extract::State, http::StatusCode, routing::get, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared state the main loop updates and the probe handlers read.
#[derive(Debug)]
pub struct AgentHealth {
    ready: AtomicBool,
    /// True unless Kubernetes enrichment is on and its first lists are not done.
    k8s_synced: AtomicBool,
    last_tick_ms: AtomicU64,
    /// Interfaces attached now (the `cnflow.capture.interfaces` gauge).
    interfaces: fn() -> u64,
    /// Kubernetes watches refused with 403 now.
    forbidden: fn() -> usize,
}

impl Default for AgentHealth {
    fn default() -> Self {
        AgentHealth {
            ready: AtomicBool::new(false),
            k8s_synced: AtomicBool::new(true),
            last_tick_ms: AtomicU64::new(0),
            interfaces: crate::capture::ebpf::attached_interfaces,
            forbidden: crate::k8s::watch::forbidden_watches,
        }
    }
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
    pub fn set_k8s_synced(&self, synced: bool) {
        self.k8s_synced.store(synced, Ordering::Relaxed);
    }
    /// Ok when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("not ready: starting or stopping\n");
        }
        if (self.interfaces)() == 0 {
            return Err("not ready: no interface attached\n");
        }
        if !self.k8s_synced.load(Ordering::Relaxed) {
            return Err("not ready: Kubernetes metadata not synced yet\n");
        }
        if (self.forbidden)() > 0 {
            return Err("not ready: a Kubernetes watch is forbidden (RBAC); see the agent log\n");
        }
        Ok(())
    }
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
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
    match h.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
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

    static IFACES: AtomicU64 = AtomicU64::new(0);
    static FORBIDDEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[tokio::test]
    async fn probes_follow_state() {
        let h = Arc::new(AgentHealth {
            interfaces: || IFACES.load(Ordering::Relaxed),
            forbidden: || FORBIDDEN.load(Ordering::Relaxed),
            ..AgentHealth::default()
        });
        h.tick();
        let addr = serve("127.0.0.1:0".parse().unwrap(), h.clone()).await.unwrap();
        assert_eq!(get_status(addr, "/healthz").await, 200);
        assert_eq!(get_status(addr, "/readyz").await, 503);
        h.set_ready(true);
        // Running, but nothing attached yet.
        assert_eq!(h.readiness(), Err("not ready: no interface attached\n"));
        assert_eq!(get_status(addr, "/readyz").await, 503);
        IFACES.store(2, Ordering::Relaxed);
        assert_eq!(get_status(addr, "/readyz").await, 200);
        h.set_k8s_synced(false);
        assert_eq!(get_status(addr, "/readyz").await, 503);
        h.set_k8s_synced(true);
        FORBIDDEN.store(1, Ordering::Relaxed);
        assert!(h.readiness().unwrap_err().contains("forbidden"));
        FORBIDDEN.store(0, Ordering::Relaxed);
        assert_eq!(get_status(addr, "/readyz").await, 200);
        h.last_tick_ms.store(0, Ordering::Relaxed);
        assert_eq!(get_status(addr, "/healthz").await, 503);
    }
}
