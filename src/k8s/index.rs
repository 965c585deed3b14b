//! IP address → identity. Pods on this node claim their IPs (IPv4 and IPv6);
//! when a new pod reuses the IP of one that is still known, the most recently
//! created pod wins and deleting the older one leaves the newer mapping alone.
//! Host-network pods claim the node's addresses with the node's identity. Node
//! addresses and Service ClusterIPs are looked up after pod claims.
use crate::workload::Identity;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What the index keeps of one pod.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// Creation time (seconds since the epoch): the newer pod wins a shared IP.
    pub created: i64,
    /// False once the pod has terminated (Succeeded/Failed): its IPs are released.
    pub active: bool,
    pub identity: Arc<Identity>,
    /// False when owner names came from fallbacks and should be resolved again.
    pub owners_complete: bool,
    /// The pod's own resource, for its processes (found by pid, not by
    /// address): equal to `identity` except for host-network pods, whose
    /// addresses are the node's.
    pub process_identity: Arc<Identity>,
    /// (container id, resource narrowed to that container) of each started container.
    pub containers: Vec<(String, Arc<Identity>)>,
}

#[derive(Debug, Clone)]
struct Claim {
    uid: Arc<str>,
    created: i64,
    seq: u64,
    identity: Arc<Identity>,
}

#[derive(Debug, Default)]
pub struct Index {
    pods: HashMap<Arc<str>, (PodEntry, u64)>,
    /// Claims per IP, best first (newest creation time, then first seen last).
    claims: HashMap<IpAddr, Vec<Claim>>,
    nodes: HashMap<String, Vec<IpAddr>>,
    node_ips: HashMap<IpAddr, Arc<Identity>>,
    services: HashMap<(String, String), Vec<IpAddr>>,
    service_ips: HashMap<IpAddr, Arc<Identity>>,
    /// Container id → resource of that container, for processes found by pid.
    containers: HashMap<String, Arc<Identity>>,
    seq: u64,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Identity behind `ip`: a pod (or, for host-network pods, the node), a node, a Service.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Identity>> {
        if let Some(c) = self.claims.get(&ip).and_then(|v| v.first()) {
            return Some(c.identity.clone());
        }
        self.node_ips.get(&ip).or_else(|| self.service_ips.get(&ip)).cloned()
    }

    /// Resource of a process from its cgroup: the container's when the
    /// runtime's id is known, else the pod's (a container whose status has
    /// not reported its id yet).
    pub fn process(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Option<Arc<Identity>> {
        if let Some(id) = container_id.and_then(|c| self.containers.get(c)) {
            return Some(id.clone());
        }
        self.pods.get(pod_uid?).map(|(e, _)| e.process_identity.clone())
    }

    /// The Service whose ClusterIP is `ip`.
    pub fn service(&self, ip: IpAddr) -> Option<Arc<Identity>> {
        self.service_ips.get(&ip).cloned()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn pod(&self, uid: &str) -> Option<&PodEntry> {
        self.pods.get(uid).map(|(e, _)| e)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodEntry> {
        self.pods.values().map(|(e, _)| e)
    }

    fn unclaim(&mut self, uid: &str, ips: &[IpAddr]) {
        for ip in ips {
            if let Some(v) = self.claims.get_mut(ip) {
                v.retain(|c| &*c.uid != uid);
                if v.is_empty() {
                    self.claims.remove(ip);
                }
            }
        }
    }

    /// Add or replace a pod (matched by uid).
    pub fn upsert(&mut self, entry: PodEntry) {
        let seq = match self.pods.get(entry.uid.as_str()) {
            Some((old, seq)) => {
                let (old_ips, seq) = (old.ips.clone(), *seq);
                self.unclaim(&entry.uid, &old_ips);
                seq
            }
            None => {
                self.seq += 1;
                self.seq
            }
        };
        if let Some((old, _)) = self.pods.get(entry.uid.as_str()) {
            for (c, _) in &old.containers {
                self.containers.remove(c);
            }
        }
        for (c, id) in &entry.containers {
            self.containers.insert(c.clone(), id.clone());
        }
        let uid: Arc<str> = Arc::from(entry.uid.as_str());
        if entry.active {
            for ip in &entry.ips {
                let v = self.claims.entry(*ip).or_default();
                if v.iter().any(|c| c.uid == uid) {
                    continue;
                }
                let claim = Claim { uid: uid.clone(), created: entry.created, seq, identity: entry.identity.clone() };
                let pos = v.iter().position(|c| (c.created, c.seq) < (claim.created, claim.seq)).unwrap_or(v.len());
                v.insert(pos, claim);
            }
        }
        self.pods.insert(uid, (entry, seq));
    }

    /// Forget a pod. Other pods' claims on the same IPs stay.
    pub fn remove(&mut self, uid: &str) -> Option<PodEntry> {
        let (e, _) = self.pods.remove(uid)?;
        self.unclaim(uid, &e.ips);
        for (c, _) in &e.containers {
            self.containers.remove(c);
        }
        Some(e)
    }

    /// Replace every pod after a re-list: pods missing from `entries` are gone.
    pub fn replace_pods(&mut self, entries: Vec<PodEntry>) -> Vec<PodEntry> {
        let keep: std::collections::HashSet<&str> = entries.iter().map(|e| e.uid.as_str()).collect();
        let gone: Vec<Arc<str>> = self.pods.keys().filter(|k| !keep.contains(&***k)).cloned().collect();
        let removed = gone.iter().filter_map(|uid| self.remove(uid)).collect();
        for e in entries {
            self.upsert(e);
        }
        removed
    }

    pub fn upsert_node(&mut self, name: &str, ips: Vec<IpAddr>, identity: Arc<Identity>) {
        self.remove_node(name);
        for ip in &ips {
            self.node_ips.insert(*ip, identity.clone());
        }
        self.nodes.insert(name.to_string(), ips);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(ips) = self.nodes.remove(name) {
            for ip in ips {
                let owned = self.node_ips.get(&ip).is_some_and(|id| id.get("k8s.node.name") == Some(name));
                if owned {
                    self.node_ips.remove(&ip);
                }
            }
        }
    }

    pub fn replace_nodes(&mut self, nodes: Vec<(String, Vec<IpAddr>, Arc<Identity>)>) {
        self.nodes.clear();
        self.node_ips.clear();
        for (name, ips, id) in nodes {
            self.upsert_node(&name, ips, id);
        }
    }

    pub fn upsert_service(&mut self, ns: &str, name: &str, ips: Vec<IpAddr>, identity: Arc<Identity>) {
        self.remove_service(ns, name);
        for ip in &ips {
            self.service_ips.insert(*ip, identity.clone());
        }
        self.services.insert((ns.to_string(), name.to_string()), ips);
    }

    pub fn remove_service(&mut self, ns: &str, name: &str) {
        if let Some(ips) = self.services.remove(&(ns.to_string(), name.to_string())) {
            for ip in ips {
                let owned = self.service_ips.get(&ip).is_some_and(|id| {
                    id.get("k8s.service.name") == Some(name) && id.get("k8s.namespace.name") == Some(ns)
                });
                if owned {
                    self.service_ips.remove(&ip);
                }
            }
        }
    }

    pub fn replace_services(&mut self, services: Vec<(String, String, Vec<IpAddr>, Arc<Identity>)>) {
        self.services.clear();
        self.service_ips.clear();
        for (ns, name, ips, id) in services {
            self.upsert_service(&ns, &name, ips, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, ip: &str, created: i64) -> PodEntry {
        PodEntry {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            ips: vec![ip.parse().unwrap()],
            host_network: false,
            created,
            active: true,
            identity: Arc::new(Identity { attributes: vec![("k8s.pod.uid".into(), uid.into())] }),
            owners_complete: true,
            process_identity: Arc::new(Identity { attributes: vec![("k8s.pod.uid".into(), uid.into())] }),
            containers: vec![],
        }
    }

    #[test]
    fn processes_by_container_then_pod() {
        let mut ix = Index::new();
        let mut e = entry("a", "10.0.0.5", 1);
        let c = Arc::new(Identity { attributes: vec![("k8s.container.name".into(), "app".into())] });
        e.containers = vec![("c1".into(), c.clone())];
        ix.upsert(e.clone());
        assert_eq!(ix.process(Some("a"), Some("c1")), Some(c.clone()));
        // Unknown container (status not updated yet): the pod.
        assert_eq!(ix.process(Some("a"), Some("c2")).unwrap().get("k8s.pod.uid"), Some("a"));
        assert_eq!(ix.process(None, Some("c1")), Some(c));
        assert_eq!(ix.process(Some("zz"), None), None);
        // A restart replaces the container id; the old one is forgotten.
        e.containers = vec![("c3".into(), Arc::new(Identity::default()))];
        ix.upsert(e);
        assert_eq!(ix.process(None, Some("c1")), None);
        assert!(ix.process(None, Some("c3")).is_some());
        ix.remove("a");
        assert_eq!(ix.process(None, Some("c3")), None);
        assert_eq!(ix.process(Some("a"), None), None);
    }

    fn uid_of(ix: &Index, ip: &str) -> Option<String> {
        ix.lookup(ip.parse().unwrap()).map(|i| i.get("k8s.pod.uid").unwrap().to_string())
    }

    #[test]
    fn ip_reuse_latest_pod_wins_and_old_delete_keeps_it() {
        let mut ix = Index::new();
        ix.upsert(entry("old", "10.0.0.5", 100));
        ix.upsert(entry("new", "10.0.0.5", 200));
        assert_eq!(uid_of(&ix, "10.0.0.5").as_deref(), Some("new"));
        // A late update of the old pod must not take the IP back.
        ix.upsert(entry("old", "10.0.0.5", 100));
        assert_eq!(uid_of(&ix, "10.0.0.5").as_deref(), Some("new"));
        ix.remove("old");
        assert_eq!(uid_of(&ix, "10.0.0.5").as_deref(), Some("new"));
        ix.remove("new");
        assert_eq!(uid_of(&ix, "10.0.0.5"), None);
    }

    #[test]
    fn same_second_ties_go_to_the_pod_seen_last() {
        let mut ix = Index::new();
        ix.upsert(entry("a", "10.0.0.5", 100));
        ix.upsert(entry("b", "10.0.0.5", 100));
        assert_eq!(uid_of(&ix, "10.0.0.5").as_deref(), Some("b"));
        ix.remove("b");
        assert_eq!(uid_of(&ix, "10.0.0.5").as_deref(), Some("a"));
    }

    #[test]
    fn terminated_pods_release_ips_and_ip_changes_move() {
        let mut ix = Index::new();
        ix.upsert(entry("a", "10.0.0.5", 100));
        let mut e = entry("a", "10.0.0.6", 100);
        ix.upsert(e.clone());
        assert_eq!(uid_of(&ix, "10.0.0.5"), None);
        assert_eq!(uid_of(&ix, "10.0.0.6").as_deref(), Some("a"));
        e.active = false;
        ix.upsert(e);
        assert_eq!(uid_of(&ix, "10.0.0.6"), None);
        assert_eq!(ix.pod_count(), 1);
    }

    #[test]
    fn relist_drops_missing_pods() {
        let mut ix = Index::new();
        ix.upsert(entry("a", "10.0.0.1", 1));
        ix.upsert(entry("b", "10.0.0.2", 1));
        let removed = ix.replace_pods(vec![entry("b", "10.0.0.2", 1), entry("c", "fd00::3", 1)]);
        assert_eq!(removed.len(), 1);
        assert_eq!(uid_of(&ix, "10.0.0.1"), None);
        assert_eq!(uid_of(&ix, "fd00::3").as_deref(), Some("c"));
    }

    #[test]
    fn pods_then_nodes_then_services() {
        let mut ix = Index::new();
        let node = Arc::new(crate::k8s::identity::node_identity("n1", None));
        ix.upsert_node("n1", vec!["192.0.2.1".parse().unwrap()], node);
        let svc = Arc::new(crate::k8s::identity::service_identity("ns", "web"));
        ix.upsert_service("ns", "web", vec!["10.96.0.10".parse().unwrap()], svc);
        assert_eq!(ix.lookup("192.0.2.1".parse().unwrap()).unwrap().get("k8s.node.name"), Some("n1"));
        assert_eq!(ix.lookup("10.96.0.10".parse().unwrap()).unwrap().get("k8s.service.name"), Some("web"));
        ix.remove_service("ns", "web");
        ix.remove_node("n1");
        assert!(ix.lookup("10.96.0.10".parse().unwrap()).is_none());
        assert!(ix.lookup("192.0.2.1".parse().unwrap()).is_none());
    }
}
