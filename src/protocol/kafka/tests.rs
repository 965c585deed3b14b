use super::*;
use bytes::BytesMut;
use kafka_protocol::messages::{
    api_versions_request::ApiVersionsRequest,
    api_versions_response::ApiVersionsResponse,
    metadata_request::{MetadataRequest, MetadataRequestTopic},
    metadata_response::{MetadataResponse, MetadataResponseTopic},
    produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
    produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse},
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

fn conn() -> Conn {
    std::sync::Arc::new(crate::flow::ConnInfo {
        id: 2,
        ifindex: 1,
        transport: crate::flow::Transport::Tcp,
        client: "10.200.0.1:40000".parse().unwrap(),
        server: "10.200.0.2:9093".parse().unwrap(),
        client_to_server: crate::capture::Direction::Egress,
        evidence: crate::flow::RoleEvidence::Syn,
        first_ts_ns: 0,
    })
}

fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut v = (len as u32).to_be_bytes().to_vec();
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

fn enc<T: Encodable>(m: &T, v: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b, v).unwrap();
    b.to_vec()
}

fn req<T: Encodable>(key: i16, ver: i16, corr: i32, body: &T) -> Vec<u8> {
    let h = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(ver)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    frame(&[&enc(&h, apis::request_header_version(key, ver)), &enc(body, ver)])
}

fn resp<T: Encodable>(key: i16, ver: i16, corr: i32, body: &T) -> Vec<u8> {
    let h = ResponseHeader::default().with_correlation_id(corr);
    frame(&[&enc(&h, apis::response_header_version(key, ver)), &enc(body, ver)])
}

fn topic(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn produce(ver: i16, corr: i32, acks: i16) -> Vec<u8> {
    let body = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic("orders")).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(bytes::Bytes::from(vec![0u8; 3000]))),
        ]),
    ]);
    req(0, ver, corr, &body)
}

fn produce_resp(ver: i16, corr: i32, err: i16) -> Vec<u8> {
    let body = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(topic("orders"))
        .with_partition_responses(vec![PartitionProduceResponse::default().with_error_code(err)])]);
    resp(0, ver, corr, &body)
}

fn kafka(ex: &Exchange) -> &KafkaDetail {
    match &ex.detail {
        Detail::Kafka(k) => k,
        _ => panic!("not kafka"),
    }
}

fn run(d: &mut KafkaDecoder, script: &[(StreamDir, Vec<u8>)], chunk: usize) -> Vec<Exchange> {
    let c = conn();
    let mut out = Vec::new();
    let mut ts = 100;
    for (dir, b) in script {
        for piece in b.chunks(chunk) {
            ts += 1;
            d.on_data(*dir, ts, piece, &mut Emit { conn: &c, out: &mut out });
        }
    }
    d.on_close(ts + 1, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
    out
}

#[test]
fn api_versions_and_produce_pair_by_correlation_id() {
    let av = req(18, 3, 1, &ApiVersionsRequest::default());
    let av_resp = resp(18, 3, 1, &ApiVersionsResponse::default());
    let script = vec![
        (StreamDir::ToServer, av),
        (StreamDir::ToServer, produce(9, 2, -1)),
        (StreamDir::ToServer, produce(7, 3, 1)),
        (StreamDir::ToClient, av_resp),
        // Out of order on purpose: pairing is by correlation id.
        (StreamDir::ToClient, produce_resp(7, 3, 0)),
        (StreamDir::ToClient, produce_resp(9, 2, 3)),
    ];
    for chunk in [1, 3, 7, 100, 100_000] {
        let mut d = KafkaDecoder::new(&DecodeConfig::default());
        let out = run(&mut d, &script, chunk);
        assert_eq!(out.len(), 3, "chunk {chunk}");
        let k: Vec<_> = out.iter().map(kafka).collect();
        assert_eq!((k[0].api_name.as_str(), k[0].api_version, k[0].correlation_id), ("ApiVersions", 3, 1));
        assert_eq!(k[0].client_id.as_deref(), Some("rdkafka"));
        assert!(!k[0].header_only);
        assert_eq!((k[1].api_name.as_str(), k[1].correlation_id, k[1].error_code), ("Produce", 3, 0));
        assert_eq!(k[2].correlation_id, 2);
        assert_eq!(k[2].error_code, 3);
        assert_eq!(k[2].error_name.as_deref(), Some("UNKNOWN_TOPIC_OR_PARTITION"));
        assert_eq!(k[2].topics, vec!["orders"]);
        assert!(out.iter().all(|e| e.outcome == Outcome::Complete && !e.partial));
        assert!(out[2].request_bytes > 3000);
    }
}

#[test]
fn old_metadata_and_acks_zero() {
    let md =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("t")))]));
    let mdr = MetadataResponse::default()
        .with_topics(vec![MetadataResponseTopic::default().with_name(Some(topic("t"))).with_error_code(5)]);
    let script = vec![
        (StreamDir::ToServer, req(3, 1, 10, &md)),
        (StreamDir::ToServer, produce(3, 11, 0)),
        (StreamDir::ToClient, resp(3, 1, 10, &mdr)),
    ];
    let mut d = KafkaDecoder::new(&DecodeConfig::default());
    let out = run(&mut d, &script, 1000);
    assert_eq!(out.len(), 2);
    // acks=0 produce is complete as soon as it is sent.
    assert_eq!(kafka(&out[0]).api_name, "Produce");
    assert_eq!(out[0].response_bytes, 0);
    assert_eq!(kafka(&out[1]).topics, vec!["t"]);
    assert_eq!(kafka(&out[1]).error_name.as_deref(), Some("LEADER_NOT_AVAILABLE"));
}

#[test]
fn gap_inside_message_is_skipped_and_across_messages_resyncs() {
    let c = conn();
    let mut out = Vec::new();
    let mut d = KafkaDecoder::new(&DecodeConfig::default());
    let mut e = Emit { conn: &c, out: &mut out };
    let p = produce(9, 5, -1);
    // Lose 2000 record bytes in the middle of the request.
    d.on_data(StreamDir::ToServer, 1, &p[..500], &mut e);
    d.on_gap(StreamDir::ToServer, 2, 2000, &mut e);
    d.on_data(StreamDir::ToServer, 3, &p[2500..], &mut e);
    d.on_data(StreamDir::ToClient, 4, &produce_resp(9, 5, 0), &mut e);
    assert_eq!(e.out.len(), 1);
    assert_eq!(kafka(&e.out[0]).topics, vec!["orders"]);

    // Lose the tail of one request and the head of the next.
    let p6 = produce(9, 6, -1);
    let p7 = produce(9, 7, -1);
    d.on_data(StreamDir::ToServer, 5, &p6[..100], &mut e);
    d.on_gap(StreamDir::ToServer, 6, (p6.len() - 100 + 3) as u64, &mut e);
    d.on_data(StreamDir::ToServer, 7, &p7[3..], &mut e);
    d.on_data(StreamDir::ToServer, 8, &produce(9, 8, -1), &mut e);
    let mut r = produce_resp(9, 6, 0);
    r.extend(produce_resp(9, 8, 0));
    d.on_gap(StreamDir::ToClient, 9, 2, &mut e);
    d.on_data(StreamDir::ToClient, 10, &r[2..], &mut e);
    let ids: Vec<i32> = e.out.iter().map(|x| kafka(x).correlation_id).collect();
    // Response 6 lost its header; 8 is found again by correlation id.
    assert_eq!(ids, vec![5, 8]);
    d.on_close(11, CloseReason::Fin, &mut e);
    let six = e.out.last().unwrap();
    assert_eq!((kafka(six).correlation_id, six.outcome, six.partial), (6, Outcome::Timeout, true));
}

#[test]
fn probe_shapes() {
    let c = conn();
    let p = produce(9, 1, -1);
    assert_eq!(probe(&c, StreamDir::ToServer, &p), Probe::Yes(80));
    assert_eq!(probe(&c, StreamDir::ToServer, &p[..6]), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToServer, &p[..16]), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToClient, &p), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::No);
    // SMPP bind_transmitter (nDPI's smpp_in_general.pcap, port 9000): Produce v2,
    // correlation id 0, empty client id by shape, but its body does not decode.
    let smpp = b"\x00\x00\x00\x28\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01abhik\x00password\x00SMPP\x00\x01\x00\x00\x00";
    assert_eq!(smpp.len(), 40);
    assert_eq!(probe(&c, StreamDir::ToServer, smpp), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, &smpp[..30]), Probe::No);
    // A Produce request whose first segment ends inside its records still probes.
    assert_eq!(probe(&c, StreamDir::ToServer, &p[..p.len() - 100]), Probe::Yes(80));
    assert_eq!(probe(&c, StreamDir::ToServer, &produce(3, 1, 1)[..60]), Probe::Yes(80));
    // api key 300 does not exist.
    assert_eq!(probe(&c, StreamDir::ToServer, &[0, 0, 0, 20, 1, 44, 0, 1, 0, 0, 0, 1, 0, 0]), Probe::No);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::default())]
        #[test]
        fn arbitrary_bytes_never_panic(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
        ) {
            let c = conn();
            let mut out = Vec::new();
            let cfg = DecodeConfig::default();
            let mut d = KafkaDecoder::new(&cfg);
            for (i, (to_server, gap, bytes)) in ops.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                let mut e = Emit { conn: &c, out: &mut out };
                if *gap > 240 {
                    d.on_gap(dir, i as u64, *gap as u64 * 7, &mut e);
                }
                d.on_data(dir, i as u64, bytes, &mut e);
                prop_assert!(d.rx.iter().all(|rx| rx.buf.len() <= cfg.max_buffer_per_dir && rx.resync.len() <= cfg.max_buffer_per_dir + 200));
                prop_assert!(d.pending.len() <= cfg.max_pending_per_conn);
            }
            d.on_close(100, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
        }

        #[test]
        fn valid_traffic_any_segmentation(cuts in proptest::collection::vec(1usize..300, 1..30)) {
            let script = vec![
                (StreamDir::ToServer, produce(9, 1, -1)),
                (StreamDir::ToServer, produce(3, 2, 1)),
                (StreamDir::ToClient, produce_resp(9, 1, 0)),
                (StreamDir::ToClient, produce_resp(3, 2, 6)),
            ];
            let c = conn();
            let mut out = Vec::new();
            let mut d = KafkaDecoder::new(&DecodeConfig::default());
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&script, &cuts) {
                d.on_data(dir, at, chunk, &mut Emit { conn: &c, out: &mut out });
            }
            prop_assert_eq!(out.len(), 2);
            prop_assert_eq!(kafka(&out[1]).error_code, 6);
        }
    }
}

/// Record counts only when every record set was read: a gap inside the
/// records, or records beyond the kept message prefix, leave them unknown
/// (the topic, before the records, is still reported).
#[test]
fn record_count_only_when_whole() {
    let c = conn();
    let produce_with = |corr: i32, records: Vec<u8>| {
        let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic("orders"))
                .with_partition_data(vec![PartitionProduceData::default().with_records(Some(records.into()))]),
        ]);
        req(0, 9, corr, &body)
    };
    let set = body::tests::record_set(3, 2);
    let big = [set.clone(), vec![0x5a; 70 * 1024]].concat();
    let mut out = Vec::new();
    let mut d = KafkaDecoder::new(&DecodeConfig::default());
    let mut e = Emit { conn: &c, out: &mut out };
    let whole = produce_with(1, set.clone());
    d.on_data(StreamDir::ToServer, 1, &whole, &mut e);
    let cut = produce_with(2, set.clone());
    d.on_data(StreamDir::ToServer, 2, &cut[..cut.len() - 40], &mut e);
    d.on_gap(StreamDir::ToServer, 3, 30, &mut e);
    d.on_data(StreamDir::ToServer, 4, &cut[cut.len() - 10..], &mut e);
    d.on_data(StreamDir::ToServer, 5, &produce_with(3, big.clone()), &mut e);
    for corr in 1..=3 {
        d.on_data(StreamDir::ToClient, 6, &produce_resp(9, corr, 0), &mut e);
    }
    let got: Vec<_> = e
        .out
        .iter()
        .map(|x| {
            (kafka(x).correlation_id, kafka(x).record_count, kafka(x).record_bytes, x.partial, kafka(x).topics.clone())
        })
        .collect();
    let orders = vec!["orders".to_string()];
    assert_eq!(
        got,
        vec![
            (1, Some(3), Some(set.len() as u64), false, orders.clone()),
            (2, None, None, true, orders.clone()),
            (3, None, None, true, orders),
        ]
    );
}
