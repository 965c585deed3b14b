//! memcached: the text protocol (classic and meta commands) and the binary
//! protocol, found by content on any port.
//!
//! One connection speaks one of them, chosen by its first client byte as
//! memcached itself does (0x80: binary). Text replies are paired in order;
//! `noreply` requests get no reply, so they become exchanges at once, never
//! paired with a later command's reply. Quiet requests (meta `q`, binary
//! quiet opcodes) get a reply only when it is worth sending (a hit, a
//! failure): a reply, a meta opaque (`O`) or binary opaque that names a
//! later request, or the `mn`/noop that ends a quiet batch, tells that the
//! ones before it succeeded silently. Values are never kept: data blocks and
//! binary values are skipped as they stream past, so memory per connection
//! is one line (text) or one header with its key (binary).
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, RoleEvidence, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::VecDeque;
use std::sync::LazyLock;

pub mod binary;
mod detail;
pub mod semconv;
#[cfg(test)]
mod tests;
pub mod text;
pub use detail::MemcachedDetail;

use binary::{Header, HEADER, REQ_MAGIC, RESP_MAGIC};
use text::{parse_request, parse_response, ReqLine, RespLine, MAX_LINE};

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "memcached")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "memcached")]));
static UNPAIRED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unpaired_responses", &[("protocol", "memcached")]));
static SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "memcached")]));

/// Length of `query_raw`.
const MAX_RAW: usize = 256;
/// Arguments shown as `?` in `query_masked` before "...".
const MAX_MASKED: usize = 16;
/// Error text kept.
const MAX_ERROR: usize = 256;
/// Bytes of a connection's start looked at by the probe.
const PROBE_WINDOW: usize = 2048;

// ---------------------------------------------------------------- detection

/// Does the first data of one direction look like memcached? (See [`probe_flow`].)
pub fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    match dir {
        StreamDir::ToServer => probe_flow(conn, data, b""),
        StreamDir::ToClient => probe_flow(conn, b"", data),
    }
}

/// Evidence, strongest first: a request answered by a memcached reply; a
/// binary request header (magic, known opcode with its extras length, raw
/// data type, consistent lengths); a text request only memcached words that
/// way (a storage line with its numeric fields, a meta command, a multi-key
/// get, gat, incr with a delta). A lone `get key` or `version` waits for the
/// reply. The server never speaks first.
pub fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
    let syn = conn.evidence == RoleEvidence::Syn;
    if syn && to_server.is_empty() && !to_client.is_empty() {
        return Probe::No;
    }
    if to_server.first() == Some(&REQ_MAGIC) || (!syn && to_client.first() == Some(&RESP_MAGIC)) {
        return probe_binary(syn, to_server, to_client);
    }
    if syn {
        probe_text(to_server, to_client)
    } else {
        probe_text_mid(to_server, to_client)
    }
}

fn probe_binary(syn: bool, to_server: &[u8], to_client: &[u8]) -> Probe {
    let req = |d: &[u8]| -> Option<Header> {
        if syn {
            Header::parse(d).filter(|h| h.magic == REQ_MAGIC && h.plausible())
        } else {
            let at = binary::find_header(&d[..d.len().min(PROBE_WINDOW)], REQ_MAGIC)?;
            Header::parse(&d[at..])
        }
    };
    let resp = |d: &[u8]| -> Option<Header> {
        let at = if syn { 0 } else { binary::find_header(&d[..d.len().min(PROBE_WINDOW)], RESP_MAGIC)? };
        Header::parse(&d[at..]).filter(|h| h.magic == RESP_MAGIC && h.plausible())
    };
    if to_server.len() < HEADER && (syn || to_server.is_empty()) && to_client.len() < HEADER {
        return Probe::NeedMore;
    }
    match (req(to_server), resp(to_client)) {
        (Some(q), Some(r)) if !syn || q.opcode == r.opcode => Probe::Yes(90),
        (Some(_), None) if to_client.len() >= HEADER => Probe::No,
        (Some(_), None) if syn => Probe::Yes(70),
        (Some(_), None) | (None, Some(_)) if to_server.len().max(to_client.len()) < PROBE_WINDOW => Probe::NeedMore,
        _ => Probe::No,
    }
}

/// The first line of `data`: Some(Ok(line)), Some(Err(())) when no line
/// can come (too long), None when more bytes may complete it.
fn first_line(data: &[u8]) -> Option<Result<&[u8], ()>> {
    match data.iter().take(PROBE_WINDOW).position(|&b| b == b'\n') {
        Some(nl) => Some(Ok(data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]))),
        None if data.len() >= PROBE_WINDOW => Some(Err(())),
        None => None,
    }
}

/// A request line only memcached sends: checked fields, a key or a data block.
fn specific(r: &ReqLine) -> bool {
    r.strict && (r.keys > 0 || r.data_len.is_some())
}

fn probe_text(to_server: &[u8], to_client: &[u8]) -> Probe {
    let req = match first_line(to_server) {
        Some(Ok(line)) => match parse_request(line) {
            Some(r) => r,
            // A known command with bad arguments, answered as memcached answers it.
            None if text::known_command(line) => {
                return match first_line(to_client) {
                    Some(Ok(l)) if l.starts_with(b"CLIENT_ERROR ") || l == b"ERROR" => Probe::Yes(75),
                    None => Probe::NeedMore,
                    Some(_) => Probe::No,
                };
            }
            None => return Probe::No,
        },
        Some(Err(())) => return Probe::No,
        None => {
            // Memcached words are lower case; anything else is not a command start.
            let word = to_server.iter().take_while(|b| b.is_ascii_lowercase() || **b == b'_').count();
            let more = word == to_server.len() || to_server[word] == b' ';
            return if more && word > 0 { Probe::NeedMore } else { Probe::No };
        }
    };
    match first_line(to_client) {
        Some(Ok(line)) if parse_response(line).is_some() => Probe::Yes(85),
        Some(_) => Probe::No,
        None if specific(&req) => Probe::Yes(65),
        None => Probe::NeedMore,
    }
}

/// Line starts within the probe window.
fn line_starts(data: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let w = &data[..data.len().min(PROBE_WINDOW)];
    std::iter::once(0)
        .chain(w.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1))
        .filter(move |&i| i < data.len())
        .map(move |i| &data[i..])
}

/// Joined mid-connection: either side may start inside a message, so look
/// for a whole specific request line and a non-numeric reply line anywhere
/// near the start.
fn probe_text_mid(to_server: &[u8], to_client: &[u8]) -> Probe {
    // Control bytes before the first line end on every side that sent
    // anything: a binary protocol (MySQL, PostgreSQL...), not memcached text.
    // Waiting for a line here would hold back that protocol's detection.
    let binary_head = |d: &[u8]| {
        let w = &d[..d.len().min(PROBE_WINDOW)];
        let head = w.iter().position(|&b| b == b'\n').map_or(w, |nl| &w[..nl]);
        head.iter().any(|&b| b < 0x20 && b != b'\r' && b != b'\t')
    };
    if (!to_server.is_empty() || !to_client.is_empty())
        && (to_server.is_empty() || binary_head(to_server))
        && (to_client.is_empty() || binary_head(to_client))
    {
        return Probe::No;
    }
    let req = line_starts(to_server)
        .any(|d| matches!(first_line(d), Some(Ok(l)) if parse_request(l).is_some_and(|r| specific(&r))));
    let resp = line_starts(to_client).any(|d| {
        matches!(first_line(d), Some(Ok(l)) if !l.first().is_some_and(u8::is_ascii_digit) && parse_response(l).is_some())
    });
    if req && resp {
        Probe::Yes(60)
    } else if to_server.len() >= PROBE_WINDOW || to_client.len() >= PROBE_WINDOW {
        Probe::No
    } else {
        Probe::NeedMore
    }
}

/// memcached (text, meta and binary protocols). The registry entry.
pub struct Memcached;

impl super::registry::L7Protocol for Memcached {
    const NAME: &'static str = "memcached";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
        probe_flow(conn, to_server, to_client)
    }
    fn port_hint(port: u16) -> bool {
        port == 11211
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        Box::new(MemcachedDecoder::new(cfg))
    }
}

// ---------------------------------------------------------------- decoder

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Text,
    Binary,
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    ts: u64,
    bytes: u64,
    detail: MemcachedDetail,
    partial: bool,
    quiet: bool,
    retrieval: bool,
    /// Binary: opcode and opaque the reply carries.
    opcode: u8,
    opaque: u32,
    /// Binary stats: replies so far (it ends with an empty one).
    resp_bytes: u64,
    /// Meta: the key, to match a quiet reply carrying `k<key>`.
    key: Option<Vec<u8>>,
}

/// A reply being read (text) or read (binary).
#[derive(Debug, Default)]
struct Reply {
    ts: u64,
    bytes: u64,
    /// First word ("VALUE", "STORED", "HD", ...), or the binary status name.
    word: String,
    hits: u32,
    error_code: Option<String>,
    error: Option<String>,
    opaque: Option<String>,
    /// Meta `k` flag: the key the reply is about.
    key: Option<Vec<u8>>,
    partial: bool,
    /// Text: more lines belong to it (VALUE / STAT until END).
    multi: bool,
}

/// One direction's framing state.
#[derive(Debug, Default)]
struct Side {
    buf: Vec<u8>,
    /// Bytes of a data block (text, CRLF included) or binary value still to skip.
    skip: u64,
    /// Framing lost: looking for a message start.
    resync: bool,
    /// Text request whose data block is being skipped.
    req: Option<(ReqLine, u64, u64, String)>,
    /// Binary message whose value is being skipped: header, key, start ts.
    bin: Option<(Header, Vec<u8>, u64, bool)>,
    reply: Option<Reply>,
    /// The reply in progress ends with its data block (meta VA).
    ends_with_block: bool,
    /// Bytes of the request in progress were lost (inside its data block).
    req_partial: bool,
}

impl Side {
    fn at_boundary(&self) -> bool {
        self.buf.is_empty()
            && self.skip == 0
            && !self.resync
            && self.req.is_none()
            && self.bin.is_none()
            && self.reply.is_none()
    }
}

pub struct MemcachedDecoder {
    cfg: DecodeConfig,
    mode: Mode,
    started: bool,
    req: Side,
    resp: Side,
    pending: VecDeque<Pending>,
    /// Framing was lost somewhere: pairs are uncertain until the queue drains.
    desync: bool,
}

fn masked(cmd: &str, argc: u32) -> String {
    let mut s = cmd.to_string();
    for _ in 0..(argc as usize).min(MAX_MASKED) {
        s.push_str(" ?");
    }
    if argc as usize > MAX_MASKED {
        s.push_str(" ...");
    }
    s
}

/// Replies a quiet meta request still gets (memcached's protocol.txt: `q`
/// hides EN for mg, HD for ms and ma, HD and NF for md; errors always show).
fn quiet_shows(cmd: &str, word: &str) -> bool {
    let shown: &[&str] = match cmd {
        "mg" => &["VA", "HD"],
        "ms" => &["NS", "EX", "NF"],
        "md" => &["EX"],
        "ma" => &["NS", "EX", "NF", "VA"],
        _ => &[],
    };
    shown.contains(&word) || matches!(word, "ERROR" | "CLIENT_ERROR" | "SERVER_ERROR")
}

fn bounded(b: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// The command word of a line memcached did not parse (it answers ERROR or
/// CLIENT_ERROR to it), or None for bytes that are no command at all.
fn unknown_command(line: &[u8]) -> Option<String> {
    if line.is_empty() || line.iter().any(|&b| b < 0x20 && b != b'\t' || b >= 0x7f) {
        return None;
    }
    let w = text::words(line).next()?;
    (w.len() <= 32 && w.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')).then(|| bounded(w, 32))
}

impl MemcachedDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            mode: Mode::Unknown,
            started: false,
            req: Side::default(),
            resp: Side::default(),
            pending: VecDeque::new(),
            desync: false,
        }
    }

    fn start(&mut self, conn: &Conn, dir: StreamDir, data: &[u8]) {
        if !self.started {
            self.started = true;
            if conn.evidence != RoleEvidence::Syn {
                // Joined mid-connection: the first bytes may be the middle of a message.
                self.req.resync = true;
                self.resp.resync = true;
                self.desync = true;
            }
        }
        if self.mode == Mode::Unknown && !data.is_empty() {
            let binary = match (dir, conn.evidence) {
                (StreamDir::ToServer, RoleEvidence::Syn) => data[0] == REQ_MAGIC,
                (StreamDir::ToServer, _) => binary::find_header(data, REQ_MAGIC).is_some(),
                (StreamDir::ToClient, _) => binary::find_header(data, RESP_MAGIC).is_some(),
            };
            self.mode = if binary { Mode::Binary } else { Mode::Text };
        }
    }

    fn push_pending(&mut self, p: Pending, out: &mut Emit) {
        if self.pending.len() >= self.cfg.max_pending_per_conn.max(1) {
            if let Some(old) = self.pending.pop_front() {
                EVICTED.inc();
                let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
                Self::emit(old, None, end, Outcome::Timeout, out);
            }
        }
        self.pending.push_back(p);
    }

    fn emit(p: Pending, reply: Option<Reply>, end: u64, outcome: Outcome, out: &mut Emit) {
        let mut d = p.detail;
        let mut partial = p.partial;
        let mut resp_bytes = p.resp_bytes;
        if let Some(r) = reply {
            partial |= r.partial;
            resp_bytes += r.bytes;
            if p.retrieval {
                d.hits = Some(r.hits);
            }
            d.error_code = r.error_code;
            d.error = r.error;
            d.response = Some(r.word);
        } else if d.quiet_suppressed && p.retrieval {
            d.hits = Some(0);
        }
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Memcached,
            start_ns: p.ts,
            end_ns: end.max(p.ts),
            request_bytes: p.bytes,
            response_bytes: resp_bytes,
            outcome,
            partial,
            detail: Detail::Memcached(d),
        });
    }

    /// A request without reply: an exchange at once.
    fn emit_noreply(&self, p: Pending, out: &mut Emit) {
        let ts = p.ts;
        Self::emit(p, None, ts, Outcome::Complete, out);
    }

    fn after_pair(&mut self) {
        if self.pending.is_empty() && self.req.at_boundary() && self.resp.at_boundary() {
            self.desync = false;
        }
    }

    // ------------------------------------------------------------ text

    fn text_request(&mut self, r: ReqLine, raw: String, ts: u64, bytes: u64, out: &mut Emit) {
        let meta = text::META.contains(&r.cmd.as_str());
        let key = if meta { text::words(raw.as_bytes()).nth(1).map(<[u8]>::to_vec) } else { None };
        let retrieval = matches!(r.cmd.as_str(), "get" | "gets" | "gat" | "gats" | "mg");
        let detail = MemcachedDetail {
            protocol: if meta { "meta" } else { "text" },
            query_masked: masked(&r.cmd, r.argc),
            query_raw: raw,
            command: r.cmd,
            key_count: r.keys,
            noreply: r.noreply,
            opaque: r.opaque,
            ..Default::default()
        };
        let p = Pending {
            ts,
            bytes,
            detail,
            partial: self.desync,
            quiet: r.quiet,
            retrieval,
            opcode: 0,
            opaque: 0,
            resp_bytes: 0,
            key,
        };
        if r.noreply || p.detail.command == "quit" {
            self.emit_noreply(p, out);
        } else {
            self.push_pending(p, out);
        }
    }

    fn text_reply(&mut self, r: Reply, out: &mut Emit) {
        // Quiet requests before the one this reply answers succeeded silently:
        // a reply names a later request by its opaque, or is one a quiet
        // request of that command never sends (its success, MN).
        while let Some(front) = self.pending.front() {
            if !front.quiet {
                break;
            }
            let other = match (&r.opaque, &front.detail.opaque) {
                (Some(a), Some(b)) => a != b,
                (Some(_), None) => true,
                _ => {
                    !quiet_shows(&front.detail.command, &r.word)
                        || matches!((&r.key, &front.key), (Some(a), Some(b)) if a != b)
                }
            };
            if !other {
                break;
            }
            let mut p = self.pending.pop_front().unwrap();
            p.detail.quiet_suppressed = true;
            p.detail.response = Some(if p.detail.command == "mg" { "EN" } else { "HD" }.to_string());
            Self::emit(p, None, r.ts, Outcome::Complete, out);
        }
        // A reply that ended before the request was sent is not its reply
        // (the tail of one whose request the capture missed).
        if self.pending.front().is_some_and(|p| p.ts > r.ts) {
            UNPAIRED.inc();
            return;
        }
        let Some(p) = self.pending.pop_front() else {
            UNPAIRED.inc();
            self.desync = false;
            return;
        };
        let end = r.ts;
        let mut p = p;
        p.partial |= self.desync;
        Self::emit(p, Some(r), end, Outcome::Complete, out);
        self.after_pair();
    }

    fn feed_text(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        let side = match dir {
            StreamDir::ToServer => &mut self.req,
            StreamDir::ToClient => &mut self.resp,
        };
        let mut input = std::mem::take(&mut side.buf);
        input.extend_from_slice(data);
        let mut pos = 0;
        while pos < input.len() {
            let side = match dir {
                StreamDir::ToServer => &mut self.req,
                StreamDir::ToClient => &mut self.resp,
            };
            if side.skip > 0 {
                let k = side.skip.min((input.len() - pos) as u64);
                side.skip -= k;
                pos += k as usize;
                if let Some((_, _, bytes, _)) = side.req.as_mut() {
                    *bytes += k;
                }
                if let Some(r) = side.reply.as_mut() {
                    r.bytes += k;
                    r.ts = ts;
                }
                if side.skip == 0 {
                    self.text_block_done(dir, out);
                }
                continue;
            }
            let rest = &input[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else { break };
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            let n = nl as u64 + 1;
            pos += nl + 1;
            match dir {
                StreamDir::ToServer => self.text_req_line(line, ts, n, out),
                StreamDir::ToClient => self.text_resp_line(line, ts, n, out),
            }
        }
        let side = match dir {
            StreamDir::ToServer => &mut self.req,
            StreamDir::ToClient => &mut self.resp,
        };
        input.drain(..pos);
        if input.len() > MAX_LINE {
            PARSE_ERRORS.inc();
            SKIPPED.add(input.len() as u64);
            input.clear();
            side.resync = true;
            self.desync = true;
        }
        let side = match dir {
            StreamDir::ToServer => &mut self.req,
            StreamDir::ToClient => &mut self.resp,
        };
        side.buf = input;
    }

    fn text_block_done(&mut self, dir: StreamDir, out: &mut Emit) {
        match dir {
            StreamDir::ToServer => {
                if let Some((r, ts, bytes, raw)) = self.req.req.take() {
                    let desync = self.desync;
                    self.desync |= std::mem::take(&mut self.req.req_partial);
                    self.text_request(r, raw, ts, bytes, out);
                    self.desync = desync;
                }
            }
            StreamDir::ToClient => {
                if std::mem::take(&mut self.resp.ends_with_block) {
                    if let Some(r) = self.resp.reply.take() {
                        self.text_reply(r, out);
                    }
                }
            }
        }
    }

    fn text_req_line(&mut self, line: &[u8], ts: u64, n: u64, out: &mut Emit) {
        let parsed = parse_request(line);
        if self.req.resync {
            if parsed.is_none() {
                SKIPPED.add(n);
                return;
            }
            self.req.resync = false;
        }
        let raw = bounded(line, MAX_RAW);
        match parsed {
            Some(r) => match r.data_len {
                Some(len) => {
                    self.req.skip = len + 2;
                    self.req.req = Some((r, ts, n, raw));
                }
                None => self.text_request(r, raw, ts, n, out),
            },
            None => {
                if line.is_empty() {
                    return;
                }
                PARSE_ERRORS.inc();
                // memcached answers a line it cannot parse (ERROR, CLIENT_ERROR): pair it.
                match unknown_command(line) {
                    Some(cmd) => {
                        let r = ReqLine {
                            cmd,
                            argc: text::words(line).count().saturating_sub(1) as u32,
                            ..Default::default()
                        };
                        self.text_request(r, raw, ts, n, out);
                    }
                    None => {
                        self.req.resync = true;
                        self.desync = true;
                    }
                }
            }
        }
    }

    fn text_resp_line(&mut self, line: &[u8], ts: u64, n: u64, out: &mut Emit) {
        let parsed = parse_response(line);
        if self.resp.resync {
            // Restart on a line that begins a reply (not the END of one cut in half).
            if parsed.is_none() {
                SKIPPED.add(n);
                return;
            }
            self.resp.resync = false;
        }
        let Some(kind) = parsed else {
            PARSE_ERRORS.inc();
            if let Some(mut r) = self.resp.reply.take() {
                r.partial = true;
                self.text_reply(r, out);
            }
            self.resp.resync = true;
            self.desync = true;
            return;
        };
        let mut words = text::words(line);
        let first = bounded(words.next().unwrap_or_default(), 32);
        // A multi-line reply (VALUE/STAT) goes on until END.
        if let Some(r) = self.resp.reply.as_mut() {
            if r.multi {
                r.bytes += n;
                r.ts = ts;
                match kind {
                    RespLine::Value(len) if r.word == "VALUE" || r.word == "END" => {
                        r.hits += 1;
                        self.resp.skip = len + 2;
                        return;
                    }
                    RespLine::Stat => return,
                    _ if first == "END" => {
                        let r = self.resp.reply.take().unwrap();
                        self.text_reply(r, out);
                        return;
                    }
                    _ => {
                        // Anything else ends it unfinished.
                        r.bytes -= n;
                        let mut r = self.resp.reply.take().unwrap();
                        r.partial = true;
                        self.text_reply(r, out);
                    }
                }
            }
        }
        let mut r = Reply { ts, bytes: n, word: first.clone(), ..Default::default() };
        let opaque = text::words(line).skip(1).find(|w| w.first() == Some(&b'O'));
        if matches!(first.as_str(), "HD" | "EN" | "NF" | "NS" | "EX" | "VA") {
            r.opaque = opaque.map(|o| bounded(&o[1..], 32));
            r.key = text::words(line).skip(1).find(|w| w.first() == Some(&b'k')).map(|k| k[1..].to_vec());
        }
        match kind {
            RespLine::Value(len) => {
                r.hits = 1;
                r.multi = true;
                self.resp.skip = len + 2;
                self.resp.reply = Some(r);
            }
            RespLine::Stat => {
                r.multi = true;
                self.resp.reply = Some(r);
            }
            RespLine::Va(len) => {
                r.hits = 1;
                self.resp.skip = len + 2;
                self.resp.ends_with_block = true;
                self.resp.reply = Some(r);
            }
            RespLine::Single => {
                if matches!(first.as_str(), "ERROR" | "CLIENT_ERROR" | "SERVER_ERROR") {
                    let text = line.get(first.len() + 1..).unwrap_or_default();
                    r.error = (!text.is_empty()).then(|| bounded(text, MAX_ERROR));
                    r.error_code = Some(first.clone());
                }
                if first == "HD" {
                    // mg without v: a hit answered with flags only.
                    r.hits = 1;
                }
                if first.as_bytes()[0].is_ascii_digit() {
                    // incr/decr's new value is data, not a status.
                    r.word = "value".to_string();
                }
                self.text_reply(r, out);
            }
        }
    }

    // ------------------------------------------------------------ binary

    fn feed_binary(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        let magic = if dir == StreamDir::ToServer { REQ_MAGIC } else { RESP_MAGIC };
        let mut input = {
            let side = self.side(dir);
            let mut b = std::mem::take(&mut side.buf);
            b.extend_from_slice(data);
            b
        };
        let mut pos = 0;
        loop {
            let side = self.side(dir);
            if side.skip > 0 {
                let k = side.skip.min((input.len() - pos) as u64);
                side.skip -= k;
                pos += k as usize;
                if side.skip > 0 {
                    break;
                }
                if let Some((h, key, start, partial)) = side.bin.take() {
                    self.binary_message(dir, h, key, start, ts, partial, out);
                }
                continue;
            }
            let side = self.side(dir);
            if side.resync {
                match binary::find_header(&input[pos..], magic) {
                    Some(at) => {
                        SKIPPED.add(at as u64);
                        pos += at;
                        side.resync = false;
                    }
                    None => {
                        // Keep only what may still become a header.
                        let keep = (input.len() - pos).min(HEADER - 1);
                        SKIPPED.add((input.len() - pos - keep) as u64);
                        pos = input.len() - keep;
                        break;
                    }
                }
            }
            let rest = &input[pos..];
            let Some(h) = Header::parse(rest) else { break };
            if h.magic != magic || !h.plausible() {
                PARSE_ERRORS.inc();
                let side = self.side(dir);
                side.resync = true;
                self.desync = true;
                pos += 1;
                continue;
            }
            let head = HEADER + h.extras_len as usize + h.key_len as usize;
            if rest.len() < head {
                break;
            }
            let key = rest[HEADER + h.extras_len as usize..head].to_vec();
            pos += head;
            let side = self.side(dir);
            side.skip = h.body_len as u64 - h.extras_len as u64 - h.key_len as u64;
            if side.skip == 0 {
                self.binary_message(dir, h, key, ts, ts, false, out);
            } else {
                side.bin = Some((h, key, ts, false));
            }
        }
        input.drain(..pos);
        self.side(dir).buf = input;
    }

    fn side(&mut self, dir: StreamDir) -> &mut Side {
        match dir {
            StreamDir::ToServer => &mut self.req,
            StreamDir::ToClient => &mut self.resp,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn binary_message(
        &mut self,
        dir: StreamDir,
        h: Header,
        key: Vec<u8>,
        start: u64,
        end: u64,
        partial: bool,
        out: &mut Emit,
    ) {
        let bytes = HEADER as u64 + h.body_len as u64;
        let Some(op) = binary::opcode(h.opcode) else { return };
        match dir {
            StreamDir::ToServer => {
                let has_key = h.key_len > 0;
                // SASL: the key is the mechanism, the value the credentials (never kept).
                let sasl = op.name.starts_with("sasl");
                let detail = MemcachedDetail {
                    protocol: "binary",
                    command: op.name.to_string(),
                    opcode: Some(h.opcode),
                    key_count: has_key as u32,
                    query_masked: masked(op.name, has_key as u32),
                    query_raw: if has_key && !sasl {
                        format!("{} {}", op.name, bounded(&key, MAX_RAW))
                    } else {
                        op.name.to_string()
                    },
                    opaque: (h.opaque != 0).then(|| h.opaque.to_string()),
                    ..Default::default()
                };
                let p = Pending {
                    ts: start,
                    bytes,
                    detail,
                    partial: partial || self.desync,
                    quiet: op.quiet,
                    retrieval: op.retrieval,
                    opcode: h.opcode,
                    opaque: h.opaque,
                    resp_bytes: 0,
                    key: None,
                };
                if h.opcode == 0x17 {
                    // QuitQ: no reply.
                    self.emit_noreply(p, out);
                } else {
                    self.push_pending(p, out);
                }
            }
            StreamDir::ToClient => {
                let Some(i) = self.pending.iter().position(|p| p.opcode == h.opcode && p.opaque == h.opaque) else {
                    UNPAIRED.inc();
                    return;
                };
                // Stats: one reply per statistic, an empty one ends them.
                if h.opcode == 0x10 && h.key_len > 0 && h.status == 0 {
                    self.pending[i].resp_bytes += bytes;
                    return;
                }
                for _ in 0..i {
                    let mut p = self.pending.pop_front().unwrap();
                    if p.quiet {
                        p.detail.quiet_suppressed = true;
                        p.detail.response = Some(if p.retrieval { "key_not_found" } else { "success" }.to_string());
                        Self::emit(p, None, end, Outcome::Complete, out);
                    } else {
                        // Its reply was lost.
                        p.partial = true;
                        Self::emit(p, None, end, Outcome::Timeout, out);
                    }
                }
                let mut p = self.pending.pop_front().unwrap();
                p.partial |= self.desync;
                let word = binary::status_name(h.status).unwrap_or("unknown").to_string();
                let err = binary::is_error(h.status);
                let reply = Reply {
                    ts: end,
                    bytes,
                    hits: (h.status == 0) as u32,
                    error_code: err.then(|| format!("0x{:04x}", h.status)),
                    error: err.then(|| word.clone()),
                    word,
                    partial,
                    ..Default::default()
                };
                Self::emit(p, Some(reply), end, Outcome::Complete, out);
                self.after_pair();
            }
        }
    }

    fn gap(&mut self, dir: StreamDir, len: u64, out: &mut Emit) {
        let side = self.side(dir);
        if side.buf.is_empty() && side.skip >= len {
            // Lost bytes inside a value: only the value is missing.
            side.skip -= len;
            if let Some(b) = side.bin.as_mut() {
                b.3 = true;
            }
            if let Some(r) = side.req.as_mut() {
                r.2 += len;
                side.req_partial = true;
            }
            if let Some(r) = side.reply.as_mut() {
                r.partial = true;
                r.bytes += len;
            }
            let done = side.skip == 0;
            if done {
                match self.mode {
                    Mode::Binary => {
                        if let Some((h, key, start, _)) = self.side(dir).bin.take() {
                            self.binary_message(dir, h, key, start, start, true, out);
                        }
                    }
                    _ => self.text_block_done(dir, out),
                }
            }
            return;
        }
        // Framing lost: what was in flight is handed out partial.
        let side = self.side(dir);
        side.buf.clear();
        side.skip = 0;
        side.resync = true;
        side.ends_with_block = false;
        let req = side.req.take();
        let reply = side.reply.take();
        let bin = side.bin.take();
        self.desync = true;
        if let Some((r, ts, bytes, raw)) = req {
            self.req.req_partial = false;
            self.text_request(r, raw, ts, bytes + len, out);
        }
        if let Some(mut r) = reply {
            r.partial = true;
            r.bytes += len;
            self.text_reply(r, out);
        }
        if let Some((h, key, start, _)) = bin {
            self.binary_message(dir, h, key, start, start, true, out);
        }
    }
}

impl ConnDecoder for MemcachedDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.start(out.conn, dir, data);
        match self.mode {
            Mode::Binary => self.feed_binary(dir, ts_ns, data, out),
            _ => self.feed_text(dir, ts_ns, data, out),
        }
    }

    fn on_gap(&mut self, dir: StreamDir, _ts_ns: u64, len: u64, out: &mut Emit) {
        self.start(out.conn, dir, b"");
        self.gap(dir, len, out);
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        for mut p in self.pending.drain(..).collect::<Vec<_>>() {
            if p.quiet {
                // Never answered and never contradicted: most likely a quiet success,
                // but nothing said so.
                p.partial = true;
            }
            Self::emit(p, None, ts_ns, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        while self.pending.front().is_some_and(|p| p.ts < deadline_ns) {
            let p = self.pending.pop_front().unwrap();
            Self::emit(p, None, end, Outcome::Timeout, out);
        }
    }
}
