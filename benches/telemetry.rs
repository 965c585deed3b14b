//! Exchange → OTLP cost: span building (names, attributes, route trie, ids),
//! histogram recording, and encoding the export request as protobuf / JSON.
use cnflow::telemetry::samples::{http_exchange, one_of_each, T0};
use cnflow::telemetry::{Collected, IdGen, Output, SinkOptions, TelemetryConfig, TelemetrySink};
use cnflow::workload::Identity;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parking_lot::Mutex;
use prost::Message;
use std::sync::Arc;

fn sink(batch: usize) -> (TelemetrySink, Arc<Mutex<Collected>>) {
    let host = Arc::new(Identity { attributes: vec![("service.name".into(), "bench".into())] });
    let out = Arc::new(Mutex::new(Collected::default()));
    let cfg = TelemetryConfig { span_batch_size: batch, ..Default::default() };
    let mut o = SinkOptions::new(cfg, host);
    o.outputs.push(Output::Collect(out.clone()));
    o.ids = IdGen::Seeded(1);
    o.own_metrics = false;
    (TelemetrySink::new(o), out)
}

fn bench(c: &mut Criterion) {
    let exs = one_of_each(T0);
    let mut g = c.benchmark_group("telemetry");
    g.throughput(Throughput::Elements(exs.len() as u64));
    g.bench_function("record_mixed_protocols", |b| {
        let (mut s, out) = sink(512);
        b.iter(|| {
            for ex in &exs {
                s.record(ex);
            }
            out.lock().traces.clear();
        })
    });
    let http: Vec<_> = (0..512)
        .map(|i| http_exchange(cnflow::capture::Direction::Ingress, "GET", &format!("/users/{i}/orders"), 200, T0 + i))
        .collect();
    g.throughput(Throughput::Elements(http.len() as u64));
    g.bench_function("record_512_http_and_encode_protobuf", |b| {
        let (mut s, out) = sink(512);
        b.iter(|| {
            for ex in &http {
                s.record(ex);
            }
            let req = out.lock().traces.pop().expect("a full batch");
            std::hint::black_box(req.encode_to_vec().len())
        })
    });
    g.bench_function("record_512_http_and_encode_json", |b| {
        let (mut s, out) = sink(512);
        b.iter(|| {
            for ex in &http {
                s.record(ex);
            }
            let req = out.lock().traces.pop().expect("a full batch");
            std::hint::black_box(serde_json::to_vec(&req).unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
