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
    /// Span attributes naming the workload behind a peer address (the other
    /// side of an exchange), e.g. `k8s.peer.pod.name`, `service.peer.name`.
    /// Empty when the address is unknown.
    fn peer_attributes(&self, ip: IpAddr) -> Vec<(String, String)> {
        self.identity(ip).map(|id| peer_attributes(&id)).unwrap_or_default()
    }
    /// A name for `ip` usable as `server.address` when only the address was
    /// seen (e.g. `web.shop` for a Service ClusterIP).
    fn address_name(&self, _ip: IpAddr) -> Option<String> {
        None
    }
    /// Identity of the workload a process belongs to (its container / pod,
    /// from what `crate::process` observed of its cgroup), for traffic known
    /// by its process rather than its address (TLS plaintext from uprobes).
    fn process_identity(&self, _pid: u32) -> Option<Arc<Identity>> {
        None
    }
}

/// Peer span attributes from a peer's resource attributes: `k8s.X` becomes
/// `k8s.peer.X` (e.g. `k8s.peer.pod.name`, `k8s.peer.deployment.name`),
/// `service.name`/`service.namespace` become `service.peer.name`/`service.peer.namespace`;
/// uids and instance ids are left out to keep cardinality down.
pub fn peer_attributes(id: &Identity) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(id.attributes.len());
    for (k, v) in &id.attributes {
        let key = match k.as_str() {
            "service.name" => "service.peer.name".to_string(),
            "service.namespace" => "service.peer.namespace".to_string(),
            k if k.ends_with(".uid") => continue,
            k => match k.strip_prefix("k8s.") {
                Some(rest) => format!("k8s.peer.{rest}"),
                None => continue,
            },
        };
        out.push((key, v.clone()));
    }
    out
}

/// Standalone mode: no workload identities; the host resource is used.
pub struct NoEnrich;

impl Enricher for NoEnrich {
    fn identity(&self, _ip: IpAddr) -> Option<Arc<Identity>> {
        None
    }
}
