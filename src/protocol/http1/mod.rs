//! HTTP/1.0 and HTTP/1.1 (httparse for message heads).
//!
//! Each direction is a small state machine: head → body (Content-Length,
//! chunked, or until close) → head. Bodies are skipped without buffering, so
//! bytes lost inside a body (gaps, snap length) cost nothing. Requests queue
//! in order (keep-alive, pipelining) and each final response takes the oldest.
//! Interim 1xx responses (100-continue) are counted into the final exchange.
//!
//! `Upgrade: h2c` answered by `101`: the connection is handed to the HTTP/2
//! decoder ([`super::http2::new_upgraded_decoder`]) together with the
//! upgrade request, which becomes stream 1 there (it never appears as an
//! HTTP/2 HEADERS frame); the HTTP/2 decoder pairs it with the HEADERS that
//! answer stream 1 and emits it as an HTTP/2 exchange. No HTTP/1 exchange is
//! emitted for the 101 itself. Other upgrades (WebSocket) and CONNECT tunnels
//! emit the handshake exchange and then ignore the rest of the connection.
use super::http::HttpDetail;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, FifoPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::sync::LazyLock;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "http1")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "http1")]));

const METHODS: [&[u8]; 9] = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"];
const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-parentspanid",
    "x-b3-flags",
];
const MAX_HEADERS: usize = 96;
/// Longest value kept for any decoded string field.
const MAX_FIELD: usize = 2048;
/// Longest reason phrase kept (real ones are a few words).
const MAX_REASON: usize = 256;

/// Does the first data of a connection look like HTTP/1? `dir` is the direction of `data`.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    match dir {
        StreamDir::ToServer => probe_request(data),
        StreamDir::ToClient => probe_response(data),
    }
}

fn probe_request(data: &[u8]) -> Probe {
    let Some(sp) = data.iter().take(8).position(|&b| b == b' ') else {
        let partial = METHODS.iter().any(|m| m.starts_with(data));
        return if partial && data.len() < 8 { Probe::NeedMore } else { Probe::No };
    };
    if !METHODS.contains(&&data[..sp]) {
        return Probe::No;
    }
    let rest = &data[sp + 1..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
                Probe::Yes(95)
            } else {
                Probe::No
            }
        }
        // An origin-form target is already specific; inline Redis ("GET key") is not.
        None if rest.first() == Some(&b'/') => Probe::Yes(75),
        None if rest.len() < 2048 => Probe::NeedMore,
        None => Probe::No,
    }
}

fn probe_response(data: &[u8]) -> Probe {
    const P: &[u8] = b"HTTP/1.";
    if data.len() < P.len() + 5 {
        let n = data.len().min(P.len());
        return if data[..n] == P[..n] { Probe::NeedMore } else { Probe::No };
    }
    if data.starts_with(P)
        && matches!(data[7], b'0' | b'1')
        && data[8] == b' '
        && data[9..12].iter().all(u8::is_ascii_digit)
    {
        Probe::Yes(90)
    } else {
        Probe::No
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(Http1Decoder::new(cfg))
}

/// HTTP/1.0 and HTTP/1.1 (cleartext). The registry entry.
pub struct Http1;

impl super::registry::L7Protocol for Http1 {
    /// Stream probes that can overlap, strongest evidence first: HTTP/2, HTTP/1, Kafka, Redis, DNS.
    const TIE_BREAK: u8 = 3;
    const NAME: &'static str = "http1";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 80 | 8000 | 8008 | 8080 | 8888 | 3000 | 5000 | 9080)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Expecting a message head.
    Head,
    Length(u64),
    Chunked(Chunk),
    /// Response body delimited by connection close.
    UntilClose,
    /// Lost framing: looking for the start of the next message.
    Resync,
}

#[derive(Debug)]
struct Side {
    buf: Vec<u8>,
    /// Time of the first byte in `buf` (a head split over segments starts there).
    buf_ts: u64,
    body: Body,
    /// The next message follows lost bytes.
    partial_next: bool,
}

impl Side {
    fn new() -> Self {
        Self { buf: Vec::new(), buf_ts: 0, body: Body::Head, partial_next: false }
    }
}

#[derive(Debug)]
struct Request {
    start_ns: u64,
    bytes: u64,
    detail: HttpDetail,
    head: bool,
    connect: bool,
    upgrade_h2c: bool,
    partial: bool,
    body_done: bool,
}

/// Response whose body is still arriving.
#[derive(Debug)]
struct Current {
    req: Option<Request>,
    detail: HttpDetail,
    bytes: u64,
    partial: bool,
    /// Stop decoding after this response (CONNECT tunnel, WebSocket).
    then_passthrough: bool,
}

pub struct Http1Decoder {
    cfg: DecodeConfig,
    sides: [Side; 2],
    pending: FifoPairer<Request>,
    /// Request whose body is still arriving (not yet in `pending`).
    in_progress: Option<Request>,
    current: Option<Current>,
    /// Bytes of 1xx interim responses for the next final response.
    interim_bytes: u64,
    /// HTTP/2 decoder after an h2c upgrade; everything goes there.
    upgraded: Option<Box<dyn ConnDecoder>>,
    passthrough: bool,
}

fn text(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_FIELD)];
    String::from_utf8_lossy(b).into_owned()
}

/// Reason phrase of the status line at the start of `head`: None when the
/// line has no reason (`HTTP/1.1 200`) or is not complete. Read from the raw
/// bytes because httparse turns a phrase with non-ASCII bytes into "". Such
/// bytes are UTF-8 in practice, or ISO-8859-1, which RFC 2616 defined as the
/// charset of TEXT; anything else decodes lossily and never fails.
fn reason_phrase(head: &[u8]) -> Option<String> {
    let nl = head.iter().position(|&b| b == b'\n')?;
    let line = head[..nl].strip_suffix(b"\r").unwrap_or(&head[..nl]);
    // "HTTP/1.1 200" is 12 bytes; the phrase follows one space.
    let phrase = line.get(12..)?.strip_prefix(b" ")?;
    let mut s = match std::str::from_utf8(phrase) {
        Ok(s) => s.to_string(),
        Err(_) => phrase.iter().map(|&b| b as char).collect(),
    };
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    Some(s)
}

fn version_str(v: Option<u8>) -> String {
    match v {
        Some(0) => "1.0".into(),
        _ => "1.1".into(),
    }
}

fn split_target(target: &str) -> (String, Option<String>) {
    match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    }
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value.is_some_and(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn content_length(headers: &[httparse::Header]) -> Option<u64> {
    header(headers, "content-length").and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.trim().parse().ok())
}

/// Start of a message at a line start inside `input`, for resynchronisation.
fn find_message_start(input: &[u8], dir: StreamDir) -> Option<usize> {
    (0..input.len()).find(|&i| {
        (i == 0 || input[i - 1] == b'\n') && {
            let rest = &input[i..];
            match dir {
                StreamDir::ToClient => rest.starts_with(b"HTTP/1.") && rest.len() >= 9,
                StreamDir::ToServer => {
                    METHODS.iter().any(|m| rest.len() > m.len() && rest.starts_with(m) && rest[m.len()] == b' ')
                }
            }
        }
    })
}

impl Http1Decoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            sides: [Side::new(), Side::new()],
            pending: FifoPairer::new(cfg.max_pending_per_conn),
            in_progress: None,
            current: None,
            interim_bytes: 0,
            upgraded: None,
            passthrough: false,
        }
    }

    fn exchange(conn: &Conn, start_ns: u64, end_ns: u64, outcome: Outcome) -> Exchange {
        Exchange {
            conn: conn.clone(),
            protocol: Protocol::Http1,
            start_ns,
            end_ns,
            request_bytes: 0,
            response_bytes: 0,
            outcome,
            partial: false,
            detail: Detail::Http(HttpDetail::default()),
        }
    }

    fn emit_unanswered(req: Request, end_ns: u64, outcome: Outcome, out: &mut Emit) {
        let mut ex = Self::exchange(out.conn, req.start_ns, end_ns, outcome);
        ex.request_bytes = req.bytes;
        ex.partial = req.partial;
        ex.detail = Detail::Http(req.detail);
        out.push(ex);
    }

    fn emit_current(&mut self, end_ns: u64, outcome: Outcome, out: &mut Emit) {
        let Some(cur) = self.current.take() else { return };
        let start = cur.req.as_ref().map_or(end_ns, |r| r.start_ns);
        let mut ex = Self::exchange(out.conn, start.min(end_ns), end_ns, outcome);
        ex.response_bytes = cur.bytes;
        let mut detail = cur.detail;
        match cur.req {
            Some(req) => {
                ex.request_bytes = req.bytes;
                ex.partial = cur.partial || req.partial;
                let mut d = req.detail;
                d.status = detail.status;
                d.reason = detail.reason;
                d.response_content_length = detail.response_content_length;
                detail = d;
            }
            // Response without its request (capture started mid-connection, or the request was lost).
            None => ex.partial = true,
        }
        ex.detail = Detail::Http(detail);
        out.push(ex);
        if cur.then_passthrough {
            self.passthrough = true;
        }
    }

    fn queue_request(&mut self, req: Request, out: &mut Emit) {
        if let Some(old) = self.pending.push(req.start_ns, req) {
            EVICTED.inc();
            let end = old.start_ns.saturating_add(self.cfg.request_timeout_ns);
            Self::emit_unanswered(old, end, Outcome::Timeout, out);
        }
    }

    fn finish_request_body(&mut self, out: &mut Emit) {
        if let Some(mut req) = self.in_progress.take() {
            req.body_done = true;
            self.queue_request(req, out);
        }
    }

    fn add_body_bytes(&mut self, dir: StreamDir, n: u64) {
        match dir {
            StreamDir::ToServer => {
                if let Some(r) = self.in_progress.as_mut() {
                    r.bytes += n;
                }
            }
            StreamDir::ToClient => {
                if let Some(c) = self.current.as_mut() {
                    c.bytes += n;
                }
            }
        }
    }

    fn body_done(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        self.sides[dir.index()].body = Body::Head;
        match dir {
            StreamDir::ToServer => self.finish_request_body(out),
            StreamDir::ToClient => self.emit_current(ts, Outcome::Complete, out),
        }
    }

    /// Framing is lost in `dir`: finish what was in flight as partial and look for the next message.
    fn lose_sync(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let side = &mut self.sides[dir.index()];
        side.body = Body::Resync;
        side.partial_next = true;
        side.buf.clear();
        match dir {
            StreamDir::ToServer => {
                if let Some(r) = self.in_progress.as_mut() {
                    r.partial = true;
                }
                self.finish_request_body(out);
            }
            StreamDir::ToClient => {
                if let Some(c) = self.current.as_mut() {
                    c.partial = true;
                }
                self.emit_current(ts, Outcome::Complete, out);
            }
        }
    }

    fn on_bytes(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        let i = dir.index();
        let used;
        if self.sides[i].buf.is_empty() {
            used = self.process(dir, ts, data, ts, out);
            if self.upgraded.is_some() || self.passthrough {
                return self.forward_after_switch(dir, ts, &data[used..], out);
            }
            if used < data.len() {
                self.sides[i].buf_ts = ts;
                self.sides[i].buf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.sides[i].buf);
            buf.extend_from_slice(data);
            let start_ts = self.sides[i].buf_ts;
            used = self.process(dir, ts, &buf, start_ts, out);
            if self.upgraded.is_some() || self.passthrough {
                return self.forward_after_switch(dir, ts, &buf[used..], out);
            }
            buf.drain(..used);
            if used > 0 {
                self.sides[i].buf_ts = ts;
            }
            self.sides[i].buf = buf;
        }
        let side = &mut self.sides[i];
        if side.buf.len() > self.cfg.max_buffer_per_dir {
            PARSE_ERRORS.inc();
            self.lose_sync(dir, ts, out);
        }
    }

    fn forward_after_switch(&mut self, dir: StreamDir, ts: u64, rest: &[u8], out: &mut Emit) {
        // Bytes the client sent before the switch was seen belong to the new protocol.
        let pending_req = if dir == StreamDir::ToClient { std::mem::take(&mut self.sides[0].buf) } else { Vec::new() };
        for s in &mut self.sides {
            s.buf.clear();
        }
        if let Some(h2) = self.upgraded.as_mut() {
            if !pending_req.is_empty() {
                h2.on_data(StreamDir::ToServer, ts, &pending_req, out);
            }
            if !rest.is_empty() {
                h2.on_data(dir, ts, rest, out);
            }
        }
    }

    /// Decode as much of `input` as possible; returns the bytes consumed.
    /// `head_ts` is the arrival time of `input[0]`.
    fn process(&mut self, dir: StreamDir, ts: u64, input: &[u8], head_ts: u64, out: &mut Emit) -> usize {
        let mut pos = 0;
        // Bounded: every iteration consumes bytes or returns.
        loop {
            if self.upgraded.is_some() || self.passthrough {
                return pos;
            }
            let rest = &input[pos..];
            let msg_ts = if pos == 0 { head_ts } else { ts };
            match self.sides[dir.index()].body {
                Body::Head => {
                    if rest.is_empty() {
                        return pos;
                    }
                    let r = match dir {
                        StreamDir::ToServer => self.parse_request(rest, msg_ts, out),
                        StreamDir::ToClient => self.parse_response(rest, ts, out),
                    };
                    match r {
                        Some(0) | None => return pos,
                        Some(n) => pos += n,
                    }
                }
                Body::Length(n) => {
                    let k = n.min(rest.len() as u64);
                    pos += k as usize;
                    self.add_body_bytes(dir, k);
                    if k == n {
                        self.body_done(dir, ts, out);
                    } else {
                        self.sides[dir.index()].body = Body::Length(n - k);
                        return pos;
                    }
                }
                Body::UntilClose => {
                    self.add_body_bytes(dir, rest.len() as u64);
                    return input.len();
                }
                Body::Chunked(c) => match self.chunked(dir, c, rest, ts, out) {
                    Some(0) | None => return pos,
                    Some(n) => pos += n,
                },
                Body::Resync => match find_message_start(rest, dir) {
                    Some(at) => {
                        pos += at;
                        self.sides[dir.index()].body = Body::Head;
                    }
                    // Keep a tail in case a start line straddles segments.
                    None => return pos + rest.len().saturating_sub(16),
                },
            }
        }
    }

    /// One step of chunked decoding; returns bytes consumed (0/None: need more).
    fn chunked(&mut self, dir: StreamDir, c: Chunk, rest: &[u8], ts: u64, out: &mut Emit) -> Option<usize> {
        let i = dir.index();
        match c {
            Chunk::Data(n) => {
                let k = n.min(rest.len() as u64);
                self.add_body_bytes(dir, k);
                self.sides[i].body = Body::Chunked(if k == n { Chunk::DataEnd } else { Chunk::Data(n - k) });
                Some(k as usize)
            }
            Chunk::DataEnd => {
                if rest.len() < 2 {
                    return None;
                }
                if &rest[..2] != b"\r\n" {
                    PARSE_ERRORS.inc();
                    self.lose_sync(dir, ts, out);
                    return Some(0);
                }
                self.add_body_bytes(dir, 2);
                self.sides[i].body = Body::Chunked(Chunk::Size);
                Some(2)
            }
            Chunk::Size | Chunk::Trailers => {
                let Some(nl) = rest.iter().take(4096).position(|&b| b == b'\n') else {
                    if rest.len() >= 4096 {
                        PARSE_ERRORS.inc();
                        self.lose_sync(dir, ts, out);
                    }
                    return None;
                };
                let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                self.add_body_bytes(dir, nl as u64 + 1);
                if c == Chunk::Trailers {
                    if line.is_empty() {
                        self.body_done(dir, ts, out);
                    }
                    return Some(nl + 1);
                }
                let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(hex).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                match size {
                    Some(0) => self.sides[i].body = Body::Chunked(Chunk::Trailers),
                    Some(n) => self.sides[i].body = Body::Chunked(Chunk::Data(n)),
                    None => {
                        PARSE_ERRORS.inc();
                        self.lose_sync(dir, ts, out);
                        return Some(0);
                    }
                }
                Some(nl + 1)
            }
        }
    }

    fn parse_request(&mut self, input: &[u8], ts: u64, out: &mut Emit) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                PARSE_ERRORS.inc();
                self.lose_sync(StreamDir::ToServer, ts, out);
                return Some(1);
            }
        };
        let side = &mut self.sides[0];
        let partial = std::mem::take(&mut side.partial_next);
        let method = req.method.unwrap_or_default();
        let (path, query) = split_target(&text(req.path.unwrap_or_default().as_bytes()));
        let hs = &*req.headers;
        let chunked = has_token(header(hs, "transfer-encoding"), "chunked");
        let cl = content_length(hs);
        let upgrade_h2c = has_token(header(hs, "upgrade"), "h2c");
        let detail = HttpDetail {
            method: Some(method.to_string()),
            path: Some(path),
            query,
            version: version_str(req.version),
            host: header(hs, "host").map(text),
            user_agent: header(hs, "user-agent").map(text),
            request_content_length: cl,
            trace_headers: hs
                .iter()
                .filter_map(|h| {
                    let name = h.name.to_ascii_lowercase();
                    TRACE_HEADERS.contains(&name.as_str()).then(|| (name, text(h.value)))
                })
                .collect(),
            content_type: header(hs, "content-type").map(text),
            ..Default::default()
        };
        let request = Request {
            start_ns: ts,
            bytes: n as u64,
            head: method == "HEAD",
            connect: method == "CONNECT",
            upgrade_h2c,
            partial,
            body_done: false,
            detail,
        };
        let body = if chunked {
            Body::Chunked(Chunk::Size)
        } else {
            match cl {
                Some(len) if len > 0 => Body::Length(len),
                _ => Body::Head,
            }
        };
        // A request that was still receiving its body when its response came stays answered.
        self.finish_request_body(out);
        if body == Body::Head {
            self.queue_request(Request { body_done: true, ..request }, out);
        } else {
            self.in_progress = Some(request);
        }
        self.sides[0].body = body;
        Some(n)
    }

    fn parse_response(&mut self, input: &[u8], ts: u64, out: &mut Emit) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                PARSE_ERRORS.inc();
                self.lose_sync(StreamDir::ToClient, ts, out);
                return Some(1);
            }
        };
        let status = resp.code.unwrap_or(0);
        let hs = &*resp.headers;
        if (100..200).contains(&status) && status != 101 {
            self.interim_bytes += n as u64;
            return Some(n);
        }
        let partial = std::mem::take(&mut self.sides[1].partial_next);
        let req = self.pending.pop().or_else(|| self.in_progress.take());
        let cl = content_length(hs);
        let chunked = has_token(header(hs, "transfer-encoding"), "chunked");
        let is_head = req.as_ref().is_some_and(|r| r.head);
        let tunnel = req.as_ref().is_some_and(|r| r.connect) && (200..300).contains(&status);
        if status == 101 && has_token(header(hs, "upgrade"), "h2c") {
            if let Some(r) = req.as_ref().filter(|r| r.upgrade_h2c) {
                self.start_h2c(r, n as u64);
                return Some(n);
            }
        }
        let detail = HttpDetail {
            version: version_str(resp.version),
            status: Some(status),
            reason: reason_phrase(&input[..n]),
            response_content_length: cl,
            ..Default::default()
        };
        // Without a request (mid-connection start) the response still tells version and status.
        let req_partial = req.as_ref().is_none_or(|r| r.partial);
        self.current = Some(Current {
            req,
            detail,
            bytes: n as u64 + std::mem::take(&mut self.interim_bytes),
            partial: partial || req_partial,
            then_passthrough: status == 101 || tunnel,
        });
        let no_body = is_head || status == 204 || status == 304 || status == 101 || tunnel;
        let body = if no_body {
            Body::Head
        } else if chunked {
            Body::Chunked(Chunk::Size)
        } else {
            match cl {
                Some(0) => Body::Head,
                Some(len) => Body::Length(len),
                None => Body::UntilClose,
            }
        };
        self.sides[1].body = body;
        if body == Body::Head {
            self.emit_current(ts, Outcome::Complete, out);
        }
        Some(n)
    }

    fn start_h2c(&mut self, req: &Request, head_bytes: u64) {
        let up = super::http2::UpgradeRequest {
            start_ns: req.start_ns,
            request_bytes: req.bytes,
            response_bytes: head_bytes + std::mem::take(&mut self.interim_bytes),
            detail: req.detail.clone(),
        };
        self.upgraded = Some(super::http2::new_upgraded_decoder(&self.cfg, up));
    }
}

impl ConnDecoder for Http1Decoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        if let Some(h2) = self.upgraded.as_mut() {
            return h2.on_data(dir, ts_ns, data, out);
        }
        if self.passthrough {
            return;
        }
        self.on_bytes(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if let Some(h2) = self.upgraded.as_mut() {
            return h2.on_gap(dir, ts_ns, len, out);
        }
        if self.passthrough || len == 0 {
            return;
        }
        let i = dir.index();
        if !self.sides[i].buf.is_empty() {
            // A head cut short (snap length or loss): keep what its first line tells.
            self.salvage_head(dir, ts_ns, out);
            return;
        }
        match self.sides[i].body {
            Body::Length(n) if len < n => {
                self.add_body_bytes(dir, len);
                self.sides[i].body = Body::Length(n - len);
            }
            Body::Length(n) if len == n => {
                self.add_body_bytes(dir, len);
                self.body_done(dir, ts_ns, out);
            }
            Body::Chunked(Chunk::Data(n)) if len <= n => {
                self.add_body_bytes(dir, len);
                self.sides[i].body = Body::Chunked(if len == n { Chunk::DataEnd } else { Chunk::Data(n - len) });
            }
            Body::UntilClose => self.add_body_bytes(dir, len),
            Body::Resync => {}
            _ => self.lose_sync(dir, ts_ns, out),
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        if let Some(h2) = self.upgraded.as_mut() {
            return h2.on_close(ts_ns, reason, out);
        }
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        if let Some(cur) = self.current.as_mut() {
            let complete = self.sides[1].body == Body::UntilClose;
            if !complete {
                cur.partial = true;
            }
            let oc = if complete || reason != CloseReason::Rst { Outcome::Complete } else { Outcome::Reset };
            self.emit_current(ts_ns, oc, out);
        }
        self.finish_request_body(out);
        for req in self.pending.drain().collect::<Vec<_>>() {
            Self::emit_unanswered(req, ts_ns, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        if let Some(h2) = self.upgraded.as_mut() {
            return h2.expire(deadline_ns, out);
        }
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        for req in self.pending.expire(deadline_ns) {
            Self::emit_unanswered(req, end, Outcome::Timeout, out);
        }
    }
}

impl Http1Decoder {
    /// The buffered, incomplete head in `dir` is followed by lost bytes:
    /// decode its start line (httparse fills it before the headers) and resync.
    fn salvage_head(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let i = dir.index();
        let buf = std::mem::take(&mut self.sides[i].buf);
        let head_ts = self.sides[i].buf_ts;
        let partial = true;
        match (dir, self.sides[i].body) {
            (StreamDir::ToServer, Body::Head) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                let _ = req.parse(&buf);
                if let (Some(m), Some(p)) = (req.method, req.path) {
                    let (path, query) = split_target(&text(p.as_bytes()));
                    let mut detail = HttpDetail {
                        method: Some(m.to_string()),
                        path: Some(path),
                        query,
                        version: version_str(req.version),
                        ..Default::default()
                    };
                    // Headers parsed before the cut are still usable.
                    for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
                        if h.name.eq_ignore_ascii_case("host") {
                            detail.host = Some(text(h.value));
                        } else if h.name.eq_ignore_ascii_case("user-agent") {
                            detail.user_agent = Some(text(h.value));
                        }
                    }
                    self.finish_request_body(out);
                    let r = Request {
                        start_ns: head_ts,
                        bytes: buf.len() as u64,
                        detail,
                        head: m == "HEAD",
                        connect: m == "CONNECT",
                        upgrade_h2c: false,
                        partial,
                        body_done: true,
                    };
                    self.queue_request(r, out);
                }
            }
            (StreamDir::ToClient, Body::Head) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                let _ = resp.parse(&buf);
                if let Some(code) = resp.code {
                    if (100..200).contains(&code) && code != 101 {
                        self.interim_bytes += buf.len() as u64;
                    } else {
                        let req = self.pending.pop().or_else(|| self.in_progress.take());
                        self.current = Some(Current {
                            req,
                            detail: HttpDetail {
                                version: version_str(resp.version),
                                status: Some(code),
                                reason: reason_phrase(&buf),
                                ..Default::default()
                            },
                            bytes: buf.len() as u64 + std::mem::take(&mut self.interim_bytes),
                            partial,
                            then_passthrough: false,
                        });
                    }
                }
            }
            _ => {}
        }
        self.lose_sync(dir, ts, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{RoleEvidence, Transport};
    use crate::protocol::testutil::{conn, conn_with};
    use proptest::prelude::*;

    struct Run {
        conn: Conn,
        dec: Http1Decoder,
        out: Vec<Exchange>,
    }

    impl Run {
        fn new() -> Self {
            Self { conn: conn(Transport::Tcp, 8080), dec: Http1Decoder::new(&DecodeConfig::default()), out: Vec::new() }
        }
        fn data(&mut self, dir: StreamDir, ts: u64, d: &[u8]) -> &mut Self {
            self.dec.on_data(dir, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
            self
        }
        fn req(&mut self, ts: u64, d: &[u8]) -> &mut Self {
            self.data(StreamDir::ToServer, ts, d)
        }
        fn resp(&mut self, ts: u64, d: &[u8]) -> &mut Self {
            self.data(StreamDir::ToClient, ts, d)
        }
        fn gap(&mut self, dir: StreamDir, ts: u64, len: u64) -> &mut Self {
            self.dec.on_gap(dir, ts, len, &mut Emit { conn: &self.conn, out: &mut self.out });
            self
        }
        fn close(&mut self, ts: u64, r: CloseReason) -> &mut Self {
            self.dec.on_close(ts, r, &mut Emit { conn: &self.conn, out: &mut self.out });
            self
        }
    }

    fn http(ex: &Exchange) -> &HttpDetail {
        match &ex.detail {
            Detail::Http(h) => h,
            _ => panic!("not http"),
        }
    }

    #[test]
    fn probes() {
        let c = conn(Transport::Tcp, 1);
        assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::Yes(95));
        assert_eq!(probe(&c, StreamDir::ToServer, b"POS"), Probe::NeedMore);
        assert_eq!(probe(&c, StreamDir::ToServer, b"GET key\r\n"), Probe::No);
        assert_eq!(probe(&c, StreamDir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::No);
        assert_eq!(probe(&c, StreamDir::ToClient, b"HTTP/1.1 200 OK\r\n"), Probe::Yes(90));
        assert_eq!(probe(&c, StreamDir::ToClient, b"HTTP"), Probe::NeedMore);
        assert_eq!(probe(&c, StreamDir::ToClient, b"+OK\r\n"), Probe::No);
    }

    #[test]
    fn keep_alive_pipelining_and_fields() {
        let mut r = Run::new();
        r.req(
            1,
            b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\ntraceparent: 00-abc-def-01\r\nX-B3-TraceId: 12\r\n\r\n\
              HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        r.req(2, b"POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        r.resp(3, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        r.resp(4, b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(r.out.len(), 3);
        let a = http(&r.out[0]);
        assert_eq!(
            (a.method.as_deref(), a.path.as_deref(), a.query.as_deref()),
            (Some("GET"), Some("/a"), Some("x=1"))
        );
        assert_eq!(a.host.as_deref(), Some("h"));
        assert_eq!(a.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(a.status, Some(200));
        assert_eq!(
            a.trace_headers,
            vec![("traceparent".into(), "00-abc-def-01".into()), ("x-b3-traceid".into(), "12".into())]
        );
        assert_eq!(http(&r.out[1]).method.as_deref(), Some("HEAD"));
        assert_eq!(http(&r.out[1]).response_content_length, Some(100));
        let c = &r.out[2];
        assert_eq!(http(c).status, Some(404));
        assert_eq!((c.start_ns, c.end_ns, c.request_bytes), (2, 4, 44));
        assert!(r.out.iter().all(|e| !e.partial && e.outcome == Outcome::Complete));
    }

    #[test]
    fn reason_phrases_as_sent() {
        let mut r = Run::new();
        for _ in 0..7 {
            r.req(1, b"GET / HTTP/1.1\r\n\r\n");
        }
        r.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        r.resp(2, b"HTTP/1.1 503 Backend pool exhausted\r\nContent-Length: 0\r\n\r\n");
        // Empty phrase after the space, and no phrase at all.
        r.resp(2, b"HTTP/1.1 204 \r\n\r\n");
        r.resp(2, b"HTTP/1.1 204\r\n\r\n");
        // UTF-8 and ISO-8859-1 (obs-text: httparse itself reports "" for these).
        r.resp(2, "HTTP/1.1 404 Não encontrado\r\nContent-Length: 0\r\n\r\n".as_bytes());
        r.resp(2, b"HTTP/1.0 404 Nicht gefunden \xfc\r\nContent-Length: 0\r\n\r\n");
        // A 100 Continue's phrase is not the exchange's.
        r.resp(2, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\tfine\r\nContent-Length: 0\r\n\r\n");
        let reasons: Vec<_> = r.out.iter().map(|e| http(e).reason.clone()).collect();
        let want = ["OK", "Backend pool exhausted", "", "-", "Não encontrado", "Nicht gefunden ü", "Created\tfine"];
        let want: Vec<_> = want.iter().map(|w| (*w != "-").then(|| w.to_string())).collect();
        assert_eq!(reasons, want);
        // Bounded, cut at a character boundary.
        let long = format!("HTTP/1.1 500 {}\r\n", "é".repeat(300));
        let got = reason_phrase(long.as_bytes()).unwrap();
        assert_eq!((got.len(), got.chars().all(|c| c == 'é')), (MAX_REASON, true));
        assert_eq!(reason_phrase(b"HTTP/1.1 200 OK"), None, "line not complete");
    }

    #[test]
    fn reason_survives_truncated_head_and_missing_request() {
        let mut r = Run::new();
        r.req(1, b"GET /a HTTP/1.1\r\n\r\n");
        r.resp(2, b"HTTP/1.1 502 Bad Gateway\r\nServer: ngi");
        r.gap(StreamDir::ToClient, 3, 500);
        assert_eq!(http(&r.out[0]).reason.as_deref(), Some("Bad Gateway"));
        let mut r = Run::new();
        r.conn = conn_with(Transport::Tcp, 80, RoleEvidence::Port);
        r.resp(1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(http(&r.out[0]).reason.as_deref(), Some("Not Found"));
        assert!(r.out[0].partial);
    }

    #[test]
    fn expect_100_continue() {
        let mut r = Run::new();
        r.req(1, b"POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        r.resp(2, b"HTTP/1.1 100 Continue\r\n\r\n");
        r.req(3, b"data");
        r.resp(4, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.out.len(), 1);
        let e = &r.out[0];
        assert_eq!(http(e).status, Some(201));
        assert_eq!((e.start_ns, e.end_ns), (1, 4));
        assert_eq!(e.request_bytes, 62 + 4);
        assert_eq!(e.response_bytes, 25 + 43);
    }

    #[test]
    fn gap_inside_body_is_skipped() {
        let mut r = Run::new();
        r.req(1, b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
        r.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n0123");
        r.gap(StreamDir::ToClient, 3, 9000);
        r.resp(4, &[b'x'; 996]);
        r.resp(5, b"HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(r.out.len(), 2);
        assert!(!r.out[0].partial);
        assert_eq!(r.out[0].end_ns, 4);
        assert_eq!(http(&r.out[1]).status, Some(304));
    }

    #[test]
    fn chunked_gap_and_lost_head_resync() {
        let mut r = Run::new();
        r.req(1, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
        r.resp(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nab");
        r.gap(StreamDir::ToClient, 3, 5000);
        r.resp(4, b"garbage\r\nHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.out.len(), 2);
        assert!(r.out[0].partial);
        assert_eq!(http(&r.out[1]).status, Some(500));
        assert!(r.out[1].partial);
    }

    #[test]
    fn truncated_head_keeps_start_line() {
        let mut r = Run::new();
        r.req(1, b"GET /long HTTP/1.1\r\nHost: example\r\nAccept: */");
        r.gap(StreamDir::ToServer, 1, 50);
        r.resp(2, b"HTTP/1.1 200 OK\r\nServer: ngi");
        r.gap(StreamDir::ToClient, 2, 500);
        r.req(3, b"GET /next HTTP/1.1\r\n\r\n");
        r.resp(4, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.out.len(), 2);
        let a = http(&r.out[0]);
        assert_eq!((a.method.as_deref(), a.path.as_deref(), a.status), (Some("GET"), Some("/long"), Some(200)));
        assert_eq!(a.host.as_deref(), Some("example"));
        assert!(r.out[0].partial);
        assert_eq!(http(&r.out[1]).path.as_deref(), Some("/next"));
    }

    #[test]
    fn mid_connection_response_and_until_close_body() {
        let mut r = Run::new();
        r.conn = conn_with(Transport::Tcp, 80, RoleEvidence::Port);
        r.resp(1, b"ly the end of a body\r\nHTTP/1.0 200 OK\r\n\r\nbody until close");
        r.close(5, CloseReason::Fin);
        assert_eq!(r.out.len(), 1);
        assert!(r.out[0].partial);
        assert_eq!(http(&r.out[0]).status, Some(200));
        assert_eq!(r.out[0].end_ns, 5);
    }

    #[test]
    fn unanswered_requests_time_out_or_reset() {
        let mut r = Run::new();
        r.req(1, b"GET /a HTTP/1.1\r\n\r\n");
        r.dec.expire(10, &mut Emit { conn: &r.conn, out: &mut r.out });
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.out[0].outcome, Outcome::Timeout);
        r.req(20, b"GET /b HTTP/1.1\r\n\r\n");
        r.close(21, CloseReason::Rst);
        assert_eq!(r.out[1].outcome, Outcome::Reset);
    }

    #[test]
    fn websocket_upgrade_then_passthrough() {
        let mut r = Run::new();
        r.req(1, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        r.resp(2, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
        r.req(3, b"\x81\x85garbage-frames");
        assert_eq!(r.out.len(), 1);
        assert_eq!(http(&r.out[0]).status, Some(101));
    }

    #[test]
    fn h2c_upgrade_hands_stream_one_to_http2() {
        let mut r = Run::new();
        r.req(1, b"GET /up?q=1 HTTP/1.1\r\nHost: h:80\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nuser-agent: curl\r\n\r\n");
        // 101, then the server's SETTINGS and a HEADERS frame answering stream 1 with `:status 200` (static index 8).
        r.resp(2, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert!(r.dec.upgraded.is_some());
        r.req(3, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        r.resp(4, b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88");
        assert_eq!(r.out.len(), 1, "{:?}", r.out);
        let h = http(&r.out[0]);
        assert_eq!(
            (h.path.as_deref(), h.query.as_deref(), h.status, h.version.as_str()),
            (Some("/up"), Some("q=1"), Some(200), "2")
        );
        assert_eq!(h.stream_id, Some(1));
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (1, 4));
    }

    proptest! {
        #[test]
        fn arbitrary_segments_never_panic(chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 0u64..5000), 0..40)) {
            let mut r = Run::new();
            for (i, (to_server, bytes, gap)) in chunks.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                if *gap > 4000 { r.gap(dir, i as u64, *gap); } else { r.data(dir, i as u64, bytes); }
                prop_assert!(r.dec.sides.iter().all(|s| s.buf.len() <= DecodeConfig::default().max_buffer_per_dir + 300));
            }
            r.close(99, CloseReason::Fin);
        }

        #[test]
        fn any_reason_bytes_stay_bounded(reason in proptest::collection::vec(any::<u8>().prop_filter("no line end", |b| !matches!(b, b'\r' | b'\n')), 0..600)) {
            let mut r = Run::new();
            r.req(1, b"GET / HTTP/1.1\r\n\r\n");
            let mut resp = b"HTTP/1.1 500 ".to_vec();
            resp.extend_from_slice(&reason);
            resp.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            r.resp(2, &resp);
            r.close(3, CloseReason::Fin);
            prop_assert_eq!(r.out.len(), 1);
            prop_assert!(http(&r.out[0]).reason.as_ref().is_none_or(|s| s.len() <= MAX_REASON));
        }

        #[test]
        fn valid_stream_any_segmentation_pairs_all(cuts in proptest::collection::vec(1usize..60, 1..20)) {
            let reqs: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n";
            let resps: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
            let mut r = Run::new();
            for (dir, mut s) in [(StreamDir::ToServer, reqs), (StreamDir::ToClient, resps)] {
                let mut i = 0;
                while !s.is_empty() {
                    let n = cuts[i % cuts.len()].min(s.len());
                    r.data(dir, i as u64, &s[..n]);
                    s = &s[n..];
                    i += 1;
                }
            }
            prop_assert_eq!(r.out.len(), 3);
            let st: Vec<_> = r.out.iter().map(|e| http(e).status).collect();
            prop_assert_eq!(st, vec![Some(200), Some(201), Some(200)]);
            prop_assert!(r.out.iter().all(|e| !e.partial));
        }
    }
}
