//! PostgreSQL frontend/backend protocol v3.
//!
//! Exchanges are the statements a client runs: one per simple Query (up to
//! its ReadyForQuery) and one per extended-protocol Execute (up to its
//! CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse),
//! plus FunctionCall. Parse/Bind/Describe are folded into the Execute they
//! prepare; named and unnamed prepared statements and portals are remembered
//! per connection (bounded), so an Execute carries its statement text when
//! the Parse was seen, even many round trips earlier.
//!
//! The backend answers frontend messages in order, so pairing is a queue of
//! what each frontend message expects. The exceptions the protocol has are
//! handled: NotificationResponse, NoticeResponse and ParameterStatus are
//! asynchronous (never a reply); after an ErrorResponse in an extended-query
//! batch the server skips everything up to Sync (the first skipped Execute
//! carries the error when a Parse/Bind failed, the rest are not run, so they
//! produce no exchange); COPY data in either direction belongs to its COPY.
//!
//! The startup phase gives `db.namespace` (database, else user). SSLRequest or
//! GSSENCRequest answered `S`/`G` means the rest is encrypted: the flow is
//! counted in `cnflow.protocol.encrypted` and no longer decoded. Password,
//! SASL and GSS payloads (`p` messages) are skipped unread.
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, RoleEvidence, StreamDir, Transport};
use crate::otel::attr::Str;
use crate::protocol::exchange::{Detail, Exchange, Outcome, Protocol};
use crate::protocol::span_common::lossy_text;
use crate::protocol::sql;
use crate::stats::{counter, Counter};
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

mod detail;
pub mod frame;
pub mod semconv;
#[cfg(test)]
mod tests;

pub use detail::PostgresDetail;
use frame::{Msg, Reader, CANCEL_REQUEST, GSSENC_REQUEST, PROTOCOL_3, SSL_ANSWER, SSL_REQUEST, UNTYPED};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "postgres")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "postgres")]));
static UNPAIRED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unpaired_responses", &[("protocol", "postgres")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "postgres")]));
static ENCRYPTED_SSL: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.encrypted", &[("protocol", "postgres"), ("method", "ssl")]));
static ENCRYPTED_GSS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.encrypted", &[("protocol", "postgres"), ("method", "gssenc")]));
static STATEMENTS_EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.postgres.statements_evicted", &[]));

/// Prepared statements remembered per connection.
pub const MAX_STATEMENTS: usize = 256;
/// Portals remembered per connection (usually just the unnamed one).
const MAX_PORTALS: usize = 64;
/// Length of `query_raw`.
const MAX_RAW: usize = 2048;
/// Length of a kept statement/portal name, error message, startup value.
const MAX_NAME: usize = 128;

/// Does the first data of a connection look like PostgreSQL? A connection
/// whose start was seen must begin with a startup-phase packet; one joined
/// later needs a run of well-formed typed messages.
pub fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    let joined = conn.evidence != RoleEvidence::Syn;
    match dir {
        StreamDir::ToServer => match startup_shape(data) {
            Probe::No if joined => typed_probe(false, data),
            p => p,
        },
        StreamDir::ToClient if joined => typed_probe(true, data),
        StreamDir::ToClient => Probe::No,
    }
}

fn startup_shape(data: &[u8]) -> Probe {
    if data.len() < 8 {
        // Startup lengths are below 10000: the first two bytes are zero.
        return if data.iter().take(2).all(|&b| b == 0) { Probe::NeedMore } else { Probe::No };
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let code = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    match (len, code) {
        (8, SSL_REQUEST | GSSENC_REQUEST) => Probe::Yes(85),
        (16, CANCEL_REQUEST) => Probe::Yes(70),
        (9..=frame::MAX_STARTUP, PROTOCOL_3) => {
            let body = &data[8..data.len().min(len as usize)];
            let params_ok = body.iter().all(|&b| b == 0 || !b.is_ascii_control());
            let has_user = body.windows(5).any(|w| w == b"user\0");
            if !params_ok {
                Probe::No
            } else if (data.len() as u32) < len {
                if has_user {
                    Probe::Yes(90)
                } else {
                    Probe::NeedMore
                }
            } else if has_user && body.ends_with(&[0, 0]) {
                Probe::Yes(95)
            } else {
                Probe::No
            }
        }
        _ => Probe::No,
    }
}

fn typed_probe(backend: bool, data: &[u8]) -> Probe {
    match frame::chain(backend, data, 8) {
        None => Probe::No,
        Some((n, true, _)) if n >= 2 => Probe::Yes(70),
        Some((n, _, _)) if n >= 3 => Probe::Yes(55),
        Some((_, _, _)) if data.len() < 1024 => Probe::NeedMore,
        Some(_) => Probe::No,
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(PostgresDecoder::new(cfg))
}

/// PostgreSQL (protocol 3). The registry entry.
pub struct Postgres;

impl super::registry::L7Protocol for Postgres {
    const NAME: &'static str = "postgres";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        port == 5432
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

/// A statement text and what the SQL summariser made of it, as texts every
/// exchange of the statement shares (a clone is a reference count).
#[derive(Debug)]
struct Stmt {
    shape: sql::Shape,
    /// The masked text; None when the decoder does not keep statement
    /// texts (metrics only: no span shows them).
    masked: Option<Str>,
    raw: Option<Str>,
    /// Name of a named prepared statement.
    name: Option<Str>,
}

fn stmt(text: &[u8], truncated: bool, name: Option<Str>, texts: bool) -> Arc<Stmt> {
    let text = lossy_text(text);
    let (shape, mut masked_text) = sql::summarize_shared(&text, sql::Dialect::Postgres, texts);
    let (mut masked, mut raw) = (None, None);
    if texts {
        if truncated && !masked_text.ends_with("...") {
            masked_text.push_str("...");
        }
        // Password-setting statements keep their literals masked even in the raw text.
        raw = Some(Str::shared(sql::truncate_str(sql::unmasked_text(&text, &masked_text), MAX_RAW)));
        masked = Some(Str::shared(&masked_text));
    }
    Arc::new(Stmt { shape, masked, raw, name })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Query,
    Parse,
    Bind,
    Describe,
    Close,
    Sync,
    Execute,
    Func,
}

impl Kind {
    /// Produces an exchange.
    fn exchange(self) -> bool {
        matches!(self, Kind::Query | Kind::Execute | Kind::Func)
    }
}

#[derive(Debug)]
struct Error {
    sqlstate: Option<String>,
    severity: Option<String>,
    message: Option<String>,
}

/// One frontend message waiting for its answer.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    ts: u64,
    end_ts: u64,
    req_bytes: u64,
    resp_bytes: u64,
    stmt: Option<Arc<Stmt>>,
    /// Parse: the statement name it defines (forgotten if the Parse fails).
    defines: Option<String>,
    partial: bool,
    tag: Option<Str>,
    row_desc: bool,
    data_rows: u64,
    error: Option<Error>,
    copy: Option<&'static str>,
}

impl Entry {
    fn new(kind: Kind, ts: u64, bytes: u64) -> Self {
        Entry {
            kind,
            ts,
            end_ts: ts,
            req_bytes: bytes,
            resp_bytes: 0,
            stmt: None,
            defines: None,
            partial: false,
            tag: None,
            row_desc: false,
            data_rows: 0,
            error: None,
            copy: None,
        }
    }
}

/// A bounded name → value map that forgets the oldest name when full.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::default(), order: VecDeque::new(), cap }
    }
    /// Insert; true when an older entry had to be forgotten.
    fn insert(&mut self, k: String, v: V) -> bool {
        let mut evicted = false;
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.map.len() > self.cap {
                match self.order.pop_front() {
                    Some(old) => evicted |= self.map.remove(&old).is_some(),
                    None => break,
                }
            }
        }
        // Names removed by Close leave stale order entries: compact now and then.
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
        evicted
    }
    fn get(&self, k: &str) -> Option<&V> {
        self.map.get(k)
    }
    fn remove(&mut self, k: &str) {
        self.map.remove(k);
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

pub struct PostgresDecoder {
    cfg: DecodeConfig,
    front: Reader,
    back: Reader,
    pending: VecDeque<Entry>,
    statements: Bounded<Arc<Stmt>>,
    portals: Bounded<Option<Arc<Stmt>>>,
    database: Option<Str>,
    user: Option<Str>,
    /// Parse/Bind/Describe bytes and start time waiting for the Execute they prepare.
    carry: Option<(u64, u64)>,
    /// Response bytes of those, added to the Execute's response.
    resp_carry: u64,
    /// The server skips frontend messages up to the next Sync (after an error in a batch).
    skipping: bool,
    /// An error of a Parse/Bind/Describe waiting for the first skipped Execute to carry it.
    batch_error: Option<Entry>,
    /// Framing or pairing was lost: exchanges are partial until things line up again.
    desync: bool,
    /// Server bytes were lost since the last ReadyForQuery: answers may be missing.
    back_lost: bool,
    started: bool,
    msgs: Vec<Msg>,
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

fn bounded(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(b).into_owned();
    sql::truncate_at_char(&mut s, MAX_NAME);
    s
}

/// [`bounded`] as a `Str`: inline (no allocation) when short, as command
/// tags (`SELECT 1`, `INSERT 0 1`) and most names are.
fn bounded_str(b: &[u8]) -> Str {
    Str::copy(sql::truncate_str(&lossy_text(b), MAX_NAME))
}

fn parse_error(body: &[u8]) -> Error {
    let mut e = Error { sqlstate: None, severity: None, message: None };
    let mut rest = body;
    while let Some((&code, r)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let (v, r) = cstr(r);
        match code {
            b'C' if v.len() == 5 && v.iter().all(u8::is_ascii_alphanumeric) => e.sqlstate = Some(bounded(v)),
            // 'V' (not localised, 9.6+) wins over 'S'.
            b'V' => e.severity = Some(bounded(v)),
            b'S' if e.severity.is_none() => e.severity = Some(bounded(v)),
            b'M' => {
                let mut m = String::from_utf8_lossy(v).into_owned();
                sql::truncate_at_char(&mut m, 256);
                e.message = Some(m);
            }
            _ => {}
        }
        rest = r;
    }
    e
}

/// Rows from a CommandComplete tag: (returned, affected).
fn tag_rows(tag: &str, row_desc: bool) -> (Option<u64>, Option<u64>) {
    let mut words = tag.split(' ');
    let verb = words.next().unwrap_or("");
    let n = tag.rsplit(' ').next().and_then(|w| w.parse::<u64>().ok());
    match verb {
        "SELECT" | "FETCH" | "MOVE" => (n, None),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" if row_desc => (n, n),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" => (None, n),
        _ => (None, None),
    }
}

/// Operation from a tag: "INSERT 0 1" → "INSERT", "CREATE TABLE" → "CREATE TABLE".
fn tag_operation(tag: &str) -> String {
    tag.split(' ').filter(|w| !w.bytes().all(|b| b.is_ascii_digit())).collect::<Vec<_>>().join(" ")
}

impl PostgresDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            front: Reader::new(false),
            back: Reader::new(true),
            pending: VecDeque::new(),
            statements: Bounded::new(MAX_STATEMENTS),
            portals: Bounded::new(MAX_PORTALS),
            database: None,
            user: None,
            carry: None,
            resp_carry: 0,
            skipping: false,
            batch_error: None,
            desync: false,
            back_lost: false,
            started: false,
            msgs: Vec::new(),
        }
    }

    fn start(&mut self, conn: &Conn) {
        if !self.started {
            self.started = true;
            if conn.evidence != RoleEvidence::Syn {
                // Joined mid-connection: typed messages, maybe starting mid-message.
                self.front.untyped = false;
                self.front.resync = true;
                self.back.resync = true;
                self.desync = true;
            }
        }
    }

    fn push(&mut self, mut e: Entry, out: &mut Emit) {
        if self.skipping && e.kind != Kind::Sync {
            // Sent after an error and before Sync: the server ignores it.
            return;
        }
        if e.kind == Kind::Sync {
            self.skipping = false;
            self.carry = None;
        }
        if matches!(e.kind, Kind::Parse | Kind::Bind | Kind::Describe) {
            let c = self.carry.get_or_insert((e.ts, 0));
            c.1 += e.req_bytes;
        } else if e.kind.exchange() {
            if let Some((ts, bytes)) = self.carry.take() {
                e.ts = ts;
                e.req_bytes += bytes;
            }
        }
        e.partial |= self.desync;
        if self.pending.len() >= self.cfg.max_pending_per_conn.max(1) {
            if let Some(old) = self.pending.pop_front() {
                EVICTED.inc();
                if old.kind.exchange() {
                    let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
                    self.emit(old, end, Outcome::Timeout, out);
                }
            }
        }
        self.pending.push_back(e);
    }

    fn frontend(&mut self, m: &Msg, out: &mut Emit) {
        let ts = m.ts;
        let partial = m.lost;
        let e = |kind| {
            let mut e = Entry::new(kind, ts, m.bytes);
            e.partial = partial;
            e
        };
        match m.ty {
            UNTYPED => {
                let code = m.body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0);
                match code {
                    SSL_REQUEST | GSSENC_REQUEST => self.back.ssl_answer = true,
                    CANCEL_REQUEST => {}
                    c if c >> 16 == 3 => {
                        self.front.untyped = false;
                        let mut params = &m.body[4..];
                        while !params.is_empty() && params[0] != 0 {
                            let (k, r) = cstr(params);
                            let (v, r) = cstr(r);
                            match k {
                                b"user" => self.user = Some(bounded_str(v)),
                                b"database" => self.database = Some(bounded_str(v)),
                                _ => {}
                            }
                            params = r;
                        }
                        let entry = e(Kind::Startup);
                        self.push(entry, out);
                    }
                    _ => {
                        PARSE_ERRORS.inc();
                        self.front.untyped = false;
                    }
                }
            }
            b'Q' => {
                let (text, _) = cstr(&m.body);
                let mut entry = e(Kind::Query);
                entry.stmt = Some(stmt(text, !m.whole(), None, self.cfg.span_fields));
                self.push(entry, out);
            }
            b'P' => {
                let (name, rest) = cstr(&m.body);
                let (text, _) = cstr(rest);
                let name = bounded(name);
                let st = stmt(text, !m.whole(), (!name.is_empty()).then(|| Str::shared(&name)), self.cfg.span_fields);
                if self.statements.insert(name.clone(), st.clone()) {
                    STATEMENTS_EVICTED.inc();
                }
                let mut entry = e(Kind::Parse);
                entry.stmt = Some(st);
                entry.defines = Some(name);
                self.push(entry, out);
            }
            b'B' => {
                let (portal, rest) = cstr(&m.body);
                let (name, _) = cstr(rest);
                let st = self.statements.get(&bounded(name)).cloned();
                let mut entry = e(Kind::Bind);
                entry.stmt = st.clone();
                self.portals.insert(bounded(portal), st);
                self.push(entry, out);
            }
            b'D' => {
                let entry = e(Kind::Describe);
                self.push(entry, out);
            }
            b'E' => {
                let (portal, _) = cstr(&m.body);
                let mut entry = e(Kind::Execute);
                entry.stmt = self.portals.get(&bounded(portal)).cloned().flatten();
                self.push(entry, out);
            }
            b'C' => {
                let (what, name) = m.body.split_first().map(|(w, r)| (*w, cstr(r).0)).unwrap_or((0, &[]));
                match what {
                    b'S' => self.statements.remove(&bounded(name)),
                    b'P' => self.portals.remove(&bounded(name)),
                    _ => {}
                }
                let entry = e(Kind::Close);
                self.push(entry, out);
            }
            b'S' => {
                let entry = e(Kind::Sync);
                self.push(entry, out);
            }
            b'F' => {
                let entry = e(Kind::Func);
                self.push(entry, out);
            }
            // CopyData/CopyDone/CopyFail belong to the COPY in progress.
            b'd' | b'c' | b'f' => {
                if let Some(x) = self.pending.iter_mut().rev().find(|x| x.kind.exchange()) {
                    x.req_bytes += m.bytes;
                    x.partial |= m.lost;
                }
            }
            // Password/SASL/GSS responses belong to the startup; their content is never read.
            b'p' => {
                if let Some(x) = self.pending.iter_mut().rev().find(|x| x.kind == Kind::Startup) {
                    x.req_bytes += m.bytes;
                }
            }
            // Flush, Terminate: nothing to answer.
            _ => {}
        }
    }

    fn backend(&mut self, m: &Msg, out: &mut Emit) {
        let ty = m.ty;
        if ty == SSL_ANSWER {
            match m.body.first() {
                Some(b'S') => {
                    ENCRYPTED_SSL.inc();
                    self.encrypted();
                }
                Some(b'G') => {
                    ENCRYPTED_GSS.inc();
                    self.encrypted();
                }
                // 'N': go on in clear text with another startup packet.
                _ => {}
            }
            return;
        }
        // Asynchronous messages answer nothing (ParameterStatus is part of the startup reply).
        let startup = self.pending.front().is_some_and(|e| e.kind == Kind::Startup);
        if ty == b'A' || ty == b'N' || (ty == b'S' && !startup) {
            return;
        }
        if self.back_lost || self.desync {
            if self.drop_unanswered(m.ts, out) {
                return;
            }
            if ty == b'Z' {
                self.back_lost = false;
            }
        }
        let Some(front) = self.pending.front_mut() else {
            UNPAIRED.inc();
            if ty == b'Z' && self.front.at_boundary() && self.back.at_boundary() {
                // Idle and aligned: what comes next pairs reliably.
                self.desync = false;
            }
            return;
        };
        front.resp_bytes += m.bytes;
        front.end_ts = m.ts;
        front.partial |= m.lost;
        let kind = front.kind;
        match (kind, ty) {
            (Kind::Startup, b'Z') => {
                self.pending.pop_front();
            }
            (Kind::Startup, b'E') => {
                // Authentication or database refused: the connection ends.
                self.pending.pop_front();
            }
            (Kind::Startup, _) => {}
            (Kind::Parse, b'1') | (Kind::Bind, b'2') | (Kind::Describe, b'T' | b'n') | (Kind::Close, b'3') => {
                if let Some(e) = self.pending.pop_front() {
                    self.resp_carry += e.resp_bytes;
                }
            }
            (Kind::Describe, b't') => {}
            // An Execute's answer never ends with ReadyForQuery: its own answer was lost.
            (Kind::Execute, b'Z') => {
                UNPAIRED.inc();
                self.desync = true;
                self.resync_at_ready(m.ts, out);
            }
            (Kind::Sync, b'Z') => {
                self.pending.pop_front();
                self.resp_carry = 0;
                self.batch_error = None;
                self.realign();
            }
            // An error at Sync (a deferred constraint at the implicit commit) precedes its ReadyForQuery.
            (Kind::Sync, _) => {}
            (Kind::Query | Kind::Func | Kind::Execute, _) => self.answer(ty, m, out),
            (_, b'E') => {
                // A Parse/Bind/Describe/Close failed: the rest of the batch is skipped.
                if let Some(mut e) = self.pending.pop_front() {
                    e.error = Some(parse_error(&m.body));
                    if let Some(name) = e.defines.take() {
                        self.statements.remove(&name);
                    }
                    e.resp_bytes += std::mem::take(&mut self.resp_carry);
                    self.batch_error = Some(e);
                }
                self.skip_batch(out);
            }
            _ => {
                // Not what the oldest request expects: pairing is off.
                UNPAIRED.inc();
                self.desync = true;
                if ty == b'Z' {
                    self.resync_at_ready(m.ts, out);
                }
            }
        }
    }

    /// A message for the Query/Execute/FunctionCall at the head of the queue.
    fn answer(&mut self, ty: u8, m: &Msg, out: &mut Emit) {
        let Some(front) = self.pending.front_mut() else { return };
        let kind = front.kind;
        match ty {
            b'T' => front.row_desc = true,
            b'D' => front.data_rows += 1,
            b'C' => {
                let (tag, _) = cstr(&m.body);
                front.tag = Some(bounded_str(tag));
            }
            b'E' if front.error.is_none() => front.error = Some(parse_error(&m.body)),
            b'G' => front.copy = Some("in"),
            b'H' => front.copy = Some("out"),
            _ => {}
        }
        let done = matches!((kind, ty), (Kind::Query | Kind::Func, b'Z') | (Kind::Execute, b'C' | b'I' | b's' | b'E'));
        if !done {
            return;
        }
        let Some(mut e) = self.pending.pop_front() else { return };
        if kind == Kind::Execute {
            e.resp_bytes += std::mem::take(&mut self.resp_carry);
        }
        let is_err = e.error.is_some();
        let end = e.end_ts;
        self.emit(e, end, Outcome::Complete, out);
        if kind == Kind::Execute && is_err {
            self.skip_batch(out);
        }
        if kind != Kind::Execute {
            self.realign();
        }
    }

    /// After an error in an extended-query batch the server skips every
    /// message up to Sync. The first skipped Execute carries a pending
    /// Parse/Bind error (that is the statement that failed); the others
    /// never ran.
    fn skip_batch(&mut self, out: &mut Emit) {
        while let Some(e) = self.pending.front() {
            if e.kind == Kind::Sync {
                break;
            }
            let Some(e) = self.pending.pop_front() else { break };
            if e.kind == Kind::Execute {
                if let Some(failed) = self.batch_error.take() {
                    let mut e = e;
                    e.error = failed.error;
                    e.resp_bytes += failed.resp_bytes;
                    e.partial |= failed.partial;
                    e.stmt = e.stmt.or(failed.stmt);
                    let end = failed.end_ts;
                    self.emit(e, end, Outcome::Complete, out);
                }
            }
        }
        if self.pending.is_empty() {
            self.skipping = true;
        }
        // A failed Parse/Bind whose batch had no Execute (yet) is its own exchange.
        if let Some(mut failed) = self.batch_error.take() {
            if self.pending.front().is_some_and(|e| e.kind == Kind::Sync) || self.skipping {
                failed.kind = Kind::Parse;
                let end = failed.end_ts;
                self.emit(failed, end, Outcome::Complete, out);
            } else {
                self.batch_error = Some(failed);
            }
        }
    }

    /// After lost bytes, realign by time (one capture point sees a request
    /// before its answer): a server message older than the oldest pending
    /// request answers a request that was lost (true: drop the message); a
    /// request unit (up to its Query/Sync) followed by a unit the client sent
    /// before this message was answered in the lost bytes: the client only
    /// moves on after ReadyForQuery (exact for clients that wait for it; a
    /// pipelining client may see an exchange given up early, marked partial).
    fn drop_unanswered(&mut self, ts: u64, out: &mut Emit) -> bool {
        if self.pending.front().is_some_and(|e| ts < e.ts) {
            UNPAIRED.inc();
            return true;
        }
        if !self.back_lost {
            return false;
        }
        loop {
            let Some(end) = self
                .pending
                .iter()
                .position(|e| matches!(e.kind, Kind::Query | Kind::Sync | Kind::Func | Kind::Startup))
            else {
                return false;
            };
            if self.pending.get(end + 1).is_none_or(|next| next.ts > ts) {
                return false;
            }
            for _ in 0..=end {
                if let Some(mut e) = self.pending.pop_front() {
                    if e.kind.exchange() {
                        e.partial = true;
                        let end_ts = e.end_ts;
                        self.emit(e, end_ts, Outcome::Complete, out);
                    }
                }
            }
            self.resp_carry = 0;
        }
    }

    /// ReadyForQuery where none was expected: drop what waits up to the first
    /// Query/Sync it may close, marking what is given up as partial.
    fn resync_at_ready(&mut self, ts: u64, out: &mut Emit) {
        while let Some(mut e) = self.pending.pop_front() {
            let closes = matches!(e.kind, Kind::Query | Kind::Sync | Kind::Func);
            if e.kind.exchange() {
                e.partial = true;
                self.emit(e, ts, Outcome::Complete, out);
            }
            if closes {
                break;
            }
        }
        self.resp_carry = 0;
    }

    fn realign(&mut self) {
        if self.pending.is_empty() && self.front.at_boundary() && self.back.at_boundary() {
            self.desync = false;
        }
    }

    fn encrypted(&mut self) {
        self.front.off = true;
        self.back.off = true;
        self.pending.clear();
    }

    fn emit(&self, e: Entry, end: u64, outcome: Outcome, out: &mut Emit) {
        let (returned, affected) = match &e.tag {
            Some(t) if t.starts_with("COPY") && e.copy == Some("out") => {
                (t.rsplit(' ').next().and_then(|n| n.parse().ok()), None)
            }
            Some(t) if t.starts_with("COPY") => (None, t.rsplit(' ').next().and_then(|n| n.parse().ok())),
            Some(t) => tag_rows(t, e.row_desc),
            None if e.data_rows > 0 => (Some(e.data_rows), None),
            None => (None, None),
        };
        let s = e.stmt.as_deref();
        let operation = s
            .and_then(|s| s.shape.operation.clone())
            .or_else(|| e.tag.as_deref().map(tag_operation).filter(|o| !o.is_empty()).map(Str::compact));
        let (message, summary) = match e.kind {
            Kind::Query => ("query", s.and_then(|s| s.shape.summary.clone())),
            Kind::Execute => ("execute", s.and_then(|s| s.shape.summary.clone())),
            Kind::Func => ("function_call", None),
            _ => ("parse", s.and_then(|s| s.shape.summary.clone())),
        };
        let detail = PostgresDetail {
            message,
            operation,
            collection: s.and_then(|s| s.shape.collection.clone()),
            summary,
            query_masked: s.and_then(|s| s.masked.clone()),
            query_raw: s.and_then(|s| s.raw.clone()),
            statement: s.and_then(|s| s.name.clone()),
            database: self.database.clone().or_else(|| self.user.clone()),
            user: self.user.clone(),
            command_tag: e.tag,
            returned_rows: returned,
            affected_rows: affected,
            sqlstate: e.error.as_ref().and_then(|x| x.sqlstate.clone()),
            error_severity: e.error.as_ref().and_then(|x| x.severity.clone()),
            error_message: e.error.and_then(|x| x.message),
            copy: e.copy,
        };
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Postgres,
            start_ns: e.ts,
            end_ns: end.max(e.ts),
            request_bytes: e.req_bytes,
            response_bytes: e.resp_bytes,
            outcome,
            partial: e.partial,
            detail: Detail::Postgres(detail),
        });
    }

    fn drain(&mut self, dir: StreamDir, out: &mut Emit) {
        let mut msgs = std::mem::take(&mut self.msgs);
        for m in msgs.iter() {
            if m.lost {
                self.desync |= !matches!(m.ty, b'D' | b'd');
            }
        }
        for m in msgs.drain(..) {
            match dir {
                StreamDir::ToServer => {
                    self.frontend(&m, out);
                    self.front.recycle(m.body);
                }
                StreamDir::ToClient => {
                    self.backend(&m, out);
                    self.back.recycle(m.body);
                }
            }
        }
        // The emptied list (its allocation) serves the next segment.
        self.msgs = msgs;
    }

    #[cfg(test)]
    fn statement_count(&self) -> usize {
        self.statements.len()
    }
}

impl ConnDecoder for PostgresDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.start(out.conn);
        let cap = self.cfg.max_buffer_per_dir.max(64);
        let mut msgs = std::mem::take(&mut self.msgs);
        let r = match dir {
            StreamDir::ToServer => &mut self.front,
            StreamDir::ToClient => &mut self.back,
        };
        r.feed(ts_ns, data, &mut msgs, cap, &PARSE_ERRORS, &RESYNC_SKIPPED);
        self.msgs = msgs;
        self.drain(dir, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        self.start(out.conn);
        let _ = ts_ns;
        let mut msgs = std::mem::take(&mut self.msgs);
        let r = match dir {
            StreamDir::ToServer => &mut self.front,
            StreamDir::ToClient => &mut self.back,
        };
        r.gap(len, &mut msgs);
        if dir == StreamDir::ToClient {
            self.back_lost = true;
        }
        if r.resync {
            // Whole messages may be gone: in-order pairing is uncertain from here.
            self.desync = true;
            for e in self.pending.iter_mut() {
                e.partial = true;
            }
        }
        self.msgs = msgs;
        self.drain(dir, out);
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        while let Some(e) = self.pending.pop_front() {
            if !e.kind.exchange() {
                continue;
            }
            // Answered in part, its end lost (a snap length cut off the
            // CommandComplete): the client went on, so it completed.
            if e.partial && e.resp_bytes > 0 {
                let end = e.end_ts;
                self.emit(e, end, Outcome::Complete, out);
            } else {
                self.emit(e, ts_ns, outcome, out);
            }
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        while self.pending.front().is_some_and(|e| e.ts < deadline_ns) {
            if let Some(e) = self.pending.pop_front() {
                if e.kind.exchange() {
                    self.emit(e, end, Outcome::Timeout, out);
                }
            }
        }
    }
}
