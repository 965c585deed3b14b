//! The gateway binary's receivers under hostile input for a bounded time
//! (issue #18 item 11): mutated and random OTLP protobuf and JSON bodies on
//! both receivers and all three signals, gzip/zstd bombs (HTTP and gRPC),
//! truncated bodies, streams and gRPC frames, raw garbage on both ports.
//! Afterwards: the process is alive, never panicked, its peak memory stayed
//! bounded, and a valid request is still accepted and delivered.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use cnflow::export::test_sink::OtlpSink;
use cnflow::telemetry::resource::{kv_str, trace_request};
use netns::ChildGuard;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest accepted request after decompression (the bombs expand far beyond it).
const MAX_REQUEST: usize = 1 << 20;
/// Time spent on the random part (the fixed cases come on top).
const FUZZ_TIME: Duration = Duration::from_secs(10);

fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// `n` bytes of zeros, compressed, built quickly: gzip by the gzip CLI
/// (optimised, unlike a debug build of the encoder), zstd as one 16 MiB frame
/// repeated (decoders go on to the next frame: 1 GiB out of ~8 KiB).
fn bomb(zstd_enc: bool, n: usize) -> Vec<u8> {
    if zstd_enc {
        let frame = zstd::encode_all(&vec![0u8; 16 << 20][..], 3).unwrap();
        frame.repeat(n / (16 << 20))
    } else {
        let out =
            Command::new("sh").args(["-c", &format!("head -c {n} /dev/zero | gzip -9")]).output().expect("gzip CLI");
        assert!(out.status.success());
        out.stdout
    }
}

/// Valid requests of each signal (traces, metrics, logs), protobuf-encoded.
fn seeds() -> [Vec<u8>; 3] {
    let spans = (0..5u64)
        .map(|i| Span {
            trace_id: vec![9; 16],
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: format!("GET /fuzz/{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_100_000,
            attributes: vec![kv_str("client.address", "81.2.69.142"), kv_str("http.request.method", "GET")],
            ..Default::default()
        })
        .collect();
    let traces = trace_request("fuzz", spans).encode_to_vec();
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "fuzz.sum".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                value: Some(number_data_point::Value::AsDouble(1.5)),
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "fuzz.hist".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![10.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue { value: Some(any_value::Value::StringValue("fuzz".into())) }),
                    attributes: vec![kv_str("client.address", "216.160.83.56")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    [traces, metrics, logs]
}

/// A random mutation of `seed`: bit flips, byte overwrites, truncation,
/// insertions, duplication, or plain random bytes.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.random_range(0..7) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        1 => {
            for _ in 0..rng.random_range(1..8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
        }
        2 => b.truncate(rng.random_range(0..=b.len())),
        3 => {
            let i = rng.random_range(0..=b.len());
            let ins: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(i..i, ins);
        }
        4 => {
            let copy = b.clone();
            b.extend_from_slice(&copy);
        }
        5 => {
            // Varint lengths claiming huge sizes.
            let i = rng.random_range(0..=b.len());
            b.splice(i..i, [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        _ => b = (0..rng.random_range(0..4096)).map(|_| rng.random()).collect(),
    }
    b
}

/// Hostile JSON: mutated valid bodies, deep nesting, huge numbers and strings, wrong types.
fn json_case(rng: &mut StdRng, valid: &str) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => mutate(rng, valid.as_bytes()),
        1 => {
            let depth = rng.random_range(100..100_000);
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(rng.random_range(0..depth)));
            s.into_bytes()
        }
        2 => format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"{}","startTimeUnixNano":"99999999999999999999999"}}]}}]}}]}}"#, "x".repeat(rng.random_range(0..200_000))).into_bytes(),
        3 => br#"{"resourceSpans":{"not":"a list"},"resourceMetrics":7,"resourceLogs":null}"#.to_vec(),
        4 => br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asInt":"1e400"},{"asDouble":"NaN"}]}}]}]}]}"#.to_vec(),
        _ => {
            let cut = rng.random_range(0..=valid.len());
            valid.as_bytes()[..cut].to_vec()
        }
    }
}

const VALID_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"fuzz"}}]},"scopeSpans":[{"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":"x","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000","attributes":[{"key":"client.address","value":{"stringValue":"81.2.69.142"}}]}]}]}]}"#;

const PATHS: [&str; 3] = ["/v1/traces", "/v1/metrics", "/v1/logs"];
const GRPC_PATHS: [&str; 3] = [
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
];

/// Outcome counts, printed as the test's figure.
#[derive(Default, Debug)]
struct Tally {
    http: std::collections::BTreeMap<u16, usize>,
    grpc: std::collections::BTreeMap<String, usize>,
    transport_errors: usize,
}

async fn http_post(
    c: &reqwest::Client,
    port: u16,
    path: &str,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
    t: &mut Tally,
) -> Option<u16> {
    let mut r = c.post(format!("http://127.0.0.1:{port}{path}")).header("content-type", ct);
    if let Some(e) = enc {
        r = r.header("content-encoding", e);
    }
    match r.body(body).send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            *t.http.entry(s).or_default() += 1;
            // A server error would be a bug: hostile input is the client's fault.
            assert!(s < 500 || s == 503, "HTTP {s} on {path} {ct} {enc:?}");
            Some(s)
        }
        Err(_) => {
            t.transport_errors += 1;
            None
        }
    }
}

/// One raw gRPC call: `frame` is the whole request body (5-byte prefix + message).
async fn grpc_raw(
    h2: &reqwest::Client,
    port: u16,
    path: &str,
    enc: Option<&str>,
    frame: Vec<u8>,
    t: &mut Tally,
) -> Option<String> {
    let mut r = h2
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = enc {
        r = r.header("grpc-encoding", e);
    }
    match r.body(frame).send().await {
        Ok(resp) => {
            // Errors come as trailers-only responses: grpc-status in the headers.
            let code =
                resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("in-trailers").to_string();
            let _ = resp.bytes().await;
            *t.grpc.entry(code.clone()).or_default() += 1;
            Some(code)
        }
        Err(_) => {
            t.transport_errors += 1;
            None
        }
    }
}

fn frame(compressed: bool, msg: &[u8], declared: Option<u32>) -> Vec<u8> {
    let mut f = vec![compressed as u8];
    f.extend_from_slice(&declared.unwrap_or(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

/// Raw bytes on a TCP connection, then close (read whatever comes back, briefly).
fn raw_tcp(port: u16, bytes: &[u8]) {
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_both_receivers_for_a_bounded_time() {
    let sink = Arc::new(OtlpSink::new());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}", l.local_addr().unwrap());
    sink.serve_grpc_all_signals(l);
    let [grpc, http] = otel::free_ports_in(None);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut gw = ChildGuard::new(
        Command::new(harness::cnflow_bin())
            .arg("gateway")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &backend)
            .env("CNFLOW_SELF_TELEMETRY", "false")
            .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
            .env("CNFLOW_GATEWAY_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_MAX_REQUEST_BYTES", MAX_REQUEST.to_string())
            .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "20")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
        "cnflow gateway",
    );
    for p in [grpc, http] {
        otel::wait_port(None, ([127, 0, 0, 1], p).into(), "gateway");
    }
    let pid = gw.child.id();
    let rss_start = peak_rss_kib(pid);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(10)).build().unwrap();
    let mut t = Tally::default();

    // Bombs: 128 MiB of zeros in gzip (~125 KiB) and 1 GiB in zstd, on both receivers.
    let gz = bomb(false, 128 << 20);
    let zs = bomb(true, 1 << 30);
    for (enc, body) in [("gzip", &gz), ("zstd", &zs)] {
        for path in PATHS {
            let s = http_post(&c, http, path, "application/x-protobuf", Some(enc), body.clone(), &mut t).await;
            assert_eq!(s, Some(413), "HTTP {enc} bomb on {path}");
        }
        for path in GRPC_PATHS {
            let code = grpc_raw(&h2, grpc, path, Some(enc), frame(true, body, None), &mut t).await;
            // RESOURCE_EXHAUSTED (8) from tonic's bounded decompression.
            assert_eq!(code.as_deref(), Some("8"), "gRPC {enc} bomb on {path}");
        }
    }
    let rss_after_bombs = peak_rss_kib(pid);

    // Truncated: compressed bodies cut short, gRPC frames shorter than their
    // prefix says, HTTP bodies shorter than Content-Length (then EOF).
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate() {
        let g = gzip(seed);
        let s =
            http_post(&c, http, PATHS[i], "application/x-protobuf", Some("gzip"), g[..g.len() / 2].to_vec(), &mut t)
                .await;
        assert_eq!(s, Some(400), "truncated gzip");
        let f = frame(false, seed, Some(seed.len() as u32 + 100));
        let code = grpc_raw(&h2, grpc, GRPC_PATHS[i], None, f, &mut t).await;
        assert!(code.as_deref() != Some("0"), "a truncated gRPC frame was accepted");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            PATHS[i],
            seed.len() + 1000
        );
        raw_tcp(http, &[head.as_bytes(), seed].concat());
    }

    // Random part, for a bounded time.
    let mut rng = StdRng::seed_from_u64(0x18_0b);
    let started = Instant::now();
    let mut cases = 0usize;
    while started.elapsed() < FUZZ_TIME {
        cases += 1;
        let sig = rng.random_range(0..3);
        match rng.random_range(0..8) {
            0..=2 => {
                let body = mutate(&mut rng, &seeds[sig]);
                let (enc, body) = match rng.random_range(0..4) {
                    0 => (Some("gzip"), gzip(&body)),
                    1 => (Some("zstd"), zstd::encode_all(&body[..], 1).unwrap()),
                    2 => (Some(["gzip", "zstd", "br", "x"][rng.random_range(0..4)]), body),
                    _ => (None, body),
                };
                http_post(&c, http, PATHS[sig], "application/x-protobuf", enc, body, &mut t).await;
            }
            3 => {
                let body = json_case(&mut rng, VALID_JSON);
                http_post(&c, http, PATHS[sig], "application/json", None, body, &mut t).await;
            }
            4..=5 => {
                let msg = mutate(&mut rng, &seeds[sig]);
                let (compressed, enc, msg) = match rng.random_range(0..4) {
                    0 => (true, Some("gzip"), gzip(&msg)),
                    1 => (true, Some("zstd"), zstd::encode_all(&msg[..], 1).unwrap()),
                    // Compressed flag with bytes that are not compressed.
                    2 => (true, Some("gzip"), msg),
                    _ => (false, None, msg),
                };
                let declared = rng.random_bool(0.1).then(|| rng.random::<u32>());
                let mut f = frame(compressed, &msg, declared);
                if rng.random_bool(0.1) {
                    f.truncate(rng.random_range(0..f.len()));
                }
                grpc_raw(&h2, grpc, GRPC_PATHS[sig], enc, f, &mut t).await;
            }
            6 => {
                // Garbage after a plausible start of a request, on either port.
                let mut b = if rng.random_bool(0.5) {
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
                } else {
                    format!("POST {} HTTP/1.1\r\nContent-Length: 5\r\n", PATHS[sig]).into_bytes()
                };
                b.extend((0..rng.random_range(0..512)).map(|_| rng.random::<u8>()));
                let port = if rng.random_bool(0.5) { grpc } else { http };
                tokio::task::spawn_blocking(move || raw_tcp(port, &b)).await.unwrap();
            }
            _ => {
                // Wrong content types and methods.
                let ct = ["text/plain", "", "application/x-protobuf; charset=utf-8", "application/grpc"]
                    [rng.random_range(0..4)];
                http_post(&c, http, PATHS[sig], ct, None, seeds[sig].clone(), &mut t).await;
            }
        }
        assert!(gw.child.try_wait().unwrap().is_none(), "gateway died after {cases} cases");
    }

    // Still serving: a valid request is accepted and delivered.
    let before = sink.span_count.load(std::sync::atomic::Ordering::SeqCst);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap();
    client
        .export(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(&seeds[0][..]).unwrap(),
        )
        .await
        .expect("valid request after fuzzing");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.span_count.load(std::sync::atomic::Ordering::SeqCst) < before + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sink.span_count.load(std::sync::atomic::Ordering::SeqCst) >= before + 5,
        "valid spans not delivered after fuzzing; gateway log:\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    // Whatever the gateway acknowledged, the backend (prost, as most are)
    // accepted: a malformed request let through would have made the backend
    // refuse the whole batch it was merged into, other clients' data included.
    let gw_log = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(!gw_log.contains("failed permanently"), "the backend refused what the gateway accepted:\n{gw_log}");
    assert_eq!(
        http_post(&c, http, "/v1/logs", "application/x-protobuf", None, seeds[2].clone(), &mut t).await,
        Some(200)
    );

    let rss_end = peak_rss_kib(pid);
    eprintln!(
        "FIGURE: {cases} random cases in {:?}; peak RSS {} MiB at start, {} MiB after the bombs, {} MiB at the end; outcomes {t:?}",
        FUZZ_TIME,
        rss_start / 1024,
        rss_after_bombs / 1024,
        rss_end / 1024
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited");
    // Decompressing a bomb may hold a few copies of MAX_REQUEST; 1 GiB of zeros must never be materialised.
    assert!(rss_end < rss_start + 200 * 1024, "peak RSS grew from {rss_start} KiB to {rss_end} KiB");
    gw.signal(libc::SIGTERM);
    let status = gw.wait_timeout(Duration::from_secs(20)).expect("gateway stops on SIGTERM");
    assert!(status.success(), "gateway exit status {status:?}");
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(!stderr.contains("panicked"), "panic in the gateway:\n{stderr}");
}
