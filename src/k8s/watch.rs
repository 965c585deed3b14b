//! Watchers feeding the index: pods on this node, nodes, Services. Each uses
//! `kube::runtime::watcher` with the default backoff, so a failed watch is
//! retried and followed by a re-list; meanwhile the index keeps answering
//! with what it last knew. The `*Sync` types take `watcher::Event`s and can
//! be fed directly (tests do).
use super::config::K8sConfig;
use super::identity::{
    container_identity, container_ids, node_identity, node_identity_of, pod_identity, service_identity,
};
use super::index::PodEntry;
use super::owners::OwnerResolver;
use super::workload_lookup::State;
use crate::stats::{counter, Counter};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

static WATCH_ERRORS_PODS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.k8s.watch_errors", &[("resource", "pods")]));
static WATCH_ERRORS_NODES: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.k8s.watch_errors", &[("resource", "nodes")]));
static WATCH_ERRORS_SERVICES: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.k8s.watch_errors", &[("resource", "services")]));
static PODS: LazyLock<Counter> = LazyLock::new(|| crate::stats::gauge("cnflow.k8s.pods", &[]));

fn parse_ips<'a>(v: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = v.filter_map(|s| s.trim().parse().ok()).collect();
    out.dedup();
    out
}

/// Addresses of a pod (status.podIPs, else status.podIP).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(st) = pod.status.as_ref() else { return vec![] };
    match st.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => parse_ips(ips.iter().map(|p| p.ip.as_str())),
        _ => parse_ips(st.pod_ip.as_deref().into_iter()),
    }
}

/// Applies pod events to the index.
pub struct PodSync {
    pub state: Arc<State>,
    pub resolver: Arc<OwnerResolver>,
    pub cfg: K8sConfig,
    buffer: Option<Vec<PodEntry>>,
    /// Pods whose owners were only guessed, kept to resolve them again.
    incomplete: HashMap<String, Pod>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl PodSync {
    pub fn new(state: Arc<State>, resolver: Arc<OwnerResolver>, cfg: K8sConfig) -> Self {
        Self {
            state,
            resolver,
            cfg,
            buffer: None,
            incomplete: HashMap::new(),
            synced: tokio::sync::watch::channel(false).0,
        }
    }

    /// Becomes true after the first complete list.
    pub fn synced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Index entry for `pod`, or None when it is filtered out (namespace) or has no uid.
    pub async fn entry(&mut self, pod: &Pod) -> Option<PodEntry> {
        let uid = pod.metadata.uid.clone()?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        if !self.cfg.namespace_allowed(&namespace) {
            return None;
        }
        let spec = pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        let active = !matches!(phase, "Succeeded" | "Failed");
        let node = spec.and_then(|s| s.node_name.as_deref()).or(self.cfg.node());
        // Owners for every pod: a host-network pod's addresses are the node's,
        // but its processes (TLS uprobes, found by pid) are still the pod's.
        let (owners, owners_complete) = self.resolver.resolve(pod).await;
        let process_identity = Arc::new(pod_identity(pod, &owners, self.cfg.node()));
        let identity = if host_network {
            Arc::new(node_identity(node.unwrap_or_default(), None))
        } else {
            process_identity.clone()
        };
        let containers = container_ids(pod)
            .into_iter()
            .map(|(id, name)| (id, Arc::new(container_identity(&process_identity, &name))))
            .collect();
        if owners_complete {
            self.incomplete.remove(&uid);
        } else {
            self.incomplete.insert(uid.clone(), pod.clone());
        }
        Some(PodEntry {
            uid,
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
            ips: pod_ips(pod),
            host_network,
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0),
            active,
            identity,
            owners_complete,
            process_identity,
            containers,
        })
    }

    pub async fn handle(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.buffer = Some(Vec::new()),
            Event::InitApply(pod) => {
                if let Some(e) = self.entry(&pod).await {
                    self.buffer.get_or_insert_with(Vec::new).push(e);
                }
            }
            Event::InitDone => {
                let entries = self.buffer.take().unwrap_or_default();
                let removed = {
                    let mut ix = self.state.index.write();
                    let removed = ix.replace_pods(entries);
                    PODS.set(ix.pod_count() as u64);
                    removed
                };
                for r in &removed {
                    self.incomplete.remove(&r.uid);
                }
                self.state.bump();
                self.synced.send_replace(true);
            }
            Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match self.entry(&pod).await {
                    Some(e) => self.state.index.write().upsert(e),
                    None => {
                        self.state.index.write().remove(&uid);
                    }
                }
                PODS.set(self.state.index.read().pod_count() as u64);
                self.state.bump();
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.incomplete.remove(uid);
                    self.state.index.write().remove(uid);
                }
                PODS.set(self.state.index.read().pod_count() as u64);
                self.state.bump();
            }
        }
    }

    /// Resolve again the owners of pods that had to fall back to guesses.
    pub async fn resync(&mut self) {
        let pods: Vec<Pod> = self.incomplete.values().cloned().collect();
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if self.state.index.read().pod(&uid).is_none() {
                self.incomplete.remove(&uid);
                continue;
            }
            if let Some(e) = self.entry(&pod).await {
                if e.owners_complete {
                    self.state.index.write().upsert(e);
                }
            }
        }
    }

    /// Pods whose owners are still unresolved.
    pub fn incomplete(&self) -> usize {
        self.incomplete.len()
    }
}

/// Addresses of a node (InternalIP / ExternalIP).
pub fn node_ips(node: &Node) -> Vec<IpAddr> {
    let addrs = node.status.as_ref().and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    parse_ips(addrs.iter().filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP").map(|a| a.address.as_str()))
}

type NodeItem = (String, Vec<IpAddr>, Arc<crate::workload::Identity>);

/// Applies node events to the index.
pub struct NodeSync {
    pub state: Arc<State>,
    buffer: Option<Vec<NodeItem>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl NodeSync {
    pub fn new(state: Arc<State>) -> Self {
        Self { state, buffer: None, synced: tokio::sync::watch::channel(false).0 }
    }

    pub fn synced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.synced.subscribe()
    }

    pub fn handle(&mut self, ev: Event<Node>) {
        let item = |n: &Node| (n.metadata.name.clone().unwrap_or_default(), node_ips(n), Arc::new(node_identity_of(n)));
        match ev {
            Event::Init => self.buffer = Some(Vec::new()),
            Event::InitApply(n) => self.buffer.get_or_insert_with(Vec::new).push(item(&n)),
            Event::InitDone => {
                self.state.index.write().replace_nodes(self.buffer.take().unwrap_or_default());
                self.synced.send_replace(true);
            }
            Event::Apply(n) => {
                let (name, ips, id) = item(&n);
                self.state.index.write().upsert_node(&name, ips, id);
            }
            Event::Delete(n) => self.state.index.write().remove_node(n.metadata.name.as_deref().unwrap_or_default()),
        }
    }
}

/// ClusterIPs of a Service (headless Services have none).
pub fn service_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else { return vec![] };
    match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => parse_ips(ips.iter().map(String::as_str)),
        _ => parse_ips(spec.cluster_ip.as_deref().into_iter()),
    }
}

type SvcItem = (String, String, Vec<IpAddr>, Arc<crate::workload::Identity>);

/// Applies Service events to the index.
pub struct ServiceSync {
    pub state: Arc<State>,
    buffer: Option<Vec<SvcItem>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl ServiceSync {
    pub fn new(state: Arc<State>) -> Self {
        Self { state, buffer: None, synced: tokio::sync::watch::channel(false).0 }
    }

    pub fn synced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.synced.subscribe()
    }

    pub fn handle(&mut self, ev: Event<Service>) {
        let item = |s: &Service| -> SvcItem {
            let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = s.metadata.name.clone().unwrap_or_default();
            let id = Arc::new(service_identity(&ns, &name));
            (ns, name, service_ips(s), id)
        };
        match ev {
            Event::Init => self.buffer = Some(Vec::new()),
            Event::InitApply(s) => self.buffer.get_or_insert_with(Vec::new).push(item(&s)),
            Event::InitDone => {
                self.state.index.write().replace_services(self.buffer.take().unwrap_or_default());
                self.synced.send_replace(true);
            }
            Event::Apply(s) => {
                let (ns, name, ips, id) = item(&s);
                self.state.index.write().upsert_service(&ns, &name, ips, id);
            }
            Event::Delete(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or("default");
                self.state.index.write().remove_service(ns, s.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }
}

/// Watches the API server currently refuses with 403 Forbidden (RBAC):
/// the agent's readiness is false while any is.
static FORBIDDEN_NOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Number of watches refused with 403 right now.
pub fn forbidden_watches() -> usize {
    FORBIDDEN_NOW.load(std::sync::atomic::Ordering::Relaxed)
}

/// The HTTP status of a watch error, when the API server gave one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// Logs the first error of an outage and the recovery, not every retry.
struct Outage {
    resource: &'static str,
    errors: &'static Counter,
    down: bool,
    forbidden: bool,
}

impl Outage {
    fn new(resource: &'static str, errors: &'static Counter) -> Self {
        Outage { resource, errors, down: false, forbidden: false }
    }

    fn error(&mut self, e: &watcher::Error) {
        self.errors.inc();
        if status_code(e) == Some(403) {
            counter("cnflow.k8s.watch_forbidden", &[("resource", self.resource)]).inc();
            if !self.forbidden {
                self.forbidden = true;
                FORBIDDEN_NOW.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let hint = if self.resource == "services" {
                    " (the chart's rbac.services=false sets CNFLOW_K8S_SERVICES=false)"
                } else {
                    ""
                };
                tracing::error!(
                    resource = self.resource,
                    error = %e,
                    "Kubernetes API server forbids listing/watching {}: the agent's ClusterRole lacks list/watch on it; grant it or stop watching it{hint}. Not ready until it is allowed; retrying with backoff",
                    self.resource
                );
            }
            self.down = true;
            return;
        }
        if !self.down {
            self.down = true;
            tracing::warn!(resource = self.resource, error = %e, "Kubernetes watch failed; retrying with backoff, enrichment keeps the last known state");
        } else {
            tracing::debug!(resource = self.resource, error = %e, "Kubernetes watch still failing");
        }
    }

    fn ok(&mut self) {
        if self.forbidden {
            self.forbidden = false;
            FORBIDDEN_NOW.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if self.down {
            self.down = false;
            tracing::info!(resource = self.resource, "Kubernetes watch recovered");
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.forbidden {
            FORBIDDEN_NOW.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The pod watch: pods on `node` (field selector), optional label selector.
pub fn pod_stream(
    client: kube::Client,
    cfg: &K8sConfig,
) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static {
    let inc = cfg.include_namespaces();
    let api: kube::Api<Pod> = match inc.as_slice() {
        [one] => kube::Api::namespaced(client, one),
        _ => kube::Api::all(client),
    };
    let mut wc = watcher::Config::default();
    if let Some(node) = cfg.node() {
        wc = wc.fields(&format!("spec.nodeName={node}"));
    }
    if let Some(sel) = cfg.k8s_label_selector.as_deref().filter(|s| !s.trim().is_empty()) {
        wc = wc.labels(sel);
    }
    watcher::watcher(api, wc).default_backoff()
}

/// What the one watch loop needs from each `*Sync`: where events go, what
/// to re-check on a timer, and which counter an outage bumps.
pub trait WatchSync<K>: Send {
    const RESOURCE: &'static str;
    fn errors() -> &'static Counter;
    fn apply(&mut self, ev: Event<K>) -> impl std::future::Future<Output = ()> + Send;
    fn resync(&mut self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

impl WatchSync<Pod> for PodSync {
    const RESOURCE: &'static str = "pods";
    fn errors() -> &'static Counter {
        &WATCH_ERRORS_PODS
    }
    fn apply(&mut self, ev: Event<Pod>) -> impl std::future::Future<Output = ()> + Send {
        self.handle(ev)
    }
    fn resync(&mut self) -> impl std::future::Future<Output = ()> + Send {
        PodSync::resync(self)
    }
}

impl WatchSync<Node> for NodeSync {
    const RESOURCE: &'static str = "nodes";
    fn errors() -> &'static Counter {
        &WATCH_ERRORS_NODES
    }
    async fn apply(&mut self, ev: Event<Node>) {
        self.handle(ev)
    }
}

impl WatchSync<Service> for ServiceSync {
    const RESOURCE: &'static str = "services";
    fn errors() -> &'static Counter {
        &WATCH_ERRORS_SERVICES
    }
    async fn apply(&mut self, ev: Event<Service>) {
        self.handle(ev)
    }
}

/// Drive a watch stream into `sync` until cancelled or the stream ends;
/// with `resync`, `sync.resync()` runs on that period (pods re-resolve
/// guessed owners).
pub async fn run<K, S: WatchSync<K>>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    mut sync: S,
    resync: Option<Duration>,
    cancel: CancellationToken,
) {
    let mut stream = std::pin::pin!(stream);
    let mut tick = resync.map(|r| tokio::time::interval_at(tokio::time::Instant::now() + r, r));
    let mut outage = Outage::new(S::RESOURCE, S::errors());
    // A full list (start, after a watch expired or failed) as one span of
    // cnflow's own traces, from Init to InitDone.
    let mut relist: Option<(tracing::Span, u64)> = None;
    loop {
        let tick_due = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick_due => sync.resync().await,
            ev = stream.next() => match ev {
                Some(Ok(ev)) => {
                    outage.ok();
                    match &ev {
                        Event::Init => {
                            let span = tracing::info_span!("k8s.relist", k8s.resource = S::RESOURCE, cnflow.k8s.items = tracing::field::Empty);
                            relist = Some((span, 0));
                        }
                        Event::InitApply(_) => {
                            if let Some((_, n)) = relist.as_mut() {
                                *n += 1;
                            }
                        }
                        _ => {}
                    }
                    let done = matches!(ev, Event::InitDone);
                    sync.apply(ev).await;
                    if done {
                        if let Some((span, n)) = relist.take() {
                            span.record("cnflow.k8s.items", n);
                        }
                    }
                }
                Some(Err(e)) => outage.error(&e),
                None => break,
            }
        }
    }
}

/// The node watch: only this node unless every node is asked for.
pub fn node_stream(
    client: kube::Client,
    cfg: &K8sConfig,
) -> impl Stream<Item = Result<Event<Node>, watcher::Error>> + Send + 'static {
    let mut wc = watcher::Config::default();
    if let (false, Some(node)) = (cfg.k8s_all_nodes, cfg.node()) {
        wc = wc.fields(&format!("metadata.name={node}"));
    }
    watcher::watcher(kube::Api::<Node>::all(client), wc).default_backoff()
}

pub fn service_stream(
    client: kube::Client,
) -> impl Stream<Item = Result<Event<Service>, watcher::Error>> + Send + 'static {
    watcher::watcher(kube::Api::<Service>::all(client), watcher::Config::default()).default_backoff()
}
