//! The [`Enricher`] of Kubernetes mode: lookups in the shared index.
use super::index::Index;
use crate::workload::{Enricher, Identity};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

/// State shared by the watchers (writers), the attach manager and the enricher (readers).
pub struct State {
    pub index: RwLock<Index>,
    /// Host-side veths of pods on this node (packet direction is reversed there).
    pub pod_veths: Arc<RwLock<HashSet<u32>>>,
    /// Bumped on every pod change so the attach manager reconciles.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl State {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            index: RwLock::new(Index::new()),
            pod_veths: Arc::default(),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }
}

pub struct K8sEnricher {
    pub state: Arc<State>,
}

impl Enricher for K8sEnricher {
    fn identity(&self, ip: IpAddr) -> Option<Arc<Identity>> {
        self.state.index.read().lookup(ip)
    }

    fn reversed_iface(&self, ifindex: u32) -> bool {
        self.state.pod_veths.read().contains(&ifindex)
    }

    fn process_identity(&self, pid: u32) -> Option<Arc<Identity>> {
        let info = crate::process::get(pid)?;
        let c = &info.cgroup;
        self.state.index.read().process(c.pod_uid.as_deref(), c.container_id.as_deref())
    }

    fn address_name(&self, ip: IpAddr) -> Option<String> {
        let svc = self.state.index.read().service(ip)?;
        Some(format!("{}.{}", svc.get("k8s.service.name")?, svc.get("k8s.namespace.name")?))
    }
}
