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
    for k in [
        "CNFLOW_GATEWAY_TLS_CERT",
        "CNFLOW_GATEWAY_TLS_KEY",
        "CNFLOW_GATEWAY_TLS_CLIENT_CA",
        "CNFLOW_GATEWAY_AUTH_TOKENS",
    ] {
        assert!(env.iter().any(|(n, _)| n == k), "gateway env {k} with gateway.tls / gateway.auth");
    }
    let cr = find(&docs, "ClusterRole", "obs-agent").unwrap();
    assert!(!serde_yaml::to_string(cr).unwrap().contains("services"), "rbac.services=false drops services");
    let agent = find(&docs, "DaemonSet", "obs-agent").unwrap();
    let env = env_of(&agent["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        env.contains(&("CNFLOW_K8S_SERVICES".into(), "false".into())),
        "rbac.services=false also stops the agent watching Services"
    );
}

/// The mount (volume name, secret name, keys) holding `file` in a pod spec.
fn secret_file(pod: &Value, container: &Value, file: &str) -> (String, Vec<String>) {
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("no volume mounted for {file}"));
    assert_eq!(mount["readOnly"], Value::Bool(true), "{file}: read-only mount");
    let name = mount["name"].as_str().unwrap();
    let vol = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == name).unwrap();
    let keys = vol["secret"]["items"]
        .as_sequence()
        .map(|items| items.iter().map(|i| i["key"].as_str().unwrap().to_string()).collect())
        .unwrap_or_else(|| vec!["*".to_string()]);
    let base = file.rsplit('/').next().unwrap().to_string();
    assert!(keys.contains(&base) || keys == ["*"], "{file}: key {base} not projected ({keys:?})");
    (vol["secret"]["secretName"].as_str().expect("a Secret volume").to_string(), keys)
}

fn secret_ref(env: &Value, name: &str) -> Option<(String, String)> {
    let e = env.as_sequence()?.iter().find(|e| e["name"] == name)?;
    let r = &e["valueFrom"]["secretKeyRef"];
    Some((r["name"].as_str()?.to_string(), r["key"].as_str()?.to_string()))
}

#[test]
fn gateway_tls_and_token_from_secrets() {
    if !helm_available() {
        return;
    }
    // Off by default: plaintext endpoint, no TLS variables, no token.
    let docs = render(&[], &[]);
    let gw = &find(&docs, "Deployment", "-gateway").unwrap()["spec"]["template"]["spec"]["containers"][0];
    assert!(!env_of(gw).iter().any(|(k, _)| k.starts_with("CNFLOW_GATEWAY_TLS") || k == "CNFLOW_GATEWAY_AUTH_TOKENS"));

    let docs = render(
        &[],
        &[
            "gateway.tls.enabled=true",
            "gateway.tls.secretName=gw-tls",
            "gateway.tls.mutual=true",
            "gateway.tls.clientSecretName=agent-tls",
            "gateway.auth.tokenSecret=gw-token",
        ],
    );
    check_common(&docs);
    let gw_pod = &find(&docs, "Deployment", "-gateway").unwrap()["spec"]["template"]["spec"];
    let gw = &gw_pod["containers"][0];
    let env: std::collections::HashMap<String, String> = env_of(gw).into_iter().collect();
    for (var, key) in [
        ("CNFLOW_GATEWAY_TLS_CERT", "tls.crt"),
        ("CNFLOW_GATEWAY_TLS_KEY", "tls.key"),
        ("CNFLOW_GATEWAY_TLS_CLIENT_CA", "ca.crt"),
    ] {
        let file = env.get(var).unwrap_or_else(|| panic!("gateway {var}"));
        assert!(file.ends_with(key), "{var}={file}");
        assert_eq!(secret_file(gw_pod, gw, file).0, "gw-tls", "{var} comes from gateway.tls.secretName");
    }
    assert_eq!(secret_ref(&gw["env"], "CNFLOW_GATEWAY_AUTH_TOKENS"), Some(("gw-token".into(), "token".into())));

    let ag_pod = &find(&docs, "DaemonSet", "-agent").unwrap()["spec"]["template"]["spec"];
    let ag = &ag_pod["containers"][0];
    let env: std::collections::HashMap<String, String> = env_of(ag).into_iter().collect();
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "https://rel-cnflow-gateway.observability.svc:4317");
    // The agents get the CA of the gateway's secret, never its private key.
    let (secret, keys) = secret_file(ag_pod, ag, &env["OTEL_EXPORTER_OTLP_CERTIFICATE"]);
    assert_eq!((secret.as_str(), keys), ("gw-tls", vec!["ca.crt".to_string()]));
    for var in ["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY"] {
        assert_eq!(secret_file(ag_pod, ag, &env[var]).0, "agent-tls", "{var}");
    }
    // The header refers to the token variable defined before it (Kubernetes expands `$(VAR)`).
    let names: Vec<&str> = ag["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let (tok, hdr) = (
        names.iter().position(|n| *n == "GATEWAY_BEARER_TOKEN").expect("token variable"),
        names.iter().position(|n| *n == "OTEL_EXPORTER_OTLP_HEADERS").expect("headers"),
    );
    assert!(tok < hdr);
    assert_eq!(env["OTEL_EXPORTER_OTLP_HEADERS"], "authorization=Bearer%20$(GATEWAY_BEARER_TOKEN)");
    assert_eq!(secret_ref(&ag["env"], "GATEWAY_BEARER_TOKEN"), Some(("gw-token".into(), "token".into())));

    // TLS without a secret name fails to render, naming the value.
    let out = Command::new("helm")
        .args(["template", "rel"])
        .arg(root().join("charts/cnflow"))
        .args(["--set", "gateway.tls.enabled=true"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("gateway.tls.secretName"));
}

/// The gateway's service graph puts the agents in `gateway` mode (they leave
/// cross-node edges to it); settings that would count edges twice, or give
/// the gateway no joined pairs, fail to render.
#[test]
fn gateway_service_graph_sets_the_agents_mode() {
    if !helm_available() {
        return;
    }
    let on = ["gateway.env.CNFLOW_GATEWAY_SERVICE_GRAPH=true", "gateway.env.CNFLOW_GATEWAY_STITCH_WINDOW_MS=3000"];
    let mode = |docs: &[Value]| {
        let ds = find(docs, "DaemonSet", "-agent").unwrap();
        env_of(&ds["spec"]["template"]["spec"]["containers"][0])
            .into_iter()
            .filter(|(n, _)| n == "CNFLOW_SERVICE_GRAPH_METRICS")
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(mode(&render(&[], &on)), vec!["gateway"]);
    assert!(mode(&render(&[], &[])).is_empty(), "off by default");
    let explicit = [on[0], on[1], "agent.env.CNFLOW_SERVICE_GRAPH_METRICS=gateway"];
    assert_eq!(mode(&render(&[], &explicit)), vec!["gateway"], "set once");
    let gw = find(&render(&[], &on), "Deployment", "-gateway").cloned().unwrap();
    assert!(env_of(&gw["spec"]["template"]["spec"]["containers"][0])
        .contains(&("CNFLOW_GATEWAY_SERVICE_GRAPH".into(), "true".into())));
    for (set, want) in [
        (vec![on[0]], "CNFLOW_GATEWAY_STITCH_WINDOW_MS"),
        (vec![on[0], on[1], "agent.env.CNFLOW_SERVICE_GRAPH_METRICS=true"], "CNFLOW_SERVICE_GRAPH_METRICS"),
    ] {
        let mut cmd = Command::new("helm");
        cmd.args(["template", "rel"]).arg(root().join("charts/cnflow"));
        for s in &set {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{set:?}: {err}");
    }
}
