//! NATS client protocol (core NATS, text control lines with sized payloads).
//!
//! Client ops: CONNECT, PUB, HPUB, SUB, UNSUB, PING/PONG; server ops: INFO,
//! MSG, HMSG, PING/PONG, +OK, -ERR. Pairing follows what the server answers:
//! - PING is answered by PONG, in order with everything else.
//! - With CONNECT `"verbose": true` every CONNECT/PUB/HPUB/SUB/UNSUB is
//!   acknowledged by +OK (or -ERR), in order; without it they get no answer
//!   and are exchanges of their own (send only: the span covers the frame on
//!   the wire, no response is waited for).
//! - A non-verbose CONNECT followed by PING (the handshake every client does)
//!   lasts until that PONG or the -ERR refusing it.
//! - A PUB/HPUB whose reply subject is covered by a subscription of the same
//!   connection (`_INBOX.<id>.*` in request-reply clients) is a request: it
//!   lasts until the message delivered on that subject arrives.
//! - MSG/HMSG not answering a request are deliveries to a subscriber.
//!
//! Payloads are skipped as they stream past; only a bounded prefix of an
//! HPUB/HMSG header block is kept, for `traceparent` and the status line.
//! After lost bytes the decoder resynchronises on the next control line.
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, RoleEvidence, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, FifoPairer, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::HashMap;
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::NatsDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "nats")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "nats")]));
static UNMATCHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "nats")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "nats")]));

/// nats-server's max_payload is at most 64 MB.
const MAX_PAYLOAD: u64 = 64 * 1024 * 1024;
/// Header bytes kept per message (trace context and status sit at the start).
const MAX_HEADER_KEPT: usize = 4096;
/// Characters kept of a subject, reply subject, sid, name.
const MAX_TOKEN: usize = 256;
/// Subscriptions remembered per connection (sid → subject).
const MAX_SIDS: usize = 1024;
/// Longest line the probe waits for (INFO/CONNECT JSON).
const PROBE_LINE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Pub,
    Hpub,
    Msg,
    Hmsg,
    Sub,
    Unsub,
    Connect,
    Info,
    Ping,
    Pong,
    Ok,
    Err,
}

impl Op {
    fn parse(word: &[u8]) -> Option<Op> {
        const OPS: [(&[u8], Op); 12] = [
            (b"PUB", Op::Pub),
            (b"HPUB", Op::Hpub),
            (b"MSG", Op::Msg),
            (b"HMSG", Op::Hmsg),
            (b"SUB", Op::Sub),
            (b"UNSUB", Op::Unsub),
            (b"CONNECT", Op::Connect),
            (b"INFO", Op::Info),
            (b"PING", Op::Ping),
            (b"PONG", Op::Pong),
            (b"+OK", Op::Ok),
            (b"-ERR", Op::Err),
        ];
        OPS.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|(_, o)| *o)
    }
    fn name(self) -> &'static str {
        match self {
            Op::Pub => "PUB",
            Op::Hpub => "HPUB",
            Op::Msg => "MSG",
            Op::Hmsg => "HMSG",
            Op::Sub => "SUB",
            Op::Unsub => "UNSUB",
            Op::Connect => "CONNECT",
            Op::Info => "INFO",
            Op::Ping => "PING",
            Op::Pong => "PONG",
            Op::Ok => "+OK",
            Op::Err => "-ERR",
        }
    }
    /// Who sends it.
    fn sent_by_client(self) -> bool {
        matches!(self, Op::Pub | Op::Hpub | Op::Sub | Op::Unsub | Op::Connect | Op::Ping | Op::Pong)
    }
    fn sent_by_server(self) -> bool {
        matches!(self, Op::Msg | Op::Hmsg | Op::Info | Op::Ping | Op::Pong | Op::Ok | Op::Err)
    }
}

/// The CONNECT options cnflow uses. Unknown fields (credentials among them)
/// are skipped by serde without being stored.
#[derive(Debug, Default, serde::Deserialize)]
struct ConnectOpts {
    #[serde(default)]
    verbose: bool,
    name: Option<String>,
    lang: Option<String>,
    version: Option<String>,
}

/// A parsed control line.
#[derive(Debug, Default)]
struct Line {
    op: Option<Op>,
    subject: Option<String>,
    reply: Option<String>,
    sid: Option<String>,
    queue: Option<String>,
    /// Header block size and total payload size (header included).
    hdr: u64,
    total: u64,
    /// -ERR text.
    text: Option<String>,
    /// UNSUB message limit.
    max_msgs: Option<u64>,
    connect: Option<ConnectOpts>,
}

fn token(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(MAX_TOKEN).collect()
}

fn num(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 12 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    let w = line.iter().position(|b| *b == b' ' || *b == b'\t').unwrap_or(line.len());
    let rest = &line[w..];
    let skip = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    (&line[..w], &rest[skip..])
}

/// Parse one control line (without its CRLF). None: not a NATS line.
fn parse_line(line: &[u8]) -> Option<Line> {
    let (word, rest) = split_op(line);
    let op = Op::parse(word)?;
    let args: Vec<&[u8]> = rest.split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty()).take(6).collect();
    let mut l = Line { op: Some(op), ..Default::default() };
    match op {
        Op::Pub => {
            let (subj, reply, n) = match args[..] {
                [s, n] => (s, None, n),
                [s, r, n] => (s, Some(r), n),
                _ => return None,
            };
            l.subject = Some(token(subj));
            l.reply = reply.map(token);
            l.total = num(n)?;
        }
        Op::Hpub => {
            let (subj, reply, h, n) = match args[..] {
                [s, h, n] => (s, None, h, n),
                [s, r, h, n] => (s, Some(r), h, n),
                _ => return None,
            };
            l.subject = Some(token(subj));
            l.reply = reply.map(token);
            (l.hdr, l.total) = (num(h)?, num(n)?);
        }
        Op::Msg => {
            let (subj, sid, reply, n) = match args[..] {
                [s, i, n] => (s, i, None, n),
                [s, i, r, n] => (s, i, Some(r), n),
                _ => return None,
            };
            l.subject = Some(token(subj));
            l.sid = Some(token(sid));
            l.reply = reply.map(token);
            l.total = num(n)?;
        }
        Op::Hmsg => {
            let (subj, sid, reply, h, n) = match args[..] {
                [s, i, h, n] => (s, i, None, h, n),
                [s, i, r, h, n] => (s, i, Some(r), h, n),
                _ => return None,
            };
            l.subject = Some(token(subj));
            l.sid = Some(token(sid));
            l.reply = reply.map(token);
            (l.hdr, l.total) = (num(h)?, num(n)?);
        }
        Op::Sub => {
            let (subj, queue, sid) = match args[..] {
                [s, i] => (s, None, i),
                [s, q, i] => (s, Some(q), i),
                _ => return None,
            };
            l.subject = Some(token(subj));
            l.queue = queue.map(token);
            l.sid = Some(token(sid));
        }
        Op::Unsub => match args[..] {
            [i] => l.sid = Some(token(i)),
            [i, n] => {
                l.max_msgs = Some(num(n)?);
                l.sid = Some(token(i));
            }
            _ => return None,
        },
        Op::Connect => {
            if rest.first() != Some(&b'{') {
                return None;
            }
            l.connect = Some(serde_json::from_slice(rest).unwrap_or_else(|_| {
                PARSE_ERRORS.inc();
                ConnectOpts::default()
            }));
        }
        Op::Info => {
            if rest.first() != Some(&b'{') {
                return None;
            }
        }
        Op::Ping | Op::Pong | Op::Ok => {
            if !args.is_empty() {
                return None;
            }
        }
        Op::Err => {
            let t = String::from_utf8_lossy(rest);
            l.text = Some(t.trim().trim_matches('\'').chars().take(MAX_TOKEN).collect());
        }
    }
    if l.hdr > l.total || l.total > MAX_PAYLOAD {
        return None;
    }
    Some(l)
}

/// Does `data` start with `word` (case-insensitive), or is it a prefix of it?
fn starts(data: &[u8], word: &[u8]) -> Option<bool> {
    let n = data.len().min(word.len());
    if !data[..n].eq_ignore_ascii_case(&word[..n]) {
        return Some(false);
    }
    if n < word.len() {
        return None;
    }
    Some(true)
}

/// Content detection. Strong evidence: the server's INFO {json} (the first
/// bytes of every connection) or the client's CONNECT {json}. Without the
/// connection start, a whole PUB/HPUB (to the server) or MSG/HMSG (to the
/// client) whose payload ends with CRLF where its size says.
pub fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    let (word, key): (&[u8], &[u8]) = match dir {
        StreamDir::ToClient => (b"INFO {", b"\"server_id\""),
        StreamDir::ToServer => (b"CONNECT {", b"\"verbose\""),
    };
    match starts(data, word) {
        None => return Probe::NeedMore,
        // What nats-server and the common clients put first: decisive even
        // when a short snap length cuts the rest of the line.
        Some(true) if data[word.len()..].starts_with(key) => return Probe::Yes(90),
        Some(true) => {
            let Some(nl) = data.iter().take(PROBE_LINE).position(|b| *b == b'\n') else {
                return if data.len() < PROBE_LINE { Probe::NeedMore } else { Probe::No };
            };
            let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
            let json = &line[word.len() - 1..];
            return match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
                Ok(_) if json.windows(key.len()).any(|w| w == key) => Probe::Yes(90),
                Ok(_) => Probe::Yes(60),
                Err(_) => Probe::No,
            };
        }
        Some(false) => {}
    }
    if conn.evidence == RoleEvidence::Syn {
        // The start was seen: it would have been INFO/CONNECT.
        return Probe::No;
    }
    mid_stream(dir, data)
}

fn mid_stream(dir: StreamDir, data: &[u8]) -> Probe {
    // A control line is printable ASCII: control bytes before its end mean
    // another (binary) protocol, so say so now instead of waiting for a line.
    let head = &data[..data.len().min(1024)];
    let head = head.iter().position(|b| *b == b'\n').map_or(head, |nl| &head[..nl]);
    if head.iter().any(|&b| b < 0x20 && b != b'\r' && b != b'\t') {
        return Probe::No;
    }
    let Some(nl) = data.iter().take(1024).position(|b| *b == b'\n') else {
        return if data.len() < 1024 { Probe::NeedMore } else { Probe::No };
    };
    if nl == 0 || data[nl - 1] != b'\r' {
        return Probe::No;
    }
    let Some(l) = parse_line(&data[..nl - 1]) else { return Probe::No };
    let op = l.op.unwrap_or(Op::Ping);
    if dir == StreamDir::ToClient && matches!(op, Op::Ping | Op::Pong) {
        // Keep-alives of an idle connection: a bare PING/PONG line from a
        // server is NATS (a Redis server's reply would be `+PONG`, IRC's
        // PING has an argument). Weak, but no other probe claims it.
        return Probe::Yes(58);
    }
    let ok = match dir {
        StreamDir::ToServer => matches!(op, Op::Pub | Op::Hpub),
        StreamDir::ToClient => matches!(op, Op::Msg | Op::Hmsg),
    };
    if !ok {
        return Probe::No;
    }
    let end = nl + 1 + l.total as usize;
    match data.get(end..end + 2) {
        Some(b"\r\n") => Probe::Yes(65),
        Some(_) => Probe::No,
        None => Probe::NeedMore,
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(NatsDecoder::new(cfg))
}

/// NATS. The registry entry.
pub struct Nats;

impl super::registry::L7Protocol for Nats {
    const NAME: &'static str = "nats";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        port == 4222
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Line,
    /// Payload plus its CRLF still to come.
    Payload,
    /// Looking for the next control line after lost bytes.
    Lost,
}

struct DirRx {
    state: Rx,
    line: Vec<u8>,
    /// Parsed line of the frame whose payload is streaming past.
    cur: Line,
    left: u64,
    hdr: Vec<u8>,
    /// Header bytes of the current frame still to keep.
    hdr_left: u64,
    /// Bytes of the current frame were lost.
    cut: bool,
    start_ns: u64,
    wire: u64,
    /// The decoder joined (or rejoined) the stream: the first frame is whole
    /// but what came before it is unknown.
    resync: Resync,
}

impl DirRx {
    fn new() -> Self {
        Self {
            state: Rx::Line,
            line: Vec::new(),
            cur: Line::default(),
            left: 0,
            hdr: Vec::new(),
            hdr_left: 0,
            cut: false,
            start_ns: 0,
            wire: 0,
            resync: Resync::default(),
        }
    }
}

/// A whole frame: its line, header block prefix and size.
struct Frame {
    line: Line,
    hdr: Vec<u8>,
    start_ns: u64,
    end_ns: u64,
    wire: u64,
    cut: bool,
}

struct Pending {
    start_ns: u64,
    /// Last byte of the request: the end of a send-only exchange.
    sent_ns: u64,
    request_bytes: u64,
    detail: NatsDetail,
    partial: bool,
}

/// A client op waiting for the server's +OK/-ERR (verbose) or PONG.
enum Wait {
    Op(Box<Pending>),
    /// The +OK of a request whose exchange waits for its reply message.
    Ack(String),
}

pub struct NatsDecoder {
    rx: [DirRx; 2],
    verbose: bool,
    name: Option<String>,
    lang: Option<String>,
    version: Option<String>,
    awaiting: FifoPairer<Wait>,
    /// Requests by reply subject.
    inbox: KeyedPairer<String, Pending>,
    /// A non-verbose CONNECT; `pinged` once the handshake PING followed it.
    handshake: Option<(Pending, bool)>,
    /// CONNECT was seen (else the decoder joined mid-connection).
    connected: bool,
    sids: HashMap<String, String>,
    max_buf: usize,
}

impl NatsDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(), DirRx::new()],
            verbose: false,
            name: None,
            lang: None,
            version: None,
            awaiting: FifoPairer::new(cfg.max_pending_per_conn),
            inbox: KeyedPairer::new(cfg.max_pending_per_conn),
            handshake: None,
            connected: false,
            sids: HashMap::new(),
            max_buf: cfg.max_buffer_per_dir.max(256),
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let d = dir.index();
        while !data.is_empty() {
            let rx = &mut self.rx[d];
            match rx.state {
                Rx::Line => {
                    if rx.line.is_empty() {
                        rx.start_ns = ts;
                        rx.cut = false;
                    }
                    let nl = data.iter().position(|b| *b == b'\n');
                    let take = nl.map_or(data.len(), |i| i + 1);
                    if rx.line.len() + take > self.max_buf {
                        PARSE_ERRORS.inc();
                        let carry = std::mem::take(&mut rx.line);
                        rx.state = Rx::Lost;
                        rx.resync.restart(&carry[carry.len().saturating_sub(64)..]);
                        continue;
                    }
                    rx.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if nl.is_none() {
                        continue;
                    }
                    let raw = std::mem::take(&mut rx.line);
                    let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    let parsed = parse_line(text).filter(|l| {
                        let op = l.op.unwrap_or(Op::Ping);
                        if dir == StreamDir::ToServer {
                            op.sent_by_client()
                        } else {
                            op.sent_by_server()
                        }
                    });
                    let Some(line) = parsed else {
                        if !text.is_empty() {
                            PARSE_ERRORS.inc();
                            rx.state = Rx::Lost;
                            rx.resync.restart(&raw[1..]);
                        }
                        rx.line = raw;
                        rx.line.clear();
                        continue;
                    };
                    rx.wire = raw.len() as u64;
                    rx.line = raw;
                    rx.line.clear();
                    if matches!(line.op, Some(Op::Pub | Op::Hpub | Op::Msg | Op::Hmsg)) {
                        rx.left = line.total + 2;
                        rx.hdr.clear();
                        rx.hdr_left = line.hdr.min(MAX_HEADER_KEPT as u64);
                        rx.wire += line.total + 2;
                        rx.cur = line;
                        rx.state = Rx::Payload;
                    } else {
                        let f = Frame {
                            line,
                            hdr: Vec::new(),
                            start_ns: rx.start_ns,
                            end_ns: ts,
                            wire: rx.wire,
                            cut: false,
                        };
                        self.frame(dir, f, out);
                    }
                }
                Rx::Payload => {
                    let n = (rx.left.min(data.len() as u64)) as usize;
                    let keep = (rx.hdr_left as usize).min(n);
                    rx.hdr.extend_from_slice(&data[..keep]);
                    rx.hdr_left -= keep as u64;
                    rx.left -= n as u64;
                    data = &data[n..];
                    if rx.left == 0 {
                        self.finish_payload(dir, ts, out);
                    }
                }
                Rx::Lost => {
                    let found = rx.resync.push(data, self.max_buf, &RESYNC_SKIPPED, |b| find_line(b, dir));
                    data = &[];
                    if let Some((buf, at)) = found {
                        rx.state = Rx::Line;
                        rx.line.clear();
                        self.feed(dir, ts, &buf[at..], out);
                    }
                }
            }
        }
    }

    fn finish_payload(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let rx = &mut self.rx[dir.index()];
        rx.state = Rx::Line;
        let f = Frame {
            line: std::mem::take(&mut rx.cur),
            hdr: std::mem::take(&mut rx.hdr),
            start_ns: rx.start_ns,
            end_ns: ts,
            wire: rx.wire,
            cut: rx.cut,
        };
        rx.cut = false;
        self.frame(dir, f, out);
    }

    fn detail(&self, op: Op, l: &Line) -> NatsDetail {
        NatsDetail {
            op: op.name().to_string(),
            subject: l.subject.clone(),
            reply_to: l.reply.clone(),
            sid: l.sid.clone(),
            queue_group: l.queue.clone(),
            verbose: self.verbose,
            client_name: self.name.clone(),
            client_lang: self.lang.clone(),
            client_version: self.version.clone(),
            ..Default::default()
        }
    }

    fn frame(&mut self, dir: StreamDir, f: Frame, out: &mut Emit) {
        let Some(op) = f.line.op else { return };
        match dir {
            StreamDir::ToServer => self.client_frame(op, f, out),
            StreamDir::ToClient => self.server_frame(op, f, out),
        }
    }

    fn client_frame(&mut self, op: Op, mut f: Frame, out: &mut Emit) {
        if op == Op::Pong {
            // Answer to a server PING: no exchange.
            return;
        }
        if let Some((_, pinged)) = &mut self.handshake {
            if op == Op::Ping && !*pinged {
                *pinged = true;
            } else if !*pinged {
                // No handshake PING: the CONNECT was sent without waiting.
                let (p, _) = self.handshake.take().unwrap();
                let end = p.sent_ns;
                emit(p, end, 0, Outcome::Complete, out);
            }
        }
        if op == Op::Connect {
            self.connected = true;
            let c = f.line.connect.take().unwrap_or_default();
            self.verbose = c.verbose;
            self.name = c.name.map(|s| s.chars().take(MAX_TOKEN).collect());
            self.lang = c.lang.map(|s| s.chars().take(MAX_TOKEN).collect());
            self.version = c.version.map(|s| s.chars().take(MAX_TOKEN).collect());
        }
        let mut detail = self.detail(op, &f.line);
        if matches!(op, Op::Pub | Op::Hpub) {
            detail.payload_bytes = Some(f.line.total - f.line.hdr);
            if op == Op::Hpub {
                detail.header_bytes = Some(f.line.hdr);
                headers(&f.hdr, &mut detail);
            }
        }
        match op {
            Op::Sub => {
                if let (Some(sid), Some(s)) = (&f.line.sid, &f.line.subject) {
                    if self.sids.len() < MAX_SIDS || self.sids.contains_key(sid) {
                        self.sids.insert(sid.clone(), s.clone());
                    }
                }
            }
            Op::Unsub => {
                if let Some(sid) = &f.line.sid {
                    detail.subject = self.sids.get(sid).cloned();
                }
            }
            _ => {}
        }
        let p = Pending { start_ns: f.start_ns, sent_ns: f.end_ns, request_bytes: f.wire, detail, partial: f.cut };
        // A reply subject this connection subscribed to (joined mid-connection,
        // the SUB was missed: an `_INBOX.` subject, by convention the
        // connection's own).
        let request = matches!(op, Op::Pub | Op::Hpub)
            && f.line.reply.as_deref().is_some_and(|r| {
                self.sids.values().take(256).any(|s| subject_matches(s, r))
                    || (!self.connected && r.starts_with("_INBOX."))
            });
        if request {
            let key = f.line.reply.clone().unwrap_or_default();
            let mut p = p;
            p.detail.request = true;
            for old in self.inbox.insert(key.clone(), p.start_ns, p) {
                EVICTED.inc();
                emit(old, f.end_ns, 0, Outcome::Timeout, out);
            }
            if self.verbose {
                self.wait(f.start_ns, Wait::Ack(key), out);
            }
            return;
        }
        match op {
            Op::Ping => self.wait(f.start_ns, Wait::Op(Box::new(p)), out),
            Op::Connect if !self.verbose => self.handshake = Some((p, false)),
            _ if self.verbose => self.wait(f.start_ns, Wait::Op(Box::new(p)), out),
            _ => emit(p, f.end_ns, 0, Outcome::Complete, out),
        }
        if op == Op::Unsub && f.line.max_msgs.is_none() {
            // Without a message limit the subscription ends now.
            if let Some(sid) = &f.line.sid {
                self.sids.remove(sid);
            }
        }
    }

    fn wait(&mut self, ts: u64, w: Wait, out: &mut Emit) {
        if let Some(old) = self.awaiting.push(ts, w) {
            EVICTED.inc();
            self.give_up(old, ts, Outcome::Timeout, out);
        }
    }

    fn give_up(&mut self, w: Wait, end: u64, outcome: Outcome, out: &mut Emit) {
        if let Wait::Op(p) = w {
            emit(*p, end, 0, outcome, out);
        }
    }

    fn server_frame(&mut self, op: Op, f: Frame, out: &mut Emit) {
        match op {
            Op::Msg | Op::Hmsg => {
                let subject = f.line.subject.clone().unwrap_or_default();
                if let Some(mut p) = self.inbox.take(&subject) {
                    if op == Op::Hmsg {
                        let mut d = NatsDetail::default();
                        headers(&f.hdr, &mut d);
                        p.detail.status = d.status;
                    }
                    p.partial |= f.cut;
                    p.detail.response = Some(op.name().into());
                    emit(p, f.end_ns, f.wire, Outcome::Complete, out);
                    return;
                }
                let mut detail = self.detail(op, &f.line);
                detail.payload_bytes = Some(f.line.total - f.line.hdr);
                if op == Op::Hmsg {
                    detail.header_bytes = Some(f.line.hdr);
                    headers(&f.hdr, &mut detail);
                }
                out.push(Exchange {
                    conn: out.conn.clone(),
                    wire: Default::default(),
                    protocol: Protocol::Nats,
                    start_ns: f.start_ns,
                    end_ns: f.end_ns.max(f.start_ns),
                    request_bytes: 0,
                    response_bytes: f.wire,
                    outcome: Outcome::Complete,
                    partial: f.cut,
                    detail: Detail::Nats(detail),
                });
            }
            Op::Pong => {
                if matches!(self.handshake, Some((_, true))) {
                    let (mut p, _) = self.handshake.take().unwrap();
                    p.detail.response = Some("PONG".into());
                    emit(p, f.end_ns, f.wire, Outcome::Complete, out);
                }
                self.answer(op, None, f, out);
            }
            Op::Ok => {
                if !self.verbose && self.awaiting.is_empty() && !self.connected {
                    // Only verbose connections get +OK: the CONNECT saying
                    // so was missed (joined mid-connection, or cut).
                    self.verbose = true;
                    UNMATCHED.inc();
                    return;
                }
                self.answer(op, None, f, out)
            }
            Op::Err => {
                let text = f.line.text.clone();
                if let Some((mut p, _)) = self.handshake.take() {
                    p.detail.error = text;
                    p.detail.response = Some("-ERR".into());
                    emit(p, f.end_ns, f.wire, Outcome::Complete, out);
                } else if self.verbose {
                    self.answer(op, text, f, out);
                } else {
                    // Not verbose: an -ERR answers no particular op (a
                    // permissions violation of an earlier PUB, say).
                    UNMATCHED.inc();
                }
            }
            Op::Info | Op::Ping => {}
            _ => PARSE_ERRORS.inc(),
        }
    }

    /// +OK, PONG or (verbose) -ERR: the oldest waiting op's answer.
    fn answer(&mut self, op: Op, err: Option<String>, f: Frame, out: &mut Emit) {
        match self.awaiting.pop() {
            Some(Wait::Op(mut p)) => {
                p.detail.response = Some(op.name().into());
                p.detail.error = err;
                emit(*p, f.end_ns, f.wire, Outcome::Complete, out);
            }
            Some(Wait::Ack(key)) => {
                if err.is_some() {
                    if let Some(mut p) = self.inbox.take(&key) {
                        p.detail.response = Some(op.name().into());
                        p.detail.error = err;
                        emit(p, f.end_ns, f.wire, Outcome::Complete, out);
                    }
                }
            }
            None => UNMATCHED.inc(),
        }
    }

    fn drain(&mut self, ts: u64, outcome: Outcome, out: &mut Emit) {
        let mut all: Vec<Pending> = Vec::new();
        if let Some((p, pinged)) = self.handshake.take() {
            if pinged {
                all.push(p);
            } else {
                let end = p.sent_ns;
                emit(p, end, 0, Outcome::Complete, out);
            }
        }
        all.extend(self.awaiting.drain().filter_map(|w| match w {
            Wait::Op(p) => Some(*p),
            Wait::Ack(_) => None,
        }));
        all.extend(self.inbox.drain());
        all.sort_by_key(|p| p.start_ns);
        for p in all {
            emit(p, ts, 0, outcome, out);
        }
    }
}

fn emit(p: Pending, end_ns: u64, response_bytes: u64, outcome: Outcome, out: &mut Emit) {
    out.push(Exchange {
        conn: out.conn.clone(),
        wire: Default::default(),
        protocol: Protocol::Nats,
        start_ns: p.start_ns,
        end_ns: end_ns.max(p.start_ns),
        request_bytes: p.request_bytes,
        response_bytes,
        outcome,
        partial: p.partial,
        detail: Detail::Nats(p.detail),
    });
}

/// NATS subject wildcards: `*` one token, `>` the rest (one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for p in pattern.split('.') {
        match (p, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

/// Trace context and status from a header block prefix:
/// `NATS/1.0[ status[ text]]\r\nKey: Value\r\n...\r\n\r\n`.
fn headers(block: &[u8], d: &mut NatsDetail) {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split("\r\n");
    let Some(first) = lines.next() else { return };
    if let Some(rest) = first.strip_prefix("NATS/1.0") {
        d.status = rest.split_whitespace().next().and_then(|s| s.parse().ok());
    }
    // The last line may be cut by the kept-bytes bound: only whole lines count.
    let whole = text.rfind("\r\n").map_or("", |i| &text[..i]);
    for line in whole.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else { continue };
        let k = k.trim().to_ascii_lowercase();
        let trace = matches!(k.as_str(), "traceparent" | "tracestate" | "b3") || k.starts_with("x-b3-");
        if trace && d.trace_headers.len() < 8 {
            d.trace_headers.push((k, v.trim().chars().take(MAX_TOKEN * 2).collect()));
        }
    }
}

/// Offset of the first plausible control line of `dir` in `buf` (at the
/// start of the kept bytes or right after a line feed).
fn find_line(buf: &[u8], dir: StreamDir) -> Option<usize> {
    let starts = std::iter::once(0).chain(buf.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1));
    for i in starts {
        let rest = &buf[i..];
        let Some(nl) = rest.iter().take(4096).position(|b| *b == b'\n') else { continue };
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        let ok = parse_line(line).and_then(|l| l.op).is_some_and(|op| match dir {
            StreamDir::ToServer => op.sent_by_client(),
            StreamDir::ToClient => op.sent_by_server(),
        });
        if ok {
            return Some(i);
        }
    }
    None
}

impl ConnDecoder for NatsDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if len == 0 {
            return;
        }
        let rx = &mut self.rx[dir.index()];
        match rx.state {
            Rx::Payload if len <= rx.left => {
                // Inside one payload (up to its end): skip it, the framing survives.
                rx.left -= len;
                rx.cut = true;
                rx.hdr_left = 0;
                if rx.left == 0 {
                    self.finish_payload(dir, ts_ns, out);
                }
            }
            Rx::Payload => {
                rx.cut = true;
                rx.hdr_left = 0;
                self.finish_payload(dir, ts_ns, out);
                let rx = &mut self.rx[dir.index()];
                rx.state = Rx::Lost;
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
            Rx::Line | Rx::Lost => {
                rx.state = Rx::Lost;
                rx.line.clear();
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        self.drain(ts_ns, outcome, out);
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let mut old: Vec<Pending> = Vec::new();
        if matches!(&self.handshake, Some((p, true)) if p.start_ns < deadline_ns) {
            old.push(self.handshake.take().unwrap().0);
        }
        for w in self.awaiting.expire(deadline_ns) {
            if let Wait::Op(p) = w {
                old.push(*p);
            }
        }
        old.extend(self.inbox.expire(deadline_ns));
        for p in old {
            let end = p.start_ns;
            emit(p, end, 0, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests;
