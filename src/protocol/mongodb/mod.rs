//! MongoDB wire protocol: 16-byte little-endian MsgHeader (length,
//! requestID, responseTo, opCode) then an opcode-specific body. OP_MSG
//! (3.6+) carries commands as BSON documents (section kind 0) plus document
//! sequences (kind 1); drivers still open connections with a legacy OP_QUERY
//! `hello`/`isMaster` on `admin.$cmd`, answered by OP_REPLY; after the
//! handshake negotiates a compressor, messages travel as OP_COMPRESSED
//! (snappy, zlib or zstd), decompressed here up to the buffer bound.
//!
//! Replies are paired to requests by responseTo == requestID, so any number
//! may be in flight. A request flagged moreToCome (unacknowledged write)
//! gets no reply and is an exchange of its own at once. An exhaust reply
//! flagged moreToCome is followed by replies answering the previous reply,
//! not a request: the exchange ends at the first one; the others are counted
//! in `cnflow.protocol.mongodb.exhaust_replies` and make no exchange.
//!
//! Authentication commands (saslStart, saslContinue, authenticate, …) are
//! exchanges, but nothing of their documents is kept.
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::VecDeque;
use std::sync::LazyLock;

mod detail;
pub mod semconv;
#[cfg(test)]
mod tests;
mod walk;
pub mod wire;

pub use detail::MongodbDetail;
use wire::{Header, HEADER};

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "mongodb")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "mongodb")]));
static UNMATCHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "mongodb")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "mongodb")]));
static EXHAUST_REPLIES: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.protocol.mongodb.exhaust_replies", &[]));
/// Messages (or decompressed bodies) longer than the buffer bound: read only as far as it.
static OVER_BOUND: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.protocol.mongodb.over_bound", &[]));

/// Exhaust streams followed per connection (normally one: the monitoring hello).
const MAX_EXHAUST: usize = 16;

/// Content detection: a plausible header for the direction AND a BSON
/// command (or reply) document that parses. A request must answer nothing
/// (responseTo 0); a reply (a capture joined after the request) must answer
/// something.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    let to_server = dir == StreamDir::ToServer;
    let Some(h) = wire::header(data) else {
        // Fewer than 16 bytes: judge the length if it is there.
        let len_ok = data.get(..4).is_none_or(|l| {
            (HEADER as u32 + 9..=wire::MAX_MESSAGE).contains(&u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
        });
        return if len_ok { Probe::NeedMore } else { Probe::No };
    };
    if !wire::plausible(&h, to_server) {
        return Probe::No;
    }
    let end = (h.len as usize).min(data.len());
    let complete = end == h.len as usize;
    let b = &data[HEADER..end];
    let (op, body, _) = match open(h.op, b, complete, 4096) {
        Some(x) => x,
        None if !complete && data.len() < super::dispatch::DETECT_BYTES => return Probe::NeedMore,
        None => return Probe::No,
    };
    let Some(parsed) = wire::body(op, &body) else {
        return if !complete && body.len() < 64 { Probe::NeedMore } else { Probe::No };
    };
    match parsed.doc {
        Some(wire::Doc::Full(d)) => {
            // Every element must parse, and a command has a name.
            if d.iter().any(|e| e.is_err()) || (to_server && d.is_empty()) {
                return Probe::No;
            }
            Probe::Yes(90)
        }
        Some(doc @ wire::Doc::Cut(_)) if doc.first().is_some() => Probe::Yes(70),
        Some(wire::Doc::Cut(_)) => Probe::NeedMore,
        // Legacy writes and kill-cursors name a collection, no document.
        None if parsed.full_collection.is_some_and(|ns| ns.contains('.')) => Probe::Yes(60),
        None if op == wire::OP_REPLY => Probe::Yes(60),
        None => Probe::No,
    }
}

/// The body of a message, decompressed when it is OP_COMPRESSED: (opcode,
/// body, compressor, decompressed body cut).
fn open(
    op: i32,
    b: &[u8],
    complete: bool,
    bound: usize,
) -> Option<(i32, std::borrow::Cow<'_, [u8]>, Option<Compressed>)> {
    if op != wire::OP_COMPRESSED {
        return Some((op, std::borrow::Cow::Borrowed(b), None));
    }
    let d = wire::decompress(b, complete, bound)?;
    let c = Compressed { name: d.compressor, cut: d.cut, over_bound: d.over_bound };
    Some((d.op, std::borrow::Cow::Owned(d.body), Some(c)))
}

struct Compressed {
    name: &'static str,
    cut: bool,
    over_bound: bool,
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(MongodbDecoder::new(cfg))
}

/// MongoDB wire protocol. The registry entry.
pub struct Mongodb;

impl super::registry::L7Protocol for Mongodb {
    const NAME: &'static str = "mongodb";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 27017..=27019)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Header,
    Body,
    /// Looking for the next message start after lost or unreadable bytes.
    Lost,
}

struct DirRx {
    state: Rx,
    hdr: [u8; HEADER],
    hdr_n: usize,
    h: Header,
    got: u32,
    /// Leading body bytes of the current message (bounded).
    buf: Vec<u8>,
    /// Bytes of the current message missing from `buf` (lost or over the bound).
    cut: bool,
    /// Bytes were lost inside the message: `buf` stopped growing.
    hole: bool,
    start_ns: u64,
    resync: Resync,
    /// An uncompressed reply past the bound: read on as it streams by.
    walk: Option<walk::Walker>,
}

impl DirRx {
    fn new() -> Self {
        Self {
            state: Rx::Header,
            hdr: [0; HEADER],
            hdr_n: 0,
            h: Header { len: 0, request_id: 0, response_to: 0, op: 0 },
            got: 0,
            buf: Vec::new(),
            cut: false,
            hole: false,
            start_ns: 0,
            resync: Resync::default(),
            walk: None,
        }
    }
}

struct Pending {
    start_ns: u64,
    request_bytes: u64,
    partial: bool,
    detail: MongodbDetail,
}

pub struct MongodbDecoder {
    rx: [DirRx; 2],
    pending: KeyedPairer<i32, Pending>,
    /// requestIDs of replies flagged moreToCome: the next reply answers them.
    exhaust: VecDeque<i32>,
    max_buf: usize,
    timeout_ns: u64,
}

impl MongodbDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(), DirRx::new()],
            pending: KeyedPairer::new(cfg.max_pending_per_conn),
            exhaust: VecDeque::new(),
            max_buf: cfg.max_buffer_per_dir.max(1024),
            timeout_ns: cfg.request_timeout_ns,
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let d = dir.index();
        let to_server = dir == StreamDir::ToServer;
        while !data.is_empty() {
            match self.rx[d].state {
                Rx::Header => {
                    let rx = &mut self.rx[d];
                    if rx.hdr_n == 0 {
                        rx.start_ns = ts;
                    }
                    let n = (HEADER - rx.hdr_n).min(data.len());
                    rx.hdr[rx.hdr_n..rx.hdr_n + n].copy_from_slice(&data[..n]);
                    rx.hdr_n += n;
                    data = &data[n..];
                    if rx.hdr_n < HEADER {
                        continue;
                    }
                    rx.hdr_n = 0;
                    let h = wire::header(&rx.hdr).unwrap_or(rx.h);
                    if !wire::plausible(&h, to_server) {
                        PARSE_ERRORS.inc();
                        rx.state = Rx::Lost;
                        rx.resync.restart(&rx.hdr[1..]);
                        continue;
                    }
                    rx.h = h;
                    rx.got = HEADER as u32;
                    rx.buf.clear();
                    rx.cut = false;
                    rx.hole = false;
                    rx.walk = None;
                    rx.state = Rx::Body;
                }
                Rx::Body => {
                    let rx = &mut self.rx[d];
                    let n = ((rx.h.len - rx.got) as usize).min(data.len());
                    if !rx.hole {
                        let room = self.max_buf.saturating_sub(rx.buf.len()).min(n);
                        rx.buf.extend_from_slice(&data[..room]);
                        if room < n && !rx.cut {
                            rx.cut = true;
                            OVER_BOUND.inc();
                            // A reply's section 0 document (after flagBits and the kind byte).
                            if !to_server && rx.h.op == wire::OP_MSG && rx.buf.get(4) == Some(&0) {
                                let mut w = walk::Walker::default();
                                w.feed(&rx.buf[5..]);
                                rx.walk = Some(w);
                            }
                        }
                        if let Some(w) = &mut rx.walk {
                            w.feed(&data[room..n]);
                        }
                    }
                    rx.got += n as u32;
                    data = &data[n..];
                    if rx.got == rx.h.len {
                        rx.state = Rx::Header;
                        self.message(dir, ts, out);
                    }
                }
                Rx::Lost => {
                    let rx = &mut self.rx[d];
                    let pending = &self.pending;
                    let found =
                        rx.resync.push(data, self.max_buf, &RESYNC_SKIPPED, |buf| find_start(buf, to_server, pending));
                    data = &[];
                    if let Some((buf, at)) = found {
                        rx.state = Rx::Header;
                        rx.hdr_n = 0;
                        self.feed(dir, ts, &buf[at..], out);
                    }
                }
            }
        }
    }

    /// A whole message (or its bounded prefix) has arrived.
    fn message(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let d = dir.index();
        let rx = &mut self.rx[d];
        let buf = std::mem::take(&mut rx.buf);
        let (h, cut, start) = (rx.h, rx.cut, rx.start_ns);
        let walked = rx.walk.take();
        match dir {
            StreamDir::ToServer => self.request(h, &buf, cut, start, ts, out),
            StreamDir::ToClient => self.reply(h, &buf, cut, walked, ts, out),
        }
        // Reuse the allocation.
        let rx = &mut self.rx[d];
        rx.buf = buf;
        rx.buf.clear();
    }

    fn request(&mut self, h: Header, b: &[u8], cut: bool, start: u64, end: u64, out: &mut Emit) {
        let Some((op, body, comp)) = open(h.op, b, !cut, self.max_buf) else {
            PARSE_ERRORS.inc();
            return;
        };
        let mut partial = cut;
        let mut detail = MongodbDetail { op_code: wire::op_name(op), request_id: h.request_id, ..Default::default() };
        if let Some(c) = &comp {
            detail.compressor = Some(c.name);
            partial |= c.cut;
            if c.over_bound {
                OVER_BOUND.inc();
            }
        }
        match wire::body(op, &body) {
            Some(parsed) => {
                let r = wire::request(op, &parsed);
                detail.operation = r.operation;
                detail.collection = r.collection;
                detail.database = r.database;
                detail.query_masked = r.query_masked;
                detail.no_reply = r.no_reply;
            }
            None => {
                PARSE_ERRORS.inc();
                partial = true;
            }
        }
        let p = Pending { start_ns: start, request_bytes: h.len as u64, partial, detail };
        if p.detail.no_reply {
            self.emit(p, end, 0, Outcome::Complete, out);
            return;
        }
        for old in self.pending.insert(h.request_id, start, p) {
            EVICTED.inc();
            self.emit(old, end, 0, Outcome::Timeout, out);
        }
    }

    fn reply(&mut self, h: Header, b: &[u8], cut: bool, walked: Option<walk::Walker>, end: u64, out: &mut Emit) {
        let parsed = open(h.op, b, !cut, self.max_buf);
        let (mut rep, body_cut) = match &parsed {
            Some((op, body, comp)) => {
                if comp.as_ref().is_some_and(|c| c.over_bound) {
                    OVER_BOUND.inc();
                }
                let rep = wire::body(*op, body).map(|p| wire::reply(*op, &p));
                (rep, cut || comp.as_ref().is_some_and(|c| c.cut))
            }
            None => (None, cut),
        };
        // What the head did not hold, read as the rest streamed past.
        if let (Some(r), Some(w)) = (&mut rep, walked) {
            r.ok = r.ok.or(w.ok);
            if r.ok == Some(true) {
                r.returned_rows = r.returned_rows.or(w.rows);
            }
        }
        if rep.is_none() {
            PARSE_ERRORS.inc();
        }
        let more = rep.as_ref().is_some_and(|r| r.more_to_come);
        if let Some(i) = self.exhaust.iter().position(|&id| id == h.response_to) {
            // Another reply of an exhaust stream: part of an exchange already made.
            self.exhaust.remove(i);
            EXHAUST_REPLIES.inc();
            self.follow_exhaust(more, h.request_id);
            return;
        }
        let Some(mut p) = self.pending.take(&h.response_to) else {
            // Request not seen (capture joined later, or evicted).
            UNMATCHED.inc();
            self.follow_exhaust(more, h.request_id);
            return;
        };
        match rep {
            Some(r) => {
                p.detail.ok = r.ok;
                p.detail.error_code = r.code;
                p.detail.error_name = r.code_name;
                p.detail.error_message = r.errmsg;
                p.detail.returned_rows = r.returned_rows;
                p.detail.exhaust = more;
                // A cut reply may have lost `ok` and the row count.
                p.partial |= body_cut && (r.ok.is_none() || r.returned_rows.is_none());
            }
            None => p.partial = true,
        }
        self.follow_exhaust(more, h.request_id);
        self.emit(p, end, h.len as u64, Outcome::Complete, out);
    }

    fn follow_exhaust(&mut self, more: bool, reply_id: i32) {
        if more {
            if self.exhaust.len() >= MAX_EXHAUST {
                self.exhaust.pop_front();
            }
            self.exhaust.push_back(reply_id);
        }
    }

    fn emit(&self, p: Pending, end_ns: u64, response_bytes: u64, outcome: Outcome, out: &mut Emit) {
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Mongodb,
            start_ns: p.start_ns,
            end_ns: end_ns.max(p.start_ns),
            request_bytes: p.request_bytes,
            response_bytes,
            outcome,
            partial: p.partial,
            detail: Detail::Mongodb(p.detail),
        });
    }
}

/// First offset in `buf` where a message plausibly starts: a header for the
/// direction whose body parses as far as it is there. For replies, one that
/// answers a pending request is taken first (the strongest evidence).
fn find_start(buf: &[u8], to_server: bool, pending: &KeyedPairer<i32, Pending>) -> Option<usize> {
    let mut weak = None;
    for i in 0..buf.len().saturating_sub(HEADER - 1) {
        let Some(h) = wire::header(&buf[i..]) else { break };
        if !wire::plausible(&h, to_server) {
            continue;
        }
        let end = (i + h.len as usize).min(buf.len());
        let complete = end - i == h.len as usize;
        let body = &buf[i + HEADER..end];
        if body.len() < 5 && !complete {
            // Too little to judge yet: wait for more bytes.
            return weak;
        }
        let ok = match open(h.op, body, complete, 1024) {
            Some((op, b, _)) => wire::body(op, &b).is_some_and(|p| p.doc.is_some() || p.full_collection.is_some()),
            None => false,
        };
        if !ok {
            continue;
        }
        if to_server || pending.any_key(|k| *k == h.response_to) {
            return Some(i);
        }
        weak.get_or_insert(i);
    }
    weak
}

impl ConnDecoder for MongodbDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        let rx = &mut self.rx[dir.index()];
        match rx.state {
            Rx::Body if len < (rx.h.len - rx.got) as u64 => {
                rx.walk = None;
                // Inside one message: its length still frames the stream.
                rx.got += len as u32;
                rx.cut = true;
                rx.hole = true;
            }
            Rx::Body if len == (rx.h.len - rx.got) as u64 => {
                rx.walk = None;
                rx.got = rx.h.len;
                rx.cut = true;
                rx.hole = true;
                rx.state = Rx::Header;
                self.message(dir, ts_ns, out);
            }
            _ => {
                rx.state = Rx::Lost;
                rx.hdr_n = 0;
                rx.resync.clear();
            }
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        let mut v = self.pending.drain();
        v.sort_by_key(|p| (p.start_ns, p.detail.request_id));
        for p in v {
            self.emit(p, ts_ns, 0, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        for p in self.pending.expire(deadline_ns) {
            let end = deadline_ns.saturating_add(self.timeout_ns);
            self.emit(p, end, 0, Outcome::Timeout, out);
        }
    }
}
