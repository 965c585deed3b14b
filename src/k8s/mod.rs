//! Kubernetes: who is behind an IP address, and which interfaces to capture.
//!
//! In a cluster, kube-rs watchers keep an index of the pods on this node
//! (field selector `spec.nodeName=$CNFLOW_NODE_NAME`), this node (or every
//! node with `CNFLOW_K8S_ALL_NODES`) and, optionally, Services. Owners are
//! resolved by single GETs (ReplicaSet → Deployment, Job → CronJob), cached.
//! Watch errors are retried with backoff and followed by a re-list; until then
//! the index keeps answering with the last known state. As pods start, their
//! host-side veth is found by visiting network namespaces (see [`veth`]) and
//! handed to an [`Attacher`]; it is detached when the pod goes.
//! Outside a cluster (no service-account token, no KUBECONFIG, or
//! `CNFLOW_K8S=off`) [`start`] returns a standalone handle.
//!
//! ```no_run
//! # async fn f(attacher: std::sync::Arc<dyn cnflow::k8s::Attacher>) -> anyhow::Result<()> {
//! let cfg = cnflow::k8s::K8sConfig::from_vars(std::env::vars())?;
//! let handle = cnflow::k8s::start(&cfg, /* capture_host */ false, Some(attacher)).await?;
//! handle.wait_synced(std::time::Duration::from_secs(10)).await; // false on timeout: keep going
//! let enricher = handle.enricher.clone(); // Arc<dyn Enricher>: identity(ip), reversed_iface(ifindex), peer_attributes(ip)
//! // ... run the pipeline; handle.host_resource describes traffic that is not a pod's ...
//! handle.shutdown().await; // stops watchers, detaches every interface it attached
//! # Ok(()) }
//! ```
pub mod attach;
pub mod config;
pub mod identity;
pub mod index;
pub mod netlink;
pub mod owners;
pub mod standalone;
pub mod veth;
pub mod watch;
pub mod workload_lookup;

pub use attach::{AttachManager, Attacher};
pub use config::K8sConfig;
pub use index::{Index, PodEntry};
pub use workload_lookup::{K8sEnricher, State};

use crate::workload::{Enricher, Identity, NoEnrich};
use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Standalone,
    Kubernetes,
}

/// A running Kubernetes integration (or its standalone stand-in).
pub struct K8sHandle {
    pub mode: RunMode,
    /// Identities of pods, nodes and Services by IP; [`NoEnrich`] in standalone mode.
    pub enricher: Arc<dyn Enricher>,
    /// Resource for traffic that belongs to no pod: the node (host.name, k8s.node.name) or, standalone, the host.
    pub host_resource: Identity,
    state: Option<Arc<State>>,
    synced: Vec<tokio::sync::watch::Receiver<bool>>,
    attach: Option<Arc<Mutex<AttachManager>>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl K8sHandle {
    pub fn standalone() -> Self {
        Self {
            mode: RunMode::Standalone,
            enricher: Arc::new(NoEnrich),
            host_resource: standalone::host_resource(),
            state: None,
            synced: vec![],
            attach: None,
            cancel: CancellationToken::new(),
            tasks: vec![],
        }
    }

    /// Wait until every watch has completed its first list. False on timeout
    /// (e.g. API server unreachable): the agent should carry on regardless.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let all = futures::future::join_all(
            self.synced.iter().cloned().map(|mut rx| async move { rx.wait_for(|v| *v).await.is_ok() }),
        );
        matches!(tokio::time::timeout(timeout, all).await, Ok(v) if v.iter().all(|x| *x))
    }

    /// A future that completes once every watch has completed its first list
    /// (never, if a watch ends before that).
    pub fn synced_waiter(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rxs = self.synced.clone();
        async move {
            for mut rx in rxs {
                if rx.wait_for(|v| *v).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// The shared index (None in standalone mode).
    pub fn state(&self) -> Option<&Arc<State>> {
        self.state.as_ref()
    }

    /// Interfaces currently attached by this integration.
    pub fn attached(&self) -> Vec<veth::HostVeth> {
        self.attach.as_ref().map(|a| a.lock().attached()).unwrap_or_default()
    }

    /// Stop watching and detach every interface attached so far.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(a) = self.attach {
            let _ = tokio::task::spawn_blocking(move || a.lock().detach_all()).await;
        }
    }
}

/// Start the integration as configured: standalone when CNFLOW_K8S=off or (auto)
/// when no cluster credentials exist (logged once), otherwise connect with the
/// inferred config (in-cluster or KUBECONFIG) and start watching.
pub async fn start(cfg: &K8sConfig, capture_host: bool, attacher: Option<Arc<dyn Attacher>>) -> Result<K8sHandle> {
    cfg.validate()?;
    let creds = standalone::cluster_credentials(
        |k| cfg.credential_vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        Path::new(standalone::TOKEN_PATH),
    );
    match cfg.mode()? {
        config::Mode::Off => {
            tracing::info!("Kubernetes enrichment is off (CNFLOW_K8S=off): host resource attributes only");
            return Ok(K8sHandle::standalone());
        }
        config::Mode::Auto if !creds => {
            tracing::info!(
                "Kubernetes enrichment is off: no service-account token and no KUBECONFIG; running standalone with host resource attributes"
            );
            return Ok(K8sHandle::standalone());
        }
        _ => {}
    }
    let client = kube::Client::try_default().await.context("CNFLOW_K8S: cannot build a Kubernetes client")?;
    start_with_client(cfg, client, capture_host, attacher).await
}

/// Start watching through `client` (tests pass a scripted one).
pub async fn start_with_client(
    cfg: &K8sConfig,
    client: kube::Client,
    capture_host: bool,
    attacher: Option<Arc<dyn Attacher>>,
) -> Result<K8sHandle> {
    cfg.validate()?;
    let Some(node) = cfg.node().map(String::from) else {
        bail!("CNFLOW_NODE_NAME must be set in Kubernetes mode (the Helm chart sets it from the downward API)");
    };
    let state = State::new();
    let cancel = CancellationToken::new();
    let resync = Duration::from_secs(cfg.k8s_resync_secs);
    let lookup = Arc::new(owners::KubeOwners::new(client.clone()));
    let resolver = Arc::new(owners::OwnerResolver::new(lookup, cfg.k8s_owner_cache_size, resync));
    let mut tasks = Vec::new();
    let mut synced = Vec::new();

    let pods = watch::PodSync::new(state.clone(), resolver, cfg.clone());
    synced.push(pods.synced());
    tasks.push(tokio::spawn(watch::run(watch::pod_stream(client.clone(), cfg), pods, Some(resync), cancel.clone())));

    let nodes = watch::NodeSync::new(state.clone());
    synced.push(nodes.synced());
    tasks.push(tokio::spawn(watch::run(watch::node_stream(client.clone(), cfg), nodes, None, cancel.clone())));

    if cfg.k8s_services {
        let svcs = watch::ServiceSync::new(state.clone());
        synced.push(svcs.synced());
        tasks.push(tokio::spawn(watch::run(watch::service_stream(client.clone()), svcs, None, cancel.clone())));
    }

    let sources = veth::NetnsSources {
        proc_root: PathBuf::from(&cfg.k8s_proc_root),
        pinned_dirs: cfg.netns_dirs().into_iter().map(PathBuf::from).collect(),
    };
    let mgr = Arc::new(Mutex::new(AttachManager::new(attacher, sources, capture_host, state.pod_veths.clone())));
    tasks.push(tokio::spawn(run_attach(mgr.clone(), state.clone(), resync, cancel.clone())));

    tracing::info!(node = %node, services = cfg.k8s_services, "Kubernetes enrichment on");
    Ok(K8sHandle {
        mode: RunMode::Kubernetes,
        enricher: Arc::new(K8sEnricher { state: state.clone() }),
        host_resource: identity::node_identity(&node, None),
        state: Some(state),
        synced,
        attach: Some(mgr),
        cancel,
        tasks,
    })
}

/// Reconcile attachments on every index change, retry pods whose veth is not
/// there yet, and re-scan everything each resync period.
async fn run_attach(mgr: Arc<Mutex<AttachManager>>, state: Arc<State>, resync: Duration, cancel: CancellationToken) {
    let mut changed = state.changed.subscribe();
    let mut full_at = tokio::time::Instant::now() + resync;
    let mut full = true;
    loop {
        let (m, s) = (mgr.clone(), state.clone());
        let _ = tokio::task::spawn_blocking(move || m.lock().reconcile(&s.index, full)).await;
        if full {
            full_at = tokio::time::Instant::now() + resync;
        }
        let retry = mgr.lock().retry_delay();
        let wake = retry.map(|d| tokio::time::Instant::now() + d).unwrap_or(full_at).min(full_at);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = changed.changed() => {
                if r.is_err() { break; }
                // Batch bursts (a re-list, a rollout) into one reconcile.
                tokio::time::sleep(Duration::from_millis(50)).await;
                changed.mark_unchanged();
                full = false;
            }
            _ = tokio::time::sleep_until(wake) => full = tokio::time::Instant::now() >= full_at,
        }
    }
}
