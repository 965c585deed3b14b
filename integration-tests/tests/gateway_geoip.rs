//! GeoIP enrichment with MaxMind's official test databases (from the PyPI
//! maxminddb 3.2.0 sdist, committed in integration-tests/geoip/) and with
//! databases written by mmdb-writer; corrupt databases stop the gateway with
//! an error naming the variable.
#[path = "../harness/mod.rs"]
mod harness;

use cnflow::gateway::geo_attributes::enrich_traces;
use cnflow::gateway::geoip::GeoIp;
use cnflow::telemetry::resource::{find, kv_str};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn db(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration-tests/geoip").join(name).to_string_lossy().into()
}

fn official() -> GeoIp {
    GeoIp::open(Some(&db("GeoLite2-City-Test.mmdb")), Some(&db("GeoLite2-ASN-Test.mmdb")), 100).unwrap().unwrap()
}

fn s(v: &str) -> Option<&'static Value> {
    Some(Box::leak(Box::new(Value::StringValue(v.into()))))
}

#[test]
fn official_test_databases_known_addresses() {
    let g = official();
    let london = g.lookup("81.2.69.142".parse().unwrap()).unwrap();
    assert_eq!(london.continent_code.as_deref(), Some("EU"));
    assert_eq!(london.country_iso_code.as_deref(), Some("GB"));
    assert_eq!(london.region_iso_code.as_deref(), Some("GB-ENG"));
    assert_eq!(london.locality_name.as_deref(), Some("London"));
    assert_eq!((london.lat, london.lon), (Some(51.5142), Some(-0.0931)));
    let milton = g.lookup("216.160.83.56".parse().unwrap()).unwrap();
    assert_eq!(milton.country_iso_code.as_deref(), Some("US"));
    assert_eq!(milton.postal_code.as_deref(), Some("98354"));
    assert_eq!(milton.locality_name.as_deref(), Some("Milton"));
    let telstra = g.lookup("1.128.0.1".parse().unwrap()).unwrap();
    assert_eq!(telstra.as_number, Some(1221));
    assert_eq!(telstra.as_organization.as_deref(), Some("Telstra Pty Ltd"));
    for private in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "169.254.0.1", "fd00::1", "::1", "10.200.0.5"] {
        assert!(g.lookup(private.parse().unwrap()).is_none(), "{private}");
    }
}

#[test]
fn spans_get_role_prefixed_attributes_only_for_public_addresses() {
    let g = official();
    let span = |name: &str, attrs: Vec<KeyValue>| Span { name: name.into(), attributes: attrs, ..Default::default() };
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span("one", vec![kv_str("client.address", "81.2.69.142"), kv_str("server.address", "10.0.0.1")]),
                    span("two", vec![kv_str("client.address", "81.2.69.142"), kv_str("server.address", "1.128.0.1")]),
                    span(
                        "private",
                        vec![kv_str("client.address", "192.168.0.9"), kv_str("server.address", "10.1.1.1")],
                    ),
                    span("hostname", vec![kv_str("server.address", "example.com")]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(enrich_traces(&g, &mut req), 2);
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let one = &spans[0].attributes;
    assert_eq!(find(one, "geo.country.iso_code"), s("GB"));
    assert_eq!(find(one, "geo.locality.name"), s("London"));
    assert_eq!(find(one, "geo.location.lat"), Some(&Value::DoubleValue(51.5142)));
    let two = &spans[1].attributes;
    assert_eq!(find(two, "client.geo.country.iso_code"), s("GB"));
    assert_eq!(find(two, "server.as.number"), Some(&Value::IntValue(1221)));
    assert_eq!(find(two, "server.as.organization.name"), s("Telstra Pty Ltd"));
    assert!(find(two, "geo.country.iso_code").is_none());
    for sp in &spans[2..] {
        assert!(sp.attributes.iter().all(|a| !a.key.contains("geo.") && !a.key.contains("as.")), "{}", sp.name);
    }
}

#[derive(serde::Serialize)]
struct Country {
    country: std::collections::BTreeMap<&'static str, &'static str>,
}

fn write_db(path: &std::path::Path, net: &str, iso: &'static str) {
    let mut w = mmdb_writer::Writer::builder("Test-Country").description(&[("en", "cnflow test")]).build();
    w.insert(net.parse::<ipnet::IpNet>().unwrap(), &Country { country: [("iso_code", iso)].into() }).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, w.to_bytes().unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn mmdb_writer_database_ipv6_and_reload_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("country.mmdb");
    write_db(&p, "2a02:1234::/32", "DE");
    let g = GeoIp::open(Some(p.to_str().unwrap()), None, 10).unwrap().unwrap();
    let ip = "2a02:1234::42".parse().unwrap();
    assert_eq!(g.lookup(ip).unwrap().country_iso_code.as_deref(), Some("DE"));
    assert!(g.lookup("2a03::1".parse().unwrap()).is_none());
    assert!(!g.reload_if_changed());
    std::thread::sleep(Duration::from_millis(20));
    write_db(&p, "2a02:1234::/32", "FR");
    assert!(g.reload_if_changed());
    assert_eq!(g.lookup(ip).unwrap().country_iso_code.as_deref(), Some("FR"), "cache cleared on reload");
    // A broken replacement keeps the loaded database.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&p, b"garbage, not an mmdb file at all").unwrap();
    assert!(!g.reload_if_changed());
    assert_eq!(g.lookup(ip).unwrap().country_iso_code.as_deref(), Some("FR"));
}

/// Runs `cnflow gateway` with `env`; returns (exited?, stderr) after at most `wait`.
fn run_gateway(env: &[(&str, String)], wait: Duration) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut cmd = std::process::Command::new(harness::cnflow_bin());
    cmd.arg("gateway")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > wait {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&err_path).unwrap_or_default())
}

#[test]
fn bad_databases_stop_the_gateway_naming_the_variable() {
    for (var, file) in [
        ("CNFLOW_GATEWAY_GEOIP_CITY_DB", db("libmaxminddb-corrupt-search-tree.mmdb")),
        ("CNFLOW_GATEWAY_GEOIP_ASN_DB", db("invalid-data-record-offset.mmdb")),
        ("CNFLOW_GATEWAY_GEOIP_CITY_DB", "/nonexistent/GeoLite2-City.mmdb".to_string()),
    ] {
        let (status, stderr) = run_gateway(&[(var, file.clone())], Duration::from_secs(20));
        let status = status.unwrap_or_else(|| panic!("gateway kept running with {var}={file}: {stderr}"));
        assert!(!status.success());
        assert!(stderr.contains(var), "{var}={file}: {stderr}");
    }
}

#[test]
fn no_database_means_enrichment_off_with_one_log_line() {
    let (status, stderr) = run_gateway(&[], Duration::from_secs(3));
    assert!(status.is_none(), "gateway should keep running: {stderr}");
    assert_eq!(stderr.matches("GeoIP enrichment off").count(), 1, "{stderr}");
}
