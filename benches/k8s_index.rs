//! Lookup cost of the pod index (what every exchange pays twice: local and peer)
//! on a 5,000-pod node, for hits, misses and IPv6.
use cnflow::k8s::{K8sEnricher, PodEntry, State};
use cnflow::workload::{Enricher, Identity};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

fn v4(i: u32) -> IpAddr {
    IpAddr::from([10, 244, ((i / 256) % 256) as u8, (i % 256) as u8])
}

fn v6(i: u32) -> IpAddr {
    IpAddr::from([0xfd00, 0, 0, 0, 0, 0, (i / 65536) as u16, (i % 65536) as u16])
}

fn build(n: u32) -> K8sEnricher {
    let state = State::new();
    {
        let mut ix = state.index.write();
        for i in 0..n {
            let identity = Arc::new(Identity {
                attributes: vec![
                    ("k8s.namespace.name".into(), "load".into()),
                    ("k8s.pod.name".into(), format!("pod-{i}")),
                    ("service.name".into(), format!("svc-{}", i % 50)),
                ],
            });
            ix.upsert(PodEntry {
                uid: format!("uid-{i}"),
                namespace: "load".into(),
                name: format!("pod-{i}"),
                ips: vec![v4(i), v6(i)],
                host_network: false,
                created: i as i64,
                active: true,
                identity: identity.clone(),
                owners_complete: true,
                process_identity: identity,
                containers: vec![],
            });
        }
    }
    K8sEnricher { state }
}

fn bench(c: &mut Criterion) {
    let e = build(5000);
    let mut i = 0u32;
    c.bench_function("k8s_index/lookup_hit_v4_5000_pods", |b| {
        b.iter(|| {
            i = (i + 7919) % 5000;
            black_box(e.identity(black_box(v4(i))))
        })
    });
    c.bench_function("k8s_index/lookup_hit_v6_5000_pods", |b| {
        b.iter(|| {
            i = (i + 7919) % 5000;
            black_box(e.identity(black_box(v6(i))))
        })
    });
    let miss: IpAddr = "203.0.113.7".parse().unwrap();
    c.bench_function("k8s_index/lookup_miss_5000_pods", |b| b.iter(|| black_box(e.identity(black_box(miss)))));
    c.bench_function("k8s_index/peer_attributes_5000_pods", |b| {
        b.iter(|| {
            i = (i + 7919) % 5000;
            black_box(e.peer_attributes(black_box(v4(i))))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
