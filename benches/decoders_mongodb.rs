//! MongoDB decoder throughput: OP_MSG find/insert/getMore traffic of one
//! connection, plain and zlib/snappy-compressed (OP_COMPRESSED), and detection
//! of new MongoDB connections by the dispatcher on a port that hints nothing.
//! Messages are built with `bson`'s encoder. `cargo bench --bench decoders_mongodb`
//! (CI runs each body once with `cargo test --benches`).
use bson::{rawdoc, RawArrayBuf, RawDocumentBuf};
use cnflow::exchange::Exchange;
use cnflow::flow::{CloseReason, Conn, StreamDir, StreamSink, Transport};
use cnflow::protocol::testutil::{conn, feed_writes};
use cnflow::protocol::{mongodb, DecodeConfig, Dispatcher};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::io::Write;

const ROUNDS: i32 = 50;
const SEGMENT: usize = 1448;

fn msg(req: i32, to: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((16 + body.len()) as i32).to_le_bytes().to_vec();
    for x in [req, to, op] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn op_msg(req: i32, to: i32, doc: &RawDocumentBuf) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, 0];
    b.extend_from_slice(doc.as_bytes());
    msg(req, to, 2013, &b)
}

fn compress(m: Vec<u8>, id: u8) -> Vec<u8> {
    if id == 0 {
        return m;
    }
    let body = &m[16..];
    let data = if id == 1 {
        snap::raw::Encoder::new().compress_vec(body).unwrap()
    } else {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    };
    let mut b = 2013i32.to_le_bytes().to_vec();
    b.extend_from_slice(&(body.len() as i32).to_le_bytes());
    b.push(id);
    b.extend_from_slice(&data);
    let h = |i: usize| i32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
    msg(h(4), h(8), 2012, &b)
}

/// Rounds of insert, find (20 documents back) and getMore (20 more), each
/// request followed by its reply.
fn stream(compressor: u8) -> Vec<(StreamDir, Vec<u8>)> {
    let mut v = Vec::new();
    let mut batch = RawArrayBuf::new();
    for i in 0..20 {
        batch.push(rawdoc! { "_id": i, "item": "pen", "status": "paid", "total": 12.5, "tags": ["a", "b"] });
    }
    for r in 0..ROUNDS {
        let id = r * 10;
        let reqs = [
            rawdoc! { "insert": "orders", "documents": [{ "_id": r, "item": "pen" }], "ordered": true, "lsid": { "id": 1 }, "$db": "shop" },
            rawdoc! { "find": "orders", "filter": { "status": "paid", "total": { "$gt": 10 } }, "batchSize": 20, "$db": "shop" },
            rawdoc! { "getMore": 77i64, "collection": "orders", "batchSize": 20, "$db": "shop" },
        ];
        let reps = [
            rawdoc! { "n": 1, "ok": 1.0 },
            rawdoc! { "cursor": { "firstBatch": batch.clone(), "id": 77i64, "ns": "shop.orders" }, "ok": 1.0 },
            rawdoc! { "cursor": { "nextBatch": batch.clone(), "id": 0i64, "ns": "shop.orders" }, "ok": 1.0 },
        ];
        for (k, (q, a)) in reqs.iter().zip(&reps).enumerate() {
            let k = k as i32;
            v.push((StreamDir::ToServer, compress(op_msg(id + k, 0, q), compressor)));
            v.push((StreamDir::ToClient, compress(op_msg(id + k + 5, id + k, a), compressor)));
        }
    }
    v
}

fn feed(st: &[(StreamDir, Vec<u8>)], c: &Conn, out: &mut Vec<Exchange>) {
    feed_writes(&mut mongodb::MongodbDecoder::new(&DecodeConfig::default()), c, st, SEGMENT, out);
}

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("mongodb_decoder");
    let cn = conn(Transport::Tcp, 27017);
    let n = 3 * ROUNDS as usize;
    for (name, id) in [("op_msg", 0u8), ("snappy", 1), ("zlib", 2)] {
        let st = stream(id);
        // The stream decodes to what it was built from, or the figure means nothing.
        let mut out = Vec::new();
        feed(&st, &cn, &mut out);
        assert_eq!(out.len(), n, "{name}");
        assert!(out.iter().all(|e| !e.partial), "{name}");
        let bytes: u64 = st.iter().map(|(_, b)| b.len() as u64).sum();
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(n);
                feed(&st, &cn, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// New connections through the dispatcher on a port that hints nothing:
/// content detection, decoder creation, one exchange each.
fn bench_dispatch(c: &mut Criterion) {
    let conns: Vec<Conn> = (0..200u64)
        .map(|i| {
            let mut ci = (*conn(Transport::Tcp, 4000)).clone();
            ci.id = i;
            std::sync::Arc::new(ci)
        })
        .collect();
    let q = op_msg(1, 0, &rawdoc! { "find": "orders", "filter": { "_id": 1 }, "$db": "shop" });
    let a = op_msg(2, 1, &rawdoc! { "cursor": { "firstBatch": [{ "_id": 1 }], "id": 0i64 }, "ok": 1.0 });
    let mut g = c.benchmark_group("mongodb_dispatch");
    g.throughput(Throughput::Elements(conns.len() as u64));
    g.bench_function("detect_new_connections", |b| {
        b.iter(|| {
            let mut d = Dispatcher::new(DecodeConfig::default());
            for c in &conns {
                d.on_data(c, StreamDir::ToServer, 1, &q);
                d.on_data(c, StreamDir::ToClient, 2, &a);
                d.on_close(c, 3, CloseReason::Fin);
            }
            let n = d.take().len();
            assert_eq!(n, conns.len());
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_streams, bench_dispatch);
criterion_main!(benches);
