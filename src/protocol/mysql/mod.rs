//! MySQL / MariaDB client/server protocol.
//!
//! The server speaks first (its greeting names the server: MariaDB says so
//! in its version string), the client answers with its login (user, schema,
//! capabilities; the auth response is skipped, never kept), then commands
//! follow. Every command packet has sequence id 0 and its response's packets
//! continue the sequence, so a client packet with sequence id 0 starts an
//! exchange and anything else in either direction belongs to the one in
//! flight. Responses are read by shape: OK / ERR / EOF, result sets (column
//! count, column definitions, EOF unless CLIENT_DEPRECATE_EOF, rows, a
//! terminator whose status flags may announce another result set), the
//! prepared-statement OK, LOCAL INFILE. Prepared statement ids are mapped to
//! their text (bounded per connection) so executions carry it.
//!
//! Framing ([`packet`]): 16 MB splits are joined, payloads are skipped past
//! a bounded head, and the compressed protocol (zlib, negotiated by both
//! sides' CLIENT_COMPRESS, starting after the login's OK) is inflated in
//! bounded chunks. Lost bytes inside a payload cost only that payload;
//! elsewhere the direction resynchronises on the next plausible packet
//! header and the exchange in flight is marked partial.
use super::resync::Resync;
use super::sql;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, RoleEvidence, StreamDir, Transport};
use crate::otel::attr::Str;
use crate::protocol::exchange::{Detail, Exchange, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

mod detail;
pub mod packet;
pub mod semconv;
#[cfg(test)]
mod tests;
pub mod wire;

pub use detail::MysqlDetail;
use packet::{Framer, Inflater, Inner, Packet};
use wire::cap;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "mysql")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "mysql")]));
static UNPAIRED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unpaired_responses", &[("protocol", "mysql")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "mysql")]));
static STMTS_EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.statements_evicted", &[("protocol", "mysql")]));
/// Connections whose traffic cannot be read (TLS, zstd compression, replication stream).
static OPAQUE: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.undecodable_connections", &[("protocol", "mysql")]));

/// Payload bytes kept of a client packet (statement text and its prefix).
/// Longest statement text read (bytes); the summariser masks at most this much.
const MAX_TEXT: usize = 2048;
const KEEP_REQUEST: usize = MAX_TEXT + 64;
/// Payload bytes kept of a server packet (greeting, OK, ERR, counts; rows need one byte).
const KEEP_RESPONSE: usize = 640;
/// Prepared statements remembered per connection.
const MAX_STMTS: usize = 128;
/// Plain bytes inflated per step of the compressed protocol.
const INFLATE_CHUNK: usize = 16 * 1024;
/// Largest packet length believed by the probe (a statement up to 16 MB, or a split).
const MAX_PROBE_LEN: u32 = packet::MAX_PAYLOAD;

/// SQL statement words a COM_QUERY may start with (probe evidence).
const SQL_VERBS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "SET",
    "SHOW",
    "USE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "START",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "RENAME",
    "CALL",
    "WITH",
    "EXPLAIN",
    "DESCRIBE",
    "DESC",
    "GRANT",
    "REVOKE",
    "LOCK",
    "UNLOCK",
    "FLUSH",
    "KILL",
    "ANALYZE",
    "OPTIMIZE",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DO",
    "LOAD",
    "SAVEPOINT",
    "RELEASE",
    "XA",
    "HANDLER",
    "CHECK",
    "CHECKSUM",
    "REPAIR",
    "TABLE",
    "VALUES",
    "RESET",
    "PURGE",
];

/// Does the first data of a connection look like MySQL? A server greeting
/// (protocol 10, printable version) is near-certain; a client command packet
/// (sequence id 0, plausible length, a known command whose statement starts
/// with an SQL word) covers a connection joined after its start.
pub fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    let Some(h) = data.get(..4) else {
        return if data.len() >= 4 { Probe::No } else { Probe::NeedMore };
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]);
    let seq = h[3];
    match dir {
        StreamDir::ToClient => {
            if seq != 0 && conn.evidence != RoleEvidence::Syn && len > 0 && packet::chains(data, 0, |_, _| true) {
                // Joined mid-connection at a response: packets that chain exactly
                // are no evidence yet, but the client's next command will be.
                return Probe::NeedMore;
            }
            if seq != 0 || !(20..=1024).contains(&len) {
                return Probe::No;
            }
            let Some(&proto) = data.get(4) else { return Probe::NeedMore };
            if proto != 10 {
                return Probe::No;
            }
            let v = &data[5..];
            match v.iter().take(65).position(|&c| c == 0) {
                Some(0) => Probe::No,
                Some(end) if v[0].is_ascii_digit() && v[..end].iter().all(|c| c.is_ascii_graphic() || *c == b' ') => {
                    Probe::Yes(95)
                }
                Some(_) => Probe::No,
                None if v.len() < 65
                    && v.iter().all(|c| c.is_ascii_graphic())
                    && v.first().is_none_or(u8::is_ascii_digit) =>
                {
                    Probe::NeedMore
                }
                None => Probe::No,
            }
        }
        StreamDir::ToServer => {
            if seq != 0 || len == 0 || len >= MAX_PROBE_LEN {
                return Probe::No;
            }
            let Some(&cmd) = data.get(4) else { return Probe::NeedMore };
            // The packet ends where the data does, or where the next packet starts.
            let exact = packet::chains(data, 0, |_, _| true);
            match cmd {
                0x03 | 0x16 => {
                    let text = &data[5..data.len().min(4 + len as usize)];
                    let start = text.iter().position(|c| !c.is_ascii_whitespace() && *c != b'(').unwrap_or(text.len());
                    let word: Vec<u8> =
                        text[start..].iter().take(12).take_while(|c| c.is_ascii_alphabetic()).copied().collect();
                    let complete = start + word.len() < text.len();
                    if !complete {
                        // The word may go on (more bytes to come), or the packet ends here.
                        return if text.len() < len as usize - 1 && word.len() < 12 {
                            Probe::NeedMore
                        } else {
                            Probe::No
                        };
                    }
                    let w = String::from_utf8_lossy(&word).to_ascii_uppercase();
                    if SQL_VERBS.contains(&w.as_str()) || text[start..].starts_with(b"/*") {
                        Probe::Yes(if exact { 70 } else { 62 })
                    } else {
                        Probe::No
                    }
                }
                // COM_PING / COM_QUIT / COM_STATISTICS / COM_RESET_CONNECTION: one byte.
                0x01 | 0x09 | 0x0e | 0x1f if len == 1 && exact => Probe::Yes(30),
                0x02 if exact && data[5..data.len().min(4 + len as usize)].iter().all(|c| c.is_ascii_graphic()) => {
                    Probe::Yes(40)
                }
                // COM_STMT_EXECUTE: id, flags (cursor type), iteration count 1.
                0x17 if exact && len >= 10 && data[9] <= 0x0f && data[10..14] == [1, 0, 0, 0] => Probe::Yes(45),
                _ => Probe::No,
            }
        }
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(MysqlDecoder::new(cfg))
}

/// MySQL / MariaDB. The registry entry.
pub struct Mysql;

impl super::registry::L7Protocol for Mysql {
    const NAME: &'static str = "mysql";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        port == 3306
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server greeting.
    Greeting,
    /// Waiting for the client's handshake response.
    Login,
    /// Authentication round trips until the server's OK (or ERR).
    Auth,
    Command,
    /// Nothing more can be read (TLS, zstd, replication stream, failed login).
    Opaque,
}

/// How the response to a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// No response (COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    NoResponse,
    /// The first packet ends it.
    Single,
    /// Until OK or ERR (COM_CHANGE_USER: auth packets in between).
    OkErr,
    /// Result: OK, ERR, LOCAL INFILE or a result set.
    Result,
    /// This many column definitions still to come.
    Cols(u64),
    /// After the column definitions: an EOF, or (DEPRECATE_EOF) rows already.
    ColsEof,
    Rows,
    /// LOCAL INFILE: the client sends the file, then the server's OK/ERR.
    Infile,
    /// COM_STMT_PREPARE: its OK.
    Prepare,
    /// Parameter or column definitions of a prepared statement, then `then` more.
    PrepDefs {
        left: u64,
        then: u64,
    },
    /// The EOF after a block of definitions (absent with DEPRECATE_EOF).
    PrepEof {
        then: u64,
    },
    /// COM_FIELD_LIST: column definitions until EOF.
    Fields,
    /// COM_STMT_FETCH: rows until EOF.
    FetchRows,
    Done,
}

/// A statement's texts and shape, shared by its exchanges (a prepared
/// statement's by its executions): clones are reference counts.
#[derive(Debug)]
struct Stmt {
    shape: sql::Shape,
    /// None when statement texts are not kept (metrics only).
    masked: Option<Str>,
    raw: Option<Str>,
}

/// The summary and texts of a COM_QUERY / COM_STMT_PREPARE text; `cut`: the
/// text was longer than captured. Texts only when spans may show them.
fn statement(raw: &str, cut: bool, texts: bool) -> Stmt {
    let (shape, masked_text) = sql::summarize_shared(raw, sql::Dialect::MySql, texts);
    let (mut masked, mut unmasked) = (None, None);
    if texts {
        let ellipsis = if cut && !masked_text.ends_with("...") { "..." } else { "" };
        // Password-setting statements keep their literals masked even in the raw text.
        let r = sql::unmasked_text(raw, &masked_text);
        unmasked = Some(Str::shared(&format!("{r}{ellipsis}")));
        masked = Some(Str::shared(&format!("{masked_text}{ellipsis}")));
    }
    Stmt { shape, masked, raw: unmasked }
}

#[derive(Debug)]
struct Cmd {
    code: u8,
    ts: u64,
    end_ts: u64,
    req_bytes: u64,
    resp_bytes: u64,
    /// Sequence id of the request's last packet: the response continues from it.
    last_seq: u8,
    st: St,
    resp_started: bool,
    partial: bool,
    detail: MysqlDetail,
    rows: Option<u64>,
    affected: Option<u64>,
    /// COM_STMT_PREPARE: its text, stored under the id its OK returns.
    prepare: Option<Arc<Stmt>>,
    /// COM_INIT_DB / USE / COM_CHANGE_USER: the schema selected on success.
    new_schema: Option<Str>,
}

struct Dir {
    framer: Framer,
    inflater: Option<Inflater>,
    resync: Resync,
    plain: Vec<u8>,
}

impl Dir {
    fn new(keep: usize) -> Self {
        Self { framer: Framer::new(keep), inflater: None, resync: Resync::default(), plain: Vec::new() }
    }
}

pub struct MysqlDecoder {
    cfg: DecodeConfig,
    started: bool,
    phase: Phase,
    system: &'static str,
    server_version: Option<Str>,
    server_caps: Option<u32>,
    deprecate_eof: Option<bool>,
    compress: bool,
    namespace: Option<Str>,
    user: Option<Str>,
    client_caps: u32,
    dirs: [Dir; 2],
    pending: VecDeque<Cmd>,
    stmts: VecDeque<(u32, Arc<Stmt>)>,
    max_buf: usize,
}

fn op_of_command(name: &str) -> Str {
    Str::copy(name.strip_prefix("COM_").unwrap_or(name))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl MysqlDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            started: false,
            phase: Phase::Greeting,
            system: "mysql",
            server_version: None,
            server_caps: None,
            deprecate_eof: None,
            compress: false,
            namespace: None,
            user: None,
            client_caps: 0,
            dirs: [Dir::new(KEEP_REQUEST), Dir::new(KEEP_RESPONSE)],
            pending: VecDeque::new(),
            stmts: VecDeque::new(),
            max_buf: cfg.max_buffer_per_dir.max(1024),
        }
    }

    fn start(&mut self, conn: &Conn) {
        if !self.started {
            self.started = true;
            if conn.evidence != RoleEvidence::Syn {
                // Joined mid-connection: the first bytes may be the middle of a packet.
                self.phase = Phase::Command;
                for d in &mut self.dirs {
                    d.framer.lost = true;
                }
            }
        }
    }

    // ---- bytes -> packets -------------------------------------------------

    fn feed(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        let d = dir.index();
        let mut data = data;
        while !data.is_empty() && self.phase != Phase::Opaque {
            if self.dirs[d].inflater.is_some() {
                self.feed_compressed(dir, ts, data, out);
                return;
            }
            let used = self.feed_plain(dir, ts, data, true, out);
            data = &data[used..];
        }
    }

    /// Plain packets from `data`; with `raw`, stops where compression starts
    /// (returns the bytes used).
    fn feed_plain(&mut self, dir: StreamDir, ts: u64, data: &[u8], raw: bool, out: &mut Emit) -> usize {
        let d = dir.index();
        let mut pos = 0;
        while pos < data.len() && self.phase != Phase::Opaque {
            if raw && self.dirs[d].inflater.is_some() {
                return pos;
            }
            if self.dirs[d].framer.lost {
                let rest = &data[pos..];
                pos = data.len();
                if dir == StreamDir::ToClient && !self.pending.iter().any(|c| !c.resp_started) {
                    // No command waits for a response: nothing to pair these bytes with.
                    RESYNC_SKIPPED.add(self.dirs[d].resync.len() as u64 + rest.len() as u64);
                    self.dirs[d].resync.clear();
                    continue;
                }
                let want_seq = self.pending.iter().find(|c| !c.resp_started).map(|c| c.last_seq.wrapping_add(1));
                let found = self.dirs[d]
                    .resync
                    .push(rest, self.max_buf, &RESYNC_SKIPPED, |buf| find_packet(dir, buf, want_seq));
                if let Some((buf, at)) = found {
                    self.dirs[d].framer.reset();
                    self.feed_plain(dir, ts, &buf[at..], false, out);
                } else if dir == StreamDir::ToClient {
                    // The server answered where no packet start can be found: the
                    // oldest waiting command has a response, unreadable (partial).
                    if let Some(c) = self.pending.iter_mut().find(|c| !c.resp_started) {
                        c.resp_started = true;
                        c.partial = true;
                        c.end_ts = ts;
                        c.resp_bytes += rest.len() as u64;
                    }
                }
                continue;
            }
            let (n, p) = self.dirs[d].framer.feed(ts, &data[pos..]);
            pos += n;
            if let Some(p) = p {
                self.packet(dir, ts, &p, out);
                // Its buffer serves the next packet of this direction.
                self.dirs[d].framer.recycle(p.head);
            }
        }
        pos
    }

    fn feed_compressed(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        let d = dir.index();
        let mut data = data;
        let mut plain = std::mem::take(&mut self.dirs[d].plain);
        while !data.is_empty() && self.phase != Phase::Opaque {
            let Some(inf) = self.dirs[d].inflater.as_mut() else { break };
            if inf.lost {
                let found = self.dirs[d].resync.push(data, self.max_buf, &RESYNC_SKIPPED, packet::find_comp_frame);
                data = &[];
                if let Some((buf, at)) = found {
                    if let Some(inf) = self.dirs[d].inflater.as_mut() {
                        inf.found();
                    }
                    self.dirs[d].plain = plain;
                    self.feed_compressed(dir, ts, &buf[at..], out);
                    return;
                }
                continue;
            }
            plain.clear();
            let (n, ev) = inf.feed(data, &mut plain, INFLATE_CHUNK);
            let errors = std::mem::take(&mut inf.errors);
            if errors > 0 {
                PARSE_ERRORS.add(errors);
            }
            data = &data[n..];
            if !plain.is_empty() {
                self.feed_plain(dir, ts, &plain, false, out);
            }
            match ev {
                Inner::None => {}
                Inner::Gap(k) => self.plain_gap(dir, ts, k, out),
                Inner::Lost => self.plain_gap(dir, ts, u64::MAX, out),
            }
        }
        plain.clear();
        self.dirs[d].plain = plain;
    }

    fn plain_gap(&mut self, dir: StreamDir, ts: u64, len: u64, out: &mut Emit) {
        let d = dir.index();
        let was_lost = self.dirs[d].framer.lost;
        // Bytes before and after a gap are not contiguous: a resync starts over.
        self.dirs[d].resync.clear();
        if let Some(p) = self.dirs[d].framer.gap(len) {
            self.packet(dir, ts, &p, out);
        }
        if self.dirs[d].framer.lost && !was_lost {
            PARSE_ERRORS.inc();
            self.lost_sync(dir, ts);
        }
    }

    /// Framing of `dir` was lost: the exchange reading it is partial.
    fn lost_sync(&mut self, dir: StreamDir, ts: u64) {
        match dir {
            StreamDir::ToServer => {
                if let Some(c) = self.pending.back_mut() {
                    c.partial = true;
                }
            }
            StreamDir::ToClient => {
                if let Some(c) = self.pending.iter_mut().find(|c| c.resp_started || c.st != St::Done) {
                    c.partial = true;
                    c.resp_started = true;
                    c.end_ts = c.end_ts.max(ts);
                }
            }
        }
        if matches!(self.phase, Phase::Greeting | Phase::Login | Phase::Auth) {
            // The login was not read whole: its flags (compression, EOF style) are uncertain.
            self.phase = Phase::Command;
        }
    }

    // ---- packets ----------------------------------------------------------

    fn packet(&mut self, dir: StreamDir, ts: u64, p: &Packet, out: &mut Emit) {
        match (self.phase, dir) {
            (Phase::Greeting, StreamDir::ToClient) => {
                if let Some(g) = (p.seq == 0).then(|| wire::greeting(&p.head)).flatten() {
                    self.system = if g.mariadb() { "mariadb" } else { "mysql" };
                    self.server_version = Some(Str::shared(sql::truncate_str(g.display_version(), 64)));
                    self.server_caps = Some(g.capabilities);
                    self.phase = Phase::Login;
                } else if p.first() == Some(0xff) {
                    // Refused before the login (too many connections, host blocked).
                    self.phase = Phase::Opaque;
                } else {
                    PARSE_ERRORS.inc();
                }
            }
            (Phase::Greeting, StreamDir::ToServer) => {
                // Greeting not seen: a command says the login is over.
                if p.seq == 0 {
                    self.phase = Phase::Command;
                    self.client_packet(ts, p, out);
                } else {
                    self.login(p);
                }
            }
            (Phase::Login, StreamDir::ToServer) => self.login(p),
            (Phase::Login | Phase::Auth, StreamDir::ToClient) => match p.first() {
                Some(0x00) if self.phase == Phase::Auth => {
                    self.phase = Phase::Command;
                    if self.compress {
                        for d in &mut self.dirs {
                            d.inflater = Some(Inflater::default());
                        }
                    }
                }
                Some(0xff) => self.phase = Phase::Opaque,
                _ => {}
            },
            (Phase::Auth, StreamDir::ToServer) => {}
            (Phase::Command, StreamDir::ToServer) => self.client_packet(ts, p, out),
            (Phase::Command, StreamDir::ToClient) => self.server_packet(ts, p, out),
            (Phase::Opaque, _) => {}
        }
    }

    fn login(&mut self, p: &Packet) {
        let Some(l) = wire::handshake_response(&p.head) else {
            PARSE_ERRORS.inc();
            self.phase = Phase::Auth;
            return;
        };
        if l.ssl_request {
            // TLS from here on.
            OPAQUE.inc();
            self.phase = Phase::Opaque;
            return;
        }
        let server = self.server_caps.unwrap_or(l.capabilities);
        let both = server & l.capabilities;
        if both & cap::ZSTD != 0 && both & cap::COMPRESS == 0 {
            OPAQUE.inc();
            self.phase = Phase::Opaque;
            return;
        }
        self.client_caps = l.capabilities;
        self.deprecate_eof = Some(both & cap::DEPRECATE_EOF != 0);
        self.compress = both & cap::COMPRESS != 0;
        self.user = l.user.map(|u| Str::shared(sql::truncate_str(&u, 128)));
        if let Some(db) = l.database {
            self.namespace = Some(Str::shared(sql::truncate_str(&db, 128)));
        }
        self.phase = Phase::Auth;
    }

    fn client_packet(&mut self, ts: u64, p: &Packet, out: &mut Emit) {
        if p.seq != 0 {
            // LOCAL INFILE data, auth data of COM_CHANGE_USER: part of the exchange in flight.
            if let Some(c) = self.pending.back_mut() {
                c.req_bytes += p.wire;
                c.last_seq = p.last_seq;
                c.partial |= p.cut;
            }
            return;
        }
        self.settle(out);
        let Some(&code) = p.head.first() else {
            PARSE_ERRORS.inc();
            return;
        };
        let name = wire::command_name(code).map_or_else(|| Str::compact(format!("COM_0x{code:02x}")), Str::lit);
        let mut detail = MysqlDetail {
            system: Str::lit(self.system),
            server_version: self.server_version.clone(),
            operation: Some(op_of_command(&name)),
            command: name,
            namespace: self.namespace.clone(),
            user: self.user.clone(),
            compressed: self.compress,
            ..Default::default()
        };
        let body = &p.head[1..];
        let text_cut = p.len > p.head.len() as u64;
        let mut prepare = None;
        let mut new_schema = None;
        let st = match code {
            0x03 | 0x16 => {
                let text = self.statement_text(body);
                match text {
                    Some(raw) => {
                        let st = statement(&raw, text_cut, self.cfg.span_fields);
                        fill_statement(&mut detail, &st);
                        // Only a statement whose operation is USE can select a schema
                        // (its first word: no second tokenizer pass for the others).
                        if code == 0x03 {
                            if st.shape.operation.as_deref() == Some("USE") {
                                new_schema = sql::use_target(&raw).map(Str::compact);
                            }
                        } else {
                            detail.operation = Some(Str::lit("PREPARE"));
                            detail.summary = st.shape.summary.as_ref().map(|s| Str::compact(format!("PREPARE {s}")));
                            prepare = Some(Arc::new(st));
                        }
                    }
                    None if code == 0x03 => detail.operation = None,
                    None => {}
                }
                if code == 0x03 {
                    St::Result
                } else {
                    St::Prepare
                }
            }
            0x17 | 0x18 | 0x19 | 0x1a | 0x1c | 0xfa => {
                let id = le_u32(body, 0);
                detail.statement_id = id;
                if let Some(s) = id.and_then(|id| self.stmt(id)) {
                    if code == 0x17 || code == 0xfa {
                        fill_statement(&mut detail, &s);
                    } else {
                        detail.collection = s.shape.collection.clone();
                    }
                }
                if code == 0x19 {
                    if let Some(id) = id {
                        self.stmts.retain(|(k, _)| *k != id);
                    }
                }
                match code {
                    0x17 | 0xfa => St::Result,
                    0x18 | 0x19 => St::NoResponse,
                    0x1c => St::FetchRows,
                    _ => St::Single,
                }
            }
            0x02 => {
                let db = String::from_utf8_lossy(body);
                let db = Str::shared(sql::truncate_str(&db, 128));
                detail.namespace = Some(db.clone());
                new_schema = Some(db);
                St::Single
            }
            0x04 => {
                let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                detail.collection = Some(Str::shared(sql::truncate_str(&String::from_utf8_lossy(&body[..end]), 128)));
                St::Fields
            }
            0x11 => {
                new_schema = change_user_schema(body, self.client_caps).map(Str::compact);
                St::OkErr
            }
            0x01 => St::NoResponse,
            0x0a => St::Result,
            0x12 | 0x1e => {
                // Replication: the server streams binlog events from here on.
                OPAQUE.inc();
                self.phase = Phase::Opaque;
                St::NoResponse
            }
            _ => St::Single,
        };
        let cmd = Cmd {
            code,
            ts: p.start_ts,
            end_ts: ts,
            req_bytes: p.wire,
            resp_bytes: 0,
            last_seq: p.last_seq,
            st,
            resp_started: false,
            partial: p.cut,
            detail,
            rows: None,
            affected: None,
            prepare,
            new_schema,
        };
        if st == St::NoResponse {
            self.emit(cmd, Outcome::Complete, out);
            return;
        }
        if self.pending.len() >= self.cfg.max_pending_per_conn.max(1) {
            if let Some(old) = self.pending.pop_front() {
                EVICTED.inc();
                self.emit(old, Outcome::Timeout, out);
            }
        }
        self.pending.push_back(cmd);
    }

    /// Statement text of a COM_QUERY / COM_STMT_PREPARE body (after query
    /// attributes, MySQL 8's CLIENT_QUERY_ATTRIBUTES, when there are none).
    fn statement_text<'b>(&self, body: &'b [u8]) -> Option<std::borrow::Cow<'b, str>> {
        const QUERY_ATTRIBUTES: u32 = 0x0800_0000;
        let mut at = 0;
        if self.client_caps & QUERY_ATTRIBUTES != 0 && self.server_caps.unwrap_or(0) & QUERY_ATTRIBUTES != 0 {
            let params = wire::lenenc(body, &mut at)?;
            wire::lenenc(body, &mut at)?;
            if params != 0 {
                return None;
            }
        }
        let t = body.get(at..)?;
        let t = &t[..t.len().min(MAX_TEXT)];
        Some(crate::protocol::span_common::lossy_text(t))
    }

    fn stmt(&self, id: u32) -> Option<Arc<Stmt>> {
        self.stmts.iter().find(|(k, _)| *k == id).map(|(_, s)| s.clone())
    }

    /// A new command: exchanges whose response cannot go on are finished.
    fn settle(&mut self, out: &mut Emit) {
        let server_lost = self.dirs[1].framer.lost || self.dirs[1].inflater.as_ref().is_some_and(|i| i.lost);
        while let Some(c) = self.pending.front() {
            // With framing lost its end was not seen; with DEPRECATE_EOF unknown
            // (joined mid-connection) a prepared statement's definitions may have ended it.
            let finished = (server_lost && c.resp_started)
                || matches!(c.st, St::PrepEof { then: 0 }) && self.deprecate_eof.is_none();
            if !finished {
                break;
            }
            let Some(mut c) = self.pending.pop_front() else { break };
            c.partial |= server_lost;
            self.finish(c, out);
        }
        if server_lost {
            self.dirs[1].resync.clear();
        }
    }

    fn server_packet(&mut self, ts: u64, p: &Packet, out: &mut Emit) {
        loop {
            let Some(c) = self.pending.front_mut() else {
                if p.seq != 0 {
                    UNPAIRED.inc();
                }
                return;
            };
            if !c.resp_started {
                c.resp_started = true;
                if p.seq != c.last_seq.wrapping_add(1) {
                    // Not the start of this command's response: something was missed.
                    PARSE_ERRORS.inc();
                    c.partial = true;
                }
            }
            match step(c, p, self.deprecate_eof) {
                Step::Continue => {
                    c.resp_bytes += p.wire;
                    c.end_ts = ts;
                    c.partial |= p.cut;
                    return;
                }
                Step::Done => {
                    c.resp_bytes += p.wire;
                    c.end_ts = ts;
                    c.partial |= p.cut;
                    let Some(c) = self.pending.pop_front() else { return };
                    self.finish(c, out);
                    return;
                }
                Step::NotMine => {
                    let Some(c) = self.pending.pop_front() else { return };
                    self.finish(c, out);
                }
            }
        }
    }

    /// A command answered: connection state it changes, then its exchange.
    fn finish(&mut self, mut c: Cmd, out: &mut Emit) {
        if c.detail.error_code.is_none() {
            // A statement id comes from the first response packet: known even if the rest was cut.
            if let (Some(stmt), Some(id)) = (c.prepare.take(), c.detail.statement_id) {
                self.stmts.retain(|(k, _)| *k != id);
                if self.stmts.len() >= MAX_STMTS {
                    self.stmts.pop_front();
                    STMTS_EVICTED.inc();
                }
                self.stmts.push_back((id, stmt));
            }
        }
        if c.detail.error_code.is_none() && !c.partial {
            if let Some(db) = c.new_schema.take() {
                self.namespace = Some(db);
            }
            if matches!(c.code, 0x11 | 0x1f) {
                // COM_CHANGE_USER / COM_RESET_CONNECTION drop the session's statements.
                self.stmts.clear();
            }
        }
        self.emit(c, Outcome::Complete, out);
    }

    fn emit(&self, c: Cmd, outcome: Outcome, out: &mut Emit) {
        let mut detail = c.detail;
        if !c.partial {
            detail.returned_rows = c.rows;
        }
        detail.affected_rows = c.affected;
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Mysql,
            start_ns: c.ts,
            end_ns: c.end_ts.max(c.ts),
            request_bytes: c.req_bytes,
            response_bytes: c.resp_bytes,
            outcome,
            partial: c.partial,
            detail: Detail::Mysql(detail),
        });
    }
}

fn fill_statement(d: &mut MysqlDetail, st: &Stmt) {
    d.operation = st.shape.operation.clone();
    d.collection = st.shape.collection.clone();
    d.summary = st.shape.summary.clone();
    d.query_masked = st.masked.clone();
    d.query_raw = st.raw.clone();
}

/// The schema COM_CHANGE_USER selects: user, auth response, then schema.
fn change_user_schema(body: &[u8], caps: u32) -> Option<String> {
    let mut at = body.iter().position(|&c| c == 0)? + 1;
    if caps & cap::SECURE_CONNECTION != 0 {
        at += 1 + *body.get(at)? as usize;
    } else {
        at += body.get(at..)?.iter().position(|&c| c == 0)? + 1;
    }
    let rest = body.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    (end > 0).then(|| sql::truncate_str(&String::from_utf8_lossy(&rest[..end]), 128).to_string())
}

enum Step {
    Continue,
    Done,
    /// The command's response had already ended: the packet is the next one's.
    NotMine,
}

/// Advance `c`'s response by one packet.
fn step(c: &mut Cmd, p: &Packet, deprecate_eof: Option<bool>) -> Step {
    let first = p.first();
    let single = p.single();
    // An ERR ends any response; MariaDB's progress reports (code 0xffff) are not errors.
    if first == Some(0xff) && single && !matches!(c.st, St::Single) {
        if let Some(e) = wire::err(&p.head) {
            if e.code == wire::PROGRESS_REPORT {
                return Step::Continue;
            }
            if matches!(c.st, St::PrepEof { .. }) {
                return Step::NotMine;
            }
            set_error(c, e);
            return Step::Done;
        }
    }
    let terminator = first == Some(0xfe) && single;
    // A short 0xfe packet is an EOF; an OK with a 0xfe header (DEPRECATE_EOF) is at least 7 bytes.
    let eof = terminator && p.len < 7;
    match c.st {
        St::NoResponse | St::Done => Step::NotMine,
        St::Single => {
            // An OK here carries no rows worth reporting (COM_PING, COM_INIT_DB).
            if let Some(e) = (first == Some(0xff)).then(|| wire::err(&p.head)).flatten() {
                set_error(c, e);
            }
            c.st = St::Done;
            Step::Done
        }
        St::OkErr => {
            if first == Some(0x00) {
                c.st = St::Done;
                return Step::Done;
            }
            Step::Continue
        }
        St::Result => match first {
            Some(0x00) => {
                let ok = add_ok(c, &p.head);
                more_or_done(c, ok.map(|o| o.status))
            }
            Some(0xfb) => {
                c.st = St::Infile;
                Step::Continue
            }
            _ => {
                let mut at = 0;
                match wire::lenenc(&p.head, &mut at) {
                    Some(n) if n > 0 && at == p.head.len() => {
                        c.st = St::Cols(n);
                        c.rows.get_or_insert(0);
                        Step::Continue
                    }
                    // MariaDB's cache-metadata / MySQL's optional-metadata byte: 0 = no column definitions.
                    Some(n) if n > 0 && at + 1 == p.head.len() && p.head[at] <= 1 => {
                        c.st = match (p.head[at], deprecate_eof) {
                            (1, _) => St::Cols(n),
                            (_, Some(true)) => St::Rows,
                            _ => St::ColsEof,
                        };
                        c.rows.get_or_insert(0);
                        Step::Continue
                    }
                    _ => {
                        PARSE_ERRORS.inc();
                        c.partial = true;
                        c.st = St::Done;
                        Step::Done
                    }
                }
            }
        },
        St::Cols(n) => {
            c.st = match (n.saturating_sub(1), deprecate_eof) {
                (0, Some(true)) => St::Rows,
                (0, _) => St::ColsEof,
                (k, _) => St::Cols(k),
            };
            Step::Continue
        }
        St::ColsEof => {
            if eof {
                c.st = St::Rows;
                Step::Continue
            } else if terminator {
                terminate(c, p)
            } else {
                *c.rows.get_or_insert(0) += 1;
                c.st = St::Rows;
                Step::Continue
            }
        }
        St::Rows => {
            if terminator {
                terminate(c, p)
            } else {
                *c.rows.get_or_insert(0) += 1;
                Step::Continue
            }
        }
        St::FetchRows => {
            if terminator {
                c.rows.get_or_insert(0);
                c.st = St::Done;
                Step::Done
            } else {
                *c.rows.get_or_insert(0) += 1;
                Step::Continue
            }
        }
        St::Infile => {
            if first == Some(0x00) {
                let ok = add_ok(c, &p.head);
                return more_or_done(c, ok.map(|o| o.status));
            }
            Step::Continue
        }
        St::Prepare => {
            if first != Some(0x00) || p.head.len() < 9 {
                PARSE_ERRORS.inc();
                c.st = St::Done;
                return Step::Done;
            }
            let id = le_u32(&p.head, 1).unwrap_or(0);
            let cols = u16::from_le_bytes([p.head[5], p.head[6]]) as u64;
            let params = u16::from_le_bytes([p.head[7], p.head[8]]) as u64;
            c.detail.statement_id = Some(id);
            c.st = match (params, cols) {
                (0, 0) => St::Done,
                (0, k) => St::PrepDefs { left: k, then: 0 },
                (k, then) => St::PrepDefs { left: k, then },
            };
            if c.st == St::Done {
                Step::Done
            } else {
                Step::Continue
            }
        }
        St::PrepDefs { left, then } => {
            c.st = match (left.saturating_sub(1), deprecate_eof) {
                (0, Some(true)) if then > 0 => St::PrepDefs { left: then, then: 0 },
                (0, Some(true)) => St::Done,
                (0, _) => St::PrepEof { then },
                (k, _) => St::PrepDefs { left: k, then },
            };
            if c.st == St::Done {
                Step::Done
            } else {
                Step::Continue
            }
        }
        St::PrepEof { then } => {
            if eof {
                c.st = if then > 0 { St::PrepDefs { left: then, then: 0 } } else { St::Done };
                return if c.st == St::Done { Step::Done } else { Step::Continue };
            }
            // No EOF: DEPRECATE_EOF after all (only when the login was not seen).
            if then > 0 {
                c.st = St::PrepDefs { left: then, then: 0 };
                return step(c, p, deprecate_eof);
            }
            c.st = St::Done;
            Step::NotMine
        }
        St::Fields => {
            if terminator {
                c.st = St::Done;
                Step::Done
            } else {
                Step::Continue
            }
        }
    }
}

fn set_error(c: &mut Cmd, e: wire::Err) {
    c.detail.error_code = Some(e.code);
    c.detail.sql_state = e.sql_state;
    c.detail.error_message = Some(e.message);
    c.st = St::Done;
}

fn add_ok(c: &mut Cmd, head: &[u8]) -> Option<wire::Ok> {
    let ok = wire::ok(head);
    match ok {
        Some(o) => *c.affected.get_or_insert(0) += o.affected_rows,
        None => PARSE_ERRORS.inc(),
    }
    ok
}

fn more_or_done(c: &mut Cmd, status: Option<u16>) -> Step {
    if status.is_some_and(|s| s & wire::MORE_RESULTS_EXISTS != 0) {
        c.st = St::Result;
        Step::Continue
    } else {
        c.st = St::Done;
        Step::Done
    }
}

/// The 0xfe packet ending a result set: EOF or OK, whose status may announce another.
fn terminate(c: &mut Cmd, p: &Packet) -> Step {
    let status = if p.len < 7 { Some(wire::eof_status(&p.head)) } else { wire::ok(&p.head).map(|o| o.status) };
    more_or_done(c, status)
}

/// Where a packet plausibly starts in `buf` after lost bytes. Client side:
/// a command (sequence id 0, known command byte). Server side: the first
/// packet of the response awaited (`want_seq`). The packet's length must
/// chain through the following headers to the end of `buf`, or run past it
/// from `buf`'s first byte (a segment cut by the snap length).
fn find_packet(dir: StreamDir, buf: &[u8], want_seq: Option<u8>) -> Option<usize> {
    let ok = |seq: u8, payload: &[u8]| -> bool {
        match dir {
            StreamDir::ToServer => {
                seq == 0
                    && payload.first().is_some_and(|&c| {
                        wire::command_name(c).is_some()
                            && (!matches!(c, 0x03 | 0x16)
                                || payload.get(1).is_some_and(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()))
                    })
            }
            StreamDir::ToClient => Some(seq) == want_seq && !payload.is_empty(),
        }
    };
    (0..buf.len().saturating_sub(4)).find(|&i| {
        if packet::chains(buf, i, ok) {
            return true;
        }
        if i != 0 {
            return false;
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
        len > 0 && 4 + len > buf.len() && ok(buf[3], &buf[4..])
    })
}

impl ConnDecoder for MysqlDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.start(out.conn);
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        self.start(out.conn);
        if self.phase == Phase::Opaque || len == 0 {
            return;
        }
        let d = dir.index();
        match self.dirs[d].inflater.as_mut() {
            Some(inf) => {
                let was_lost = inf.lost;
                self.dirs[d].resync.clear();
                match inf.gap(len) {
                    Inner::None => {}
                    Inner::Gap(k) => self.plain_gap(dir, ts_ns, k, out),
                    Inner::Lost => {
                        if !was_lost {
                            self.plain_gap(dir, ts_ns, u64::MAX, out);
                        }
                    }
                }
            }
            None => self.plain_gap(dir, ts_ns, len, out),
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        while let Some(mut c) = self.pending.pop_front() {
            if c.resp_started {
                // The response had begun; its end may have been cut by the close.
                c.partial |= !matches!(c.st, St::PrepEof { then: 0 });
                self.emit(c, Outcome::Complete, out);
            } else {
                c.end_ts = ts_ns;
                self.emit(c, outcome, out);
            }
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        while self.pending.front().is_some_and(|c| c.ts < deadline_ns) {
            let Some(mut c) = self.pending.pop_front() else { break };
            c.end_ts = c.ts.saturating_add(self.cfg.request_timeout_ns);
            self.emit(c, Outcome::Timeout, out);
        }
    }
}
