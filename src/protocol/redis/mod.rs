//! Redis (RESP2 and RESP3, inline commands).
//!
//! RESP is scanned incrementally rather than decoded into whole frames
//! (redis-protocol needs a complete frame in memory): bulk payloads are
//! skipped as they stream past, so a multi-megabyte value costs no memory and
//! bytes lost inside one cost nothing but the value. Only what telemetry
//! needs is kept: the first arguments of a command (bounded) and the type,
//! error text and first elements of a reply. The tests use redis-protocol's
//! encoder as an independent oracle for the scanner.
//!
//! Pairing is in order (pipelining), with the exceptions Redis has: pub/sub
//! pushes (RESP3 `>` frames, RESP2 `message`/`pmessage`/`smessage` arrays)
//! are never taken as replies; SUBSCRIBE-family commands take one
//! confirmation per channel; MONITOR streams are ignored after its `+OK`;
//! CLIENT REPLY OFF/SKIP suppress replies (those commands become exchanges of
//! their own with response type "none"); RESP3 attributes prefix a reply.
//!
//! RESP3 streamed types are scanned like the others: a streamed string
//! (`$?` then `;<len>` chunks up to `;0`) is one value whose chunks are skipped
//! as they pass, and a streamed aggregate (`*?`, `%?`, `~?`) stays open until
//! its `.` terminator, however many elements it has. Redis 7 itself never
//! sends them (they exist for proxies and other servers), so they are tested
//! against redis-protocol's streaming encoder rather than a capture.
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, RoleEvidence, StreamDir, Transport};
use crate::otel::attr::Str;
use crate::protocol::exchange::{Detail, Exchange, FifoPairer, Outcome, Protocol};
use crate::protocol::span_common::lossy_text;
use crate::stats::{counter, Counter};
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::RedisDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "redis")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "redis")]));
static UNPAIRED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unpaired_responses", &[("protocol", "redis")]));

/// Elements of a message kept (command arguments; first elements of a reply).
const MAX_CAPTURED: usize = 32;
/// Bytes kept per captured element.
const MAX_ELEMENT: usize = 64;
/// Length of `query_raw`.
const MAX_RAW: usize = 256;
/// Arguments shown as `?` in `query_masked` before "...".
const MAX_MASKED: usize = 16;
/// Longest RESP line (type byte, length or simple value) accepted.
const MAX_LINE: usize = 64 * 1024;
/// Deepest nesting followed.
const MAX_DEPTH: usize = 64;
/// Child count of an open streamed aggregate (`*?`): it ends at `.`, not by count.
const STREAMED: u64 = u64::MAX;

/// Commands whose first argument is a sub-command (`CLIENT SETNAME`): the
/// list the tests hold [`is_container`] to.
#[cfg(test)]
const CONTAINER_COMMANDS: [&str; 16] = [
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT",
    "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Is `name` one of the container commands? A `match`, which compares the
/// length first, rather than 16 string comparisons per command.
fn is_container(name: &str) -> bool {
    matches!(
        name,
        "ACL"
            | "CLIENT"
            | "CLUSTER"
            | "COMMAND"
            | "CONFIG"
            | "DEBUG"
            | "FUNCTION"
            | "LATENCY"
            | "MEMORY"
            | "MODULE"
            | "OBJECT"
            | "PUBSUB"
            | "SCRIPT"
            | "SLOWLOG"
            | "XGROUP"
            | "XINFO"
    )
}
/// Commands recognised when sent inline (telnet style) during detection,
/// with their Redis arity (command name included; negative: at least that
/// many). A line of another protocol that happens to start with one of these
/// words (HTTP/0.9 `GET /page`, memcached `get k1 k2`, `incr k 1`,
/// `set k 0 0 3`) mostly fails the arity; the rest is settled by the reply.
const INLINE_COMMANDS: [(&str, i8); 40] = [
    ("PING", -1),
    ("AUTH", -2),
    ("HELLO", -1),
    ("SELECT", 2),
    ("INFO", -1),
    ("GET", 2),
    ("SET", -3),
    ("DEL", -2),
    ("KEYS", 2),
    ("EXISTS", -2),
    ("INCR", 2),
    ("DECR", 2),
    ("QUIT", -1),
    ("ECHO", 2),
    ("MONITOR", 1),
    ("SUBSCRIBE", -2),
    ("PSUBSCRIBE", -2),
    ("PUBLISH", 3),
    ("CONFIG", -2),
    ("CLIENT", -2),
    ("FLUSHALL", -1),
    ("FLUSHDB", -1),
    ("DBSIZE", 1),
    ("TYPE", 2),
    ("TTL", 2),
    ("EXPIRE", -3),
    ("LPUSH", -3),
    ("RPUSH", -3),
    ("LRANGE", 4),
    ("HGET", 3),
    ("HSET", -4),
    ("HGETALL", 2),
    ("SADD", -3),
    ("SMEMBERS", 2),
    ("ZADD", -4),
    ("ZRANGE", -4),
    ("MULTI", 1),
    ("EXEC", 1),
    ("SCAN", -2),
    ("MGET", -2),
];
/// Longest first line looked at by the probe.
const PROBE_LINE: usize = 1024;

/// The RESP2 and RESP3 type bytes, for the tests that hold [`is_resp_type`] to them.
#[cfg(test)]
const RESP_TYPES: &[u8] = b"+-:$*_,#!=(%~>|";

/// Is `t` a RESP type byte? A `match` (a range check and a bit test):
/// `[u8]::contains` on the list is a `memchr` call, and every line of every
/// message asked it two or three times (with [`is_resp3_only`]), ~380
/// instructions per Redis exchange in callgrind.
#[inline]
fn is_resp_type(t: u8) -> bool {
    matches!(t, b'+' | b'-' | b':' | b'$' | b'*') || is_resp3_only(t)
}

#[inline]
fn is_resp3_only(t: u8) -> bool {
    matches!(t, b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%' | b'~' | b'>' | b'|')
}

/// Does the first data of one direction look like Redis? (The other
/// direction unknown; see [`probe_flow`].)
pub fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    match dir {
        StreamDir::ToServer => probe_flow(conn, data, b""),
        StreamDir::ToClient => probe_flow(conn, b"", data),
    }
}

/// What the first client bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// A RESP array of bulk strings (`*2\r\n$3\r\n...`): only Redis (and
    /// its clones) speaks that.
    Array,
    /// A known command sent inline with a valid arity: shared with other
    /// text protocols (HTTP/0.9, memcached), so only a RESP reply confirms it.
    Inline,
    NeedMore,
    No,
}

/// Does the first data of a connection look like Redis? Evidence, strongest first:
/// a RESP request array; an inline command of valid arity answered by a
/// well-formed RESP reply; joined mid-connection, a RESP request array at a
/// line start with a RESP reply line on the other side. A server never speaks
/// first, and an inline command alone (however Redis-like) claims nothing.
pub fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
    let req = if to_server.is_empty() { Request::NeedMore } else { request_start(to_server) };
    let reply = if to_client.is_empty() { Probe::NeedMore } else { reply_start(to_client) };
    if conn.evidence == RoleEvidence::Syn {
        if to_server.is_empty() && !to_client.is_empty() {
            return Probe::No;
        }
        return match (req, reply) {
            (Request::Array, _) => Probe::Yes(90),
            (Request::Inline, Probe::Yes(_)) => Probe::Yes(70),
            (Request::Inline | Request::NeedMore, Probe::NeedMore | Probe::Yes(_)) => Probe::NeedMore,
            _ => Probe::No,
        };
    }
    // Joined mid-connection: either side may start inside a message.
    match (req, reply) {
        // The reply side may start inside a value: the request shape is enough.
        (Request::Array, _) => Probe::Yes(90),
        (Request::Inline, Probe::Yes(_)) => Probe::Yes(70),
        (_, Probe::No) => Probe::No,
        _ => {
            // A request array further in (after the tail of a cut message).
            let later = line_starts(to_server).any(|at| request_start(&to_server[at..]) == Request::Array);
            match reply {
                Probe::Yes(_) if later => Probe::Yes(60),
                _ if to_server.len() >= PROBE_LINE || to_client.len() >= PROBE_LINE => Probe::No,
                _ => Probe::NeedMore,
            }
        }
    }
}

/// Offsets of the line starts after the first one, within the probe window.
fn line_starts(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let window = &data[..data.len().min(PROBE_LINE)];
    window.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).filter(move |&i| i < data.len())
}

fn request_start(data: &[u8]) -> Request {
    let Some(&first) = data.first() else { return Request::NeedMore };
    if first == b'*' {
        let digits = data[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        let after = &data[1 + digits..];
        if after.is_empty() && digits < 8 {
            return Request::NeedMore;
        }
        if digits == 0 || digits > 7 {
            return Request::No;
        }
        return match after {
            [b'\r'] | [b'\r', b'\n'] => Request::NeedMore,
            [b'\r', b'\n', b'$', ..] => Request::Array,
            _ => Request::No,
        };
    }
    let Some(nl) = data.iter().take(PROBE_LINE).position(|&b| b == b'\n') else {
        // Only a command word may still be completed into a valid line.
        let word = data.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let plausible = data.len() < PROBE_LINE && (word == data.len() || data.get(word) == Some(&b' '));
        return if plausible && inline_word(&data[..word]).is_some() || word == data.len() && word < 16 {
            Request::NeedMore
        } else {
            Request::No
        };
    };
    let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
    if inline_valid(line) {
        Request::Inline
    } else {
        Request::No
    }
}

fn inline_word(word: &[u8]) -> Option<i8> {
    let w = std::str::from_utf8(word).ok()?;
    INLINE_COMMANDS.iter().find(|(c, _)| c.eq_ignore_ascii_case(w)).map(|(_, a)| *a)
}

/// One inline command line: a known command, printable words, valid arity
/// (and for SET, valid options: memcached's `set k flags exptime bytes` is not).
fn inline_valid(line: &[u8]) -> bool {
    if line.iter().any(|&b| b < 0x20 && b != b'\t') || line.first().is_some_and(|b| !b.is_ascii_alphabetic()) {
        return false;
    }
    let words: Vec<&[u8]> = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).collect();
    let Some(arity) = words.first().and_then(|w| inline_word(w)) else { return false };
    let n = words.len() as i64;
    let arity_ok = if arity >= 0 { n == arity as i64 } else { n >= -(arity as i64) };
    if !arity_ok {
        return false;
    }
    if words[0].eq_ignore_ascii_case(b"SET") {
        return set_options_valid(&words[3..]);
    }
    true
}

fn set_options_valid(mut opts: &[&[u8]]) -> bool {
    while let Some((o, rest)) = opts.split_first() {
        let o = o.to_ascii_uppercase();
        opts = rest;
        match o.as_slice() {
            b"NX" | b"XX" | b"GET" | b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => match opts.split_first() {
                Some((n, rest)) if !n.is_empty() && n.iter().all(u8::is_ascii_digit) => opts = rest,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Is `data` the start of a RESP reply? `Yes` for a complete, well-formed first line.
fn reply_start(data: &[u8]) -> Probe {
    let first = data[0];
    if !is_resp_type(first) || first == b'|' {
        return Probe::No;
    }
    let Some(nl) = data.iter().take(512).position(|&b| b == b'\n') else {
        return if data.len() < 512 { Probe::NeedMore } else { Probe::No };
    };
    if nl < 2 || data[nl - 1] != b'\r' {
        return Probe::No;
    }
    let body = &data[1..nl - 1];
    if body.iter().any(|&b| b < 0x20) {
        return Probe::No;
    }
    let valid = match first {
        // A length, or -1 for a RESP2 null.
        b'$' | b'*' | b'%' | b'~' | b'>' | b'=' | b'!' => {
            body == b"-1" || !body.is_empty() && body.len() <= 10 && body.iter().all(u8::is_ascii_digit)
        }
        b':' => parse_len(body).is_some(),
        b'(' => {
            let digits = body.strip_prefix(b"-").unwrap_or(body);
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        }
        b'_' => body.is_empty(),
        b'#' => body == b"t" || body == b"f",
        b',' => {
            !body.is_empty()
                && std::str::from_utf8(body)
                    .is_ok_and(|s| s.parse::<f64>().is_ok() || matches!(s, "inf" | "-inf" | "nan"))
        }
        // An error starts with its upper-case code ("ERR", "WRONGTYPE", "NOAUTH").
        b'-' => body.iter().take_while(|b| b.is_ascii_uppercase()).count() >= 2,
        b'+' => !body.is_empty(),
        _ => false,
    };
    if valid {
        Probe::Yes(40)
    } else {
        Probe::No
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(RedisDecoder::new(cfg))
}

/// Redis (RESP2 and RESP3). The registry entry.
pub struct Redis;

impl super::registry::L7Protocol for Redis {
    /// Stream probes that can overlap, strongest evidence first: HTTP/2, HTTP/1, Kafka, Redis, DNS.
    const TIE_BREAK: u8 = 1;
    const NAME: &'static str = "redis";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
        probe_flow(conn, to_server, to_client)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 6379 | 6380 | 26379)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

/// One complete top-level RESP message (or inline command).
#[derive(Debug, Default, Clone)]
pub struct Msg {
    /// Type byte of the top-level value (b'i' for an inline command).
    pub kind: u8,
    pub start_ts: u64,
    pub bytes: u64,
    /// Top-level value is a null (`$-1`, `*-1`, `_`).
    pub null: bool,
    /// Simple/error line of a non-aggregate top-level value, or the first elements of an aggregate (bounded).
    pub elems: Elems,
    /// Number of direct children of a top-level aggregate (pairs count twice for maps).
    pub count: u64,
    /// Error line (`-` or `!`).
    pub error: Option<String>,
    /// Bytes inside this message were lost.
    pub partial: bool,
    /// A RESP3-only type was seen anywhere in the message.
    pub resp3: bool,
    /// Bytes before this message did not parse and were skipped: messages
    /// may be missing, so in-order pairing is uncertain from here.
    pub after_error: bool,
}

/// The captured elements of a message, their bytes in one buffer. A
/// `Vec<Vec<u8>>` took an allocation for the list and one per element (four
/// for `SET key value`, freed again after the command), and the scanner
/// keeps the last message's buffers for the next one (see
/// [`Scanner::recycle`]): a steady stream of commands allocates nothing here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Elems {
    bytes: Vec<u8>,
    /// End offset of each element in `bytes`.
    ends: Vec<u32>,
}

impl Elems {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.bytes[start..end])
    }

    pub fn first(&self) -> Option<&[u8]> {
        self.get(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// A new element holding `b`.
    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.ends.push(self.bytes.len() as u32);
    }

    /// Appends to the last element, which stays at most `max` bytes long
    /// (nothing without an element).
    fn extend_last(&mut self, b: &[u8], max: usize) {
        let n = self.ends.len();
        if n == 0 {
            return;
        }
        // Only the last element ever grows: it ends where the buffer does.
        let start = if n == 1 { 0 } else { self.ends[n - 2] as usize };
        let room = max.saturating_sub(self.bytes.len() - start);
        self.bytes.extend_from_slice(&b[..b.len().min(room)]);
        self.ends[n - 1] = self.bytes.len() as u32;
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Bytes held (both buffers), for the bound on what is kept for reuse.
    fn capacity_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity()
    }

    #[cfg(test)]
    fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl std::ops::Index<usize> for Elems {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        self.get(i).expect("element index in range")
    }
}

/// Largest element buffers a scanner keeps for its next message: a command
/// of usual size; a message that captured more (32 elements of 64 bytes at
/// most) gives its buffers back, so an idle connection holds little.
const KEEP_ELEMS_BYTES: usize = 512;

/// Incremental RESP scanner for one direction.
#[derive(Debug, Default)]
pub struct Scanner {
    buf: Vec<u8>,
    /// Remaining child counts of open aggregates.
    stack: Vec<u64>,
    /// Bytes of the current bulk payload still to come, CRLF included.
    bulk_left: u64,
    /// The current bulk payload is captured into `msg.elems`.
    bulk_capture: bool,
    /// Inside a streamed string (`$?`): Some(whether its chunks are captured).
    chunked: Option<bool>,
    msg: Option<Msg>,
    /// Framing lost: skip to a plausible message start.
    resync: bool,
    /// Inline commands are accepted (client → server direction).
    requests: bool,
    /// A protocol error made the scanner skip bytes; the next message says so.
    after_error: bool,
    /// Top-level scalar values other than blob errors are not captured (see
    /// [`Scanner::replies`]).
    skip_top_scalars: bool,
    /// The element buffers of a message already handled, for the next one.
    spare: Option<Elems>,
    /// Elements captured per message (the rest are counted).
    max_captured: usize,
}

/// Elements of a command read when its statement texts are not built: the
/// name, a subcommand or first argument (`HELLO 3`, `SELECT 2`) and a
/// second one (`CLIENT REPLY OFF`).
const COMMAND_ARGS_READ: usize = 3;

impl Scanner {
    pub fn new(requests: bool) -> Self {
        Self { requests, max_captured: MAX_CAPTURED, ..Default::default() }
    }

    /// The reply direction as the decoder reads it: a top-level scalar
    /// (`+OK`, `:1`, a GET's bulk value) is not copied into `elems`, since
    /// only the elements of aggregates (pub/sub confirmations and messages)
    /// and a blob error's text are read from a reply. Two allocations and a
    /// copy less per reply.
    fn replies() -> Self {
        Self { skip_top_scalars: true, ..Self::new(false) }
    }

    /// Feed bytes; completed messages are appended to `done`. Never panics, memory bounded.
    pub fn feed(&mut self, ts: u64, data: &[u8], done: &mut Vec<Msg>) {
        if self.buf.is_empty() {
            let used = self.run(ts, data, done);
            if used < data.len() {
                self.buf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.run(ts, &buf, done);
            buf.drain(..used);
            self.buf = buf;
        }
        if self.buf.len() > MAX_LINE {
            PARSE_ERRORS.inc();
            self.gap(0, done);
        }
    }

    /// `len` bytes are missing. Inside a bulk payload that only costs the value;
    /// otherwise the message in flight is handed out as partial (what was read
    /// of it is accurate) and the scanner looks for the next message.
    pub fn gap(&mut self, mut len: u64, done: &mut Vec<Msg>) {
        if self.buf.is_empty() && self.bulk_left > 0 && self.msg.is_some() {
            let k = self.bulk_left.min(len);
            self.bulk_left -= k;
            len -= k;
            if let Some(m) = self.msg.as_mut() {
                m.bytes += k;
                m.partial = true;
            }
            if self.chunked.is_some() {
                // A streamed string goes on with its next chunk header, unless
                // the cut went past this chunk (then what follows is unknown).
                if self.bulk_left == 0 && len == 0 {
                    self.bulk_capture = false;
                    return;
                }
            } else if self.bulk_left == 0 {
                // The cut ended with this payload (typical of a snap length): the message may be whole.
                self.bulk_capture = false;
                self.element_done(done);
            } else if self.bulk_left < 2 {
                // Only the CRLF is left: whatever follows is unknown anyway.
                self.bulk_left = 0;
                self.element_done(done);
            }
            if len == 0 {
                return;
            }
        }
        if let Some(mut m) = self.msg.take() {
            m.partial = true;
            m.bytes += len;
            done.push(m);
        } else if !self.buf.is_empty() && !self.resync && is_resp_type(self.buf[0]) {
            // Only the start of a first line: still a message (a reply takes its turn in the queue).
            done.push(Msg {
                kind: self.buf[0],
                bytes: self.buf.len() as u64 + len,
                partial: true,
                ..Default::default()
            });
        }
        self.lose_sync();
    }

    pub fn lose_sync(&mut self) {
        self.buf.clear();
        self.stack.clear();
        self.bulk_left = 0;
        self.chunked = None;
        self.msg = None;
        self.resync = true;
    }

    /// The scanner is between messages.
    pub fn at_boundary(&self) -> bool {
        self.msg.is_none() && !self.resync && self.buf.is_empty()
    }

    /// Takes back a message it produced once it has been read: its element
    /// buffers serve the next message (when of usual size).
    pub fn recycle(&mut self, m: Msg) {
        let mut e = m.elems;
        if e.capacity_bytes() <= KEEP_ELEMS_BYTES {
            e.clear();
            self.spare = Some(e);
        }
    }

    fn run(&mut self, ts: u64, input: &[u8], done: &mut Vec<Msg>) -> usize {
        let mut pos = 0;
        loop {
            if self.resync {
                match self.find_start(&input[pos..]) {
                    Some(at) => {
                        pos += at;
                        self.resync = false;
                    }
                    None => return input.len().saturating_sub(8).max(pos),
                }
            }
            if self.bulk_left > 0 {
                let rest = &input[pos..];
                let k = (self.bulk_left.min(rest.len() as u64)) as usize;
                if self.bulk_capture {
                    // The last two bytes of a payload are its CRLF.
                    let payload_left = self.bulk_left.saturating_sub(2) as usize;
                    let take = k.min(payload_left);
                    if let Some(m) = self.msg.as_mut() {
                        m.elems.extend_last(&rest[..take], MAX_ELEMENT);
                    }
                }
                self.bulk_left -= k as u64;
                pos += k;
                if let Some(m) = self.msg.as_mut() {
                    m.bytes += k as u64;
                }
                if self.bulk_left > 0 {
                    return pos;
                }
                self.bulk_capture = false;
                if self.chunked.is_none() {
                    self.element_done(done);
                }
                continue;
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                return pos;
            }
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else { return pos };
            if self.msg.is_none() {
                let after_error = std::mem::take(&mut self.after_error);
                let elems = self.spare.take().unwrap_or_default();
                self.msg = Some(Msg { start_ts: ts, after_error, elems, ..Default::default() });
            }
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            if let Some(m) = self.msg.as_mut() {
                m.bytes += nl as u64 + 1;
            }
            pos += nl + 1;
            if !self.line(line, done) {
                PARSE_ERRORS.inc();
                self.lose_sync();
                self.after_error = true;
            }
        }
    }

    /// Offset of a plausible message start in `input`, at a line start.
    fn find_start(&self, input: &[u8]) -> Option<usize> {
        (0..input.len()).find(|&i| {
            (i == 0 || input[i - 1] == b'\n') && {
                let r = &input[i..];
                if self.requests {
                    r.len() > 3 && r[0] == b'*' && r[1].is_ascii_digit()
                } else {
                    r.len() > 2 && is_resp_type(r[0]) && r[0] != b'|'
                }
            }
        })
    }

    /// Handle one line; false on a protocol error.
    fn line(&mut self, line: &[u8], done: &mut Vec<Msg>) -> bool {
        let depth = self.stack.len();
        if let Some(capture) = self.chunked {
            // Inside `$?`: only chunk headers; `;0` ends the string.
            let Some(n) = line.strip_prefix(b";").and_then(parse_len) else { return false };
            if n < 0 {
                return false;
            }
            if n == 0 {
                self.chunked = None;
                self.element_done(done);
            } else {
                self.bulk_left = n as u64 + 2;
                self.bulk_capture = capture;
            }
            if let Some(m) = self.msg.as_mut() {
                m.resp3 = true;
            }
            return true;
        }
        if line == b"." {
            // End of a streamed aggregate; anywhere else `.` is not RESP.
            if self.stack.last() != Some(&STREAMED) {
                return false;
            }
            self.stack.pop();
            self.element_done(done);
            return true;
        }
        let Some(msg) = self.msg.as_mut() else { return false };
        if depth == 0 && msg.kind == 0 {
            if line.is_empty() && self.requests {
                // Blank line between inline commands.
                self.msg = None;
                return true;
            }
            let t = line.first().copied().unwrap_or(0);
            if !is_resp_type(t) {
                if !self.requests {
                    return false;
                }
                msg.kind = b'i';
                msg.elems.clear();
                for w in line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).take(self.max_captured) {
                    msg.elems.push(&w[..w.len().min(MAX_ELEMENT)]);
                }
                msg.count = line.split(|&b| b == b' ').filter(|w| !w.is_empty()).count() as u64;
                self.finish(done);
                return true;
            }
            msg.kind = t;
        }
        let Some((&t, body)) = line.split_first() else { return false };
        if !is_resp_type(t) {
            return false;
        }
        if is_resp3_only(t) {
            msg.resp3 = true;
        }
        // Direct children of the top-level aggregate (and the top level itself) are captured.
        let capture =
            depth <= 1 && msg.elems.len() < self.max_captured && !(self.skip_top_scalars && depth == 0 && t != b'!');
        match t {
            b'$' if body == b"?" => {
                msg.resp3 = true;
                if capture {
                    msg.elems.push(&[]);
                }
                self.chunked = Some(capture);
                true
            }
            b'*' | b'%' | b'~' if body == b"?" => {
                msg.resp3 = true;
                if self.stack.len() >= MAX_DEPTH {
                    return false;
                }
                if capture && depth == 1 {
                    msg.elems.push(&[]);
                }
                // Counted as its elements complete (see `element_done`).
                if depth == 0 {
                    msg.count = 0;
                }
                self.stack.push(STREAMED);
                true
            }
            b'$' | b'=' | b'!' => {
                let Some(n) = parse_len(body) else { return false };
                if n < 0 {
                    if depth == 0 {
                        msg.null = true;
                    }
                    if capture && depth == 1 {
                        msg.elems.push(&[]);
                    }
                    self.element_done(done);
                    return true;
                }
                if capture {
                    // Filled as the payload streams past (`extend_last`).
                    msg.elems.push(&[]);
                }
                self.bulk_capture = capture;
                self.bulk_left = n as u64 + 2;
                if t == b'!' && depth == 0 {
                    msg.error = Some(String::new());
                }
                true
            }
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let Some(n) = parse_len(body) else { return false };
                let children =
                    if matches!(t, b'%' | b'|') { (n.max(0) as u64).saturating_mul(2) } else { n.max(0) as u64 };
                if depth == 0 {
                    msg.count = children;
                    msg.null = n < 0;
                }
                if n <= 0 {
                    if capture && depth == 1 {
                        msg.elems.push(&[]);
                    }
                    self.element_done(done);
                    return true;
                }
                if self.stack.len() >= MAX_DEPTH {
                    return false;
                }
                if capture && depth == 1 {
                    msg.elems.push(&[]);
                }
                self.stack.push(children);
                true
            }
            _ => {
                if t == b'-' && depth == 0 {
                    msg.error = Some(String::from_utf8_lossy(&body[..body.len().min(MAX_FIELD)]).into_owned());
                }
                if t == b'_' && depth == 0 {
                    msg.null = true;
                }
                if t == b':' && parse_len(body).is_none() {
                    return false;
                }
                if capture {
                    msg.elems.push(&body[..body.len().min(MAX_ELEMENT)]);
                }
                self.element_done(done);
                true
            }
        }
    }

    fn element_done(&mut self, done: &mut Vec<Msg>) {
        loop {
            let top_level = self.stack.len() == 1;
            match self.stack.last_mut() {
                None => return self.finish(done),
                Some(&mut STREAMED) => {
                    if top_level {
                        if let Some(m) = self.msg.as_mut() {
                            m.count = m.count.saturating_add(1);
                        }
                    }
                    return;
                }
                Some(n) => {
                    *n = n.saturating_sub(1);
                    if *n > 0 {
                        return;
                    }
                    self.stack.pop();
                }
            }
        }
    }

    fn finish(&mut self, done: &mut Vec<Msg>) {
        if let Some(mut m) = self.msg.take() {
            if m.kind == b'!' && m.error.as_deref() == Some("") {
                // Blob error: the text is the captured payload. Only for `!`:
                // an empty simple error (`-\r\n`) is an error with an empty
                // text, and the reply scanner does not capture its body.
                m.error = m.elems.first().map(|e| String::from_utf8_lossy(e).into_owned());
            }
            done.push(m);
        }
    }
}

const MAX_FIELD: usize = 512;

/// A RESP length or integer, as `str::parse::<i64>` reads it (an optional
/// sign, then ASCII digits, no overflow), at most 20 bytes: read digit by
/// digit (every RESP header has one; the UTF-8 check and `parse` cost ~90
/// instructions each).
fn parse_len(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if neg { v.checked_sub(i64::from(d))? } else { v.checked_add(i64::from(d))? };
    }
    Some(v)
}

#[derive(Debug)]
struct Cmd {
    ts: u64,
    bytes: u64,
    /// Boxed once per command: the pending queue, the reply and the
    /// exchange batch then move a pointer, not the detail's 224 bytes.
    detail: Box<RedisDetail>,
    partial: bool,
    /// Replies still expected (SUBSCRIBE a b c takes three).
    replies_left: u32,
    /// Pub/sub confirmation kind this command expects (lower-case, e.g. "subscribe").
    confirm: Option<&'static str>,
    resp_bytes: u64,
    end_ts: u64,
    // The reply's type and error text are kept in `detail` (`response_type`,
    // `error`) rather than fields of their own: 40 bytes less per pending
    // command, so that the pairer's first allocation (4 commands) stays
    // within the allocator's per-thread cache (≤ 1032 bytes).
}

pub struct RedisDecoder {
    cfg: DecodeConfig,
    req: Scanner,
    resp: Scanner,
    pending: FifoPairer<Cmd>,
    resp_version: u8,
    db_index: Option<i64>,
    subscribed: bool,
    monitor: bool,
    reply_off: bool,
    skip_next: bool,
    /// Framing was lost somewhere: pairs are uncertain until the queue drains.
    desync: bool,
    /// Bytes of RESP3 attributes waiting for the reply they prefix.
    attr_bytes: u64,
    started: bool,
    msgs: Vec<Msg>,
    /// Scratch for a command's masked and raw texts (kept across commands).
    text: String,
}

/// The upper-case text of a command word (lossy for invalid UTF-8), inline
/// when short: ASCII words of at most 22 bytes, every command name, are
/// folded straight into the inline text (no `String` per request).
fn upper(b: &[u8]) -> Str {
    Str::ascii_upper(b).unwrap_or_else(|| Str::compact(lossy_text(b).to_ascii_uppercase()))
}

/// Which arguments of a command carry a credential: they are `?` even in the
/// unmasked `query_raw` (`CNFLOW_UNMASK_DB_STATEMENTS=true` shows values, never
/// passwords). AUTH (every argument), HELLO ... AUTH user pass, MIGRATE ...
/// AUTH pass / AUTH2 user pass, CONFIG SET requirepass|masterauth, and
/// ACL SETUSER password rules (`>pass`, `<pass`, `#hash`, `!hash`).
fn credential_args<'a>(name: &str, sub: Option<&str>, args: &'a Elems) -> impl Fn(usize) -> bool + 'a {
    // Runs for every command: allocate only for the few that carry credentials.
    let mut secret = Vec::new();
    if matches!(name, "AUTH" | "HELLO" | "MIGRATE" | "CONFIG" | "ACL") {
        secret.resize(args.len(), false);
    }
    let eq = |i: usize, w: &str| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()));
    match (name, sub) {
        ("AUTH", _) => secret.iter_mut().skip(1).for_each(|s| *s = true),
        ("HELLO", _) | ("MIGRATE", _) => {
            for i in 1..args.len() {
                if eq(i, "AUTH") {
                    // HELLO: AUTH username password; MIGRATE: AUTH password.
                    let pass = if name == "HELLO" { i + 2 } else { i + 1 };
                    if let Some(s) = secret.get_mut(pass) {
                        *s = true;
                    }
                } else if eq(i, "AUTH2") {
                    if let Some(s) = secret.get_mut(i + 2) {
                        *s = true;
                    }
                }
            }
        }
        ("CONFIG", Some("SET")) => {
            for i in (2..args.len()).step_by(2) {
                if eq(i, "requirepass") || eq(i, "masterauth") {
                    if let Some(s) = secret.get_mut(i + 1) {
                        *s = true;
                    }
                }
            }
        }
        ("ACL", Some("SETUSER")) => {
            for (i, a) in args.iter().enumerate().skip(3) {
                secret[i] = matches!(a.first(), Some(b'>' | b'<' | b'#' | b'!'));
            }
        }
        _ => {}
    }
    move |i| secret.get(i).copied().unwrap_or(false)
}

fn response_type(m: &Msg) -> &'static str {
    if m.null {
        return "null";
    }
    match m.kind {
        b'+' => "simple",
        b'-' | b'!' => "error",
        b':' => "integer",
        b'$' => "bulk",
        b'*' => "array",
        b'_' => "null",
        b',' => "double",
        b'#' => "boolean",
        b'=' => "verbatim",
        b'(' => "bignum",
        b'%' => "map",
        b'~' => "set",
        b'>' => "push",
        _ => "unknown",
    }
}

/// The pub/sub confirmation kinds (lower-case, as the server sends them).
const PUBSUB_KINDS: [&str; 6] =
    ["subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe"];

/// The pub/sub kind `s` names, compared without regard to ASCII case.
fn pubsub_kind(s: &[u8]) -> Option<&'static str> {
    PUBSUB_KINDS.into_iter().find(|k| s.eq_ignore_ascii_case(k.as_bytes()))
}

impl RedisDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            // Without statement texts only the first arguments are read.
            req: Scanner {
                max_captured: if cfg.span_fields { MAX_CAPTURED } else { COMMAND_ARGS_READ },
                ..Scanner::new(true)
            },
            resp: Scanner::replies(),
            pending: FifoPairer::new(cfg.max_pending_per_conn),
            resp_version: 2,
            db_index: None,
            subscribed: false,
            monitor: false,
            reply_off: false,
            skip_next: false,
            desync: false,
            attr_bytes: 0,
            started: false,
            msgs: Vec::new(),
            text: String::new(),
        }
    }

    fn start(&mut self, conn: &Conn) {
        if !self.started {
            self.started = true;
            if conn.evidence != RoleEvidence::Syn {
                // Joined mid-connection: the first bytes may be the middle of a message.
                self.req.resync = true;
                self.resp.resync = true;
                self.desync = true;
            }
        }
    }

    /// The command as `db.query.text` shows it: masked (name, subcommand,
    /// a `?` per argument) and raw (arguments as sent, credentials hidden).
    fn query_texts(&mut self, m: &Msg, name: &str, sub: Option<&str>) -> (Str, Str) {
        let args = &m.elems;
        let shown = 1 + sub.is_some() as usize;
        let hidden = (m.count as usize).saturating_sub(shown);
        // Every command builds both texts, in one buffer kept across
        // commands (no join, no upper-case copies, no growth once warm),
        // each then copied into a `Str`: inline when short, the usual case,
        // so no allocation per request for either.
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        text.push_str(name);
        if let Some(s) = sub {
            text.push(' ');
            text.push_str(s);
        }
        for _ in 0..hidden.min(MAX_MASKED) {
            text.push_str(" ?");
        }
        if hidden > MAX_MASKED {
            text.push_str(" ...");
        }
        let masked = Str::copy(&text);
        text.clear();
        let secret = credential_args(name, sub, args);
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            if secret(i) {
                text.push('?');
            } else {
                text.push_str(&lossy_text(a));
            }
            if text.len() >= MAX_RAW {
                break;
            }
        }
        if (m.count as usize) > args.len() && text.len() < MAX_RAW {
            text.push_str(" ...");
        }
        let mut cut = text.len().min(MAX_RAW);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let raw = Str::copy(&text[..cut]);
        self.text = text;
        (masked, raw)
    }

    fn command(&mut self, m: &Msg, out: &mut Emit) {
        let args = &m.elems;
        let valid = (m.kind == b'*' || m.kind == b'i') && args.first().is_some_and(|a| !a.is_empty());
        if !valid {
            if !m.partial {
                PARSE_ERRORS.inc();
            }
            return;
        }
        let name = upper(&args[0]);
        let argc = m.count.saturating_sub(1) as u32;
        let sub = (is_container(&name) && args.len() > 1).then(|| upper(&args[1]));
        // Only spans and exchanges show the texts (see `DecodeConfig::span_fields`).
        let (masked, raw) = if self.cfg.span_fields {
            self.query_texts(m, &name, sub.as_deref())
        } else {
            (Str::default(), Str::default())
        };
        // `name` is upper-case ASCII-folded: the pub/sub kinds compared without a lower-case copy.
        let (replies_left, confirm) = match pubsub_kind(name.as_bytes()) {
            Some(kind) => (argc.max(1), Some(kind)),
            None => (1, None),
        };
        if name == "HELLO" {
            if let Some(v) = args.get(1).and_then(|a| std::str::from_utf8(a).ok()).and_then(|s| s.parse::<u8>().ok()) {
                if v == 2 || v == 3 {
                    self.resp_version = v;
                }
            }
        }
        // CLIENT REPLY OFF|SKIP: the server does not answer (this or the next) command.
        let mut no_reply = self.reply_off || std::mem::take(&mut self.skip_next);
        if name == "CLIENT" && sub.as_deref() == Some("REPLY") {
            match args.get(2).map(upper).as_deref() {
                Some("OFF") => {
                    self.reply_off = true;
                    no_reply = true;
                }
                Some("SKIP") => {
                    self.skip_next = !self.reply_off;
                    no_reply = true;
                }
                Some("ON") => {
                    self.reply_off = false;
                    no_reply = false;
                }
                _ => {}
            }
        }
        // Tracked on the request side so pipelined commands after SELECT get the new index.
        if name == "SELECT" {
            if let Some(db) = args.get(1).and_then(|a| std::str::from_utf8(a).ok()).and_then(|s| s.parse().ok()) {
                self.db_index = Some(db);
            }
        }
        let cmd = Cmd {
            ts: m.start_ts,
            bytes: m.bytes,
            detail: Box::new(RedisDetail {
                command: name,
                subcommand: sub,
                arg_count: argc,
                query_masked: masked,
                query_raw: raw,
                resp_version: self.resp_version,
                db_index: self.db_index,
                ..Default::default()
            }),
            partial: m.partial || self.desync,
            replies_left,
            confirm,
            resp_bytes: 0,
            end_ts: m.start_ts,
        };
        if no_reply {
            // No reply will come by design: the command is an exchange of its
            // own now (response type "none"), rather than vanishing or
            // taking the reply of the command after it.
            let mut cmd = cmd;
            cmd.detail.response_type = Some("none");
            Self::emit(cmd, m.start_ts, Outcome::Complete, out);
            return;
        }
        if let Some(old) = self.pending.push(cmd.ts, cmd) {
            EVICTED.inc();
            let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
            Self::emit(old, end, Outcome::Timeout, out);
        }
    }

    fn reply(&mut self, ts: u64, m: &mut Msg, out: &mut Emit) {
        if m.resp3 {
            self.resp_version = 3;
        }
        if m.kind == b'|' {
            self.attr_bytes += m.bytes;
            return;
        }
        // Per reply: the first element compared in place (no lower-case copy).
        let first: &[u8] = m.elems.first().unwrap_or(&[]);
        let aggregate = matches!(m.kind, b'*' | b'>');
        let expects = self.pending.front_mut().and_then(|c| c.confirm);
        let confirm_kind = if aggregate { pubsub_kind(first) } else { None };
        let is_confirm = confirm_kind.is_some();
        let is_message =
            aggregate && ["message", "pmessage", "smessage"].iter().any(|k| first.eq_ignore_ascii_case(k.as_bytes()));
        let push = m.kind == b'>' || (self.subscribed && is_message);
        // A confirmation answers the command that asked for it; other pushes answer nothing.
        if (push || is_confirm) && !(is_confirm && expects.is_some() && expects == confirm_kind) {
            if is_confirm {
                self.note_subscriptions(m);
            }
            return;
        }
        if self.monitor && m.kind == b'+' && self.pending.is_empty() {
            return;
        }
        if is_confirm {
            self.note_subscriptions(m);
        }
        let Some(cmd) = self.pending.front_mut() else {
            UNPAIRED.inc();
            self.desync = false;
            return;
        };
        cmd.resp_bytes += m.bytes + std::mem::take(&mut self.attr_bytes);
        cmd.end_ts = ts;
        if cmd.detail.response_type.is_none() {
            cmd.detail.response_type = Some(response_type(m));
            cmd.detail.error = m.error.take();
        }
        cmd.partial |= m.partial || self.desync;
        cmd.replies_left = cmd.replies_left.saturating_sub(1);
        if cmd.replies_left > 0 {
            return;
        }
        let Some(cmd) = self.pending.pop() else { return };
        if cmd.detail.error.is_none() && cmd.detail.command == "MONITOR" {
            self.monitor = true;
        }
        if self.pending.is_empty() && self.req.at_boundary() && self.resp.at_boundary() {
            self.desync = false;
        }
        Self::emit(cmd, ts, Outcome::Complete, out);
    }

    /// Confirmations carry the number of channels still subscribed as their third element.
    fn note_subscriptions(&mut self, m: &Msg) {
        let n = m.elems.get(2).and_then(|e| std::str::from_utf8(e).ok()).and_then(|s| s.parse::<i64>().ok());
        self.subscribed = n.is_none_or(|n| n > 0);
    }

    fn emit(cmd: Cmd, end: u64, outcome: Outcome, out: &mut Emit) {
        let mut detail = cmd.detail;
        if let Some(e) = &detail.error {
            let prefix = e.split(' ').next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_uppercase()));
            detail.error_prefix = prefix.map(Str::copy);
        }
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Redis,
            start_ns: cmd.ts,
            end_ns: end.max(cmd.ts),
            request_bytes: cmd.bytes,
            response_bytes: cmd.resp_bytes,
            outcome,
            partial: cmd.partial,
            detail: Detail::Redis(detail),
        });
    }

    fn drain_msgs(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        // Drained, not consumed: the buffer keeps its capacity for the next packet.
        let mut msgs = std::mem::take(&mut self.msgs);
        for mut m in msgs.drain(..) {
            self.desync |= m.after_error;
            match dir {
                StreamDir::ToServer => {
                    self.command(&m, out);
                    self.req.recycle(m);
                }
                StreamDir::ToClient => {
                    self.reply(ts, &mut m, out);
                    self.resp.recycle(m);
                }
            }
        }
        self.msgs = msgs;
    }
}

impl ConnDecoder for RedisDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.start(out.conn);
        let mut msgs = std::mem::take(&mut self.msgs);
        match dir {
            StreamDir::ToServer => self.req.feed(ts_ns, data, &mut msgs),
            StreamDir::ToClient => self.resp.feed(ts_ns, data, &mut msgs),
        }
        self.msgs = msgs;
        self.drain_msgs(dir, ts_ns, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        self.start(out.conn);
        let s = match dir {
            StreamDir::ToServer => &mut self.req,
            StreamDir::ToClient => &mut self.resp,
        };
        let mut msgs = std::mem::take(&mut self.msgs);
        s.gap(len, &mut msgs);
        if s.resync && msgs.is_empty() {
            // Whole messages may be gone: in-order pairing is uncertain from here.
            self.desync = true;
        }
        self.msgs = msgs;
        self.drain_msgs(dir, ts_ns, out);
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        for cmd in self.pending.drain().collect::<Vec<_>>() {
            // QUIT's +OK may race the close; a command with a reply already seen is complete.
            if cmd.detail.response_type.is_some() {
                let end = cmd.end_ts;
                Self::emit(cmd, end, Outcome::Complete, out);
            } else {
                Self::emit(cmd, ts_ns, outcome, out);
            }
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        for cmd in self.pending.expire(deadline_ns) {
            Self::emit(cmd, end, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Transport;
    use crate::protocol::testutil::{conn, conn_with};
    use proptest::prelude::*;

    struct Run {
        conn: Conn,
        dec: RedisDecoder,
        out: Vec<Exchange>,
    }

    impl Run {
        fn new() -> Self {
            Self { conn: conn(Transport::Tcp, 6379), dec: RedisDecoder::new(&DecodeConfig::default()), out: Vec::new() }
        }
        fn req(&mut self, ts: u64, d: &[u8]) -> &mut Self {
            self.dec.on_data(StreamDir::ToServer, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
            self
        }
        fn resp(&mut self, ts: u64, d: &[u8]) -> &mut Self {
            self.dec.on_data(StreamDir::ToClient, ts, d, &mut Emit { conn: &self.conn, out: &mut self.out });
            self
        }
        fn details(&self) -> Vec<&RedisDetail> {
            self.out
                .iter()
                .map(|e| match &e.detail {
                    Detail::Redis(r) => &**r,
                    _ => panic!(),
                })
                .collect()
        }
    }

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
        }
        v
    }

    #[test]
    fn probes() {
        let c = conn(Transport::Tcp, 7000);
        assert_eq!(probe(&c, StreamDir::ToServer, &cmd(&["PING"])), Probe::Yes(90));
        assert_eq!(probe(&c, StreamDir::ToServer, b"*2"), Probe::NeedMore);
        // Inline commands wait for their reply; only a RESP reply confirms them.
        assert_eq!(probe(&c, StreamDir::ToServer, b"PING\r\n"), Probe::NeedMore);
        assert_eq!(probe_flow(&c, b"PING\r\n", b"+PONG\r\n"), Probe::Yes(70));
        assert_eq!(probe_flow(&c, b"set k hello\r\n", b"+OK\r\n"), Probe::Yes(70));
        assert_eq!(probe_flow(&c, b"GET k\r\n", b"$-1\r\n"), Probe::Yes(70));
        assert_eq!(probe_flow(&c, b"GET k\r\n", b"$"), Probe::NeedMore);
        assert_eq!(probe(&c, StreamDir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::No);
        assert_eq!(probe(&c, StreamDir::ToServer, b"\x16\x03\x01"), Probe::No);
        assert_eq!(probe(&c, StreamDir::ToClient, b"+OK\r\n"), Probe::No);
        let mid = conn_with(Transport::Tcp, 7000, RoleEvidence::Port);
        assert_eq!(probe(&mid, StreamDir::ToClient, b"+OK\r\n"), Probe::NeedMore);
        assert_eq!(probe_flow(&mid, b"\r\n*1\r\n$4\r\nPING\r\n", b"+OK\r\n"), Probe::Yes(60));
        assert_eq!(probe_flow(&mid, b"lue\r\n", b"$5\r\nhello\r\n"), Probe::NeedMore);
        assert_eq!(probe(&mid, StreamDir::ToClient, b"HTTP/1.1 200 OK\r\n"), Probe::No);
    }

    /// Other text protocols whose lines start like inline Redis commands, with
    /// the reply their server gives: never Redis.
    #[test]
    fn other_text_protocols_are_not_redis() {
        let c = conn(Transport::Tcp, 8080);
        let mid = conn_with(Transport::Tcp, 8080, RoleEvidence::Port);
        let html = &b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n"[..];
        let cases: &[(&[u8], &[u8])] = &[
            // HTTP/0.9, a request line without a URI or version, headers first.
            (b"GET /page\r\n", html),
            (b"GET /page\r\n", b"hello from nginx\n"),
            (b"GET\r\n", html),
            (b"GET /\r\nHost: x\r\n\r\n", html),
            (b"Host: x\r\nAccept: */*\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n"),
            (b"Accept: */*\r\n\r\n", b""),
            // memcached text protocol.
            (b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n"),
            (b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n"),
            (b"get foo\r\n", b"END\r\n"),
            (b"get a b c\r\n", b""),
            (b"incr n 1\r\n", b"2\r\n"),
            (b"delete foo\r\n", b"DELETED\r\n"),
            (b"mg foo v\r\n", b"EN\r\n"),
            (b"stats\r\n", b"STAT pid 1\r\n"),
            (b"version\r\n", b"VERSION 1.6.21\r\n"),
            // HTTP error page body seen first (mid-connection).
            (b"", b"-- \r\n<hr><center>nginx</center>\r\n"),
            (b"", html),
        ];
        for (up, down) in cases {
            for cn in [&c, &mid] {
                let p = probe_flow(cn, up, down);
                assert!(
                    !matches!(p, Probe::Yes(_)),
                    "{p:?}: {:?} / {:?}",
                    String::from_utf8_lossy(up),
                    String::from_utf8_lossy(down)
                );
            }
        }
    }

    /// Credentials never reach `query_raw` (what CNFLOW_UNMASK_DB_STATEMENTS shows).
    #[test]
    fn credentials_are_never_kept() {
        let mut r = Run::new();
        let cmds: &[&[&str]] = &[
            &["AUTH", "s3cret-a"],
            &["AUTH", "alice", "s3cret-b"],
            &["HELLO", "3", "AUTH", "alice", "s3cret-c", "SETNAME", "app"],
            &["MIGRATE", "h", "6379", "", "0", "5000", "AUTH2", "bob", "s3cret-d", "KEYS", "k1"],
            &["CONFIG", "SET", "maxmemory", "10mb", "requirepass", "s3cret-e"],
            &["ACL", "SETUSER", "carol", "on", ">s3cret-f", "~*", "+@all"],
            &["auth", "s3cret-g"],
        ];
        let mut reqs = Vec::new();
        for c in cmds {
            reqs.extend(cmd(c));
        }
        r.req(1, &reqs);
        r.resp(2, b"+OK\r\n+OK\r\n%1\r\n+server\r\n+redis\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n");
        let d = r.details();
        assert_eq!(d.len(), cmds.len());
        let raws: Vec<&str> = d.iter().map(|x| x.query_raw.as_str()).collect();
        assert_eq!(
            raws,
            [
                "AUTH ?",
                "AUTH ? ?",
                "HELLO 3 AUTH alice ? SETNAME app",
                "MIGRATE h 6379  0 5000 AUTH2 bob ? KEYS k1",
                "CONFIG SET maxmemory 10mb requirepass ?",
                "ACL SETUSER carol on ? ~* +@all",
                "auth ?",
            ]
        );
        let all = format!("{:?}", r.out);
        assert!(!all.contains("s3cret"), "{all}");
    }

    #[test]
    fn pipelining_errors_nulls_nested() {
        let mut r = Run::new();
        let mut reqs = cmd(&["SET", "k", "v"]);
        reqs.extend(cmd(&["GET", "missing"]));
        reqs.extend(cmd(&["LPUSH"]));
        reqs.extend(cmd(&["CLIENT", "SETNAME", "me"]));
        reqs.extend(cmd(&["EVAL", "return {1,{2,3}}", "0"]));
        r.req(1, &reqs);
        r.resp(2, b"+OK\r\n$-1\r\n-ERR wrong number of arguments for 'lpush' command\r\n+OK\r\n*2\r\n:1\r\n*2\r\n:2\r\n:3\r\n");
        let d = r.details();
        assert_eq!(d.len(), 5);
        assert_eq!((d[0].command.as_str(), d[0].arg_count, d[0].query_masked.as_str()), ("SET", 2, "SET ? ?"));
        assert_eq!(d[0].query_raw, "SET k v");
        assert_eq!(d[1].response_type, Some("null"));
        assert_eq!(d[2].error_prefix.as_deref(), Some("ERR"));
        assert_eq!((d[3].subcommand.as_deref(), d[3].query_masked.as_str()), (Some("SETNAME"), "CLIENT SETNAME ?"));
        assert_eq!(d[4].response_type, Some("array"));
        assert!(r.out.iter().all(|e| !e.partial && e.outcome == Outcome::Complete));
    }

    #[test]
    fn multi_exec_and_select() {
        let mut r = Run::new();
        r.req(
            1,
            &[cmd(&["SELECT", "2"]), cmd(&["MULTI"]), cmd(&["INCR", "a"]), cmd(&["EXEC"]), cmd(&["GET", "a"])].concat(),
        );
        r.resp(2, b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:1\r\n$1\r\n1\r\n");
        let d = r.details();
        assert_eq!(
            d.iter().map(|x| x.command.as_str()).collect::<Vec<_>>(),
            ["SELECT", "MULTI", "INCR", "EXEC", "GET"]
        );
        assert_eq!(d[2].response_type, Some("simple"));
        assert_eq!((d[0].db_index, d[4].db_index), (Some(2), Some(2)));
    }

    #[test]
    fn pubsub_resp2_pushes_are_not_replies() {
        let mut r = Run::new();
        r.req(1, &cmd(&["SUBSCRIBE", "a", "b"]));
        r.resp(2, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        assert!(r.out.is_empty());
        r.resp(3, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
        r.req(4, &cmd(&["PING"]));
        r.resp(5, b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        r.req(6, &cmd(&["UNSUBSCRIBE"]));
        r.resp(7, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n");
        r.req(8, &cmd(&["GET", "x"]));
        r.resp(9, b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$1\r\ny\r\n");
        let d = r.details();
        assert_eq!(
            d.iter().map(|x| x.command.as_str()).collect::<Vec<_>>(),
            ["SUBSCRIBE", "PING", "UNSUBSCRIBE", "GET"]
        );
        assert_eq!((r.out[0].start_ns, r.out[0].end_ns), (1, 3));
        assert_eq!(r.out[1].end_ns, 5);
        // Not subscribed any more: an array reply to GET is a reply.
        assert_eq!(r.out[3].end_ns, 9);
    }

    #[test]
    fn resp3_push_attribute_and_types() {
        let mut r = Run::new();
        r.req(1, &cmd(&["HELLO", "3"]));
        r.resp(2, b"%1\r\n+server\r\n+redis\r\n");
        r.req(3, &cmd(&["GET", "k"]));
        r.resp(4, b">3\r\n+message\r\n+ch\r\n+x\r\n|1\r\n+ttl\r\n:5\r\n_\r\n");
        r.req(5, &cmd(&["X"]));
        r.resp(6, b"!11\r\nERR unknown\r\n");
        let d = r.details();
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].response_type, d[1].response_type), (Some("map"), Some("null")));
        assert_eq!(d[1].resp_version, 3);
        assert_eq!(d[2].error.as_deref(), Some("ERR unknown"));
        assert_eq!(r.out[1].end_ns, 4);
    }

    #[test]
    fn inline_commands_large_values_and_gaps() {
        let mut r = Run::new();
        r.req(1, b"PING\r\nset k hello\r\n");
        r.resp(2, b"+PONG\r\n+OK\r\n");
        r.req(3, &cmd(&["GET", "big"]));
        r.resp(4, b"$100000\r\n0123456789");
        r.dec.on_gap(StreamDir::ToClient, 5, 50000, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.resp(6, &vec![b'x'; 49990]);
        r.resp(7, b"\r\n");
        let d = r.details();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].query_masked, "SET ? ?");
        assert_eq!(r.out[2].response_bytes, 9 + 100000 + 2);
        assert!(r.out[2].partial);
        assert!(r.dec.resp.buf.is_empty());
    }

    #[test]
    fn client_reply_off_and_quit() {
        let mut r = Run::new();
        r.req(
            1,
            &[cmd(&["CLIENT", "REPLY", "OFF"]), cmd(&["SET", "a", "1"]), cmd(&["CLIENT", "REPLY", "ON"])].concat(),
        );
        r.resp(2, b"+OK\r\n");
        // The two commands without a reply are exchanges of their own; ON pairs with +OK.
        let d = r.details();
        let got: Vec<(&str, Option<&str>)> = d.iter().map(|d| (d.query_masked.as_str(), d.response_type)).collect();
        assert_eq!(
            got,
            [("CLIENT REPLY ?", Some("none")), ("SET ? ?", Some("none")), ("CLIENT REPLY ?", Some("simple"))]
        );
        assert!(r.out.iter().all(|e| e.outcome == Outcome::Complete));
        assert_eq!(r.out.iter().map(|e| e.response_bytes).collect::<Vec<_>>(), [0, 0, 5]);
    }

    /// CLIENT REPLY SKIP: it and the next command get no reply; the command
    /// after them pairs with the first reply (not the skipped one's).
    #[test]
    fn client_reply_skip_pairs_the_next_reply_with_the_right_command() {
        let mut r = Run::new();
        r.req(1, &[cmd(&["CLIENT", "REPLY", "SKIP"]), cmd(&["SET", "a", "1"]), cmd(&["GET", "a"])].concat());
        r.resp(2, b"$1\r\n1\r\n");
        let d = r.details();
        let got: Vec<(&str, Option<&str>)> = d.iter().map(|d| (d.command.as_str(), d.response_type)).collect();
        assert_eq!(got, [("CLIENT", Some("none")), ("SET", Some("none")), ("GET", Some("bulk"))]);
    }

    #[test]
    fn lost_request_bytes_resync_and_mark_partial() {
        let mut r = Run::new();
        r.req(1, b"*3\r\n$3\r\nSET\r\n$1\r\nk");
        r.dec.on_gap(StreamDir::ToServer, 2, 10, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.req(3, b"garbage\r\n*1\r\n$4\r\nPING\r\n");
        r.resp(4, b"+OK\r\n+PONG\r\n");
        // The cut SET is still a (partial) command; PING after the resync pairs with its own reply.
        let d = r.details();
        assert_eq!((d.len(), d[0].command.as_str(), d[1].command.as_str()), (2, "SET", "PING"));
        assert_eq!(d[1].response_type, Some("simple"));
        assert!(r.out[0].partial);
    }

    /// The replies of `SET`, `GET` (`$?`), `LRANGE` (`*?` with a nested
    /// streamed string, a finite array and a nested empty `~?`), `HGETALL`
    /// (`%?`) and `PING`, as a RESP3 server that streams would send them.
    const STREAMED_REPLIES: &[u8] = b"+OK\r\n\
        $?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;2\r\nld\r\n;0\r\n\
        *?\r\n:1\r\n$?\r\n;2\r\nab\r\n;0\r\n*2\r\n:1\r\n:2\r\n~?\r\n.\r\n.\r\n\
        %?\r\n+f1\r\n:1\r\n+f2\r\n$1\r\nx\r\n.\r\n\
        +PONG\r\n";

    fn streamed_commands() -> Vec<u8> {
        [
            cmd(&["SET", "k", "v"]),
            cmd(&["GET", "k"]),
            cmd(&["LRANGE", "l", "0", "-1"]),
            cmd(&["HGETALL", "h"]),
            cmd(&["PING"]),
        ]
        .concat()
    }

    #[test]
    fn resp3_streamed_strings_and_aggregates_pair_in_order() {
        // Whole, and cut at every byte.
        for cut in [STREAMED_REPLIES.len(), 1, 3, 7] {
            let mut r = Run::new();
            r.req(1, &cmd(&["HELLO", "3"]));
            r.resp(2, b"%0\r\n");
            r.req(3, &streamed_commands());
            for (i, c) in STREAMED_REPLIES.chunks(cut).enumerate() {
                r.resp(10 + i as u64, c);
            }
            let d = r.details();
            let got: Vec<_> = d.iter().map(|x| (x.command.as_str(), x.response_type)).collect();
            assert_eq!(
                got,
                [
                    ("HELLO", Some("map")),
                    ("SET", Some("simple")),
                    ("GET", Some("bulk")),
                    ("LRANGE", Some("array")),
                    ("HGETALL", Some("map")),
                    ("PING", Some("simple"))
                ],
                "cut {cut}"
            );
            assert!(r.out.iter().all(|e| !e.partial && e.outcome == Outcome::Complete), "cut {cut}");
            assert_eq!(d[2].resp_version, 3);
            // Response sizes add up to the bytes sent.
            let total: u64 = r.out[1..].iter().map(|e| e.response_bytes).sum();
            assert_eq!(total, STREAMED_REPLIES.len() as u64);
            assert!(r.dec.resp.at_boundary());
        }
    }

    #[test]
    fn resp3_streamed_scanner_counts_and_captures() {
        let mut s = Scanner::new(false);
        let mut done = Vec::new();
        s.feed(0, STREAMED_REPLIES, &mut done);
        assert_eq!(done.len(), 5);
        assert_eq!(done[1].elems.to_vecs(), vec![b"Hello world".to_vec()]);
        assert_eq!((done[2].kind, done[2].count), (b'*', 4));
        assert_eq!(done[2].elems.to_vecs(), vec![b"1".to_vec(), b"ab".to_vec(), vec![], vec![]]);
        assert_eq!((done[3].kind, done[3].count), (b'%', 4));
        assert!(done[1..4].iter().all(|m| m.resp3 && !m.partial));
        // A long streamed string keeps MAX_ELEMENT bytes; a long streamed
        // array keeps MAX_CAPTURED elements and one stack entry.
        let mut big = b"$?\r\n".to_vec();
        for _ in 0..100 {
            big.extend_from_slice(b";10\r\n0123456789\r\n");
        }
        big.extend_from_slice(b";0\r\n*?\r\n");
        s.feed(0, &big, &mut done);
        for _ in 0..10_000 {
            s.feed(0, b":7\r\n", &mut done);
            assert!(s.stack.len() == 1 && s.buf.len() < 8);
        }
        s.feed(0, b".\r\n", &mut done);
        assert_eq!(done.len(), 7);
        assert_eq!(done[5].elems[0].len(), MAX_ELEMENT);
        assert_eq!((done[6].count, done[6].elems.len()), (10_000, MAX_CAPTURED));
        assert!(s.at_boundary());
    }

    #[test]
    fn resp3_streamed_errors_resync() {
        for bad in [
            // `.` outside a streamed aggregate, a non-chunk line inside `$?`,
            // a negative chunk length, `.` closing a counted array.
            &b".\r\n"[..],
            b"$?\r\n+OK\r\n",
            b"$?\r\n;-3\r\n",
            b"*2\r\n:1\r\n.\r\n",
        ] {
            let mut r = Run::new();
            r.req(1, &[cmd(&["GET", "a"]), cmd(&["GET", "b"])].concat());
            r.resp(2, bad);
            r.resp(3, b"$1\r\nz\r\n");
            r.dec.on_close(4, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
            // Nothing is invented: whatever pairs after the resync is marked partial.
            assert_eq!(r.out.len(), 2, "{bad:?}");
            assert!(r.out.iter().all(|e| e.partial || e.outcome != Outcome::Complete), "{bad:?}");
            assert!(r.dec.resp.chunked.is_none() && r.dec.resp.stack.len() <= 1);
        }
    }

    #[test]
    fn resp3_streamed_gaps() {
        // Lost bytes inside a chunk cost only the chunk.
        let mut r = Run::new();
        r.req(1, &[cmd(&["GET", "a"]), cmd(&["PING"])].concat());
        r.resp(2, b"$?\r\n;1000\r\n0123");
        r.dec.on_gap(StreamDir::ToClient, 3, 900, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.resp(4, &[b'x'; 96]);
        r.resp(5, b"\r\n;0\r\n+PONG\r\n");
        assert_eq!(r.out.len(), 2);
        assert!(r.out[0].partial && !r.out[1].partial);
        assert_eq!(r.out[0].response_bytes, 4 + 7 + 1002 + 4);
        // Lost bytes past a chunk end: the reply is partial, the scanner resyncs.
        let mut r = Run::new();
        r.req(1, &[cmd(&["GET", "a"]), cmd(&["PING"])].concat());
        r.resp(2, b"*?\r\n$?\r\n;3\r\nab");
        r.dec.on_gap(StreamDir::ToClient, 3, 50, &mut Emit { conn: &r.conn, out: &mut r.out });
        r.resp(4, b"+PONG\r\n");
        assert_eq!(r.out.len(), 2);
        assert_eq!(r.details()[0].response_type, Some("array"));
        assert!(r.out[0].partial && r.dec.resp.chunked.is_none());
    }

    #[derive(Debug, Clone)]
    enum Streamed {
        Str(Vec<Vec<u8>>),
        Agg(u8, Vec<redis_protocol::resp3::types::OwnedFrame>),
    }

    fn arb_resp3() -> impl Strategy<Value = redis_protocol::resp3::types::OwnedFrame> {
        use redis_protocol::resp3::types::OwnedFrame as F;
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(|s| F::SimpleString { data: s.into_bytes(), attributes: None }),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(|d| F::BlobString { data: d, attributes: None }),
            any::<i64>().prop_map(|n| F::Number { data: n, attributes: None }),
            any::<bool>().prop_map(|b| F::Boolean { data: b, attributes: None }),
            Just(F::Null),
        ];
        leaf.prop_recursive(3, 30, 5, |inner| {
            proptest::collection::vec(inner, 0..5).prop_map(|d| F::Array { data: d, attributes: None })
        })
    }

    fn arb_streamed() -> impl Strategy<Value = Streamed> {
        prop_oneof![
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6).prop_map(Streamed::Str),
            (prop_oneof![Just(b'*'), Just(b'~'), Just(b'%')], proptest::collection::vec(arb_resp3(), 0..5)).prop_map(
                |(k, mut items)| {
                    if k == b'%' && items.len() % 2 == 1 {
                        items.pop();
                    }
                    Streamed::Agg(k, items)
                }
            ),
        ]
    }

    /// redis-protocol's streaming encoder (RESP3 `$?` / `*?` / `~?` / `%?`).
    fn encode_streamed(v: &Streamed) -> Vec<u8> {
        use redis_protocol::resp3::encode::streaming as enc;
        use redis_protocol::resp3::types::FrameKind;
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        match v {
            Streamed::Str(chunks) => {
                at = enc::encode_start_string(&mut buf, at).unwrap();
                for c in chunks {
                    at = enc::encode_string_chunk(&mut buf, at, c).unwrap();
                }
                at = enc::encode_end_string(&mut buf, at).unwrap();
            }
            Streamed::Agg(k, items) => {
                let kind = match k {
                    b'*' => FrameKind::Array,
                    b'~' => FrameKind::Set,
                    _ => FrameKind::Map,
                };
                at = enc::encode_start_aggregate_type(&mut buf, at, kind).unwrap();
                if kind == FrameKind::Map {
                    for kv in items.chunks(2) {
                        at = enc::encode_owned_aggregate_type_inner_kv_pair(&mut buf, at, &kv[0], &kv[1], false)
                            .unwrap();
                    }
                } else {
                    for i in items {
                        at = enc::encode_owned_aggregate_type_inner_value(&mut buf, at, i, false).unwrap();
                    }
                }
                at = enc::encode_end_aggregate_type(&mut buf, at).unwrap();
            }
        }
        buf.truncate(at);
        buf
    }

    fn arb_frame() -> impl Strategy<Value = redis_protocol::resp2::types::OwnedFrame> {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(|s| F::SimpleString(s.into_bytes())),
            "[A-Z]{1,5} [a-z ]{0,20}".prop_map(F::Error),
            any::<i64>().prop_map(F::Integer),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(F::BulkString),
            Just(F::Null),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| proptest::collection::vec(inner, 0..6).prop_map(F::Array))
    }

    /// `parse_len` before it read digits itself.
    fn parse_len_before(b: &[u8]) -> Option<i64> {
        if b.is_empty() || b.len() > 20 {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    }

    /// `upper` before it folded into an inline `Str`.
    fn upper_before(b: &[u8]) -> String {
        lossy_text(b).to_ascii_uppercase()
    }

    /// kind, start_ts, bytes, null, count, error, partial, resp3, after_error, elements (aggregates and blob errors).
    type ReplyView = (u8, u64, u64, bool, u64, Option<String>, bool, bool, bool, Option<Vec<Vec<u8>>>);

    /// What a reply carries apart from the captured elements of a top-level scalar.
    fn reply_view(m: &Msg) -> ReplyView {
        let scalar = !matches!(m.kind, b'*' | b'%' | b'~' | b'>' | b'|' | b'!');
        let elems = (!scalar).then(|| m.elems.to_vecs());
        (m.kind, m.start_ts, m.bytes, m.null, m.count, m.error.clone(), m.partial, m.resp3, m.after_error, elems)
    }

    /// An empty simple error is still an error, for both scanners (the
    /// reply scanner used to read it as no error: found by
    /// `reply_scanner_reads_as_the_full_one`).
    #[test]
    fn an_empty_simple_error_is_an_error() {
        for mut s in [Scanner::new(false), Scanner::replies()] {
            let mut out = Vec::new();
            s.feed(0, b"-\r\n!0\r\n\r\n-ERR x\r\n", &mut out);
            let errors: Vec<_> = out.iter().map(|m| m.error.as_deref()).collect();
            assert_eq!(errors, [Some(""), Some(""), Some("ERR x")]);
        }
    }

    /// Each captured element is capped at MAX_ELEMENT on its own, however
    /// long the ones before it were, and a reused scanner starts each
    /// message with no elements.
    #[test]
    fn elements_are_capped_one_by_one() {
        let (a, b, c) = ("a".repeat(60), "b".repeat(100), "c".repeat(60));
        let mut sc = Scanner::new(true);
        let mut done = Vec::new();
        for _ in 0..3 {
            sc.feed(1, &cmd(&["SET", &a, &b, &c]), &mut done);
            let m = done.pop().expect("one command");
            assert_eq!(
                m.elems.to_vecs(),
                vec![
                    b"SET".to_vec(),
                    a.as_bytes().to_vec(),
                    b.as_bytes()[..MAX_ELEMENT].to_vec(),
                    c.as_bytes().to_vec()
                ]
            );
            sc.recycle(m);
        }
        let mut e = Elems::default();
        e.extend_last(b"x", 4);
        assert!(e.is_empty(), "nothing to extend");
        e.push(b"ab");
        e.extend_last(b"cdef", 4);
        e.push(b"");
        e.extend_last(b"ghijk", 4);
        assert_eq!(e.to_vecs(), vec![b"abcd".to_vec(), b"ghij".to_vec()]);
        assert_eq!((e.get(1), e.get(2), &e[0]), (Some(&b"ghij"[..]), None, &b"abcd"[..]));
    }

    #[test]
    fn type_bytes_are_the_listed_ones() {
        for t in 0..=255u8 {
            assert_eq!(is_resp_type(t), RESP_TYPES.contains(&t), "{t}");
            assert_eq!(is_resp3_only(t), b"_,#!=(%~>|".contains(&t), "{t}");
        }
    }

    #[test]
    fn parse_len_edges() {
        for b in [
            &b""[..],
            b"0",
            b"-0",
            b"+0",
            b"+",
            b"-",
            b"--1",
            b"+-1",
            b"1-",
            b" 1",
            b"1 ",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"00000000000000000001",
            b"000000000000000000001",
            b"+9223372036854775807",
            b"12a",
            b"\xff1",
            b"?",
            b"1.5",
        ] {
            assert_eq!(parse_len(b), parse_len_before(b), "{:?}", String::from_utf8_lossy(b));
        }
    }

    proptest! {
        #[test]
        fn is_container_is_the_list(w in "[A-Z]{0,9}") {
            prop_assert_eq!(is_container(&w), CONTAINER_COMMANDS.contains(&w.as_str()));
            for c in CONTAINER_COMMANDS {
                prop_assert!(is_container(c));
            }
        }

        #[test]
        fn parse_len_as_before(t in "[+-]?[0-9]{0,21}", b in proptest::collection::vec(any::<u8>(), 0..24), n in any::<i64>()) {
            prop_assert_eq!(parse_len(t.as_bytes()), parse_len_before(t.as_bytes()));
            prop_assert_eq!(parse_len(&b), parse_len_before(&b));
            let n = n.to_string();
            prop_assert_eq!(parse_len(n.as_bytes()), parse_len_before(n.as_bytes()));
        }

        #[test]
        fn upper_as_before(w in "[a-zA-Z_.|-]{0,30}", b in proptest::collection::vec(any::<u8>(), 0..30)) {
            prop_assert_eq!(upper(w.as_bytes()).to_string(), upper_before(w.as_bytes()));
            prop_assert_eq!(upper(&b).to_string(), upper_before(&b));
        }

        // Without statement texts (metrics only) the decoder reports the same
        // exchanges: the same commands, subcommands, argument counts, replies,
        // protocol versions and database indexes, in the same order, with
        // the texts left empty. The state the first arguments carry (`HELLO
        // 3`, `SELECT 2`, `CLIENT REPLY OFF|SKIP|ON`) is among the commands.
        #[test]
        fn statements_off_changes_only_the_texts(picks in proptest::collection::vec((0usize..12, 0usize..4), 1..24), cut in 1usize..64) {
            let commands: [&[&str]; 12] = [
                &["SET", "user:1", "alice"], &["GET", "user:1"], &["HELLO", "3"], &["HELLO", "2"],
                &["SELECT", "2"], &["CLIENT", "REPLY", "OFF"], &["CLIENT", "REPLY", "ON"], &["CLIENT", "REPLY", "SKIP"],
                &["AUTH", "bob", "secret"], &["MSET", "a", "1", "b", "2", "c", "3", "d", "4"], &["CONFIG", "GET", "maxmemory"], &["PING"],
            ];
            let replies: [&[u8]; 4] = [b"+OK\r\n", b"$5\r\nalice\r\n", b"-ERR no\r\n", b"%1\r\n+server\r\n+redis\r\n"];
            let off = DecodeConfig { span_fields: false, ..DecodeConfig::default() };
            let (mut with, mut without) = (Run::new(), Run { dec: RedisDecoder::new(&off), ..Run::new() });
            for (i, (c, r)) in picks.iter().enumerate() {
                let ts = 10 * i as u64;
                for chunk in cmd(commands[*c]).chunks(cut) {
                    with.req(ts, chunk);
                    without.req(ts, chunk);
                }
                with.resp(ts + 5, replies[*r]);
                without.resp(ts + 5, replies[*r]);
            }
            let blank = |d: &RedisDetail| RedisDetail { query_masked: Str::default(), query_raw: Str::default(), ..d.clone() };
            let a: Vec<_> = with.details().into_iter().map(|d| format!("{:?}", blank(d))).collect();
            let b: Vec<_> = without.details().into_iter().map(|d| format!("{d:?}")).collect();
            prop_assert_eq!(a, b);
            prop_assert_eq!(with.out.len(), without.out.len());
            for (x, y) in with.out.iter().zip(&without.out) {
                prop_assert_eq!((x.start_ns, x.end_ns, &x.outcome, x.partial), (y.start_ns, y.end_ns, &y.outcome, y.partial));
            }
            // The texts are built when asked for (the comparison is about something).
            prop_assert!(with.details().iter().any(|d| !d.query_masked.is_empty()));
        }

        // The decoder's reply scanner reads the same messages as a full
        // scanner: only a top-level scalar's elements (never read from a
        // reply) are not captured.
        #[test]
        fn reply_scanner_reads_as_the_full_one(frames in proptest::collection::vec(arb_frame(), 1..8), streamed in proptest::collection::vec(arb_streamed(), 0..3), cut in 1usize..40, gap_at in 0usize..64, gap in 0u64..8) {
            let mut bytes = bytes::BytesMut::new();
            for f in &frames {
                redis_protocol::resp2::encode::extend_encode(&mut bytes, &f.clone().into_bytes_frame(), false).unwrap();
            }
            let mut bytes = bytes.to_vec();
            for v in &streamed {
                bytes.extend_from_slice(&encode_streamed(v));
            }
            bytes.extend_from_slice(b"!5\r\nERR x\r\n$3\r\nabc\r\n");
            let (mut full, mut replies) = (Scanner::new(false), Scanner::replies());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, c) in bytes.chunks(cut).enumerate() {
                full.feed(i as u64, c, &mut a);
                replies.feed(i as u64, c, &mut b);
                if i == gap_at && gap > 0 {
                    full.gap(gap, &mut a);
                    replies.gap(gap, &mut b);
                }
            }
            prop_assert_eq!(a.iter().map(reply_view).collect::<Vec<_>>(), b.iter().map(reply_view).collect::<Vec<_>>());
        }
    }

    proptest! {
        // redis-protocol's encoder is the oracle: every frame it writes is one message, however it is cut.
        #[test]
        fn scanner_agrees_with_redis_protocol(frames in proptest::collection::vec(arb_frame(), 1..8), cut in 1usize..40) {
            let mut bytes = bytes::BytesMut::new();
            for f in &frames {
                redis_protocol::resp2::encode::extend_encode(&mut bytes, &f.clone().into_bytes_frame(), false).unwrap();
            }
            let mut s = Scanner::new(false);
            let mut done = Vec::new();
            for c in bytes.chunks(cut) {
                s.feed(0, c, &mut done);
            }
            prop_assert_eq!(done.len(), frames.len());
            prop_assert_eq!(done.iter().map(|m| m.bytes).sum::<u64>(), bytes.len() as u64);
            for (m, f) in done.iter().zip(&frames) {
                use redis_protocol::resp2::types::OwnedFrame as F;
                match f {
                    F::Error(e) => prop_assert_eq!(m.error.as_deref(), Some(e.as_str())),
                    F::Array(a) => prop_assert_eq!(m.count, a.len() as u64),
                    F::Null => prop_assert!(m.null),
                    _ => {}
                }
            }
            prop_assert!(s.at_boundary());
        }

        // Streamed RESP3 values from redis-protocol's encoder, between plain
        // replies, however they are cut: one message each, sizes add up.
        #[test]
        fn streamed_resp3_agrees_with_redis_protocol(values in proptest::collection::vec(arb_streamed(), 1..6), cut in 1usize..40) {
            let mut bytes = Vec::new();
            for v in &values {
                bytes.extend_from_slice(&encode_streamed(v));
                bytes.extend_from_slice(b"+OK\r\n");
            }
            let mut s = Scanner::new(false);
            let mut done = Vec::new();
            for c in bytes.chunks(cut) {
                s.feed(0, c, &mut done);
            }
            prop_assert_eq!(done.len(), values.len() * 2);
            prop_assert_eq!(done.iter().map(|m| m.bytes).sum::<u64>(), bytes.len() as u64);
            for (m, v) in done.iter().step_by(2).zip(&values) {
                prop_assert!(!m.partial && m.resp3);
                match v {
                    Streamed::Str(chunks) => {
                        let all = chunks.concat();
                        prop_assert_eq!(m.kind, b'$');
                        prop_assert_eq!(&m.elems[0][..], &all[..all.len().min(MAX_ELEMENT)]);
                    }
                    Streamed::Agg(k, items) => {
                        prop_assert_eq!(m.kind, *k);
                        prop_assert_eq!(m.count, items.len() as u64);
                    }
                }
            }
            prop_assert!(s.at_boundary());
        }

        // Random sequences of (streamed) RESP3 tokens, gaps and cuts: arbitrary
        // bytes almost never form `$?` / `;n` / `.`, these do.
        #[test]
        fn streamed_token_soup_never_panics(
            tokens in proptest::collection::vec(prop_oneof![
                Just(&b"$?\r\n"[..]), Just(&b";3\r\nabc\r\n"[..]), Just(&b";0\r\n"[..]), Just(&b".\r\n"[..]),
                Just(&b"*?\r\n"[..]), Just(&b"%?\r\n"[..]), Just(&b"~?\r\n"[..]), Just(&b":1\r\n"[..]),
                Just(&b"*2\r\n"[..]), Just(&b"$3\r\nabc\r\n"[..]), Just(&b"+OK\r\n"[..]), Just(&b";99\r\n"[..]),
                Just(&b">2\r\n"[..]), Just(&b"|1\r\n"[..]), Just(&b"\r\n"[..]),
            ], 0..120),
            cut in 1usize..30,
            gaps in proptest::collection::vec(0u64..60, 0..4),
        ) {
            let mut r = Run::new();
            r.req(0, &[cmd(&["HELLO", "3"]), cmd(&["GET", "a"]), cmd(&["PING"])].concat());
            let bytes = tokens.concat();
            for (i, c) in bytes.chunks(cut).enumerate() {
                r.resp(i as u64, c);
                if let Some(g) = gaps.get(i % 7) {
                    if i % 7 == 3 {
                        r.dec.on_gap(StreamDir::ToClient, i as u64, *g, &mut Emit { conn: &r.conn, out: &mut r.out });
                    }
                }
                prop_assert!(r.dec.resp.buf.len() <= MAX_LINE && r.dec.resp.stack.len() <= MAX_DEPTH);
                prop_assert!(r.dec.resp.msg.as_ref().is_none_or(|m| m.elems.len() <= MAX_CAPTURED));
            }
            r.dec.on_close(1000, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
            prop_assert!(r.out.len() <= 3);
        }

        #[test]
        fn arbitrary_input_never_panics(chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..400), 0..40)) {
            let mut r = Run::new();
            for (i, (up, bytes, gap)) in chunks.iter().enumerate() {
                let dir = if *up { StreamDir::ToServer } else { StreamDir::ToClient };
                let _ = probe(&r.conn, dir, bytes);
                if *gap > 300 {
                    r.dec.on_gap(dir, i as u64, *gap, &mut Emit { conn: &r.conn, out: &mut r.out });
                } else {
                    r.dec.on_data(dir, i as u64, bytes, &mut Emit { conn: &r.conn, out: &mut r.out });
                }
                prop_assert!(r.dec.req.buf.len() <= MAX_LINE && r.dec.resp.buf.len() <= MAX_LINE);
                prop_assert!(r.dec.req.stack.len() <= MAX_DEPTH && r.dec.resp.stack.len() <= MAX_DEPTH);
            }
            r.dec.on_close(1000, CloseReason::Fin, &mut Emit { conn: &r.conn, out: &mut r.out });
        }
    }
}
