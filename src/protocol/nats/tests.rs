use super::*;
use crate::otel::span::Kind;
use crate::protocol::testutil::conn_with;

fn conn() -> Conn {
    conn_with(Transport::Tcp, 4222, RoleEvidence::Syn)
}

const INFO: &[u8] =
    b"INFO {\"server_id\":\"NABC\",\"version\":\"2.10.1\",\"headers\":true,\"max_payload\":1048576}\r\n";

struct Run {
    d: NatsDecoder,
    c: Conn,
    out: Vec<Exchange>,
    t: u64,
}

impl Run {
    fn new() -> Self {
        Run { d: NatsDecoder::new(&DecodeConfig::default()), c: conn(), out: Vec::new(), t: 1000 }
    }
    fn send(&mut self, dir: StreamDir, b: &[u8]) {
        self.t += 1000;
        self.d.on_data(dir, self.t, b, &mut Emit { conn: &self.c, out: &mut self.out });
    }
    fn c(&mut self, b: &[u8]) {
        self.send(StreamDir::ToServer, b)
    }
    fn s(&mut self, b: &[u8]) {
        self.send(StreamDir::ToClient, b)
    }
    fn close(&mut self) {
        self.d.on_close(self.t + 1, CloseReason::Fin, &mut Emit { conn: &self.c, out: &mut self.out });
    }
}

fn nd(e: &Exchange) -> &NatsDetail {
    match &e.detail {
        Detail::Nats(d) => d,
        _ => panic!("not nats"),
    }
}

fn line(e: &Exchange) -> String {
    let d = nd(e);
    format!(
        "{} {} {} {} {}",
        d.op,
        d.subject.as_deref().unwrap_or("-"),
        d.response.as_deref().unwrap_or("-"),
        if d.request { "req" } else { "-" },
        d.payload_bytes.map_or("-".into(), |n| n.to_string())
    )
}

#[test]
fn handshake_publish_subscribe_and_request_reply() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"app\",\"lang\":\"python3\",\"version\":\"2.16.0\",\"user\":\"u\",\"pass\":\"s3cr3t\",\"auth_token\":\"tok\"}\r\nPING\r\n");
    r.s(b"PONG\r\n");
    r.c(b"PUB orders.new 5\r\nhello\r\n");
    r.c(b"SUB orders.* 1\r\nSUB _INBOX.abc.* 2\r\n");
    r.c(b"PUB svc.echo _INBOX.abc.7 2\r\nhi\r\n");
    r.s(b"MSG orders.new 1 5\r\nhello\r\n");
    let t_req = r.t;
    r.s(b"MSG _INBOX.abc.7 2 2\r\nhi\r\n");
    r.c(b"UNSUB 1\r\nPING\r\n");
    r.s(b"PONG\r\n");
    r.close();
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        [
            "CONNECT - PONG - -",
            "PING - PONG - -",
            "PUB orders.new - - 5",
            "SUB orders.* - - -",
            "SUB _INBOX.abc.* - - -",
            "MSG orders.new - - 5",
            "PUB svc.echo MSG req 2",
            "UNSUB orders.* - - -",
            "PING - PONG - -",
        ]
    );
    // The request lasts until its reply, a publish only its own frame.
    let req = &r.out[6];
    assert_eq!((req.start_ns, req.end_ns), (t_req - 1000, t_req + 1000));
    assert!(req.response_bytes > 0 && req.request_bytes > 0);
    let publish = &r.out[2];
    assert_eq!((publish.end_ns - publish.start_ns, publish.response_bytes), (0, 0));
    assert!(r.out.iter().all(|e| e.outcome == Outcome::Complete));
    assert_eq!(nd(&r.out[5]).client_name.as_deref(), Some("app"));
    // Credentials are never kept.
    let json = serde_json::to_string(&r.out.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    assert!(!json.contains("s3cr3t") && !json.contains("tok") && !json.contains("\"u\""), "{json}");
}

#[test]
fn verbose_acks_pair_in_order_and_errors_attach() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {\"verbose\":true}\r\nPING\r\n");
    r.s(b"+OK\r\nPONG\r\n");
    r.c(b"PUB a 1\r\nx\r\nPUB denied 1\r\ny\r\nSUB b 9\r\n");
    r.s(b"+OK\r\n-ERR 'Permissions Violation for Publish to \"denied\"'\r\n+OK\r\n");
    r.c(b"PUB c 1\r\nz\r\n");
    r.close();
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        [
            "CONNECT - +OK - -",
            "PING - PONG - -",
            "PUB a +OK - 1",
            "PUB denied -ERR - 1",
            "SUB b +OK - -",
            "PUB c - - 1"
        ]
    );
    assert_eq!(nd(&r.out[3]).error.as_deref(), Some("Permissions Violation for Publish to \"denied\""));
    // Unanswered at the end: given up.
    assert_eq!(r.out[5].outcome, Outcome::Timeout);
    let p = semconv::span_parts(&r.out[3], nd(&r.out[3]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("Permissions Violation for Publish to \"denied\""));
    assert_eq!(crate::otel::attr::get(&p.attrs, "error.type").unwrap().to_string(), "\"Permissions Violation\"");
}

#[test]
fn auth_failure_ends_the_handshake() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {\"pass\":\"x\"}\r\nPING\r\n");
    r.s(b"-ERR 'Authorization Violation'\r\n");
    r.d.on_close(r.t + 5, CloseReason::Rst, &mut Emit { conn: &r.c, out: &mut r.out });
    assert_eq!(r.out.len(), 2);
    assert_eq!(nd(&r.out[0]).error.as_deref(), Some("Authorization Violation"));
    assert_eq!(r.out[1].outcome, Outcome::Reset);
}

#[test]
fn headers_carry_trace_context_and_no_responders() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {}\r\nSUB _INBOX.q.* 1\r\n");
    let hdr = "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Other: 1\r\n\r\n";
    let hpub = format!("HPUB t.1 {} {}\r\n{hdr}body\r\n", hdr.len(), hdr.len() + 4);
    r.c(hpub.as_bytes());
    r.c(b"HPUB svc _INBOX.q.1 12 12\r\nNATS/1.0\r\n\r\n\r\n");
    r.s(b"HMSG _INBOX.q.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n");
    let hmsg = format!("HMSG t.1 1 {} {}\r\n{hdr}body\r\n", hdr.len(), hdr.len() + 4);
    r.s(hmsg.as_bytes());
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        ["CONNECT - - - -", "SUB _INBOX.q.* - - -", "HPUB t.1 - - 4", "HPUB svc HMSG req 0", "HMSG t.1 - - 4"]
    );
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(nd(&r.out[2]).trace_headers, [("traceparent".to_string(), tp.to_string())]);
    assert_eq!(nd(&r.out[4]).trace_headers.len(), 1);
    assert_eq!(nd(&r.out[3]).status, Some(503));
    let p = semconv::span_parts(&r.out[3], nd(&r.out[3]), Kind::Client);
    assert_eq!(p.error.as_deref(), Some("no responders"));
    assert_eq!(p.name, "request svc");
}

#[test]
fn spans_kinds_names_and_metrics() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {\"name\":\"w\"}\r\nPING\r\n");
    r.s(b"PONG\r\n");
    r.c(b"SUB _INBOX.k.* g 4\r\nPUB orders.12345 _INBOX.k.9 1\r\nx\r\nPUB plain 1\r\ny\r\n");
    r.s(b"MSG _INBOX.k.9 4 1\r\nz\r\nMSG _INBOX.k.10 4 1\r\nz\r\n");
    let parts: Vec<_> = r.out.iter().map(|e| semconv::span_parts(e, nd(e), Kind::Client)).collect();
    let names: Vec<(&str, Kind, bool)> = parts.iter().map(|p| (p.name.as_str(), p.kind, p.metric.is_some())).collect();
    assert_eq!(
        names,
        [
            ("connect", Kind::Client, true),
            ("ping", Kind::Client, true),
            ("subscribe _INBOX.{id}", Kind::Client, false),
            ("publish plain", Kind::Producer, false),
            ("request orders.{id}", Kind::Producer, true),
            ("receive _INBOX.{id}", Kind::Consumer, false),
        ]
    );
    let get = |i: usize, k: &str| crate::otel::attr::get(&parts[i].attrs, k).map(|v| v.to_string());
    assert_eq!(get(2, "messaging.consumer.group.name").as_deref(), Some("g"));
    assert_eq!(get(5, "messaging.destination.temporary").as_deref(), Some("true"));
    assert_eq!(get(5, "messaging.destination.name").as_deref(), Some("_INBOX.k.10"));
    assert_eq!(get(4, "messaging.client.id").as_deref(), Some("w"));
    assert_eq!(get(3, "messaging.message.body.size").as_deref(), Some("1"));
    let m = &parts[4].metric.as_ref().unwrap().1;
    assert!(crate::otel::attr::get(m, "messaging.destination.name").is_none(), "metrics use the template");
    // Seen from the broker's end: SERVER.
    assert_eq!(semconv::span_parts(&r.out[3], nd(&r.out[3]), Kind::Server).kind, Kind::Server);
}

#[test]
fn probe_needs_info_or_connect() {
    let c = conn();
    assert_eq!(probe(&c, StreamDir::ToClient, INFO), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToClient, &INFO[..20]), Probe::Yes(90), "server_id first: decisive");
    assert_eq!(probe(&c, StreamDir::ToClient, b"INFO {\"version\":\"2\""), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToClient, b"INF"), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToServer, b"CONNECT {\"verbose\":false}\r\n"), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, b"CONNECT {not json\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"CONNECT example.com:443 HTTP/1.1\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"PUB a 1\r\nx\r\n"), Probe::No, "start seen: must be CONNECT");
    let mid = conn_with(Transport::Tcp, 5000, RoleEvidence::Port);
    assert_eq!(probe(&mid, StreamDir::ToServer, b"PUB a 1\r\nx\r\n"), Probe::Yes(65));
    assert_eq!(probe(&mid, StreamDir::ToServer, b"PUB a 1\r\nxy\r\n"), Probe::No);
    assert_eq!(probe(&mid, StreamDir::ToClient, b"MSG a 1 3\r\nabc"), Probe::NeedMore);
    assert_eq!(probe(&mid, StreamDir::ToClient, b"PING\r\n"), Probe::Yes(58), "idle keep-alive");
    assert_eq!(probe(&mid, StreamDir::ToClient, b"PING :irc.example\r\n"), Probe::No);
    assert_eq!(probe(&mid, StreamDir::ToServer, b"PING\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToClient, b"PING\r\n"), Probe::No, "start seen: INFO comes first");
    // Detection on any port, ahead of the other probes.
    use crate::protocol::detect::{detect_stream, Verdict};
    let any = conn_with(Transport::Tcp, 7777, RoleEvidence::Syn);
    assert_eq!(detect_stream(&any, b"", INFO, false), Verdict::Detected(Protocol::Nats));
    assert_eq!(detect_stream(&any, b"CONNECT {\"verbose\":false}\r\n", b"", false), Verdict::Detected(Protocol::Nats));
}

#[test]
fn gap_inside_a_payload_keeps_framing_and_resyncs_after_lines() {
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {}\r\nPUB a 10\r\n01");
    r.d.on_gap(StreamDir::ToServer, r.t, 4, &mut Emit { conn: &r.c, out: &mut r.out });
    r.c(b"6789\r\nPUB b 1\r\nx\r\n");
    // Lost bytes across a frame boundary: resync on the next line.
    r.c(b"PUB c 3\r\n");
    r.d.on_gap(StreamDir::ToServer, r.t, 100, &mut Emit { conn: &r.c, out: &mut r.out });
    r.c(b"ing\r\nPUB d 1\r\nx\r\n");
    // Lost up to the exact end of a frame: the next line is read as usual.
    r.c(b"PUB e 2\r\n");
    r.d.on_gap(StreamDir::ToServer, r.t, 4, &mut Emit { conn: &r.c, out: &mut r.out });
    r.c(b"PUB f 1\r\nx\r\n");
    let got: Vec<String> = r.out.iter().map(line).collect();
    assert_eq!(
        got,
        ["CONNECT - - - -", "PUB a - - 10", "PUB b - - 1", "PUB c - - 3", "PUB d - - 1", "PUB e - - 2", "PUB f - - 1"]
    );
    let partial: Vec<bool> = r.out.iter().map(|e| e.partial).collect();
    assert_eq!(partial, [false, true, false, true, false, true, false]);
}

#[test]
fn subjects_match_wildcards() {
    assert!(subject_matches("_INBOX.x.*", "_INBOX.x.1"));
    assert!(!subject_matches("_INBOX.x.*", "_INBOX.x.1.2"));
    assert!(subject_matches("a.>", "a.b.c"));
    assert!(!subject_matches("a.>", "a"));
    assert!(subject_matches("a.b", "a.b") && !subject_matches("a.b", "a.c"));
    assert_eq!(semconv::subject_template("orders.new"), (None, false));
    assert_eq!(semconv::subject_template("_INBOX.abc.1"), (Some("_INBOX.{id}".into()), true));
    assert_eq!(semconv::subject_template("user.1234.events"), (Some("user.{id}.events".into()), false));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn script() -> Vec<(StreamDir, Vec<u8>)> {
        vec![
            (StreamDir::ToClient, INFO.to_vec()),
            (
                StreamDir::ToServer,
                b"CONNECT {\"verbose\":true,\"pass\":\"p\"}\r\nPING\r\nSUB _INBOX.z.* 1\r\n".to_vec(),
            ),
            (StreamDir::ToClient, b"+OK\r\nPONG\r\n+OK\r\n".to_vec()),
            (
                StreamDir::ToServer,
                b"HPUB s _INBOX.z.1 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\nPUB p 3\r\nabc\r\n".to_vec(),
            ),
            (StreamDir::ToClient, b"+OK\r\n+OK\r\nMSG _INBOX.z.1 1 2\r\nok\r\n".to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
            prefix in any::<bool>(),
        ) {
            let c = conn();
            let mut out = Vec::new();
            let cfg = DecodeConfig { max_buffer_per_dir: 512, max_pending_per_conn: 8, ..Default::default() };
            let mut d = NatsDecoder::new(&cfg);
            if prefix {
                for (dir, b) in script() {
                    d.on_data(dir, 0, &b, &mut Emit { conn: &c, out: &mut out });
                }
            }
            for (i, (to_server, gap, bytes)) in ops.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                let mut e = Emit { conn: &c, out: &mut out };
                if *gap > 240 {
                    d.on_gap(dir, i as u64, *gap as u64 * 7, &mut e);
                }
                d.on_data(dir, i as u64, bytes, &mut e);
                let _ = probe(&c, dir, bytes);
                prop_assert!(d.rx.iter().all(|rx| rx.line.len() <= 512 && rx.hdr.len() <= MAX_HEADER_KEPT && rx.resync.len() <= 512 + 200));
                prop_assert!(d.awaiting.len() <= 8 && d.inbox.len() <= 8 && d.sids.len() <= MAX_SIDS);
            }
            d.expire(1000, &mut Emit { conn: &c, out: &mut out });
            d.on_close(2000, CloseReason::Fin, &mut Emit { conn: &c, out: &mut out });
        }

        #[test]
        fn valid_traffic_any_segmentation(cuts in proptest::collection::vec(1usize..40, 1..30)) {
            let c = conn();
            let mut out = Vec::new();
            let mut d = NatsDecoder::new(&DecodeConfig::default());
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&script(), &cuts) {
                d.on_data(dir, at, chunk, &mut Emit { conn: &c, out: &mut out });
            }
            let got: Vec<String> = out.iter().map(line).collect();
            prop_assert_eq!(got, vec![
                "CONNECT - +OK - -", "PING - PONG - -", "SUB _INBOX.z.* +OK - -", "PUB p +OK - 3", "HPUB s MSG req 5",
            ]);
        }
    }
}

/// The OTLP span kind comes from the mapping: PRODUCER for a publish and
/// CONSUMER for a delivery seen from the client's end, SERVER from the broker's.
#[test]
fn otlp_kinds_producer_consumer_server() {
    use crate::telemetry::{Collected, IdGen, LocalAddrs, Output, SinkOptions, TelemetryConfig, TelemetrySink};
    use std::sync::Arc;
    let mut r = Run::new();
    r.s(INFO);
    r.c(b"CONNECT {}\r\nPUB a 1\r\nx\r\n");
    r.s(b"MSG a 1 1\r\nx\r\n");
    for (local, want) in [("10.200.0.1", [3, 4, 5]), ("10.200.0.2", [2, 2, 2])] {
        let out = Arc::new(parking_lot::Mutex::new(Collected::default()));
        let host = Arc::new(crate::workload::Identity { attributes: vec![("host.name".into(), "t".into())] });
        let mut o = SinkOptions::new(TelemetryConfig::default(), host);
        o.outputs.push(Output::Collect(out.clone()));
        o.ids = IdGen::Seeded(1);
        o.local_addrs = LocalAddrs::new([local.parse().unwrap()]);
        o.own_metrics = false;
        let mut sink = TelemetrySink::new(o);
        for e in &r.out {
            sink.record(e);
        }
        sink.finish(r.t + 10);
        let kinds: Vec<i32> = out.lock().spans().map(|s| s.kind).collect();
        assert_eq!(kinds, want, "local {local}");
    }
}
