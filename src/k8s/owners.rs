//! Owner chain of a pod (ReplicaSet → Deployment, Job → CronJob, StatefulSet,
//! DaemonSet) resolved by getting single objects by name, cached, instead of
//! watching every workload of the cluster.
use super::identity::{deployment_from_replicaset_name, OwnerKind, Owners};
use crate::stats::{counter, Counter};
use anyhow::Result;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Asks for the owner references of one ReplicaSet or Job.
pub trait OwnerLookup: Send + Sync {
    /// `Ok(None)` when the object does not exist (or may not be read).
    fn owner_refs(&self, kind: OwnerKind, ns: &str, name: &str) -> BoxFuture<'_, Result<Option<Vec<OwnerReference>>>>;
}

/// Lookups through the API server (metadata-only GETs).
pub struct KubeOwners {
    client: kube::Client,
    forbidden_logged: AtomicBool,
}

impl KubeOwners {
    pub fn new(client: kube::Client) -> Self {
        Self { client, forbidden_logged: AtomicBool::new(false) }
    }
}

impl OwnerLookup for KubeOwners {
    fn owner_refs(&self, kind: OwnerKind, ns: &str, name: &str) -> BoxFuture<'_, Result<Option<Vec<OwnerReference>>>> {
        let (ns, name) = (ns.to_string(), name.to_string());
        Box::pin(async move {
            let got = match kind {
                OwnerKind::ReplicaSet => kube::Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
                    .get_metadata_opt(&name)
                    .await
                    .map(|m| m.map(|m| m.metadata.owner_references.unwrap_or_default())),
                OwnerKind::Job => kube::Api::<Job>::namespaced(self.client.clone(), &ns)
                    .get_metadata_opt(&name)
                    .await
                    .map(|m| m.map(|m| m.metadata.owner_references.unwrap_or_default())),
                _ => return Ok(Some(vec![])),
            };
            match got {
                Ok(v) => Ok(v),
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    if !self.forbidden_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(kind = ?kind, "not allowed to read owners ({}); workload names stop at the direct owner", s.message);
                    }
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            }
        })
    }
}

static OWNER_LOOKUPS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.owner_lookups", &[]));
static OWNER_CACHE_HITS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.owner_cache_hits", &[]));
static OWNER_LOOKUP_ERRORS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.k8s.owner_lookup_errors", &[]));

type Key = (OwnerKind, String, String);
/// When looked up, and the parent workload found (if any).
type Cached = (Instant, Option<(OwnerKind, String)>);

/// Resolves and caches owner chains.
pub struct OwnerResolver {
    lookup: Arc<dyn OwnerLookup>,
    cache: Mutex<lru::LruCache<Key, Cached>>,
    ttl: Duration,
}

fn controller_ref(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|r| r.controller == Some(true)).or_else(|| refs.first())
}

impl OwnerResolver {
    pub fn new(lookup: Arc<dyn OwnerLookup>, capacity: usize, ttl: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        Self { lookup, cache: Mutex::new(lru::LruCache::new(cap)), ttl }
    }

    /// Parent workload of a ReplicaSet/Job, from the cache or the API.
    async fn parent(&self, kind: OwnerKind, ns: &str, name: &str) -> Result<Option<(OwnerKind, String)>> {
        let key = (kind, ns.to_string(), name.to_string());
        if let Some((at, v)) = self.cache.lock().get(&key) {
            if at.elapsed() < self.ttl {
                OWNER_CACHE_HITS.inc();
                return Ok(v.clone());
            }
        }
        OWNER_LOOKUPS.inc();
        let refs = self.lookup.owner_refs(kind, ns, name).await.inspect_err(|_| {
            OWNER_LOOKUP_ERRORS.inc();
        })?;
        let parent = refs.as_deref().and_then(controller_ref).and_then(|r| {
            let k = OwnerKind::from_kind(&r.kind)?;
            let wanted = match kind {
                OwnerKind::ReplicaSet => OwnerKind::Deployment,
                OwnerKind::Job => OwnerKind::CronJob,
                _ => return None,
            };
            (k == wanted).then(|| (k, r.name.clone()))
        });
        self.cache.lock().put(key, (Instant::now(), parent.clone()));
        Ok(parent)
    }

    /// Owner chain of `pod`; the flag is false when a lookup failed and a
    /// fallback (name heuristics) was used, so the pod should be resolved again later.
    pub async fn resolve(&self, pod: &Pod) -> (Owners, bool) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
        let mut out = Owners::new();
        let mut complete = true;
        let Some(r) = controller_ref(refs) else { return (out, true) };
        let Some(kind) = OwnerKind::from_kind(&r.kind) else { return (out, true) };
        out.push((kind, r.name.clone()));
        if matches!(kind, OwnerKind::ReplicaSet | OwnerKind::Job) {
            match self.parent(kind, ns, &r.name).await {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, owner = %r.name, "owner lookup failed; using name heuristics");
                    complete = false;
                    if kind == OwnerKind::ReplicaSet {
                        if let Some(d) = deployment_from_replicaset_name(&r.name, pod) {
                            out.push((OwnerKind::Deployment, d));
                        }
                    }
                }
            }
        }
        (out, complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    struct Static(HashMap<String, Vec<OwnerReference>>, AtomicUsize, AtomicBool);
    impl OwnerLookup for Static {
        fn owner_refs(
            &self,
            _kind: OwnerKind,
            _ns: &str,
            name: &str,
        ) -> BoxFuture<'_, Result<Option<Vec<OwnerReference>>>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let r = if self.2.load(Ordering::Relaxed) {
                Err(anyhow::anyhow!("connection refused"))
            } else {
                Ok(self.0.get(name).cloned())
            };
            Box::pin(async move { r })
        }
    }

    fn oref(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn pod(owner: OwnerReference, hash: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.owner_references = Some(vec![owner]);
        if let Some(h) = hash {
            p.metadata.labels = Some([("pod-template-hash".to_string(), h.to_string())].into());
        }
        p
    }

    #[tokio::test]
    async fn chains_are_resolved_and_cached() {
        let lookup = Arc::new(Static(
            [("web-abc".to_string(), vec![oref("Deployment", "web")]), ("job-1".into(), vec![oref("CronJob", "cj")])]
                .into(),
            AtomicUsize::new(0),
            AtomicBool::new(false),
        ));
        let r = OwnerResolver::new(lookup.clone(), 16, Duration::from_secs(60));
        let p = pod(oref("ReplicaSet", "web-abc"), None);
        let (o, complete) = r.resolve(&p).await;
        assert!(complete);
        assert_eq!(o, vec![(OwnerKind::ReplicaSet, "web-abc".into()), (OwnerKind::Deployment, "web".into())]);
        r.resolve(&p).await;
        assert_eq!(lookup.1.load(Ordering::Relaxed), 1, "second resolution is served from the cache");
        let (o, _) = r.resolve(&pod(oref("Job", "job-1"), None)).await;
        assert_eq!(o, vec![(OwnerKind::Job, "job-1".into()), (OwnerKind::CronJob, "cj".into())]);
        let (o, _) = r.resolve(&pod(oref("StatefulSet", "db"), None)).await;
        assert_eq!(o, vec![(OwnerKind::StatefulSet, "db".into())]);
        assert_eq!(lookup.1.load(Ordering::Relaxed), 2, "no lookup for a StatefulSet");
        let (o, _) = r.resolve(&pod(oref("ReplicaSet", "gone"), None)).await;
        assert_eq!(o, vec![(OwnerKind::ReplicaSet, "gone".into())]);
    }

    #[tokio::test]
    async fn api_down_falls_back_to_name_heuristics() {
        let lookup = Arc::new(Static(HashMap::new(), AtomicUsize::new(0), AtomicBool::new(true)));
        let r = OwnerResolver::new(lookup, 16, Duration::from_secs(60));
        let (o, complete) = r.resolve(&pod(oref("ReplicaSet", "web-abc"), Some("abc"))).await;
        assert!(!complete);
        assert_eq!(o, vec![(OwnerKind::ReplicaSet, "web-abc".into()), (OwnerKind::Deployment, "web".into())]);
    }
}
