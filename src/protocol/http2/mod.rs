//! HTTP/2 (h2c) and gRPC decoding.
//!
//! Frames are parsed incrementally per direction; DATA payloads are streamed
//! (only gRPC message prefixes are looked at), header blocks are buffered up
//! to a bound and decoded with a per-direction HPACK table that tolerates a
//! capture starting mid-connection (see [`hpack`]). Streams are paired by id:
//! an exchange starts at the first request byte and ends with the frame that
//! carries the response's END_STREAM, or with RST_STREAM / GOAWAY.
use super::http::HttpDetail;
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::otel::attr::Str;
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::VecDeque;
use std::sync::LazyLock;

pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod huffman;

use frame::FrameHeader;
use hpack::Hpack;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "http2")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "http2")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "http2")]));

/// Header blocks (HEADERS + CONTINUATION) larger than this are skipped; the
/// HPACK table is then treated as lost.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Control frames are only read this far (GOAWAY debug data is ignored).
const MAX_CONTROL_PAYLOAD: usize = 64;
/// Longest header value copied into an exchange.
const MAX_FIELD: usize = 4096;
/// Recently finished stream ids, so late frames do not start new exchanges.
const CLOSED_MEMORY: usize = 256;

/// Does the first data of a connection look like HTTP/2? The client preface
/// is certain; otherwise (capture started mid-connection) consecutive
/// well-formed frame headers are a weaker sign.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    if dir == StreamDir::ToServer && !data.is_empty() {
        let n = data.len().min(frame::PREFACE.len());
        if data[..n] == frame::PREFACE[..n] {
            return if n == frame::PREFACE.len() { Probe::Yes(100) } else { Probe::NeedMore };
        }
    }
    if data.len() < frame::HEADER_LEN {
        // A frame header could still follow; only if nothing contradicts it.
        return if frame_prefix_ok(data) { Probe::NeedMore } else { Probe::No };
    }
    let (frames, contradicted) = frame::plausible_run(data, 4);
    let first = FrameHeader::parse(data).unwrap_or_default();
    match (frames, contradicted) {
        (0, _) => Probe::No,
        (1, true) => Probe::No,
        (1, false) => {
            // A server's first SETTINGS is very distinctive; a lone frame of
            // another type is only a hint.
            if first.typ == frame::SETTINGS && first.flags == 0 {
                Probe::Yes(60)
            } else {
                Probe::Yes(30)
            }
        }
        (_, true) => Probe::Yes(30),
        _ => Probe::Yes(70),
    }
}

fn frame_prefix_ok(data: &[u8]) -> bool {
    // Length above 16 KiB or an unknown frame type rule it out early.
    match data.len() {
        0 => true,
        1..=3 => data[0] == 0,
        _ => data[0] == 0 && data[3] <= frame::CONTINUATION,
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(H2Decoder::new(cfg))
}

/// HTTP/2 over cleartext (h2c, prior knowledge), gRPC included. The registry entry.
pub struct Http2;

impl super::registry::L7Protocol for Http2 {
    /// Stream probes that can overlap, strongest evidence first: HTTP/2, HTTP/1, Kafka, Redis, DNS.
    const TIE_BREAK: u8 = 4;
    const NAME: &'static str = "http2";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 50051 | 8443 | 443)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

/// The HTTP/1.1 request that carried `Upgrade: h2c` and was answered with
/// `101 Switching Protocols` (RFC 7540 3.2): its response arrives as HTTP/2
/// on stream 1.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRequest {
    /// First byte of the HTTP/1.1 request.
    pub start_ns: u64,
    /// Size of the HTTP/1.1 request (head + body).
    pub request_bytes: u64,
    /// Size of the `101` response head.
    pub response_bytes: u64,
    /// What the HTTP/1 decoder parsed from the request (method, path, host...).
    pub detail: HttpDetail,
}

/// Decoder for a connection that switched from HTTP/1.1 to h2c. Feed it the
/// bytes that follow the `101` response (ToClient) and the upgrade request
/// (ToServer, starting with the client preface).
pub fn new_upgraded_decoder(cfg: &DecodeConfig, req: UpgradeRequest) -> Box<dyn ConnDecoder> {
    let mut d = H2Decoder::new(cfg);
    d.started = true;
    for rx in &mut d.rx {
        rx.hpack = Hpack::new(true);
        rx.verified = true;
    }
    let mut detail = req.detail;
    detail.version = "2".into();
    detail.stream_id = Some(1);
    let grpc = detail.content_type.as_deref().is_some_and(grpc::is_grpc);
    let s = H2Stream {
        id: 1,
        start_ns: req.start_ns,
        last_ns: req.start_ns,
        req_bytes: req.request_bytes,
        resp_bytes: req.response_bytes,
        resp_ts: None,
        detail,
        grpc,
        framers: Default::default(),
        partial: false,
        resp_headers: false,
        req_dir: StreamDir::ToServer,
    };
    d.streams.insert(1, req.start_ns, s);
    Box::new(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// Matching the client preface (bytes matched so far).
    Preface(usize),
    Header,
    Payload,
    /// Lost bytes: looking for the next plausible frame header.
    Lost,
}

struct Block {
    stream: u32,
    end_stream: bool,
    promised: Option<u32>,
    buf: Vec<u8>,
    overflow: bool,
    start_ns: u64,
    bytes: u64,
}

struct DirRx {
    state: Rx,
    hdr: [u8; frame::HEADER_LEN],
    hdr_n: usize,
    cur: FrameHeader,
    /// Payload bytes of `cur` still to come.
    left: u32,
    frame_ts: u64,
    /// DATA: pad-length byte still to read.
    pad_pending: bool,
    /// DATA: payload bytes before padding still to come.
    data_left: u32,
    payload: Vec<u8>,
    /// Payload bytes of `cur` were lost.
    payload_lost: bool,
    /// Header block waiting for CONTINUATION.
    block: Option<Block>,
    hpack: Hpack,
    resync: Resync,
    /// Frame alignment confirmed (preface seen, or a frame header passed the
    /// strict shape check); until then a bad header means we started mid-frame.
    verified: bool,
}

impl DirRx {
    fn new(state: Rx) -> Self {
        Self {
            state,
            hdr: [0; frame::HEADER_LEN],
            hdr_n: 0,
            cur: FrameHeader::default(),
            left: 0,
            frame_ts: 0,
            pad_pending: false,
            data_left: 0,
            payload: Vec::new(),
            payload_lost: false,
            block: None,
            hpack: Hpack::new(false),
            resync: Resync::default(),
            verified: false,
        }
    }
}

struct H2Stream {
    id: u32,
    start_ns: u64,
    last_ns: u64,
    req_bytes: u64,
    resp_bytes: u64,
    /// Time of the event that carried the first response frame's header.
    resp_ts: Option<u64>,
    detail: HttpDetail,
    grpc: bool,
    /// gRPC message counters, indexed by the frame direction ([`StreamDir::index`]).
    framers: [grpc::Framer; 2],
    partial: bool,
    /// A final (non-1xx) response header block was seen.
    resp_headers: bool,
    /// Direction requests travel in (ToClient when capture roles are flipped).
    req_dir: StreamDir,
}

/// Header fields an exchange cares about, collected from one block.
#[derive(Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    host: Option<String>,
    status: Option<u16>,
    content_type: Option<String>,
    content_length: Option<u64>,
    user_agent: Option<String>,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    trace: Vec<(String, String)>,
    /// Names we could not recover: one of them may have been a pseudo-header.
    unknown: u32,
}

const TRACE_HEADERS: [&str; 7] =
    ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-parentspanid"];

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(MAX_FIELD)]).into_owned()
}

impl Fields {
    fn add(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        let (Some(name), Some(value)) = (name, value) else {
            self.unknown += 1;
            return;
        };
        match name {
            b":method" => self.method = Some(text(value)),
            b":path" => self.path = Some(text(value)),
            b":authority" => self.authority = Some(text(value)),
            b"host" => self.host = Some(text(value)),
            b":status" => self.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"content-type" => self.content_type = Some(text(value)),
            b"content-length" => self.content_length = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"user-agent" => self.user_agent = Some(text(value)),
            b"grpc-status" => self.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"grpc-message" => self.grpc_message = Some(grpc::decode_message(&value[..value.len().min(MAX_FIELD)])),
            _ => {
                if let Some(t) = TRACE_HEADERS.iter().find(|t| t.as_bytes() == name) {
                    if self.trace.len() < TRACE_HEADERS.len() {
                        self.trace.push((t.to_string(), text(value)));
                    }
                }
            }
        }
    }
}

pub struct H2Decoder {
    rx: [DirRx; 2],
    streams: KeyedPairer<u32, H2Stream>,
    closed: VecDeque<u32>,
    goaway_code: Option<u32>,
    /// Requests were seen travelling ToClient (capture roles reversed).
    flipped: bool,
    /// Whether the first ToServer bytes have been looked at.
    started: bool,
}

impl H2Decoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(Rx::Preface(0)), DirRx::new(Rx::Header)],
            streams: KeyedPairer::new(cfg.max_pending_per_conn),
            closed: VecDeque::new(),
            goaway_code: None,
            flipped: false,
            started: false,
        }
    }

    fn req_dir(&self) -> StreamDir {
        if self.flipped {
            StreamDir::ToClient
        } else {
            StreamDir::ToServer
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let d = dir.index();
        while !data.is_empty() {
            match self.rx[d].state {
                Rx::Preface(matched) => {
                    let want = &frame::PREFACE[matched..];
                    let n = want.len().min(data.len());
                    if data[..n] == want[..n] {
                        data = &data[n..];
                        self.rx[d].state =
                            if matched + n == frame::PREFACE.len() { Rx::Header } else { Rx::Preface(matched + n) };
                        if matched == 0 && !self.started {
                            // Connection seen from its start: both tables are
                            // exact and both directions frame-aligned.
                            self.started = true;
                            for rx in &mut self.rx {
                                rx.hpack = Hpack::new(true);
                                rx.verified = true;
                            }
                        }
                    } else if matched == 0 {
                        // No preface: capture started mid-connection.
                        self.rx[d].state = Rx::Header;
                    } else {
                        PARSE_ERRORS.inc();
                        self.rx[d].state = Rx::Lost;
                    }
                    self.started = true;
                }
                Rx::Header => {
                    let rx = &mut self.rx[d];
                    if rx.hdr_n == 0 {
                        rx.frame_ts = ts;
                    }
                    let n = (frame::HEADER_LEN - rx.hdr_n).min(data.len());
                    rx.hdr[rx.hdr_n..rx.hdr_n + n].copy_from_slice(&data[..n]);
                    rx.hdr_n += n;
                    data = &data[n..];
                    if rx.hdr_n == frame::HEADER_LEN {
                        rx.hdr_n = 0;
                        let h = FrameHeader::parse(&rx.hdr).unwrap_or_default();
                        if !rx.verified {
                            if !h.plausible() {
                                rx.state = Rx::Lost;
                                rx.resync.restart(&rx.hdr[1..]);
                                continue;
                            }
                            rx.verified = true;
                        }
                        self.start_frame(dir, h, out);
                        if self.rx[d].state == Rx::Payload && self.rx[d].left == 0 {
                            self.end_frame(dir, ts, out);
                        }
                    }
                }
                Rx::Payload => {
                    let n = (self.rx[d].left as usize).min(data.len());
                    self.payload(dir, &data[..n]);
                    self.rx[d].left -= n as u32;
                    data = &data[n..];
                    if self.rx[d].left == 0 {
                        self.end_frame(dir, ts, out);
                    }
                }
                Rx::Lost => {
                    let rx = &mut self.rx[d];
                    let cap = frame::DEFAULT_MAX_FRAME as usize * 2 + 2 * frame::HEADER_LEN;
                    let found = rx.resync.push(data, cap, &RESYNC_SKIPPED, find_frame);
                    data = &[];
                    if let Some((buf, found)) = found {
                        rx.state = Rx::Header;
                        rx.hdr_n = 0;
                        rx.verified = true;
                        self.feed(dir, ts, &buf[found..], out);
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, dir: StreamDir, h: FrameHeader, out: &mut Emit) {
        let d = dir.index();
        let ts = self.rx[d].frame_ts;
        let wire = frame::HEADER_LEN as u64 + h.len as u64;
        {
            let rx = &mut self.rx[d];
            rx.cur = h;
            rx.left = h.len;
            rx.state = Rx::Payload;
            rx.payload.clear();
            rx.payload_lost = false;
        }
        match h.typ {
            frame::DATA => {
                if h.stream == 0 {
                    PARSE_ERRORS.inc();
                }
                let rx = &mut self.rx[d];
                rx.pad_pending = h.flags & frame::PADDED != 0;
                rx.data_left = if rx.pad_pending { h.len.saturating_sub(1) } else { h.len };
                if self.ensure_data_stream(h.stream, dir, ts, out) {
                    if let Some(s) = self.streams.get_mut(&h.stream) {
                        s.add_bytes(dir, wire, ts);
                    }
                }
            }
            frame::HEADERS | frame::PUSH_PROMISE => {
                if self.rx[d].block.take().is_some() {
                    // CONTINUATION was expected: that block is lost.
                    PARSE_ERRORS.inc();
                    self.rx[d].hpack.lost();
                }
                if h.stream == 0 {
                    PARSE_ERRORS.inc();
                }
                self.rx[d].block = Some(Block {
                    stream: h.stream,
                    end_stream: h.typ == frame::HEADERS && h.flags & frame::END_STREAM != 0,
                    promised: None,
                    buf: Vec::new(),
                    overflow: false,
                    start_ns: ts,
                    bytes: wire,
                });
            }
            frame::CONTINUATION => match &mut self.rx[d].block {
                Some(b) if b.stream == h.stream => b.bytes += wire,
                _ => {
                    PARSE_ERRORS.inc();
                    self.rx[d].hpack.lost();
                }
            },
            _ => {}
        }
    }

    fn payload(&mut self, dir: StreamDir, chunk: &[u8]) {
        let d = dir.index();
        let rx = &mut self.rx[d];
        match rx.cur.typ {
            frame::DATA => {
                let mut chunk = chunk;
                if rx.pad_pending && !chunk.is_empty() {
                    rx.pad_pending = false;
                    rx.data_left = rx.data_left.saturating_sub(chunk[0] as u32);
                    chunk = &chunk[1..];
                }
                let n = (rx.data_left as usize).min(chunk.len());
                rx.data_left -= n as u32;
                let id = rx.cur.stream;
                if n > 0 {
                    if let Some(s) = self.streams.get_mut(&id) {
                        if s.grpc {
                            s.framers[d].feed(&chunk[..n]);
                        }
                    }
                }
            }
            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION => {
                if let Some(b) = &mut rx.block {
                    if b.stream == rx.cur.stream {
                        if b.buf.len() + chunk.len() > MAX_HEADER_BLOCK {
                            b.overflow = true;
                            b.buf = Vec::new();
                        } else if !b.overflow {
                            b.buf.extend_from_slice(chunk);
                        }
                    }
                }
            }
            _ => {
                let room = MAX_CONTROL_PAYLOAD.saturating_sub(rx.payload.len());
                rx.payload.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
        }
    }

    fn end_frame(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let d = dir.index();
        let h = self.rx[d].cur;
        self.rx[d].state = Rx::Header;
        match h.typ {
            frame::DATA => {
                if let Some(s) = self.streams.get_mut(&h.stream) {
                    s.last_ns = ts;
                }
                if h.flags & frame::END_STREAM != 0 {
                    self.end_stream(h.stream, dir, ts, out);
                }
            }
            frame::HEADERS | frame::PUSH_PROMISE => {
                let lost = self.rx[d].payload_lost;
                if let Some(b) = &mut self.rx[d].block {
                    if lost {
                        b.overflow = true;
                    }
                    if !b.overflow && !strip_headers_prefix(b, h) {
                        PARSE_ERRORS.inc();
                        b.overflow = true;
                    }
                }
                if h.flags & frame::END_HEADERS != 0 {
                    self.finish_block(dir, ts, out);
                }
            }
            frame::CONTINUATION => {
                if self.rx[d].payload_lost {
                    if let Some(b) = &mut self.rx[d].block {
                        b.overflow = true;
                    }
                }
                if h.flags & frame::END_HEADERS != 0 && self.rx[d].block.as_ref().is_some_and(|b| b.stream == h.stream)
                {
                    self.finish_block(dir, ts, out);
                }
            }
            frame::RST_STREAM => {
                let p = &self.rx[d].payload;
                if p.len() >= 4 && !self.rx[d].payload_lost {
                    let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    if let Some(s) = self.streams.take(&h.stream) {
                        self.emit(s, ts, Outcome::Reset, Some(code), out);
                    }
                }
            }
            frame::GOAWAY => {
                let p = &self.rx[d].payload;
                if p.len() >= 8 && !self.rx[d].payload_lost {
                    let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                    let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    self.goaway_code = Some(code);
                    // Streams above `last` that the sender's peer opened
                    // were never processed.
                    let peer_parity = match dir {
                        StreamDir::ToClient => !self.flipped,
                        StreamDir::ToServer => self.flipped,
                    };
                    for st in self.drain_sorted() {
                        let opened_by_peer = (st.id % 2 == 1) == peer_parity;
                        if st.id > last && opened_by_peer {
                            self.emit(st, ts, Outcome::Reset, Some(code), out);
                        } else {
                            let (id, start) = (st.id, st.start_ns);
                            self.streams.insert(id, start, st);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn finish_block(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let d = dir.index();
        let Some(block) = self.rx[d].block.take() else { return };
        let mut f = Fields::default();
        let mut partial = false;
        if block.overflow {
            self.rx[d].hpack.lost();
            partial = true;
        } else {
            let st = self.rx[d].hpack.decode(&block.buf, &mut |n, v| f.add(n, v));
            if st.error || st.bad_index {
                PARSE_ERRORS.inc();
            }
            partial |= st.error || st.unknown > 0;
        }
        if block.stream == 0 {
            return;
        }
        if let Some(promised) = block.promised {
            // Server push: the promise carries the request of a new stream
            // whose response comes the usual way.
            if !self.is_closed(promised) && self.streams.get_mut(&promised).is_none() {
                let mut s = H2Stream::new(promised, block.start_ns, dir.flip());
                s.apply_request(&f);
                s.partial = partial;
                self.insert(s, out);
            }
            if let Some(s) = self.streams.get_mut(&block.stream) {
                s.add_bytes(dir, block.bytes, block.start_ns);
            }
            return;
        }
        let is_req = if f.method.is_some() {
            true
        } else if f.status.is_some() {
            false
        } else {
            dir == self.req_dir()
        };
        let opposite = if is_req { dir != self.req_dir() } else { dir == self.req_dir() };
        if opposite && (f.method.is_some() || f.status.is_some()) {
            // The capture's client/server roles are reversed.
            self.flipped = !self.flipped;
        }
        let req_dir = if is_req { dir } else { dir.flip() };
        if self.streams.get_mut(&block.stream).is_none() {
            if self.is_closed(block.stream) {
                return;
            }
            let mut s = H2Stream::new(block.stream, block.start_ns, req_dir);
            // Without the request's headers the exchange is incomplete.
            s.partial = !is_req;
            self.insert(s, out);
        }
        let Some(s) = self.streams.get_mut(&block.stream) else { return };
        s.add_bytes(dir, block.bytes, block.start_ns);
        s.last_ns = ts;
        s.partial |= partial;
        if dir == s.req_dir {
            if f.method.is_some() || f.path.is_some() {
                s.apply_request(&f);
            }
        } else {
            s.apply_response(&f);
        }
        if block.end_stream {
            self.end_stream(block.stream, dir, ts, out);
        }
    }

    fn end_stream(&mut self, id: u32, dir: StreamDir, ts: u64, out: &mut Emit) {
        let done = self.streams.get_mut(&id).is_some_and(|s| dir != s.req_dir);
        if done {
            if let Some(s) = self.streams.take(&id) {
                self.emit(s, ts, Outcome::Complete, None, out);
            }
        }
    }

    /// Whether DATA on `id` belongs to a tracked stream; a stream whose
    /// headers we never saw is started as partial (capture began inside it).
    fn ensure_data_stream(&mut self, id: u32, dir: StreamDir, ts: u64, out: &mut Emit) -> bool {
        if id == 0 || self.is_closed(id) {
            return false;
        }
        if self.streams.get_mut(&id).is_none() {
            let mut s = H2Stream::new(id, ts, self.req_dir());
            s.partial = true;
            // Message boundaries inside this DATA are unknown.
            s.framers[dir.index()].lost = true;
            self.insert(s, out);
        }
        true
    }

    fn insert(&mut self, s: H2Stream, out: &mut Emit) {
        let (id, start) = (s.id, s.start_ns);
        for old in self.streams.insert(id, start, s) {
            EVICTED.inc();
            let end = old.last_ns;
            self.emit(old, end, Outcome::Timeout, None, out);
        }
    }

    /// All pending streams, oldest first (ties by id, for stable output).
    fn drain_sorted(&mut self) -> Vec<H2Stream> {
        let mut v = self.streams.drain();
        v.sort_by_key(|s| (s.start_ns, s.id));
        v
    }

    fn is_closed(&self, id: u32) -> bool {
        self.closed.contains(&id)
    }

    fn emit(&mut self, s: H2Stream, end_ns: u64, outcome: Outcome, code: Option<u32>, out: &mut Emit) {
        if self.closed.len() >= CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back(s.id);
        out.push(s.into_exchange(out.conn, end_ns, outcome, code));
    }

    /// Bytes were lost outside a DATA payload: frame alignment and any header
    /// block in flight are gone.
    fn lose(&mut self, d: usize) {
        let rx = &mut self.rx[d];
        rx.state = Rx::Lost;
        rx.hdr_n = 0;
        rx.resync.clear();
        rx.block = None;
        rx.hpack.lost();
        let dir = if d == 0 { StreamDir::ToServer } else { StreamDir::ToClient };
        for s in self.streams.drain() {
            let mut s = s;
            s.partial = true;
            s.framers[dir.index()].lost = true;
            let (id, start) = (s.id, s.start_ns);
            self.streams.insert(id, start, s);
        }
    }
}

/// Remove the pad length / priority prefix and the padding of a HEADERS or
/// PUSH_PROMISE payload (the whole frame payload is in `b.buf`).
fn strip_headers_prefix(b: &mut Block, h: FrameHeader) -> bool {
    let mut start = 0usize;
    let mut pad = 0usize;
    if h.flags & frame::PADDED != 0 {
        let Some(&p) = b.buf.first() else { return false };
        pad = p as usize;
        start = 1;
    }
    if h.typ == frame::PUSH_PROMISE {
        let Some(id) = b.buf.get(start..start + 4) else { return false };
        b.promised = Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff);
        start += 4;
    } else if h.flags & frame::PRIORITY_FLAG != 0 {
        start += 5;
    }
    if start + pad > b.buf.len() {
        return false;
    }
    let end = b.buf.len() - pad;
    b.buf.truncate(end);
    b.buf.drain(..start);
    true
}

/// Offset of the first plausible frame header in `buf` from which a chain of
/// plausible frames ends exactly at `target` (a position past `buf`).
fn chain_to(buf: &[u8], target: u64) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        let mut pos = i;
        while let Some(h) = buf.get(pos..).and_then(FrameHeader::parse) {
            if !h.plausible() {
                return false;
            }
            pos += frame::HEADER_LEN + h.len as usize;
            if pos as u64 == target {
                return true;
            }
            if pos >= buf.len() {
                return false;
            }
        }
        false
    })
}

/// Offset of the first plausible frame header in `buf` that is confirmed by
/// the plausible header following it. A frame that merely ends where `buf`
/// ends is not enough: with small segments every candidate gets that chance,
/// and a false one turns into phantom streams (a lost byte of a SETTINGS
/// header once gave two timed-out streams); it waits for the next header,
/// and a snap-length packet's tail is handled by [`chain_to`] instead.
fn find_frame(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + frame::HEADER_LEN <= buf.len() {
        let h = FrameHeader::parse(&buf[i..]).unwrap_or_default();
        if h.plausible() {
            let next = i + frame::HEADER_LEN + h.len as usize;
            if next + frame::HEADER_LEN <= buf.len() {
                if FrameHeader::parse(&buf[next..]).is_some_and(|n| n.plausible()) {
                    return Some(i);
                }
            } else {
                // Cannot confirm yet; keep waiting from this candidate on.
                return None;
            }
        }
        i += 1;
    }
    None
}

impl H2Stream {
    fn new(id: u32, ts: u64, req_dir: StreamDir) -> Self {
        Self {
            id,
            start_ns: ts,
            last_ns: ts,
            req_bytes: 0,
            resp_bytes: 0,
            resp_ts: None,
            detail: HttpDetail { version: "2".into(), stream_id: Some(id), ..Default::default() },
            grpc: false,
            framers: Default::default(),
            partial: false,
            resp_headers: false,
            req_dir,
        }
    }

    /// `n` frame bytes of this stream whose first came in the event at `ts`.
    fn add_bytes(&mut self, dir: StreamDir, n: u64, ts: u64) {
        if dir == self.req_dir {
            self.req_bytes += n;
        } else {
            self.resp_bytes += n;
            self.resp_ts.get_or_insert(ts);
        }
    }

    fn apply_request(&mut self, f: &Fields) {
        let d = &mut self.detail;
        d.method = f.method.as_deref().map(Str::copy);
        if let Some(p) = &f.path {
            match p.split_once('?') {
                Some((path, q)) => {
                    d.path = Some(Str::copy(path));
                    d.query = Some(Str::copy(q));
                }
                None => d.path = Some(Str::copy(p)),
            }
        }
        d.host = f.authority.as_deref().or(f.host.as_deref()).map(Str::copy);
        d.user_agent = f.user_agent.as_deref().map(Str::copy);
        d.request_content_length = f.content_length;
        d.content_type = f.content_type.as_deref().map(Str::copy);
        d.trace_headers = f.trace.clone();
        if d.content_type.as_deref().is_some_and(grpc::is_grpc) {
            self.grpc = true;
        }
    }

    fn apply_response(&mut self, f: &Fields) {
        if let Some(st) = f.status {
            if st >= 200 || !self.resp_headers {
                self.detail.status = Some(st);
            }
            if st >= 200 {
                self.resp_headers = true;
                self.detail.response_content_length = f.content_length;
                if self.detail.content_type.is_none() && f.content_type.as_deref().is_some_and(grpc::is_grpc) {
                    // Request headers were not captured; the response says gRPC.
                    self.grpc = true;
                }
            }
        }
        if f.grpc_status.is_some() {
            self.grpc = true;
            let g = self.detail.grpc.get_or_insert_with(Box::default);
            g.status_code = f.grpc_status;
            g.message = f.grpc_message.clone();
        }
    }

    fn into_exchange(mut self, conn: &Conn, end_ns: u64, outcome: Outcome, code: Option<u32>) -> Exchange {
        self.detail.h2_error_code = code;
        let protocol = if self.grpc {
            let g = self.detail.grpc.get_or_insert_with(Box::default);
            if let Some((svc, m)) = self.detail.path.as_deref().and_then(grpc::split_path) {
                g.service = svc.to_string();
                g.method = m.to_string();
            }
            let req = self.req_dir.index();
            g.request_messages = self.framers[req].messages;
            g.response_messages = self.framers[1 - req].messages;
            if self.framers.iter().any(|f| f.lost) {
                self.partial = true;
            }
            Protocol::Grpc
        } else {
            Protocol::Http2
        };
        Exchange {
            conn: conn.clone(),
            wire: crate::protocol::exchange::Wire { response_ts: self.resp_ts, ..Default::default() },
            protocol,
            start_ns: self.start_ns,
            end_ns: end_ns.max(self.start_ns),
            request_bytes: self.req_bytes,
            response_bytes: self.resp_bytes,
            outcome,
            partial: self.partial,
            detail: Detail::Http(Box::new(self.detail)),
        }
    }
}

impl ConnDecoder for H2Decoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        let d = dir.index();
        if len == 0 {
            return;
        }
        let rx = &mut self.rx[d];
        match rx.state {
            Rx::Payload if len <= rx.left as u64 => {
                rx.left -= len as u32;
                rx.payload_lost = true;
                if rx.cur.typ == frame::DATA {
                    let id = rx.cur.stream;
                    let mut data_lost = len;
                    if rx.pad_pending {
                        // Padding length unknown: treat the rest as data.
                        rx.pad_pending = false;
                        rx.data_left = rx.left;
                        data_lost = 0;
                    } else {
                        data_lost = data_lost.min(rx.data_left as u64);
                        rx.data_left -= data_lost as u32;
                    }
                    if let Some(s) = self.streams.get_mut(&id) {
                        if s.grpc && !s.framers[d].skip(data_lost) {
                            s.partial = true;
                        }
                    }
                } else if let Some(b) = &mut rx.block {
                    b.overflow = true;
                }
                // The frame still ends where its header said.
                if self.rx[d].left == 0 {
                    self.end_frame(dir, ts_ns, out);
                }
            }
            Rx::Lost => {
                // Snap-length captures: each packet starts with a frame and
                // its tail is missing. A chain of frame headers from the
                // kept bytes that ends exactly where the gap ends puts us
                // back on frame boundaries.
                let buf = rx.resync.take();
                if let Some(i) = chain_to(&buf, buf.len() as u64 + len) {
                    rx.state = Rx::Header;
                    rx.hdr_n = 0;
                    rx.verified = true;
                    RESYNC_SKIPPED.add(i as u64);
                    self.feed(dir, ts_ns, &buf[i..], out);
                    if self.rx[d].state == Rx::Payload && self.rx[d].left as u64 >= len {
                        self.on_gap(dir, ts_ns, len, out);
                    } else {
                        self.lose(d);
                    }
                }
            }
            _ => {
                if rx.state == Rx::Payload
                    && matches!(rx.cur.typ, frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION)
                {
                    // The header block is lost, but the frame header still
                    // says which stream it belongs to and whether it ends it.
                    rx.left = 0;
                    rx.payload_lost = true;
                    if let Some(b) = &mut rx.block {
                        b.overflow = true;
                    }
                    self.end_frame(dir, ts_ns, out);
                } else if rx.state == Rx::Payload && rx.cur.typ == frame::DATA {
                    // The DATA frame's END_STREAM flag is known even though
                    // its tail and what follows are lost.
                    rx.left = 0;
                    rx.payload_lost = true;
                    let id = rx.cur.stream;
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.framers[d].lost = true;
                    }
                    self.end_frame(dir, ts_ns, out);
                }
                PARSE_ERRORS.inc();
                self.lose(d);
            }
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let code = self.goaway_code.filter(|c| *c != 0);
        let outcome = if reason == CloseReason::Rst || code.is_some() { Outcome::Reset } else { Outcome::Timeout };
        for s in self.drain_sorted() {
            self.emit(s, ts_ns, outcome, code, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        for s in self.streams.expire(deadline_ns) {
            let end = s.last_ns;
            self.emit(s, end, Outcome::Timeout, None, out);
        }
    }
}

#[cfg(test)]
mod tests;
