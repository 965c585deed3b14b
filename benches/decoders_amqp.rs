//! Throughput of the AMQP 0-9-1 decoder on synthetic connections shaped like
//! a pika producer with publisher confirms (method + content header + body
//! per message, the broker acking every 10th with `multiple`) and a consumer
//! receiving deliveries and acking each, fed in MSS-sized segments as flow
//! tracking would.

use cnflow::flow::{Conn, StreamDir, Transport};
use cnflow::protocol::amqp::{wire::*, AmqpDecoder};
use cnflow::protocol::testutil::{conn, feed_writes};
use cnflow::protocol::DecodeConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MSS: usize = 1448;
const BODY: usize = 512;

fn frame(ty: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&ch.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(FRAME_END);
    v
}

fn ss(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn method(ch: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, ch, &p)
}

fn content(ch: u16) -> Vec<u8> {
    let mut h = BASIC.to_be_bytes().to_vec();
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&(BODY as u64).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    let mut v = frame(FRAME_HEADER, ch, &h);
    v.extend(frame(FRAME_BODY, ch, &[b'x'; BODY]));
    v
}

fn handshake() -> Vec<(StreamDir, Vec<u8>)> {
    vec![
        (StreamDir::ToServer, PROTOCOL_HEADER.to_vec()),
        (StreamDir::ToServer, method(0, CONNECTION, 40, &[ss("/"), ss(""), vec![0]].concat())),
        (StreamDir::ToClient, method(0, CONNECTION, 41, &ss(""))),
        (StreamDir::ToServer, method(1, CHANNEL, 10, &ss(""))),
        (StreamDir::ToClient, method(1, CHANNEL, 11, &[0, 0, 0, 0])),
    ]
}

/// `n` confirmed publishes, acked by the broker 10 at a time.
fn publish(n: u64) -> Vec<(StreamDir, Vec<u8>)> {
    let mut w = handshake();
    w.push((StreamDir::ToServer, method(1, CONFIRM, 10, &[0])));
    w.push((StreamDir::ToClient, method(1, CONFIRM, 11, &[])));
    let mut batch = Vec::new();
    for i in 1..=n {
        batch.extend(method(1, BASIC, 40, &[vec![0, 0], ss("orders"), ss("order.created"), vec![0]].concat()));
        batch.extend(content(1));
        if i % 10 == 0 {
            w.push((StreamDir::ToServer, std::mem::take(&mut batch)));
            w.push((StreamDir::ToClient, method(1, BASIC, 80, &[i.to_be_bytes().to_vec(), vec![1]].concat())));
        }
    }
    w
}

/// `n` deliveries, each acked by the client.
fn consume(n: u64) -> Vec<(StreamDir, Vec<u8>)> {
    let mut w = handshake();
    w.push((
        StreamDir::ToServer,
        method(1, BASIC, 20, &[vec![0, 0], ss("orders"), ss("c1"), vec![0], vec![0; 4]].concat()),
    ));
    w.push((StreamDir::ToClient, method(1, BASIC, 21, &ss("c1"))));
    for i in 1..=n {
        let mut d = method(
            1,
            BASIC,
            60,
            &[ss("c1"), i.to_be_bytes().to_vec(), vec![0], ss("orders"), ss("order.created")].concat(),
        );
        d.extend(content(1));
        w.push((StreamDir::ToClient, d));
        w.push((StreamDir::ToServer, method(1, BASIC, 80, &[i.to_be_bytes().to_vec(), vec![0]].concat())));
    }
    w
}

fn run(c: &Conn, writes: &[(StreamDir, Vec<u8>)]) -> usize {
    feed_writes(&mut AmqpDecoder::new(&DecodeConfig::default()), c, writes, MSS, &mut Vec::new())
}

fn bench(c: &mut Criterion) {
    let cn = conn(Transport::Tcp, 5672);
    // Exchanges: connection.open, channel.open, (confirm.select | basic.consume), then one per message (+ one per ack).
    for (name, writes, n) in [("publish_confirm_1000", publish(1000), 1003), ("consume_ack_1000", consume(1000), 2003)]
    {
        let bytes: usize = writes.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(run(&cn, &writes), n);
        let mut g = c.benchmark_group("amqp");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| b.iter(|| run(&cn, &writes)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
