//! The collector pipelines under otel-config/ parse and use only components that
//! exist in the OpenTelemetry Collector contrib distribution, wired consistently.
use serde_yaml::Value;
use std::collections::BTreeSet;

/// Component type names in otelcol-contrib (subset relevant here), per section.
const RECEIVERS: &[&str] =
    &["otlp", "prometheus", "hostmetrics", "k8s_cluster", "kubeletstats", "filelog", "jaeger", "zipkin"];
const PROCESSORS: &[&str] = &[
    "batch",
    "memory_limiter",
    "k8sattributes",
    "resource",
    "attributes",
    "tail_sampling",
    "probabilistic_sampler",
    "filter",
    "transform",
    "resourcedetection",
    "groupbytrace",
    "span",
];
const EXPORTERS: &[&str] =
    &["otlp", "otlphttp", "debug", "prometheus", "prometheusremotewrite", "loadbalancing", "file", "kafka", "zipkin"];
const CONNECTORS: &[&str] = &["spanmetrics", "servicegraph", "forward", "count", "routing"];
const EXTENSIONS: &[&str] = &["health_check", "pprof", "zpages", "basicauth", "bearertokenauth", "file_storage"];

fn type_of(id: &str) -> &str {
    id.split('/').next().unwrap()
}

fn ids(doc: &Value, section: &str) -> BTreeSet<String> {
    doc[section].as_mapping().map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[test]
fn collector_configs_use_contrib_components_consistently() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Purpose:"), "{path:?} says what it is for on its first line");
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (section, known) in [
            ("receivers", RECEIVERS),
            ("processors", PROCESSORS),
            ("exporters", EXPORTERS),
            ("connectors", CONNECTORS),
            ("extensions", EXTENSIONS),
        ] {
            for id in ids(&doc, section) {
                assert!(known.contains(&type_of(&id)), "{path:?}: {section} {id} is not an otelcol-contrib component");
            }
        }
        let (recv, proc_, exp, conn) =
            (ids(&doc, "receivers"), ids(&doc, "processors"), ids(&doc, "exporters"), ids(&doc, "connectors"));
        let pipelines = doc["service"]["pipelines"].as_mapping().expect("service.pipelines");
        assert!(!pipelines.is_empty());
        for (name, p) in pipelines {
            let list = |k: &str| -> Vec<String> {
                p[k].as_sequence()
                    .map(|s| s.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            assert!(!list("receivers").is_empty() && !list("exporters").is_empty(), "{path:?} {name:?}");
            for r in list("receivers") {
                assert!(recv.contains(&r) || conn.contains(&r), "{path:?}: pipeline {name:?} receiver {r} undefined");
            }
            for x in list("processors") {
                assert!(proc_.contains(&x), "{path:?}: pipeline {name:?} processor {x} undefined");
            }
            for e in list("exporters") {
                assert!(exp.contains(&e) || conn.contains(&e), "{path:?}: pipeline {name:?} exporter {e} undefined");
            }
        }
        for e in doc["service"]["extensions"].as_sequence().into_iter().flatten() {
            assert!(ids(&doc, "extensions").contains(e.as_str().unwrap()));
        }
    }
    assert!(n >= 4, "expected the four documented pipelines, found {n}");
}
