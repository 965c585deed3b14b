//! Messages here are built with `bson`'s own encoder (`rawdoc!`) and the
//! compressors' encoders: the decoder never checks itself.
use super::*;
use crate::protocol::testutil;
use bson::{rawdoc, RawDocumentBuf};
use proptest::prelude::*;

fn conn() -> Conn {
    testutil::conn(Transport::Tcp, 27017)
}

fn msg(req: i32, resp_to: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((HEADER + body.len()) as i32).to_le_bytes().to_vec();
    v.extend_from_slice(&req.to_le_bytes());
    v.extend_from_slice(&resp_to.to_le_bytes());
    v.extend_from_slice(&op.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn op_msg_seq(
    req: i32,
    resp_to: i32,
    flags: u32,
    doc: &RawDocumentBuf,
    seq: Option<(&str, &[RawDocumentBuf])>,
) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(doc.as_bytes());
    if let Some((id, docs)) = seq {
        let mut s = id.as_bytes().to_vec();
        s.push(0);
        for d in docs {
            s.extend_from_slice(d.as_bytes());
        }
        b.push(1);
        b.extend_from_slice(&((s.len() + 4) as i32).to_le_bytes());
        b.extend_from_slice(&s);
    }
    if flags & wire::CHECKSUM_PRESENT != 0 {
        b.extend_from_slice(&[1, 2, 3, 4]);
    }
    msg(req, resp_to, wire::OP_MSG, &b)
}

fn op_msg(req: i32, resp_to: i32, flags: u32, doc: &RawDocumentBuf) -> Vec<u8> {
    op_msg_seq(req, resp_to, flags, doc, None)
}

fn op_query(req: i32, ns: &str, doc: &RawDocumentBuf) -> Vec<u8> {
    let mut b = 0i32.to_le_bytes().to_vec();
    b.extend_from_slice(ns.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&(-1i32).to_le_bytes());
    b.extend_from_slice(doc.as_bytes());
    msg(req, 0, wire::OP_QUERY, &b)
}

fn op_reply(req: i32, resp_to: i32, flags: i32, docs: &[RawDocumentBuf]) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.extend_from_slice(&0i64.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&(docs.len() as i32).to_le_bytes());
    for d in docs {
        b.extend_from_slice(d.as_bytes());
    }
    msg(req, resp_to, wire::OP_REPLY, &b)
}

/// The same message as OP_COMPRESSED with compressor `id`.
fn compressed(m: &[u8], id: u8) -> Vec<u8> {
    use std::io::Write;
    let h = wire::header(m).unwrap();
    let body = &m[HEADER..];
    let data = match id {
        0 => body.to_vec(),
        1 => snap::raw::Encoder::new().compress_vec(body).unwrap(),
        2 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        _ => zstd::encode_all(body, 3).unwrap(),
    };
    let mut b = h.op.to_le_bytes().to_vec();
    b.extend_from_slice(&(body.len() as i32).to_le_bytes());
    b.push(id);
    b.extend_from_slice(&data);
    msg(h.request_id, h.response_to, wire::OP_COMPRESSED, &b)
}

fn find(req: i32) -> Vec<u8> {
    op_msg(
        req,
        0,
        0,
        &rawdoc! { "find": "orders", "filter": { "status": "paid", "total": { "$gt": 10 } }, "limit": 5,
        "lsid": { "id": 1 }, "$db": "shop" },
    )
}

fn batch(req: i32, to: i32, n: usize, key: &str) -> Vec<u8> {
    let mut docs = bson::RawArrayBuf::new();
    for i in 0..n {
        docs.push(rawdoc! { "_id": i as i32, "status": "paid" });
    }
    let cursor = if key == "firstBatch" {
        rawdoc! { "id": 0i64, "ns": "shop.orders", "firstBatch": docs }
    } else {
        rawdoc! { "id": 0i64, "ns": "shop.orders", "nextBatch": docs }
    };
    op_msg(req, to, 0, &rawdoc! { "cursor": cursor, "ok": 1.0 })
}

struct Run {
    dec: MongodbDecoder,
    conn: Conn,
    out: Vec<Exchange>,
    ts: u64,
}

impl Run {
    fn new() -> Self {
        Self::with(conn())
    }
    fn with(conn: Conn) -> Self {
        Run { dec: MongodbDecoder::new(&DecodeConfig::default()), conn, out: Vec::new(), ts: 1000 }
    }
    fn send(&mut self, dir: StreamDir, b: &[u8]) {
        self.ts += 1000;
        let mut e = Emit { conn: &self.conn, out: &mut self.out };
        self.dec.on_data(dir, self.ts, b, &mut e);
    }
    fn req(&mut self, b: &[u8]) {
        self.send(StreamDir::ToServer, b)
    }
    fn rep(&mut self, b: &[u8]) {
        self.send(StreamDir::ToClient, b)
    }
    fn close(&mut self) {
        let mut e = Emit { conn: &self.conn, out: &mut self.out };
        self.dec.on_close(self.ts + 1, CloseReason::Fin, &mut e);
    }
    fn details(&self) -> Vec<&MongodbDetail> {
        self.out
            .iter()
            .map(|e| match &e.detail {
                Detail::Mongodb(d) => d,
                _ => panic!("not mongodb"),
            })
            .collect()
    }
}

#[test]
fn find_with_its_reply() {
    let mut r = Run::new();
    let q = find(7);
    r.req(&q);
    let a = batch(100, 7, 3, "firstBatch");
    r.rep(&a);
    assert_eq!(r.out.len(), 1);
    let e = &r.out[0];
    assert_eq!((e.request_bytes, e.response_bytes), (q.len() as u64, a.len() as u64));
    assert_eq!((e.outcome, e.partial), (Outcome::Complete, false));
    let d = r.details()[0];
    assert_eq!(d.op_code, "OP_MSG");
    assert_eq!(d.operation.as_deref(), Some("find"));
    assert_eq!(d.collection.as_deref(), Some("orders"));
    assert_eq!(d.database.as_deref(), Some("shop"));
    assert_eq!(d.summary().as_deref(), Some("find orders"));
    assert_eq!(d.returned_rows, Some(3));
    assert_eq!(d.ok, Some(true));
    assert_eq!(
        d.query_masked.as_deref(),
        Some(r#"{"find": "orders", "filter": {"status": ?, "total": {"$gt": ?}}, "limit": ?}"#)
    );
}

#[test]
fn replies_pair_by_response_to_in_any_order() {
    let mut r = Run::new();
    r.req(&[find(1), find(2), find(3)].concat());
    r.rep(&[batch(11, 3, 1, "firstBatch"), batch(12, 1, 2, "firstBatch")].concat());
    r.rep(&batch(13, 2, 0, "nextBatch"));
    let rows: Vec<_> = r.details().iter().map(|d| (d.request_id, d.returned_rows)).collect();
    assert_eq!(rows, [(3, Some(1)), (1, Some(2)), (2, Some(0))]);
}

#[test]
fn legacy_hello_handshake() {
    let mut r = Run::new();
    r.req(&op_query(1, "admin.$cmd", &rawdoc! { "isMaster": 1, "helloOk": true, "compression": ["zlib"] }));
    r.rep(&op_reply(2, 1, 8, &[rawdoc! { "ismaster": true, "maxWireVersion": 17, "ok": 1.0 }]));
    let d = r.details()[0];
    assert_eq!(
        (d.op_code, d.operation.as_deref(), d.database.as_deref()),
        ("OP_QUERY", Some("isMaster"), Some("admin"))
    );
    assert_eq!((d.collection.as_deref(), d.ok, d.returned_rows), (None, Some(true), None));
    assert_eq!(d.summary().as_deref(), Some("isMaster"));
    // A legacy query on a collection is a find; its rows are numberReturned.
    let mut r = Run::new();
    r.req(&op_query(5, "shop.orders", &rawdoc! { "status": "paid" }));
    r.rep(&op_reply(6, 5, 0, &[rawdoc! { "_id": 1 }, rawdoc! { "_id": 2 }]));
    let d = r.details()[0];
    assert_eq!(
        (d.operation.as_deref(), d.collection.as_deref(), d.returned_rows),
        (Some("find"), Some("orders"), Some(2))
    );
}

#[test]
fn errors_from_ok_0_and_write_errors() {
    let mut r = Run::new();
    r.req(&op_msg(1, 0, 0, &rawdoc! { "drop": "nothere", "$db": "shop" }));
    r.rep(&op_msg(
        2,
        1,
        0,
        &rawdoc! { "ok": 0.0, "errmsg": "ns not found", "code": 26, "codeName": "NamespaceNotFound" },
    ));
    let docs = [rawdoc! { "_id": 1, "secret": "x" }];
    r.req(&op_msg_seq(
        3,
        0,
        0,
        &rawdoc! { "insert": "orders", "ordered": true, "$db": "shop" },
        Some(("documents", &docs)),
    ));
    r.rep(&op_msg(
        4,
        3,
        0,
        &rawdoc! { "n": 0, "writeErrors": [{ "index": 0, "code": 11000, "errmsg": "E11000 duplicate key" }], "ok": 1.0 },
    ));
    let d = r.details();
    assert_eq!(
        (d[0].ok, d[0].error_code, d[0].error_name.as_deref()),
        (Some(false), Some(26), Some("NamespaceNotFound"))
    );
    assert_eq!((d[1].ok, d[1].error_code, d[1].returned_rows), (Some(true), Some(11000), Some(0)));
    assert_eq!(d[1].error_message.as_deref(), Some("E11000 duplicate key"));
    // Document sequences are not part of the query text.
    assert_eq!(d[1].query_masked.as_deref(), Some(r#"{"insert": "orders", "ordered": ?}"#));
    let parts = semconv::span_parts(&r.out[1], d[1], crate::otel::span::Kind::Client, &Default::default());
    let attr = |k: &str| parts.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| format!("{v:?}"));
    assert!(attr("db.response.status_code").unwrap().contains("11000"));
    assert!(attr("error.type").unwrap().contains("11000"));
    assert_eq!(parts.name, "insert orders");
    assert!(parts.error.is_some());
}

#[test]
fn compressed_with_every_compressor() {
    for id in 0..=3u8 {
        let mut r = Run::new();
        r.req(&compressed(&find(1), id));
        r.rep(&compressed(&batch(2, 1, 4, "firstBatch"), id));
        assert_eq!(r.out.len(), 1, "compressor {id}");
        let d = r.details()[0];
        assert_eq!(d.compressor, wire::compressor_name(id));
        assert_eq!((d.op_code, d.summary().as_deref(), d.returned_rows), ("OP_MSG", Some("find orders"), Some(4)));
        assert!(!r.out[0].partial);
    }
}

#[test]
fn decompression_is_bounded_and_counted() {
    let cfg = DecodeConfig { max_buffer_per_dir: 1024, ..Default::default() };
    let mut r = Run::new();
    r.dec = MongodbDecoder::new(&cfg);
    r.req(&find(1));
    let before = OVER_BOUND.get();
    // ~40 KB of documents compress to little: only 1 KB is inflated.
    r.rep(&compressed(&batch(2, 1, 2000, "firstBatch"), 2));
    assert!(OVER_BOUND.get() > before);
    let e = &r.out[0];
    assert!(e.partial, "ok and the row count were past the bound");
}

#[test]
fn a_reply_past_the_bound_is_read_as_it_streams() {
    let cfg = DecodeConfig { max_buffer_per_dir: 1024, ..Default::default() };
    let mut r = Run::new();
    r.dec = MongodbDecoder::new(&cfg);
    r.req(&find(1));
    let a = batch(2, 1, 2000, "firstBatch");
    for c in a.chunks(1448) {
        r.rep(c);
    }
    let d = r.details()[0];
    assert_eq!((d.ok, d.returned_rows, r.out[0].partial), (Some(true), Some(2000), false));
    assert!(r.dec.rx[1].buf.capacity() <= 4096, "only the bound was buffered");
}

#[test]
fn more_to_come_request_and_exhaust_replies() {
    let mut r = Run::new();
    // w:0 insert: no reply will come.
    r.req(&op_msg(1, 0, wire::MORE_TO_COME, &rawdoc! { "insert": "logs", "$db": "shop" }));
    assert_eq!(r.out.len(), 1);
    assert!(r.details()[0].no_reply);
    // An exhaust getMore: three replies, each answering the previous one.
    r.req(&op_msg(2, 0, wire::EXHAUST_ALLOWED, &rawdoc! { "getMore": 99i64, "collection": "events", "$db": "shop" }));
    let before = EXHAUST_REPLIES.get();
    r.rep(&op_msg(10, 2, wire::MORE_TO_COME, &rawdoc! { "cursor": { "nextBatch": [{ "a": 1 }] }, "ok": 1 }));
    r.rep(&op_msg(11, 10, wire::MORE_TO_COME, &rawdoc! { "cursor": { "nextBatch": [{ "a": 2 }] }, "ok": 1 }));
    r.rep(&op_msg(12, 11, 0, &rawdoc! { "cursor": { "nextBatch": [] }, "ok": 1 }));
    assert_eq!(r.out.len(), 2);
    let d = r.details()[1];
    assert_eq!((d.summary().as_deref(), d.exhaust, d.returned_rows), (Some("getMore events"), true, Some(1)));
    assert_eq!(EXHAUST_REPLIES.get() - before, 2);
    assert!(r.dec.exhaust.is_empty());
}

#[test]
fn checksum_and_sequences_parse() {
    let mut r = Run::new();
    let docs = [rawdoc! { "q": { "a": 1 }, "u": { "$set": { "b": 2 } } }];
    r.req(&op_msg_seq(
        1,
        0,
        wire::CHECKSUM_PRESENT,
        &rawdoc! { "update": "orders", "$db": "shop" },
        Some(("updates", &docs)),
    ));
    r.rep(&op_msg(2, 1, wire::CHECKSUM_PRESENT, &rawdoc! { "n": 1, "nModified": 1, "ok": 1.0 }));
    let d = r.details()[0];
    assert_eq!((d.summary().as_deref(), d.returned_rows, d.ok), (Some("update orders"), Some(1), Some(true)));
}

#[test]
fn credentials_are_never_kept() {
    let mut r = Run::new();
    let payload =
        bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b"n,,n=user,r=secretnonce".to_vec() };
    r.req(&op_msg(
        1,
        0,
        0,
        &rawdoc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": payload, "$db": "admin" },
    ));
    r.rep(&op_msg(2, 1, 0, &rawdoc! { "conversationId": 1, "done": false, "payload": "r=secretnonce", "ok": 1 }));
    let d = r.details()[0];
    assert_eq!((d.operation.as_deref(), d.query_masked.as_deref()), (Some("saslStart"), None));
    let json = serde_json::to_string(&r.out[0]).unwrap();
    assert!(!json.contains("secret") && !json.contains("n=user"), "{json}");
}

#[test]
fn probe_wants_a_header_and_a_document() {
    let c = conn();
    assert_eq!(probe(&c, StreamDir::ToServer, &find(1)), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, &find(1)[..10]), Probe::NeedMore);
    assert!(matches!(probe(&c, StreamDir::ToServer, &find(1)[..40]), Probe::Yes(_)));
    assert_eq!(probe(&c, StreamDir::ToClient, &batch(2, 1, 1, "firstBatch")), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, &compressed(&find(1), 2)), Probe::Yes(90));
    // A reply's shape on the request side, a request answering something: no.
    assert_eq!(probe(&c, StreamDir::ToServer, &batch(2, 1, 1, "firstBatch")), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToClient, &find(1)), Probe::No);
    for other in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"*1\r\n$4\r\nPING\r\n", &[0u8; 64], &[0xffu8; 64]] {
        assert_eq!(probe(&c, StreamDir::ToServer, other), Probe::No, "{other:?}");
    }
    // A good header whose document does not parse.
    let mut bad = find(1);
    bad[HEADER + 5] = 0x55;
    assert_eq!(probe(&c, StreamDir::ToServer, &bad), Probe::No);
}

#[test]
fn joined_mid_message_resynchronises() {
    let mut r = Run::new();
    let first = find(1);
    // The capture starts inside a request: its reply is unmatched, the next pair decodes.
    r.req(&first[20..]);
    r.rep(&batch(2, 1, 1, "firstBatch"));
    r.req(&find(3));
    r.rep(&batch(4, 3, 2, "firstBatch"));
    assert_eq!(r.out.len(), 1);
    assert_eq!(r.details()[0].returned_rows, Some(2));
}

#[test]
fn gap_inside_a_reply_marks_partial() {
    let mut r = Run::new();
    r.req(&find(1));
    let a = batch(2, 1, 50, "firstBatch");
    r.rep(&a[..100]);
    let mut e = Emit { conn: &r.conn, out: &mut r.out };
    r.dec.on_gap(StreamDir::ToClient, 5000, (a.len() - 100) as u64, &mut e);
    assert_eq!(r.out.len(), 1);
    assert!(r.out[0].partial);
    assert_eq!(r.details()[0].summary().as_deref(), Some("find orders"));
    // Framing holds after the gap.
    r.req(&find(3));
    r.rep(&batch(4, 3, 2, "firstBatch"));
    assert_eq!((r.out.len(), r.out[1].partial), (2, false));
}

#[test]
fn pending_requests_end_on_close() {
    let mut r = Run::new();
    r.req(&find(1));
    r.close();
    assert_eq!(r.out[0].outcome, Outcome::Timeout);
}

fn session() -> Vec<(StreamDir, Vec<u8>)> {
    use StreamDir::*;
    let docs = [rawdoc! { "_id": 1 }, rawdoc! { "_id": 2 }];
    vec![
        (ToServer, op_query(1, "admin.$cmd", &rawdoc! { "isMaster": 1, "helloOk": true })),
        (ToClient, op_reply(2, 1, 8, &[rawdoc! { "ismaster": true, "ok": 1.0 }])),
        (ToServer, op_msg_seq(3, 0, 0, &rawdoc! { "insert": "orders", "$db": "shop" }, Some(("documents", &docs)))),
        (ToClient, op_msg(4, 3, 0, &rawdoc! { "n": 2, "ok": 1.0 })),
        (ToServer, compressed(&find(5), 1)),
        (ToClient, compressed(&batch(6, 5, 2, "firstBatch"), 1)),
        (ToServer, compressed(&find(7), 2)),
        (ToClient, compressed(&batch(8, 7, 7, "firstBatch"), 3)),
        (
            ToServer,
            op_msg(9, 0, 0, &rawdoc! { "delete": "orders", "deletes": [{ "q": {}, "limit": 0 }], "$db": "shop" }),
        ),
        (ToClient, op_msg(10, 9, 0, &rawdoc! { "n": 2, "ok": 1.0 })),
    ]
}

fn summarize(out: &[Exchange]) -> Vec<String> {
    out.iter()
        .map(|e| match &e.detail {
            Detail::Mongodb(d) => format!("{:?} {:?} {:?} {}", d.summary(), d.returned_rows, d.ok, e.partial),
            _ => unreachable!(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..12)) {
        let mut r = Run::new();
        for (up, c) in &chunks {
            let dir = if *up { StreamDir::ToServer } else { StreamDir::ToClient };
            let _ = probe(&r.conn, dir, c);
            r.send(dir, c);
        }
        r.close();
    }

    #[test]
    fn valid_stream_in_any_segmentation(cuts in proptest::collection::vec(1usize..64, 1..40)) {
        let mut whole = Run::new();
        for (dir, m) in session() {
            whole.send(dir, &m);
        }
        prop_assert_eq!(whole.out.len(), 5);
        let mut r = Run::new();
        for (dir, _, chunk) in crate::protocol::testutil::in_cuts(&session(), &cuts) {
            r.send(dir, chunk);
        }
        prop_assert_eq!(summarize(&r.out), summarize(&whole.out));
    }

    #[test]
    fn mutated_valid_stream_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes: Vec<(StreamDir, Vec<u8>)> = session();
        for (i, b) in &flips {
            let j = i.index(bytes.len());
            let m = &mut bytes[j].1;
            let at = i.index(m.len());
            m[at] = *b;
        }
        let mut r = Run::new();
        for (dir, m) in &bytes {
            r.send(*dir, m);
        }
        r.close();
    }
}

#[test]
fn session_decodes_fully() {
    let mut r = Run::new();
    for (dir, m) in session() {
        r.send(dir, &m);
    }
    assert_eq!(
        summarize(&r.out),
        [
            "Some(\"isMaster\") None Some(true) false",
            "Some(\"insert orders\") Some(2) Some(true) false",
            "Some(\"find orders\") Some(2) Some(true) false",
            "Some(\"find orders\") Some(7) Some(true) false",
            "Some(\"delete orders\") Some(2) Some(true) false",
        ]
    );
}
