use super::*;
use crate::flow::Transport;
use crate::protocol::spare::{SPARE_BUFS, SPARE_BUF_BYTES};
use crate::protocol::testutil::{conn, conn_with};
use proptest::prelude::*;

struct Run {
    conn: Conn,
    dec: PostgresDecoder,
    out: Vec<Exchange>,
}

impl Run {
    fn new() -> Self {
        Self::on(conn(Transport::Tcp, 5432))
    }
    fn on(conn: Conn) -> Self {
        Self { conn, dec: PostgresDecoder::new(&DecodeConfig::default()), out: Vec::new() }
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
    fn details(&self) -> Vec<&PostgresDetail> {
        self.out
            .iter()
            .map(|e| match &e.detail {
                Detail::Postgres(d) => d,
                _ => panic!(),
            })
            .collect()
    }
    /// "summary tag rows sqlstate" per exchange.
    fn lines(&self) -> Vec<String> {
        self.details()
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}/{} {}",
                    d.summary.as_deref().unwrap_or("-"),
                    d.command_tag.as_deref().unwrap_or("-"),
                    d.returned_rows.map(|n| n.to_string()).unwrap_or("-".into()),
                    d.affected_rows.map(|n| n.to_string()).unwrap_or("-".into()),
                    d.sqlstate.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }
}

fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}
fn cs(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}
fn startup(user: &str, db: &str) -> Vec<u8> {
    let mut body = PROTOCOL_3.to_be_bytes().to_vec();
    for s in ["user", user, "database", db, "application_name", "psql"] {
        body.extend(cs(s));
    }
    body.push(0);
    let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
    v.extend(body);
    v
}
fn ssl_request() -> Vec<u8> {
    [8u32.to_be_bytes(), SSL_REQUEST.to_be_bytes()].concat()
}
fn query(q: &str) -> Vec<u8> {
    msg(b'Q', &cs(q))
}
fn parse(name: &str, q: &str) -> Vec<u8> {
    msg(b'P', &[cs(name), cs(q), vec![0, 0]].concat())
}
fn bind(portal: &str, name: &str) -> Vec<u8> {
    msg(b'B', &[cs(portal), cs(name), vec![0, 0, 0, 0, 0, 0]].concat())
}
fn describe_portal(portal: &str) -> Vec<u8> {
    msg(b'D', &[vec![b'P'], cs(portal)].concat())
}
fn execute(portal: &str) -> Vec<u8> {
    msg(b'E', &[cs(portal), vec![0, 0, 0, 0]].concat())
}
fn sync() -> Vec<u8> {
    msg(b'S', &[])
}
fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}
fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cs(tag))
}
fn row_desc() -> Vec<u8> {
    msg(b'T', &[0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0])
}
fn data_row(v: &str) -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
    b.extend_from_slice(v.as_bytes());
    msg(b'D', &b)
}
fn error(code: &str, m: &str) -> Vec<u8> {
    msg(
        b'E',
        &[vec![b'S'], cs("ERROR"), vec![b'V'], cs("ERROR"), vec![b'C'], cs(code), vec![b'M'], cs(m), vec![0]].concat(),
    )
}
fn auth_ok_and_ready() -> Vec<u8> {
    [
        msg(b'R', &0u32.to_be_bytes()),
        msg(b'S', &[cs("server_version"), cs("15.18")].concat()),
        msg(b'K', &[0, 0, 1, 2, 3, 4, 5, 6]),
        ready(),
    ]
    .concat()
}

/// A session with a startup, a simple query and an error, answered as
/// PostgreSQL 15 does.
fn session() -> (Vec<u8>, Vec<u8>) {
    let req = [startup("app", "shop"), query("SELECT * FROM items WHERE id > 1"), query("SELECT * FROM nope")].concat();
    let resp = [
        auth_ok_and_ready(),
        row_desc(),
        data_row("2"),
        data_row("3"),
        complete("SELECT 2"),
        ready(),
        error("42P01", "relation \"nope\" does not exist"),
        ready(),
    ]
    .concat();
    (req, resp)
}

#[test]
fn probes() {
    let c = conn(Transport::Tcp, 8000);
    assert_eq!(probe(&c, StreamDir::ToServer, &startup("u", "d")), Probe::Yes(95));
    assert_eq!(probe(&c, StreamDir::ToServer, &startup("u", "d")[..20]), Probe::Yes(90));
    assert_eq!(probe(&c, StreamDir::ToServer, &startup("u", "d")[..6]), Probe::NeedMore);
    assert_eq!(probe(&c, StreamDir::ToServer, &ssl_request()), Probe::Yes(85));
    assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n\r\n"), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::No);
    // A typed message at the start of a connection whose SYN was seen is not PostgreSQL.
    assert_eq!(probe(&c, StreamDir::ToServer, &query("SELECT 1")), Probe::No);
    assert_eq!(probe(&c, StreamDir::ToClient, &ready()), Probe::No);
    let mid = conn_with(Transport::Tcp, 8000, RoleEvidence::Port);
    assert_eq!(probe(&mid, StreamDir::ToServer, &[query("SELECT 1"), query("SELECT 2")].concat()), Probe::Yes(70));
    assert_eq!(
        probe(&mid, StreamDir::ToClient, &[row_desc(), data_row("1"), complete("SELECT 1"), ready()].concat()),
        Probe::Yes(70)
    );
    assert_eq!(probe(&mid, StreamDir::ToClient, b"HTTP/1.1 200 OK\r\n"), Probe::No);
    // Kafka's probe must not take a StartupMessage (protocol 3.0 reads as Metadata v0).
    assert_eq!(crate::protocol::kafka::probe(&c, StreamDir::ToServer, &startup("postgres", "d")), Probe::No);
    let v = crate::protocol::detect::detect_stream(&c, &startup("postgres", "shop"), b"", false);
    assert_eq!(v, crate::protocol::detect::Verdict::Detected(crate::protocol::exchange::Protocol::Postgres));
}

#[test]
fn startup_simple_query_and_error() {
    let (req, resp) = session();
    let mut r = Run::new();
    // Replies come after their request; feed in order, request side first.
    r.req(1, &req[..startup("app", "shop").len()]).resp(2, &auth_ok_and_ready());
    r.req(3, &req[startup("app", "shop").len()..]).resp(4, &resp[auth_ok_and_ready().len()..]);
    assert_eq!(r.lines(), ["SELECT items SELECT 2 2/- -", "SELECT nope - -/- 42P01"]);
    let d = r.details();
    assert_eq!(d[0].database.as_deref(), Some("shop"));
    assert_eq!(d[0].operation.as_deref(), Some("SELECT"));
    assert_eq!(d[0].collection.as_deref(), Some("items"));
    assert_eq!(d[0].query_masked.as_deref(), Some("SELECT * FROM items WHERE id > ?"));
    assert_eq!(d[1].error_message.as_deref(), Some("relation \"nope\" does not exist"));
    assert!(r.out.iter().all(|e| !e.partial && e.outcome == Outcome::Complete));
    assert_eq!(r.out[0].request_bytes, query("SELECT * FROM items WHERE id > 1").len() as u64);
    assert!(r.dec.pending.is_empty());
}

#[test]
fn ssl_accepted_stops_decoding_and_refused_goes_on() {
    let before = ENCRYPTED_SSL.get();
    let mut r = Run::new();
    r.req(1, &ssl_request()).resp(2, b"S");
    r.req(3, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").resp(4, b"\x16\x03\x03\x00\x7a\x02");
    assert!(r.out.is_empty() && r.dec.front.off && r.dec.back.off);
    assert!(ENCRYPTED_SSL.get() > before);
    let before = ENCRYPTED_GSS.get();
    let mut r = Run::new();
    r.req(1, &[8u32.to_be_bytes(), GSSENC_REQUEST.to_be_bytes()].concat()).resp(2, b"G");
    r.req(3, b"\x00\x00\x00\x40gss-wrapped").resp(4, b"\x00\x00\x00\x20wrapped");
    assert!(r.out.is_empty() && r.dec.front.off && ENCRYPTED_GSS.get() > before);
    // A CancelRequest (on its own connection) answers nothing.
    let mut r = Run::new();
    r.req(1, &[16u32.to_be_bytes(), CANCEL_REQUEST.to_be_bytes(), [0, 0, 1, 2], [3, 4, 5, 6]].concat());
    r.dec.on_close(2, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
    assert!(r.out.is_empty());
    let mut r = Run::new();
    r.req(1, &ssl_request()).resp(2, b"N");
    r.req(3, &startup("u", "db")).resp(4, &auth_ok_and_ready());
    r.req(5, &query("SELECT 1")).resp(6, &[row_desc(), data_row("1"), complete("SELECT 1"), ready()].concat());
    assert_eq!(r.lines(), ["SELECT SELECT 1 1/- -"]);
}

#[test]
fn password_payloads_are_never_kept() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db"));
    r.resp(2, &msg(b'R', &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0]));
    r.req(3, &msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=SECRETNONCE"));
    r.resp(4, &auth_ok_and_ready());
    r.req(5, &query("ALTER USER u PASSWORD 'hunter2'")).resp(6, &[complete("ALTER ROLE"), ready()].concat());
    let json = serde_json::to_string(&r.out).unwrap();
    assert!(!json.contains("SECRETNONCE") && !json.contains("hunter2"), "{json}");
    assert_eq!(r.details()[0].operation.as_deref(), Some("ALTER USER"));
}

#[test]
fn extended_prepared_statements_carry_their_text() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    // Named statement prepared once, executed twice; unnamed statement pipelined in the same segment.
    let batch = [
        parse("s1", "SELECT name FROM items WHERE id = $1"),
        bind("", "s1"),
        describe_portal(""),
        execute(""),
        parse("", "UPDATE items SET price = $1 WHERE id = $2"),
        bind("", ""),
        execute(""),
        sync(),
    ]
    .concat();
    r.req(3, &batch);
    r.resp(
        4,
        &[
            msg(b'1', &[]),
            msg(b'2', &[]),
            row_desc(),
            data_row("pear"),
            complete("SELECT 1"),
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("UPDATE 2"),
            ready(),
        ]
        .concat(),
    );
    r.req(5, &[bind("", "s1"), execute(""), sync()].concat());
    r.resp(6, &[msg(b'2', &[]), data_row("x"), data_row("y"), complete("SELECT 2"), ready()].concat());
    assert_eq!(
        r.lines(),
        ["SELECT items SELECT 1 1/- -", "UPDATE items UPDATE 2 -/2 -", "SELECT items SELECT 2 2/- -"]
    );
    let d = r.details();
    assert_eq!(d[0].statement.as_deref(), Some("s1"));
    assert_eq!(d[2].statement.as_deref(), Some("s1"));
    assert_eq!(d[2].query_masked.as_deref(), Some("SELECT name FROM items WHERE id = $1"));
    assert!(d.iter().all(|d| d.message == "execute"));
    // The first Execute's request counts its Parse, Bind and Describe.
    let first = parse("s1", "SELECT name FROM items WHERE id = $1").len()
        + bind("", "s1").len()
        + describe_portal("").len()
        + execute("").len();
    assert_eq!(r.out[0].request_bytes, first as u64);
    assert!(r.out.iter().all(|e| !e.partial));
    assert!(r.dec.pending.is_empty());
}

#[test]
fn parse_error_goes_to_the_skipped_execute_and_pipeline_aborts() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    r.req(
        3,
        &[
            parse("", "SELECT * FROM nope WHERE id = $1"),
            bind("", ""),
            execute(""),
            parse("", "INSERT INTO t VALUES ($1)"),
            bind("", ""),
            execute(""),
            sync(),
        ]
        .concat(),
    );
    r.resp(4, &[error("42P01", "relation \"nope\" does not exist"), ready()].concat());
    // A pipeline: the second Execute fails, the third is skipped by the server.
    r.req(
        5,
        &[
            parse("", "INSERT INTO t VALUES ($1)"),
            bind("", ""),
            execute(""),
            bind("", ""),
            execute(""),
            bind("", ""),
            execute(""),
            sync(),
        ]
        .concat(),
    );
    r.resp(
        6,
        &[msg(b'1', &[]), msg(b'2', &[]), complete("INSERT 0 1"), msg(b'2', &[]), error("23505", "duplicate"), ready()]
            .concat(),
    );
    assert_eq!(r.lines(), ["SELECT nope - -/- 42P01", "INSERT t INSERT 0 1 -/1 -", "INSERT t - -/- 23505"]);
    // A failing Parse alone (Parse + Sync) is its own exchange.
    r.req(7, &[parse("bad", "SELEC 1"), sync()].concat());
    r.resp(8, &[error("42601", "syntax error"), ready()].concat());
    assert_eq!(r.details()[3].message, "parse");
    assert_eq!(r.details()[3].sqlstate.as_deref(), Some("42601"));
    assert_eq!(r.dec.statement_count(), 1, "a statement whose Parse failed is forgotten");
    assert!(r.dec.pending.is_empty());
}

#[test]
fn copy_in_out_and_notifications() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    r.req(3, &query("COPY items FROM STDIN"));
    r.resp(4, &msg(b'G', &[0, 0, 0]));
    r.req(5, &[msg(b'd', b"4\tfig\n"), msg(b'd', b"5\tkiwi\n"), msg(b'c', &[])].concat());
    r.resp(6, &[complete("COPY 2"), ready()].concat());
    r.req(7, &query("COPY items TO STDOUT"));
    r.resp(
        8,
        &[msg(b'H', &[0, 0, 0]), msg(b'd', b"1\n"), msg(b'd', b"2\n"), msg(b'c', &[]), complete("COPY 2"), ready()]
            .concat(),
    );
    r.req(9, &query("LISTEN news"));
    r.resp(10, &[complete("LISTEN"), ready()].concat());
    r.req(11, &query("NOTIFY news, 'hi'"));
    // The notification comes before ReadyForQuery and is not a reply.
    r.resp(
        12,
        &[complete("NOTIFY"), msg(b'A', &[0, 0, 0, 1, b'n', b'e', b'w', b's', 0, b'h', b'i', 0]), ready()].concat(),
    );
    r.resp(13, &msg(b'N', &[b'S', b'N', b'O', b'T', b'I', b'C', b'E', 0, 0]));
    r.req(14, &query("SELECT 1")).resp(15, &[row_desc(), data_row("1"), complete("SELECT 1"), ready()].concat());
    assert_eq!(
        r.lines(),
        [
            "COPY items COPY 2 -/2 -",
            "COPY items COPY 2 2/- -",
            "LISTEN LISTEN -/- -",
            "NOTIFY NOTIFY -/- -",
            "SELECT SELECT 1 1/- -"
        ]
    );
    assert_eq!(r.details()[0].copy, Some("in"));
    assert_eq!(r.out[0].request_bytes, (query("COPY items FROM STDIN").len() + 11 + 12 + 5) as u64);
    assert_eq!(r.details()[1].copy, Some("out"));
}

#[test]
fn joined_mid_connection_resyncs_on_boundaries() {
    let mut r = Run::on(conn_with(Transport::Tcp, 8000, RoleEvidence::FirstPacket));
    // The tail of a DataRow, then whole messages.
    let mut resp = data_row(&"z".repeat(40))[20..].to_vec();
    resp.extend([complete("SELECT 9"), ready()].concat());
    r.resp(1, &resp);
    r.req(2, &query("SELECT x FROM t")).resp(3, &[row_desc(), data_row("1"), complete("SELECT 1"), ready()].concat());
    r.req(4, &[parse("", "DELETE FROM t"), bind("", ""), execute(""), sync()].concat());
    r.resp(5, &[msg(b'1', &[]), msg(b'2', &[]), complete("DELETE 3"), ready()].concat());
    assert_eq!(r.lines(), ["SELECT t SELECT 1 1/- -", "DELETE t DELETE 3 -/3 -"]);
    // Pairing is trusted again once a ReadyForQuery found both sides idle.
    assert!(!r.out[1].partial);
}

#[test]
fn lost_bytes_inside_a_body_cost_that_body_only() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    let big = data_row(&"x".repeat(3000));
    r.req(3, &query("SELECT repeat('x', 3000)"));
    r.resp(4, &[row_desc(), big[..200].to_vec()].concat());
    r.gap(StreamDir::ToClient, big.len() as u64 - 200);
    r.resp(5, &[complete("SELECT 1"), ready()].concat());
    r.req(6, &query("SELECT 2")).resp(7, &[complete("SELECT 0"), ready()].concat());
    assert_eq!(r.lines(), ["SELECT SELECT 1 1/- -", "SELECT SELECT 0 0/- -"]);
    assert!(r.out[0].partial && !r.out[1].partial);
    // A gap past a message end loses framing: the reader resyncs, the exchange is partial.
    r.req(8, &query("SELECT 3")).resp(9, &row_desc()[..3]);
    r.gap(StreamDir::ToClient, 100);
    r.resp(10, &[data_row("1"), complete("SELECT 1"), ready()].concat());
    r.req(11, &query("SELECT 4")).resp(12, &[complete("SELECT 0"), ready()].concat());
    assert_eq!(r.out.len(), 4);
    assert!(r.out[2].partial && !r.out[3].partial, "{:?}", r.out);
}

#[test]
fn bounded_statement_map() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    for i in 0..(MAX_STATEMENTS * 3) {
        r.req(3, &[parse(&format!("s{i}"), "SELECT 1"), sync()].concat());
        r.resp(4, &[msg(b'1', &[]), ready()].concat());
    }
    assert_eq!(r.dec.statement_count(), MAX_STATEMENTS);
    assert!(r.dec.statements.order.len() <= 2 * MAX_STATEMENTS + 16);
    assert!(r.out.is_empty() && r.dec.pending.is_empty());
}

#[test]
fn close_and_timeouts() {
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    r.req(3, &query("SELECT pg_sleep(100)"));
    r.dec.on_close(9, CloseReason::Rst, &mut Emit { conn: &r.conn, out: &mut r.out });
    assert_eq!(r.out[0].outcome, Outcome::Reset);
    let mut r = Run::new();
    r.req(1, &startup("u", "db")).resp(2, &auth_ok_and_ready());
    r.req(3, &query("SELECT 1"));
    r.dec.expire(10, &mut Emit { conn: &r.conn, out: &mut r.out });
    assert_eq!(r.out[0].outcome, Outcome::Timeout);
}

/// A client/server conversation as (direction, bytes) messages.
fn conversation() -> Vec<(StreamDir, Vec<u8>)> {
    use StreamDir::*;
    let (req, resp) = session();
    vec![
        (ToServer, req),
        (ToClient, resp),
        (ToServer, [parse("s", "SELECT $1"), bind("", "s"), describe_portal(""), execute(""), sync()].concat()),
        (ToClient, [msg(b'1', &[]), msg(b'2', &[]), row_desc(), data_row("7"), complete("SELECT 1"), ready()].concat()),
        (ToServer, query("COPY t FROM STDIN")),
        (ToClient, msg(b'G', &[0, 0, 0])),
        (ToServer, [msg(b'd', b"1\n"), msg(b'c', &[])].concat()),
        (ToClient, [complete("COPY 1"), ready()].concat()),
    ]
}

proptest! {
    // Valid traffic however it is cut into segments: the same exchanges.
    #[test]
    fn any_segmentation_gives_the_same_exchanges(cuts in proptest::collection::vec(1usize..40, 1..16)) {
        let mut want = Run::new();
        for (dir, bytes) in conversation() {
            match dir {
                StreamDir::ToServer => want.req(0, &bytes),
                StreamDir::ToClient => want.resp(0, &bytes),
            };
        }
        let mut r = Run::new();
        for (dir, _, chunk) in crate::protocol::testutil::in_cuts(&conversation(), &cuts) {
            match dir {
                StreamDir::ToServer => r.req(0, chunk),
                StreamDir::ToClient => r.resp(0, chunk),
            };
        }
        prop_assert_eq!(r.lines(), want.lines());
        prop_assert_eq!(r.lines().len(), 4);
        prop_assert!(r.out.iter().all(|e| !e.partial));
        let sizes = |x: &Run| x.out.iter().map(|e| (e.request_bytes, e.response_bytes)).collect::<Vec<_>>();
        prop_assert_eq!(sizes(&r), sizes(&want));
    }

    // Metrics only (no span shows statement texts): the same exchanges,
    // however cut, but for the masked and raw texts.
    #[test]
    fn texts_off_changes_only_the_texts(cuts in proptest::collection::vec(1usize..40, 1..16)) {
        let run = |span_fields: bool| {
            let cfg = DecodeConfig { span_fields, ..DecodeConfig::default() };
            let mut r = Run { conn: conn(Transport::Tcp, 5432), dec: PostgresDecoder::new(&cfg), out: Vec::new() };
            for (dir, _, chunk) in crate::protocol::testutil::in_cuts(&conversation(), &cuts) {
                match dir {
                    StreamDir::ToServer => r.req(0, chunk),
                    StreamDir::ToClient => r.resp(0, chunk),
                };
            }
            r.out
        };
        let (with, without) = (run(true), run(false));
        prop_assert_eq!(with.len(), 4);
        let view = |exs: Vec<Exchange>, drop_texts: bool| -> Vec<String> {
            exs.into_iter()
                .map(|mut e| {
                    if let Detail::Postgres(d) = &mut e.detail {
                        if drop_texts {
                            assert!(d.query_masked.is_some() || d.message == "function_call" || d.summary.is_none());
                            d.query_masked = None;
                            d.query_raw = None;
                        }
                    }
                    format!("{e:?}")
                })
                .collect()
        };
        prop_assert_eq!(view(without, false), view(with, true));
    }

    #[test]
    fn arbitrary_input_never_panics(
        mid in any::<bool>(),
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..400), 0..40),
    ) {
        let ev = if mid { RoleEvidence::Port } else { RoleEvidence::Syn };
        let mut r = Run::on(conn_with(Transport::Tcp, 5432, ev));
        for (i, (up, bytes, gap)) in chunks.iter().enumerate() {
            let dir = if *up { StreamDir::ToServer } else { StreamDir::ToClient };
            let _ = probe(&r.conn, dir, bytes);
            if *gap > 300 {
                r.gap(dir, *gap);
            } else {
                r.dec.on_data(dir, i as u64, bytes, &mut Emit { conn: &r.conn, out: &mut r.out });
            }
            prop_assert!(r.dec.pending.len() <= DecodeConfig::default().max_pending_per_conn);
        }
        r.dec.on_close(1000, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
    }

    // Valid messages mixed with garbage, gaps and cuts: no panic, bounded state.
    #[test]
    fn message_soup_never_panics(
        picks in proptest::collection::vec((0usize..12, any::<bool>()), 0..80),
        cut in 1usize..30,
    ) {
        let pool: Vec<Vec<u8>> = vec![
            query("SELECT 1"), parse("a", "SELECT $1"), bind("", "a"), execute(""), sync(), ready(),
            complete("SELECT 1"), data_row("x"), error("42P01", "e"), msg(b'1', &[]), b"\x00\x00\xff".to_vec(), startup("u", "d"),
        ];
        let mut r = Run::new();
        for (i, (p, up)) in picks.iter().enumerate() {
            let bytes = &pool[*p];
            for c in bytes.chunks(cut) {
                if *up { r.req(i as u64, c); } else { r.resp(i as u64, c); }
            }
            if i % 17 == 16 {
                r.gap(if *up { StreamDir::ToServer } else { StreamDir::ToClient }, 7);
            }
        }
        r.dec.on_close(1000, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
        prop_assert!(r.dec.statements.len() <= MAX_STATEMENTS);
        for f in [&r.dec.front, &r.dec.back] {
            prop_assert!(f.spare.bytes() <= SPARE_BUFS * SPARE_BUF_BYTES);
        }
    }
}

#[test]
fn span_mapping_follows_semconv() {
    use crate::otel::attr::V;
    use crate::otel::span::{Kind as SpanKind, NamingOptions};
    let mut r = Run::new();
    r.req(1, &startup("u", "shop")).resp(2, &auth_ok_and_ready());
    r.req(3, &query("SELECT name FROM items WHERE id = 7"))
        .resp(4, &[data_row("a"), complete("SELECT 1"), ready()].concat());
    r.req(5, &query("DELETE FROM nope WHERE x = 'y'"))
        .resp(6, &[error("42P01", "relation \"nope\" does not exist"), ready()].concat());
    let get = |p: &crate::otel::span::SpanParts, k: &str| p.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let Detail::Postgres(d) = &r.out[0].detail else { panic!() };
    let p = semconv::span_parts(&r.out[0], d, SpanKind::Client, &NamingOptions::default(), false);
    assert_eq!(p.name, "SELECT items");
    assert!(p.error.is_none());
    assert_eq!(get(&p, "db.system.name"), Some(V::from("postgresql")));
    assert_eq!(get(&p, "db.namespace"), Some(V::from("shop")));
    assert_eq!(get(&p, "db.query.text"), Some(V::from("SELECT name FROM items WHERE id = ?")));
    assert_eq!(get(&p, "db.response.returned_rows"), Some(V::from(1i64)));
    let (inst, m) = p.metric.clone().unwrap();
    assert_eq!(inst.name(), "db.client.operation.duration");
    assert!(m.iter().all(|(k, _)| *k != "db.query.text"));
    assert!(m.iter().any(|(k, _)| *k == "db.query.summary"));
    // Unmasked on request; errors carry the SQLSTATE.
    let opts = NamingOptions { unmask_db_statements: true, ..Default::default() };
    let p = semconv::span_parts(&r.out[0], d, SpanKind::Client, &opts, false);
    assert_eq!(get(&p, "db.query.text"), Some(V::from("SELECT name FROM items WHERE id = 7")));
    let Detail::Postgres(d) = &r.out[1].detail else { panic!() };
    let p = semconv::span_parts(&r.out[1], d, SpanKind::Client, &NamingOptions::default(), false);
    assert_eq!(p.name, "DELETE nope");
    assert_eq!(p.error.as_deref(), Some("relation \"nope\" does not exist"));
    assert_eq!(get(&p, "db.response.status_code"), Some(V::from("42P01")));
    assert_eq!(get(&p, "error.type"), Some(V::from("42P01")));
    let m = p.metric.unwrap().1;
    assert!(m.iter().any(|(k, v)| *k == "error.type" && *v == V::from("42P01")));
    // CLIENT metrics name the server when configured to, as the span does;
    // reduced (no span exported) the metric and the error are the same.
    let opts = NamingOptions { metrics_server_address: true, ..Default::default() };
    let p = semconv::span_parts(&r.out[1], d, SpanKind::Client, &opts, false);
    let m = p.metric.clone().unwrap().1;
    for key in ["server.address", "server.port"] {
        assert_eq!(m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()), get(&p, key), "{key}");
    }
    let reduced = semconv::span_parts(&r.out[1], d, SpanKind::Client, &opts, true);
    assert_eq!(reduced.metric.unwrap().1, m);
    assert!(reduced.error.is_some() && reduced.attrs.is_empty());
    for (k, _) in &p.attrs {
        assert!(crate::otel::semconv::is_allowed_key(k), "{k}");
    }
}

/// The type bytes of the protocol's message formats (PostgreSQL docs,
/// "Message Formats"), frontend and backend.
#[test]
fn message_type_bytes_are_the_documented_ones() {
    for t in 0..=255u8 {
        assert_eq!(frame::frontend_type(t), b"QPBDESHCXdcfpF".contains(&t), "frontend {t}");
        assert_eq!(frame::backend_type(t), b"RKSZTDCIEN123ntsGHWdcAvV".contains(&t), "backend {t}");
    }
}
