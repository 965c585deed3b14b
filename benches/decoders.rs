//! Decoder throughput: HTTP/1, DNS, Redis and ICMP decoders fed realistic
//! traffic, plus the dispatcher's detection of new connections.
//! `cargo bench --bench decoders` (CI runs each body once with `cargo test --benches`).
use cnflow::exchange::Exchange;
use cnflow::flow::{CloseReason, Conn, StreamDir, StreamSink, Transport};
use cnflow::protocol::testutil::conn;
use cnflow::protocol::{dns, http1, icmp, redis, DecodeConfig, Dispatcher, Emit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::hint::black_box;
use std::str::FromStr;

const EXCHANGES: usize = 200;
const SEGMENT: usize = 1448;

/// Requests and responses of one connection, cut into TCP-sized segments.
struct Stream {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Stream {
    fn bytes(&self) -> u64 {
        (self.to_server.len() + self.to_client.len()) as u64
    }

    /// Interleave segments of both directions, as a capture would deliver them.
    fn feed(&self, c: &Conn, dec: &mut dyn cnflow::protocol::ConnDecoder, out: &mut Vec<Exchange>) {
        let mut e = Emit { conn: c, out };
        let mut s = self.to_server.chunks(SEGMENT);
        let mut r = self.to_client.chunks(SEGMENT);
        let mut ts = 1u64;
        loop {
            let a = s.next();
            let b = r.next();
            if a.is_none() && b.is_none() {
                break;
            }
            if let Some(a) = a {
                dec.on_data(StreamDir::ToServer, ts, a, &mut e);
            }
            if let Some(b) = b {
                dec.on_data(StreamDir::ToClient, ts + 1, b, &mut e);
            }
            ts += 2;
        }
        dec.on_close(ts, CloseReason::Fin, &mut e);
    }
}

fn http1_stream() -> Stream {
    let mut st = Stream { to_server: Vec::new(), to_client: Vec::new() };
    for i in 0..EXCHANGES {
        st.to_server.extend_from_slice(
            format!(
                "GET /api/v1/items/{i}?page=2&sort=desc HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\n\
                 Accept: application/json\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
            )
            .as_bytes(),
        );
        let body = "x".repeat(512 + i % 64);
        st.to_client.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    st
}

fn redis_stream() -> Stream {
    let mut st = Stream { to_server: Vec::new(), to_client: Vec::new() };
    for i in 0..EXCHANGES {
        let key = format!("user:{i}:session");
        let val = "v".repeat(100);
        st.to_server.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n",
                key.len(),
                val.len(),
                key.len()
            )
            .as_bytes(),
        );
        st.to_client.extend_from_slice(format!("+OK\r\n${}\r\n{val}\r\n", val.len()).as_bytes());
    }
    st
}

/// The same traffic with the GET values as RESP3 streamed strings (`$?`, four
/// 25-byte chunks) and a streamed `*?` array answering the SET.
fn redis_streamed_stream() -> Stream {
    let mut st = redis_stream();
    st.to_client.clear();
    let chunk = "v".repeat(25);
    for _ in 0..EXCHANGES {
        st.to_client.extend_from_slice(b"*?\r\n+OK\r\n.\r\n$?\r\n");
        for _ in 0..4 {
            st.to_client.extend_from_slice(format!(";25\r\n{chunk}\r\n").as_bytes());
        }
        st.to_client.extend_from_slice(b";0\r\n");
    }
    st
}

fn dns_datagrams() -> Vec<(StreamDir, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..EXCHANGES as u16 {
        let name = Name::from_str(&format!("svc-{i}.default.svc.cluster.local.")).unwrap();
        let mut q = Message::new(i, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), RecordType::A));
        let mut r = Message::new(i, MessageType::Response, OpCode::Query);
        r.add_query(Query::query(name.clone(), RecordType::A));
        r.add_answer(Record::from_rdata(name, 30, RData::A("10.96.0.10".parse().unwrap())));
        v.push((StreamDir::ToServer, q.to_vec().unwrap()));
        v.push((StreamDir::ToClient, r.to_vec().unwrap()));
    }
    v
}

fn icmp_datagrams() -> Vec<(StreamDir, Vec<u8>)> {
    let mut v = Vec::new();
    for seq in 0..EXCHANGES as u16 {
        for (dir, t) in [(StreamDir::ToServer, 8u8), (StreamDir::ToClient, 0)] {
            let mut m = vec![t, 0, 0, 0, 0x12, 0x34];
            m.extend_from_slice(&seq.to_be_bytes());
            m.extend_from_slice(&[0xab; 56]);
            v.push((dir, m));
        }
    }
    v
}

fn bench_streams(c: &mut Criterion) {
    let cfg = DecodeConfig::default();
    let mut g = c.benchmark_group("stream_decoders");
    type NewDecoder = fn(&DecodeConfig) -> Box<dyn cnflow::protocol::ConnDecoder>;
    let cases: [(&str, Stream, u16, NewDecoder); 3] = [
        ("http1", http1_stream(), 8080, http1::new_decoder),
        ("redis", redis_stream(), 6379, redis::new_decoder),
        ("redis_resp3_streamed", redis_streamed_stream(), 6379, redis::new_decoder),
    ];
    for (name, st, port, new) in &cases {
        let cn = conn(Transport::Tcp, *port);
        g.throughput(Throughput::Bytes(st.bytes()));
        g.bench_function(BenchmarkId::new(*name, EXCHANGES), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(2 * EXCHANGES);
                let mut dec = new(&cfg);
                st.feed(&cn, dec.as_mut(), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_datagrams(c: &mut Criterion) {
    let cfg = DecodeConfig::default();
    let mut g = c.benchmark_group("datagram_decoders");
    type Datagrams = Vec<(StreamDir, Vec<u8>)>;
    type NewDecoder = fn(&DecodeConfig) -> Box<dyn cnflow::protocol::ConnDecoder>;
    let cases: [(&str, Datagrams, Transport, NewDecoder); 2] = [
        ("dns", dns_datagrams(), Transport::Udp, dns::new_decoder),
        ("icmp", icmp_datagrams(), Transport::Icmp, icmp::new_decoder),
    ];
    for (name, msgs, transport, new) in &cases {
        let cn = conn(*transport, 53);
        g.throughput(Throughput::Elements(msgs.len() as u64));
        g.bench_function(BenchmarkId::new(*name, EXCHANGES), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(EXCHANGES);
                let mut dec = new(&cfg);
                let mut e = Emit { conn: &cn, out: &mut out };
                for (i, (dir, m)) in msgs.iter().enumerate() {
                    dec.on_datagram(*dir, i as u64, m, m.len() as u32, &mut e);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// New connections through the dispatcher: detection, decoder creation, one exchange each.
fn bench_dispatch(c: &mut Criterion) {
    let req = b"GET /healthz HTTP/1.1\r\nHost: pod\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let redis_req = b"*1\r\n$4\r\nPING\r\n";
    let conns: Vec<Conn> = (0..EXCHANGES as u64)
        .map(|i| {
            let mut ci = (*conn(Transport::Tcp, if i % 2 == 0 { 8080 } else { 6379 })).clone();
            ci.id = i;
            std::sync::Arc::new(ci)
        })
        .collect();
    let mut g = c.benchmark_group("dispatcher");
    g.throughput(Throughput::Elements(conns.len() as u64));
    g.bench_function("detect_new_connections", |b| {
        b.iter(|| {
            let mut d = Dispatcher::new(DecodeConfig::default());
            for c in &conns {
                if c.id % 2 == 0 {
                    d.on_data(c, StreamDir::ToServer, 1, req);
                    d.on_data(c, StreamDir::ToClient, 2, resp);
                } else {
                    d.on_data(c, StreamDir::ToServer, 1, redis_req);
                    d.on_data(c, StreamDir::ToClient, 2, b"+PONG\r\n");
                }
                d.on_close(c, 3, CloseReason::Fin);
            }
            black_box(d.take().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_streams, bench_datagrams, bench_dispatch);
criterion_main!(benches);
