//! Golden OTLP/JSON: hand-built exchanges of every protocol (in process) and
//! every golden capture under integration-tests/pcaps (through
//! `cnflow replay --format otlp-json`) are compared with files under
//! integration-tests/golden/telemetry/. `CNFLOW_BLESS=1` rewrites them; a
//! capture without a golden file yet gets one written (review it in the diff).
//!
//! Independently of cnflow's own tables, every span attribute is checked
//! against the attribute set the OpenTelemetry semantic conventions define for
//! that kind of span (listed here from the semconv pages), and every metric
//! name/unit against the semconv metric definitions.
#[path = "../harness/mod.rs"]
mod harness;

use cnflow::telemetry::samples::{one_of_each, T0};
use cnflow::telemetry::{Format, IdGen, Output, SinkOptions, TelemetryConfig, TelemetrySink};
use cnflow::workload::Identity;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Attributes semconv v1.37 defines for each span family (plus the general
/// network/server/client attributes and error.type every family may carry).
const GENERAL: &[&str] = &[
    "server.address",
    "server.port",
    "client.address",
    "client.port",
    "network.peer.address",
    "network.peer.port",
    "network.local.address",
    "network.local.port",
    "network.transport",
    "network.type",
    "network.protocol.name",
    "network.protocol.version",
    "error.type",
];
const HTTP_SPAN: &[&str] = &[
    "http.request.method",
    "http.request.method_original",
    "http.response.status_code",
    "http.route",
    "url.template",
    "url.path",
    "url.query",
    "url.scheme",
    "user_agent.original",
    "http.request.body.size",
    "http.response.body.size",
];
const RPC_SPAN: &[&str] = &["rpc.system.name", "rpc.method", "rpc.response.status_code", "user_agent.original"];
const DB_SPAN: &[&str] = &[
    "db.system.name",
    "db.operation.name",
    "db.query.text",
    "db.namespace",
    "db.response.status_code",
    "db.response.returned_rows",
    "db.collection.name",
    "db.query.summary",
    "db.operation.batch.size",
];
const MESSAGING_SPAN: &[&str] = &[
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.destination.name",
    "messaging.client.id",
    "messaging.batch.message_count",
    "messaging.consumer.group.name",
    "messaging.destination.template",
    "messaging.destination.temporary",
    "messaging.message.body.size",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.rabbitmq.message.delivery_tag",
];
const DNS_SPAN: &[&str] = &["dns.question.name", "dns.answers"];
/// (metric, unit) as semconv defines them; cnflow.* metrics are cnflow's own.
const METRICS: &[(&str, &str)] = &[
    ("http.server.request.duration", "s"),
    ("http.client.request.duration", "s"),
    ("rpc.server.call.duration", "s"),
    ("rpc.client.call.duration", "s"),
    ("db.client.operation.duration", "s"),
    ("messaging.client.operation.duration", "s"),
    ("dns.lookup.duration", "s"),
    ("messaging.client.sent.messages", "{message}"),
    ("messaging.client.consumed.messages", "{message}"),
];
const HTTP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
const DB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/golden/telemetry")
}

fn bless() -> bool {
    std::env::var("CNFLOW_BLESS").is_ok_and(|v| v == "1")
}

fn keys(span: &Value) -> Vec<String> {
    span["attributes"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap().to_string()).collect()
}

/// Check one span's attributes against the semconv family its attributes announce.
fn check_span_semconv(span: &Value) {
    let ks = keys(span);
    let has = |k: &str| ks.iter().any(|x| x == k);
    let family: &[&str] = if has("rpc.system.name") {
        RPC_SPAN
    } else if has("db.system.name") {
        DB_SPAN
    } else if has("messaging.system") {
        MESSAGING_SPAN
    } else if has("dns.question.name") || span["name"].as_str().unwrap().starts_with("DNS") {
        DNS_SPAN
    } else if has("network.protocol.name") && ks.iter().any(|k| k.starts_with("http.") || k.starts_with("url.")) {
        HTTP_SPAN
    } else {
        &[]
    };
    for k in &ks {
        assert!(
            k.starts_with("cnflow.") || GENERAL.contains(&k.as_str()) || family.contains(&k.as_str()),
            "span {:?}: attribute {k} is not a semconv attribute of its kind",
            span["name"]
        );
    }
    let kind = span["kind"].as_i64().unwrap();
    // SERVER, CLIENT, PRODUCER, CONSUMER.
    assert!((2..=5).contains(&kind), "kind {kind}");
    if family == HTTP_SPAN {
        let route_key = if kind == 2 { "http.route" } else { "url.template" };
        let name = span["name"].as_str().unwrap();
        assert!(name == "HTTP" || !name.contains(' ') || has(route_key), "{name}: {route_key} missing");
    }
    assert_eq!(span["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    assert!(span["startTimeUnixNano"].is_string() && span["endTimeUnixNano"].is_string());
}

fn check_metric_semconv(m: &Value) {
    let name = m["name"].as_str().unwrap();
    if name.starts_with("cnflow.") {
        return;
    }
    let (_, unit) = METRICS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("unexpected metric {name}"));
    assert_eq!(m["unit"], *unit, "{name}");
    // Duration histograms, or the messaging message counters (monotonic sums).
    let dps = m["histogram"]["dataPoints"].as_array().or(m["sum"]["dataPoints"].as_array()).unwrap();
    for dp in dps {
        let bounds: Vec<f64> =
            dp["explicitBounds"].as_array().into_iter().flatten().map(|v| v.as_f64().unwrap()).collect();
        match *unit {
            "{message}" => assert!(m["sum"]["isMonotonic"] == true, "{name}"),
            "s" if name.starts_with("db.") => assert_eq!(bounds, DB_BUCKETS),
            "s" => assert_eq!(bounds, HTTP_BUCKETS),
            _ => {}
        }
        for kv in dp["attributes"].as_array().unwrap() {
            let k = kv["key"].as_str().unwrap();
            assert!(
                !matches!(k, "url.path" | "url.query" | "client.address" | "network.peer.address" | "client.port"),
                "{name}: high-cardinality attribute {k}"
            );
        }
    }
}

/// Check every request line; return the lines with cnflow's own counters
/// removed (they belong to other modules and change as those evolve).
fn check_and_normalize(out: &str) -> String {
    let mut lines = Vec::new();
    for line in out.lines() {
        let mut v: Value = serde_json::from_str(line).expect("one JSON request per line");
        if let Some(rs) = v.get_mut("resourceSpans") {
            for r in rs.as_array_mut().unwrap() {
                for ss in r["scopeSpans"].as_array_mut().unwrap() {
                    for s in ss["spans"].as_array_mut().unwrap() {
                        check_span_semconv(s);
                        // Wire-key attributes (TCP sequence numbers) are for the
                        // gateway's stitcher: checked there, not snapshotted here.
                        s["attributes"].as_array_mut().unwrap().retain(|kv| {
                            let k = kv["key"].as_str().unwrap();
                            !k.starts_with("cnflow.tcp.") && !k.starts_with("cnflow.udp.")
                        });
                    }
                }
            }
        } else if let Some(rms) = v.get_mut("resourceMetrics") {
            for rm in rms.as_array_mut().unwrap() {
                for sm in rm["scopeMetrics"].as_array_mut().unwrap() {
                    let ms = sm["metrics"].as_array_mut().unwrap();
                    ms.iter().for_each(check_metric_semconv);
                    ms.retain(|m| {
                        let n = m["name"].as_str().unwrap();
                        !n.starts_with("cnflow.") || n == "cnflow.icmp.echo.rtt"
                    });
                }
                rm["scopeMetrics"].as_array_mut().unwrap().retain(|sm| !sm["metrics"].as_array().unwrap().is_empty());
            }
            rms.as_array_mut().unwrap().retain(|rm| !rm["scopeMetrics"].as_array().unwrap().is_empty());
            if rms.as_array().unwrap().is_empty() {
                continue;
            }
        } else {
            panic!("not an OTLP request: {line}");
        }
        lines.push(serde_json::to_string(&v).unwrap());
    }
    lines.join("\n") + "\n"
}

fn compare(name: &str, actual: &str, create_missing: bool) {
    let path = golden_dir().join(format!("{name}.otlp.jsonl"));
    if bless() || (create_missing && !path.exists()) {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with CNFLOW_BLESS=1", path.display()));
    if expected != actual {
        let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
        let first = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
        panic!(
            "{name}: output differs from {} at line {} (CNFLOW_BLESS=1 to accept)\nexpected: {}\nactual:   {}",
            path.display(),
            first + 1,
            e.get(first).unwrap_or(&"<none>"),
            a.get(first).unwrap_or(&"<none>")
        );
    }
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn samples_of_every_protocol() {
    let host = Arc::new(Identity {
        attributes: vec![
            ("service.name".into(), "unknown_service:cnflow".into()),
            ("host.name".into(), "golden".into()),
            ("os.type".into(), "linux".into()),
        ],
    });
    let buf = Buf::default();
    let mut o = SinkOptions::new(TelemetryConfig::default(), host);
    o.outputs.push(Output::Write(Format::OtlpJson, Box::new(buf.clone())));
    o.ids = IdGen::Seeded(7);
    o.own_metrics = false;
    let mut sink = TelemetrySink::new(o);
    for ex in one_of_each(T0) {
        sink.record(&ex);
    }
    sink.finish(T0 + 1_000_000_000);
    let out = String::from_utf8(buf.0.lock().clone()).unwrap();
    let normalized = check_and_normalize(&out);
    let names: BTreeSet<String> = normalized
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| {
            v["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["scopeSpans"][0]["spans"].as_array().unwrap().clone())
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for expected in [
        "GET /users/{id}",
        "POST /orders",
        "helloworld.Greeter/SayHello",
        "A example.com",
        "SET",
        "produce orders",
        "ICMP echo",
    ] {
        assert!(names.contains(expected), "{expected} not in {names:?}");
    }
    compare("samples", &normalized, false);
}

fn golden_pcaps() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(harness::pcaps_dir())
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // flow_* captures exercise link layers and reassembly, not protocols.
    v.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        (name.ends_with(".pcap") || name.ends_with(".pcapng")) && !name.starts_with("flow_")
    });
    v.sort();
    v
}

fn replay(pcap: &Path) -> String {
    let out = std::process::Command::new(harness::cnflow_bin())
        .args(["replay", pcap.to_str().unwrap(), "--format", "otlp-json"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env("OTEL_RESOURCE_ATTRIBUTES", "host.name=golden")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run cnflow replay");
    assert!(out.status.success(), "replay {}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn golden_captures() {
    let pcaps = golden_pcaps();
    if pcaps.is_empty() {
        eprintln!("no golden captures under {} yet", harness::pcaps_dir().display());
        return;
    }
    for pcap in pcaps {
        let a = replay(&pcap);
        assert_eq!(a, replay(&pcap), "{}: replay output is not deterministic", pcap.display());
        let normalized = check_and_normalize(&a);
        let stem = pcap.file_name().unwrap().to_string_lossy().replace('.', "_");
        compare(&stem, &normalized, true);
    }
}

fn replay_format(pcap: &Path, format: &str) -> Vec<u8> {
    let out = std::process::Command::new(harness::cnflow_bin())
        .args(["replay", pcap.to_str().unwrap(), "--format", format])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env("OTEL_RESOURCE_ATTRIBUTES", "host.name=golden")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run cnflow replay");
    assert!(out.status.success(), "replay {}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `--format otlp` (length-delimited protobuf records) read back with prost:
/// the same requests, in the same order, as `--format otlp-json` prints
/// (compared as JSON values, with cnflow's own counters left out of both since
/// they differ between two runs), and the span counts checked on their own.
#[test]
fn otlp_protobuf_records_equal_the_json_lines() {
    use cnflow::telemetry::stdout::read_otlp_records;
    let pcaps = golden_pcaps();
    let mut spans_total = 0;
    for pcap in pcaps.iter().filter(|p| !p.to_string_lossy().contains("_snap")) {
        let json = String::from_utf8(replay_format(pcap, "otlp-json")).unwrap();
        let records = read_otlp_records(&replay_format(pcap, "otlp")).expect("otlp records decode");
        let from_proto: Vec<String> = records
            .iter()
            .map(|r| match (&r.traces, &r.metrics) {
                (Some(t), None) => serde_json::to_string(t).unwrap(),
                (None, Some(m)) => serde_json::to_string(m).unwrap(),
                other => panic!("a record holds exactly one request: {other:?}"),
            })
            .collect::<Vec<_>>();
        assert_eq!(
            check_and_normalize(&json),
            check_and_normalize(&(from_proto.join("\n") + "\n")),
            "{}",
            pcap.display()
        );
        let json_spans: usize = json
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .flat_map(|v| v["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .map(|s| s["spans"].as_array().map_or(0, Vec::len))
            .sum();
        let proto_spans: usize = records
            .iter()
            .filter_map(|r| r.traces.as_ref())
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(proto_spans, json_spans, "{}", pcap.display());
        spans_total += proto_spans;
    }
    assert!(spans_total > 100, "the golden captures give spans: {spans_total}");
}
