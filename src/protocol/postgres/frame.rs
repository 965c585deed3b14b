//! PostgreSQL v3 message framing for one direction: `type byte + int32
//! length` messages (the length counts itself), the untyped startup-phase
//! packets of the client (StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest: `int32 length + int32 code`) and the single-byte answer
//! to an SSL/GSSENC request.
//!
//! Bodies are kept only up to a per-type bound (statement texts, tags,
//! errors); DataRow/CopyData bodies and authentication payloads are counted
//! as they stream past, never stored. Lost bytes inside a body of known
//! length cost only that body; after bytes that break framing the reader
//! searches the following bytes for a message boundary with evidence (a
//! valid type byte and a plausible length, confirmed by the next header).
use crate::protocol::resync::Resync;
use crate::protocol::spare::SpareBufs;
use crate::stats::Counter;

pub const SSL_REQUEST: u32 = 80877103;
pub const GSSENC_REQUEST: u32 = 80877104;
pub const CANCEL_REQUEST: u32 = 80877102;
/// Protocol 3.0 in a StartupMessage (major 3 in the high 16 bits).
pub const PROTOCOL_3: u32 = 3 << 16;
/// PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP: u32 = 10_000;
/// Largest message believed (the server's own limit is 1 GB - 1).
pub const MAX_MESSAGE: u32 = 0x3fff_ffff;
/// Statement text kept from a Query or Parse.
pub const MAX_TEXT: usize = 16 * 1024;
/// Bytes kept of an ErrorResponse.
const MAX_ERROR: usize = 2048;

/// Marker type of an untyped startup-phase packet.
pub const UNTYPED: u8 = 0;
/// Marker type of the single-byte SSL/GSSENC answer (its byte is the body).
pub const SSL_ANSWER: u8 = 1;

/// One message as read: its type, the kept start of its body, and whether
/// anything of it is missing.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    pub ty: u8,
    /// Body length announced by the header.
    pub body_len: u32,
    /// Kept start of the body (bounded per type).
    pub body: Vec<u8>,
    /// Bytes of the body were lost (gap); what is kept is accurate.
    pub lost: bool,
    /// Time of its first byte.
    pub ts: u64,
    /// Size on the wire, header included.
    pub bytes: u64,
}

impl Msg {
    /// The whole body is in `body`.
    pub fn whole(&self) -> bool {
        !self.lost && self.body.len() == self.body_len as usize
    }
}

/// Frontend (client → server) message types. A `match`, not
/// `[u8]::contains` on a list (a `memchr` call for every message header).
pub fn frontend_type(t: u8) -> bool {
    matches!(t, b'Q' | b'P' | b'B' | b'D' | b'E' | b'S' | b'H' | b'C' | b'X' | b'd' | b'c' | b'f' | b'p' | b'F')
}
/// Backend (server → client) message types.
pub fn backend_type(t: u8) -> bool {
    matches!(
        t,
        b'R' | b'K'
            | b'S'
            | b'Z'
            | b'T'
            | b'D'
            | b'C'
            | b'I'
            | b'E'
            | b'N'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b't'
            | b's'
            | b'G'
            | b'H'
            | b'W'
            | b'd'
            | b'c'
            | b'A'
            | b'v'
            | b'V'
    )
}

/// Plausible body length for a message type (header excluded): exact for
/// the fixed-size ones, bounded for the rest.
fn plausible_len(backend: bool, t: u8, body: u32) -> bool {
    let fixed = |n: u32| body == n;
    if backend {
        match t {
            b'Z' => fixed(1),
            b'K' => fixed(8),
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => fixed(0),
            b'R' => (4..=64 * 1024).contains(&body),
            b'S' | b'C' | b'E' | b'N' | b'A' | b'v' => (1..=1024 * 1024).contains(&body),
            b'T' | b't' | b'G' | b'H' | b'W' => (2..=4 * 1024 * 1024).contains(&body),
            b'D' | b'V' => (2..=MAX_MESSAGE).contains(&body),
            b'd' => body <= MAX_MESSAGE,
            _ => false,
        }
    } else {
        match t {
            b'S' | b'H' | b'X' | b'c' => fixed(0),
            b'Q' => (1..=MAX_MESSAGE).contains(&body),
            b'P' => (4..=MAX_MESSAGE).contains(&body),
            b'B' => (6..=MAX_MESSAGE).contains(&body),
            b'D' | b'C' => (2..=64 * 1024).contains(&body),
            b'E' => (5..=64 * 1024).contains(&body),
            b'f' | b'p' => (1..=MAX_MESSAGE).contains(&body),
            b'F' => (10..=MAX_MESSAGE).contains(&body),
            b'd' => body <= MAX_MESSAGE,
            _ => false,
        }
    }
}

/// Is `h` (at least 5 bytes) a plausible message header for this direction?
/// Returns the body length.
pub fn header(backend: bool, h: &[u8]) -> Option<u32> {
    let t = *h.first()?;
    let len = u32::from_be_bytes(h.get(1..5)?.try_into().ok()?);
    let ok = if backend { backend_type(t) } else { frontend_type(t) };
    let body = len.checked_sub(4)?;
    (ok && plausible_len(backend, t, body)).then_some(body)
}

/// A whole body that can only be this type (strong evidence for detection and resync).
fn strong_body(backend: bool, t: u8, body: &[u8]) -> bool {
    let cstr_ascii =
        |b: &[u8]| b.last() == Some(&0) && b[..b.len() - 1].iter().all(|&c| c.is_ascii_graphic() || c == b' ');
    match (backend, t) {
        (true, b'Z') => matches!(body, [b'I' | b'T' | b'E']),
        (true, b'C') => cstr_ascii(body) && body.first().is_some_and(u8::is_ascii_uppercase),
        (true, b'E' | b'N') => body.last() == Some(&0) && body.first().is_some_and(|c| b"SVC".contains(c)),
        (true, b'1' | b'2' | b'3' | b'n' | b'I' | b'K') => true,
        (false, b'Q') => body.last() == Some(&0) && !body[..body.len() - 1].contains(&0),
        (false, b'P') => body.iter().filter(|&&c| c == 0).count() >= 2,
        (false, b'S' | b'X' | b'H') => true,
        _ => false,
    }
}

/// Evidence that typed messages start at offset 0 of `data`: how many whole
/// messages follow each other there, and whether one of them is strong.
/// None: a header is implausible (or a message ends exactly nowhere useful).
pub fn chain(backend: bool, data: &[u8], max_msgs: usize) -> Option<(usize, bool, bool)> {
    let (mut at, mut n, mut strong) = (0usize, 0usize, false);
    while n < max_msgs {
        let rest = &data[at..];
        if rest.is_empty() {
            return Some((n, strong, false));
        }
        if rest.len() < 5 {
            // A truncated header: only the type byte can be checked.
            let ok = if backend { backend_type(rest[0]) } else { frontend_type(rest[0]) };
            return ok.then_some((n, strong, true));
        }
        let body = header(backend, rest)? as usize;
        match rest.get(5..5 + body) {
            Some(b) => {
                strong |= strong_body(backend, rest[0], b);
                n += 1;
                at += 5 + body;
            }
            None => return Some((n, strong, true)),
        }
    }
    Some((n, strong, false))
}

/// Offset of a message boundary with evidence in `buf`: a plausible header
/// whose message is followed by another plausible header, or that ends the
/// buffer with a strong body.
pub fn find_start(backend: bool, buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(4)).find(|&i| match chain(backend, &buf[i..], 3) {
        Some((n, _, _)) if n >= 2 => true,
        Some((1, strong, false)) => strong,
        _ => false,
    })
}

/// Body bytes kept for a message type.
fn keep_for(backend: bool, t: u8) -> usize {
    match (backend, t) {
        (false, UNTYPED) => MAX_STARTUP as usize,
        // Statement texts and the names of statements and portals.
        (false, b'Q' | b'P') => MAX_TEXT,
        (false, b'B' | b'D' | b'C' | b'E') => 256,
        (false, b'F') => 4,
        (true, b'C') => 64,
        (true, b'E') => MAX_ERROR,
        (true, b'R') => 4,
        (true, b'Z') => 1,
        (true, b'G' | b'H') => 1,
        // DataRow, CopyData, RowDescription, ParameterStatus, notices and,
        // above all, PasswordMessage/SASL payloads ('p'): never kept.
        _ => 0,
    }
}

/// Bytes to read on with after a resync found a boundary, and its offset.
type Refeed = Option<(Vec<u8>, usize)>;

#[derive(Debug)]
struct Cur {
    msg: Msg,
    /// Body bytes still to come.
    left: u64,
    keep: usize,
}

/// Framing state of one direction.
#[derive(Debug, Default)]
pub struct Reader {
    pub backend: bool,
    /// Partial header bytes.
    hdr: Vec<u8>,
    cur: Option<Cur>,
    /// Next client packet is untyped (before and during startup negotiation).
    pub untyped: bool,
    /// Next server byte answers an SSL/GSSENC request.
    pub ssl_answer: bool,
    /// Framing lost: searching for a boundary.
    pub resync: bool,
    lost: Resync,
    /// Encrypted from here on: nothing is read.
    pub off: bool,
    /// Bodies of messages already read, for the next ones (see [`Reader::recycle`]).
    pub spare: SpareBufs,
}

impl Reader {
    pub fn new(backend: bool) -> Self {
        Self { backend, untyped: !backend, ..Default::default() }
    }

    /// Takes back the body of a message it produced once it has been read:
    /// the allocation serves a later message.
    pub fn recycle(&mut self, body: Vec<u8>) {
        self.spare.give(body);
    }

    /// Between messages, framing known.
    pub fn at_boundary(&self) -> bool {
        self.cur.is_none() && self.hdr.is_empty() && !self.resync
    }

    /// Feed stream bytes; whole messages (or partial ones closed by a gap)
    /// are appended to `done`. `cap` bounds the bytes kept while resyncing.
    pub fn feed(&mut self, ts: u64, data: &[u8], done: &mut Vec<Msg>, cap: usize, errors: &Counter, skipped: &Counter) {
        if self.off {
            return;
        }
        let mut next = if self.resync {
            let backend = self.backend;
            self.lost.push(data, cap, skipped, |b| find_start(backend, b)).map(|(bytes, at)| {
                self.resync = false;
                (bytes, at)
            })
        } else {
            self.run(ts, data, done, cap, errors, skipped)
        };
        // Each round consumes at least the validated messages found, so this ends.
        while let Some((bytes, at)) = next.take() {
            next = self.run(ts, &bytes[at..], done, cap, errors, skipped);
        }
    }

    /// Reads messages from `data`; after a bad header, hands back the bytes
    /// to go on with when a boundary was found in what followed.
    fn run(
        &mut self,
        ts: u64,
        data: &[u8],
        done: &mut Vec<Msg>,
        cap: usize,
        errors: &Counter,
        skipped: &Counter,
    ) -> Refeed {
        let mut pos = 0;
        while pos < data.len() {
            if self.off {
                return None;
            }
            if let Some(cur) = self.cur.as_mut() {
                let k = (cur.left.min((data.len() - pos) as u64)) as usize;
                let room = cur.keep.saturating_sub(cur.msg.body.len()).min(k);
                cur.msg.body.extend_from_slice(&data[pos..pos + room]);
                cur.left -= k as u64;
                pos += k;
                if cur.left == 0 {
                    let cur = self.cur.take().expect("current message");
                    done.push(cur.msg);
                }
                continue;
            }
            // Header: 1 byte for an SSL answer, 8 for an untyped packet (length + code), else 5.
            let need = if self.ssl_answer {
                1
            } else if self.untyped {
                8
            } else {
                5
            };
            let take = (need - self.hdr.len()).min(data.len() - pos);
            self.hdr.extend_from_slice(&data[pos..pos + take]);
            pos += take;
            if self.hdr.len() < need {
                return None;
            }
            // Copied out, the partial-header buffer keeps its allocation.
            let mut h = [0u8; 8];
            h[..need].copy_from_slice(&self.hdr);
            self.hdr.clear();
            let hdr = &h[..need];
            if self.ssl_answer {
                self.ssl_answer = false;
                let mut body = self.spare.take();
                body.extend_from_slice(hdr);
                done.push(Msg { ty: SSL_ANSWER, body_len: 1, body, ts, bytes: 1, lost: false });
                continue;
            }
            let (ty, body_len, body) = if self.untyped {
                let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
                if !(8..=MAX_STARTUP).contains(&len) {
                    errors.inc();
                    return self.lose(&hdr[1..], &data[pos..], cap, skipped);
                }
                // After a StartupMessage the client speaks typed messages;
                // after an SSL/GSSENC/Cancel request another untyped packet may follow.
                let code = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
                if code >> 16 == 3 {
                    self.untyped = false;
                }
                let mut body = self.spare.take();
                body.extend_from_slice(&hdr[4..8]);
                (UNTYPED, len - 4, body)
            } else {
                match header(self.backend, hdr) {
                    Some(n) => (hdr[0], n, self.spare.take()),
                    None => {
                        errors.inc();
                        return self.lose(&hdr[1..], &data[pos..], cap, skipped);
                    }
                }
            };
            let hdr_len = if ty == UNTYPED { 4 } else { 5 };
            let left = body_len as u64 - body.len() as u64;
            let msg = Msg { ty, body_len, body, lost: false, ts, bytes: hdr_len + body_len as u64 };
            if left == 0 {
                done.push(msg);
            } else {
                let keep = keep_for(self.backend, ty);
                self.cur = Some(Cur { msg, left, keep });
            }
        }
        None
    }

    /// Framing lost at a bad header: search `carry` and `rest` for the next boundary.
    fn lose(&mut self, carry: &[u8], rest: &[u8], cap: usize, skipped: &Counter) -> Refeed {
        self.cur = None;
        self.hdr.clear();
        self.resync = true;
        self.untyped = false;
        self.ssl_answer = false;
        self.lost.restart(carry);
        let backend = self.backend;
        let found = self.lost.push(rest, cap, skipped, |b| find_start(backend, b));
        if found.is_some() {
            self.resync = false;
        }
        found
    }

    /// `len` bytes are missing. Inside a body of known length they cost that
    /// body only; otherwise the message in flight is closed as lost and the
    /// reader looks for the next boundary.
    pub fn gap(&mut self, len: u64, done: &mut Vec<Msg>) {
        if self.off {
            return;
        }
        if let Some(cur) = self.cur.as_mut() {
            cur.msg.lost = true;
            if len <= cur.left {
                cur.left -= len;
                if cur.left == 0 {
                    let cur = self.cur.take().expect("current message");
                    done.push(cur.msg);
                }
                return;
            }
            let cur = self.cur.take().expect("current message");
            done.push(cur.msg);
        }
        self.hdr.clear();
        self.lost.clear();
        self.resync = true;
        // A client that lost its startup packet is past it now.
        self.untyped = false;
        self.ssl_answer = false;
    }
}
