//! A scripted Kubernetes API server behind `tower_test::mock::pair`, enough for
//! kube-rs watchers: list (with field selectors), watch from a resourceVersion
//! (newline-delimited events, 410 Gone after `compact`), GET of single
//! ReplicaSets/Jobs, and an "unreachable" switch that fails every request.
#![allow(dead_code)]
use hyper::{Request, Response};
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// (resource, namespace, name) → object
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, resource, type, object)
    events: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    down: bool,
    /// Resources whose list and watch answer 403 Forbidden (RBAC).
    forbidden: std::collections::BTreeSet<String>,
    log: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    notify: Arc<tokio::sync::Notify>,
}

fn resource_of(kind: &str) -> &'static str {
    match kind {
        "Pod" => "pods",
        "Node" => "nodes",
        "Service" => "services",
        "ReplicaSet" => "replicasets",
        "Job" => "jobs",
        other => panic!("unsupported kind {other}"),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (decode(k), decode(v))))
        .collect()
}

fn field(obj: &Value, path: &str) -> Option<String> {
    let mut v = obj;
    for p in path.split('.') {
        v = v.get(p)?;
    }
    v.as_str().map(String::from)
}

fn selected(obj: &Value, field_selector: Option<&String>) -> bool {
    let Some(sel) = field_selector else { return true };
    sel.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => field(obj, k).as_deref() == Some(v),
        None => true,
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn respond(code: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder().status(code).header("content-type", "application/json").body(Body::from(body)).unwrap()
}

impl FakeApi {
    /// A kube client talking to a new fake API server (served on the current runtime).
    pub fn start() -> (kube::Client, FakeApi) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi { state: Arc::default(), notify: Arc::new(tokio::sync::Notify::new()) };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let server = server.clone();
                tokio::spawn(async move {
                    if server.state.lock().down {
                        send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "API server down"));
                        return;
                    }
                    send.send_response(server.serve(req).await);
                });
            }
        });
        (kube::Client::new(svc, "default"), api)
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().down = down;
        self.notify.notify_waiters();
    }

    /// Lists and watches of `resource` ("services") answer 403 Forbidden while `on`.
    pub fn set_forbidden(&self, resource: &str, on: bool) {
        let mut s = self.state.lock();
        if on {
            s.forbidden.insert(resource.to_string());
        } else {
            s.forbidden.remove(resource);
        }
        drop(s);
        self.notify.notify_waiters();
    }

    /// Forget history: watches from older versions get 410 Gone and must re-list.
    pub fn compact(&self) {
        let mut s = self.state.lock();
        s.compacted_below = s.rv + 1;
        drop(s);
        self.notify.notify_waiters();
    }

    /// Requests seen so far ("GET /path?query").
    pub fn log(&self) -> Vec<String> {
        self.state.lock().log.clone()
    }

    fn key(obj: &Value) -> (String, String, String) {
        let kind = obj["kind"].as_str().expect("kind");
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        (resource_of(kind).to_string(), ns, name)
    }

    /// Create or update an object (a watch event is recorded unless `silent`).
    fn put(&self, mut obj: Value, silent: bool) {
        let mut s = self.state.lock();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = Self::key(&obj);
        let existed = s.objects.insert(key.clone(), obj.clone()).is_some();
        if !silent {
            s.events.push((rv, key.0, if existed { "MODIFIED" } else { "ADDED" }, obj));
        }
        drop(s);
        self.notify.notify_waiters();
    }

    pub fn apply(&self, obj: Value) {
        self.put(obj, false)
    }

    /// Change an object without telling watchers (only a re-list sees it).
    pub fn apply_silently(&self, obj: Value) {
        self.put(obj, true)
    }

    pub fn delete(&self, kind: &str, ns: &str, name: &str) {
        let mut s = self.state.lock();
        let key = (resource_of(kind).to_string(), ns.to_string(), name.to_string());
        if let Some(mut obj) = s.objects.remove(&key) {
            s.rv += 1;
            let rv = s.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.events.push((rv, key.0, "DELETED", obj));
        }
        drop(s);
        self.notify.notify_waiters();
    }

    /// Remove an object without a DELETED event (as if the event was lost in an outage).
    pub fn delete_silently(&self, kind: &str, ns: &str, name: &str) {
        let mut s = self.state.lock();
        let key = (resource_of(kind).to_string(), ns.to_string(), name.to_string());
        s.objects.remove(&key);
        s.rv += 1;
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let uri = req.uri().clone();
        let q = query(&uri);
        let path = uri.path().to_string();
        self.state.lock().log.push(format!("{} {}", req.method(), uri));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/{res} | /api/v1/namespaces/{ns}/{res} | /apis/{g}/{v}/namespaces/{ns}/{res}/{name}
        let (res, ns, name) = match parts.as_slice() {
            ["api", "v1", res] => (res.to_string(), None, None),
            ["api", "v1", "namespaces", ns, res] => (res.to_string(), Some(ns.to_string()), None),
            ["api", "v1", "namespaces", ns, res, name] => {
                (res.to_string(), Some(ns.to_string()), Some(name.to_string()))
            }
            ["apis", _, _, "namespaces", ns, res, name] => {
                (res.to_string(), Some(ns.to_string()), Some(name.to_string()))
            }
            _ => return respond(404, serde_json::to_vec(&status(404, "NotFound")).unwrap()),
        };
        if let Some(name) = name {
            let obj = self.state.lock().objects.get(&(res, ns.unwrap_or_default(), name)).cloned();
            return match obj {
                Some(o) => respond(200, serde_json::to_vec(&o).unwrap()),
                None => respond(404, serde_json::to_vec(&status(404, "NotFound")).unwrap()),
            };
        }
        if self.state.lock().forbidden.contains(&res) {
            return respond(403, serde_json::to_vec(&status(403, "Forbidden")).unwrap());
        }
        let in_scope = |r: &str, obj: &Value| {
            let obj_ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
            r == res && ns.as_deref().is_none_or(|n| n == obj_ns) && selected(obj, q.get("fieldSelector"))
        };
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
            loop {
                let notified = self.notify.notified();
                {
                    let s = self.state.lock();
                    if s.down {
                        // The connection drops mid-watch: end the stream.
                        return respond(200, Vec::new());
                    }
                    if from < s.compacted_below {
                        let ev = json!({"type": "ERROR", "object": status(410, "Expired")});
                        return respond(200, format!("{ev}\n").into_bytes());
                    }
                    let evs: Vec<String> = s
                        .events
                        .iter()
                        .filter(|(rv, r, _, o)| *rv > from && in_scope(r, o))
                        .map(|(_, _, t, o)| json!({"type": t, "object": o}).to_string() + "\n")
                        .collect();
                    if !evs.is_empty() {
                        return respond(200, evs.concat().into_bytes());
                    }
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return respond(200, Vec::new());
                }
            }
        }
        let s = self.state.lock();
        let items: Vec<Value> = s.objects.iter().filter(|(k, o)| in_scope(&k.0, o)).map(|(_, o)| o.clone()).collect();
        let kind = match res.as_str() {
            "pods" => "PodList",
            "nodes" => "NodeList",
            "services" => "ServiceList",
            _ => "List",
        };
        let list = json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        respond(200, serde_json::to_vec(&list).unwrap())
    }
}

/// A pod object as the API server would return it.
pub struct PodSpec<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub ips: &'a [&'a str],
    pub labels: &'a [(&'a str, &'a str)],
    pub owner: Option<(&'a str, &'a str)>,
    pub host_network: bool,
    pub created: &'a str,
    pub phase: &'a str,
}

impl Default for PodSpec<'_> {
    fn default() -> Self {
        Self {
            ns: "default",
            name: "pod",
            uid: "uid",
            node: "node-1",
            ips: &[],
            labels: &[],
            owner: None,
            host_network: false,
            created: "2026-01-01T00:00:00Z",
            phase: "Running",
        }
    }
}

pub fn pod(p: PodSpec) -> Value {
    let labels: serde_json::Map<String, Value> = p.labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut meta =
        json!({"name": p.name, "namespace": p.ns, "uid": p.uid, "labels": labels, "creationTimestamp": p.created});
    if let Some((kind, name)) = p.owner {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true}]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": p.node, "hostNetwork": p.host_network, "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": p.phase, "podIP": p.ips.first(), "podIPs": p.ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()}
    })
}

/// A ReplicaSet or Job owned by `owner` (kind, name).
pub fn owned(kind: &str, ns: &str, name: &str, owner: (&str, &str)) -> Value {
    let api = if kind == "Job" { "batch/v1" } else { "apps/v1" };
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
        "ownerReferences": [{"apiVersion": api, "kind": owner.0, "name": owner.1, "uid": format!("uid-{}", owner.1), "controller": true}]}})
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": format!("uid-{name}")},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}})
}

pub fn service(ns: &str, name: &str, cluster_ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [{"port": 80}]}})
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
