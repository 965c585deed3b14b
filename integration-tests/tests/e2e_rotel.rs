//! End to end against an independent OTLP collector (rotel, PyPI), which
//! forwards what it receives over OTLP/gRPC to a receiver in this test.
//!
//! - live: real traffic in network namespaces → `cnflow run` with eBPF capture
//!   → OTLP (gRPC, and HTTP/protobuf) → rotel → receiver. An HTTP load
//!   (sequential, pipelined, one traceparent, one 503), pipelined Redis SETs
//!   and a loopback exchange (CLIENT parent, SERVER child), with exact span
//!   and histogram counts. cnflow's own export connections are captured too
//!   and must not become spans.
//! - replay: the same HTTP load recorded with tcpdump and sent by
//!   `cnflow replay` (deterministic path), checked with the same assertions.
//!
//! Needs root, `ip`, `tcpdump`, `python3`, redis and rotel (`bash .ci/setup.sh`).
#[path = "../harness/agent.rs"]
mod agent;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use agent::{redis, redis_benchmark_set, start_agent, stop_agent};
use netns::{read, ChildGuard, NetnsPair};
use otel::{
    check_loopback_pair, is_otlp_export_span, str_attr, wait_for, HttpLoad, Receiver, Rotel, SERVER, SERVER_PY,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LOOPBACK_GET: &str = "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/local/7').read()";

fn http_server(ns: &str, ip: &str) -> ChildGuard {
    let mut c = NetnsPair::cmd(ns, "python3");
    c.args(["-c", SERVER_PY, "8080"]);
    let g = ChildGuard::new(c.spawn().unwrap(), "http server");
    agent::wait_port(ns, ip, 8080);
    g
}

fn tcpdump(ns: &str, iface: &str, file: &Path) -> ChildGuard {
    let log = file.with_extension("log");
    let mut c = NetnsPair::cmd(ns, "tcpdump");
    // A large buffer: on a busy machine the default one drops packets.
    c.args(["--immediate-mode", "-U", "-B", "32768", "-n", "-s", "0", "-i", iface, "-w", file.to_str().unwrap()])
        .args(["tcp", "port", "8080"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let g = ChildGuard::new(c.spawn().unwrap(), "tcpdump");
    // Traffic sent before the capture is open would make a mid-connection pcap.
    let ready = netns::wait_until(Duration::from_secs(10), || read(&log).contains("listening on"));
    assert!(ready, "tcpdump did not start: {}", read(&log));
    g
}

/// Stops tcpdump; false when the kernel dropped packets (the recording has holes).
fn stop_tcpdump(mut g: ChildGuard, file: &Path) -> bool {
    std::thread::sleep(Duration::from_millis(1000));
    // SIGINT lets tcpdump write out its buffer and its statistics.
    g.signal(libc::SIGINT);
    let _ = g.wait_timeout(Duration::from_secs(5));
    let log = read(&file.with_extension("log"));
    let complete = log.lines().any(|l| l.trim() == "0 packets dropped by kernel");
    if !complete {
        eprintln!("tcpdump lost packets, recording again: {log}");
    }
    complete
}

/// Records what `traffic` sends on `iface` in `ns`, again if tcpdump lost packets.
fn record(ns: &str, iface: &str, file: &Path, traffic: impl Fn()) {
    for _ in 0..3 {
        let dump = tcpdump(ns, iface, file);
        traffic();
        if stop_tcpdump(dump, file) {
            return;
        }
    }
    panic!("tcpdump kept dropping packets");
}

fn replay_to(pcap: &Path, rotel_grpc: u16) {
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", pcap.to_str().unwrap(), "--format", "text", "--stats"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{rotel_grpc}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "e2e-host")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    eprintln!(
        "replay {}:\n{}{}",
        pcap.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "replay failed");
}

fn assert_service_name(received: &otel::Received, want: &str) {
    let traces = received.traces.lock().unwrap();
    let names: Vec<Option<String>> = traces
        .iter()
        .flat_map(|t| &t.resource_spans)
        .map(|r| r.resource.as_ref().and_then(|r| otel::str_value(&r.attributes, "service.name")))
        .collect();
    assert!(names.iter().any(|n| n.as_deref() == Some(want)), "service.name {want} not among {names:?}");
}

#[test]
fn replay_to_rotel_spans_and_metrics() {
    let pair = NetnsPair::new("rply");
    let dir = tempfile::tempdir().unwrap();
    let recv = Receiver::start(None);
    let rotel = Rotel::start(None, recv.port);
    let received = &recv.received;

    // Recorded on the server's interface: client→server packets arrive
    // (ingress), so the replayed spans are SERVER spans.
    let _server = http_server(&pair.ns_b, &pair.ip_b);
    let veth_pcap = dir.path().join("veth.pcap");
    let load = HttpLoad { sequential: 25, pipelined: 15 };
    record(&pair.ns_b, &pair.veth_b, &veth_pcap, || load.run(Some(&pair.ns_a), &format!("{}:8080", pair.ip_b)));

    replay_to(&veth_pcap, rotel.grpc_port);
    wait_for("spans", Duration::from_secs(20), || received.spans().len() >= load.total());
    wait_for("metrics", Duration::from_secs(20), || received.has_metric("http.server.request.duration"));
    std::thread::sleep(Duration::from_millis(500));
    load.check(received, &received.spans(), &pair.ip_a, 8080, 0);
    // Resource from OTEL_SERVICE_NAME, as the SDKs do.
    assert_service_name(received, "e2e-host");

    // Loopback inside the namespace: both ends local → CLIENT and SERVER spans.
    received.clear();
    let lo_pcap = dir.path().join("lo.pcap");
    record(&pair.ns_b, "lo", &lo_pcap, || {
        NetnsPair::exec(&pair.ns_b, &["python3", "-c", LOOPBACK_GET], Duration::from_secs(10));
    });
    replay_to(&lo_pcap, rotel.grpc_port);
    wait_for("loopback spans", Duration::from_secs(20), || received.spans().len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let spans = received.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    check_loopback_pair(&spans, "GET /local/{id}", "/local/{id}");
}

/// Servers in namespace b (HTTP :8080, Redis :6379), rotel and the receiver on
/// b's loopback, `cnflow run` in b capturing b's veth and lo; clients in a.
struct LiveSetup {
    pair: NetnsPair,
    dir: tempfile::TempDir,
    recv: Receiver,
    rotel: Rotel,
    _servers: Vec<ChildGuard>,
}

impl LiveSetup {
    fn new(tag: &str) -> Self {
        let pair = NetnsPair::new(tag);
        let dir = tempfile::tempdir().unwrap();
        let recv = Receiver::start(Some(&pair.ns_b));
        let rotel = Rotel::start(Some(&pair.ns_b), recv.port);
        let servers = vec![http_server(&pair.ns_b, &pair.ip_b), redis(&pair.ns_b, &pair.ip_b)];
        agent::wait_port(&pair.ns_b, &pair.ip_b, 6379);
        LiveSetup { pair, dir, recv, rotel, _servers: servers }
    }

    /// `cnflow <sub>` exporting to rotel with `protocol` on `port`. rotel's own
    /// ports are captured as well (on lo), so cnflow's export connection is
    /// in the capture and has to be recognised as its own.
    fn agent(&self, sub: &str, protocol: &str, port: u16, extra_env: &[(&str, &str)]) -> ChildGuard {
        let endpoint = format!("http://127.0.0.1:{port}");
        let ports = format!("8080,6379,{},{}", self.rotel.grpc_port, self.rotel.http_port);
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "e2e-host"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("CNFLOW_CAPTURE_PORTS", ports.as_str()),
            ("RUST_LOG", "info"),
        ];
        env.extend_from_slice(extra_env);
        let ifaces = format!("{},lo", self.pair.veth_b);
        start_agent(&self.pair.ns_b, &ifaces, sub, &["--format", "none"], &env, self.dir.path())
    }

    fn agent_log(&self) -> String {
        read(&self.dir.path().join("agent.err"))
    }
}

#[test]
fn live_agent_to_rotel_over_grpc() {
    let s = LiveSetup::new("lgrpc");
    let received = &s.recv.received;
    let agent = s.agent("run", "grpc", s.rotel.grpc_port, &[]);

    let load = HttpLoad { sequential: 20, pipelined: 10 };
    load.run(Some(&s.pair.ns_a), &format!("{}:8080", s.pair.ip_b));
    // A multiple of the pipeline depth: redis-benchmark sends whole pipelines.
    const REDIS_N: usize = 256;
    redis_benchmark_set(&s.pair.ns_a, &s.pair.ip_b, REDIS_N);
    NetnsPair::exec(&s.pair.ns_b, &["python3", "-c", LOOPBACK_GET], Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    stop_agent(agent);
    let log = s.agent_log();

    let want = load.total() + REDIS_N + 2;
    wait_for("spans", Duration::from_secs(20), || received.spans().len() >= want);
    wait_for("metrics", Duration::from_secs(20), || received.has_metric("db.client.operation.duration"));
    std::thread::sleep(Duration::from_millis(1000));
    let spans = received.spans();
    assert_service_name(received, "e2e-host");

    // HTTP from namespace a: exact counts; the loopback exchange adds one
    // more SERVER measurement to the request histogram.
    let from_a: Vec<_> = spans
        .iter()
        .filter(|sp| {
            str_attr(sp, "server.port").as_deref() == Some("8080")
                && str_attr(sp, "client.address").as_deref() == Some(s.pair.ip_a.as_str())
        })
        .cloned()
        .collect();
    load.check(received, &from_a, &s.pair.ip_a, 8080, 1);

    // Pipelined Redis: one SERVER span per SET, db.client.operation.duration counts them.
    let sets: Vec<_> = spans.iter().filter(|sp| sp.name == "SET").collect();
    assert_eq!(sets.len(), REDIS_N, "one span per pipelined SET");
    for sp in &sets {
        assert_eq!(sp.kind, SERVER);
        assert_eq!(str_attr(sp, "db.system.name").as_deref(), Some("redis"));
        assert_eq!(str_attr(sp, "db.operation.name").as_deref(), Some("SET"));
        assert_eq!(str_attr(sp, "db.query.text").as_deref(), Some("SET ? ?"), "arguments masked");
        assert_eq!(str_attr(sp, "server.port").as_deref(), Some("6379"));
        assert_eq!(str_attr(sp, "network.peer.address").as_deref(), Some(s.pair.ip_a.as_str()));
    }
    let set_count = received.histogram_count_where("db.client.operation.duration", |attrs| {
        otel::str_value(attrs, "db.operation.name").as_deref() == Some("SET")
    });
    assert_eq!(set_count as usize, REDIS_N, "db.client.operation.duration{{SET}} count");

    // Loopback: CLIENT parent and SERVER child from one capture.
    let local: Vec<_> = spans.iter().filter(|sp| sp.name == "GET /local/{id}").cloned().collect();
    assert_eq!(local.len(), 2, "{local:#?}");
    check_loopback_pair(&local, "GET /local/{id}", "/local/{id}");

    // cnflow's export to rotel crossed a captured interface and port, and
    // must not have come back as spans.
    let loops: Vec<_> = spans.iter().filter(|sp| is_otlp_export_span(sp)).map(|sp| &sp.name).collect();
    assert!(loops.is_empty(), "cnflow described its own exports: {loops:?}");
    assert!(log.contains("cnflow.telemetry.own_exchanges_skipped="), "own exports were not seen/skipped: {log}");
    assert!(log.contains("ring_full=0"), "kernel ring drops: {log}");
    check_self_telemetry(received);
}

/// cnflow's own traces and metrics (SDK) arrived as service.name=cnflow-agent:
/// a CLIENT span per OTLP request, the capture attach spans, and the export
/// latency histogram.
fn check_self_telemetry(received: &otel::Received) {
    wait_for("self-telemetry", Duration::from_secs(20), || {
        received.self_spans().iter().any(|sp| sp.name == "otlp.export") && received.has_metric("cnflow.export.duration")
    });
    let own = received.self_spans();
    let exports: Vec<_> = own.iter().filter(|sp| sp.name == "otlp.export").collect();
    assert!(exports.iter().all(|sp| sp.kind == otel::CLIENT), "{exports:#?}");
    assert!(exports.iter().any(|sp| str_attr(sp, "cnflow.export.signal").as_deref() == Some("traces")
        && str_attr(sp, "cnflow.export.outcome").as_deref() == Some("delivered")));
    let attached: Vec<_> =
        own.iter().filter(|sp| sp.name == "capture.attach").filter_map(|sp| str_attr(sp, "iface")).collect();
    assert!(attached.iter().any(|i| i == "lo"), "capture.attach spans: {attached:?}");
    let services = received.metric_services("cnflow.export.duration");
    assert!(!services.is_empty() && services.iter().all(|s| s == otel::SELF_SERVICE), "{services:?}");
}

#[test]
fn live_agent_to_rotel_over_http_protobuf() {
    let s = LiveSetup::new("lhttp");
    let received = &s.recv.received;
    // `cnflow agent` outside a cluster: standalone capture, as the DaemonSet
    // binary behaves on a host without Kubernetes.
    let agent = s.agent("agent", "http/protobuf", s.rotel.http_port, &[("CNFLOW_HEALTH_ADDR", "off")]);
    let load = HttpLoad { sequential: 5, pipelined: 5 };
    load.run(Some(&s.pair.ns_a), &format!("{}:8080", s.pair.ip_b));
    std::thread::sleep(Duration::from_millis(1500));
    stop_agent(agent);
    let log = s.agent_log();

    wait_for("spans", Duration::from_secs(20), || received.spans().len() >= load.total());
    wait_for("metrics", Duration::from_secs(20), || received.has_metric("http.server.request.duration"));
    std::thread::sleep(Duration::from_millis(1000));
    let spans = received.spans();
    let loops: Vec<_> = spans.iter().filter(|sp| is_otlp_export_span(sp)).map(|sp| &sp.name).collect();
    assert!(loops.is_empty(), "cnflow described its own exports: {loops:?}");
    load.check(received, &spans, &s.pair.ip_a, 8080, 0);
    assert!(log.contains("cnflow.telemetry.own_exchanges_skipped="), "own exports were not seen/skipped: {log}");
    check_self_telemetry(received);
}

/// With the collector down the agent still captures (spans on stdout), says
/// clearly that export fails, and exits cleanly and promptly.
#[test]
fn agent_keeps_capturing_when_the_collector_is_down() {
    let pair = NetnsPair::new("down");
    let dir = tempfile::tempdir().unwrap();
    let _server = http_server(&pair.ns_b, &pair.ip_b);
    // Nothing listens on port 9 in the fresh namespace.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"), ("RUST_LOG", "info")];
    let agent = start_agent(&pair.ns_b, &pair.veth_b, "run", &["--format", "text"], &env, dir.path());
    let load = HttpLoad { sequential: 3, pipelined: 2 };
    load.run(Some(&pair.ns_a), &format!("{}:8080", pair.ip_b));
    // Long enough for the first data and self-telemetry exports to fail.
    std::thread::sleep(Duration::from_secs(6));
    let stopped = std::time::Instant::now();
    stop_agent(agent);
    assert!(stopped.elapsed() < Duration::from_secs(15), "shutdown took {:?}", stopped.elapsed());
    let out = read(&dir.path().join("agent.out"));
    let log = read(&dir.path().join("agent.err"));
    let lines = out.lines().filter(|l| l.contains(" SERVER ") && l.contains("\"GET /")).count();
    assert_eq!(lines, load.total(), "spans on stdout:\n{out}\n{log}");
    assert!(log.contains("OTLP export failed, retrying"), "no warning about the data export: {log}");
    assert!(log.contains("cnflow's own telemetry cannot be exported"), "no warning about self-telemetry: {log}");
}

/// `cnflow gateway` sends its own traces and metrics (service.name
/// cnflow-gateway) to the endpoint it forwards to, here rotel.
#[test]
fn gateway_exports_its_own_telemetry_to_rotel() {
    let dir = tempfile::tempdir().unwrap();
    let recv = Receiver::start(None);
    let rotel = Rotel::start(None, recv.port);
    let [grpc, http] = otel::free_ports_in(None);
    let mut c = Command::new(harness::cnflow_bin());
    c.arg("gateway")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", rotel.grpc_port))
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "50")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("gw.err")).unwrap());
    let mut gw = ChildGuard::new(c.spawn().unwrap(), "cnflow gateway");
    otel::wait_port(None, ([127, 0, 0, 1], http).into(), "gateway HTTP");
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"app"}}]},"scopeSpans":[{"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":"hello","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000"}]}]}]}"#;
    let out = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-H", "content-type: application/json", "--data-binary", body])
        .arg(format!("http://127.0.0.1:{http}/v1/traces"))
        .status()
        .unwrap();
    assert!(out.success(), "gateway refused the request");
    let received = &recv.received;
    wait_for("forwarded span", Duration::from_secs(20), || received.spans().iter().any(|s| s.name == "hello"));
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_timeout(Duration::from_secs(20)).is_some_and(|s| s.success()), "gateway did not exit cleanly");
    wait_for("gateway self-telemetry", Duration::from_secs(20), || {
        received.spans_where(|s| s == "cnflow-gateway").iter().any(|s| s.name == "otlp.export")
            && received.metric_services("cnflow.export.duration").iter().any(|s| s == "cnflow-gateway")
    });
    let log = read(&dir.path().join("gw.err"));
    assert!(log.contains("exporting cnflow's own traces and metrics"), "{log}");
}
