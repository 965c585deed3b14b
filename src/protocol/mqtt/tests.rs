use super::*;
use crate::flow::RoleEvidence;
use crate::otel::span::Kind;
use crate::protocol::testutil::conn_with;

fn conn() -> Conn {
    conn_with(Transport::Tcp, 1883, RoleEvidence::Syn)
}

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn connect(level: u8, id: &[u8], password: &[u8]) -> Vec<u8> {
    let mut b = s(if level == 3 { b"MQIsdp" } else { b"MQTT" });
    b.extend([level, 0xC2, 0, 60]);
    if level == 5 {
        // Properties: session expiry interval (u32).
        b.extend([5, 0x11, 0, 0, 0, 10]);
    }
    b.extend(s(id));
    b.extend(s(b"user"));
    b.extend(s(password));
    pkt(0x10, &b)
}

fn publish(qos: u8, topic: &str, id: u16, props: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut b = s(topic.as_bytes());
    if qos > 0 {
        b.extend(id.to_be_bytes());
    }
    if let Some(p) = props {
        b.push(p.len() as u8);
        b.extend_from_slice(p);
    }
    b.extend_from_slice(payload);
    pkt(0x30 | (qos << 1), &b)
}

fn ack(t: u8, id: u16, rc: Option<u8>) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend(rc);
    pkt((t << 4) | if t == PUBREL { 2 } else { 0 }, &b)
}

struct Run {
    d: MqttDecoder,
    c: Conn,
    out: Vec<Exchange>,
    t: u64,
}

impl Run {
    fn new() -> Self {
        Run { d: MqttDecoder::new(&DecodeConfig::default()), c: conn(), out: Vec::new(), t: 0 }
    }
    fn c(&mut self, b: &[u8]) {
        self.t += 1000;
        self.d.on_data(StreamDir::ToServer, self.t, b, &mut Emit { conn: &self.c, out: &mut self.out });
    }
    fn s(&mut self, b: &[u8]) {
        self.t += 1000;
        self.d.on_data(StreamDir::ToClient, self.t, b, &mut Emit { conn: &self.c, out: &mut self.out });
    }
    fn close(&mut self) {
        self.d.on_close(self.t + 1, CloseReason::Fin, &mut Emit { conn: &self.c, out: &mut self.out });
    }
}

fn md(e: &Exchange) -> &MqttDetail {
    match &e.detail {
        Detail::Mqtt(d) => d,
        _ => panic!("not mqtt"),
    }
}

fn line(e: &Exchange) -> String {
    let d = md(e);
    format!(
        "{}{} {} q{} {} rc={}",
        d.packet,
        if d.delivery { "<" } else { "" },
        d.topic.clone().or_else(|| d.topics.first().cloned()).unwrap_or("-".into()),
        d.qos.map_or("-".into(), |q| q.to_string()),
        d.response.as_deref().unwrap_or("-"),
        d.reason_code.map_or("-".into(), |c| c.to_string()),
    )
}

fn v311_session() -> Vec<(StreamDir, Vec<u8>)> {
    use StreamDir::*;
    let mut sub = 7u16.to_be_bytes().to_vec();
    sub.extend(s(b"a/+"));
    sub.push(1);
    sub.extend(s(b"b"));
    sub.push(2);
    vec![
        (ToServer, connect(4, b"dev-1", b"s3cr3t-pw")),
        (ToClient, pkt(0x20, &[0, 0])),
        (ToServer, pkt(0x82, &sub)),
        (ToClient, pkt(0x90, &[0, 7, 1, 0x80])),
        // QoS 0, then QoS 1 and QoS 2 in one segment with the QoS 0.
        (
            ToServer,
            [publish(0, "a/1", 0, None, b"x"), publish(1, "a/2", 1, None, b"yy"), publish(2, "b", 2, None, b"z")]
                .concat(),
        ),
        (ToClient, [ack(PUBACK, 1, None), ack(PUBREC, 2, None)].concat()),
        (ToServer, ack(PUBREL, 2, None)),
        (ToClient, ack(PUBCOMP, 2, None)),
        // A delivery at QoS 1, acknowledged by the client.
        (ToClient, publish(1, "a/9", 40, None, b"hello")),
        (ToServer, ack(PUBACK, 40, None)),
        (ToServer, pkt(0xc0, &[])),
        (ToClient, pkt(0xd0, &[])),
        (ToServer, pkt(0xe0, &[])),
    ]
}

const V311_WANT: [&str; 8] = [
    "CONNECT - q- CONNACK rc=0",
    "SUBSCRIBE a/+ q- SUBACK rc=128",
    "PUBLISH a/1 q0 - rc=-",
    "PUBLISH a/2 q1 PUBACK rc=-",
    "PUBLISH b q2 PUBCOMP rc=-",
    "PUBLISH< a/9 q1 PUBACK rc=-",
    "PINGREQ - q- PINGRESP rc=-",
    "DISCONNECT - q- - rc=-",
];

#[test]
fn v311_connect_subscribe_publish_all_qos_and_ping() {
    let mut r = Run::new();
    for (dir, b) in v311_session() {
        match dir {
            StreamDir::ToServer => r.c(&b),
            StreamDir::ToClient => r.s(&b),
        }
    }
    r.close();
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(got, V311_WANT);
    assert_eq!(md(&r.out[1]).granted, [1, 0x80]);
    assert_eq!(md(&r.out[0]).client_id.as_deref(), Some("dev-1"));
    // QoS 2: PUBLISH + PUBREL out, PUBREC + PUBCOMP back.
    assert_eq!((r.out[4].request_bytes, r.out[4].response_bytes), (8 + 4, 8));
    // QoS 0 has no answer and no duration.
    assert_eq!((r.out[2].end_ns - r.out[2].start_ns, r.out[2].response_bytes), (0, 0));
    // The delivery: the server's PUBLISH in, the client's PUBACK out.
    assert_eq!((r.out[5].request_bytes, r.out[5].response_bytes), (4, 14));
    let json = serde_json::to_string(&r.out.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    assert!(!json.contains("s3cr3t") && !json.contains("user"), "{json}");
    let p = semconv::span_parts(&r.out[1], md(&r.out[1]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("failure (0x80)"));
}

#[test]
fn connack_refusal_is_an_error() {
    let mut r = Run::new();
    r.c(&connect(4, b"x", b"bad"));
    r.s(&pkt(0x20, &[0, 4]));
    let p = semconv::span_parts(&r.out[0], md(&r.out[0]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("bad_user_name_or_password (0x04)"));
    let mut r = Run::new();
    r.c(&connect(5, b"x", b"bad"));
    r.s(&pkt(0x20, &[0, 0x87, 0]));
    let p = semconv::span_parts(&r.out[0], md(&r.out[0]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("not_authorized (0x87)"));
}

#[test]
fn v5_properties_trace_context_topic_alias_and_reason_codes() {
    let mut r = Run::new();
    r.c(&connect(5, b"v5", b"pw"));
    r.s(&pkt(0x20, &[0, 0, 3, 0x21, 0, 10]));
    let tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut props = vec![0x01, 1, 0x23, 0, 5, 0x08];
    props.extend(s(b"reply/here"));
    props.push(0x26);
    props.extend(s(b"traceparent"));
    props.extend(s(tp));
    r.c(&publish(1, "dev/123456/temp", 1, Some(&props), b"22"));
    r.s(&ack(PUBACK, 1, Some(0x10))); // no matching subscribers: success
                                      // Same alias, empty topic.
    r.c(&publish(1, "", 2, Some(&[0x23, 0, 5]), b"23"));
    r.s(&ack(PUBACK, 2, Some(0x97))); // quota exceeded
    r.c(&publish(2, "q2", 3, Some(&[]), b""));
    r.s(&ack(PUBREC, 3, Some(0x87)));
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        [
            "CONNECT - q- CONNACK rc=0",
            "PUBLISH dev/123456/temp q1 PUBACK rc=-",
            "PUBLISH dev/123456/temp q1 PUBACK rc=151",
            "PUBLISH q2 q2 PUBREC rc=135",
        ]
    );
    assert_eq!(md(&r.out[1]).trace_headers, [("traceparent".to_string(), String::from_utf8(tp.to_vec()).unwrap())]);
    assert_eq!(md(&r.out[1]).payload_bytes, Some(2));
    let p = semconv::span_parts(&r.out[1], md(&r.out[1]), Kind::Client);
    assert_eq!((p.name.as_str(), p.kind, p.error.is_none()), ("publish dev/{id}/temp", Kind::Producer, true));
    let p = semconv::span_parts(&r.out[2], md(&r.out[2]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("quota_exceeded (0x97)"));
}

#[test]
fn span_kinds_and_metrics() {
    let mut r = Run::new();
    for (dir, b) in v311_session() {
        match dir {
            StreamDir::ToServer => r.c(&b),
            StreamDir::ToClient => r.s(&b),
        }
    }
    let parts: Vec<_> = r.out.iter().map(|e| semconv::span_parts(e, md(e), Kind::Client)).collect();
    let got: Vec<(&str, Kind, bool)> = parts.iter().map(|p| (p.name.as_str(), p.kind, p.metric.is_some())).collect();
    assert_eq!(
        got,
        [
            ("connect", Kind::Client, true),
            ("subscribe", Kind::Client, true),
            // Numeric levels are ids.
            ("publish a/{id}", Kind::Producer, false),
            ("publish a/{id}", Kind::Producer, true),
            ("publish b", Kind::Producer, true),
            ("receive a/{id}", Kind::Consumer, false),
            ("ping", Kind::Client, true),
            ("disconnect", Kind::Client, false),
        ]
    );
    assert_eq!(semconv::span_parts(&r.out[3], md(&r.out[3]), Kind::Server).kind, Kind::Server);
}

#[test]
fn probe_wants_a_connect() {
    let c = conn();
    let v4 = connect(4, b"x", b"p");
    assert_eq!(probe(&c, StreamDir::ToServer, &v4), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, &v4[..5]), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToServer, &connect(3, b"x", b"p")), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, &connect(5, b"x", b"p")), Probe::Yes(90));
    let mut bad = v4.clone();
    bad[8] = 9; // level 9
    assert_eq!(probe(&c, StreamDir::ToServer, &bad), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"\x10\x0a\x00\x04HTTP"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToClient, &[0x20, 2, 0, 0]), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::No);
    use crate::protocol::detect::{detect_stream, Verdict};
    let any = conn_with(Transport::Tcp, 8080, RoleEvidence::Syn);
    assert_eq!(detect_stream(&any, &v4, b"", false), Verdict::Detected(Protocol::Mqtt));
}

#[test]
fn mid_connection_needs_a_packet_id_both_sides_agree_on() {
    use crate::protocol::detect::{detect_stream, Verdict};
    use crate::protocol::registry::L7Protocol;
    let c = conn_with(Transport::Tcp, 8883, RoleEvidence::Syn);
    let flow = |up: &[u8], down: &[u8]| <Mqtt as L7Protocol>::probe_flow(&c, up, down);
    let up = [publish(0, "a/b", 0, None, b"x"), publish(1, "a/c", 7, None, b"yy")].concat();
    // Client PUBLISH QoS 1 id 7 answered by PUBACK 7.
    assert_eq!(flow(&up, &ack(PUBACK, 7, None)), Probe::Yes(70));
    assert_eq!(detect_stream(&c, &up, &ack(PUBACK, 7, None), false), Verdict::Detected(Protocol::Mqtt));
    // A different id, or the wrong answer type, proves nothing yet.
    assert_eq!(flow(&up, &ack(PUBACK, 8, None)), Probe::NeedMore);
    assert_eq!(flow(&up, &ack(SUBACK, 7, None)), Probe::No, "SUBACK needs 3 bytes");
    // Server PUBLISH QoS 1 (a subscriber) acknowledged by the client.
    assert_eq!(flow(&ack(PUBACK, 3, None), &publish(1, "s/1", 3, None, b"z")), Probe::Yes(70));
    // Pings alone are not evidence; a wildcard topic in a PUBLISH, bad flags,
    // a CONNACK from the client or another protocol's bytes are impossible.
    assert_eq!(flow(&[0xC0, 0], &[0xD0, 0]), Probe::NeedMore);
    assert_eq!(flow(&publish(1, "a/#", 7, None, b""), &ack(PUBACK, 7, None)), Probe::No);
    assert_eq!(flow(&[0x41, 2, 0, 7], &ack(PUBACK, 7, None)), Probe::No);
    assert_eq!(flow(&[0x20, 2, 0, 0], b""), Probe::No);
    for other in
        [&b"GET / HTTP/1.1\r\n"[..], b"*1\r\n$4\r\nPING\r\n", b"\x16\x03\x01\x00\xa5\x01", b"Q\0\0\0\x0dSELECT 1\0"]
    {
        assert_eq!(flow(other, b""), Probe::No, "{other:?}");
    }
    assert_eq!(detect_stream(&c, &[0xC0, 0], &[0xD0, 0], true), Verdict::Unknown);
}

#[test]
fn gap_inside_a_payload_keeps_framing() {
    let mut r = Run::new();
    r.c(&connect(4, b"x", b"p"));
    r.s(&pkt(0x20, &[0, 0]));
    let big = publish(1, "t", 1, None, &[7u8; 3000]);
    r.c(&big[..100]);
    r.d.on_gap(StreamDir::ToServer, r.t, 2000, &mut Emit { conn: &r.c, out: &mut r.out });
    r.c(&big[2100..]);
    r.s(&ack(PUBACK, 1, None));
    // Lost across a packet boundary: resync on the next packets.
    r.c(&publish(0, "u", 0, None, b"abc")[..4]);
    r.d.on_gap(StreamDir::ToServer, r.t, 50, &mut Emit { conn: &r.c, out: &mut r.out });
    r.c(&[publish(0, "v", 0, None, b"1"), publish(0, "w", 0, None, b"2")].concat());
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        [
            "CONNECT - q- CONNACK rc=0",
            "PUBLISH t q1 PUBACK rc=-",
            // Its topic was in the lost bytes.
            "PUBLISH - q0 - rc=-",
            "PUBLISH v q0 - rc=-",
            "PUBLISH w q0 - rc=-"
        ]
    );
    assert!(r.out[1].partial && md(&r.out[1]).payload_bytes == Some(3000));
    assert!(r.out[2].partial && !r.out[3].partial);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
            v5 in any::<bool>(),
        ) {
            let c = conn();
            let mut out = Vec::new();
            let cfg = DecodeConfig { max_buffer_per_dir: 256, max_pending_per_conn: 8, ..Default::default() };
            let mut d = MqttDecoder::new(&cfg);
            d.on_data(StreamDir::ToServer, 0, &connect(if v5 { 5 } else { 4 }, b"f", b"p"), &mut Emit { conn: &c, out: &mut out });
            for (i, (to_server, gap, bytes)) in ops.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                let mut e = Emit { conn: &c, out: &mut out };
                if *gap > 240 {
                    d.on_gap(dir, i as u64, *gap as u64 * 7, &mut e);
                }
                d.on_data(dir, i as u64, bytes, &mut e);
                let _ = probe(&c, dir, bytes);
                prop_assert!(d.rx.iter().all(|rx| rx.buf.len() <= 256 && rx.resync.len() <= 256 + 200));
                prop_assert!(d.outbound.len() <= 8 && d.inbound.len() <= 8 && d.pings.len() <= 8);
                prop_assert!(d.aliases.iter().all(|a| a.len() <= MAX_ALIASES));
            }
            d.expire(1000, &mut Emit { conn: &c, out: &mut out });
            d.on_close(2000, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
        }

        #[test]
        fn valid_traffic_any_segmentation(cuts in proptest::collection::vec(1usize..20, 1..30)) {
            let c = conn();
            let mut out = Vec::new();
            let mut d = MqttDecoder::new(&DecodeConfig::default());
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&v311_session(), &cuts) {
                d.on_data(dir, at, chunk, &mut Emit { conn: &c, out: &mut out });
            }
            let got: Vec<String> = out.iter().map(line).collect();
            prop_assert_eq!(&got[..], &V311_WANT[..]);
        }
    }
}

#[test]
fn mqtt_3_1_mqisdp_and_unknown_packets() {
    let mut r = Run::new();
    r.c(&connect(3, b"old-client", b"pw"));
    r.s(&pkt(0x20, &[0, 0]));
    // Invalid first byte (type 0): resync on the next packets.
    r.c(&[&[0x00, 0x01, 0x02][..], &pkt(0xc0, &[]), &pkt(0xe0, &[])].concat());
    r.s(&pkt(0xd0, &[]));
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(got, ["CONNECT - q- CONNACK rc=0", "DISCONNECT - q- - rc=-", "PINGREQ - q- PINGRESP rc=-"]);
    assert_eq!((md(&r.out[0]).protocol_level, md(&r.out[0]).client_id.as_deref()), (3, Some("old-client")));
    let p = semconv::span_parts(&r.out[0], md(&r.out[0]), Kind::Client);
    assert_eq!(crate::otel::attr::get(&p.attrs, "network.protocol.version").unwrap().to_string(), "3.1");
}
