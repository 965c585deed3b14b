//! memcached decoder throughput: text (multi-get, set, incr, noreply), meta
//! (pipelined, quiet) and binary (quiet gets + noop) traffic of one
//! connection, and detection of new memcached connections by the dispatcher.
//! `cargo bench --bench decoders_memcached` (CI runs each body once with `cargo test --benches`).
use cnflow::exchange::Exchange;
use cnflow::flow::{CloseReason, Conn, StreamDir, StreamSink, Transport};
use cnflow::protocol::testutil::{conn, feed_writes};
use cnflow::protocol::{memcached, DecodeConfig, Dispatcher};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const BATCHES: usize = 50;
const SEGMENT: usize = 1448;

/// Batches of pipelined requests, each followed by its replies (a client
/// waits for a batch's replies before the next), cut into TCP-sized segments.
struct Stream {
    writes: Vec<(StreamDir, Vec<u8>)>,
    exchanges: usize,
}

impl Stream {
    fn bytes(&self) -> u64 {
        self.writes.iter().map(|(_, b)| b.len() as u64).sum()
    }
    fn feed(&self, c: &Conn, out: &mut Vec<Exchange>) {
        feed_writes(&mut memcached::MemcachedDecoder::new(&DecodeConfig::default()), c, &self.writes, SEGMENT, out);
    }
}

fn text_stream() -> Stream {
    let value = "v".repeat(300);
    let mut writes = Vec::new();
    for i in 0..BATCHES {
        let req = format!(
            "set user:{i} 0 3600 300\r\n{value}\r\nget user:{i} user:{} nope:{i}\r\nincr hits:{i} 1\r\nset seen:{i} 0 0 1 noreply\r\n1\r\ndelete old:{i}\r\n",
            i + 1
        );
        let resp = format!(
            "STORED\r\nVALUE user:{i} 0 300\r\n{value}\r\nVALUE user:{} 0 300\r\n{value}\r\nEND\r\n42\r\nNOT_FOUND\r\n",
            i + 1
        );
        writes.extend([(StreamDir::ToServer, req.into_bytes()), (StreamDir::ToClient, resp.into_bytes())]);
    }
    Stream { writes, exchanges: BATCHES * 5 }
}

fn meta_stream() -> Stream {
    let mut writes = Vec::new();
    for i in 0..BATCHES {
        let mut req = String::new();
        let mut resp = String::new();
        for k in 0..8 {
            req.push_str(&format!("mg item:{i}:{k} v f t q O{k}\r\n"));
            if k % 2 == 0 {
                resp.push_str(&format!("VA 5 f0 t-1 O{k}\r\nhello\r\n"));
            }
        }
        req.push_str(&format!("ms item:{i} 5 T60 q\r\nhello\r\nmn\r\n"));
        resp.push_str("MN\r\n");
        writes.extend([(StreamDir::ToServer, req.into_bytes()), (StreamDir::ToClient, resp.into_bytes())]);
    }
    Stream { writes, exchanges: BATCHES * 10 }
}

fn bin(magic: u8, opcode: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    let mut v = vec![magic, opcode];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    v.extend_from_slice(&((key.len() + extras.len() + value.len()) as u32).to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

fn binary_stream() -> Stream {
    let mut writes = Vec::new();
    let value = vec![b'x'; 300];
    for i in 0..BATCHES {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        for k in 0..8u32 {
            let key = format!("item:{i}:{k}");
            req.extend(bin(0x80, 0x0d, key.as_bytes(), &[], &[], k));
            if k % 2 == 0 {
                resp.extend(bin(0x81, 0x0d, key.as_bytes(), &[0; 4], &value, k));
            }
        }
        req.extend(bin(0x80, 0x01, b"item", &[0; 8], &value, 100));
        req.extend(bin(0x80, 0x0a, b"", &[], &[], 101));
        resp.extend(bin(0x81, 0x01, b"", &[], &[], 100));
        resp.extend(bin(0x81, 0x0a, b"", &[], &[], 101));
        writes.extend([(StreamDir::ToServer, req), (StreamDir::ToClient, resp)]);
    }
    Stream { writes, exchanges: BATCHES * 10 }
}

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcached_decoder");
    let cn = conn(Transport::Tcp, 11211);
    for (name, st) in [("text", text_stream()), ("meta", meta_stream()), ("binary", binary_stream())] {
        // The stream decodes to what it was built from, or the figure means nothing.
        let mut out = Vec::new();
        st.feed(&cn, &mut out);
        assert_eq!(out.len(), st.exchanges, "{name}");
        g.throughput(Throughput::Bytes(st.bytes()));
        g.bench_function(BenchmarkId::new(name, st.exchanges), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(st.exchanges);
                st.feed(&cn, &mut out);
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
    let mut g = c.benchmark_group("memcached_dispatch");
    g.throughput(Throughput::Elements(conns.len() as u64));
    g.bench_function("detect_new_connections", |b| {
        b.iter(|| {
            let mut d = Dispatcher::new(DecodeConfig::default());
            for c in &conns {
                d.on_data(c, StreamDir::ToServer, 1, b"get session:42\r\n");
                d.on_data(c, StreamDir::ToClient, 2, b"VALUE session:42 0 2\r\nok\r\nEND\r\n");
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
