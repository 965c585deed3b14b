//! Pods come and go on a simulated node (root): network namespaces stand in
//! for pods, a scripted API server lists pods naming their addresses, and the
//! attacher is called for each new pod's host-side veth (without restart) and
//! released when the pod goes; identities map the pod addresses.
#[path = "../harness/k8s.rs"]
mod fake;
#[path = "../harness/k8s_pods.rs"]
mod pods;

use cnflow::k8s::{self, Attacher, K8sConfig};
use fake::{eventually, node, pod, FakeApi, PodSpec};
use parking_lot::Mutex;
use pods::PodNetns;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(bool, String, u32)>>,
}

impl Attacher for Recorder {
    fn attach(&self, ifname: &str, ifindex: u32) -> anyhow::Result<()> {
        self.events.lock().push((true, ifname.to_string(), ifindex));
        Ok(())
    }
    fn detach(&self, ifname: &str, ifindex: u32) {
        self.events.lock().push((false, ifname.to_string(), ifindex));
    }
}

impl Recorder {
    fn attached(&self, ifname: &str) -> usize {
        self.events.lock().iter().filter(|(a, n, _)| *a && n == ifname).count()
    }
    fn detached(&self, ifname: &str) -> usize {
        self.events.lock().iter().filter(|(a, n, _)| !*a && n == ifname).count()
    }
}

/// A directory naming only our stand-ins, so namespaces of other tests on the
/// machine are not visited (the agent would use /run/netns and /proc).
struct NetnsDir(tempfile::TempDir);

impl NetnsDir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn add(&self, p: &PodNetns) {
        std::os::unix::fs::symlink(format!("/run/netns/{}", p.netns), self.0.path().join(&p.netns)).unwrap();
    }
}

fn cfg(dir: &NetnsDir) -> K8sConfig {
    K8sConfig::from_vars([
        ("CNFLOW_NODE_NAME".to_string(), "node-1".to_string()),
        ("CNFLOW_K8S_SERVICES".into(), "false".into()),
        ("CNFLOW_K8S_PROC_ROOT".into(), "/nonexistent".into()),
        ("CNFLOW_K8S_NETNS_DIRS".into(), dir.0.path().display().to_string()),
    ])
    .unwrap()
}

fn pod_for(name: &str, p: &PodNetns) -> serde_json::Value {
    pod(PodSpec {
        ns: "shop",
        name,
        uid: &format!("uid-{name}"),
        ips: &[&p.ip],
        labels: &[("app.kubernetes.io/name", name)],
        ..Default::default()
    })
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn attach_follows_pods_as_they_come_and_go() {
    if !pods::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let dir = NetnsDir::new();
    let a = PodNetns::new(2);
    let b = PodNetns::new(3);
    dir.add(&a);
    dir.add(&b);
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod_for("alpha", &a));
    api.apply(pod_for("beta", &b));
    let rec = Arc::new(Recorder::default());
    let h = k8s::start_with_client(&cfg(&dir), client, false, Some(rec.clone() as Arc<dyn Attacher>)).await.unwrap();
    assert!(h.wait_synced(WAIT).await);
    let e = h.enricher.clone();

    assert!(
        eventually(WAIT, || rec.attached(&a.host_veth) == 1 && rec.attached(&b.host_veth) == 1).await,
        "{:?}",
        rec.events.lock()
    );
    let ev = rec.events.lock().clone();
    assert!(ev.contains(&(true, a.host_veth.clone(), a.ifindex())), "ifindex passed: {ev:?}");
    let ip_a: IpAddr = a.ip.parse().unwrap();
    assert_eq!(e.identity(ip_a).unwrap().get("k8s.pod.name"), Some("alpha"));
    assert_eq!(e.identity(b.ip.parse().unwrap()).unwrap().get("service.name"), Some("beta"));
    assert!(eventually(WAIT, || e.reversed_iface(a.ifindex()) && e.reversed_iface(b.ifindex())).await);
    assert!(!e.reversed_iface(1), "loopback is no pod veth");

    // A new pod while running: its namespace exists before the API reports it.
    let c = PodNetns::new(4);
    dir.add(&c);
    api.apply(pod_for("gamma", &c));
    assert!(eventually(WAIT, || rec.attached(&c.host_veth) == 1).await, "new pod attached without restart");
    assert_eq!(e.identity(c.ip.parse().unwrap()).unwrap().get("k8s.pod.name"), Some("gamma"));

    // The API reports a pod before its interface exists (CNI still wiring): attached once it appears.
    let d_ip = "10.200.157.5";
    api.apply(pod(PodSpec { ns: "shop", name: "delta", uid: "uid-delta", ips: &[d_ip], ..Default::default() }));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = PodNetns::new(5);
    dir.add(&d);
    assert!(eventually(WAIT, || rec.attached(&d.host_veth) == 1).await, "late interface attached");

    // Pods go: detach, and nothing else is touched.
    api.delete("Pod", "shop", "alpha");
    assert!(eventually(WAIT, || rec.detached(&a.host_veth) == 1).await, "detached when the pod went");
    assert!(e.identity(ip_a).is_none());
    assert!(eventually(WAIT, || !e.reversed_iface(a.ifindex())).await);
    drop(a);
    assert_eq!(rec.detached(&b.host_veth), 0);
    assert_eq!(rec.attached(&b.host_veth), 1, "attached once, not again on every change");

    let mut attached: Vec<String> = h.attached().into_iter().map(|v| v.ifname).collect();
    attached.sort();
    let mut want = vec![b.host_veth.clone(), c.host_veth.clone(), d.host_veth.clone()];
    want.sort();
    assert_eq!(attached, want);
    h.shutdown().await;
    for v in [&b.host_veth, &c.host_veth, &d.host_veth] {
        assert_eq!(rec.detached(v), 1, "shutdown detaches {v}");
    }
}

#[tokio::test]
async fn host_interfaces_with_capture_host() {
    if !pods::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let dir = NetnsDir::new();
    let a = PodNetns::new(6);
    dir.add(&a);
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod_for("eps", &a));
    let rec = Arc::new(Recorder::default());
    let h = k8s::start_with_client(&cfg(&dir), client, true, Some(rec.clone() as Arc<dyn Attacher>)).await.unwrap();
    assert!(eventually(WAIT, || rec.attached(&a.host_veth) == 1).await);
    let links = k8s::netlink::links().unwrap();
    let physical: Vec<&k8s::netlink::Link> = links.iter().filter(|l| l.up && !l.loopback && l.kind.is_none()).collect();
    for l in &physical {
        assert!(eventually(WAIT, || rec.attached(&l.name) == 1).await, "host interface {} attached", l.name);
    }
    assert_eq!(rec.attached("lo"), 0);
    assert!(!e_reversed(&h, physical.first().map(|l| l.index).unwrap_or(0)), "host interfaces keep their direction");
    h.shutdown().await;
}

fn e_reversed(h: &k8s::K8sHandle, ifindex: u32) -> bool {
    h.enricher.reversed_iface(ifindex)
}

#[tokio::test]
async fn namespaces_reached_through_processes() {
    if !pods::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let p = pods::ProcPod::new(7);
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(pod(PodSpec { ns: "shop", name: "zeta", uid: "uid-zeta", ips: &[&p.ip], ..Default::default() }));
    let cfg = K8sConfig::from_vars([
        ("CNFLOW_NODE_NAME".to_string(), "node-1".to_string()),
        ("CNFLOW_K8S_SERVICES".into(), "false".into()),
        ("CNFLOW_K8S_PROC_ROOT".into(), "/proc".into()),
        ("CNFLOW_K8S_NETNS_DIRS".into(), "".into()),
    ])
    .unwrap();
    let rec = Arc::new(Recorder::default());
    let h = k8s::start_with_client(&cfg, client, false, Some(rec.clone() as Arc<dyn Attacher>)).await.unwrap();
    assert!(
        eventually(WAIT, || rec.attached(&p.host_veth) == 1).await,
        "found via /proc/<pid>/ns/net: {:?}",
        rec.events.lock()
    );
    h.shutdown().await;
    assert_eq!(rec.detached(&p.host_veth), 1);
}

/// The eBPF live capture behind the Attacher trait, as the agent wires it.
struct LiveAttacher(Mutex<cnflow::capture::ebpf::LiveCapture>);

impl Attacher for LiveAttacher {
    fn attach(&self, ifname: &str, _ifindex: u32) -> anyhow::Result<()> {
        self.0.lock().attach(ifname)
    }
    fn detach(&self, ifname: &str, _ifindex: u32) {
        self.0.lock().detach(ifname)
    }
}

fn str_attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn live_spans_carry_pod_attributes() {
    if !pods::is_root() {
        eprintln!("skipped: needs root (eBPF, network namespaces)");
        return;
    }
    // As root, missing eBPF support is a failure, not a skip: CI must not pass without capture.
    if let Err(e) = cnflow::capture::ebpf::check_requirements(cnflow::capture::TcAttach::Auto) {
        panic!("running as root but eBPF capture is unavailable: {e:#}");
    }
    let dir = NetnsDir::new();
    let web = PodNetns::new(8);
    dir.add(&web);
    let mut server = web
        .cmd("python3")
        .args(["-m", "http.server", "18157", "--bind", &web.ip])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);

    let agent =
        cnflow::agent::config::AgentConfig::from_vars([("CNFLOW_CAPTURE_PORTS".to_string(), "18157".to_string())])
            .unwrap();
    let (capture, mut rx) = cnflow::capture::ebpf::LiveCapture::start(&agent.capture_settings().unwrap()).unwrap();
    let live = Arc::new(LiveAttacher(Mutex::new(capture)));
    let (client, api) = FakeApi::start();
    api.apply(node("node-1", "192.0.2.10"));
    api.apply(owned_rs());
    api.apply(pod(PodSpec {
        ns: "shop",
        name: "web-6c8d-q",
        uid: "uid-web",
        ips: &[&web.ip],
        labels: &[("pod-template-hash", "6c8d")],
        owner: Some(("ReplicaSet", "web-6c8d")),
        ..Default::default()
    }));
    let h = k8s::start_with_client(&cfg(&dir), client, false, Some(live.clone() as Arc<dyn Attacher>)).await.unwrap();
    assert!(eventually(WAIT, || h.attached().iter().any(|v| v.ifname == web.host_veth)).await, "veth attached");

    // Requests from the host to the "pod" (bounded: 3 tries with a timeout each).
    let url = format!("http://{}:18157/", web.ip);
    let mut ok = false;
    for _ in 0..3 {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "3", &url])
            .status()
            .await;
        ok |= out.is_ok_and(|s| s.success());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "curl reached the pod stand-in");

    let mut pipeline = cnflow::agent::pipeline::PacketPipeline::new(&agent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        for ev in &batch {
            pipeline.push(ev);
        }
    }
    pipeline.finish();
    let exchanges = pipeline.take_exchanges();
    assert!(!exchanges.is_empty(), "HTTP exchanges decoded from the pod's veth");
    let collected = Arc::new(parking_lot::Mutex::new(cnflow::telemetry::Collected::default()));
    let host = Arc::new(h.host_resource.clone());
    let mut opts = cnflow::telemetry::SinkOptions::new(cnflow::telemetry::TelemetryConfig::default(), host);
    opts.enricher = h.enricher.clone();
    opts.outputs.push(cnflow::telemetry::Output::Collect(collected.clone()));
    let mut sink = cnflow::telemetry::TelemetrySink::new(opts);
    for ex in &exchanges {
        sink.record(ex);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    sink.finish(now);
    let found = {
        let c = collected.lock();
        let mut found = false;
        for rs in c.traces.iter().flat_map(|t| &t.resource_spans) {
            let attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            if str_attr(attrs, "k8s.pod.name").as_deref() == Some("web-6c8d-q") {
                assert_eq!(str_attr(attrs, "k8s.deployment.name").as_deref(), Some("web"));
                assert_eq!(str_attr(attrs, "service.name").as_deref(), Some("web"));
                assert_eq!(str_attr(attrs, "k8s.namespace.name").as_deref(), Some("shop"));
                let spans: Vec<_> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
                assert!(!spans.is_empty());
                // Seen on the pod's veth: the pod is the server (direction from the pod's point of view).
                assert!(spans.iter().all(|s| s.kind == 2), "SERVER spans: {spans:?}");
                found = true;
            }
        }
        assert!(found, "a span resource names the pod: {:?}", c.traces);
        found
    };
    assert!(found);
    h.shutdown().await;
    assert!(live.0.lock().attached().is_empty(), "detached on shutdown");
}

fn owned_rs() -> serde_json::Value {
    fake::owned("ReplicaSet", "shop", "web-6c8d", ("Deployment", "web"))
}
