//! Which end of a connection is local, and so which span kinds to emit.
//!
//! Rule, first match wins:
//! 1. **Enricher identities.** An address the Enricher knows is a workload on
//!    this node (when both the identity and the host resource carry
//!    `k8s.node.name`, they must match: with all-nodes indexing the Enricher
//!    also knows remote pods): its side is local. Both local (pod-to-pod on
//!    one node) → both a CLIENT and a SERVER span.
//! 2. **Host addresses.** An address of this host (any interface, loopback
//!    included) is local; both local (e.g. over `lo`) → both spans.
//! 3. **Capture direction.** Client→server packets leaving through the
//!    interface (egress) mean the client is local → CLIENT; arriving
//!    (ingress) → SERVER. On a pod's host-side veth the Enricher reports the
//!    interface as reversed and the directions are flipped first.
use crate::capture::Direction;
use crate::flow::ConnInfo;
use crate::workload::{Enricher, Identity};
use std::net::IpAddr;
use std::sync::Arc;

/// Looked up for every exchange (and, in the agent, to skip its own
/// connections): foldhash, not SipHash; the set is this host's addresses.
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Addresses of this host. Loopback addresses always count as local.
#[derive(Debug, Clone, Default)]
pub struct LocalAddrs(HashSet<IpAddr>);

impl LocalAddrs {
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        Self(addrs.into_iter().collect())
    }

    /// Addresses of every interface of this host (network namespace).
    pub fn detect() -> Self {
        let mut set = HashSet::default();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(sa) = a.address else { continue };
                if let Some(v4) = sa.as_sockaddr_in() {
                    set.insert(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = sa.as_sockaddr_in6() {
                    set.insert(IpAddr::V6(v6.ip()));
                }
            }
        }
        Self(set)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.0.contains(&ip)
    }
}

/// The local ends of one connection, with their identities when known.
#[derive(Debug, Clone)]
pub struct Sides {
    pub client: Option<Option<Arc<Identity>>>,
    pub server: Option<Option<Arc<Identity>>>,
}

impl Sides {
    pub fn client_local(&self) -> bool {
        self.client.is_some()
    }
    pub fn server_local(&self) -> bool {
        self.server.is_some()
    }
}

fn on_this_node(id: &Identity, host: &Identity) -> bool {
    match (id.get("k8s.node.name"), host.get("k8s.node.name")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

pub fn local_sides(conn: &ConnInfo, enricher: &dyn Enricher, local: &LocalAddrs, host: &Identity) -> Sides {
    let (cip, sip) = (conn.client.ip(), conn.server.ip());
    if let Some(tls) = crate::capture::tls_stream::TlsSource::of_ifindex(conn.ifindex) {
        // Plaintext from one process's TLS calls: that process is the local
        // side, whatever the addresses say (the peer process, when traced
        // too, has its own flow and span). Its workload comes from its pid
        // (cgroup → container → pod: right for host-network pods too), else
        // from its address.
        let by_pid = enricher.process_identity(tls.pid);
        return match conn.client_to_server {
            Direction::Egress => Sides { client: Some(by_pid.or_else(|| enricher.identity(cip))), server: None },
            Direction::Ingress => Sides { client: None, server: Some(by_pid.or_else(|| enricher.identity(sip))) },
        };
    }
    let cid = enricher.identity(cip).filter(|id| on_this_node(id, host));
    let sid = enricher.identity(sip).filter(|id| on_this_node(id, host));
    if cid.is_some() || sid.is_some() {
        return Sides { client: cid.map(Some), server: sid.map(Some) };
    }
    let (cl, sl) = (local.contains(cip), local.contains(sip));
    if cl || sl {
        return Sides { client: cl.then_some(None), server: sl.then_some(None) };
    }
    let mut dir = conn.client_to_server;
    if enricher.reversed_iface(conn.ifindex) {
        dir = match dir {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        };
    }
    match dir {
        Direction::Egress => Sides { client: Some(None), server: None },
        Direction::Ingress => Sides { client: None, server: Some(None) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{RoleEvidence, Transport};
    use crate::workload::NoEnrich;

    fn conn(c: &str, s: &str, dir: Direction) -> ConnInfo {
        ConnInfo {
            id: 1,
            ifindex: 7,
            transport: Transport::Tcp,
            client: c.parse().unwrap(),
            server: s.parse().unwrap(),
            client_to_server: dir,
            evidence: RoleEvidence::Syn,
            first_ts_ns: 0,
        }
    }

    struct Pods(Vec<IpAddr>, bool);
    impl Enricher for Pods {
        fn identity(&self, ip: IpAddr) -> Option<Arc<Identity>> {
            self.0.contains(&ip).then(|| Arc::new(Identity { attributes: vec![("k8s.pod.ip".into(), ip.to_string())] }))
        }
        fn reversed_iface(&self, _: u32) -> bool {
            self.1
        }
    }

    #[test]
    fn direction_decides_without_other_evidence() {
        let none = LocalAddrs::default();
        let s = local_sides(
            &conn("10.200.0.1:5000", "10.200.0.2:80", Direction::Egress),
            &NoEnrich,
            &none,
            &Identity::default(),
        );
        assert!(s.client_local() && !s.server_local());
        let s = local_sides(
            &conn("10.200.0.1:5000", "10.200.0.2:80", Direction::Ingress),
            &NoEnrich,
            &none,
            &Identity::default(),
        );
        assert!(!s.client_local() && s.server_local());
        // Host-side veth: egress towards the pod means the pod (server) receives.
        let s = local_sides(
            &conn("10.200.0.1:5000", "10.200.0.2:80", Direction::Egress),
            &Pods(vec![], true),
            &none,
            &Identity::default(),
        );
        assert!(s.server_local() && !s.client_local());
    }

    #[test]
    fn host_addresses_and_loopback() {
        let local = LocalAddrs::new(["10.200.0.2".parse().unwrap()]);
        let s = local_sides(
            &conn("10.200.0.1:5000", "10.200.0.2:80", Direction::Egress),
            &NoEnrich,
            &local,
            &Identity::default(),
        );
        assert!(s.server_local() && !s.client_local());
        let s = local_sides(
            &conn("127.0.0.1:5000", "127.0.0.1:80", Direction::Ingress),
            &NoEnrich,
            &local,
            &Identity::default(),
        );
        assert!(s.server_local() && s.client_local());
    }

    #[test]
    fn identities_win_and_both_pods_give_both_sides() {
        let a: IpAddr = "10.200.1.1".parse().unwrap();
        let b: IpAddr = "10.200.1.2".parse().unwrap();
        let s = local_sides(
            &conn("10.200.1.1:5000", "10.200.1.2:80", Direction::Ingress),
            &Pods(vec![a, b], false),
            &LocalAddrs::default(),
            &Identity::default(),
        );
        assert!(s.client_local() && s.server_local());
        assert!(s.client.unwrap().is_some());
        let s = local_sides(
            &conn("10.200.1.1:5000", "10.200.1.2:80", Direction::Ingress),
            &Pods(vec![a], false),
            &LocalAddrs::default(),
            &Identity::default(),
        );
        assert!(s.client_local() && !s.server_local());
        // A pod on another node is not local even when the Enricher knows it.
        let node = |n: &str| Identity { attributes: vec![("k8s.node.name".into(), n.into())] };
        struct OtherNode;
        impl Enricher for OtherNode {
            fn identity(&self, ip: IpAddr) -> Option<Arc<Identity>> {
                let n = if ip.to_string().ends_with(".1") { "n1" } else { "n2" };
                Some(Arc::new(Identity { attributes: vec![("k8s.node.name".into(), n.into())] }))
            }
        }
        let s = local_sides(
            &conn("10.200.1.1:5000", "10.200.1.2:80", Direction::Ingress),
            &OtherNode,
            &LocalAddrs::default(),
            &node("n1"),
        );
        assert!(s.client_local() && !s.server_local());
    }
}
