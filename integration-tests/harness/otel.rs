//! OTLP end-to-end helpers shared by the rotel tests: a gRPC receiver that
//! records what arrives, rotel (PyPI, an independent OTLP collector) in front
//! of it, an HTTP/1.1 test server and client, and the assertions on an HTTP
//! load that the replay and live variants share.
//! Include with `#[path = "../harness/otel.rs"] mod otel;` (needs `netns.rs` as `mod netns`).
#![allow(dead_code)]

use crate::netns::ChildGuard;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// service.name of cnflow's own telemetry (SDK) from `cnflow run`/`agent`.
pub const SELF_SERVICE: &str = "cnflow-agent";

/// Runs `f` in a thread switched into network namespace `ns` (setns(2) is
/// per thread), so sockets it creates live there.
pub fn in_netns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.map(str::to_string);
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            let h = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns handle");
            nix::sched::setns(&h, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        f()
    })
    .join()
    .expect("netns thread")
}

pub fn wait_port(ns: Option<&str>, addr: SocketAddr, what: &str) {
    let ok = in_netns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    });
    assert!(ok, "{what} did not listen on {addr}");
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port that is free on 127.0.0.1 of the test's namespace (a fresh
/// namespace has every port free).
pub fn free_port() -> u16 {
    let [p] = crate::harness::free_ports();
    p
}

/// `N` distinct ports free on 127.0.0.1 of namespace `ns` (host if None),
/// taken in the namespace where they will be used, so a port already taken
/// there (the receiver's) is never returned.
pub fn free_ports_in<const N: usize>(ns: Option<&str>) -> [u16; N] {
    in_netns(ns, crate::harness::free_ports)
}

/// Everything the receiver got, in arrival order.
#[derive(Default, Clone)]
pub struct Received {
    pub traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
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

pub fn str_value(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    })
}

pub fn str_attr(span: &Span, key: &str) -> Option<String> {
    str_value(&span.attributes, key)
}

impl Received {
    /// Spans whose resource's service.name satisfies `service`.
    pub fn spans_where(&self, service: impl Fn(&str) -> bool) -> Vec<Span> {
        self.traces
            .lock()
            .unwrap()
            .iter()
            .flat_map(|t| &t.resource_spans)
            .filter(|r| {
                let name = r.resource.as_ref().and_then(|r| str_value(&r.attributes, "service.name"));
                service(name.as_deref().unwrap_or(""))
            })
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
    /// Spans of captured traffic (not cnflow's own telemetry).
    pub fn spans(&self) -> Vec<Span> {
        self.spans_where(|s| s != SELF_SERVICE)
    }
    /// cnflow's own spans (SDK, service.name cnflow-agent).
    pub fn self_spans(&self) -> Vec<Span> {
        self.spans_where(|s| s == SELF_SERVICE)
    }
    pub fn clear(&self) {
        self.traces.lock().unwrap().clear();
        self.metrics.lock().unwrap().clear();
    }
    pub fn has_metric(&self, name: &str) -> bool {
        self.metrics.lock().unwrap().iter().any(|m| {
            m.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).any(|m| m.name == name)
        })
    }
    pub fn metric_services(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.metrics.lock().unwrap().iter() {
            for r in &m.resource_metrics {
                if r.scope_metrics.iter().flat_map(|s| &s.metrics).any(|m| m.name == name) {
                    let svc = r.resource.as_ref().and_then(|r| str_value(&r.attributes, "service.name"));
                    out.push(svc.unwrap_or_default());
                }
            }
        }
        out
    }
    /// Histogram count of `name`, summed over series whose attributes pass
    /// `filter`. Each series counts once with its largest count, so repeated
    /// cumulative exports are not double counted (and a single delta export
    /// counts as is).
    pub fn histogram_count_where(&self, name: &str, filter: impl Fn(&[KeyValue]) -> bool) -> u64 {
        let mut series: BTreeMap<String, u64> = BTreeMap::new();
        for m in self.metrics.lock().unwrap().iter() {
            for r in &m.resource_metrics {
                let res = format!("{:?}", r.resource.as_ref().map(|r| &r.attributes));
                for metric in r.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
                    let Some(metric::Data::Histogram(h)) = &metric.data else { continue };
                    for dp in h.data_points.iter().filter(|dp| filter(&dp.attributes)) {
                        let mut attrs: Vec<String> =
                            dp.attributes.iter().map(|kv| format!("{}={:?}", kv.key, kv.value)).collect();
                        attrs.sort();
                        let e = series.entry(format!("{res}|{}", attrs.join(","))).or_default();
                        *e = (*e).max(dp.count);
                    }
                }
            }
        }
        series.values().sum()
    }
    pub fn histogram_count(&self, name: &str) -> u64 {
        self.histogram_count_where(name, |_| true)
    }
}

/// Receiver listening on 127.0.0.1 inside `ns` (or the test's namespace).
pub struct Receiver {
    pub received: Received,
    pub port: u16,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start(ns: Option<&str>) -> Self {
        let listener = in_netns(ns, || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let port = listener.local_addr().unwrap().port();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let received = Received::default();
        let r = received.clone();
        rt.spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(tokio::net::TcpListener::from_std(listener).unwrap());
            tonic::transport::Server::builder()
                // rotel compresses its exports with gzip by default.
                .add_service(TraceServiceServer::new(r.clone()).accept_compressed(CompressionEncoding::Gzip))
                .add_service(MetricsServiceServer::new(r).accept_compressed(CompressionEncoding::Gzip))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Receiver { received, port, rt: Some(rt) }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub fn rotel_bin() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import rotel,os;print(os.path.join(os.path.dirname(rotel.__file__),'rotel-agent'))"])
        .output()
        .expect("python3");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(p.exists(), "rotel not installed (bash .ci/setup.sh installs it)");
    p
}

/// rotel receiving OTLP/gRPC and OTLP/HTTP on 127.0.0.1 inside `ns`,
/// forwarding everything over OTLP/gRPC to `receiver_port`.
pub struct Rotel {
    pub grpc_port: u16,
    pub http_port: u16,
    _proc: ChildGuard,
}

impl Rotel {
    /// Starts rotel, retrying with other ports when it exits before it
    /// listens (a port taken between choosing and binding it); a failure
    /// names rotel's exit status and the end of its log.
    pub fn start(ns: Option<&str>, receiver_port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().expect("rotel log");
        let mut last = String::new();
        for _attempt in 0..3 {
            let [grpc_port, http_port] = free_ports_in(ns);
            let mut c = match ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(rotel_bin());
                    c
                }
                None => Command::new(rotel_bin()),
            };
            c.args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc_port}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{http_port}"),
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                &format!("http://127.0.0.1:{receiver_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("rotel log"));
            let mut g = ChildGuard::new(c.spawn().expect("start rotel"), "rotel");
            let listening = |port: u16| {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                in_netns(ns, move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if listening(grpc_port) && listening(http_port) {
                    return Rotel { grpc_port, http_port, _proc: g };
                }
                if let Ok(Some(status)) = g.child.try_wait() {
                    let out = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let lines: Vec<&str> = out.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    last = format!("rotel exited ({status}) before listening on {grpc_port}/{http_port}:\n{tail}");
                    break;
                }
                if Instant::now() > deadline {
                    panic!("rotel did not listen on 127.0.0.1:{grpc_port}/{http_port} within 30 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("{last}");
    }
}

/// HTTP/1.1 keep-alive server: 200 "ok" for every GET, `/status/NNN` answers NNN.
pub const SERVER_PY: &str = r#"
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

/// GETs on one connection, one after the other or all pipelined.
pub fn http_requests(addr: &str, paths: &[String], pipelined: bool, extra_header: Option<&str>) {
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

/// A bounded HTTP load: sequential and pipelined `/items/{n}` GETs, one GET
/// carrying a W3C traceparent and one answered 503.
pub struct HttpLoad {
    pub sequential: usize,
    pub pipelined: usize,
}

impl HttpLoad {
    pub fn total(&self) -> usize {
        self.sequential + self.pipelined + 2
    }

    /// Sends the load to `addr` (host:port) from namespace `ns`.
    pub fn run(&self, ns: Option<&str>, addr: &str) {
        let (seq, pipe, addr) = (self.sequential, self.pipelined, addr.to_string());
        in_netns(ns, move || {
            let seq: Vec<String> = (0..seq).map(|i| format!("/items/{i}")).collect();
            http_requests(&addr, &seq, false, None);
            let pipe: Vec<String> = (0..pipe).map(|i| format!("/items/{}", 1000 + i)).collect();
            http_requests(&addr, &pipe, true, None);
            http_requests(&addr, &["/traced".to_string()], false, Some(&format!("traceparent: {TRACEPARENT}")));
            http_requests(&addr, &["/status/503".to_string()], false, None);
        });
    }

    /// What the collector must have received for this load, captured on the
    /// server side: exactly one SERVER span per request with semconv HTTP
    /// attributes, the traceparent adopted, the 503 an error, and an
    /// http.server.request.duration count equal to the number of requests
    /// (plus `other_server_requests` measured outside this load).
    pub fn check(
        &self,
        received: &Received,
        spans: &[Span],
        client_ip: &str,
        server_port: u16,
        other_server_requests: usize,
    ) {
        let names: Vec<&String> = spans.iter().map(|s| &s.name).collect();
        assert_eq!(spans.len(), self.total(), "exactly one span per request: {names:#?}");
        for s in spans {
            assert_eq!(s.kind, SERVER, "{}: captured on the server side → SERVER", s.name);
            assert_eq!(str_attr(s, "http.request.method").as_deref(), Some("GET"));
            assert_eq!(str_attr(s, "server.port"), Some(server_port.to_string()));
            assert_eq!(str_attr(s, "client.address").as_deref(), Some(client_ip));
            assert_eq!(str_attr(s, "network.peer.address").as_deref(), Some(client_ip));
            assert_eq!(str_attr(s, "network.protocol.version").as_deref(), Some("1.1"));
            assert_eq!(str_attr(s, "network.transport").as_deref(), Some("tcp"));
            assert_eq!(str_attr(s, "user_agent.original").as_deref(), Some("cnflow-e2e"));
            assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
        }
        let items: Vec<&Span> = spans.iter().filter(|s| s.name == "GET /items/{id}").collect();
        assert_eq!(items.len(), self.sequential + self.pipelined, "{names:#?}");
        assert!(items.iter().all(|s| str_attr(s, "http.route").as_deref() == Some("/items/{id}")));
        for s in &items {
            assert_eq!(str_attr(s, "http.response.status_code").as_deref(), Some("200"), "{s:#?}");
        }
        let traced = spans.iter().find(|s| s.name == "GET /traced").expect("traced span");
        assert_eq!(hex::encode(&traced.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(&traced.parent_span_id), "00f067aa0ba902b7");
        let failed = spans.iter().find(|s| s.name.starts_with("GET /status")).expect("503 span");
        assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2), "503 on a SERVER span is an error");
        assert_eq!(str_attr(failed, "error.type").as_deref(), Some("503"));
        assert_eq!(
            received.histogram_count("http.server.request.duration") as usize,
            self.total() + other_server_requests,
            "request histogram counts every request once"
        );
    }
}

/// Loopback exchange seen by one capture: both ends local, so a CLIENT span
/// and its child SERVER span in one trace.
pub fn check_loopback_pair(spans: &[Span], name: &str, template: &str) {
    let client = spans
        .iter()
        .find(|s| s.kind == CLIENT && s.name == name)
        .unwrap_or_else(|| panic!("CLIENT {name}: {spans:#?}"));
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER && s.name == name)
        .unwrap_or_else(|| panic!("SERVER {name}: {spans:#?}"));
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(server.parent_span_id, client.span_id, "SERVER span is the child of the CLIENT span");
    assert!(client.parent_span_id.is_empty());
    assert_eq!(str_attr(client, "url.template").as_deref(), Some(template));
    assert_eq!(str_attr(server, "http.route").as_deref(), Some(template));
}

/// Whether a span describes an OTLP export request (cnflow's or rotel's own
/// traffic turned into a span: the feedback loop that must not happen).
pub fn is_otlp_export_span(s: &Span) -> bool {
    s.name.contains("opentelemetry.proto.collector")
        || s.name.contains("/v1/traces")
        || s.name.contains("/v1/metrics")
        || str_attr(s, "rpc.method").is_some_and(|m| m.contains("opentelemetry"))
}
