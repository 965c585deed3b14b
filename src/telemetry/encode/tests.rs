use super::*;
use crate::otel::route::RouteTemplater;
use crate::telemetry::samples::{one_of_each, T0};
use crate::telemetry::span::{build_with_peer, NamingOptions, Peer};
use proptest::prelude::*;
use prost::Message;

fn identity(name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        attributes: vec![("service.name".into(), name.into()), ("host.name".into(), "h\"1\\\n".into())],
    })
}

/// Every sample exchange, both sides, as span records over two resources,
/// with the optional parts (parent, trace state, peer, error) varied.
fn sample_batch() -> Vec<ResourceBatch> {
    let mut routes = RouteTemplater::new(24, 1000, 12);
    let opts = NamingOptions::default();
    let mut a = ResourceBatch::new(identity("a"), vec![]);
    let mut b = ResourceBatch::new(identity("b ü"), vec![]);
    for (i, ex) in one_of_each(T0).iter().enumerate() {
        for kind in [Kind::Client, Kind::Server] {
            let peer = Peer {
                attributes: if i % 2 == 0 { vec![("k8s.peer.pod.name".into(), format!("pod-{i}"))] } else { vec![] },
                server_name: None,
            };
            let p = build_with_peer(ex, kind, &mut routes, &opts, peer);
            let rec = SpanRec {
                trace_id: [i as u8 + 1; 16],
                span_id: [0xab; 8],
                parent_span_id: (i % 3 == 0).then_some([7; 8]),
                trace_state: if i % 4 == 0 { "vendor=x,th=8".into() } else { String::new() },
                flags: if i % 2 == 0 { 0x301 } else { 0x101 },
                start_ns: ex.start_ns,
                end_ns: ex.end_ns,
                name: p.name,
                kind: p.kind,
                attrs: p.attrs,
                peer: p.peer,
                error: p.error,
            };
            if kind == Kind::Client { &mut a } else { &mut b }.spans.push(rec);
        }
    }
    vec![a, b]
}

fn check(batch: Vec<ResourceBatch>) {
    let mut buf = Vec::new();
    encode_proto(&batch, &mut buf, &mut Prepared::default());
    assert_eq!(buf.len(), proto_len(&batch));
    let mut json = Vec::new();
    encode_json(&batch, &mut json);
    let req = to_request(batch);
    // Decoded: the same request; bytes: what prost writes for it.
    assert_eq!(ExportTraceServiceRequest::decode(&buf[..]).unwrap(), req);
    assert_eq!(buf, req.encode_to_vec());
    // JSON: byte for byte what the serde mapping writes.
    assert_eq!(String::from_utf8(json).unwrap(), serde_json::to_string(&req).unwrap());
}

#[test]
fn samples_encode_as_prost_and_serde_do() {
    let batch = sample_batch();
    assert!(batch.iter().all(|r| !r.spans.is_empty()));
    assert!(batch.iter().flat_map(|r| &r.spans).any(|s| s.error.is_some()), "an error span among the samples");
    check(batch);
}

#[test]
fn edge_values() {
    let rec = SpanRec {
        trace_id: [0; 16],
        span_id: [1; 8],
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        start_ns: 0,
        end_ns: u64::MAX,
        name: String::new().into(),
        kind: Kind::Consumer,
        attrs: vec![
            ("a", V::I(i64::MIN)),
            ("b", V::I(-1)),
            ("c", V::B(false)),
            ("d", V::from(String::new())),
            ("e", V::A(vec![])),
            ("f", V::A(vec![String::new(), "\u{1}\u{7f}\u{8}\u{c}\t\r\"/é𝄞".into()])),
        ],
        peer: vec![(String::new(), String::new())],
        error: Some(String::new()),
    };
    check(vec![ResourceBatch::new(Arc::new(Identity { attributes: vec![] }), vec![rec.clone()])]);
    check(vec![]);
    let long = SpanRec { name: "x".repeat(300).into(), error: Some("y".repeat(20_000)), ..rec };
    check(vec![ResourceBatch::new(identity("a"), vec![long])]);
}

fn v() -> impl Strategy<Value = V> {
    prop_oneof![
        any::<String>().prop_map(V::from),
        any::<i64>().prop_map(V::I),
        any::<bool>().prop_map(V::B),
        proptest::collection::vec(any::<String>(), 0..3).prop_map(V::A),
    ]
}

const KEYS: &[&str] = &["server.address", "db.query.text", "http.response.status_code", "cnflow.partial", "x"];

fn rec() -> impl Strategy<Value = SpanRec> {
    (
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<Option<[u8; 8]>>(), any::<String>(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<String>(), 0..4usize),
        proptest::collection::vec((0..KEYS.len(), v()), 0..6),
        proptest::collection::vec((any::<String>(), any::<String>()), 0..2),
        any::<Option<String>>(),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, trace_state, flags),
                (start_ns, end_ns, name, k),
                attrs,
                peer,
                error,
            )| {
                SpanRec {
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state,
                    flags,
                    start_ns,
                    end_ns,
                    name: name.into(),
                    kind: [Kind::Client, Kind::Server, Kind::Producer, Kind::Consumer][k],
                    attrs: attrs.into_iter().map(|(i, v)| (KEYS[i], v)).collect(),
                    peer,
                    error,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_spans_encode_as_prost_and_serde_do(
        spans in proptest::collection::vec(rec(), 0..5),
        res in proptest::collection::vec((any::<String>(), any::<String>()), 0..3),
    ) {
        let resource = Arc::new(Identity { attributes: res });
        check(vec![ResourceBatch::new(resource, spans)]);
    }
}

/// `copy_short` copies every length it is used for (0..128) exactly, and
/// writes nothing outside the destination's `n` bytes.
#[test]
fn short_copies_of_every_length() {
    for n in 0..128usize {
        let src: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(37) ^ 0x5a).collect();
        let mut dst = vec![0xeeu8; n + 64];
        // SAFETY: `dst[32..]` has room for `n` bytes; `src` is another allocation.
        unsafe { copy_short(&src, dst.as_mut_ptr().add(32)) };
        assert_eq!(&dst[32..32 + n], &src[..], "length {n}");
        assert!(dst[..32].iter().chain(&dst[32 + n..]).all(|&b| b == 0xee), "length {n}: wrote outside");
    }
}

/// Attributes on both sides of the one-byte length limit (the in-place
/// path and the general one): keys and values of every length around it,
/// integers at each varint width, names of every short length.
#[test]
fn attributes_around_the_one_byte_length_limit() {
    const LONG_KEY: &str = "a.key.of.exactly.forty.bytes.xxxxxxxxxxx";
    let mut attrs = Vec::new();
    for k in ["x", "server.address", LONG_KEY] {
        for n in 0..130 {
            attrs.push((k, V::from("v".repeat(n))));
        }
        for i in [0i64, 1, 127, 128, 16_383, 16_384, i64::MAX, -1, i64::MIN] {
            attrs.push((k, V::I(i)));
        }
    }
    let spans = (0..140)
        .map(|n| SpanRec {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: "t".repeat(n % 3),
            flags: 0,
            start_ns: 1,
            end_ns: 2,
            name: "n".repeat(n).into(),
            kind: Kind::Server,
            attrs: if n == 0 { attrs.clone() } else { vec![("k", V::from("é".repeat(n / 2)))] },
            peer: vec![],
            error: None,
        })
        .collect();
    check(vec![ResourceBatch::new(identity("a"), spans)]);
}

/// Spans encoded as recorded (framed in their resource's buffer, lengths
/// set after the body, short and long bodies moved) give the bytes the
/// records give, and with one resource the buffer itself becomes the whole
/// request; with several it is left alone.
#[test]
fn spans_encoded_as_recorded_make_the_request_in_place() {
    let mut records = sample_batch();
    let long = SpanRec { error: Some("y".repeat(20_000)), ..records[0].spans[0].clone() };
    let short = SpanRec { attrs: vec![], ..records[0].spans[0].clone() };
    records[0].spans.extend([long, short]);
    let early = |rb: &ResourceBatch| {
        let mut e = ResourceBatch::new(rb.resource.clone(), vec![]);
        e.bodies = Bodies::for_resource(&rb.resource, 0);
        for s in &rb.spans {
            e.bodies.push(s);
        }
        e
    };
    let mut early_batch: Vec<_> = records.iter().map(early).collect();
    let mut want = Vec::new();
    encode_proto(&records, &mut want, &mut Prepared::default());
    let mut got = Vec::new();
    encode_proto(&early_batch, &mut got, &mut Prepared::default());
    assert_eq!(got, want, "framed bodies, several resources");
    assert!(request_in_place(&mut early_batch).is_none(), "two resources");
    assert_eq!(span_count(&early_batch), span_count(&records));

    for rb in &records {
        let one = vec![ResourceBatch::new(rb.resource.clone(), rb.spans.clone())];
        let mut want = Vec::new();
        encode_proto(&one, &mut want, &mut Prepared::default());
        let mut batch = vec![early(&one[0])];
        let req = request_in_place(&mut batch).expect("one resource, encoded as recorded");
        assert_eq!(&req[..], &want[..]);
        assert_eq!(ExportTraceServiceRequest::decode(&req[..]).unwrap(), to_request(one));
    }
}
