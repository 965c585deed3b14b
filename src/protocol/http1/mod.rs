//! HTTP/1.0 and HTTP/1.1 (httparse for message heads, [`lenient`] for what it rejects).
//!
//! Each direction is a small state machine: head → body (Content-Length,
//! chunked, or until close) → head. Bodies are skipped without buffering, so
//! bytes lost inside a body (gaps, snap length) cost nothing. Requests queue
//! in order (keep-alive, pipelining) and each final response takes the oldest.
//! Interim 1xx responses (100-continue) are counted into the final exchange.
//!
//! Heads that httparse rejects but real peers send (any token method, odd-case
//! or malformed versions, HTTP/0.9, obs-fold, hundreds of headers) are read
//! line by line. Request framing follows RFC 9112 §6.3 as nginx applies it:
//! a Content-Length that is not one decimal number up to 2^63-1 (conflicting
//! duplicates, overflow) or a Transfer-Encoding that does not end in chunked
//! makes the body length unknown, and a chunk size past 2^63-1 ends the
//! chunked body; in both cases the server rejects the request, and the
//! decoder looks for the next request line rather than skip a body it cannot
//! measure (so a smuggled request that follows is reported, not swallowed).
//!
//! `Upgrade: h2c` answered by `101`: the connection is handed to the HTTP/2
//! decoder ([`super::http2::new_upgraded_decoder`]) together with the
//! upgrade request, which becomes stream 1 there (it never appears as an
//! HTTP/2 HEADERS frame); the HTTP/2 decoder pairs it with the HEADERS that
//! answer stream 1 and emits it as an HTTP/2 exchange. No HTTP/1 exchange is
//! emitted for the 101 itself. Other upgrades (WebSocket) and CONNECT tunnels
//! emit the handshake exchange and then ignore the rest of the connection
//! (counted in `cnflow.protocol.passthrough`). Bytes a client sends after
//! CONNECT are held until the answer: a 2xx makes them tunnel bytes, anything
//! else makes them the next requests.
mod lenient;

use super::http::HttpDetail;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::otel::attr::Str;
use crate::protocol::exchange::{Detail, Exchange, FifoPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use lenient::{Parsed, Start};
use std::borrow::Cow;
use std::sync::LazyLock;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "http1")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "http1")]));
/// Responses to requests already reported as timed out (not reported again).
static UNPAIRED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unpaired_responses", &[("protocol", "http1")]));
/// Connections whose rest is not HTTP/1 (CONNECT tunnel, WebSocket) and is not decoded.
static PASSTHROUGH: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.passthrough", &[("protocol", "http1")]));

/// Methods common enough that a request line cut before its version is still HTTP.
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
/// Longest start line waited for while resynchronising (nginx's default
/// `large_client_header_buffers` is 8 KiB).
const MAX_START_LINE: usize = 8192;
/// Largest body length accepted: nginx (and most servers) keep lengths in a
/// signed 64-bit `off_t` and reject anything larger as a bad request.
const MAX_LENGTH: u64 = i64::MAX as u64;
/// `GET /page` and a line end: an HTTP/0.9 request. Weak evidence (an inline
/// Redis `GET` of a key starting with '/' looks the same): it beats Redis's
/// inline guess by the tie-break but is no decisive verdict on its own.
const HTTP09_CONFIDENCE: u8 = 55;

/// Does the first data of a connection look like HTTP/1? `dir` is the direction of `data`.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    match dir {
        StreamDir::ToServer => probe_request(data),
        StreamDir::ToClient => probe_response(data),
    }
}

/// Any token method is accepted (QUERY, PROPFIND, PURGE...), but only with
/// evidence: a complete request line ending in an HTTP version, or a common
/// method with an origin-form target while the line is still arriving.
fn probe_request(data: &[u8]) -> Probe {
    let mlen = data.iter().take(lenient::MAX_METHOD + 1).take_while(|&&b| lenient::is_tchar(b)).count();
    if mlen == data.len() {
        return if mlen <= lenient::MAX_METHOD { Probe::NeedMore } else { Probe::No };
    }
    if mlen == 0 || mlen > lenient::MAX_METHOD || data[mlen] != b' ' {
        return Probe::No;
    }
    let known = METHODS.contains(&&data[..mlen]);
    let rest = &data[mlen + 1..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let line = &data[..mlen + 1 + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
                return Probe::Yes(95);
            }
            match lenient::request_line(line) {
                // `http/1.1`, `HTTP/1.`: servers answer these (with 400 or as 1.x).
                Some(Start::Request { version: Some(_), .. }) => Probe::Yes(80),
                Some(Start::Request { version: None, .. }) => Probe::Yes(HTTP09_CONFIDENCE),
                _ => Probe::No,
            }
        }
        // An origin-form target is already specific; inline Redis ("GET key") is not.
        None if known && rest.first() == Some(&b'/') => Probe::Yes(75),
        None if rest.len() < 2048 => Probe::NeedMore,
        None => Probe::No,
    }
}

fn probe_response(data: &[u8]) -> Probe {
    const P: &[u8] = b"HTTP/";
    let n = data.len().min(P.len());
    if !data[..n].eq_ignore_ascii_case(&P[..n]) {
        return Probe::No;
    }
    if data.len() >= 12
        && data.starts_with(b"HTTP/1.")
        && matches!(data[7], b'0' | b'1')
        && data[8] == b' '
        && data[9..12].iter().all(u8::is_ascii_digit)
    {
        return Probe::Yes(90);
    }
    // Odd case or version (`http/1.1 200 ok`, `HTTP/1. 200`): the whole status line decides.
    match data.iter().take(512).position(|&b| b == b'\n') {
        Some(nl) => {
            let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
            if lenient::status_line(line).is_some() {
                Probe::Yes(80)
            } else {
                Probe::No
            }
        }
        None if data.len() < 512 => Probe::NeedMore,
        None => Probe::No,
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
    /// Lost framing: looking for the start of the next message. `line_start`:
    /// the bytes that follow begin a line (else the first partial line is skipped).
    Resync {
        line_start: bool,
    },
    /// Client bytes after a CONNECT request, held until its answer.
    Connect,
}

/// How a request says where its body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Conflicting or unusable length: a server rejects the request.
    Invalid,
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
    /// Boxed once here, moved as a pointer from then on (pending queue,
    /// response, the exchange): the detail is some 270 bytes.
    detail: Box<HttpDetail>,
    head: bool,
    connect: bool,
    /// HTTP/0.9: the answer is a bare body until close.
    http09: bool,
    upgrade_h2c: bool,
    partial: bool,
    body_done: bool,
}

/// What a response head tells; the rest of the exchange's detail is its request's.
#[derive(Debug, Default)]
struct RespHead {
    /// Reported only for a response without its request (the request's otherwise).
    version: Str,
    status: Option<u16>,
    reason: Option<Str>,
    content_length: Option<u64>,
}

/// Response whose body is still arriving.
#[derive(Debug)]
struct Current {
    req: Option<Request>,
    resp: RespHead,
    bytes: u64,
    partial: bool,
    /// Stop decoding after this response (CONNECT tunnel, WebSocket).
    then_passthrough: bool,
    /// Answers a request already reported as timed out: decoded for its
    /// framing, then dropped (counted) instead of becoming a response-only exchange.
    late: bool,
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
    /// Requests reported as timed out (expired or evicted) whose answers may
    /// still come: in order, those answers precede the pending requests' ones.
    expired_unanswered: usize,
    /// A CONNECT was refused: the client bytes held since are requests to parse.
    reparse_requests: bool,
    /// HTTP/2 decoder after an h2c upgrade; everything goes there.
    upgraded: Option<Box<dyn ConnDecoder>>,
    passthrough: bool,
}

/// A header value as text, bounded; an obs-folded value (see [`lenient`])
/// is unfolded, each line break and its indentation read as one space.
fn text(b: &[u8]) -> String {
    text_cow(b).into_owned()
}

/// Every byte is printable ASCII (0x20..=0x7e).
fn printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        // A byte >= 0x80, a byte < 0x20 (exact for bytes < 0x80: the
        // classic "has less than" test), a byte equal to 0x7f.
        let del = x ^ (0x7f * ONES);
        if x & HIGH != 0 || x.wrapping_sub(0x20 * ONES) & !x & HIGH != 0 || del.wrapping_sub(ONES) & !del & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&c| (b' '..=b'~').contains(&c))
}

/// [`text`] as a [`Str`]: inline when short (no allocation).
fn text_str(b: &[u8]) -> Str {
    let t = text_cow(b);
    let n = t.len();
    str_prefix(t, n)
}

/// The first `n` bytes of `t` (`n` on a char boundary) as a [`Str`]: a
/// borrowed text is copied (inline when short), an owned one keeps its buffer.
fn str_prefix(t: Cow<str>, n: usize) -> Str {
    match t {
        Cow::Borrowed(t) => Str::copy(&t[..n]),
        Cow::Owned(mut t) => {
            t.truncate(n);
            Str::compact(t)
        }
    }
}

/// [`text`], borrowed when the bytes are valid UTF-8 on one line.
fn text_cow(b: &[u8]) -> Cow<'_, str> {
    let b = &b[..b.len().min(MAX_FIELD)];
    // The usual value (printable ASCII) told in one pass, eight bytes at a
    // time, without the line-break search and the UTF-8 validation that
    // follow otherwise (tabs and anything else take that way).
    if printable_ascii(b) {
        // SAFETY: every byte is ASCII, so `b` is valid UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(b) });
    }
    if b.contains(&b'\n') {
        let lines: Vec<_> = b
            .split(|&c| c == b'\n')
            .map(|l| String::from_utf8_lossy(lenient::trim(l.strip_suffix(b"\r").unwrap_or(l))))
            .collect();
        return Cow::Owned(lines.join(" "));
    }
    crate::protocol::span_common::lossy_text(b)
}

/// Reason phrase of the status line at the start of `head`: None when the
/// line has no reason (`HTTP/1.1 200`) or is not complete. Read from the raw
/// bytes because httparse turns a phrase with non-ASCII bytes into "". Such
/// bytes are UTF-8 in practice, or ISO-8859-1, which RFC 2616 defined as the
/// charset of TEXT; anything else decodes lossily and never fails.
fn reason_phrase(head: &[u8]) -> Option<Str> {
    let nl = head.iter().position(|&b| b == b'\n')?;
    let line = head[..nl].strip_suffix(b"\r").unwrap_or(&head[..nl]);
    // The version (of any length when read leniently), spaces, the 3-digit code, one space, the phrase.
    let sp = line.iter().position(|&b| b == b' ')?;
    let mut rest = &line[sp..];
    while let [b' ', r @ ..] = rest {
        rest = r;
    }
    let phrase = rest.get(3..)?.strip_prefix(b" ")?;
    let s: Cow<str> = match std::str::from_utf8(phrase) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(phrase.iter().map(|&b| b as char).collect()),
    };
    let mut cut = s.len().min(MAX_REASON);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(str_prefix(s, cut))
}

fn version_str(v: Option<u8>) -> &'static str {
    match v {
        Some(0) => "1.0",
        _ => "1.1",
    }
}

/// Version of a leniently read start line, from the token after `HTTP/`:
/// as sent when it is digits and dots (`1.` reads as "1"), else "1.1".
fn lenient_version(v: Option<&[u8]>) -> Str {
    let Some(v) = v else { return Str::lit("0.9") };
    let v = v.strip_suffix(b".").unwrap_or(v);
    if !v.is_empty() && v.len() <= 8 && v.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        Str::copy(&String::from_utf8_lossy(v))
    } else {
        Str::lit("1.1")
    }
}

/// Path and query of a request target (short ones inline; a long path
/// keeps the target's buffer); the query only with `keep_query`.
fn split_target(target: Cow<str>, keep_query: bool) -> (Str, Option<Str>) {
    match target.find('?') {
        Some(i) => {
            let q = keep_query.then(|| Str::copy(&target[i + 1..]));
            (str_prefix(target, i), q)
        }
        None => {
            let n = target.len();
            (str_prefix(target, n), None)
        }
    }
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value.is_some_and(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The header fields the decoder reads, found in one pass over a head: a
/// lookup per name was a pass per name (seven over every request head).
/// The first Host, User-Agent, Content-Type and Upgrade count, the last
/// Transfer-Encoding, every Content-Length, every trace header in order.
/// A response is only read for its framing and `Upgrade`: Host, User-Agent,
/// Content-Type and the trace headers are request fields, and of those only
/// Host is read without span fields (`DecodeConfig::span_fields`).
struct Fields<'a> {
    host: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    upgrade: Option<&'a [u8]>,
    /// See [`add_content_length`].
    content_length: Result<Option<u64>, ()>,
    /// The last Transfer-Encoding field.
    transfer_encoding: Option<&'a [u8]>,
    /// Trace-context headers (lower-case names), when asked for.
    trace: Vec<(String, String)>,
}

impl<'a> Fields<'a> {
    fn scan(headers: &[httparse::Header<'a>], request: bool, span_fields: bool) -> Self {
        let spans = request && span_fields;
        let mut f = Fields {
            host: None,
            user_agent: None,
            content_type: None,
            upgrade: None,
            content_length: Ok(None),
            transfer_encoding: None,
            trace: Vec::new(),
        };
        for h in headers {
            let n = h.name.as_bytes();
            let is = |name: &str| name_is(n, name.as_bytes());
            // By length first: most names are none of these, and are told
            // so without comparing any bytes.
            match n.len() {
                4 if request && is("host") => {
                    f.host.get_or_insert(h.value);
                }
                7 if is("upgrade") => {
                    f.upgrade.get_or_insert(h.value);
                }
                10 if spans && is("user-agent") => {
                    f.user_agent.get_or_insert(h.value);
                }
                12 if spans && is("content-type") => {
                    f.content_type.get_or_insert(h.value);
                }
                14 if is("content-length") => f.content_length = add_content_length(f.content_length, h.value),
                17 if is("transfer-encoding") => f.transfer_encoding = Some(h.value),
                // The trace header names are 2, 10, 11, 12 and 17 bytes long.
                2 | 10 | 11 | 12 | 17 if spans => {
                    // Compared in place: only the (rare) trace headers allocate their name.
                    if let Some(name) = TRACE_HEADERS.iter().find(|t| is(t)) {
                        f.trace.push((name.to_string(), text(h.value)));
                    }
                }
                _ => {}
            }
        }
        f
    }

    /// Transfer-Encoding present, and whether its final coding is chunked.
    fn chunked(&self) -> Option<bool> {
        let last = self.transfer_encoding?;
        let coding = last.rsplit(|&b| b == b',').next().map(lenient::trim).unwrap_or_default();
        Some(coding.eq_ignore_ascii_case(b"chunked"))
    }
}

/// `name` equals `lower` (lower-case ASCII) ignoring ASCII case, as
/// `eq_ignore_ascii_case` tells, in fewer instructions: only a letter of
/// `lower` has a second (upper-case) form, and the constant is not lowered
/// again for every byte.
#[inline]
fn name_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower).all(|(&a, &t)| a == t || ((a ^ 0x20) == t && t.is_ascii_lowercase()))
}

/// Content-Length as RFC 9110 §8.6 reads it, one field at a time: every
/// field and list member is the same decimal number (duplicates of one value
/// are tolerated). Ok(None): absent so far; Err: conflicting values, not a
/// number, or past [`MAX_LENGTH`] (and it stays an error).
fn add_content_length(len: Result<Option<u64>, ()>, value: &[u8]) -> Result<Option<u64>, ()> {
    let mut len = len?;
    for part in value.split(|&b| b == b',') {
        let p = lenient::trim(part);
        if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = p.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
        if n > MAX_LENGTH || len.is_some_and(|l| l != n) {
            return Err(());
        }
        len = Some(n);
    }
    Ok(len)
}

/// RFC 9112 §6.3 for a request: Transfer-Encoding overrides Content-Length,
/// and must end in chunked (and not come with HTTP/1.0); Content-Length must
/// be valid. The second value is the Content-Length to report.
fn request_framing(f: &Fields, http10: bool) -> (Framing, Option<u64>) {
    let cl = f.content_length;
    let framing = match (f.chunked(), cl) {
        (Some(true), _) if !http10 => Framing::Chunked,
        (Some(_), _) | (None, Err(())) => Framing::Invalid,
        (None, Ok(Some(n))) if n > 0 => Framing::Length(n),
        (None, Ok(_)) => Framing::None,
    };
    (framing, cl.ok().flatten())
}

/// `span_fields`: the query string is kept (see `DecodeConfig::span_fields`).
fn request_detail(
    method: &str,
    target: &[u8],
    version: Str,
    f: Fields,
    cl: Option<u64>,
    span_fields: bool,
) -> HttpDetail {
    let connect = method == "CONNECT";
    // CONNECT's authority-form target (`host:443`) is no path: it names the server.
    let (path, query) = if connect {
        (None, None)
    } else {
        let (p, q) = split_target(text_cow(target), span_fields);
        (Some(p), q)
    };
    HttpDetail {
        method: Some(Str::copy(method)),
        path,
        query,
        version,
        host: f.host.map(text_str).or_else(|| connect.then(|| text_str(target))),
        user_agent: f.user_agent.map(text_str),
        request_content_length: cl,
        trace_headers: f.trace,
        content_type: f.content_type.map(text_str),
        ..Default::default()
    }
}

/// Resynchronisation: the offset of the next start line of `dir` in `input`
/// (a request line with a version, or a status line), at a line start
/// (`line_start`: `input[0]` is one). Err((keep, line_start)): none yet; the
/// bytes from `keep` (a last line too short to judge) are kept for later.
fn find_message_start(input: &[u8], dir: StreamDir, line_start: bool) -> Result<usize, (usize, bool)> {
    let mut i = 0;
    if !line_start {
        match input.iter().position(|&b| b == b'\n') {
            Some(nl) => i = nl + 1,
            None => return Err((input.len(), false)),
        }
    }
    while i < input.len() {
        let Some(nl) = input[i..].iter().position(|&b| b == b'\n') else {
            let tail = &input[i..];
            let n = tail.len().min(5);
            let plausible = match dir {
                StreamDir::ToServer => lenient::is_tchar(tail[0]),
                StreamDir::ToClient => tail[..n].eq_ignore_ascii_case(&b"HTTP/"[..n]),
            };
            return if plausible && tail.len() <= MAX_START_LINE { Err((i, true)) } else { Err((input.len(), false)) };
        };
        let line = &input[i..i + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let found = match dir {
            StreamDir::ToServer => matches!(lenient::request_line(line), Some(Start::Request { version: Some(_), .. })),
            StreamDir::ToClient => lenient::status_line(line).is_some(),
        };
        if found {
            return Ok(i);
        }
        i += nl + 1;
    }
    Err((input.len(), true))
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
            expired_unanswered: 0,
            reparse_requests: false,
            upgraded: None,
            passthrough: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        conn: &Conn,
        start_ns: u64,
        end_ns: u64,
        outcome: Outcome,
        request_bytes: u64,
        response_bytes: u64,
        partial: bool,
        detail: Box<HttpDetail>,
    ) -> Exchange {
        Exchange {
            conn: conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Http1,
            start_ns,
            end_ns,
            request_bytes,
            response_bytes,
            outcome,
            partial,
            detail: Detail::Http(detail),
        }
    }

    fn emit_unanswered(req: Request, end_ns: u64, outcome: Outcome, out: &mut Emit) {
        let ex = Self::exchange(out.conn, req.start_ns, end_ns, outcome, req.bytes, 0, req.partial, req.detail);
        out.push(ex);
    }

    /// A request reported as a timeout may still be answered; remember it (bounded).
    fn note_expired(&mut self) {
        self.expired_unanswered = (self.expired_unanswered + 1).min(self.cfg.max_pending_per_conn);
    }

    fn emit_current(&mut self, end_ns: u64, outcome: Outcome, out: &mut Emit) {
        let Some(cur) = self.current.take() else { return };
        if cur.then_passthrough {
            self.passthrough = true;
            PASSTHROUGH.inc();
        }
        if cur.late {
            UNPAIRED.inc();
            return;
        }
        let start = cur.req.as_ref().map_or(end_ns, |r| r.start_ns);
        let resp = cur.resp;
        let (detail, request_bytes, partial) = match cur.req {
            Some(req) => {
                let mut d = req.detail;
                d.status = resp.status;
                d.reason = resp.reason;
                d.response_content_length = resp.content_length;
                (d, req.bytes, cur.partial || req.partial)
            }
            // Response without its request (capture started mid-connection, or the request was lost).
            None => {
                let d = HttpDetail {
                    version: resp.version,
                    status: resp.status,
                    reason: resp.reason,
                    response_content_length: resp.content_length,
                    ..Default::default()
                };
                (Box::new(d), 0, true)
            }
        };
        let ex =
            Self::exchange(out.conn, start.min(end_ns), end_ns, outcome, request_bytes, cur.bytes, partial, detail);
        out.push(ex);
    }

    fn queue_request(&mut self, req: Request, out: &mut Emit) {
        // The answers' framing was lost (resync) and the client sent another
        // request: a server answers in order, and a client that does not
        // pipeline sends it only after the previous answer ended, so the next
        // response byte starts a line. Without this, a status line right
        // after a body whose length was lost (a head cut by the kernel's
        // CNFLOW_HTTP_RESPONSE_SNAPLEN, or lost) waited for a line end that
        // never came. A pipelined body tail arriving later is only taken for
        // a response if it starts with a status line.
        let side = &mut self.sides[StreamDir::ToClient.index()];
        if side.body == (Body::Resync { line_start: false }) && side.buf.is_empty() {
            side.body = Body::Resync { line_start: true };
        }
        if let Some(old) = self.pending.push(req.start_ns, req) {
            EVICTED.inc();
            self.note_expired();
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
    /// The bytes that come next (a new segment after a gap, most often) are
    /// taken as starting a line: segments tend to start with a message.
    fn lose_sync(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        self.resync(dir, ts, true, true, out);
    }

    /// Stop reading the current message of `dir` and look for the next start
    /// line. `lost`: bytes were lost or garbled, so what was in flight and what
    /// comes next are partial (a framing the peer declared invalid loses nothing).
    fn resync(&mut self, dir: StreamDir, ts: u64, lost: bool, line_start: bool, out: &mut Emit) {
        let side = &mut self.sides[dir.index()];
        side.body = Body::Resync { line_start };
        side.partial_next |= lost;
        side.buf.clear();
        match dir {
            StreamDir::ToServer => {
                if let Some(r) = self.in_progress.as_mut() {
                    r.partial |= lost;
                }
                self.finish_request_body(out);
            }
            StreamDir::ToClient => {
                if let Some(c) = self.current.as_mut() {
                    c.partial |= lost;
                }
                // Answers may have been lost too: in-order pairing with expired requests is off.
                self.expired_unanswered = 0;
                self.emit_current(ts, Outcome::Complete, out);
            }
        }
    }

    fn on_bytes(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts, data, out);
        if std::mem::take(&mut self.reparse_requests) && !self.passthrough && self.upgraded.is_none() {
            // Client bytes held after a refused CONNECT are ordinary requests.
            let held = std::mem::take(&mut self.sides[0].buf);
            if !held.is_empty() {
                let ts0 = self.sides[0].buf_ts;
                self.feed(StreamDir::ToServer, ts0, &held, out);
            }
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
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
        // Bounded: every iteration consumes bytes, changes state without coming back, or returns.
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
                        StreamDir::ToClient => match self.http09_answer(rest) {
                            Some(true) => {
                                self.start_http09_response();
                                continue;
                            }
                            Some(false) => self.parse_response(rest, ts, out),
                            None => None,
                        },
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
                    // Framing lost: the resync state goes on with these bytes.
                    Some(0) | None if !matches!(self.sides[dir.index()].body, Body::Chunked(_)) => {}
                    Some(0) | None => return pos,
                    Some(n) => pos += n,
                },
                Body::Resync { line_start } => match find_message_start(rest, dir, line_start) {
                    Ok(at) => {
                        pos += at;
                        self.sides[dir.index()].body = Body::Head;
                    }
                    Err((keep, line_start)) => {
                        self.sides[dir.index()].body = Body::Resync { line_start };
                        return pos + keep;
                    }
                },
                Body::Connect => return pos,
            }
        }
    }

    /// Is the next response the bare body of an HTTP/0.9 request? None: too few bytes to tell.
    fn http09_answer(&mut self, rest: &[u8]) -> Option<bool> {
        if self.expired_unanswered > 0 || !self.pending.front_mut().is_some_and(|r| r.http09) {
            return Some(false);
        }
        // Some servers answer 0.9 requests with a full response anyway.
        let n = rest.len().min(5);
        if rest[..n].eq_ignore_ascii_case(&b"HTTP/"[..n]) {
            return if n < 5 { None } else { Some(false) };
        }
        Some(true)
    }

    fn start_http09_response(&mut self) {
        let partial = std::mem::take(&mut self.sides[1].partial_next);
        let req = self.pending.pop();
        self.current = Some(Current {
            req,
            resp: RespHead { version: Str::lit("0.9"), ..Default::default() },
            bytes: 0,
            partial,
            then_passthrough: false,
            late: false,
        });
        self.sides[1].body = Body::UntilClose;
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
                if c == Chunk::Trailers {
                    self.add_body_bytes(dir, nl as u64 + 1);
                    if line.is_empty() {
                        self.body_done(dir, ts, out);
                    }
                    return Some(nl + 1);
                }
                let hex = lenient::trim(line.split(|&b| b == b';').next().unwrap_or_default());
                // Leading zeros are fine; a size past what a server accepts (nginx:
                // 2^63-1) is a smuggling attempt, not a body to skip forever.
                let hex_ok = !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit);
                let size =
                    std::str::from_utf8(hex).ok().filter(|_| hex_ok).and_then(|s| u64::from_str_radix(s, 16).ok());
                match size.filter(|&n| n <= MAX_LENGTH) {
                    Some(0) => self.sides[i].body = Body::Chunked(Chunk::Trailers),
                    Some(n) => self.sides[i].body = Body::Chunked(Chunk::Data(n)),
                    None => {
                        PARSE_ERRORS.inc();
                        // The line is still here: the next request may start right after it.
                        self.resync(dir, ts, false, true, out);
                        return Some(0);
                    }
                }
                self.add_body_bytes(dir, nl as u64 + 1);
                Some(nl + 1)
            }
        }
    }

    fn parse_request(&mut self, input: &[u8], ts: u64, out: &mut Emit) -> Option<usize> {
        // Uninitialised: filling 96 empty headers before every parse cost
        // more than parsing a typical head's handful of them.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(input, &mut headers) {
            Ok(httparse::Status::Complete(n)) => {
                let (m, p) = (req.method.unwrap_or_default(), req.path.unwrap_or_default());
                self.on_request(m, p.as_bytes(), Str::lit(version_str(req.version)), req.headers, n, ts, out);
                Some(n)
            }
            Ok(httparse::Status::Partial) => None,
            Err(_) => match lenient::parse(input, true, true) {
                Parsed::Head(h) => {
                    let Start::Request { method, target, version } = h.start else { return None };
                    self.on_request(method, target, lenient_version(version), &h.headers, h.len, ts, out);
                    Some(h.len)
                }
                Parsed::Partial => None,
                Parsed::Invalid => {
                    PARSE_ERRORS.inc();
                    // Skip the rest of this line: a start line is looked for at the next ones.
                    self.resync(StreamDir::ToServer, ts, true, false, out);
                    Some(1)
                }
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        method: &str,
        target: &[u8],
        version: Str,
        hs: &[httparse::Header],
        n: usize,
        ts: u64,
        out: &mut Emit,
    ) {
        let partial = std::mem::take(&mut self.sides[0].partial_next);
        let f = Fields::scan(hs, true, self.cfg.span_fields);
        let (framing, cl) = request_framing(&f, version == "1.0");
        let http09 = version == "0.9";
        let upgrade_h2c = has_token(f.upgrade, "h2c");
        let detail = Box::new(request_detail(method, target, version, f, cl, self.cfg.span_fields));
        let connect = method == "CONNECT";
        let request = Request {
            start_ns: ts,
            bytes: n as u64,
            head: method == "HEAD",
            connect,
            http09,
            upgrade_h2c,
            partial,
            body_done: false,
            detail,
        };
        let body = match framing {
            // A tunnel request has no content; what follows waits for the answer.
            _ if connect => Body::Connect,
            Framing::Chunked => Body::Chunked(Chunk::Size),
            Framing::Length(len) => Body::Length(len),
            Framing::None => Body::Head,
            // The server answers 400 and closes; whatever follows is looked at line by line.
            Framing::Invalid => {
                PARSE_ERRORS.inc();
                Body::Resync { line_start: true }
            }
        };
        // A request that was still receiving its body when its response came stays answered.
        self.finish_request_body(out);
        if matches!(body, Body::Chunked(_) | Body::Length(_)) {
            self.in_progress = Some(request);
        } else {
            self.queue_request(Request { body_done: true, ..request }, out);
        }
        self.sides[0].body = body;
    }

    fn parse_response(&mut self, input: &[u8], ts: u64, out: &mut Emit) -> Option<usize> {
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        // `Response::parse` with the default config, into uninitialised headers.
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, input, &mut headers) {
            Ok(httparse::Status::Complete(n)) => {
                let (code, version) = (resp.code.unwrap_or(0), version_str(resp.version));
                let head = &input[..n];
                // httparse's phrase is the one `reason_phrase` reads from a
                // head that starts with its status line, unless it had to
                // give "" (obs-text) or it is longer than kept.
                let reason = match resp.reason {
                    Some(r)
                        if !r.is_empty()
                            && r.len() <= MAX_REASON
                            && !head.starts_with(b"\r")
                            && !head.starts_with(b"\n") =>
                    {
                        Some(Str::copy(r))
                    }
                    _ => reason_phrase(head),
                };
                self.on_response(code, Str::lit(version), reason, resp.headers, head, ts, out);
                Some(n)
            }
            Ok(httparse::Status::Partial) => None,
            Err(_) => match lenient::parse(input, false, true) {
                Parsed::Head(h) => {
                    let Start::Status { version, code } = h.start else { return None };
                    let head = &input[..h.len];
                    self.on_response(
                        code,
                        lenient_version(Some(version)),
                        reason_phrase(head),
                        &h.headers,
                        head,
                        ts,
                        out,
                    );
                    Some(h.len)
                }
                Parsed::Partial => None,
                Parsed::Invalid => {
                    PARSE_ERRORS.inc();
                    // Skip the rest of this line: a start line is looked for at the next ones.
                    self.resync(StreamDir::ToClient, ts, true, false, out);
                    Some(1)
                }
            },
        }
    }

    /// The request a final response answers, in order. `.1`: the answer is
    /// late (its request was already reported as a timeout).
    fn answered_request(&mut self) -> (Option<Request>, bool) {
        if self.expired_unanswered > 0 {
            self.expired_unanswered -= 1;
            return (None, true);
        }
        let req = self.pending.pop().or_else(|| self.in_progress.take()).or_else(|| self.salvage_request());
        (req, false)
    }

    /// A request head still incomplete in the client buffer when its answer
    /// (or the end) comes: the rest of it was never captured (capture joined
    /// mid-connection, lost segments). Keep what its complete lines say.
    fn salvage_request(&mut self) -> Option<Request> {
        let side = &mut self.sides[0];
        if side.body != Body::Head || side.buf.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut side.buf);
        side.body = Body::Resync { line_start: false };
        side.partial_next = true;
        let (method, target, version, headers) = match lenient::parse(&buf, true, false) {
            Parsed::Head(h) => {
                let Start::Request { method, target, version } = h.start else { return None };
                (method, target, lenient_version(version), h.headers)
            }
            // Even the request line was cut (a 96-byte snap length leaves ~30
            // bytes of payload): method and path still name the request, as
            // tshark shows them. A version that was not captured is not 0.9.
            Parsed::Partial => {
                let Start::Request { method, target, version } = lenient::cut_request_line(&buf)? else { return None };
                (method, target, lenient_version(Some(version.unwrap_or_default())), Vec::new())
            }
            _ => return None,
        };
        let f = Fields::scan(&headers, true, self.cfg.span_fields);
        let cl = f.content_length.ok().flatten();
        Some(Request {
            start_ns: side.buf_ts,
            bytes: buf.len() as u64,
            head: method == "HEAD",
            connect: method == "CONNECT",
            http09: false,
            upgrade_h2c: false,
            partial: true,
            body_done: true,
            detail: Box::new(request_detail(method, target, version, f, cl, self.cfg.span_fields)),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        status: u16,
        version: Str,
        reason: Option<Str>,
        hs: &[httparse::Header],
        head: &[u8],
        ts: u64,
        out: &mut Emit,
    ) {
        let n = head.len() as u64;
        if (100..200).contains(&status) && status != 101 {
            self.interim_bytes += n;
            return;
        }
        let partial = std::mem::take(&mut self.sides[1].partial_next);
        let (req, late) = self.answered_request();
        let is_head = req.as_ref().is_some_and(|r| r.head);
        let connect = req.as_ref().is_some_and(|r| r.connect);
        let tunnel = connect && (200..300).contains(&status);
        if connect && !tunnel && self.sides[0].body == Body::Connect {
            // A refused CONNECT: the client's held bytes are requests after all.
            self.sides[0].body = Body::Head;
            self.reparse_requests = true;
        }
        let f = Fields::scan(hs, false, false);
        if status == 101 && has_token(f.upgrade, "h2c") {
            if let Some(r) = req.as_ref().filter(|r| r.upgrade_h2c) {
                self.start_h2c(r, n);
                return;
            }
        }
        let cl = f.content_length;
        let resp = RespHead {
            // The request's version is reported when there is a request
            // (`emit_current`): the response's is kept only without one.
            version: if req.is_some() { Str::default() } else { version },
            status: Some(status),
            reason,
            content_length: cl.ok().flatten(),
        };
        // Without a request (mid-connection start) the response still tells version and status.
        let req_partial = req.as_ref().is_none_or(|r| r.partial);
        self.current = Some(Current {
            req,
            resp,
            bytes: n + std::mem::take(&mut self.interim_bytes),
            partial: partial || req_partial,
            then_passthrough: status == 101 || tunnel,
            late,
        });
        let no_body = is_head || status == 204 || status == 304 || status == 101 || tunnel;
        // RFC 9112 §6.3: chunked last wins; otherwise a valid length; otherwise until close.
        let body = match (f.chunked(), cl) {
            _ if no_body => Body::Head,
            (Some(true), _) => Body::Chunked(Chunk::Size),
            (None, Ok(Some(0))) => Body::Head,
            (None, Ok(Some(len))) => Body::Length(len),
            _ => Body::UntilClose,
        };
        self.sides[1].body = body;
        if body == Body::Head {
            self.emit_current(ts, Outcome::Complete, out);
        }
    }

    fn start_h2c(&mut self, req: &Request, head_bytes: u64) {
        let up = super::http2::UpgradeRequest {
            start_ns: req.start_ns,
            request_bytes: req.bytes,
            response_bytes: head_bytes + std::mem::take(&mut self.interim_bytes),
            detail: (*req.detail).clone(),
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
        if !self.sides[i].buf.is_empty() && self.sides[i].body == Body::Head {
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
            Body::Resync { .. } => {
                self.sides[i].buf.clear();
                self.sides[i].body = Body::Resync { line_start: false };
            }
            // Tunnel bytes (or requests) lost before the CONNECT answer: whatever it is, it is not decodable.
            Body::Connect => self.sides[i].buf.clear(),
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
        // A request head whose end was never captured is still a request.
        if !self.passthrough {
            if let Some(req) = self.salvage_request() {
                self.queue_request(req, out);
            }
        }
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
            self.note_expired();
            Self::emit_unanswered(req, end, Outcome::Timeout, out);
        }
    }
}

impl Http1Decoder {
    /// The buffered, incomplete head in `dir` is followed by lost bytes:
    /// decode its complete lines and resync.
    fn salvage_head(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        match dir {
            StreamDir::ToServer => {
                if let Some(r) = self.salvage_request() {
                    self.finish_request_body(out);
                    self.queue_request(r, out);
                }
            }
            StreamDir::ToClient => {
                let buf = std::mem::take(&mut self.sides[1].buf);
                if let Parsed::Head(h) = lenient::parse(&buf, false, false) {
                    if let Start::Status { version, code } = h.start {
                        if (100..200).contains(&code) && code != 101 {
                            self.interim_bytes += buf.len() as u64;
                        } else {
                            let (req, late) = self.answered_request();
                            self.current = Some(Current {
                                req,
                                resp: RespHead {
                                    version: lenient_version(Some(version)),
                                    status: Some(code),
                                    reason: reason_phrase(&buf),
                                    ..Default::default()
                                },
                                bytes: buf.len() as u64 + std::mem::take(&mut self.interim_bytes),
                                partial: true,
                                then_passthrough: false,
                                late,
                            });
                        }
                    }
                }
            }
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

    proptest! {
        /// The word-at-a-time check is the byte test.
        #[test]
        fn printable_ascii_is_the_byte_test(b in proptest::collection::vec(any::<u8>(), 0..40), at in 0usize..40, c in any::<u8>()) {
            let mut p: Vec<u8> = b.iter().map(|&x| b' ' + x % 95).collect();
            prop_assert!(printable_ascii(&p));
            if let Some(x) = p.get_mut(at) {
                *x = c;
            }
            prop_assert_eq!(printable_ascii(&p), p.iter().all(|&x| (b' '..=b'~').contains(&x)));
            prop_assert_eq!(printable_ascii(&b), b.iter().all(|&x| (b' '..=b'~').contains(&x)));
        }

        /// `name_is` is `eq_ignore_ascii_case` against a lower-case name.
        #[test]
        fn name_is_eq_ignore_ascii_case(n in proptest::collection::vec(any::<u8>(), 0..20), flip in any::<u32>()) {
            for t in TRACE_HEADERS.iter().copied().chain(["host", "user-agent", "content-length", "transfer-encoding"]) {
                prop_assert_eq!(name_is(&n, t.as_bytes()), n.eq_ignore_ascii_case(t.as_bytes()));
                // The name itself, some letters in upper case.
                let m: Vec<u8> = t.bytes().enumerate().map(|(i, b)| if flip >> (i % 32) & 1 == 1 { b.to_ascii_uppercase() } else { b }).collect();
                prop_assert!(name_is(&m, t.as_bytes()));
                let mut w = m.clone();
                if let Some(b) = w.get_mut(flip as usize % t.len()) {
                    *b ^= 0x20;
                }
                prop_assert_eq!(name_is(&w, t.as_bytes()), w.eq_ignore_ascii_case(t.as_bytes()));
            }
        }
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
        let reasons: Vec<_> = r.out.iter().map(|e| http(e).reason.as_deref().map(str::to_string)).collect();
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
    fn response_after_a_body_of_unknown_length_is_found_once_the_next_request_is_seen() {
        let mut r = Run::new();
        r.req(1, b"GET /big HTTP/1.1\r\n\r\n");
        // The head cut before Content-Length (kernel snap), the body's rest as data.
        r.resp(2, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Le");
        r.gap(StreamDir::ToClient, 2, 1320);
        r.resp(3, &[b'b'; 1448]);
        r.req(4, b"GET /small HTTP/1.1\r\n\r\n");
        r.resp(6, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.out.len(), 2);
        assert_eq!(http(&r.out[0]).status, Some(200));
        assert_eq!(http(&r.out[1]).status, Some(404));
        assert_eq!(r.out[1].start_ns, 4);
        // A body tail arriving after the request (a pipelining client) is
        // not taken for a response: it does not start with a status line.
        let mut r = Run::new();
        r.req(1, b"GET /big HTTP/1.1\r\n\r\n");
        r.resp(2, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Le");
        r.gap(StreamDir::ToClient, 2, 1320);
        r.req(3, b"GET /small HTTP/1.1\r\n\r\n");
        r.resp(4, b"bbbbbb");
        assert_eq!(r.out.len(), 1);
        r.resp(5, b"\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.out.len(), 2);
        assert_eq!(http(&r.out[1]).status, Some(404));
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

    #[test]
    fn lenient_probes() {
        let c = conn(Transport::Tcp, 1);
        let p = |d: &[u8]| probe(&c, StreamDir::ToServer, d);
        assert_eq!(p(b"QUERY /search HTTP/1.1\r\n"), Probe::Yes(95));
        assert_eq!(p(b"PROPFIND /dav/ HTTP/1.1\r\n"), Probe::Yes(95));
        assert_eq!(p(b"CONNECT example.test:443 HTTP/1.1\r\n"), Probe::Yes(95));
        assert_eq!(p(b"GET /a HTTP/1.\r\n"), Probe::Yes(80));
        assert_eq!(p(b"GET /page\r\n"), Probe::Yes(HTTP09_CONFIDENCE));
        // A token method needs its whole request line as evidence; "word space slash" is not enough.
        assert_eq!(p(b"PURGE /x"), Probe::NeedMore);
        assert_eq!(p(b"PURGE /x\r\n"), Probe::No);
        assert_eq!(p(b"SET /k v\r\n"), Probe::No);
        assert_eq!(p(b"GET key\r\n"), Probe::No);
        assert_eq!(p(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), Probe::No);
        assert_eq!(p(&[b'A'; 30]), Probe::No);
        let r = |d: &[u8]| probe(&c, StreamDir::ToClient, d);
        assert_eq!(r(b"http/1.1 200 ok\r\n"), Probe::Yes(80));
        assert_eq!(r(b"HTTP/1. 400 Bad Request\r\n"), Probe::Yes(80));
        assert_eq!(r(b"http/1.1 2"), Probe::NeedMore);
        assert_eq!(r(b"http/1.1 abc\r\n"), Probe::No);
        assert_eq!(r(b"<html>"), Probe::No);
    }

    #[test]
    fn token_methods_odd_versions_and_folding() {
        let mut r = Run::new();
        r.req(1, b"QUERY /search?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd");
        r.req(1, b"PROPFIND /dav/ HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n  b\r\nUser-Agent: ua/1\r\n\r\n");
        r.req(1, b"GET /bad HTTP/1.\r\nHost: h\r\n\r\n");
        r.resp(2, b"http/1.1 200 ok\r\ncontent-length: 2\r\n\r\nok");
        r.resp(2, b"HTTP/1.1 207 Multi-Status\r\nX-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n");
        r.resp(2, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let got: Vec<_> = r
            .out
            .iter()
            .map(|e| {
                let h = http(e);
                (
                    h.method.as_deref().unwrap().to_string(),
                    h.path.as_deref().unwrap().to_string(),
                    h.status,
                    h.version.to_string(),
                    e.partial,
                )
            })
            .collect();
        let want = [("QUERY", "/search", 200, "1.1"), ("PROPFIND", "/dav/", 207, "1.1"), ("GET", "/bad", 400, "1")];
        let want: Vec<_> =
            want.iter().map(|(m, p, s, v)| (m.to_string(), p.to_string(), Some(*s), v.to_string(), false)).collect();
        assert_eq!(got, want);
        assert_eq!(http(&r.out[0]).reason.as_deref(), Some("ok"));
        assert_eq!(http(&r.out[0]).query.as_deref(), Some("q=1"));
        assert_eq!(http(&r.out[1]).user_agent.as_deref(), Some("ua/1"));
        assert_eq!(text(b"a\r\n  b\r\n\tc"), "a b c");
    }

    #[test]
    fn http09_request_and_bare_body_answer() {
        let mut r = Run::new();
        r.req(1, b"GET /page\r\n");
        r.resp(2, b"<html>hello</html>\n");
        r.resp(3, b"more");
        r.close(4, CloseReason::Fin);
        assert_eq!(r.out.len(), 1);
        let (e, h) = (&r.out[0], http(&r.out[0]));
        assert_eq!(
            (h.method.as_deref(), h.path.as_deref(), h.version.as_str(), h.status),
            (Some("GET"), Some("/page"), "0.9", None)
        );
        assert_eq!(
            (e.request_bytes, e.response_bytes, e.end_ns, e.outcome, e.partial),
            (11, 23, 4, Outcome::Complete, false)
        );
        // A server that answers a 0.9 request with a status line anyway is read as such.
        let mut r = Run::new();
        r.req(1, b"GET /old\r\n");
        r.resp(2, b"HTT");
        r.resp(2, b"P/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(http(&r.out[0]).status, Some(400));
    }

    #[test]
    fn connect_tunnel_stops_decoding() {
        let before = PASSTHROUGH.get();
        let mut r = Run::new();
        // The client's TLS bytes right behind the CONNECT are held, then belong to the tunnel.
        r.req(1, b"CONNECT db.example:443 HTTP/1.1\r\nHost: db.example:443\r\n\r\n\x16\x03\x01\x02\x00\x01\x00");
        r.resp(2, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x7a\x02");
        r.req(3, b"GET /inside HTTP/1.1\r\n\r\n");
        r.resp(4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        r.close(5, CloseReason::Fin);
        assert_eq!(r.out.len(), 1, "{:?}", r.out);
        let h = http(&r.out[0]);
        assert_eq!(
            (h.method.as_deref(), h.path.as_deref(), h.host.as_deref()),
            (Some("CONNECT"), None, Some("db.example:443"))
        );
        assert_eq!((h.status, h.reason.as_deref()), (Some(200), Some("Connection established")));
        assert!(PASSTHROUGH.get() > before);
        // Refused: what the client sent after the CONNECT is requests again.
        let mut r = Run::new();
        r.req(1, b"CONNECT h:443 HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        r.resp(2, b"HTTP/1.1 405 Not Allowed\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let st: Vec<_> = r.out.iter().map(|e| (http(e).method.clone(), http(e).status)).collect();
        assert_eq!(st, [(Some("CONNECT".into()), Some(405)), (Some("GET".into()), Some(200))]);
    }

    /// Request-smuggling shapes: a body length a server rejects must not
    /// swallow the request that follows (nginx answers 400 and closes).
    #[test]
    fn unusable_framing_resyncs_on_the_next_request() {
        let cases: [&[u8]; 5] = [
            b"POST /a HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        ];
        for head in cases {
            let mut r = Run::new();
            let mut req = head.to_vec();
            req.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
            r.req(1, &req);
            r.resp(2, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            r.close(3, CloseReason::Fin);
            let got: Vec<_> =
                r.out.iter().map(|e| (http(e).path.clone().unwrap(), http(e).status, e.outcome)).collect();
            assert_eq!(
                got,
                [("/a".into(), Some(400), Outcome::Complete), ("/smuggled".into(), None, Outcome::Timeout)],
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        // Equal duplicates are one length (RFC 9110 §8.6); chunked wins over Content-Length (RFC 9112 §6.3).
        for head in [
            &b"POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0003;ext=1\r\nabc\r\n0\r\n\r\n",
        ] {
            let mut r = Run::new();
            r.req(1, head);
            r.req(1, b"GET /b HTTP/1.1\r\n\r\n");
            r.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let paths: Vec<_> = r.out.iter().map(|e| http(e).path.clone().unwrap()).collect();
            assert_eq!(paths, ["/a", "/b"], "{}", String::from_utf8_lossy(head));
            assert!(r.out.iter().all(|e| !e.partial && http(e).status == Some(200)));
        }
    }

    #[test]
    fn late_response_is_dropped_not_reported_alone() {
        let before = UNPAIRED.get();
        let mut r = Run::new();
        r.req(1, b"GET /slow HTTP/1.1\r\n\r\n");
        r.dec.expire(10, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.req(11, b"GET /next HTTP/1.1\r\n\r\n");
        r.resp(20, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslowHTTP/1.1 204 No Content\r\n\r\n");
        let got: Vec<_> = r.out.iter().map(|e| (http(e).path.clone().unwrap(), http(e).status, e.outcome)).collect();
        assert_eq!(got, [("/slow".into(), None, Outcome::Timeout), ("/next".into(), Some(204), Outcome::Complete)]);
        assert!(UNPAIRED.get() > before);
    }

    /// A 96-byte snap length (Wireshark's communityid.pcap) leaves 30 bytes of
    /// the request: `GET /images/sf.net_box.gif HT`, then a gap. Method and
    /// path are kept (tshark shows them); a target not followed by a space
    /// may be cut and is not a path.
    #[test]
    fn request_line_cut_by_snap_length_keeps_method_path() {
        for (cut, want) in [
            (&b"GET /images/sf.net_box.gif HT"[..], Some(("GET", "/images/sf.net_box.gif", "1.1"))),
            (b"GET /a?x=1 HTTP/1.0", Some(("GET", "/a", "1.0"))),
            (b"PURGE /c ", Some(("PURGE", "/c", "1.1"))),
            (b"GET /images/sf.ne", None),
            (b"GET /a b/c", None),
        ] {
            let mut r = Run::new();
            r.req(1, cut);
            r.gap(StreamDir::ToServer, 2, 466);
            r.resp(3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            r.close(4, CloseReason::Fin);
            let got = r.out.iter().find_map(|e| {
                let h = http(e);
                h.method
                    .as_deref()
                    .map(|m| (m.to_string(), h.path.as_deref().unwrap_or_default().to_string(), h.version.to_string()))
            });
            let want = want.map(|(m, p, v)| (m.to_string(), p.to_string(), v.to_string()));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(cut));
        }
    }

    #[test]
    fn head_cut_short_mid_connection_keeps_method_path_host() {
        // Joined mid-connection: the first segment is a POST head of 1,400+ bytes
        // whose end (and body) was never captured; then the answer comes.
        let mut head = b"POST /api/v2/orders?id=7 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: app/3\r\n".to_vec();
        for i in 0..120 {
            head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "v".repeat(4)).as_bytes());
        }
        head.extend_from_slice(b"Cookie: sess");
        assert!(head.len() > 1400);
        for answered in [true, false] {
            let mut r = Run::new();
            r.conn = conn_with(Transport::Tcp, 80, RoleEvidence::Port);
            r.req(1, &head);
            if answered {
                r.resp(2, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
            }
            r.close(3, CloseReason::Fin);
            assert_eq!(r.out.len(), 1);
            let (e, h) = (&r.out[0], http(&r.out[0]));
            assert_eq!(
                (h.method.as_deref(), h.path.as_deref(), h.query.as_deref(), h.host.as_deref()),
                (Some("POST"), Some("/api/v2/orders"), Some("id=7"), Some("shop.example"))
            );
            assert_eq!(h.user_agent.as_deref(), Some("app/3"));
            assert!(e.partial);
            assert_eq!(h.status, answered.then_some(201));
            assert_eq!(e.start_ns, 1);
        }
        // More header lines than httparse's array, head complete: read line by line.
        let mut full = head[..head.len() - 12].to_vec();
        full.extend_from_slice(b"\r\n");
        let mut r = Run::new();
        r.req(1, &full);
        r.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((http(&r.out[0]).host.as_deref(), r.out[0].partial), (Some("shop.example"), false));
    }

    proptest! {
        // Without span fields (metrics only) the decoder reports the same
        // exchanges: every field but the user agent, the query string, the
        // content type and the trace headers, which are left empty.
        #[test]
        fn span_fields_off_changes_only_those_fields(
            picks in proptest::collection::vec((0usize..6, 0usize..5), 1..12),
            cut in 1usize..80,
        ) {
            let requests: [&[u8]; 6] = [
                b"GET /users/42?tab=posts&x=1 HTTP/1.1\r\nHost: api:8080\r\nUser-Agent: curl/8.14.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
                b"POST /orders HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: 7\r\nX-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n\r\n{\"a\":1}",
                b"PUT /blob?v=2 HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nuser-agent: app/3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"GET / HTTP/1.0\r\n\r\n",
                b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\n",
                b"OPTIONS * HTTP/1.1\r\nHost: h\r\nb3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n\r\n",
            ];
            let responses: [&[u8]; 5] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 503 Backend pool exhausted\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nUser-Agent: not-a-request-field\r\n\r\n",
            ];
            let off = DecodeConfig { span_fields: false, ..DecodeConfig::default() };
            let (mut with, mut without) = (Run::new(), Run { dec: Http1Decoder::new(&off), ..Run::new() });
            for (i, (q, a)) in picks.iter().enumerate() {
                let ts = 10 * i as u64;
                for chunk in requests[*q].chunks(cut) {
                    with.req(ts, chunk);
                    without.req(ts, chunk);
                }
                for chunk in responses[*a].chunks(cut) {
                    with.resp(ts + 5, chunk);
                    without.resp(ts + 5, chunk);
                }
            }
            with.close(1000, CloseReason::Fin);
            without.close(1000, CloseReason::Fin);
            let blank = |h: &HttpDetail| HttpDetail { user_agent: None, query: None, content_type: None, trace_headers: vec![], ..h.clone() };
            prop_assert_eq!(with.out.len(), without.out.len());
            for (x, y) in with.out.iter().zip(&without.out) {
                prop_assert_eq!(format!("{:?}", blank(http(x))), format!("{:?}", http(y)));
                prop_assert_eq!((x.start_ns, x.end_ns, &x.outcome, x.partial), (y.start_ns, y.end_ns, &y.outcome, y.partial));
            }
            // The fields are read when asked for (the comparison is about something).
            let read = |x: &Exchange| {
                let h = http(x);
                h.user_agent.is_some() || h.query.is_some() || !h.trace_headers.is_empty()
            };
            prop_assert!(picks.iter().all(|(q, _)| *q >= 3) || with.out.iter().any(read));
        }

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

        /// Odd but real shapes (token methods, folding, a malformed version,
        /// lower-case status lines, a rejected Content-Length with a request
        /// behind it) decode the same however the stream is cut.
        #[test]
        fn lenient_stream_any_segmentation(cuts in proptest::collection::vec(1usize..80, 1..20)) {
            let reqs: &[u8] = b"QUERY /q HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPROPFIND /dav HTTP/1.1\r\nX-F: a\r\n b\r\n\r\nGET /bad HTTP/1.\r\n\r\nPOST /a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
            let resps: &[u8] = b"http/1.1 200 ok\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 207 Multi\r\nX-F: a\r\n b\r\nContent-Length: 0\r\n\r\nHTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\nHTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\nhttp/1.0 200 OK\r\n\r\nuntil close";
            let mut r = Run::new();
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&[(StreamDir::ToServer, reqs), (StreamDir::ToClient, resps)], &cuts) {
                r.data(dir, at, chunk);
            }
            r.close(1000, CloseReason::Fin);
            let got: Vec<_> = r.out.iter().map(|e| (http(e).path.as_deref().unwrap_or_default().to_string(), http(e).status)).collect();
            let want = [("/q", 200), ("/dav", 207), ("/bad", 400), ("/a", 400), ("/smuggled", 200)];
            prop_assert_eq!(got, want.iter().map(|(p, s)| (p.to_string(), Some(*s))).collect::<Vec<_>>());
            prop_assert!(r.out.iter().all(|e| !e.partial));
        }

        /// Fragments of every lenient shape in any order, with gaps and
        /// timeouts: never a panic, buffers stay bounded.
        #[test]
        fn lenient_fragments_never_panic(parts in proptest::collection::vec((any::<bool>(), 0usize..16, proptest::collection::vec(any::<u8>(), 0..12), 0u8..10), 0..60)) {
            const F: [&[u8]; 16] = [
                b"CONNECT h:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 Connection established\r\n\r\n", b"GET /p\r\n",
                b"http/1.1 204 x\r\n\r\n", b"POST /a HTTP/1.1\r\n", b"Transfer-Encoding: chunked\r\n",
                b"ffffffffffffffffff\r\n", b"Content-Length: 18446744073709551615\r\n", b"Content-Length: 4\r\n",
                b" folded\r\n", b"\r\n", b"QUERY /q HTTP/1.\r\n", b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\n",
                b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n", b"<html>", b"5\r\nhello\r\n0\r\n\r\n",
            ];
            let mut r = Run::new();
            for (i, (to_server, f, noise, op)) in parts.iter().enumerate() {
                let dir = if *to_server { StreamDir::ToServer } else { StreamDir::ToClient };
                let ts = i as u64 * 1_000_000_000;
                match op {
                    0 => { r.gap(dir, ts, 100); }
                    1 => r.dec.expire(ts, &mut Emit { conn: &r.conn, out: &mut r.out }),
                    2 => { r.data(dir, ts, noise); }
                    _ => { r.data(dir, ts, F[*f]); }
                }
                prop_assert!(r.dec.sides.iter().all(|s| s.buf.len() <= DecodeConfig::default().max_buffer_per_dir + 300));
                prop_assert!(r.dec.expired_unanswered <= DecodeConfig::default().max_pending_per_conn);
            }
            r.close(1 << 50, CloseReason::Fin);
        }

        #[test]
        fn valid_stream_any_segmentation_pairs_all(cuts in proptest::collection::vec(1usize..60, 1..20)) {
            let reqs: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n";
            let resps: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
            let mut r = Run::new();
            for (dir, at, chunk) in crate::protocol::testutil::in_cuts(&[(StreamDir::ToServer, reqs), (StreamDir::ToClient, resps)], &cuts) {
                r.data(dir, at, chunk);
            }
            prop_assert_eq!(r.out.len(), 3);
            let st: Vec<_> = r.out.iter().map(|e| http(e).status).collect();
            prop_assert_eq!(st, vec![Some(200), Some(201), Some(200)]);
            prop_assert!(r.out.iter().all(|e| !e.partial));
        }
    }
}
