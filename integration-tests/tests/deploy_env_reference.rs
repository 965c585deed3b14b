//! The env-var reference in the README, the Helm chart's values and the config
//! structs name the same variables (generated list compared; fails on drift).
#[path = "../harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;

fn reference() -> Vec<serde_json::Value> {
    let out =
        std::process::Command::new(harness::cnflow_bin()).args(["config", "--reference", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

const FIX: &str = "run: python3 integration-tests/scripts/update_env_reference.py";

#[test]
fn readme_reference_matches_config_structs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let md = std::process::Command::new(harness::cnflow_bin()).args(["config", "--reference"]).output().unwrap().stdout;
    let md = String::from_utf8(md).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme
        .split("<!-- env-reference:begin -->\n")
        .nth(1)
        .and_then(|s| s.split("<!-- env-reference:end -->").next())
        .expect("README has the env-reference markers");
    assert_eq!(section, md, "README env-var reference is stale; {FIX}");
}

#[test]
fn chart_values_name_every_variable() {
    let root = env!("CARGO_MANIFEST_DIR");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{root}/charts/cnflow/values.yaml")).unwrap()).unwrap();
    let keys = |target: &str| -> BTreeSet<String> {
        values[target]["env"]
            .as_mapping()
            .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let (agent, gateway) = (keys("agent"), keys("gateway"));
    let mut want_agent = BTreeSet::new();
    let mut want_gateway = BTreeSet::new();
    for v in reference() {
        let name = v["name"].as_str().unwrap().to_string();
        if name == "CNFLOW_NODE_NAME" || name == "CNFLOW_HEALTH_ADDR" || name == "KUBERNETES_SERVICE_HOST" {
            continue; // set by the DaemonSet template (downward API / agent.healthPort) or by Kubernetes
        }
        match v["component"].as_str().unwrap() {
            "gateway" => {
                want_gateway.insert(name);
            }
            // README table only (27 OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_* rows).
            "export-per-signal" => {}
            "export" | "self-telemetry" | "standard" | "sampling" => {
                want_agent.insert(name.clone());
                want_gateway.insert(name);
            }
            _ => {
                want_agent.insert(name);
            }
        }
    }
    assert_eq!(agent, want_agent, "agent.env in values.yaml differs from the config structs; {FIX}");
    assert_eq!(gateway, want_gateway, "gateway.env in values.yaml differs from the config structs; {FIX}");
}
