//! Decoder tests on built conversations (the golden captures in
//! integration-tests/ are the real-server counterpart) and fuzzing.
use super::*;
use crate::flow::Transport;
use crate::protocol::detect::{detect_stream, Verdict};
use crate::protocol::spare::{SPARE_BUFS, SPARE_BUF_BYTES};
use crate::protocol::testutil::{conn, conn_with};
use proptest::prelude::*;
use std::io::Write;

const C: StreamDir = StreamDir::ToServer;
const S: StreamDir = StreamDir::ToClient;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

fn lenenc_bytes(n: u64) -> Vec<u8> {
    match n {
        0..=250 => vec![n as u8],
        251..=0xffff => [&[0xfc][..], &(n as u16).to_le_bytes()].concat(),
        _ => [&[0xfd][..], &(n as u32).to_le_bytes()[..3]].concat(),
    }
}

fn greeting(version: &str, caps: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&42u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    pkt(0, &p)
}

const BASE_CAPS: u32 = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0000_0008 | 0x0001_0000 | 0x0002_0000;

fn login(caps: u32, user: &str, db: Option<&str>) -> Vec<u8> {
    let caps = if db.is_some() { caps | cap::CONNECT_WITH_DB } else { caps & !cap::CONNECT_WITH_DB };
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(20);
    p.extend_from_slice(b"SECRET-AUTH-RESPONSE");
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"mysql_native_password\0");
    pkt(1, &p)
}

fn ok(seq: u8, affected: u64, status: u16) -> Vec<u8> {
    let mut p = vec![0];
    p.extend(lenenc_bytes(affected));
    p.push(0);
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    pkt(seq, &p)
}

fn err(seq: u8, code: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(msg.as_bytes());
    pkt(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

/// An OK with a 0xfe header (ends a result set with DEPRECATE_EOF).
fn ok_fe(seq: u8, status: u16) -> Vec<u8> {
    let mut p = ok(seq, 0, status);
    p[4] = 0xfe;
    p
}

fn coldef(seq: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["def", "shop", "t", "t", name, name] {
        p.extend(lenenc_bytes(s.len() as u64));
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&[0x0c, 0x21, 0, 0x0b, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

fn row(seq: u8, vals: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in vals {
        p.extend(lenenc_bytes(v.len() as u64));
        p.extend_from_slice(v.as_bytes());
    }
    pkt(seq, &p)
}

/// A result set: column count, definitions, [EOF], rows, terminator. Returns bytes and next seq.
fn result_set(mut seq: u8, cols: &[&str], rows: &[&[&str]], deprecate: bool, status: u16) -> (Vec<u8>, u8) {
    let mut v = pkt(seq, &lenenc_bytes(cols.len() as u64));
    seq += 1;
    for c in cols {
        v.extend(coldef(seq, c));
        seq += 1;
    }
    if !deprecate {
        v.extend(eof(seq, 2));
        seq += 1;
    }
    for r in rows {
        v.extend(row(seq, r));
        seq = seq.wrapping_add(1);
    }
    v.extend(if deprecate { ok_fe(seq, status) } else { eof(seq, status) });
    (v, seq.wrapping_add(1))
}

fn query(sql: &str) -> Vec<u8> {
    pkt(0, &[&[0x03][..], sql.as_bytes()].concat())
}

fn prepare_ok(id: u32, cols: u16, params: u16) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&cols.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&0u16.to_le_bytes());
    pkt(1, &p)
}

fn execute(id: u32) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&[0, 1, 3, 0, 7, 0, 0, 0]);
    pkt(0, &p)
}

/// One direction's bytes at one time.
type Script = Vec<(StreamDir, Vec<u8>)>;

/// A MariaDB session: login to `shop`, a SELECT (3 rows), an error, COM_INIT_DB,
/// COM_PING, a prepared statement (prepare / execute / close), an INSERT, COM_QUIT.
fn session(deprecate: bool) -> Script {
    let caps = BASE_CAPS | if deprecate { cap::DEPRECATE_EOF } else { 0 };
    let (rs, _) = result_set(1, &["id", "name"], &[&["1", "a"], &["2", "b"], &["3", "c"]], deprecate, 2);
    let (rs2, _) = {
        // Binary rows of the execution.
        let mut v = pkt(1, &[1]);
        v.extend(coldef(2, "name"));
        let mut seq = 3;
        if !deprecate {
            v.extend(eof(3, 2));
            seq = 4;
        }
        v.extend(pkt(seq, b"\x00\x00\x01b"));
        v.extend(if deprecate { ok_fe(seq + 1, 2) } else { eof(seq + 1, 2) });
        (v, 0)
    };
    let mut prep = prepare_ok(7, 1, 1);
    let mut seq = 2;
    prep.extend(coldef(seq, "?"));
    seq += 1;
    if !deprecate {
        prep.extend(eof(seq, 2));
        seq += 1;
    }
    prep.extend(coldef(seq, "name"));
    seq += 1;
    if !deprecate {
        prep.extend(eof(seq, 2));
    }
    vec![
        (S, greeting("5.5.5-10.11.6-MariaDB-0+deb12u1", caps | cap::DEPRECATE_EOF)),
        (C, login(caps, "app", Some("shop"))),
        (S, ok(2, 0, 2)),
        (C, query("SELECT id, name FROM t WHERE id < 4")),
        (S, rs),
        (C, query("SELECT * FROM missing")),
        (S, err(1, 1146, "42S02", "Table 'shop.missing' doesn't exist")),
        (C, pkt(0, b"\x02other")),
        (S, ok(1, 0, 2)),
        (C, pkt(0, b"\x0e")),
        (S, ok(1, 0, 2)),
        (C, pkt(0, b"\x16SELECT name FROM t WHERE id = ?")),
        (S, prep),
        (C, execute(7)),
        (S, rs2),
        (C, pkt(0, b"\x19\x07\x00\x00\x00")),
        (C, query("INSERT INTO t VALUES (4, 'secret')")),
        (S, ok(1, 1, 2)),
        (C, pkt(0, b"\x01")),
    ]
}

struct Run {
    conn: Conn,
    dec: MysqlDecoder,
    out: Vec<Exchange>,
}

impl Run {
    fn new() -> Self {
        Self::with(conn(Transport::Tcp, 3306))
    }
    fn with(conn: Conn) -> Self {
        Self { conn, dec: MysqlDecoder::new(&DecodeConfig::default()), out: Vec::new() }
    }
    fn data(&mut self, dir: StreamDir, ts: u64, d: &[u8]) {
        self.dec.on_data(dir, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
    }
    fn gap(&mut self, dir: StreamDir, ts: u64, len: u64) {
        self.dec.on_gap(dir, ts, len, &mut Emit { conn: &self.conn, out: &mut self.out });
    }
    fn close(&mut self) {
        self.dec.on_close(1 << 40, CloseReason::Fin, &mut Emit { conn: &self.conn, out: &mut self.out });
    }
    fn play(&mut self, script: &Script) {
        for (i, (dir, bytes)) in script.iter().enumerate() {
            self.data(*dir, i as u64 + 1, bytes);
        }
    }
    fn details(&self) -> Vec<&MysqlDetail> {
        self.out
            .iter()
            .map(|e| match &e.detail {
                Detail::Mysql(d) => d,
                _ => panic!("not mysql"),
            })
            .collect()
    }
    /// "command op summary ns rows affected error partial" per exchange.
    fn lines(&self) -> Vec<String> {
        self.out
            .iter()
            .zip(self.details())
            .map(|(e, d)| {
                format!(
                    "{} {} {} {} {:?} {:?} {:?} {}",
                    d.command,
                    d.operation.as_deref().unwrap_or("-"),
                    d.summary.as_deref().unwrap_or("-"),
                    d.namespace.as_deref().unwrap_or("-"),
                    d.returned_rows,
                    d.affected_rows,
                    d.error_code,
                    e.partial
                )
            })
            .collect()
    }
}

fn expected_session() -> Vec<&'static str> {
    vec![
        "COM_QUERY SELECT SELECT t shop Some(3) None None false",
        "COM_QUERY SELECT SELECT missing shop None None Some(1146) false",
        "COM_INIT_DB INIT_DB - other None None None false",
        "COM_PING PING - other None None None false",
        "COM_STMT_PREPARE PREPARE PREPARE SELECT t other None None None false",
        "COM_STMT_EXECUTE SELECT SELECT t other Some(1) None None false",
        "COM_STMT_CLOSE STMT_CLOSE - other None None None false",
        "COM_QUERY INSERT INSERT t other None Some(1) None false",
        "COM_QUIT QUIT - other None None None false",
    ]
}

#[test]
fn probes() {
    let c = conn(Transport::Tcp, 6033);
    let g = greeting("5.5.5-10.11.6-MariaDB-0+deb12u1", BASE_CAPS);
    assert_eq!(probe(&c, S, &g), Probe::Yes(95));
    assert_eq!(probe(&c, S, &g[..7]), Probe::NeedMore);
    assert_eq!(probe(&c, S, &greeting("8.0.36", BASE_CAPS)), Probe::Yes(95));
    assert_eq!(probe(&c, S, b"HTTP/1.1 200 OK\r\n"), Probe::No);
    assert_eq!(probe(&c, S, b"+OK\r\n"), Probe::No);
    // A response first, mid-connection: wait for the client's command.
    let mid = conn_with(Transport::Tcp, 6033, RoleEvidence::Port);
    assert_eq!(probe(&mid, S, &ok(1, 0, 2)), Probe::NeedMore);
    assert_eq!(probe(&c, S, &ok(1, 0, 2)), Probe::No);
    assert_eq!(probe(&mid, S, &ok(1, 0, 2)[..6]), Probe::No);
    assert_eq!(probe(&c, C, &query("select 1")), Probe::Yes(70));
    assert_eq!(probe(&c, C, &query("select 1")[..7]), Probe::NeedMore);
    assert_eq!(probe(&c, C, &query("hello world")), Probe::No);
    assert_eq!(probe(&c, C, &pkt(0, b"\x0e")), Probe::Yes(30));
    assert_eq!(probe(&c, C, &execute(1)), Probe::Yes(45));
    assert_eq!(probe(&c, C, b"GET / HTTP/1.1\r\n"), Probe::No);
    assert_eq!(probe(&c, C, b"*1\r\n$4\r\nPING\r\n"), Probe::No);
    assert_eq!(probe(&c, C, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), Probe::No);
    // Detection among all probes, on a port no hint names.
    assert_eq!(detect_stream(&c, b"", &g, false), Verdict::Detected(Protocol::Mysql));
    assert_eq!(detect_stream(&c, &query("SELECT 1"), b"", false), Verdict::Detected(Protocol::Mysql));
    assert_eq!(detect_stream(&c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", false), Verdict::Detected(Protocol::Http1));
    assert_eq!(detect_stream(&c, b"*1\r\n$4\r\nPING\r\n", b"", false), Verdict::Detected(Protocol::Redis));
}

#[test]
fn classic_eof_session() {
    let mut r = Run::new();
    r.play(&session(false));
    assert_eq!(r.lines(), expected_session());
    let d = r.details();
    assert_eq!(d[0].system, "mariadb");
    assert_eq!(d[0].server_version.as_deref(), Some("10.11.6-MariaDB-0+deb12u1"));
    assert_eq!(d[0].user.as_deref(), Some("app"));
    assert_eq!(d[0].query_masked.as_deref(), Some("SELECT id, name FROM t WHERE id < ?"));
    assert_eq!(d[1].sql_state.as_deref(), Some("42S02"));
    assert_eq!(d[1].error_message.as_deref(), Some("Table 'shop.missing' doesn't exist"));
    assert_eq!(d[5].query_raw.as_deref(), Some("SELECT name FROM t WHERE id = ?"));
    assert_eq!(d[5].statement_id, Some(7));
    assert_eq!(d[7].query_masked.as_deref(), Some("INSERT INTO t VALUES (?, ?)"));
    assert!(r.out.iter().all(|e| e.outcome == Outcome::Complete));
    // The auth response is never kept anywhere.
    assert!(!format!("{:?}", r.out).contains("SECRET"));
    assert_eq!(r.dec.stmts.len(), 0);
    assert_eq!(r.out[0].response_bytes, session(false)[4].1.len() as u64);
    assert_eq!(r.out[0].request_bytes, session(false)[3].1.len() as u64);
}

#[test]
fn deprecate_eof_session() {
    let mut r = Run::new();
    r.play(&session(true));
    assert_eq!(r.lines(), expected_session());
    assert!(r.dec.pending.is_empty());
}

#[test]
fn mysql_server_and_empty_results() {
    let mut r = Run::new();
    let (rs, _) = result_set(1, &["a"], &[], false, 2);
    r.play(&vec![
        (S, greeting("8.0.36", BASE_CAPS)),
        (C, login(BASE_CAPS & !cap::CONNECT_WITH_DB, "root", None)),
        (S, ok(2, 0, 2)),
        (C, query("select a from t where 0")),
        (S, rs),
        (C, query("USE `shop`")),
        (S, ok(1, 0, 2)),
        (C, query("show tables")),
        (S, result_set(1, &["Tables_in_shop"], &[&["t"]], false, 2).0),
    ]);
    assert_eq!(
        r.lines(),
        [
            "COM_QUERY SELECT SELECT t - Some(0) None None false",
            "COM_QUERY USE USE - None Some(0) None false",
            "COM_QUERY SHOW SHOW shop Some(1) None None false",
        ]
    );
    assert_eq!(r.details()[0].system, "mysql");
}

#[test]
fn multiple_result_sets_and_local_infile() {
    let mut r = Run::new();
    let (a, seq) = result_set(1, &["x"], &[&["1"]], false, 2 | wire::MORE_RESULTS_EXISTS);
    let (b, seq) = result_set(seq, &["y"], &[&["2"], &["3"]], false, 2 | wire::MORE_RESULTS_EXISTS);
    let mut resp = [a, b].concat();
    resp.extend(ok(seq, 0, 2));
    r.play(&vec![
        (S, greeting("10.11.6-MariaDB", BASE_CAPS)),
        (C, login(BASE_CAPS, "u", Some("d"))),
        (S, ok(2, 0, 2)),
        (C, query("CALL p()")),
        (S, resp),
        (C, query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t")),
        (S, pkt(1, b"\xfbf")),
        (C, [pkt(2, b"1\n2\n"), pkt(3, b"")].concat()),
        (S, ok(4, 2, 2)),
        (C, pkt(0, b"\x0e")),
        (S, ok(1, 0, 2)),
    ]);
    assert_eq!(
        r.lines(),
        [
            "COM_QUERY CALL CALL d Some(3) Some(0) None false",
            "COM_QUERY LOAD LOAD d None Some(2) None false",
            "COM_PING PING - d None None None false",
        ]
    );
    assert_eq!(r.out[1].request_bytes as usize, query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t").len() + 8 + 4);
}

#[test]
fn progress_reports_are_not_errors() {
    let mut r = Run::new();
    r.play(&vec![
        (S, greeting("10.11.6-MariaDB", BASE_CAPS)),
        (C, login(BASE_CAPS, "u", None)),
        (S, ok(2, 0, 2)),
        (C, query("ALTER TABLE t ADD c INT")),
        (S, pkt(1, b"\xff\xff\xff\x01\x01\x00\x10\x00\x00\x00stage")),
        (S, ok(2, 0, 2)),
    ]);
    assert_eq!(r.lines(), ["COM_QUERY ALTER TABLE ALTER TABLE t - None Some(0) None false"]);
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Wrap plain protocol bytes in compressed frames of at most `max` plain bytes (zlib when `z`).
fn compressed(plain: &[u8], max: usize, z: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in plain.chunks(max).enumerate() {
        let body = if z { zlib(c) } else { c.to_vec() };
        out.extend_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
        out.push(i as u8);
        out.extend_from_slice(&(if z { c.len() as u32 } else { 0 }).to_le_bytes()[..3]);
        out.extend(body);
    }
    out
}

fn compressed_session(max: usize) -> Script {
    let caps = BASE_CAPS | cap::COMPRESS;
    let mut s = session(false);
    s[0].1 = greeting("5.5.5-10.11.6-MariaDB", caps);
    s[1].1 = login(caps, "app", Some("shop"));
    for (i, (_, b)) in s.iter_mut().enumerate().skip(3) {
        *b = compressed(b, max, i % 2 == 0);
    }
    s
}

#[test]
fn compressed_protocol() {
    for max in [7, 50, 1 << 20] {
        let mut r = Run::new();
        r.play(&compressed_session(max));
        assert_eq!(r.lines(), expected_session(), "frames of {max}");
        assert!(r.details().iter().all(|d| d.compressed));
    }
}

#[test]
fn sixteen_megabyte_split_row() {
    // A row of one 20 MB value: the packet is 0xffffff bytes, then the rest.
    let value = 20 * 1024 * 1024;
    let mut payload = vec![0xfd];
    payload.extend_from_slice(&(value as u32).to_le_bytes()[..3]);
    payload.resize(4 + value, b'x');
    let mut resp = pkt(1, &[1]);
    resp.extend(coldef(2, "v"));
    resp.extend(eof(3, 2));
    let first = packet::MAX_PAYLOAD as usize;
    resp.extend(pkt(4, &payload[..first]));
    resp.extend(pkt(5, &payload[first..]));
    resp.extend(eof(6, 2));
    let mut r = Run::new();
    r.play(&vec![
        (S, greeting("10.11.6-MariaDB", BASE_CAPS)),
        (C, login(BASE_CAPS, "u", None)),
        (S, ok(2, 0, 2)),
        (C, query("SELECT REPEAT('x', 20971520)")),
    ]);
    for c in resp.chunks(65536) {
        r.data(S, 9, c);
    }
    assert_eq!(r.lines(), ["COM_QUERY SELECT SELECT - Some(1) None None false"]);
    assert_eq!(r.out[0].response_bytes, resp.len() as u64);
    assert!(r.dec.dirs[1].framer.at_boundary());
}

#[test]
fn joined_mid_connection() {
    let script = session(false);
    let mut r = Run::with(conn_with(Transport::Tcp, 3306, RoleEvidence::Port));
    // From the middle of the first result set.
    r.data(S, 1, &script[4].1[20..]);
    for (i, (d, b)) in script[5..].iter().enumerate() {
        r.data(*d, i as u64 + 2, b);
    }
    let lines = r.lines();
    // The session's own facts (namespace, version) are unknown; commands and results are not.
    assert_eq!(
        lines,
        [
            "COM_QUERY SELECT SELECT missing - None None Some(1146) false",
            "COM_INIT_DB INIT_DB - other None None None false",
            "COM_PING PING - other None None None false",
            "COM_STMT_PREPARE PREPARE PREPARE SELECT t other None None None false",
            "COM_STMT_EXECUTE SELECT SELECT t other Some(1) None None false",
            "COM_STMT_CLOSE STMT_CLOSE - other None None None false",
            "COM_QUERY INSERT INSERT t other None Some(1) None false",
            "COM_QUIT QUIT - other None None None false",
        ]
    );
    assert_eq!(r.details()[0].system, "mysql");
}

#[test]
fn joined_mid_connection_deprecate_eof_unknown() {
    let script = session(true);
    let mut r = Run::with(conn_with(Transport::Tcp, 3306, RoleEvidence::Port));
    for (i, (d, b)) in script[3..].iter().enumerate() {
        r.data(*d, i as u64 + 2, b);
    }
    let want: Vec<String> = expected_session().iter().map(|l| l.replace(" shop ", " - ")).collect();
    assert_eq!(r.lines(), want);
}

#[test]
fn snap_length_cut_marks_partial() {
    let script = session(false);
    let mut r = Run::new();
    for (i, (d, b)) in script.iter().enumerate() {
        let ts = i as u64 + 1;
        // Every segment longer than 40 bytes is cut after 40.
        if b.len() > 40 {
            r.data(*d, ts, &b[..40]);
            r.gap(*d, ts, (b.len() - 40) as u64);
        } else {
            r.data(*d, ts, b);
        }
    }
    r.close();
    // The login is cut too (its schema unknown); COM_INIT_DB still names one. Responses
    // of several packets lose their row counts; the ERR its message tail; single packets survive.
    assert_eq!(
        r.lines(),
        [
            "COM_QUERY SELECT SELECT t - None None None true",
            "COM_QUERY SELECT SELECT missing - None None Some(1146) true",
            "COM_INIT_DB INIT_DB - other None None None false",
            "COM_PING PING - other None None None false",
            "COM_STMT_PREPARE PREPARE PREPARE SELECT t other None None None true",
            "COM_STMT_EXECUTE SELECT SELECT t other None None None true",
            "COM_STMT_CLOSE STMT_CLOSE - other None None None false",
            "COM_QUERY INSERT INSERT t other None Some(1) None false",
            "COM_QUIT QUIT - other None None None false",
        ]
    );
    assert!(r.out.iter().all(|e| e.outcome == Outcome::Complete));
}

#[test]
fn tls_and_zstd_stop_decoding() {
    let mut r = Run::new();
    let mut ssl = (BASE_CAPS | cap::SSL).to_le_bytes().to_vec();
    ssl.resize(32, 0);
    r.play(&vec![
        (S, greeting("8.0.36", BASE_CAPS | cap::SSL)),
        (C, pkt(1, &ssl)),
        (C, vec![0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]),
    ]);
    assert_eq!(r.dec.phase, Phase::Opaque);
    assert!(r.out.is_empty());
}

#[test]
fn statement_map_is_bounded() {
    let mut r = Run::new();
    r.play(&vec![(S, greeting("10.11.6-MariaDB", BASE_CAPS)), (C, login(BASE_CAPS, "u", None)), (S, ok(2, 0, 2))]);
    for i in 0..(MAX_STMTS as u32 + 50) {
        r.data(C, 10, &pkt(0, format!("\x16SELECT {i}").as_bytes()));
        r.data(S, 11, &prepare_ok(i, 0, 0));
    }
    assert_eq!(r.dec.stmts.len(), MAX_STMTS);
    r.data(C, 12, &execute(MAX_STMTS as u32 + 49));
    r.data(S, 13, &ok(1, 0, 2));
    assert_eq!(r.details().last().unwrap().operation.as_deref(), Some("SELECT"));
}

#[test]
fn unanswered_command_times_out_or_resets() {
    let mut r = Run::new();
    r.play(&vec![(S, greeting("10.11.6-MariaDB", BASE_CAPS)), (C, login(BASE_CAPS, "u", None)), (S, ok(2, 0, 2))]);
    r.data(C, 5, &query("SELECT SLEEP(100)"));
    r.dec.on_close(9, CloseReason::Rst, &mut Emit { conn: &r.conn, out: &mut r.out });
    assert_eq!(r.out[0].outcome, Outcome::Reset);
}

fn all_segmentations(script: &Script, cuts: &[usize]) -> Vec<String> {
    let mut r = Run::new();
    for (i, (d, b)) in script.iter().enumerate() {
        let cut = cuts[i % cuts.len()].max(1);
        for c in b.chunks(cut) {
            r.data(*d, i as u64 + 1, c);
        }
    }
    r.close();
    r.lines()
}

proptest! {
    #[test]
    fn any_segmentation_gives_the_same_exchanges(cuts in proptest::collection::vec(1usize..64, 1..8), deprecate: bool) {
        let want: Vec<String> = expected_session().iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(all_segmentations(&session(deprecate), &cuts), want.clone());
        prop_assert_eq!(all_segmentations(&compressed_session(13), &cuts), want);
    }

    // Metrics only (no span shows statement texts): the same exchanges,
    // however cut, but for the masked and raw texts.
    #[test]
    fn texts_off_changes_only_the_texts(cuts in proptest::collection::vec(1usize..64, 1..8), deprecate: bool) {
        let run = |span_fields: bool| {
            let cfg = DecodeConfig { span_fields, ..DecodeConfig::default() };
            let mut r = Run { conn: conn(Transport::Tcp, 3306), dec: MysqlDecoder::new(&cfg), out: Vec::new() };
            for (i, (d, b)) in session(deprecate).iter().enumerate() {
                for c in b.chunks(cuts[i % cuts.len()].max(1)) {
                    r.data(*d, i as u64 + 1, c);
                }
            }
            r.close();
            r.out
        };
        let (with, without) = (run(true), run(false));
        prop_assert_eq!(with.len(), expected_session().len());
        let view = |exs: Vec<Exchange>, drop_texts: bool| -> Vec<String> {
            exs.into_iter()
                .map(|mut e| {
                    if let Detail::Mysql(d) = &mut e.detail {
                        if drop_texts {
                            d.query_masked = None;
                            d.query_raw = None;
                        }
                    }
                    format!("{e:?}")
                })
                .collect()
        };
        prop_assert!(with.iter().any(|e| matches!(&e.detail, Detail::Mysql(d) if d.query_masked.is_some())));
        prop_assert_eq!(view(without, false), view(with, true));
    }

    #[test]
    fn arbitrary_input_never_panics(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..400), 0..40),
        prefix in 0usize..6,
        mid in any::<bool>(),
    ) {
        let c = if mid { conn_with(Transport::Tcp, 3306, RoleEvidence::Port) } else { conn(Transport::Tcp, 3306) };
        let mut r = Run::with(c);
        // Sometimes a valid (compressed) start, so the fuzz reaches the later states.
        let script = if prefix % 2 == 0 { session(false) } else { compressed_session(9) };
        for (i, (d, b)) in script.iter().take(prefix * 2).enumerate() {
            r.data(*d, i as u64, b);
        }
        for (i, (up, bytes, gap)) in chunks.iter().enumerate() {
            let dir = if *up { C } else { S };
            let _ = probe(&r.conn, dir, bytes);
            if *gap > 300 {
                r.gap(dir, i as u64, *gap);
            } else {
                r.data(dir, i as u64, bytes);
            }
            prop_assert!(r.dec.dirs.iter().all(|d| d.resync.len() <= r.dec.max_buf && d.plain.capacity() <= 2 * INFLATE_CHUNK));
            prop_assert!(r.dec.dirs.iter().all(|d| d.framer.spare.bytes() <= SPARE_BUFS * SPARE_BUF_BYTES));
            prop_assert!(r.dec.pending.len() <= DecodeConfig::default().max_pending_per_conn);
        }
        r.dec.expire(u64::MAX / 2, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.close();
        prop_assert!(r.dec.pending.is_empty());
    }

    #[test]
    fn packet_soup_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just(ok(1, 3, 2)), Just(eof(2, 8)), Just(err(1, 1064, "42000", "syntax")), Just(pkt(1, &[2])),
            Just(coldef(2, "c")), Just(row(3, &["v"])), Just(query("SELECT 1")), Just(pkt(0, b"\x0e")),
            Just(prepare_ok(1, 2, 2)), Just(execute(1)), Just(pkt(1, b"\xfbfile")), Just(ok_fe(5, 8)),
            Just(pkt(0, b"\x1c\x01\x00\x00\x00\x05\x00\x00\x00")), Just(pkt(0, b"\x04t\x00")),
        ], 0..60),
        dirs in proptest::collection::vec(any::<bool>(), 60),
        cut in 1usize..50,
    ) {
        let mut r = Run::new();
        r.play(&session(false)[..3].to_vec());
        for (i, p) in parts.iter().enumerate() {
            let d = if dirs[i] { C } else { S };
            for c in p.chunks(cut) {
                r.data(d, i as u64, c);
            }
        }
        r.close();
        prop_assert!(r.dec.pending.is_empty());
    }
}

#[test]
fn mid_connection_response_waits_for_the_command() {
    let resp = hex::decode("02000001010121000002036465660000000a4441544142415345282900000c2100c0000000fd000027000005000003fe00000200050000040473686f7005000005fe00000200").unwrap();
    let mid = conn_with(Transport::Tcp, 3306, RoleEvidence::Port);
    assert_eq!(probe(&mid, S, &resp), Probe::NeedMore);
    assert_eq!(detect_stream(&mid, b"", &resp, false), Verdict::Wait);
    // COM_INIT_DB alone is weak evidence (other probes still wait); the next command decides.
    let up = hex::decode("06000000026f746865721b0000000353454c45435420434f554e54282a292046524f4d206e6f746573").unwrap();
    assert_eq!(detect_stream(&mid, &up[..10], &resp, false), Verdict::Wait);
    assert_eq!(detect_stream(&mid, &up, &resp, false), Verdict::Detected(Protocol::Mysql));
}

#[test]
fn span_masks_by_default_and_names_by_summary() {
    use crate::otel::span::{Kind, NamingOptions};
    let mut r = Run::new();
    r.play(&session(false));
    let get =
        |p: &crate::otel::span::SpanParts, k: &str| p.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    let d = r.details();
    let masked = semconv::span_parts(&r.out[7], d[7], Kind::Client, &NamingOptions::default(), false);
    assert_eq!(masked.name, "INSERT t");
    assert_eq!(get(&masked, "db.query.text").as_deref(), Some("\"INSERT INTO t VALUES (?, ?)\""));
    assert_eq!(get(&masked, "db.system.name").as_deref(), Some("mariadb"));
    let opts = NamingOptions { unmask_db_statements: true, ..NamingOptions::default() };
    let raw = semconv::span_parts(&r.out[7], d[7], Kind::Client, &opts, false);
    assert!(get(&raw, "db.query.text").unwrap().contains("secret"));
    // The error: status code, error.type, ERROR with the server's message; in the histogram too.
    let e = semconv::span_parts(&r.out[1], d[1], Kind::Client, &NamingOptions::default(), false);
    assert_eq!(e.name, "SELECT missing");
    assert_eq!(get(&e, "db.response.status_code").as_deref(), Some("1146"));
    assert_eq!(e.error.as_deref(), Some("Table 'shop.missing' doesn't exist"));
    let (_, m) = e.metric.unwrap();
    assert!(m.iter().any(|(k, _)| *k == "error.type") && !m.iter().any(|(k, _)| *k == "db.query.text"));
    let rows = semconv::span_parts(&r.out[0], d[0], Kind::Client, &NamingOptions::default(), false);
    assert_eq!(get(&rows, "db.response.returned_rows").as_deref(), Some("3"));
    let ping = semconv::span_parts(&r.out[3], d[3], Kind::Client, &NamingOptions::default(), false);
    assert_eq!(ping.name, "PING other");
    // CLIENT metrics name the server when configured to, as the span does;
    // reduced (no span exported) the metric and the error are the same.
    let opts = NamingOptions { metrics_server_address: true, ..Default::default() };
    let e = semconv::span_parts(&r.out[1], d[1], Kind::Client, &opts, false);
    let m = e.metric.clone().unwrap().1;
    for key in ["server.address", "server.port"] {
        assert_eq!(m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string()), get(&e, key), "{key}");
    }
    let reduced = semconv::span_parts(&r.out[1], d[1], Kind::Client, &opts, true);
    assert_eq!(reduced.metric.unwrap().1, m);
    assert!(reduced.error.is_some() && reduced.attrs.is_empty());
}
