//! End to end against an independent OTLP collector (rotel, PyPI):
//! real HTTP traffic in a network namespace is captured with tcpdump, replayed
//! by `cnflow replay` with OTEL_EXPORTER_OTLP_ENDPOINT pointing at rotel, and
//! rotel forwards over OTLP/gRPC to a small receiver in this test. Asserts on
//! what arrived: span names, kinds, attributes, traceparent adoption,
//! parent/child between CLIENT and SERVER spans over loopback, and a bounded
//! load (sequential + pipelined requests) giving exactly N spans and a
//! request histogram count of N.
//!
//! Needs root, `ip`, `tcpdump`, `python3` and rotel (`bash .ci/setup.sh`).
#[path = "../harness/mod.rs"]
mod harness;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

const N_SEQUENTIAL: usize = 25;
const N_PIPELINED: usize = 15;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Default, Clone)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.traces
            .lock()
            .unwrap()
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
    fn clear(&self) {
        self.traces.lock().unwrap().clear();
        self.metrics.lock().unwrap().clear();
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// Kills (by pid) and reaps a child we started, even when the test fails.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Network namespace + veth pair, removed on drop.
struct Netns {
    ns: String,
    host_if: String,
    ns_if: String,
}
impl Netns {
    fn new() -> Self {
        let id = std::process::id() % 10_000;
        let ns = format!("cnfl-tel-{id}");
        let (host_if, ns_if) = (format!("tlh{id}"), format!("tln{id}"));
        let n = Netns { ns: ns.clone(), host_if: host_if.clone(), ns_if: ns_if.clone() };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip").args(["link", "del", &host_if]).status();
        for args in [
            vec!["netns", "add", &ns],
            vec!["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if],
            vec!["link", "set", &ns_if, "netns", &ns],
            vec!["addr", "add", "10.200.77.1/24", "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec!["-n", &ns, "addr", "add", "10.200.77.2/24", "dev", &ns_if],
            vec!["-n", &ns, "link", "set", &ns_if, "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ] {
            let ok = Command::new("ip").args(&args).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "ip {args:?} failed");
        }
        n
    }
    fn exec(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(cmd);
        c
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn rotel_bin() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import rotel,os;print(os.path.join(os.path.dirname(rotel.__file__),'rotel-agent'))"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    p.exists().then_some(p)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HTTP/1.1 keep-alive server: 200 "ok" for every GET, `/status/NNN` answers NNN.
const SERVER_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

fn http_requests(addr: &str, paths: &[String], pipelined: bool, extra_header: Option<&str>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = |p: &str| {
        format!(
            "GET {p} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cnflow-e2e\r\n{}\r\n",
            extra_header.map(|h| format!("{h}\r\n")).unwrap_or_default()
        )
    };
    let read_responses = |s: &mut TcpStream, n: usize| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while buf.windows(4).filter(|w| *w == b"\r\n\r\n").count() < n || !buf.ends_with(b"ok") {
            let k = s.read(&mut chunk).expect("response");
            assert!(k > 0, "server closed early");
            buf.extend_from_slice(&chunk[..k]);
        }
    };
    if pipelined {
        let all: String = paths.iter().map(|p| req(p)).collect();
        s.write_all(all.as_bytes()).unwrap();
        read_responses(&mut s, paths.len());
    } else {
        for p in paths {
            s.write_all(req(p).as_bytes()).unwrap();
            read_responses(&mut s, 1);
        }
    }
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    })
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

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tcpdump(ns: &Netns, iface: &str, file: &Path) -> Proc {
    let child = ns
        .exec(&[
            "tcpdump",
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "0",
            "-i",
            iface,
            "-w",
            file.to_str().unwrap(),
            "tcp",
            "port",
            "8080",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    Proc(child)
}

fn stop_tcpdump(p: Proc) {
    std::thread::sleep(Duration::from_millis(1000));
    // SIGINT lets tcpdump write out its buffer.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0.id() as i32), nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut p = p;
    while p.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replay_to_rotel_spans_and_metrics() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let Some(rotel) = rotel_bin() else {
        panic!("rotel not installed (bash .ci/setup.sh installs it)");
    };
    assert!(have("tcpdump") && have("python3"), "tcpdump and python3 are required");
    let dir = tempfile::tempdir().unwrap();

    // Receiver behind rotel.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let received = Received::default();
    let recv_port = free_port();
    {
        let r = received.clone();
        rt.spawn(async move {
            tonic::transport::Server::builder()
                // rotel compresses its exports with gzip by default.
                .add_service(TraceServiceServer::new(r.clone()).accept_compressed(CompressionEncoding::Gzip))
                .add_service(MetricsServiceServer::new(r).accept_compressed(CompressionEncoding::Gzip))
                .serve(([127, 0, 0, 1], recv_port).into())
                .await
                .unwrap();
        });
    }
    wait_port(([127, 0, 0, 1], recv_port).into(), "receiver");
    let (grpc_port, http_port) = (free_port(), free_port());
    let _rotel = Proc(
        Command::new(&rotel)
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc_port}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{http_port}"),
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                &format!("http://127.0.0.1:{recv_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel"),
    );
    wait_port(([127, 0, 0, 1], grpc_port).into(), "rotel");

    // Traffic in a namespace: host 10.200.77.1 → server 10.200.77.2:8080.
    let ns = Netns::new();
    let _server = Proc(ns.exec(&["python3", "-c", SERVER_PY, "8080"]).spawn().unwrap());
    let veth_pcap = dir.path().join("veth.pcap");
    // On the server's interface: client→server packets arrive (ingress), so spans are SERVER.
    let dump = tcpdump(&ns, &ns.ns_if.clone(), &veth_pcap);
    wait_port("10.200.77.2:8080".parse().unwrap(), "http server");
    let seq: Vec<String> = (0..N_SEQUENTIAL).map(|i| format!("/items/{i}")).collect();
    http_requests("10.200.77.2:8080", &seq, false, None);
    let pipe: Vec<String> = (0..N_PIPELINED).map(|i| format!("/items/{}", 1000 + i)).collect();
    http_requests("10.200.77.2:8080", &pipe, true, None);
    http_requests("10.200.77.2:8080", &["/traced".to_string()], false, Some(&format!("traceparent: {TRACEPARENT}")));
    http_requests("10.200.77.2:8080", &["/status/503".to_string()], false, None);
    stop_tcpdump(dump);
    let _ = std::fs::copy(&veth_pcap, std::env::temp_dir().join("cnflow-e2e-rotel-veth.pcap"));
    let total = N_SEQUENTIAL + N_PIPELINED + 2;

    replay_to(&veth_pcap, grpc_port);
    wait_for("spans", || received.spans().len() >= total);
    wait_for("metrics", || {
        received.metrics.lock().unwrap().iter().any(|m| {
            m.resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .any(|m| m.name == "http.server.request.duration")
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let spans = received.spans();
    assert_eq!(
        spans.len(),
        total,
        "exactly one span per request: {:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for s in &spans {
        assert_eq!(s.kind, 2, "{}: captured on the server side → SERVER", s.name);
        assert_eq!(str_attr(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(str_attr(s, "server.port").as_deref(), Some("8080"));
        assert_eq!(str_attr(s, "client.address").as_deref(), Some("10.200.77.1"));
        assert_eq!(str_attr(s, "network.peer.address").as_deref(), Some("10.200.77.1"));
        assert_eq!(str_attr(s, "network.protocol.version").as_deref(), Some("1.1"));
        assert_eq!(str_attr(s, "user_agent.original").as_deref(), Some("cnflow-e2e"));
    }
    let items = spans.iter().filter(|s| s.name == "GET /items/{id}").count();
    assert_eq!(items, N_SEQUENTIAL + N_PIPELINED);
    let traced = spans.iter().find(|s| s.name == "GET /traced").expect("traced span");
    assert_eq!(hex::encode(&traced.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(&traced.parent_span_id), "00f067aa0ba902b7");
    let failed = spans.iter().find(|s| s.name.starts_with("GET /status")).unwrap();
    assert_eq!(failed.status.as_ref().unwrap().code, 2, "503 on a SERVER span is an error");
    // Resource from OTEL_SERVICE_NAME, as the SDKs do.
    let res = &received.traces.lock().unwrap()[0].resource_spans[0].resource.clone().unwrap();
    assert!(res.attributes.iter().any(|kv| kv.key == "service.name"
        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == "e2e-host")));
    let count: u64 = received
        .metrics
        .lock()
        .unwrap()
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "http.server.request.duration")
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|d| d.count).collect(),
            _ => vec![],
        })
        .sum();
    assert_eq!(count as usize, total, "request histogram counts every request once");

    // Loopback inside the namespace: both ends local → CLIENT and SERVER spans,
    // the SERVER span the child of the CLIENT span.
    received.clear();
    let lo_pcap = dir.path().join("lo.pcap");
    let dump = tcpdump(&ns, "lo", &lo_pcap);
    let status = ns
        .exec(&[
            "python3",
            "-c",
            "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/local/7').read()",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    stop_tcpdump(dump);
    replay_to(&lo_pcap, grpc_port);
    wait_for("loopback spans", || received.spans().len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let spans = received.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client = spans.iter().find(|s| s.kind == 3).expect("CLIENT span");
    let server = spans.iter().find(|s| s.kind == 2).expect("SERVER span");
    assert_eq!(client.name, "GET /local/{id}");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(server.parent_span_id, client.span_id);
    assert!(client.parent_span_id.is_empty());
    assert_eq!(str_attr(client, "url.template").as_deref(), Some("/local/{id}"));
    assert_eq!(str_attr(server, "http.route").as_deref(), Some("/local/{id}"));
    drop(rt);
}
