//! Kafka wire protocol: size-prefixed requests and responses, paired by
//! correlation id. Responses carry no API key, so the key and version of
//! each pending request are remembered per connection. Every API is decoded
//! at header level; topics and error codes come from [`body`] for the APIs
//! that carry them. Message bodies beyond a bound are skipped, not buffered.
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::sync::LazyLock;

pub mod apis;
pub mod body;
mod detail;
pub mod semconv;

pub use detail::KafkaDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "kafka")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "kafka")]));
static UNMATCHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "kafka")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "kafka")]));

/// Largest message we believe in (brokers default to ~100 MB socket.request.max.bytes).
const MAX_MESSAGE: u32 = 128 * 1024 * 1024;
/// Smallest request: api_key, api_version, correlation_id, client_id length.
const MIN_REQUEST: u32 = 10;
const MAX_CLIENT_ID: usize = 512;

/// Does the first data of a connection look like a Kafka request? Kafka
/// clients speak first, so only ToServer data is judged.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    if dir != StreamDir::ToServer {
        return Probe::No;
    }
    match request_shape(data) {
        Shape::Bad => Probe::No,
        Shape::NeedMore => Probe::NeedMore,
        Shape::Good { client_id: true } => Probe::Yes(80),
        Shape::Good { client_id: false } => Probe::Yes(50),
    }
}

enum Shape {
    Bad,
    NeedMore,
    Good { client_id: bool },
}

/// Checks length prefix, API key/version and the client id string.
fn request_shape(data: &[u8]) -> Shape {
    let Some(len) = data.get(..4) else { return Shape::NeedMore };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if !(MIN_REQUEST..=MAX_MESSAGE).contains(&len) {
        return Shape::Bad;
    }
    let Some(h) = data.get(4..12) else { return Shape::NeedMore };
    let key = i16::from_be_bytes([h[0], h[1]]);
    let ver = i16::from_be_bytes([h[2], h[3]]);
    if !apis::plausible(key, ver) {
        return Shape::Bad;
    }
    if apis::request_header_version(key, ver) == 0 {
        return Shape::Good { client_id: false };
    }
    let Some(c) = data.get(12..14) else { return Shape::NeedMore };
    let clen = i16::from_be_bytes([c[0], c[1]]);
    if clen == -1 {
        return Shape::Good { client_id: false };
    }
    if clen < 0 || clen as usize > MAX_CLIENT_ID || 10 + clen as u32 > len {
        return Shape::Bad;
    }
    let Some(id) = data.get(14..14 + clen as usize) else {
        let have = &data[14..];
        return if have.iter().all(|b| b.is_ascii_graphic() || *b == b' ') { Shape::NeedMore } else { Shape::Bad };
    };
    if !id.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Shape::Bad;
    }
    if !body_fits(data, len, key, ver, 14 + clen as usize) {
        return Shape::Bad;
    }
    Shape::Good { client_id: true }
}

/// When the whole first request is at hand and its API is one whose body we
/// decode, the body must decode. The 16-byte header shape alone is weak
/// evidence: an SMPP `bind_transmitter` (length, command id 2, status 0,
/// sequence 1) reads as Produce v2 with correlation id 0 and an empty client
/// id, and an nDPI capture of SMPP on port 9000 was labelled Kafka.
/// A request not yet complete is judged on what it has, padded with zeros to
/// its announced length (zero-length strings and empty arrays decode): only a
/// body that is wrong in what was sent fails (the bind above is 40 bytes in
/// all, 4 short of what its length announces to a Kafka reader, and its client
/// waits for the answer).
fn body_fits(data: &[u8], len: u32, key: i16, ver: i16, at: usize) -> bool {
    /// Longest incomplete request judged (bounds the padded copy).
    const MAX_PADDED: usize = 64 * 1024;
    let len = len as usize;
    let padded;
    let m = match data.get(4..4 + len) {
        Some(m) => m,
        None if len <= MAX_PADDED => {
            let mut v = data[4..].to_vec();
            v.resize(len, 0);
            padded = v;
            &padded[..]
        }
        None => return true,
    };
    let flex = apis::flexible(key, ver);
    let mut at = at - 4;
    if apis::request_header_version(key, ver) >= 2 {
        match body::Reader::new(m.get(at..).unwrap_or_default(), true).tags_len() {
            Some(n) => at += n,
            None => return false,
        }
    }
    match body::request(key, ver, flex, m.get(at..).unwrap_or_default(), &body::TopicIds::default()) {
        Some(info) => !info.cut,
        None => true,
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(KafkaDecoder::new(cfg))
}

/// The Kafka wire protocol. The registry entry.
pub struct Kafka;

impl super::registry::L7Protocol for Kafka {
    /// Stream probes that can overlap, strongest evidence first: HTTP/2, HTTP/1, Kafka, Redis, DNS.
    const TIE_BREAK: u8 = 2;
    const NAME: &'static str = "kafka";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 9092..=9094)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Len,
    Body,
    /// Looking for the next message start after lost bytes.
    Lost,
}

struct DirRx {
    state: Rx,
    len_buf: [u8; 4],
    len_n: usize,
    msg_len: u32,
    got: u32,
    /// Leading bytes of the current message (bounded).
    buf: Vec<u8>,
    /// Bytes of the current message missing from `buf` (lost or beyond the bound).
    cut: bool,
    /// `buf` stopped growing because bytes were lost inside the message.
    hole: bool,
    start_ns: u64,
    resync: Resync,
}

impl DirRx {
    fn new() -> Self {
        Self {
            state: Rx::Len,
            len_buf: [0; 4],
            len_n: 0,
            msg_len: 0,
            got: 0,
            buf: Vec::new(),
            cut: false,
            hole: false,
            start_ns: 0,
            resync: Resync::default(),
        }
    }
}

struct Pending {
    start_ns: u64,
    request_bytes: u64,
    detail: KafkaDetail,
    partial: bool,
}

pub struct KafkaDecoder {
    rx: [DirRx; 2],
    pending: KeyedPairer<i32, Pending>,
    ids: body::TopicIds,
    max_buf: usize,
}

impl KafkaDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(), DirRx::new()],
            pending: KeyedPairer::new(cfg.max_pending_per_conn),
            ids: body::TopicIds::default(),
            max_buf: cfg.max_buffer_per_dir.max(64),
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let d = dir.index();
        while !data.is_empty() {
            match self.rx[d].state {
                Rx::Len => {
                    let rx = &mut self.rx[d];
                    if rx.len_n == 0 {
                        rx.start_ns = ts;
                    }
                    let n = (4 - rx.len_n).min(data.len());
                    rx.len_buf[rx.len_n..rx.len_n + n].copy_from_slice(&data[..n]);
                    rx.len_n += n;
                    data = &data[n..];
                    if rx.len_n == 4 {
                        rx.len_n = 0;
                        let len = u32::from_be_bytes(rx.len_buf);
                        let min = if dir == StreamDir::ToServer { MIN_REQUEST } else { 4 };
                        if !(min..=MAX_MESSAGE).contains(&len) {
                            PARSE_ERRORS.inc();
                            rx.state = Rx::Lost;
                            rx.resync.restart(&rx.len_buf[1..]);
                            continue;
                        }
                        rx.msg_len = len;
                        rx.got = 0;
                        rx.buf.clear();
                        rx.cut = false;
                        rx.hole = false;
                        rx.state = Rx::Body;
                    }
                }
                Rx::Body => {
                    let rx = &mut self.rx[d];
                    let n = ((rx.msg_len - rx.got) as usize).min(data.len());
                    if !rx.hole {
                        let room = self.max_buf.saturating_sub(rx.buf.len()).min(n);
                        rx.buf.extend_from_slice(&data[..room]);
                        if room < n {
                            rx.cut = true;
                        }
                    }
                    rx.got += n as u32;
                    data = &data[n..];
                    if rx.got == rx.msg_len {
                        rx.state = Rx::Len;
                        self.message(dir, ts, out);
                    }
                }
                Rx::Lost => {
                    let rx = &mut self.rx[d];
                    let pending = &mut self.pending;
                    let found = rx.resync.push(data, self.max_buf, &RESYNC_SKIPPED, |buf| {
                        if dir == StreamDir::ToServer {
                            find_request(buf)
                        } else {
                            find_response(buf, pending)
                        }
                    });
                    data = &[];
                    if let Some((buf, at)) = found {
                        rx.state = Rx::Len;
                        rx.len_n = 0;
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
        let (cut, start, wire) = (rx.cut, rx.start_ns, 4 + rx.msg_len as u64);
        match dir {
            StreamDir::ToServer => self.request(&buf, cut, start, ts, wire, out),
            StreamDir::ToClient => self.response(&buf, cut, ts, wire, out),
        }
        // Reuse the allocation.
        let rx = &mut self.rx[d];
        rx.buf = buf;
        rx.buf.clear();
    }

    fn request(&mut self, m: &[u8], cut: bool, start: u64, end: u64, wire: u64, out: &mut Emit) {
        let Some(h) = m.get(..8) else {
            PARSE_ERRORS.inc();
            return;
        };
        let key = i16::from_be_bytes([h[0], h[1]]);
        let ver = i16::from_be_bytes([h[2], h[3]]);
        let corr = i32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if !apis::known(key) || ver < 0 {
            PARSE_ERRORS.inc();
            return;
        }
        let hv = apis::request_header_version(key, ver);
        let flex = apis::flexible(key, ver);
        let mut r = body::Reader::new(&m[8..], false);
        let mut partial = false;
        let mut client_id = None;
        let mut body_at = None;
        if hv >= 1 {
            match r.string() {
                Some(id) => client_id = id.map(|s| s[..s.len().min(MAX_CLIENT_ID)].to_string()),
                None => partial = true,
            }
        }
        if !partial {
            // Header tagged fields use the compact encoding.
            let ok = if hv >= 2 { body::Reader::new(&m[8 + r.pos()..], true).tags_len() } else { Some(0) };
            match ok {
                Some(n) => body_at = Some(8 + r.pos() + n),
                None => partial = true,
            }
        }
        let mut detail = KafkaDetail {
            api_key: key,
            api_name: apis::name(key),
            api_version: ver,
            correlation_id: corr,
            client_id,
            header_only: true,
            ..Default::default()
        };
        let mut acks = None;
        if let Some(at) = body_at {
            if let Some(info) = body::request(key, ver, flex, &m[at.min(m.len())..], &self.ids) {
                detail.topics = info.topics;
                acks = info.acks;
                if info.has_records && !info.cut {
                    detail.record_count = Some(info.records);
                    detail.record_bytes = Some(info.record_bytes);
                }
                detail.header_only = false;
                // Cut bodies (snap length, bound) only matter if decoding stopped.
                partial |= info.cut && cut;
                if info.cut && !cut {
                    PARSE_ERRORS.inc();
                    detail.header_only = detail.topics.is_empty();
                }
            }
        }
        let p = Pending { start_ns: start, request_bytes: wire, detail, partial };
        if key == 0 && acks == Some(0) {
            // acks=0: the broker never answers.
            self.emit(p, end, 0, Outcome::Complete, out);
            return;
        }
        for old in self.pending.insert(corr, start, p) {
            EVICTED.inc();
            self.emit(old, end, 0, Outcome::Timeout, out);
        }
    }

    fn response(&mut self, m: &[u8], cut: bool, end: u64, wire: u64, out: &mut Emit) {
        let Some(h) = m.get(..4) else {
            PARSE_ERRORS.inc();
            return;
        };
        let corr = i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let Some(mut p) = self.pending.take(&corr) else {
            // Request not seen (capture started later, or evicted).
            UNMATCHED.inc();
            return;
        };
        let (key, ver) = (p.detail.api_key, p.detail.api_version);
        let flex = apis::flexible(key, ver);
        let mut at = Some(4);
        if apis::response_header_version(key, ver) >= 1 {
            at = body::Reader::new(&m[4..], true).tags_len().map(|n| 4 + n);
        }
        match at.and_then(|at| body::response(key, ver, flex, &m[at.min(m.len())..], &mut self.ids)) {
            Some(info) => {
                p.detail.error_code = info.error;
                if info.has_records && !info.cut {
                    p.detail.record_count = Some(info.records);
                    p.detail.record_bytes = Some(info.record_bytes);
                }
                for t in info.topics {
                    if p.detail.topics.len() < 32 && !p.detail.topics.contains(&t) {
                        p.detail.topics.push(t);
                    }
                }
                if info.cut {
                    if cut {
                        p.partial = true;
                    } else {
                        PARSE_ERRORS.inc();
                        p.detail.header_only = true;
                    }
                } else if !p.partial {
                    p.detail.header_only = false;
                }
            }
            None => {
                if at.is_none() {
                    PARSE_ERRORS.inc();
                }
                p.detail.header_only = true;
            }
        }
        p.detail.error_name = apis::error_name(p.detail.error_code);
        self.emit(p, end, wire, Outcome::Complete, out);
    }

    fn emit(&mut self, p: Pending, end_ns: u64, response_bytes: u64, outcome: Outcome, out: &mut Emit) {
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Kafka,
            start_ns: p.start_ns,
            end_ns: end_ns.max(p.start_ns),
            request_bytes: p.request_bytes,
            response_bytes,
            outcome,
            partial: p.partial,
            detail: Detail::Kafka(p.detail),
        });
    }

    fn drain_sorted(&mut self) -> Vec<Pending> {
        let mut v = self.pending.drain();
        v.sort_by_key(|p| (p.start_ns, p.detail.correlation_id));
        v
    }
}

impl body::Reader<'_> {
    /// Size of a tagged-field section at the cursor.
    fn tags_len(mut self) -> Option<usize> {
        self.tags()?;
        Some(self.pos())
    }
}

/// First offset in `buf` where a plausible request starts, confirmed by
/// the next request (or the end of the data) where its length says.
fn find_request(buf: &[u8]) -> Option<usize> {
    for i in 0..buf.len() {
        if !matches!(request_shape(&buf[i..]), Shape::Good { client_id: true }) {
            continue;
        }
        let len = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
        let end = i + 4 + len;
        if end == buf.len() {
            return Some(i);
        }
        // A candidate running past the data cannot be confirmed yet; a later
        // confirmed one wins, otherwise more bytes are awaited (bounded).
        if end < buf.len() && matches!(request_shape(&buf[end..]), Shape::Good { .. }) {
            return Some(i);
        }
    }
    None
}

/// First offset where a response to a pending correlation id starts.
fn find_response(buf: &[u8], pending: &mut KeyedPairer<i32, Pending>) -> Option<usize> {
    (0..buf.len().saturating_sub(8)).find(|&i| {
        let len = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let corr = i32::from_be_bytes([buf[i + 4], buf[i + 5], buf[i + 6], buf[i + 7]]);
        (4..=MAX_MESSAGE).contains(&len) && pending.get_mut(&corr).is_some()
    })
}

impl ConnDecoder for KafkaDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if len == 0 {
            return;
        }
        let d = dir.index();
        let rx = &mut self.rx[d];
        match rx.state {
            Rx::Body if len <= (rx.msg_len - rx.got) as u64 => {
                // Inside one message: skip it, the framing survives.
                rx.got += len as u32;
                rx.cut = true;
                rx.hole = true;
                if rx.got == rx.msg_len {
                    rx.state = Rx::Len;
                    self.message(dir, ts_ns, out);
                }
            }
            Rx::Body => {
                // The message ended inside the gap; what follows is unknown.
                rx.cut = true;
                rx.hole = true;
                rx.state = Rx::Lost;
                self.message(dir, ts_ns, out);
                let rx = &mut self.rx[d];
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
            Rx::Len | Rx::Lost => {
                rx.state = Rx::Lost;
                rx.len_n = 0;
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        for p in self.drain_sorted() {
            self.emit(p, ts_ns, 0, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        for p in self.pending.expire(deadline_ns) {
            let end = p.start_ns;
            self.emit(p, end, 0, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests;
