//! TLS end to end with a CA generated at test time (openssl CLI): both gateway
//! receivers over TLS (gRPC and OTLP/HTTP), mutual TLS (a client without a
//! certificate, or with one from another CA, is refused; with one from the
//! configured CA it is accepted), `cnflow replay` exporting over https with
//! OTEL_EXPORTER_OTLP_CERTIFICATE, and a gateway exporting to another gateway
//! over mutual TLS with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/CLIENT_KEY.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;

use cnflow::export::test_sink::OtlpSink;
use cnflow::telemetry::resource::trace_request;
use netns::ChildGuard;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`{ca}.pem`/`.key`) and leaf certificates signed by it, all P-256.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Pki { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.path(f)).unwrap()
    }
    fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    /// `usage` is serverAuth (SAN 127.0.0.1/localhost) or clientAuth.
    fn leaf(&self, name: &str, ca: &str, usage: &str) {
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        );
        std::fs::write(self.path(&format!("{name}.ext")), ext).unwrap();
        openssl(
            self.dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
    /// ca, server (serverAuth), client (clientAuth) and a client of another CA.
    fn standard() -> Self {
        let p = Pki::new();
        p.ca("ca");
        p.leaf("server", "ca", "serverAuth");
        p.leaf("client", "ca", "clientAuth");
        p.ca("rogue-ca");
        p.leaf("rogue-client", "rogue-ca", "clientAuth");
        p
    }
}

struct Gw {
    grpc: u16,
    http: u16,
    _proc: ChildGuard,
}

/// `cnflow gateway` with TLS from `pki` (mutual when `client_ca`), receivers
/// on fresh ports, exporting with `export_env`.
fn gateway(pki: &Pki, client_ca: bool, export_env: &[(&str, String)]) -> Gw {
    let [grpc, http] = harness::free_ports();
    let mut c = Command::new(harness::cnflow_bin());
    c.arg("gateway")
        // Exact span counts: keep the gateway's own spans out of the sink.
        .env("CNFLOW_SELF_TELEMETRY", "false")
        .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CNFLOW_GATEWAY_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
        .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20")
        .env("CNFLOW_GATEWAY_TLS_CERT", pki.path("server.pem"))
        .env("CNFLOW_GATEWAY_TLS_KEY", pki.path("server.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if client_ca {
        c.env("CNFLOW_GATEWAY_TLS_CLIENT_CA", pki.path("ca.pem"));
    }
    for (k, v) in export_env {
        c.env(k, v);
    }
    let g = ChildGuard::new(c.spawn().unwrap(), "cnflow gateway");
    for port in [grpc, http] {
        assert!(
            netns::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "gateway port {port} not listening"
        );
    }
    Gw { grpc, http, _proc: g }
}

fn request(prefix: &str, n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: ((i as u64) + 1).to_be_bytes().to_vec(),
            name: format!("{prefix}-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_100_000,
            ..Default::default()
        })
        .collect();
    trace_request("tls", spans)
}

/// gRPC export over TLS trusting `ca`, presenting `identity` (cert, key files) if any.
async fn grpc_export(
    pki: &Pki,
    port: u16,
    identity: Option<&str>,
    req: ExportTraceServiceRequest,
) -> Result<(), String> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem"))).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(pki.read(&format!("{id}.pem")), pki.read(&format!("{id}.key"))));
    }
    let ch = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| format!("tls config: {e}"))?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    TraceServiceClient::new(ch).export(req).await.map(|_| ()).map_err(|e| format!("export: {e:?}"))
}

/// OTLP/HTTP protobuf export over TLS trusting `ca`, presenting `identity` if any.
async fn http_export(
    pki: &Pki,
    port: u16,
    identity: Option<&str>,
    req: ExportTraceServiceRequest,
) -> Result<u16, String> {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.read("ca.pem")).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let mut pem = pki.read(&format!("{id}.pem"));
        pem.extend_from_slice(&pki.read(&format!("{id}.key")));
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    let resp = b
        .build()
        .unwrap()
        .post(format!("https://localhost:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(resp.status().as_u16())
}

async fn wait_spans(sink: &OtlpSink, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.span_count.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late duplicates would show up here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.span_count.load(Ordering::SeqCst), want, "spans at the sink");
}

/// `cnflow replay` of http1.pcap exporting with `env`; returns the spans it printed.
fn replay(env: &[(&str, String)]) -> usize {
    let mut c = Command::new(harness::cnflow_bin());
    c.args(["replay", harness::pcaps_dir().join("http1.pcap").to_str().unwrap(), "--format", "text"])
        .env("CNFLOW_SELF_TELEMETRY", "false")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

/// Exchanges in the golden snapshot of http1.pcap (one span each).
fn http1_exchanges() -> usize {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/golden/http1.jsonl");
    std::fs::read_to_string(p).unwrap().lines().filter(|l| !l.trim().is_empty()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receivers_accept_trusted_clients_and_the_agent_exports_over_https() {
    let pki = Pki::standard();
    let (sink, sink_url) = OtlpSink::new().grpc().await;
    let gw = gateway(&pki, false, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink_url)]);

    grpc_export(&pki, gw.grpc, None, request("grpc", 10)).await.expect("gRPC over TLS");
    assert_eq!(http_export(&pki, gw.http, None, request("http", 5)).await, Ok(200), "OTLP/HTTP over TLS");
    // Plaintext to a TLS port is not served.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/traces", gw.http))
        .header("content-type", "application/x-protobuf")
        .body(request("plain", 3).encode_to_vec())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plaintext accepted on the TLS port");
    let mut plain_grpc = TraceServiceClient::connect(format!("http://127.0.0.1:{}", gw.grpc)).await.unwrap();
    assert!(plain_grpc.export(request("plain", 3)).await.is_err(), "plaintext gRPC accepted on the TLS port");
    // A client that does not trust the test CA refuses the gateway's certificate.
    let untrusting = reqwest::Client::builder().tls_built_in_root_certs(true).build().unwrap();
    let r = untrusting.post(format!("https://localhost:{}/v1/traces", gw.http)).body(vec![]).send().await;
    assert!(r.is_err(), "certificate of an unknown CA accepted: {r:?}");
    wait_spans(&sink, 15).await;

    // The agent side: replay → gateway, OTLP/gRPC and OTLP/HTTP over https.
    let ca = pki.path("ca.pem").to_str().unwrap().to_string();
    let want = http1_exchanges();
    let grpc_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", gw.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.clone()),
    ];
    assert_eq!(tokio::task::spawn_blocking(move || replay(&grpc_env)).await.unwrap(), want);
    wait_spans(&sink, 15 + want as u64).await;
    // The per-signal variant wins over the generic one (a bogus generic path proves it is not read).
    let http_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", gw.http)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem".to_string()),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca.clone()),
        ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca.clone()),
        ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", ca),
    ];
    assert_eq!(tokio::task::spawn_blocking(move || replay(&http_env)).await.unwrap(), want);
    wait_spans(&sink, 15 + 2 * want as u64).await;
}

/// The Helm chart's bearer-token wiring: the gateway reads the token from
/// CNFLOW_GATEWAY_AUTH_TOKENS, agents send `authorization=Bearer%20TOKEN`
/// in OTEL_EXPORTER_OTLP_HEADERS (URL-encoded space), over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_in_the_charts_header_format_is_accepted_over_tls() {
    let pki = Pki::standard();
    let (sink, sink_url) = OtlpSink::new().grpc().await;
    let token = "0123abcdef0123abcdef";
    let gw = gateway(
        &pki,
        false,
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink_url), ("CNFLOW_GATEWAY_AUTH_TOKENS", token.to_string())],
    );
    assert_eq!(http_export(&pki, gw.http, None, request("anon", 2)).await, Ok(401), "no token refused");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", gw.grpc)),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.path("ca.pem").to_str().unwrap().to_string()),
        ("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer%20{token}")),
    ];
    let want = http1_exchanges();
    assert_eq!(tokio::task::spawn_blocking(move || replay(&env)).await.unwrap(), want);
    wait_spans(&sink, want as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let pki = Pki::standard();
    let (sink, sink_url) = OtlpSink::new().grpc().await;
    let inner = gateway(&pki, true, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink_url)]);

    for id in [None, Some("rogue-client")] {
        let g = grpc_export(&pki, inner.grpc, id, request("nocert", 2)).await;
        assert!(g.is_err(), "gRPC client {id:?} accepted under mTLS");
        let h = http_export(&pki, inner.http, id, request("nocert", 2)).await;
        assert!(h.is_err(), "HTTP client {id:?} accepted under mTLS: {h:?}");
    }
    grpc_export(&pki, inner.grpc, Some("client"), request("grpc", 4)).await.expect("gRPC with a client certificate");
    assert_eq!(http_export(&pki, inner.http, Some("client"), request("http", 6)).await, Ok(200));
    wait_spans(&sink, 10).await;

    // A gateway (plain TLS receiver) exporting over OTLP/HTTP with a client
    // certificate to the mTLS gateway; the agent exports to it over gRPC.
    let f = |n: &str| pki.path(n).to_str().unwrap().to_string();
    let outer = gateway(
        &pki,
        false,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", inner.http)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", f("ca.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", f("client.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", f("client.key")),
        ],
    );
    let want = http1_exchanges();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", outer.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", f("ca.pem")),
    ];
    assert_eq!(tokio::task::spawn_blocking(move || replay(&env)).await.unwrap(), want);
    wait_spans(&sink, 10 + want as u64).await;

    // The agent straight to the mTLS gateway over gRPC with its client certificate.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", inner.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", f("ca.pem")),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", f("client.pem")),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", f("client.key")),
    ];
    assert_eq!(tokio::task::spawn_blocking(move || replay(&env)).await.unwrap(), want);
    wait_spans(&sink, 10 + 2 * want as u64).await;
}

#[test]
fn unreadable_or_invalid_tls_files_stop_the_gateway_naming_the_variable() {
    let pki = Pki::standard();
    let cases: [(&str, PathBuf, &str); 4] = [
        ("CNFLOW_GATEWAY_TLS_CERT", PathBuf::from("/nonexistent/cert.pem"), "CNFLOW_GATEWAY_TLS_CERT"),
        ("CNFLOW_GATEWAY_TLS_KEY", PathBuf::from("/nonexistent/key.pem"), "CNFLOW_GATEWAY_TLS_KEY"),
        ("CNFLOW_GATEWAY_TLS_CLIENT_CA", PathBuf::from("/nonexistent/ca.pem"), "CNFLOW_GATEWAY_TLS_CLIENT_CA"),
        // A private key is no CA certificate.
        ("CNFLOW_GATEWAY_TLS_CLIENT_CA", pki.path("ca.key"), "CNFLOW_GATEWAY_TLS_CLIENT_CA"),
    ];
    for (var, value, want) in cases {
        let mut c = Command::new(harness::cnflow_bin());
        c.arg("gateway")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("CNFLOW_SELF_TELEMETRY", "false")
            .env("CNFLOW_GATEWAY_GRPC_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_TLS_CERT", pki.path("server.pem"))
            .env("CNFLOW_GATEWAY_TLS_KEY", pki.path("server.key"))
            .env(var, &value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut g = ChildGuard::new(c.spawn().unwrap(), "cnflow gateway");
        let status = g.wait_timeout(Duration::from_secs(20)).expect("gateway should stop at start");
        assert!(!status.success(), "{var}={value:?}: gateway started");
        let mut err = String::new();
        std::io::Read::read_to_string(g.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(err.contains(want), "{var}={value:?}: error does not name {want}: {err}");
    }
}

/// cnflow's own telemetry (OpenTelemetry SDK exporter, gRPC) uses the same
/// CA and client certificate as the data exporter: a gateway exporting to a
/// mutual-TLS gateway gets its own `otlp.export` spans (service
/// cnflow-gateway) through as well as the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_telemetry_exports_over_mutual_tls_with_the_same_certificates() {
    let pki = Pki::standard();
    let (sink, sink_url) = OtlpSink::new().grpc().await;
    // The receiving gateway has its own telemetry off: every cnflow-gateway span comes from the sender.
    let inner = gateway(&pki, true, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink_url)]);
    let f = |n: &str| pki.path(n).to_str().unwrap().to_string();
    let outer = gateway(
        &pki,
        false,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", inner.grpc)),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", f("ca.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", f("client.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", f("client.key")),
            ("CNFLOW_SELF_TELEMETRY", "true".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        ],
    );
    grpc_export(&pki, outer.grpc, None, request("data", 3)).await.expect("export to the sending gateway");
    let own = || {
        sink.received
            .lock()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter(|rs| {
                rs.resource.as_ref().is_some_and(|r| {
                    r.attributes.iter().any(|kv| {
                        kv.key == "service.name"
                            && matches!(&kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) if s == "cnflow-gateway")
                    })
                })
            })
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .filter(|s| s.name == "otlp.export")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while own() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Vec<String> = sink.spans().iter().map(|s| s.name.clone()).take(20).collect();
    assert!(own() > 0, "no otlp.export span of cnflow-gateway arrived through the mTLS gateway; spans {seen:?}");
}
