//! The Helm chart renders (with the real helm engine) to valid Kubernetes
//! objects, for default values and for a values file switching on every option.
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm_available() -> bool {
    let ok = Command::new("helm").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok && std::env::var("CI").is_ok() {
        panic!("helm is not installed: .ci/setup.sh installs it");
    }
    if !ok {
        eprintln!("SKIP: helm not installed (run .ci/setup.sh)");
    }
    ok
}

fn render(values: &[&Path], set: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new("helm");
    cmd.args(["template", "rel"]).arg(root().join("charts/cnflow")).args(["--namespace", "observability"]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur
}

fn find<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"].as_str().unwrap_or("").ends_with(suffix))
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or("<from>").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn check_common(docs: &[Value]) {
    for d in docs {
        assert!(d["apiVersion"].is_string(), "apiVersion missing: {d:?}");
        assert!(d["kind"].is_string(), "kind missing: {d:?}");
        assert!(d["metadata"]["name"].is_string(), "metadata.name missing: {d:?}");
        let kind = d["kind"].as_str().unwrap();
        if matches!(kind, "DaemonSet" | "Deployment") {
            let sel = s(d, &["spec", "selector", "matchLabels"]).as_mapping().expect("selector");
            let labels = s(d, &["spec", "template", "metadata", "labels"]).as_mapping().expect("labels");
            for (k, v) in sel {
                assert_eq!(labels.get(k), Some(v), "{kind}: selector label {k:?} not on the pod template");
            }
            let containers = s(d, &["spec", "template", "spec", "containers"]).as_sequence().unwrap();
            for c in containers {
                assert!(c["image"].as_str().is_some_and(|i| i.contains(':')), "{kind}: image with tag");
                assert!(c["args"].is_sequence(), "{kind}: args");
                assert_ne!(c["securityContext"]["privileged"], Value::Bool(true), "{kind}: never privileged");
            }
        }
        if kind == "ClusterRole" {
            for rule in d["rules"].as_sequence().unwrap() {
                for verb in rule["verbs"].as_sequence().unwrap() {
                    assert!(matches!(verb.as_str(), Some("get" | "list" | "watch")), "RBAC is read-only, got {verb:?}");
                }
            }
        }
    }
}

#[test]
fn default_values_render_valid_objects() {
    if !helm_available() {
        return;
    }
    let lint = Command::new("helm").arg("lint").arg(root().join("charts/cnflow")).output().unwrap();
    assert!(lint.status.success(), "helm lint: {}", String::from_utf8_lossy(&lint.stdout));
    let docs = render(&[], &[]);
    check_common(&docs);
    for kind in ["DaemonSet", "Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "{kind} rendered");
    }
    let ds = find(&docs, "DaemonSet", "-agent").unwrap();
    let pod = s(ds, &["spec", "template", "spec"]);
    let c = &pod["containers"][0];
    let caps: Vec<&str> =
        c["securityContext"]["capabilities"]["add"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for cap in ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"] {
        assert!(caps.contains(&cap), "agent capability {cap}");
    }
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "agent tolerates every taint");
    let env = env_of(c);
    assert!(env.iter().any(|(k, _)| k == "CNFLOW_NODE_NAME"), "downward-API node name");
    let endpoint = env.iter().find(|(k, _)| k == "OTEL_EXPORTER_OTLP_ENDPOINT").expect("agent → gateway endpoint");
    assert_eq!(endpoint.1, "http://rel-cnflow-gateway.observability.svc:4317");
    let mounts: Vec<&str> =
        c["volumeMounts"].as_sequence().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(mounts.contains(&"/sys/fs/bpf") && mounts.contains(&"/sys/kernel/btf"));
    assert!(mounts.contains(&"/run/netns"), "pinned pod network namespaces for veth discovery");
    assert!(!env.iter().any(|(k, _)| k == "CNFLOW_K8S_SERVICES"), "Services watched by default");
    let cr = find(&docs, "ClusterRole", "-agent").unwrap();
    let rules = cr["rules"].as_sequence().unwrap();
    let grants = |res: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["resources"].as_sequence().unwrap().iter().any(|x| x.as_str() == Some(res)))
            .flat_map(|r| r["verbs"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
            .collect()
    };
    // Exactly what src/k8s watches (pods, nodes, services) and gets (replicasets, jobs).
    for res in ["pods", "nodes", "services"] {
        assert_eq!(grants(res), ["get", "list", "watch"], "{res}");
    }
    for res in ["replicasets", "jobs"] {
        assert_eq!(grants(res), ["get"], "{res}");
    }
    let svc = find(&docs, "Service", "-gateway").unwrap();
    let ports: Vec<i64> =
        svc["spec"]["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_i64().unwrap()).collect();
    assert_eq!(ports, vec![4317, 4318]);
}

#[test]
fn only_backend_endpoint_set_reaches_gateway() {
    if !helm_available() {
        return;
    }
    let docs = render(&[], &["exporter.endpoint=http://jaeger-collector.tracing:4317"]);
    let dep = find(&docs, "Deployment", "-gateway").unwrap();
    let env = env_of(&dep["spec"]["template"]["spec"]["containers"][0]);
    assert!(env.contains(&("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "http://jaeger-collector.tracing:4317".into())));
}

#[test]
fn all_options_render_valid_objects() {
    if !helm_available() {
        return;
    }
    let values = root().join("integration-tests/deploy/values-all.yaml");
    let lint =
        Command::new("helm").arg("lint").arg(root().join("charts/cnflow")).arg("-f").arg(&values).output().unwrap();
    assert!(lint.status.success(), "helm lint: {}", String::from_utf8_lossy(&lint.stdout));
    let docs = render(&[&values], &[]);
    check_common(&docs);
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "{kind} rendered");
    }
    let dep = find(&docs, "Deployment", "obs-gateway").unwrap();
    assert!(dep["spec"]["replicas"].is_null(), "HPA owns replicas");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/cnflow:1.2.3");
    let env = env_of(c);
    for k in ["CNFLOW_GATEWAY_GEOIP_CITY_DB", "CNFLOW_GATEWAY_GEOIP_ASN_DB", "CNFLOW_GATEWAY_QUEUE_DIR", "RUST_LOG"] {
        assert!(env.iter().any(|(n, _)| n == k), "gateway env {k}");
    }
    let secrets: Vec<&str> =
        c["envFrom"].as_sequence().unwrap().iter().map(|e| e["secretRef"]["name"].as_str().unwrap()).collect();
    assert_eq!(secrets, vec!["gateway-secrets", "vendor-headers"]);
    let cr = find(&docs, "ClusterRole", "obs-agent").unwrap();
    assert!(!serde_yaml::to_string(cr).unwrap().contains("services"), "rbac.services=false drops services");
    let agent = find(&docs, "DaemonSet", "obs-agent").unwrap();
    let env = env_of(&agent["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        env.contains(&("CNFLOW_K8S_SERVICES".into(), "false".into())),
        "rbac.services=false also stops the agent watching Services"
    );
}
