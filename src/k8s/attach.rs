//! Follow pods with capture: attach to a pod's host-side veth when it appears
//! on this node, detach when the pod goes. The capture side implements
//! [`Attacher`]; this module only decides where and when.
use super::index::Index;
use super::veth::{self, HostVeth, NetnsSources};
use crate::stats::{counter, Counter};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Capture hooks on one interface (implemented by the eBPF live capture).
pub trait Attacher: Send + Sync {
    /// Start capturing on `ifname`/`ifindex` (host network namespace). Called
    /// once per interface; an error is logged and the attach retried later.
    fn attach(&self, ifname: &str, ifindex: u32) -> anyhow::Result<()>;
    /// Stop capturing there (the interface may already be gone).
    fn detach(&self, ifname: &str, ifindex: u32);
}

static ATTACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.attach", &[("result", "ok")]));
static ATTACH_FAILED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.attach", &[("result", "error")]));
static DETACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.detach", &[]));
static SCANS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.netns_scans", &[]));
static SCAN_FAILURES: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.netns_scan_failures", &[]));

/// Why an interface is attached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Pod(String),
    Host,
}

/// Keeps the set of attached interfaces equal to the pods (and optionally host
/// interfaces) that should be captured.
pub struct AttachManager {
    attacher: Option<Arc<dyn Attacher>>,
    sources: NetnsSources,
    capture_host: bool,
    /// ifindexes of pod veths, read by the enricher (direction reversal).
    pod_veths: Arc<RwLock<HashSet<u32>>>,
    /// Attached interface → who wants it.
    attached: HashMap<HostVeth, HashSet<Owner>>,
    /// Pod uid → its veth, once found.
    pods: HashMap<String, HostVeth>,
    /// Pods waiting for their veth: uid → first time seen.
    pending: HashMap<String, Instant>,
    scan_failure_logged: bool,
}

impl AttachManager {
    pub fn new(
        attacher: Option<Arc<dyn Attacher>>,
        sources: NetnsSources,
        capture_host: bool,
        pod_veths: Arc<RwLock<HashSet<u32>>>,
    ) -> Self {
        Self {
            attacher,
            sources,
            capture_host,
            pod_veths,
            attached: HashMap::new(),
            pods: HashMap::new(),
            pending: HashMap::new(),
            scan_failure_logged: false,
        }
    }

    /// Pods still waiting for their interface.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Currently attached interfaces.
    pub fn attached(&self) -> Vec<HostVeth> {
        self.attached.keys().cloned().collect()
    }

    fn add_owner(&mut self, v: &HostVeth, owner: Owner) -> bool {
        if let Some(owners) = self.attached.get_mut(v) {
            owners.insert(owner);
            return true;
        }
        if let Some(a) = &self.attacher {
            if let Err(e) = a.attach(&v.ifname, v.ifindex) {
                ATTACH_FAILED.inc();
                tracing::warn!(iface = %v.ifname, ifindex = v.ifindex, error = %e, "attach failed; will retry");
                return false;
            }
            ATTACHED.inc();
            tracing::info!(iface = %v.ifname, ifindex = v.ifindex, ?owner, "capture attached");
        }
        self.attached.insert(v.clone(), [owner].into());
        true
    }

    fn drop_owner(&mut self, v: &HostVeth, owner: &Owner) {
        let Some(owners) = self.attached.get_mut(v) else { return };
        owners.remove(owner);
        if owners.is_empty() {
            self.attached.remove(v);
            if let Some(a) = &self.attacher {
                a.detach(&v.ifname, v.ifindex);
                DETACHED.inc();
                tracing::info!(iface = %v.ifname, ifindex = v.ifindex, "capture detached");
            }
        }
    }

    /// Bring attachments in line with `index`. `full` re-scans every pod (veths
    /// can be re-created with a pod sandbox); otherwise only new pods are looked up.
    /// Blocking (enters namespaces): run it off the async runtime threads.
    pub fn reconcile(&mut self, index: &RwLock<Index>, full: bool) {
        let wanted: HashMap<String, Vec<std::net::IpAddr>> = index
            .read()
            .pods()
            .filter(|p| p.active && !p.host_network && !p.ips.is_empty())
            .map(|p| (p.uid.clone(), p.ips.clone()))
            .collect();
        let gone: Vec<String> = self.pods.keys().filter(|u| !wanted.contains_key(*u)).cloned().collect();
        for uid in gone {
            if let Some(v) = self.pods.remove(&uid) {
                self.drop_owner(&v, &Owner::Pod(uid));
            }
        }
        self.pending.retain(|u, _| wanted.contains_key(u));
        let now = Instant::now();
        for uid in wanted.keys() {
            if !self.pods.contains_key(uid) {
                self.pending.entry(uid.clone()).or_insert(now);
            }
        }
        let need_scan = full || !self.pending.is_empty();
        if !need_scan && !self.capture_host {
            self.publish();
            return;
        }
        let scanned = if need_scan {
            SCANS.inc();
            veth::scan(&self.sources)
        } else {
            super::netlink::links().map(|host_links| veth::Scan { host_links, ..Default::default() })
        };
        let scan = match scanned {
            Ok(s) => s,
            Err(e) => {
                SCAN_FAILURES.inc();
                if !self.scan_failure_logged {
                    self.scan_failure_logged = true;
                    tracing::warn!(error = %e, "cannot list interfaces; pods are enriched but not attached");
                }
                return;
            }
        };
        if scan.failures > 0 && !self.scan_failure_logged {
            self.scan_failure_logged = true;
            tracing::warn!(
                failures = scan.failures,
                "some network namespaces could not be entered (needs CAP_SYS_ADMIN + CAP_SYS_PTRACE and hostPID)"
            );
        }
        let uids: Vec<String> =
            if full { wanted.keys().cloned().collect() } else { self.pending.keys().cloned().collect() };
        for uid in uids {
            let found = wanted.get(&uid).and_then(|ips| ips.iter().find_map(|ip| scan.by_ip.get(ip))).cloned();
            let Some(v) = found else { continue };
            match self.pods.get(&uid) {
                Some(old) if *old == v => {}
                Some(old) => {
                    let old = old.clone();
                    self.drop_owner(&old, &Owner::Pod(uid.clone()));
                    self.pods.remove(&uid);
                    if self.add_owner(&v, Owner::Pod(uid.clone())) {
                        self.pods.insert(uid, v);
                    } else {
                        self.pending.insert(uid, now);
                    }
                }
                None => {
                    if self.add_owner(&v, Owner::Pod(uid.clone())) {
                        self.pending.remove(&uid);
                        self.pods.insert(uid, v);
                    }
                }
            }
        }
        let host: HashSet<HostVeth> = if self.capture_host {
            veth::host_capture_links(&scan.host_links).into_iter().collect()
        } else {
            HashSet::new()
        };
        let stale: Vec<HostVeth> = self
            .attached
            .iter()
            .filter(|(v, o)| o.contains(&Owner::Host) && !host.contains(*v))
            .map(|(v, _)| v.clone())
            .collect();
        for v in stale {
            self.drop_owner(&v, &Owner::Host);
        }
        for v in host {
            self.add_owner(&v, Owner::Host);
        }
        self.publish();
    }

    fn publish(&self) {
        let set: HashSet<u32> = self.pods.values().map(|v| v.ifindex).collect();
        *self.pod_veths.write() = set;
    }

    /// Detach everything (shutdown).
    pub fn detach_all(&mut self) {
        let all: Vec<HostVeth> = self.attached.keys().cloned().collect();
        for v in all {
            self.attached.remove(&v);
            if let Some(a) = &self.attacher {
                a.detach(&v.ifname, v.ifindex);
                DETACHED.inc();
            }
        }
        self.pods.clear();
        self.publish();
    }

    /// How long to wait before looking for pending pods' interfaces again:
    /// quickly right after a pod appears, then backing off.
    pub fn retry_delay(&self) -> Option<Duration> {
        let youngest = self.pending.values().max()?;
        Some(if youngest.elapsed() < Duration::from_secs(30) {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        })
    }
}
