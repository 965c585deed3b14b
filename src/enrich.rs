//! Who is behind an IP address. Telemetry asks an [`Enricher`] for the
//! resource of the local endpoint and the identity of the peer; the
//! Kubernetes module implements it, standalone mode uses [`NoEnrich`].
use std::net::IpAddr;
use std::sync::Arc;

/// Resource attributes of one workload instance (e.g. k8s.pod.name, service.name), ordered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    pub attributes: Vec<(String, String)>,
}

impl Identity {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub trait Enricher: Send + Sync {
    /// Identity of the workload owning `ip`, if known.
    fn identity(&self, ip: IpAddr) -> Option<Arc<Identity>>;
    /// True when `ifindex` is a pod's host-side veth: packet directions there are
    /// reversed relative to the pod (host egress = pod ingress).
    fn reversed_iface(&self, _ifindex: u32) -> bool {
        false
    }
}

/// Standalone mode: no workload identities; the host resource is used.
pub struct NoEnrich;

impl Enricher for NoEnrich {
    fn identity(&self, _ip: IpAddr) -> Option<Arc<Identity>> {
        None
    }
}
