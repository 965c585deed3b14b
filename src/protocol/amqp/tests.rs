use super::*;
use crate::otel::span::{Kind, NamingOptions, SpanCx, SpanParts};
use crate::protocol::testutil::conn as test_conn;

// Frames built field by field from the 0-9-1 layouts (the golden tests use
// real pika/RabbitMQ traffic).
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

fn ls(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn method(ch: u16, class: u16, id: u16, args: &[&[u8]]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    for a in args {
        p.extend_from_slice(a);
    }
    frame(FRAME_METHOD, ch, &p)
}

fn header(ch: u16, size: u64) -> Vec<u8> {
    let mut p = BASIC.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    frame(FRAME_HEADER, ch, &p)
}

fn content(ch: u16, body: &[u8]) -> Vec<u8> {
    let mut v = header(ch, body.len() as u64);
    // Two body frames, to exercise counting across frames.
    let (a, b) = body.split_at(body.len() / 2);
    for part in [a, b] {
        if !part.is_empty() {
            v.extend(frame(FRAME_BODY, ch, part));
        }
    }
    v
}

const TABLE: &[u8] = &[0, 0, 0, 0];
const SECRET: &str = "s3cr3t-pw";

fn u16b(v: u16) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn u32b(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn u64b(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn publish(ch: u16, exchange: &str, rk: &str, body: &[u8]) -> Vec<u8> {
    let mut v = method(ch, BASIC, 40, &[&u16b(0), &ss(exchange), &ss(rk), &[0]]);
    v.extend(content(ch, body));
    v
}

/// A whole session: handshake, declare, publish with and without confirms,
/// consume + deliver + ack, get-empty, a refused passive declare, close.
fn session() -> Vec<(StreamDir, Vec<u8>)> {
    use StreamDir::{ToClient as C, ToServer as S};
    let plain = format!("\0guest\0{SECRET}");
    let mut v = vec![
        (S, PROTOCOL_HEADER.to_vec()),
        (C, method(0, CONNECTION, 10, &[&[0, 9], TABLE, &ls(b"AMQPLAIN PLAIN"), &ls(b"en_US")])),
        (S, method(0, CONNECTION, 11, &[TABLE, &ss("PLAIN"), &ls(plain.as_bytes()), &ss("en_US")])),
        (C, method(0, CONNECTION, 30, &[&u16b(2047), &u32b(131072), &u16b(60)])),
        (S, method(0, CONNECTION, 31, &[&u16b(2047), &u32b(131072), &u16b(60)])),
        (S, method(0, CONNECTION, 40, &[&ss("/"), &ss(""), &[0]])),
        (C, method(0, CONNECTION, 41, &[&ss("")])),
        (S, method(1, CHANNEL, 10, &[&ss("")])),
        (C, method(1, CHANNEL, 11, &[&ls(b"")])),
        (S, method(1, QUEUE, 10, &[&u16b(0), &ss("q1"), &[0], TABLE])),
        (C, method(1, QUEUE, 11, &[&ss("q1"), &u32b(0), &u32b(0)])),
    ];
    // Publish without confirms, a heartbeat in the same segment.
    let mut seg = publish(1, "", "q1", b"hello");
    seg.extend(frame(FRAME_HEARTBEAT, 0, &[]));
    v.push((S, seg));
    v.push((S, method(1, CONFIRM, 10, &[&[0]])));
    v.push((C, method(1, CONFIRM, 11, &[])));
    let mut two = publish(1, "logs", "a.b", b"one");
    two.extend(publish(1, "logs", "a.c", b"two!"));
    v.push((S, two));
    v.push((C, method(1, BASIC, 80, &[&u64b(2), &[1]])));
    // Channel 2 consumes while channel 1 is idle.
    v.push((S, method(2, CHANNEL, 10, &[&ss("")])));
    v.push((C, method(2, CHANNEL, 11, &[&ls(b"")])));
    v.push((S, method(2, BASIC, 20, &[&u16b(0), &ss("q1"), &ss(""), &[0], TABLE])));
    v.push((C, method(2, BASIC, 21, &[&ss("ctag1")])));
    let mut d = method(2, BASIC, 60, &[&ss("ctag1"), &u64b(1), &[0], &ss(""), &ss("q1")]);
    d.extend(content(2, b"hello"));
    v.push((C, d));
    v.push((S, method(2, BASIC, 80, &[&u64b(1), &[0]])));
    v.push((S, method(1, BASIC, 70, &[&u16b(0), &ss("q1"), &[0]])));
    v.push((C, method(1, BASIC, 72, &[&ss("")])));
    v.push((S, method(1, QUEUE, 10, &[&u16b(0), &ss("missing"), &[1], TABLE])));
    v.push((C, method(1, CHANNEL, 40, &[&u16b(404), &ss("NOT_FOUND - no queue 'missing'"), &u16b(50), &u16b(10)])));
    v.push((S, method(1, CHANNEL, 41, &[])));
    v.push((S, method(0, CONNECTION, 50, &[&u16b(200), &ss("Normal shutdown"), &u16b(0), &u16b(0)])));
    v.push((C, method(0, CONNECTION, 51, &[])));
    v
}

fn amqp(ex: &Exchange) -> &AmqpDetail {
    match &ex.detail {
        Detail::Amqp(d) => d,
        _ => panic!("not amqp"),
    }
}

fn run_chunks(script: &[(StreamDir, Vec<u8>)], chunk: usize) -> Vec<Exchange> {
    let c = test_conn(Transport::Tcp, 5672);
    let mut d = AmqpDecoder::new(&DecodeConfig::default());
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

fn summary(out: &[Exchange]) -> Vec<(String, Option<String>, u16, Option<String>)> {
    out.iter()
        .map(|e| {
            let d = amqp(e);
            (d.method.clone(), d.response.clone(), d.channel, semconv::destination(d).map(str::to_string))
        })
        .collect()
}

fn s(m: &str, r: Option<&str>, ch: u16, dest: Option<&str>) -> (String, Option<String>, u16, Option<String>) {
    (m.to_string(), r.map(str::to_string), ch, dest.map(str::to_string))
}

#[test]
fn whole_session_in_any_segmentation() {
    let want = vec![
        s("connection.open", Some("connection.open-ok"), 0, None),
        s("channel.open", Some("channel.open-ok"), 1, None),
        s("queue.declare", Some("queue.declare-ok"), 1, Some("q1")),
        // Default exchange: the destination is "" (RabbitMQ conventions), the queue is the routing key.
        s("basic.publish", None, 1, Some("")),
        s("confirm.select", Some("confirm.select-ok"), 1, None),
        s("basic.publish", Some("basic.ack"), 1, Some("logs")),
        s("basic.publish", Some("basic.ack"), 1, Some("logs")),
        s("channel.open", Some("channel.open-ok"), 2, None),
        s("basic.consume", Some("basic.consume-ok"), 2, Some("q1")),
        s("basic.deliver", None, 2, Some("")),
        s("basic.ack", None, 2, Some("")),
        s("basic.get", Some("basic.get-empty"), 1, Some("q1")),
        s("queue.declare", Some("channel.close"), 1, Some("missing")),
        s("connection.close", Some("connection.close-ok"), 0, None),
    ];
    for chunk in [1, 2, 3, 7, 13, 64, 100_000] {
        let out = run_chunks(&session(), chunk);
        assert_eq!(summary(&out), want, "chunk {chunk}");
        assert!(out.iter().all(|e| e.outcome == Outcome::Complete && !e.partial), "chunk {chunk}");
        let d: Vec<&AmqpDetail> = out.iter().map(amqp).collect();
        assert_eq!(d[0].vhost.as_deref(), Some("/"));
        assert_eq!(d[0].mechanism.as_deref(), Some("PLAIN"));
        assert_eq!((d[3].body_size, d[3].routing_key.as_deref()), (Some(5), Some("q1")));
        assert_eq!((d[5].delivery_tag, d[5].body_size, d[5].multiple), (Some(1), Some(3), true));
        assert_eq!((d[6].delivery_tag, d[6].body_size), (Some(2), Some(4)));
        assert_eq!(d[8].consumer_tag.as_deref(), Some("ctag1"));
        assert_eq!((d[9].delivery_tag, d[9].body_size, d[9].queue.as_deref()), (Some(1), Some(5), Some("q1")));
        assert_eq!(d[10].delivery_tag, Some(1));
        assert_eq!(
            (d[12].reply_code, d[12].reply_text.as_deref()),
            (Some(404), Some("NOT_FOUND - no queue 'missing'"))
        );
        // Wire sizes: method + header + two body frames.
        let publish_wire = (7 + 4 + 2 + 1 + 3 + 1 + 1) + (7 + 14 + 1) + (7 + 2 + 1) + (7 + 3 + 1);
        assert_eq!(out[3].request_bytes, publish_wire);
        // The PLAIN response never leaves the decoder.
        let json = serde_json::to_string(&out.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
        assert!(!json.contains(SECRET) && !json.contains("guest"), "{json}");
    }
}

#[test]
fn spans_follow_messaging_semconv() {
    let out = run_chunks(&session(), 100_000);
    let mut routes = crate::otel::route::RouteTemplater::new(10, 100, 8);
    let opts = NamingOptions::default();
    let mut span = |i: usize| {
        let ex = &out[i];
        ex.detail.span_parts(ex, Kind::Client, &mut SpanCx::new(&opts, &mut routes))
    };
    let get = |p: &SpanParts, k: &str| p.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let p = span(3);
    assert_eq!((p.name.as_str(), p.kind), ("publish", Kind::Producer));
    assert_eq!(get(&p, "messaging.destination.name"), Some("".into()), "default exchange");
    assert_eq!(get(&p, "messaging.system"), Some("rabbitmq".into()));
    assert_eq!(get(&p, "messaging.operation.type"), Some("send".into()));
    assert_eq!(get(&p, "messaging.rabbitmq.destination.routing_key"), Some("q1".into()));
    assert_eq!(get(&p, "messaging.message.body.size"), Some(5i64.into()));
    assert!(p.metric.is_none(), "an unconfirmed publish has no duration");
    let p = span(5);
    assert_eq!(p.name, "publish logs");
    assert_eq!(get(&p, "messaging.rabbitmq.message.delivery_tag"), Some(1i64.into()));
    assert!(p.metric.is_some());
    let p = span(9);
    assert_eq!((p.name.as_str(), p.kind), ("deliver", Kind::Consumer));
    assert_eq!(get(&p, "messaging.operation.type"), Some("process".into()));
    let p = span(10);
    assert_eq!((p.name.as_str(), get(&p, "messaging.operation.type")), ("ack", Some("settle".into())));
    let p = span(11);
    assert_eq!((p.name.as_str(), p.kind), ("receive q1", Kind::Client));
    let p = span(12);
    assert_eq!(p.name, "queue.declare missing");
    assert_eq!(get(&p, "error.type"), Some("404".into()));
    assert_eq!(p.error.as_deref(), Some("NOT_FOUND - no queue 'missing'"));
    let (_, m) = p.metric.as_ref().unwrap();
    assert!(m.iter().any(|(k, v)| *k == "error.type" && *v == "404".into()));
    for p in (0..out.len()).map(span) {
        for (k, _) in &p.attrs {
            assert!(crate::otel::semconv::is_allowed_key(k), "{k}");
        }
    }
    // Message counters: 3 publishes sent, 1 delivery consumed.
    let counts: Vec<_> = out.iter().filter_map(|e| e.detail.mapping().messages(e)).collect();
    use crate::otel::semconv::MessageCounter::*;
    assert_eq!(counts, vec![(Sent, 1), (Sent, 1), (Sent, 1), (Consumed, 1)]);
}

#[test]
fn get_ok_with_content_and_publish_nack() {
    use StreamDir::{ToClient as C, ToServer as S};
    let mut getok = method(1, BASIC, 71, &[&u64b(7), &[1], &ss("ex"), &ss("rk"), &u32b(3)]);
    getok.extend(content(1, &[0u8; 300]));
    let script = vec![
        (S, method(1, BASIC, 70, &[&u16b(0), &ss("q"), &[0]])),
        (C, getok),
        (S, method(1, BASIC, 90, &[&u64b(7), &[0]])),
        (S, method(1, CONFIRM, 10, &[&[0]])),
        (C, method(1, CONFIRM, 11, &[])),
        (S, publish(1, "ex", "rk", b"x")),
        (C, method(1, BASIC, 120, &[&u64b(1), &[0]])),
        // A publish to a missing exchange: the broker closes the channel.
        (S, publish(1, "nope", "rk", b"y")),
        (C, method(1, CHANNEL, 40, &[&u16b(404), &ss("NOT_FOUND - no exchange 'nope'"), &u16b(60), &u16b(40)])),
    ];
    let out = run_chunks(&script, 5);
    let d: Vec<&AmqpDetail> = out.iter().map(amqp).collect();
    assert_eq!(d.len(), 5, "{d:?}");
    assert_eq!((d[0].method.as_str(), d[0].response.as_deref()), ("basic.get", Some("basic.get-ok")));
    assert_eq!(
        (d[0].delivery_tag, d[0].body_size, d[0].message_count, d[0].redelivered),
        (Some(7), Some(300), Some(3), true)
    );
    assert_eq!((d[1].method.as_str(), semconv::destination(d[1])), ("basic.reject", Some("ex")));
    assert_eq!(d[3].response.as_deref(), Some("basic.nack"));
    assert_eq!((d[4].response.as_deref(), d[4].reply_code), (Some("channel.close"), Some(404)));
    assert_eq!(out[0].response_bytes, (7 + 4 + 8 + 1 + 3 + 3 + 4 + 1) + (7 + 14 + 1) + 2 * (7 + 150 + 1));
    let counts: Vec<_> = out.iter().filter_map(|e| e.detail.mapping().messages(e)).collect();
    use crate::otel::semconv::MessageCounter::*;
    assert_eq!(counts, vec![(Consumed, 1), (Sent, 1), (Sent, 1)]);
}

#[test]
fn server_close_without_pending_is_its_own_exchange() {
    let script = vec![(
        StreamDir::ToClient,
        method(0, CONNECTION, 50, &[&u16b(320), &ss("CONNECTION_FORCED"), &u16b(0), &u16b(0)]),
    )];
    let out = run_chunks(&script, 100);
    assert_eq!(out.len(), 1);
    let d = amqp(&out[0]);
    assert_eq!((d.method.as_str(), d.response.as_deref(), d.reply_code), ("connection.close", None, Some(320)));
}

#[test]
fn probe_header_and_mid_connection_frames() {
    let c = test_conn(Transport::Tcp, 15672);
    assert_eq!(probe(&c, StreamDir::ToServer, PROTOCOL_HEADER), Probe::Yes(100));
    assert_eq!(probe(&c, StreamDir::ToServer, b"AMQ"), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToServer, b"AMQP\x00\x01\x00\x00"), Probe::No); // AMQP 1.0
    assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::No);
    let p = publish(1, "", "q", b"abc");
    assert_eq!(probe(&c, StreamDir::ToServer, &p), Probe::Yes(85));
    assert_eq!(probe(&c, StreamDir::ToServer, &p[..10]), Probe::NeedMore);
    let ack = method(1, BASIC, 80, &[&u64b(1), &[0]]);
    assert_eq!(probe(&c, StreamDir::ToClient, &ack), Probe::Yes(70));
    let mut bad = ack.clone();
    *bad.last_mut().unwrap() = 0;
    assert_eq!(probe(&c, StreamDir::ToClient, &bad), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToClient, &frame(FRAME_HEARTBEAT, 0, &[])), Probe::No);
    assert_eq!(
        crate::protocol::detect::detect_stream(&c, &p, b"", false),
        crate::protocol::detect::Verdict::Detected(Protocol::Amqp)
    );
}

#[test]
fn mid_connection_gap_resyncs_on_the_next_frame() {
    let c = test_conn(Transport::Tcp, 5672);
    let mut d = AmqpDecoder::new(&DecodeConfig::default());
    let mut out = Vec::new();
    let script = session();
    // Start in the middle of the first publish segment: garbage first.
    let seg = &script[11].1;
    d.on_data(StreamDir::ToServer, 1, &seg[5..], &mut Emit { conn: &c, out: &mut out });
    for (i, (dir, b)) in script[12..].iter().enumerate() {
        d.on_data(*dir, 10 + i as u64, b, &mut Emit { conn: &c, out: &mut out });
    }
    d.on_close(100, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
    let methods: Vec<&str> = out.iter().map(|e| amqp(e).method.as_str()).collect();
    // Everything from confirm.select on is decoded.
    assert!(methods.contains(&"confirm.select") && methods.contains(&"basic.deliver"), "{methods:?}");
    assert!(methods.iter().filter(|m| **m == "basic.publish").count() == 2, "{methods:?}");
    // A body cut by the snap length: the gap inside a body frame keeps the framing.
    let mut d = AmqpDecoder::new(&DecodeConfig::default());
    let mut out = Vec::new();
    let p = publish(1, "", "q", &[7u8; 1000]);
    let body_at = p.len() - (7 + 500 + 1) - 400;
    d.on_data(StreamDir::ToServer, 1, &p[..body_at], &mut Emit { conn: &c, out: &mut out });
    d.on_gap(StreamDir::ToServer, 2, 300, &mut Emit { conn: &c, out: &mut out });
    d.on_data(StreamDir::ToServer, 3, &p[body_at + 300..], &mut Emit { conn: &c, out: &mut out });
    assert_eq!(out.len(), 1);
    assert_eq!((amqp(&out[0]).body_size, out[0].partial), (Some(1000), false));
}

/// A snap length cuts each segment: a gap that ends exactly where a frame
/// ends (its end byte lost too) keeps the framing, the next segment starts a frame.
#[test]
fn gap_ending_with_a_frame_keeps_the_framing() {
    let c = test_conn(Transport::Tcp, 5672);
    let mut d = AmqpDecoder::new(&DecodeConfig::default());
    let mut out = Vec::new();
    let mut e = Emit { conn: &c, out: &mut out };
    let m = method(1, BASIC, 40, &[&u16b(0), &ss("ex"), &ss("rk"), &[0]]);
    let h = header(1, 200);
    let b = frame(FRAME_BODY, 1, &[1u8; 200]);
    d.on_data(StreamDir::ToServer, 1, &m, &mut e);
    d.on_data(StreamDir::ToServer, 2, &h, &mut e);
    // Body segment cut after 50 bytes: 158 bytes (the rest and 0xCE) lost.
    d.on_data(StreamDir::ToServer, 3, &b[..50], &mut e);
    d.on_gap(StreamDir::ToServer, 3, (b.len() - 50) as u64, &mut e);
    // A method segment cut right before its end byte.
    let ack = method(1, BASIC, 80, &[&u64b(9), &[0]]);
    d.on_data(StreamDir::ToServer, 4, &ack[..ack.len() - 1], &mut e);
    d.on_gap(StreamDir::ToServer, 4, 1, &mut e);
    d.on_data(StreamDir::ToServer, 5, &m, &mut e);
    let got: Vec<(&str, Option<u64>, bool)> =
        out.iter().map(|x| (amqp(x).method.as_str(), amqp(x).body_size.or(amqp(x).delivery_tag), x.partial)).collect();
    assert_eq!(got, [("basic.publish", Some(200), false), ("basic.ack", Some(9), false)]);
    assert_eq!(d.rx[0].state, Rx::Head);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
        ) {
            let c = test_conn(Transport::Tcp, 5672);
            let mut out = Vec::new();
            let cfg = DecodeConfig::default();
            let mut d = AmqpDecoder::new(&cfg);
            for (i, (to_server, gap, bytes)) in ops.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                let mut e = Emit { conn: &c, out: &mut out };
                if *gap > 240 {
                    d.on_gap(dir, i as u64, *gap as u64 * 7, &mut e);
                }
                d.on_data(dir, i as u64, bytes, &mut e);
                prop_assert!(d.rx.iter().all(|rx| rx.buf.len() <= cfg.max_buffer_per_dir && rx.resync.len() <= cfg.max_buffer_per_dir + 200));
                prop_assert!(d.chans.len() <= MAX_CHANNELS && d.unconfirmed <= cfg.max_pending_per_conn);
                prop_assert!(d.chans.values().all(|c| c.sync.len() <= MAX_SYNC && c.delivered.len() <= MAX_DELIVERED));
            }
            d.on_close(100, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
        }

        /// Valid frames with random bytes spliced in: still no panic.
        #[test]
        fn mutated_session_never_panics(at in 0usize..2000, junk in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut script = session();
            let i = at % script.len();
            let pos = at % (script[i].1.len() + 1);
            script[i].1.splice(pos..pos, junk);
            let _ = run_chunks(&script, 9);
        }

        #[test]
        fn valid_traffic_any_segmentation(cuts in proptest::collection::vec(1usize..300, 1..30)) {
            let c = test_conn(Transport::Tcp, 5672);
            let mut out = Vec::new();
            let mut d = AmqpDecoder::new(&DecodeConfig::default());
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&session(), &cuts) {
                d.on_data(dir, at, chunk, &mut Emit { conn: &c, out: &mut out });
            }
            prop_assert_eq!(out.len(), 14);
            prop_assert_eq!(amqp(&out[12]).reply_code, Some(404));
        }
    }
}

/// The telemetry sink turns `messages()` into the semconv counters, with
/// the span's messaging attributes.
#[test]
fn sink_counts_sent_and_consumed_messages() {
    use crate::telemetry::{Collected, Output, SinkOptions, TelemetryConfig, TelemetrySink};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    let out = std::sync::Arc::new(parking_lot::Mutex::new(Collected::default()));
    let host = std::sync::Arc::new(crate::workload::Identity { attributes: vec![("service.name".into(), "t".into())] });
    let mut o = SinkOptions::new(TelemetryConfig::default(), host);
    o.outputs.push(Output::Collect(out.clone()));
    o.own_metrics = false;
    let mut sink = TelemetrySink::new(o);
    for ex in run_chunks(&session(), 100_000) {
        sink.record(&ex);
    }
    sink.finish(1_000_000);
    let c = out.lock();
    let mut seen = Vec::new();
    for m in c.metrics.iter().flat_map(|r| &r.resource_metrics).flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics)
    {
        let Some(metric::Data::Sum(s)) = &m.data else { continue };
        for dp in &s.data_points {
            let attr = |k: &str| {
                dp.attributes.iter().find(|kv| kv.key == k).and_then(|kv| match kv.value.clone()?.value? {
                    AV::StringValue(s) => Some(s),
                    _ => None,
                })
            };
            let Some(number_data_point::Value::AsInt(n)) = dp.value else { panic!() };
            assert_eq!(attr("messaging.system").as_deref(), Some("rabbitmq"));
            seen.push((
                m.name.clone(),
                attr("messaging.operation.name").unwrap(),
                attr("messaging.destination.name"),
                n,
            ));
        }
    }
    seen.sort();
    let s = |n: &str, op: &str, d: &str, v: i64| (n.to_string(), op.to_string(), Some(d.to_string()), v);
    assert_eq!(
        seen,
        vec![
            s("messaging.client.consumed.messages", "deliver", "", 1),
            s("messaging.client.sent.messages", "publish", "", 1),
            s("messaging.client.sent.messages", "publish", "logs", 2),
        ]
    );
}
