//! Kubernetes watchers against a scripted API server (kube::Client over
//! tower_test::mock) and watcher events fed straight into the index: pod
//! add/update/delete, IP reuse, owner resolution, watch errors with re-list,
//! an unreachable API server, a 5,000-pod node, standalone mode.
#[path = "../harness/k8s.rs"]
mod fake;

use cnflow::k8s::{self, K8sConfig};
use cnflow::workload::Enricher;
use fake::{eventually, node, owned, pod, service, FakeApi, PodSpec};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::Event;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg(extra: &[(&str, &str)]) -> K8sConfig {
    let mut v: Vec<(String, String)> = vec![
        ("CNFLOW_NODE_NAME".into(), "node-1".into()),
        // No namespace scanning in these tests: the index is what is under test.
        ("CNFLOW_K8S_PROC_ROOT".into(), "/nonexistent".into()),
        ("CNFLOW_K8S_NETNS_DIRS".into(), "/nonexistent".into()),
    ];
    v.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    K8sConfig::from_vars(v).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn attr(e: &dyn Enricher, addr: &str, key: &str) -> Option<String> {
    e.identity(ip(addr)).and_then(|id| id.get(key).map(String::from))
}

const WAIT: Duration = Duration::from_secs(20);

fn seed(api: &FakeApi) {
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(node("node-2", "192.0.2.11"));
    api.apply(owned("ReplicaSet", "shop", "web-7f9c", ("Deployment", "web")));
    api.apply(owned("Job", "ops", "backup-2900", ("CronJob", "backup")));
    api.apply(service("shop", "web", "10.96.0.20"));
    api.apply(pod(PodSpec {
        ns: "shop",
        name: "web-7f9c-a",
        uid: "u-web-a",
        ips: &["10.244.1.5", "fd00:10:244:1::5"],
        labels: &[("pod-template-hash", "7f9c"), ("app.kubernetes.io/version", "1.4.2")],
        owner: Some(("ReplicaSet", "web-7f9c")),
        ..Default::default()
    }));
    api.apply(pod(PodSpec {
        ns: "ops",
        name: "backup-2900-x",
        uid: "u-backup",
        ips: &["10.244.1.6"],
        owner: Some(("Job", "backup-2900")),
        ..Default::default()
    }));
    api.apply(pod(PodSpec {
        ns: "db",
        name: "redis-0",
        uid: "u-redis",
        ips: &["10.244.1.7"],
        labels: &[("app", "cache"), ("app.kubernetes.io/part-of", "store")],
        owner: Some(("StatefulSet", "redis")),
        ..Default::default()
    }));
    api.apply(pod(PodSpec {
        ns: "kube-system",
        name: "kube-proxy-1",
        uid: "u-proxy",
        ips: &["192.0.2.10"],
        host_network: true,
        owner: Some(("DaemonSet", "kube-proxy")),
        ..Default::default()
    }));
    // Another node's pod: the field selector keeps it out.
    api.apply(pod(PodSpec {
        ns: "shop",
        name: "web-other",
        uid: "u-other",
        node: "node-2",
        ips: &["10.244.2.9"],
        ..Default::default()
    }));
}

#[tokio::test]
async fn pods_owners_nodes_and_services_from_the_api() {
    let (client, api) = FakeApi::start();
    seed(&api);
    let h = k8s::start_with_client(&cfg(&[]), client, false, None).await.unwrap();
    assert!(h.wait_synced(WAIT).await, "initial lists complete");
    let e = h.enricher.as_ref();

    assert_eq!(attr(e, "10.244.1.5", "k8s.pod.name").as_deref(), Some("web-7f9c-a"));
    assert_eq!(attr(e, "fd00:10:244:1::5", "k8s.pod.name").as_deref(), Some("web-7f9c-a"), "IPv6 too");
    assert_eq!(attr(e, "10.244.1.5", "k8s.deployment.name").as_deref(), Some("web"));
    assert_eq!(attr(e, "10.244.1.5", "k8s.replicaset.name").as_deref(), Some("web-7f9c"));
    assert_eq!(attr(e, "10.244.1.5", "service.name").as_deref(), Some("web"));
    assert_eq!(attr(e, "10.244.1.5", "service.version").as_deref(), Some("1.4.2"));
    assert_eq!(attr(e, "10.244.1.5", "k8s.node.name").as_deref(), Some("node-1"));
    assert_eq!(attr(e, "10.244.1.5", "k8s.container.name").as_deref(), Some("main"));
    assert_eq!(attr(e, "10.244.1.5", "k8s.pod.uid").as_deref(), Some("u-web-a"));
    assert_eq!(attr(e, "10.244.1.6", "k8s.cronjob.name").as_deref(), Some("backup"));
    assert_eq!(attr(e, "10.244.1.6", "k8s.job.name").as_deref(), Some("backup-2900"));
    assert_eq!(attr(e, "10.244.1.6", "service.name").as_deref(), Some("backup"));
    assert_eq!(attr(e, "10.244.1.7", "k8s.statefulset.name").as_deref(), Some("redis"));
    assert_eq!(attr(e, "10.244.1.7", "service.name").as_deref(), Some("cache"));
    assert_eq!(attr(e, "10.244.1.7", "service.namespace").as_deref(), Some("store"));
    // Host-network pod and node address → the node.
    assert_eq!(attr(e, "192.0.2.10", "k8s.node.name").as_deref(), Some("node-1"));
    assert_eq!(attr(e, "192.0.2.10", "k8s.pod.name"), None);
    // Only this node is watched by default.
    assert!(e.identity(ip("192.0.2.11")).is_none());
    assert!(e.identity(ip("10.244.2.9")).is_none(), "pods of other nodes are not listed");
    assert!(e.identity(ip("203.0.113.1")).is_none(), "unknown IPs stay unenriched");
    // Services: peer attributes and a name for server.address.
    assert_eq!(e.address_name(ip("10.96.0.20")).as_deref(), Some("web.shop"));
    let peer = e.peer_attributes(ip("10.96.0.20"));
    assert!(peer.contains(&("service.peer.name".into(), "web".into())), "{peer:?}");
    let peer = e.peer_attributes(ip("10.244.1.5"));
    assert!(peer.contains(&("k8s.peer.pod.name".into(), "web-7f9c-a".into())), "{peer:?}");
    assert!(peer.contains(&("k8s.peer.deployment.name".into(), "web".into())), "{peer:?}");
    assert!(peer.contains(&("service.peer.name".into(), "web".into())), "{peer:?}");
    assert!(!peer.iter().any(|(k, _)| k.ends_with(".uid")), "{peer:?}");
    assert_eq!(h.host_resource.get("k8s.node.name"), Some("node-1"));

    let log = api.log();
    assert!(
        log.iter().any(|l| l.contains("/api/v1/pods?") && l.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("fieldSelector=metadata.name%3Dnode-1")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("/apis/apps/v1/namespaces/shop/replicasets/web-7f9c")), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("deployments") || l.contains("statefulsets")),
        "owners by lookup, not listing: {log:?}"
    );

    // Add, update (new IP), delete — through the watch.
    api.apply(pod(PodSpec { ns: "shop", name: "cart-1", uid: "u-cart", ips: &["10.244.1.8"], ..Default::default() }));
    assert!(eventually(WAIT, || attr(e, "10.244.1.8", "k8s.pod.name").as_deref() == Some("cart-1")).await);
    api.apply(pod(PodSpec { ns: "shop", name: "cart-1", uid: "u-cart", ips: &["10.244.1.9"], ..Default::default() }));
    assert!(eventually(WAIT, || attr(e, "10.244.1.9", "k8s.pod.name").as_deref() == Some("cart-1")).await);
    assert!(e.identity(ip("10.244.1.8")).is_none(), "old IP released");
    api.apply(pod(PodSpec {
        ns: "shop",
        name: "cart-1",
        uid: "u-cart",
        ips: &["10.244.1.9"],
        phase: "Succeeded",
        ..Default::default()
    }));
    assert!(eventually(WAIT, || e.identity(ip("10.244.1.9")).is_none()).await, "terminated pods release their IP");
    api.delete("Pod", "shop", "cart-1");
    api.delete("Pod", "shop", "web-7f9c-a");
    assert!(eventually(WAIT, || e.identity(ip("10.244.1.5")).is_none()).await);
    api.delete("Service", "shop", "web");
    assert!(eventually(WAIT, || e.address_name(ip("10.96.0.20")).is_none()).await);
    h.shutdown().await;
}

#[tokio::test]
async fn ip_reuse_by_a_new_pod() {
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod(PodSpec {
        name: "old",
        uid: "u-old",
        ips: &["10.244.1.20"],
        created: "2026-01-01T00:00:00Z",
        ..Default::default()
    }));
    let h = k8s::start_with_client(&cfg(&[("CNFLOW_K8S_SERVICES", "false")]), client, false, None).await.unwrap();
    assert!(h.wait_synced(WAIT).await);
    let e = h.enricher.as_ref();
    assert_eq!(attr(e, "10.244.1.20", "k8s.pod.name").as_deref(), Some("old"));
    // The old pod is terminating (still listed) when the new one gets its IP.
    api.apply(pod(PodSpec {
        name: "new",
        uid: "u-new",
        ips: &["10.244.1.20"],
        created: "2026-01-01T00:05:00Z",
        ..Default::default()
    }));
    assert!(eventually(WAIT, || attr(e, "10.244.1.20", "k8s.pod.name").as_deref() == Some("new")).await);
    // A late update of the old pod does not take the IP back; its delete leaves the new mapping.
    api.apply(pod(PodSpec {
        name: "old",
        uid: "u-old",
        ips: &["10.244.1.20"],
        labels: &[("x", "y")],
        ..Default::default()
    }));
    api.delete("Pod", "default", "old");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(attr(e, "10.244.1.20", "k8s.pod.name").as_deref(), Some("new"));
    api.delete("Pod", "default", "new");
    assert!(eventually(WAIT, || e.identity(ip("10.244.1.20")).is_none()).await);
    h.shutdown().await;
}

#[tokio::test]
async fn watch_error_leads_to_relist() {
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod(PodSpec { name: "a", uid: "u-a", ips: &["10.244.1.30"], ..Default::default() }));
    api.apply(pod(PodSpec { name: "b", uid: "u-b", ips: &["10.244.1.31"], ..Default::default() }));
    let h = k8s::start_with_client(&cfg(&[("CNFLOW_K8S_SERVICES", "false")]), client, false, None).await.unwrap();
    assert!(h.wait_synced(WAIT).await);
    let e = h.enricher.as_ref();
    assert!(e.identity(ip("10.244.1.30")).is_some());
    // Changes the watch never reports, then history is compacted: 410 Gone → re-list.
    api.delete_silently("Pod", "default", "a");
    api.apply_silently(pod(PodSpec { name: "c", uid: "u-c", ips: &["10.244.1.32"], ..Default::default() }));
    api.compact();
    assert!(eventually(WAIT, || attr(e, "10.244.1.32", "k8s.pod.name").as_deref() == Some("c")).await, "re-list adds");
    assert!(e.identity(ip("10.244.1.30")).is_none(), "re-list removes pods that vanished");
    assert_eq!(attr(e, "10.244.1.31", "k8s.pod.name").as_deref(), Some("b"), "re-list keeps the others");
    let lists = api.log().iter().filter(|l| l.contains("/api/v1/pods?") && !l.contains("watch=")).count();
    assert!(lists >= 2, "listed again after the error");
    assert!(cnflow::stats::snapshot().iter().any(|s| s.name == "cnflow.k8s.watch_errors" && s.value > 0));
    h.shutdown().await;
}

/// RBAC refuses the Services watch: counted per resource, the agent's
/// readiness signal (`forbidden_watches`) is raised, pods still sync; once
/// allowed, the watch recovers and the signal clears.
#[tokio::test]
async fn forbidden_watch_is_counted_and_clears_when_allowed() {
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod(PodSpec { name: "a", uid: "u-a", ips: &["10.244.1.40"], ..Default::default() }));
    api.apply(service("default", "web", "10.96.0.40"));
    api.set_forbidden("services", true);
    let h = k8s::start_with_client(&cfg(&[]), client, false, None).await.unwrap();
    let forbidden = || {
        cnflow::stats::snapshot()
            .iter()
            .filter(|s| s.name == "cnflow.k8s.watch_forbidden" && s.key().contains("services"))
            .map(|s| s.value)
            .sum::<u64>()
    };
    assert!(eventually(WAIT, || k8s::watch::forbidden_watches() == 1).await, "403 raises the readiness signal");
    assert!(forbidden() > 0);
    assert!(eventually(WAIT, || attr(h.enricher.as_ref(), "10.244.1.40", "k8s.pod.name").is_some()).await);
    api.set_forbidden("services", false);
    assert!(
        eventually(Duration::from_secs(60), || k8s::watch::forbidden_watches() == 0).await,
        "allowed again: the signal clears"
    );
    assert!(h.wait_synced(WAIT).await);
    h.shutdown().await;
}

#[tokio::test]
async fn api_server_unreachable_keeps_last_state_and_catches_up() {
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(owned("ReplicaSet", "shop", "api-5b6d", ("Deployment", "api")));
    api.apply(pod(PodSpec { ns: "shop", name: "a", uid: "u-a", ips: &["10.244.1.40"], ..Default::default() }));
    let h = k8s::start_with_client(
        &cfg(&[("CNFLOW_K8S_SERVICES", "false"), ("CNFLOW_K8S_RESYNC_SECS", "1")]),
        client,
        false,
        None,
    )
    .await
    .unwrap();
    assert!(h.wait_synced(WAIT).await);
    let e = h.enricher.as_ref();
    api.set_down(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attr(e, "10.244.1.40", "k8s.pod.name").as_deref(), Some("a"), "last known state while down");
    // While down: a pod is replaced, unseen.
    api.delete_silently("Pod", "shop", "a");
    api.apply_silently(pod(PodSpec {
        ns: "shop",
        name: "api-5b6d-x",
        uid: "u-x",
        ips: &["10.244.1.41"],
        labels: &[("pod-template-hash", "5b6d")],
        owner: Some(("ReplicaSet", "api-5b6d")),
        ..Default::default()
    }));
    api.compact();
    api.set_down(false);
    assert!(
        eventually(Duration::from_secs(60), || attr(e, "10.244.1.41", "k8s.deployment.name").as_deref() == Some("api"))
            .await
    );
    assert!(eventually(WAIT, || e.identity(ip("10.244.1.40")).is_none()).await, "caught up with the deletion");
    h.shutdown().await;
}

#[tokio::test]
async fn owner_lookup_failure_falls_back_then_resolves_on_resync() {
    // Owner GETs fail while the watch works: the ReplicaSet name heuristic names the
    // Deployment; a CronJob cannot be guessed until the resync succeeds.
    struct Flaky(std::sync::atomic::AtomicBool);
    impl k8s::owners::OwnerLookup for Flaky {
        fn owner_refs(
            &self,
            kind: k8s::identity::OwnerKind,
            _ns: &str,
            name: &str,
        ) -> BoxFuture<'_, anyhow::Result<Option<Vec<OwnerReference>>>> {
            let ok = self.0.load(std::sync::atomic::Ordering::Relaxed);
            let name = name.to_string();
            Box::pin(async move {
                if !ok {
                    anyhow::bail!("connection refused");
                }
                let parent = if kind == k8s::identity::OwnerKind::Job { "CronJob" } else { "Deployment" };
                Ok(Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: parent.into(),
                    name: format!("{}-parent", name),
                    uid: "x".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]))
            })
        }
    }
    let lookup = Arc::new(Flaky(false.into()));
    let state = k8s::State::new();
    let resolver = Arc::new(k8s::owners::OwnerResolver::new(lookup.clone(), 64, Duration::from_secs(60)));
    let mut sync = k8s::watch::PodSync::new(state.clone(), resolver, cfg(&[]));
    let p: Pod = serde_json::from_value(pod(PodSpec {
        name: "j-1-x",
        uid: "u-j",
        ips: &["10.244.1.50"],
        owner: Some(("Job", "j-1")),
        ..Default::default()
    }))
    .unwrap();
    sync.handle(Event::Apply(p)).await;
    let look = |k: &str| state.index.read().lookup(ip("10.244.1.50")).and_then(|i| i.get(k).map(String::from));
    assert_eq!(look("k8s.job.name").as_deref(), Some("j-1"));
    assert_eq!(look("k8s.cronjob.name"), None);
    assert_eq!(sync.incomplete(), 1);
    lookup.0.store(true, std::sync::atomic::Ordering::Relaxed);
    sync.resync().await;
    assert_eq!(look("k8s.cronjob.name").as_deref(), Some("j-1-parent"));
    assert_eq!(sync.incomplete(), 0);
}

fn static_sync(state: Arc<k8s::State>) -> k8s::watch::PodSync {
    struct NoOwners;
    impl k8s::owners::OwnerLookup for NoOwners {
        fn owner_refs(
            &self,
            _: k8s::identity::OwnerKind,
            _: &str,
            _: &str,
        ) -> BoxFuture<'_, anyhow::Result<Option<Vec<OwnerReference>>>> {
            Box::pin(async { Ok(None) })
        }
    }
    let resolver = Arc::new(k8s::owners::OwnerResolver::new(Arc::new(NoOwners), 64, Duration::from_secs(60)));
    k8s::watch::PodSync::new(state, resolver, cfg(&[("CNFLOW_K8S_EXCLUDE_NAMESPACES", "kube-system")]))
}

fn pod_obj(name: &str, uid: &str, ns: &str, ip: &str) -> Pod {
    serde_json::from_value(pod(PodSpec { name, uid, ns, ips: &[ip], ..Default::default() })).unwrap()
}

#[tokio::test]
async fn watcher_events_drive_the_index() {
    let state = k8s::State::new();
    let mut sync = static_sync(state.clone());
    let mut synced = sync.synced();
    let uid_at = |s: &str| state.index.read().lookup(ip(s)).and_then(|i| i.get("k8s.pod.uid").map(String::from));
    sync.handle(Event::Init).await;
    sync.handle(Event::InitApply(pod_obj("a", "u-a", "web", "10.244.1.1"))).await;
    sync.handle(Event::InitApply(pod_obj("sys", "u-sys", "kube-system", "10.244.1.2"))).await;
    assert_eq!(uid_at("10.244.1.1"), None, "nothing visible before InitDone");
    sync.handle(Event::InitDone).await;
    assert!(*synced.borrow_and_update());
    assert_eq!(uid_at("10.244.1.1").as_deref(), Some("u-a"));
    assert_eq!(uid_at("10.244.1.2"), None, "excluded namespace");
    sync.handle(Event::Apply(pod_obj("b", "u-b", "web", "10.244.1.3"))).await;
    assert_eq!(uid_at("10.244.1.3").as_deref(), Some("u-b"));
    sync.handle(Event::Delete(pod_obj("b", "u-b", "web", "10.244.1.3"))).await;
    assert_eq!(uid_at("10.244.1.3"), None);
    // Re-list without `a`: removed.
    sync.handle(Event::Init).await;
    sync.handle(Event::InitApply(pod_obj("c", "u-c", "web", "10.244.1.4"))).await;
    sync.handle(Event::InitDone).await;
    assert_eq!(uid_at("10.244.1.1"), None);
    assert_eq!(uid_at("10.244.1.4").as_deref(), Some("u-c"));
}

#[tokio::test]
async fn five_thousand_pod_node_index() {
    let state = k8s::State::new();
    let mut sync = static_sync(state.clone());
    let t = Instant::now();
    sync.handle(Event::Init).await;
    for i in 0..5000u32 {
        let addr = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        sync.handle(Event::InitApply(pod_obj(&format!("p{i}"), &format!("u{i}"), "load", &addr))).await;
    }
    sync.handle(Event::InitDone).await;
    let built = t.elapsed();
    assert_eq!(state.index.read().pod_count(), 5000);
    let enricher = k8s::K8sEnricher { state: state.clone() };
    let t = Instant::now();
    let mut hits = 0;
    for round in 0..20 {
        for i in 0..5000u32 {
            let addr = IpAddr::from([10, (100 + i / 65536) as u8, ((i / 256) % 256) as u8, (i % 256) as u8]);
            if let Some(id) = enricher.identity(addr) {
                if round == 0 {
                    assert_eq!(id.get("k8s.pod.name"), Some(format!("p{i}").as_str()));
                }
                hits += 1;
            }
        }
    }
    let per_lookup = t.elapsed() / 100_000;
    assert_eq!(hits, 100_000);
    assert!(enricher.identity(ip("10.99.0.1")).is_none());
    eprintln!("5000 pods indexed in {built:?}; lookup {per_lookup:?} each");
    assert!(built < Duration::from_secs(30), "index build took {built:?}");
    assert!(per_lookup < Duration::from_micros(50), "lookup took {per_lookup:?}");
}

#[tokio::test]
async fn standalone_without_a_cluster() {
    let h = k8s::start(&cfg(&[("CNFLOW_K8S", "off")]), false, None).await.unwrap();
    assert_eq!(h.mode, k8s::RunMode::Standalone);
    assert!(h.enricher.identity(ip("10.244.1.1")).is_none());
    assert!(h.host_resource.get("host.name").is_some());
    assert!(h.wait_synced(Duration::from_millis(10)).await, "nothing to sync");
    h.shutdown().await;
    if std::env::var_os("KUBECONFIG").is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let h = k8s::start(&cfg(&[]), false, None).await.unwrap();
        assert_eq!(h.mode, k8s::RunMode::Standalone, "auto mode without credentials");
    }
    let home_cfg = std::path::Path::new(&std::env::var("HOME").unwrap_or_default()).join(".kube/config");
    if std::env::var_os("KUBECONFIG").is_none()
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
        && !home_cfg.exists()
    {
        let err =
            k8s::start(&cfg(&[("CNFLOW_K8S", "on")]), false, None).await.err().expect("on without a cluster fails");
        assert!(format!("{err:#}").contains("CNFLOW_K8S"), "{err:#}");
    }
}
