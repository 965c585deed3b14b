//! Throughput of the HTTP/2 (+gRPC) and Kafka decoders on synthetic but
//! realistic connections, fed in MSS-sized segments as flow tracking would.
use bytes::BytesMut;
use cnflow::capture::Direction;

use cnflow::flow::{Conn, ConnInfo, RoleEvidence, StreamDir, Transport};
use cnflow::protocol::testutil::feed_writes;
use cnflow::protocol::{http2, kafka, DecodeConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::{
    produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
    produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse},
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::sync::Arc;

const MSS: usize = 1448;

fn conn() -> Conn {
    Arc::new(ConnInfo {
        id: 1,
        ifindex: 1,
        transport: Transport::Tcp,
        client: "10.200.0.1:40000".parse().unwrap(),
        server: "10.200.0.2:50051".parse().unwrap(),
        client_to_server: Direction::Egress,
        evidence: RoleEvidence::Syn,
        first_ts_ns: 0,
    })
}

fn frame(typ: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend_from_slice(&[typ, flags]);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// `calls` unary gRPC calls on one connection, as (direction, bytes) writes.
fn grpc_connection(calls: u32) -> Vec<(StreamDir, Vec<u8>)> {
    let mut cli = loona_hpack::Encoder::new();
    let mut srv = loona_hpack::Encoder::new();
    let mut w = vec![(StreamDir::ToServer, http2::frame::PREFACE.to_vec())];
    let msg = |n: usize| {
        let mut m = vec![0u8];
        m.extend_from_slice(&(n as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(0x61u8, n));
        m
    };
    for i in 0..calls {
        let id = 1 + 2 * i;
        let path = format!("/shop.Orders/Get{}", i % 4);
        let h = cli.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"orders.shop.svc:50051"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"grpc-go/1.70.0"),
            (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ]);
        let mut req = frame(1, 4, id, &h);
        req.extend(frame(0, 1, id, &msg(200)));
        w.push((StreamDir::ToServer, req));
        let mut resp =
            frame(1, 4, id, &srv.encode([(&b":status"[..], &b"200"[..]), (b"content-type", b"application/grpc")]));
        resp.extend(frame(0, 0, id, &msg(2000)));
        resp.extend(frame(1, 5, id, &srv.encode([(&b"grpc-status"[..], &b"0"[..])])));
        w.push((StreamDir::ToClient, resp));
    }
    w
}

fn enc<T: Encodable>(m: &T, v: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b, v).unwrap();
    b.to_vec()
}

fn sized(parts: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut v = (len as u32).to_be_bytes().to_vec();
    parts.iter().for_each(|p| v.extend_from_slice(p));
    v
}

fn kafka_connection(calls: i32) -> Vec<(StreamDir, Vec<u8>)> {
    let topic = TopicName(StrBytes::from_static_str("orders"));
    let mut w = Vec::new();
    for corr in 0..calls {
        let h = RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(9)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("bench-producer")));
        let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic.clone()).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(bytes::Bytes::from(vec![7u8; 4000]))),
            ]),
        ]);
        w.push((StreamDir::ToServer, sized(&[enc(&h, 2), enc(&body, 9)])));
        let rh = ResponseHeader::default().with_correlation_id(corr);
        let rb = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(topic.clone())
            .with_partition_responses(vec![PartitionProduceResponse::default()])]);
        w.push((StreamDir::ToClient, sized(&[enc(&rh, 1), enc(&rb, 9)])));
    }
    w
}

fn feed(mut dec: Box<dyn cnflow::protocol::ConnDecoder>, writes: &[(StreamDir, Vec<u8>)]) -> usize {
    feed_writes(&mut *dec, &conn(), writes, MSS, &mut Vec::new())
}

fn bytes_of(w: &[(StreamDir, Vec<u8>)]) -> u64 {
    w.iter().map(|(_, b)| b.len() as u64).sum()
}

fn benches(c: &mut Criterion) {
    let cfg = DecodeConfig::default();
    let mut g = c.benchmark_group("decoders_h2_kafka");
    let grpc = grpc_connection(200);
    g.throughput(Throughput::Bytes(bytes_of(&grpc)));
    g.bench_function("grpc_unary_200_calls", |b| b.iter(|| assert_eq!(feed(http2::new_decoder(&cfg), &grpc), 200)));
    let kafka = kafka_connection(200);
    g.throughput(Throughput::Bytes(bytes_of(&kafka)));
    g.bench_function("kafka_produce_200", |b| b.iter(|| assert_eq!(feed(kafka::new_decoder(&cfg), &kafka), 200)));
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
