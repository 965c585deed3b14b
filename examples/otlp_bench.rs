//! Whole-system OTLP throughput probe used by `integration-tests/perf/bench_gateway.sh`.
//!
//! Starts a counting OTLP/gRPC trace sink on `--sink`, sends `--spans` spans to
//! `--target` (a cnflow gateway or rotel configured to export to the sink) in
//! requests of `--batch` spans from `--concurrency` tasks, and reports how long it
//! took until the sink had received every span. The spans carry public client
//! addresses (from MaxMind's test database) so a gateway does real GeoIP work.
//! `--wire-sink`: the sink counts spans on the wire instead of decoding them.
use cnflow::export::test_sink::OtlpSink;
use cnflow::gateway::grpc_receiver::RawServerCodec;
use cnflow::gateway::wire::{process, Kind};
use cnflow::telemetry::resource::{kv_str, trace_request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Addresses present in GeoLite2-City-Test.mmdb, plus private ones that must be skipped.
const CLIENTS: &[&str] = &["81.2.69.142", "216.160.83.56", "89.160.20.112", "2.125.160.216", "10.200.0.7"];

fn request(batch: usize, seq: u64) -> ExportTraceServiceRequest {
    let spans = (0..batch)
        .map(|i| {
            let id = seq * batch as u64 + i as u64 + 1;
            Span {
                trace_id: id.to_be_bytes().repeat(2),
                span_id: id.to_be_bytes().to_vec(),
                name: "GET /users/{id}".into(),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + id,
                end_time_unix_nano: 1_700_000_000_000_100_000 + id,
                attributes: vec![
                    kv_str("http.request.method", "GET"),
                    kv_str("http.route", "/users/{id}"),
                    kv_str("client.address", CLIENTS[id as usize % CLIENTS.len()]),
                    kv_str("server.address", "10.200.0.2"),
                ],
                ..Default::default()
            }
        })
        .collect();
    trace_request("bench", spans)
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sink_addr: std::net::SocketAddr = arg(&args, "--sink", "127.0.0.1:14317").parse()?;
    let target = arg(&args, "--target", "http://127.0.0.1:4317");
    let spans: u64 = arg(&args, "--spans", "200000").parse()?;
    let batch: usize = arg(&args, "--batch", "500").parse()?;
    let conc: u64 = arg(&args, "--concurrency", "4").parse()?;
    let timeout = Duration::from_secs(arg(&args, "--timeout", "120").parse()?);
    let sink = Arc::new(OtlpSink::new().count_only());
    let listener = tokio::net::TcpListener::bind(sink_addr).await?;
    if args.iter().any(|a| a == "--wire-sink") {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WireSink(sink.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
    } else {
        sink.serve_grpc(listener);
    }
    let got = &sink.span_count;
    if args.iter().any(|a| a == "--sink-only") {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("received {}", got.load(Ordering::Relaxed));
        }
    }
    let requests = spans.div_ceil(batch as u64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = loop {
                match TraceServiceClient::connect(target.clone()).await {
                    Ok(c) => break c,
                    Err(_) if start.elapsed() < Duration::from_secs(10) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(anyhow::anyhow!("connect {target}: {e}")),
                }
            };
            let mut seq = t;
            while seq < requests {
                // Back-pressure (RESOURCE_EXHAUSTED/UNAVAILABLE) is retried, as an agent would.
                loop {
                    match client.export(request(batch, seq)).await {
                        Ok(_) => break,
                        Err(s) if start.elapsed() < Duration::from_secs(300) => {
                            tracing_or_eprint(&s);
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(s) => return Err(anyhow::anyhow!("export: {s}")),
                    }
                }
                seq += conc;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent_in = start.elapsed();
    let want = requests * batch as u64;
    while got.load(Ordering::Relaxed) < want && start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_in = start.elapsed();
    let n = got.load(Ordering::Relaxed);
    println!(
        "spans_sent={want} spans_received={n} send_secs={:.3} total_secs={:.3} spans_per_sec={:.0}",
        sent_in.as_secs_f64(),
        all_in.as_secs_f64(),
        n as f64 / all_in.as_secs_f64()
    );
    if n < want {
        anyhow::bail!("only {n} of {want} spans arrived within {timeout:?}");
    }
    Ok(())
}

/// `--wire-sink`: counts spans by walking the protobuf (cnflow::gateway::wire)
/// instead of decoding them with prost, so the sink's cost on core 0 depends
/// less on how many attributes the contender forwards.
#[derive(Clone)]
struct WireSink(Arc<OtlpSink>);

impl tonic::server::NamedService for WireSink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for WireSink {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            let codec = RawServerCodec::<ExportTraceServiceResponse>::default();
            let mut g = tonic::server::Grpc::new(codec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .max_decoding_message_size(64 << 20);
            Ok(g.unary(sink, req).await)
        })
    }
}

impl tonic::server::UnaryService<bytes::Bytes> for WireSink {
    type Response = ExportTraceServiceResponse;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<bytes::Bytes>) -> Self::Future {
        let sink = self.0.clone();
        Box::pin(async move {
            let p = process(Kind::Traces, req.get_ref(), None).map_err(|e| tonic::Status::internal(e.to_string()))?;
            sink.span_count.fetch_add(p.items as u64, Ordering::Relaxed);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        })
    }
}

fn tracing_or_eprint(s: &tonic::Status) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("target pushed back ({}), retrying", s.code()));
}
