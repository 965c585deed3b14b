//! memcached decoder tests: probes, pairing (pipelining, noreply, quiet
//! mode, opaque, binary quiet opcodes and stats), lost bytes, bounds, and
//! proptest fuzz (arbitrary bytes; valid traffic in any segmentation).
use super::*;
use crate::otel::span::{Kind, NamingOptions};
use crate::protocol::testutil::{conn, conn_with};
use proptest::prelude::*;

struct Run {
    conn: Conn,
    dec: MemcachedDecoder,
    out: Vec<Exchange>,
}

impl Run {
    fn new() -> Self {
        Self::with(conn(Transport::Tcp, 11211), DecodeConfig::default())
    }
    fn with(conn: Conn, cfg: DecodeConfig) -> Self {
        Self { conn, dec: MemcachedDecoder::new(&cfg), out: Vec::new() }
    }
    fn req(&mut self, ts: u64, d: &[u8]) -> &mut Self {
        self.dec.on_data(StreamDir::ToServer, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
        self
    }
    fn resp(&mut self, ts: u64, d: &[u8]) -> &mut Self {
        self.dec.on_data(StreamDir::ToClient, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
        self
    }
    fn gap(&mut self, dir: StreamDir, len: u64) -> &mut Self {
        self.dec.on_gap(dir, 0, len, &mut Emit { conn: &self.conn, out: &mut self.out });
        self
    }
    fn close(&mut self) -> &mut Self {
        self.dec.on_close(1 << 40, CloseReason::Fin, &mut Emit { conn: &self.conn, out: &mut self.out });
        self
    }
    fn details(&self) -> Vec<&MemcachedDetail> {
        self.out
            .iter()
            .map(|e| match &e.detail {
                Detail::Memcached(d) => d,
                _ => panic!("not memcached"),
            })
            .collect()
    }
    /// "command response hits" per exchange.
    fn lines(&self) -> Vec<String> {
        self.details()
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    d.command,
                    d.response.as_deref().unwrap_or("-"),
                    d.hits.map(|h| h.to_string()).unwrap_or("-".into())
                )
            })
            .collect()
    }
}

/// A binary message.
fn bin(magic: u8, opcode: u8, key: &[u8], extras: &[u8], value: &[u8], status: u16, opaque: u32) -> Vec<u8> {
    let mut v = vec![magic, opcode];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.push(extras.len() as u8);
    v.push(0);
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(&((key.len() + extras.len() + value.len()) as u32).to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

#[test]
fn probes() {
    let c = conn(Transport::Tcp, 4000);
    assert_eq!(probe_flow(&c, b"set foo 0 0 3\r\nbar\r\n", b""), Probe::Yes(65));
    assert_eq!(probe_flow(&c, b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n"), Probe::Yes(85));
    assert_eq!(probe_flow(&c, b"get a b\r\n", b""), Probe::Yes(65));
    assert_eq!(probe_flow(&c, b"mg foo v O1\r\n", b""), Probe::Yes(65));
    // A lone `get key` could be another line protocol: the reply decides.
    assert_eq!(probe_flow(&c, b"get foo\r\n", b""), Probe::NeedMore);
    assert_eq!(probe_flow(&c, b"get foo\r\n", b"END\r\n"), Probe::Yes(85));
    assert_eq!(probe_flow(&c, b"get foo\r\n", b"$3\r\nbar\r\n"), Probe::No);
    assert_eq!(probe_flow(&c, b"version\r\n", b"VERSION 1.6.18\r\n"), Probe::Yes(85));
    assert_eq!(probe_flow(&c, b"incr k abc\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n"), Probe::Yes(75));
    assert_eq!(probe_flow(&c, b"se", b""), Probe::NeedMore);
    // Not memcached: HTTP, Redis, TLS, a server speaking first.
    assert_eq!(probe_flow(&c, b"GET / HTTP/1.1\r\n", b""), Probe::No);
    assert_eq!(probe_flow(&c, b"GET /page\r\n", b"<html>\r\n"), Probe::No);
    assert_eq!(probe_flow(&c, b"*1\r\n$4\r\nPING\r\n", b""), Probe::No);
    assert_eq!(probe_flow(&c, b"\x16\x03\x01\x00\xa5\x01\x00", b""), Probe::No);
    assert_eq!(probe_flow(&c, b"", b"STORED\r\n"), Probe::No);
    // A known command with bad arguments waits for memcached's CLIENT_ERROR.
    assert_eq!(probe_flow(&c, b"set foo bar\r\n", b""), Probe::NeedMore);
    assert_eq!(probe_flow(&c, b"set foo bar\r\n", b"+OK\r\n"), Probe::No);
    // Binary: a consistent request header, confirmed by its response.
    let get = bin(0x80, 0x00, b"foo", &[], &[], 0, 7);
    assert_eq!(probe_flow(&c, &get, b""), Probe::Yes(70));
    assert_eq!(probe_flow(&c, &get, &bin(0x81, 0x00, b"", &[0; 4], b"bar", 0, 7)), Probe::Yes(90));
    assert_eq!(probe_flow(&c, &get[..10], b""), Probe::NeedMore);
    // Wrong extras length for a set, or an unknown opcode.
    assert_eq!(probe_flow(&c, &bin(0x80, 0x01, b"k", &[], b"v", 0, 0), b""), Probe::No);
    assert_eq!(probe_flow(&c, &bin(0x80, 0x7f, b"k", &[], b"", 0, 0), b""), Probe::No);
    // Mid-connection: a request line and a reply line somewhere near the start.
    let mid = conn_with(Transport::Tcp, 4000, RoleEvidence::Port);
    assert_eq!(probe_flow(&mid, b"lue\r\nget a b\r\n", b"\r\nEND\r\n"), Probe::Yes(60));
    assert_eq!(probe_flow(&mid, b"lue\r\n", b"12\r\n"), Probe::NeedMore);
}

#[test]
fn pipelined_text_commands_pair_in_order() {
    let mut r = Run::new();
    r.req(1, b"set foo 0 0 3\r\nbar\r\nget foo baz nope\r\nincr n 5\r\ndelete foo\r\nstats\r\nbogus\r\n");
    r.resp(
        2,
        b"STORED\r\nVALUE foo 0 3\r\nbar\r\nVALUE baz 1 2 77\r\nqq\r\nEND\r\n15\r\nNOT_FOUND\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\nERROR\r\n",
    );
    assert_eq!(
        r.lines(),
        ["set STORED -", "get VALUE 2", "incr value -", "delete NOT_FOUND -", "stats STAT -", "bogus ERROR -"]
    );
    let d = r.details();
    assert_eq!((d[1].query_masked.as_str(), d[1].key_count), ("get ? ? ?", 3));
    assert_eq!(d[0].query_raw, "set foo 0 0 3");
    assert_eq!(d[5].error_code.as_deref(), Some("ERROR"));
    assert!(d[..5].iter().all(|d| d.error_code.is_none()));
    assert_eq!(r.out[0].request_bytes, 20);
    assert_eq!(r.out[1].response_bytes, 47);
    assert!(r.out.iter().all(|e| !e.partial && e.outcome == Outcome::Complete));
    assert!(r.dec.req.at_boundary() && r.dec.resp.at_boundary() && r.dec.pending.is_empty());
}

#[test]
fn noreply_is_never_paired() {
    let mut r = Run::new();
    r.req(1, b"set a 0 0 1 noreply\r\nx\r\ndelete b noreply\r\nincr c 1 noreply\r\nget a\r\n");
    // The noreply requests are exchanges at once, without a reply.
    assert_eq!(r.out.len(), 3);
    assert!(r.details().iter().all(|d| d.noreply && d.response.is_none()));
    assert!(r.out.iter().all(|e| e.response_bytes == 0 && e.end_ns == e.start_ns));
    r.resp(5, b"VALUE a 0 1\r\nx\r\nEND\r\n");
    assert_eq!(r.lines()[3], "get VALUE 1");
    assert_eq!((r.out[3].start_ns, r.out[3].end_ns), (1, 5));
}

#[test]
fn meta_quiet_mode_with_and_without_opaque() {
    let mut r = Run::new();
    // Quiet set and delete that succeed, a quiet miss, a quiet hit; mn ends the batch.
    r.req(1, b"ms a 1 q\r\nx\r\nmd b q\r\nmg c v q\r\nmg a v q k\r\nmn\r\n");
    r.resp(2, b"VA 1 ka\r\nx\r\nMN\r\n");
    assert_eq!(r.lines(), ["ms HD -", "md HD -", "mg EN 0", "mg VA 1", "mn MN -"]);
    let q: Vec<bool> = r.details().iter().map(|d| d.quiet_suppressed).collect();
    assert_eq!(q, [true, true, true, false, false]);
    // With opaques: a quiet failure is answered, and names its request.
    let mut r = Run::new();
    r.req(1, b"ms a 1 q O1\r\nx\r\nms b 1 q O2 I\r\ny\r\nmg a v O3\r\n");
    r.resp(2, b"NS O2\r\nVA 1 O3\r\nx\r\n");
    assert_eq!(r.lines(), ["ms HD -", "ms NS -", "mg VA 1"]);
    assert_eq!(r.details()[1].opaque.as_deref(), Some("2"));
    assert!(r.details()[0].quiet_suppressed && !r.details()[1].quiet_suppressed);
    // A quiet request nothing answered or contradicted: on close, partial.
    let mut r = Run::new();
    r.req(1, b"md z q\r\n").close();
    assert!(r.out[0].partial && r.out[0].outcome == Outcome::Timeout);
}

#[test]
fn binary_quiet_gets_noop_and_stats() {
    let mut r = Run::new();
    let mut reqs = bin(0x80, 0x0d, b"a", &[], &[], 0, 1); // GetKQ a (hit)
    reqs.extend(bin(0x80, 0x0d, b"b", &[], &[], 0, 2)); // GetKQ b (miss: no reply)
    reqs.extend(bin(0x80, 0x11, b"c", &[0; 8], b"v", 0, 3)); // SetQ c (success: no reply)
    reqs.extend(bin(0x80, 0x0a, b"", &[], &[], 0, 4)); // Noop
    reqs.extend(bin(0x80, 0x10, b"", &[], &[], 0, 5)); // Stat
    reqs.extend(bin(0x80, 0x00, b"x", &[], &[], 0, 6)); // Get x: unknown command status
    r.req(1, &reqs);
    let mut resps = bin(0x81, 0x0d, b"a", &[0; 4], b"val", 0, 1);
    resps.extend(bin(0x81, 0x0a, b"", &[], &[], 0, 4));
    resps.extend(bin(0x81, 0x10, b"pid", &[], b"1", 0, 5));
    resps.extend(bin(0x81, 0x10, b"uptime", &[], b"2", 0, 5));
    resps.extend(bin(0x81, 0x10, b"", &[], &[], 0, 5));
    resps.extend(bin(0x81, 0x00, b"", &[], b"Unknown command", 0x81, 6));
    for c in resps.chunks(5) {
        r.resp(2, c);
    }
    assert_eq!(
        r.lines(),
        [
            "get success 1",
            "get key_not_found 0",
            "set success -",
            "noop success -",
            "stats success -",
            "get unknown_command 0"
        ]
    );
    let d = r.details();
    assert_eq!(d.iter().map(|d| d.quiet_suppressed).collect::<Vec<_>>(), [false, true, true, false, false, false]);
    assert_eq!(d[5].error_code.as_deref(), Some("0x0081"));
    assert_eq!(d[0].query_raw, "get a");
    assert_eq!(d[0].opaque.as_deref(), Some("1"));
    // Stats: all its replies count.
    assert_eq!(r.out[4].response_bytes, (24 * 3 + 4 + 7) as u64);
}

#[test]
fn sasl_credentials_are_never_kept() {
    let mut r = Run::new();
    r.req(1, &bin(0x80, 0x21, b"PLAIN", &[], b"\0user\0secret", 0, 0));
    r.resp(2, &bin(0x81, 0x21, b"", &[], b"Authenticated", 0, 0));
    let json = serde_json::to_string(&r.out).unwrap();
    assert!(!json.contains("secret") && !json.contains("user"));
    assert_eq!(r.details()[0].command, "sasl_auth");
}

#[test]
fn lost_bytes_inside_a_value_cost_only_the_value() {
    let mut r = Run::new();
    r.req(1, b"get big\r\nget small\r\n");
    r.resp(2, b"VALUE big 0 100000\r\n0123");
    r.gap(StreamDir::ToClient, 99_000);
    r.resp(3, &[b'x'; 996]);
    r.resp(4, b"\r\nEND\r\nVALUE small 0 1\r\ns\r\nEND\r\n");
    assert_eq!(r.lines(), ["get VALUE 1", "get VALUE 1"]);
    assert!(r.out[0].partial && !r.out[1].partial);
    assert_eq!(r.out[0].response_bytes, 20 + 100_002 + 5);
    assert!(r.dec.resp.buf.len() < 64);
    // In a request's data block too.
    let mut r = Run::new();
    r.req(1, b"set k 0 0 5000\r\nab");
    r.gap(StreamDir::ToServer, 4000);
    r.req(2, &[b'v'; 1000]);
    r.req(3, b"\r\n");
    r.resp(4, b"STORED\r\n");
    assert_eq!(r.lines(), ["set STORED -"]);
    assert!(r.out[0].partial);
}

#[test]
fn lost_framing_resyncs_and_marks_partial() {
    let mut r = Run::new();
    r.req(1, b"get a\r\nget b\r\nget c\r\n");
    r.resp(2, b"VALUE a 0 1\r\n");
    // The rest of a's reply and the start of b's are lost.
    r.gap(StreamDir::ToClient, 30);
    r.resp(3, b"0 1\r\nb\r\nEND\r\nEND\r\n");
    // Nothing is invented: what pairs after the cut is partial.
    assert!(r.out.iter().all(|e| e.partial));
    assert!(r.out.len() <= 3);
    // Joined mid-connection.
    let mut r = Run::with(conn_with(Transport::Tcp, 11211, RoleEvidence::Port), DecodeConfig::default());
    r.req(1, b"0 0 3\r\nbar\r\nget a\r\n");
    r.resp(2, b"ORED\r\nEND\r\n");
    assert_eq!(r.lines(), ["get END 0"]);
    assert!(r.out[0].partial);
}

#[test]
fn bounded_memory_and_pending_cap() {
    let cfg = DecodeConfig { max_pending_per_conn: 4, ..Default::default() };
    let mut r = Run::with(conn(Transport::Tcp, 11211), cfg);
    for i in 0..10 {
        r.req(i, b"get k\r\n");
    }
    assert_eq!(r.dec.pending.len(), 4);
    assert_eq!(r.out.len(), 6);
    assert!(r.out.iter().all(|e| e.outcome == Outcome::Timeout));
    // A line that never ends is dropped once past MAX_LINE.
    let mut r = Run::new();
    for _ in 0..100 {
        r.req(0, &[b'a'; 1000]);
        assert!(r.dec.req.buf.len() <= MAX_LINE + 1000);
    }
    // A huge value streams past without being kept.
    let mut r = Run::new();
    r.req(0, b"get k\r\n");
    r.resp(1, b"VALUE k 0 50000000\r\n");
    for _ in 0..500 {
        r.resp(2, &[b'z'; 100_000]);
        assert!(r.dec.resp.buf.is_empty());
    }
    r.resp(3, b"\r\nEND\r\n");
    assert_eq!(r.lines(), ["get VALUE 1"]);
}

#[test]
fn span_attributes() {
    let mut r = Run::new();
    r.req(1, b"get a b c\r\nbogus\r\n");
    r.resp(2, b"VALUE a 0 1\r\nx\r\nEND\r\nERROR\r\n");
    let opts = NamingOptions::default();
    let d = r.details();
    let s = semconv::span_parts(&r.out[0], d[0], Kind::Server, &opts);
    let get = |k: &str| s.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string().trim_matches('"').to_string());
    assert_eq!(s.name, "get");
    assert_eq!(get("db.system.name").as_deref(), Some("memcached"));
    assert_eq!(get("db.operation.name").as_deref(), Some("get"));
    assert_eq!(get("db.query.text").as_deref(), Some("get ? ? ?"));
    assert_eq!(get("db.response.returned_rows").as_deref(), Some("1"));
    assert!(s.error.is_none() && get("error.type").is_none());
    let e = semconv::span_parts(&r.out[1], d[1], Kind::Server, &opts);
    assert_eq!(e.error.as_deref(), Some("ERROR"));
    let (_, m) = e.metric.as_ref().unwrap();
    assert!(m.iter().any(|(k, v)| *k == "db.response.status_code" && v.to_string().contains("ERROR")));
    let unmasked = NamingOptions { unmask_db_statements: true, ..Default::default() };
    let u = semconv::span_parts(&r.out[0], d[0], Kind::Server, &unmasked);
    assert!(u.attrs.iter().any(|(k, v)| *k == "db.query.text" && v.to_string().contains("get a b c")));
}

/// A text session and its replies, with the expected "command response hits" lines.
fn text_session() -> (Vec<u8>, Vec<u8>, Vec<&'static str>) {
    (
        b"set foo 0 0 3\r\nbar\r\nget foo nope\r\nset n 0 0 1 noreply\r\n5\r\nincr n 2\r\ngets foo\r\nmg foo v q O9\r\nmg x v q\r\nmn\r\ncas foo 0 0 1 1\r\nz\r\n".to_vec(),
        b"STORED\r\nVALUE foo 0 3\r\nbar\r\nEND\r\n7\r\nVALUE foo 0 3 1\r\nbar\r\nEND\r\nVA 3 O9\r\nbar\r\nMN\r\nEXISTS\r\n".to_vec(),
        vec!["set STORED -", "get VALUE 1", "set - -", "incr value -", "gets VALUE 1", "mg VA 1", "mg EN 0", "mn MN -", "cas EXISTS -"],
    )
}

proptest! {
    /// Valid traffic, however it is cut: the same exchanges, sizes adding up.
    #[test]
    fn any_segmentation_gives_the_same_exchanges(cut_req in 1usize..40, cut_resp in 1usize..40, interleave in any::<bool>()) {
        let (req, resp, want) = text_session();
        let mut r = Run::new();
        if interleave {
            for (i, c) in req.chunks(cut_req).enumerate() {
                r.req(i as u64, c);
            }
            for (i, c) in resp.chunks(cut_resp).enumerate() {
                r.resp(10_000 + i as u64, c);
            }
        } else {
            let (a, b): (Vec<_>, Vec<_>) = (req.chunks(cut_req).collect(), resp.chunks(cut_resp).collect());
            for (i, c) in a.iter().enumerate() {
                r.req(i as u64, c);
            }
            for (i, c) in b.iter().enumerate() {
                r.resp(10_000 + i as u64, c);
            }
        }
        let mut lines = r.lines();
        // The noreply set is emitted when it is read, before the get's reply.
        let nr = lines.iter().position(|l| l == "set - -").unwrap();
        let l = lines.remove(nr);
        lines.insert(2, l);
        prop_assert_eq!(lines, want);
        prop_assert_eq!(r.out.iter().map(|e| e.request_bytes).sum::<u64>(), req.len() as u64);
        prop_assert_eq!(r.out.iter().map(|e| e.response_bytes).sum::<u64>(), resp.len() as u64);
        prop_assert!(r.out.iter().all(|e| !e.partial));
    }

    /// Binary traffic cut anywhere pairs the same way.
    #[test]
    fn binary_any_segmentation(cut in 1usize..50) {
        let mut req = bin(0x80, 0x01, b"k", &[0; 8], b"value", 0, 1);
        req.extend(bin(0x80, 0x09, b"k", &[], &[], 0, 2));
        req.extend(bin(0x80, 0x09, b"m", &[], &[], 0, 3));
        req.extend(bin(0x80, 0x0a, b"", &[], &[], 0, 4));
        let mut resp = bin(0x81, 0x01, b"", &[], &[], 0, 1);
        resp.extend(bin(0x81, 0x09, b"", &[0; 4], b"value", 0, 2));
        resp.extend(bin(0x81, 0x0a, b"", &[], &[], 0, 4));
        let mut r = Run::new();
        for c in req.chunks(cut) {
            r.req(0, c);
        }
        for c in resp.chunks(cut) {
            r.resp(1, c);
        }
        prop_assert_eq!(r.lines(), ["set success -", "get success 1", "get key_not_found 0", "noop success -"]);
    }

    #[test]
    fn arbitrary_input_never_panics(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..400), 0..40),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"get a\r\n"[..]), Just(&b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01"[..])],
        mid in any::<bool>(),
    ) {
        let c = if mid { conn_with(Transport::Tcp, 11211, RoleEvidence::Port) } else { conn(Transport::Tcp, 11211) };
        let mut r = Run::with(c, DecodeConfig::default());
        r.req(0, prefix);
        for (i, (up, bytes, gap)) in chunks.iter().enumerate() {
            let dir = if *up { StreamDir::ToServer } else { StreamDir::ToClient };
            let _ = probe(&r.conn, dir, bytes);
            let _ = probe_flow(&r.conn, bytes, prefix);
            if *gap > 300 {
                r.gap(dir, *gap);
            } else {
                r.dec.on_data(dir, i as u64, bytes, &mut Emit { conn: &r.conn, out: &mut r.out });
            }
            prop_assert!(r.dec.req.buf.len() <= MAX_LINE + 200 && r.dec.resp.buf.len() <= MAX_LINE + 200 + 65_535 + 300);
            prop_assert!(r.dec.pending.len() <= DecodeConfig::default().max_pending_per_conn);
        }
        r.close();
        prop_assert!(r.dec.pending.is_empty());
    }

    /// Token soup of real protocol pieces (arbitrary bytes rarely form them).
    #[test]
    fn token_soup_never_panics(
        tokens in proptest::collection::vec(prop_oneof![
            Just(&b"VALUE a 0 3\r\n"[..]), Just(&b"abc\r\n"[..]), Just(&b"END\r\n"[..]), Just(&b"STORED\r\n"[..]),
            Just(&b"VA 2 O1\r\n"[..]), Just(&b"HD O2\r\n"[..]), Just(&b"EN\r\n"[..]), Just(&b"MN\r\n"[..]),
            Just(&b"STAT x 1\r\n"[..]), Just(&b"12\r\n"[..]), Just(&b"ERROR\r\n"[..]), Just(&b"\r\n"[..]),
            Just(&b"SERVER_ERROR out of memory\r\n"[..]), Just(&b"VALUE b 0 999999\r\n"[..]),
        ], 0..80),
        cut in 1usize..30,
        gaps in proptest::collection::vec(0u64..100, 0..4),
    ) {
        let mut r = Run::new();
        r.req(0, b"get a b\r\nmg a v q O1\r\nms b 2 q O2\r\nhi\r\nmn\r\nstats\r\nincr n 1\r\n");
        let bytes = tokens.concat();
        for (i, c) in bytes.chunks(cut).enumerate() {
            r.resp(i as u64, c);
            if i % 7 == 3 {
                if let Some(g) = gaps.get(i % gaps.len().max(1)) {
                    r.gap(StreamDir::ToClient, *g);
                }
            }
            prop_assert!(r.dec.resp.buf.len() <= MAX_LINE + 30);
        }
        r.close();
        prop_assert!(r.out.len() <= 6);
    }
}
