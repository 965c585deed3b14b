//! Gateway hot path on one OTLP trace batch as the agent sends it (512 spans,
//! a few resources): protobuf decode, GeoIP/ASN enrichment with the MaxMind
//! test databases (cached and uncached lookups), collector-style merge/split
//! batching, encode, and the whole receive → export step; and the same on
//! the wire (`gateway::wire`: no decode/encode round trip).
use cnflow::export::{Payload, Signal};
use cnflow::gateway::batch::merge_and_split;
use cnflow::gateway::geo_attributes::enrich_traces;
use cnflow::gateway::geoip::GeoIp;
use cnflow::gateway::wire::{merge_split, process, validate, Kind};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::hint::black_box;
use std::net::IpAddr;

const SPANS: usize = 512;
/// Addresses with City and/or ASN data in the MaxMind test databases, plus
/// private ones that are skipped before any lookup.
const PUBLIC: [&str; 4] = ["81.2.69.142", "216.160.83.56", "1.128.0.1", "89.160.20.112"];
const PRIVATE: [&str; 2] = ["10.200.0.5", "192.168.1.9"];

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}

/// A batch shaped like cnflow agent output: HTTP server spans with
/// client.address (often public) and server.address (private).
fn batch(spans: usize, resources: usize, first: usize) -> ExportTraceServiceRequest {
    let per = spans.div_ceil(resources);
    let resource_spans = (0..resources)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", &format!("svc-{r}")),
                    s("k8s.namespace.name", "shop"),
                    s("k8s.pod.name", &format!("svc-{r}-7d9f8-abcde")),
                    s("k8s.node.name", "node-1"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "cnflow".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans: (0..per)
                    .map(|i| {
                        let n = first + r * per + i;
                        let client = if n % 4 == 3 { PRIVATE[n % 2] } else { PUBLIC[n % PUBLIC.len()] };
                        Span {
                            trace_id: (n as u128).to_be_bytes().to_vec(),
                            span_id: (n as u64).to_be_bytes().to_vec(),
                            name: "GET /users/{id}".into(),
                            kind: 2,
                            start_time_unix_nano: 1_700_000_000_000_000_000 + n as u64 * 1000,
                            end_time_unix_nano: 1_700_000_000_000_000_000 + n as u64 * 1000 + 350_000,
                            attributes: vec![
                                s("http.request.method", "GET"),
                                s("url.path", &format!("/users/{n}")),
                                s("http.route", "/users/{id}"),
                                kv("http.response.status_code", Value::IntValue(200)),
                                s("client.address", client),
                                kv("client.port", Value::IntValue(40000 + (n % 20000) as i64)),
                                s("server.address", PRIVATE[0]),
                                kv("server.port", Value::IntValue(8080)),
                                s("network.protocol.version", "1.1"),
                                s("user_agent.original", "curl/8.5.0"),
                            ],
                            ..Default::default()
                        }
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.37.0".into(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn geoip(cache: usize) -> GeoIp {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/geoip");
    let city = dir.join("GeoLite2-City-Test.mmdb");
    let asn = dir.join("GeoLite2-ASN-Test.mmdb");
    GeoIp::open(city.to_str(), asn.to_str(), cache).expect("test databases open").expect("configured")
}

fn bench(c: &mut Criterion) {
    let req = batch(SPANS, 4, 0);
    let bytes = req.encode_to_vec();
    let geo = geoip(10_000);
    // Sanity: the databases answer for the addresses used, so enrichment does real work.
    assert!(enrich_traces(&geo, &mut req.clone()) as usize >= SPANS / 2, "test databases gave no data");

    let mut g = c.benchmark_group("gateway");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("decode_traces_512", |b| {
        b.iter(|| black_box(Payload::decode(Signal::Traces, black_box(&bytes)).expect("valid").items()))
    });
    // What the wire path checks instead of that decode (the same accept set).
    g.bench_function("wire_validate_512", |b| b.iter(|| black_box(validate(Kind::Traces, black_box(&bytes)).is_ok())));
    g.bench_function("geoip_enrich_512_cached", |b| {
        b.iter_batched_ref(|| req.clone(), |r| black_box(enrich_traces(&geo, r)), BatchSize::SmallInput)
    });
    g.bench_function("encode_traces_512", |b| b.iter(|| black_box(black_box(&req).encode_to_vec().len())));
    // 16 agent requests of 32 spans each, merged by resource into one 512-span batch.
    let parts: Vec<Payload> = (0..16).map(|i| Payload::Traces(batch(32, 4, i * 32))).collect();
    g.bench_function("batch_merge_16x32_split_at_256", |b| {
        b.iter_batched(|| parts.clone(), |p| black_box(merge_and_split(p, 256, 0).len()), BatchSize::SmallInput)
    });
    g.bench_function("receive_enrich_batch_encode_512", |b| {
        b.iter(|| {
            let mut p = Payload::decode(Signal::Traces, &bytes).expect("valid");
            if let Payload::Traces(r) = &mut p {
                enrich_traces(&geo, r);
            }
            let out = merge_and_split(vec![p], 0, 0);
            black_box(out.iter().map(|p| p.encode().len()).sum::<usize>())
        })
    });
    // The same step on the wire (what the gRPC and protobuf HTTP receivers do
    // for traces and logs): check + enrich the bytes, merge/split by bytes.
    g.bench_function("wire_enrich_512", |b| {
        b.iter(|| black_box(process(Kind::Traces, black_box(&bytes), Some(&geo)).expect("valid").items))
    });
    let wire_parts: Vec<Vec<u8>> = (0..16).map(|i| batch(32, 4, i * 32).encode_to_vec()).collect();
    g.bench_function("wire_batch_merge_16x32_split_at_256", |b| {
        let slices: Vec<&[u8]> = wire_parts.iter().map(|p| &p[..]).collect();
        b.iter(|| black_box(merge_split(&slices, 256, usize::MAX).expect("valid").len()))
    });
    g.bench_function("wire_receive_enrich_batch_512", |b| {
        b.iter(|| {
            let p = process(Kind::Traces, &bytes, Some(&geo)).expect("valid");
            let out = merge_split(&[p.bytes.as_deref().unwrap_or(&bytes)], usize::MAX, usize::MAX).expect("valid");
            black_box(out.iter().map(|(b, _)| b.len()).sum::<usize>())
        })
    });
    g.finish();

    // Lookups that miss the LRU (cache of one entry, alternating addresses):
    // the cost of the MaxMind tree walk and record decoding (City + ASN).
    let cold = geoip(1);
    let ips: Vec<IpAddr> = PUBLIC.iter().map(|a| a.parse().expect("address")).collect();
    let mut g = c.benchmark_group("gateway_geoip");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("lookup_city_asn_uncached", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(cold.lookup(*ip));
            }
        })
    });
    g.bench_function("lookup_city_asn_cached", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(geo.lookup(*ip));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
