//! NATS and MQTT decoder throughput: one connection of pipelined publishes
//! (NATS PUB with a verbose +OK each, MQTT QoS 1 PUBLISH answered by PUBACK),
//! cut into TCP-sized segments, plus the server's deliveries (NATS MSG, MQTT
//! QoS 0 PUBLISH to the subscriber).
//! `cargo bench --bench decoders_messaging` (CI runs each body once with `cargo test --benches`).
use cnflow::exchange::Exchange;
use cnflow::flow::{CloseReason, Conn, StreamDir, Transport};
use cnflow::protocol::testutil::conn;
use cnflow::protocol::{mqtt, nats, ConnDecoder, DecodeConfig, Emit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const MESSAGES: usize = 200;
const SEGMENT: usize = 1448;

struct Stream {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    exchanges: usize,
}

impl Stream {
    fn bytes(&self) -> u64 {
        (self.to_server.len() + self.to_client.len()) as u64
    }
    fn feed(&self, dec: &mut dyn ConnDecoder, c: &Conn, out: &mut Vec<Exchange>) {
        let mut e = Emit { conn: c, out };
        let mut ts = 1u64;
        // Segments alternate direction, as a request/response conversation does.
        let (mut up, mut down) = (self.to_server.chunks(SEGMENT), self.to_client.chunks(SEGMENT));
        loop {
            let (u, d) = (up.next(), down.next());
            if u.is_none() && d.is_none() {
                break;
            }
            if let Some(u) = u {
                dec.on_data(StreamDir::ToServer, ts, u, &mut e);
            }
            if let Some(d) = d {
                dec.on_data(StreamDir::ToClient, ts + 1, d, &mut e);
            }
            ts += 2;
        }
        dec.on_close(ts, CloseReason::Fin, &mut e);
    }
}

/// CONNECT (verbose) + INFO/+OK, then PUB + +OK per message, and one MSG delivery per message.
fn nats_stream() -> Stream {
    let mut up = b"CONNECT {\"verbose\":true,\"name\":\"bench\"}\r\nSUB orders.* 1\r\n".to_vec();
    let mut down = b"INFO {\"server_id\":\"x\",\"version\":\"2.9.10\"}\r\n+OK\r\n+OK\r\n".to_vec();
    let payload = "p".repeat(200);
    for i in 0..MESSAGES {
        up.extend(format!("PUB orders.{i} {}\r\n{payload}\r\n", payload.len()).bytes());
        down.extend(b"+OK\r\n");
        down.extend(format!("MSG orders.{i} 1 {}\r\n{payload}\r\n", payload.len()).bytes());
    }
    // CONNECT, SUB, the publishes and the deliveries.
    Stream { to_server: up, to_client: down, exchanges: 2 + 2 * MESSAGES }
}

fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        v.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

/// CONNECT/CONNACK, then QoS 1 PUBLISH + PUBACK per message, and a QoS 0 delivery each.
fn mqtt_stream() -> Stream {
    let mut connect = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec();
    connect.extend(b"\x00\x05bench");
    let mut up = mqtt_packet(0x10, &connect);
    let mut down = mqtt_packet(0x20, &[0, 0]);
    let payload = [b'p'; 200];
    for i in 0..MESSAGES {
        let topic = format!("sensors/{i}/temp");
        let id = (i + 1) as u16;
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend(topic.bytes());
        let mut delivery = body.clone();
        body.extend(id.to_be_bytes());
        body.extend(payload);
        up.extend(mqtt_packet(0x32, &body));
        down.extend(mqtt_packet(0x40, &id.to_be_bytes()));
        delivery.extend(payload);
        down.extend(mqtt_packet(0x30, &delivery));
    }
    Stream { to_server: up, to_client: down, exchanges: 1 + 2 * MESSAGES }
}

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("messaging_decoder");
    let cfg = DecodeConfig::default();
    type New = fn(&DecodeConfig) -> Box<dyn ConnDecoder>;
    let cases: [(&str, Stream, New, u16); 2] = [
        ("nats", nats_stream(), |c| Box::new(nats::NatsDecoder::new(c)), 4222),
        ("mqtt", mqtt_stream(), |c| Box::new(mqtt::MqttDecoder::new(c)), 1883),
    ];
    for (name, st, new, port) in cases {
        let cn = conn(Transport::Tcp, port);
        // The stream decodes to what it was built from, or the figure means nothing.
        let mut out = Vec::new();
        st.feed(new(&cfg).as_mut(), &cn, &mut out);
        assert_eq!(out.len(), st.exchanges, "{name}");
        g.throughput(Throughput::Bytes(st.bytes()));
        g.bench_function(BenchmarkId::new(name, st.exchanges), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(st.exchanges);
                st.feed(new(&cfg).as_mut(), &cn, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_streams);
criterion_main!(benches);
