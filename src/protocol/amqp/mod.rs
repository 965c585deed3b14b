//! AMQP 0-9-1 (RabbitMQ): frames (type, channel, size, payload, 0xCE),
//! method frames, content header and body frames, on multiplexed channels.
//!
//! Exchanges, per channel:
//! - a synchronous method the client sends (queue.declare, basic.get,
//!   channel.open, ...) is paired with its `-ok` (basic.get: get-ok with its
//!   content, or get-empty); with `no-wait` set it is an exchange of its own;
//! - basic.publish lasts until its content (header + body frames) is sent;
//!   on a channel in publisher-confirm mode (confirm.select) it then waits
//!   for the broker's basic.ack/basic.nack of its sequence number (ack
//!   `multiple` confirms every number up to the tag);
//! - basic.deliver (and basic.return) from the broker lasts until its content arrived;
//! - a client basic.ack/nack/reject is a settle exchange, request only;
//! - a channel.close/connection.close sent by the broker answers the pending
//!   method it names (class/method ids in the close), else the oldest pending
//!   one, with its reply code; with nothing pending the close is an exchange
//!   of its own. Everything else still pending on the closed channel ends with it.
//!
//! Heartbeats and connection.start/tune are not exchanges. The start-ok
//! `response` (PLAIN/AMQPLAIN credentials) is skipped by its length, never
//! read into memory that outlives the frame; bodies are counted, not kept.
//! After lost bytes the decoder resynchronises on the next whole frame.
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;
use wire::*;

mod detail;
pub mod semconv;
pub mod wire;
pub use detail::AmqpDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "amqp")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "amqp")]));
static UNMATCHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "amqp")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "amqp")]));

/// Largest frame believed: RabbitMQ caps frame_max at 128 MiB... in practice
/// 128 KiB is the default; anything beyond this is not a frame header.
const MAX_FRAME: u32 = 128 * 1024 * 1024;
/// Channels tracked per connection (RabbitMQ's default channel_max is 2047;
/// clients use a handful). Frames on further channels are counted and ignored.
const MAX_CHANNELS: usize = 256;
/// Synchronous methods waiting per channel (clients wait for each -ok).
const MAX_SYNC: usize = 16;
/// Delivery tags remembered per channel, to name the destination of an ack.
const MAX_DELIVERED: usize = 256;
/// Consumer tag → queue entries per connection.
const MAX_CONSUMERS: usize = 256;

/// Content detection: the protocol header a 0-9-1 client sends first, or
/// (joining mid-connection) a whole frame naming a 0-9-1 method.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    if dir == StreamDir::ToServer && data.first() == Some(&b'A') {
        let n = data.len().min(PROTOCOL_HEADER.len());
        return if data[..n] != PROTOCOL_HEADER[..n] {
            Probe::No
        } else if n < PROTOCOL_HEADER.len() {
            Probe::NeedMore
        } else {
            Probe::Yes(100)
        };
    }
    // Mid-connection: a whole method or content-header frame (heartbeats
    // alone are 8 bytes of little evidence), two frames in a row for more.
    let Some(h) = data.get(..FRAME_HEAD) else {
        return if data.first().is_none_or(|t| matches!(*t, FRAME_METHOD | FRAME_HEADER)) {
            Probe::NeedMore
        } else {
            Probe::No
        };
    };
    if !matches!(h[0], FRAME_METHOD | FRAME_HEADER) {
        return Probe::No;
    }
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
    match frame_at(data, MAX_FRAME) {
        Some(end) if frame_at(&data[end..], MAX_FRAME).is_some() => Probe::Yes(85),
        Some(_) => Probe::Yes(70),
        // Wait for a small frame to complete; a big one cannot be judged.
        None if data.len() <= FRAME_HEAD + size as usize && size <= 4096 => Probe::NeedMore,
        None => Probe::No,
    }
}

/// AMQP 0-9-1. The registry entry.
pub struct Amqp;

impl super::registry::L7Protocol for Amqp {
    const NAME: &'static str = "amqp";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        port == 5672
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        Box::new(AmqpDecoder::new(cfg))
    }
}

#[derive(Debug)]
struct Pending {
    start_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    detail: AmqpDetail,
    partial: bool,
    /// Class and method ids of the request.
    req: (u16, u16),
}

impl Pending {
    fn new(start_ns: u64, wire: u64, channel: u16, req: (u16, u16)) -> Self {
        let detail = AmqpDetail {
            method: method_name(req.0, req.1).unwrap_or("unknown").to_string(),
            channel,
            ..Default::default()
        };
        Self { start_ns, request_bytes: wire, response_bytes: 0, detail, partial: false, req }
    }
}

/// A message whose content (header + body frames) is still arriving.
#[derive(Debug)]
struct Content {
    p: Pending,
    body_size: Option<u64>,
    got: u64,
    /// Content bytes count as response bytes (basic.get-ok), else request bytes.
    is_response: bool,
}

#[derive(Debug, Default)]
struct Chan {
    sync: VecDeque<Pending>,
    confirm: bool,
    /// Publisher-confirm sequence number of the next publish (from 1).
    next_seq: u64,
    /// Publishes awaiting their confirm, by sequence number (increasing).
    unconfirmed: VecDeque<Pending>,
    /// Per direction (`StreamDir::index`).
    content: [Option<Content>; 2],
    /// (delivery tag, exchange, routing key) of recent deliveries and get-oks.
    delivered: VecDeque<(u64, Option<String>, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Head,
    Payload,
    End,
    Lost,
}

struct DirRx {
    state: Rx,
    head: [u8; 8],
    head_n: usize,
    ftype: u8,
    channel: u16,
    size: u32,
    got: u32,
    /// Method/header payload (bounded); body payloads are only counted.
    buf: Vec<u8>,
    /// Payload bytes missing from `buf` (lost or beyond the bound).
    cut: bool,
    start_ns: u64,
    resync: Resync,
}

impl DirRx {
    fn new() -> Self {
        Self {
            state: Rx::Head,
            head: [0; 8],
            head_n: 0,
            ftype: 0,
            channel: 0,
            size: 0,
            got: 0,
            buf: Vec::new(),
            cut: false,
            start_ns: 0,
            resync: Resync::default(),
        }
    }
}

pub struct AmqpDecoder {
    rx: [DirRx; 2],
    chans: HashMap<u16, Chan>,
    consumers: HashMap<String, String>,
    /// Publishes awaiting a confirm, all channels.
    unconfirmed: usize,
    max_pending: usize,
    max_buf: usize,
    mechanism: Option<String>,
}

impl AmqpDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(), DirRx::new()],
            chans: HashMap::new(),
            consumers: HashMap::new(),
            unconfirmed: 0,
            max_pending: cfg.max_pending_per_conn.max(1),
            max_buf: cfg.max_buffer_per_dir.max(256),
            mechanism: None,
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, data: &[u8], out: &mut Emit) {
        // Resynchronising hands back kept bytes to re-read: a loop, not recursion.
        let mut again = self.feed_slice(dir, ts, data, out);
        while let Some((buf, at)) = again {
            again = self.feed_slice(dir, ts, &buf[at..], out);
        }
    }

    fn lose(&mut self, dir: StreamDir, carry: &[u8], ts: u64, out: &mut Emit) {
        let rx = &mut self.rx[dir.index()];
        rx.state = Rx::Lost;
        rx.head_n = 0;
        rx.resync.restart(carry);
        // Content frames of messages in flight may have been in the lost
        // bytes: those messages end here, marked partial.
        let d = dir.index();
        let mut done = Vec::new();
        for (ch, c) in self.chans.iter_mut() {
            if let Some(mut content) = c.content[d].take() {
                content.p.partial = true;
                done.push((*ch, content));
            }
        }
        done.sort_by_key(|(_, c)| c.p.start_ns);
        for (ch, c) in done {
            self.content_done(dir, ch, c, ts, out);
        }
    }

    fn feed_slice(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) -> Option<(Vec<u8>, usize)> {
        let d = dir.index();
        while !data.is_empty() {
            let rx = &mut self.rx[d];
            match rx.state {
                Rx::Head => {
                    if rx.head_n == 0 {
                        rx.start_ns = ts;
                    }
                    let first = if rx.head_n > 0 { rx.head[0] } else { data[0] };
                    let need = if first == b'A' { PROTOCOL_HEADER.len() } else { FRAME_HEAD };
                    let n = (need - rx.head_n).min(data.len());
                    rx.head[rx.head_n..rx.head_n + n].copy_from_slice(&data[..n]);
                    rx.head_n += n;
                    data = &data[n..];
                    if rx.head_n < need {
                        continue;
                    }
                    rx.head_n = 0;
                    let h = rx.head;
                    if need == PROTOCOL_HEADER.len() {
                        // The client's protocol header, or the server's
                        // answer to an unsupported one: no exchange.
                        if &h[..4] != b"AMQP" {
                            PARSE_ERRORS.inc();
                            self.lose(dir, &h[1..], ts, out);
                        }
                        continue;
                    }
                    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
                    let known = matches!(
                        h[0],
                        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT | FRAME_HEARTBEAT_OLD
                    );
                    if !known || size > MAX_FRAME {
                        PARSE_ERRORS.inc();
                        self.lose(dir, &h[1..FRAME_HEAD], ts, out);
                        continue;
                    }
                    rx.ftype = h[0];
                    rx.channel = u16::from_be_bytes([h[1], h[2]]);
                    rx.size = size;
                    rx.got = 0;
                    rx.buf.clear();
                    rx.cut = false;
                    rx.state = if size == 0 { Rx::End } else { Rx::Payload };
                }
                Rx::Payload => {
                    let n = ((rx.size - rx.got) as usize).min(data.len());
                    if rx.ftype != FRAME_BODY && !rx.cut {
                        let room = self.max_buf.saturating_sub(rx.buf.len()).min(n);
                        rx.buf.extend_from_slice(&data[..room]);
                        rx.cut = room < n;
                    }
                    rx.got += n as u32;
                    data = &data[n..];
                    if rx.got == rx.size {
                        rx.state = Rx::End;
                    }
                }
                Rx::End => {
                    let b = data[0];
                    data = &data[1..];
                    if b != FRAME_END {
                        PARSE_ERRORS.inc();
                        self.lose(dir, &[b], ts, out);
                        continue;
                    }
                    self.end_frame(dir, ts, out);
                }
                Rx::Lost => {
                    let found = rx.resync.push(data, self.max_buf, &RESYNC_SKIPPED, |b| {
                        (0..b.len()).find(|&i| frame_at(&b[i..], MAX_FRAME).is_some())
                    });
                    if found.is_some() {
                        rx.state = Rx::Head;
                        rx.head_n = 0;
                    }
                    return found;
                }
            }
        }
        None
    }

    /// The current frame is whole (its end byte read, or lost in a gap that
    /// ended exactly there).
    fn end_frame(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let rx = &mut self.rx[dir.index()];
        rx.state = Rx::Head;
        let buf = std::mem::take(&mut rx.buf);
        let (ftype, ch, size, cut, start) = (rx.ftype, rx.channel, rx.size, rx.cut, rx.start_ns);
        self.frame(dir, ts, ftype, ch, size, &buf, cut, start, out);
        // Reuse the allocation.
        let rx = &mut self.rx[dir.index()];
        rx.buf = buf;
        rx.buf.clear();
    }

    fn chan(&mut self, ch: u16) -> Option<&mut Chan> {
        if !self.chans.contains_key(&ch) && self.chans.len() >= MAX_CHANNELS {
            EVICTED.inc();
            return None;
        }
        Some(self.chans.entry(ch).or_default())
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        dir: StreamDir,
        ts: u64,
        ftype: u8,
        ch: u16,
        size: u32,
        payload: &[u8],
        cut: bool,
        start: u64,
        out: &mut Emit,
    ) {
        let wire = FRAME_HEAD as u64 + size as u64 + 1;
        let d = dir.index();
        match ftype {
            FRAME_METHOD => {
                let Some(p) = payload.get(..4) else {
                    PARSE_ERRORS.inc();
                    return;
                };
                let (class, id) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
                if method_name(class, id).is_none() {
                    PARSE_ERRORS.inc();
                    return;
                }
                let Some(args) = parse_args(class, id, &payload[4..]) else {
                    if !cut {
                        PARSE_ERRORS.inc();
                    }
                    return;
                };
                // A method on a channel ends any content still arriving there.
                if let Some(c) = self.chans.get_mut(&ch).and_then(|c| c.content[d].take()) {
                    let mut c = c;
                    c.p.partial = true;
                    self.content_done(dir, ch, c, ts, out);
                }
                match dir {
                    StreamDir::ToServer => self.client_method(ts, ch, (class, id), args, start, wire, out),
                    StreamDir::ToClient => self.server_method(ts, ch, (class, id), args, start, wire, out),
                }
            }
            FRAME_HEADER => {
                let Some(c) = self.chans.get_mut(&ch).and_then(|c| c.content[d].as_mut()) else { return };
                add_bytes(c, wire);
                match payload.get(4..12) {
                    Some(b) => c.body_size = Some(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
                    None => c.p.partial = true,
                }
                self.content_progress(dir, ch, ts, out);
            }
            FRAME_BODY => {
                let Some(c) = self.chans.get_mut(&ch).and_then(|c| c.content[d].as_mut()) else { return };
                add_bytes(c, wire);
                c.got += size as u64;
                self.content_progress(dir, ch, ts, out);
            }
            // Heartbeats.
            _ => {}
        }
    }

    fn content_progress(&mut self, dir: StreamDir, ch: u16, ts: u64, out: &mut Emit) {
        let d = dir.index();
        let Some(c) = self.chans.get_mut(&ch) else { return };
        let done = matches!(&c.content[d], Some(x) if x.body_size.is_some_and(|n| x.got >= n));
        if done {
            let content = c.content[d].take().expect("checked above");
            self.content_done(dir, ch, content, ts, out);
        }
    }

    /// A message's content has arrived (or will not: partial).
    fn content_done(&mut self, dir: StreamDir, ch: u16, c: Content, ts: u64, out: &mut Emit) {
        let mut p = c.p;
        p.detail.body_size = c.body_size;
        if dir == StreamDir::ToClient {
            // basic.deliver, basic.get-ok, basic.return: remember where the
            // tag came from, for the ack that settles it.
            if let (Some(tag), Some(chan)) = (p.detail.delivery_tag, self.chans.get_mut(&ch)) {
                if p.req != (BASIC, 50) {
                    if chan.delivered.len() >= MAX_DELIVERED {
                        chan.delivered.pop_front();
                    }
                    chan.delivered.push_back((tag, p.detail.exchange.clone(), p.detail.routing_key.clone()));
                }
            }
            emit(p, ts, Outcome::Complete, out);
            return;
        }
        // basic.publish.
        let max = self.max_pending;
        let Some(chan) = self.chans.get_mut(&ch) else {
            emit(p, ts, Outcome::Complete, out);
            return;
        };
        if !chan.confirm {
            emit(p, ts, Outcome::Complete, out);
            return;
        }
        p.detail.delivery_tag = Some(chan.next_seq);
        chan.next_seq += 1;
        let mut evicted = None;
        if self.unconfirmed >= max {
            evicted = chan.unconfirmed.pop_front();
        }
        chan.unconfirmed.push_back(p);
        match evicted {
            Some(old) => {
                EVICTED.inc();
                emit(old, ts, Outcome::Timeout, out);
            }
            None => self.unconfirmed += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_method(&mut self, ts: u64, ch: u16, m: (u16, u16), a: Args, start: u64, wire: u64, out: &mut Emit) {
        let mut p = Pending::new(start, wire, ch, m);
        fill(&mut p.detail, &a);
        match m {
            (CONNECTION, 11) => self.mechanism = a.mechanism,
            (CONNECTION, 40) => p.detail.mechanism = self.mechanism.clone(),
            (BASIC, 40) => {
                let Some(chan) = self.chan(ch) else { return };
                chan.content[StreamDir::ToServer.index()] =
                    Some(Content { p, body_size: None, got: 0, is_response: false });
                return;
            }
            (BASIC, 80 | 90 | 120) => {
                if let (Some(tag), Some(chan)) = (a.delivery_tag, self.chans.get_mut(&ch)) {
                    if let Some((_, ex, rk)) = chan.delivered.iter().find(|(t, _, _)| *t == tag) {
                        p.detail.exchange = ex.clone();
                        p.detail.routing_key = rk.clone();
                    }
                    chan.delivered.retain(|(t, _, _)| if a.multiple { *t > tag } else { *t != tag });
                }
                emit(p, ts, Outcome::Complete, out);
                return;
            }
            _ => {}
        }
        if !client_sync(m.0, m.1) {
            return;
        }
        if m == (CHANNEL, 10) {
            // A channel (re)opened: whatever was left of an earlier use is gone.
            self.close_channel(ch, None, ts, out);
        }
        let Some(chan) = self.chan(ch) else { return };
        if m == (CONFIRM, 10) {
            chan.confirm = true;
            chan.next_seq = 1;
        }
        if a.no_wait {
            emit(p, ts, Outcome::Complete, out);
            return;
        }
        let evicted = if chan.sync.len() >= MAX_SYNC { chan.sync.pop_front() } else { None };
        chan.sync.push_back(p);
        if let Some(old) = evicted {
            EVICTED.inc();
            emit(old, ts, Outcome::Timeout, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server_method(&mut self, ts: u64, ch: u16, m: (u16, u16), a: Args, start: u64, wire: u64, out: &mut Emit) {
        match m {
            (CONNECTION, 10 | 20 | 30) | (CONNECTION, 60 | 61) | (BASIC, 30) => {}
            (CONNECTION, 50) | (CHANNEL, 40) => self.server_close(ts, ch, m, a, start, wire, out),
            (BASIC, 60 | 50) => {
                let mut p = Pending::new(start, wire, ch, m);
                fill(&mut p.detail, &a);
                if let Some(q) = a.consumer_tag.as_ref().and_then(|t| self.consumers.get(t)) {
                    p.detail.queue = Some(q.clone());
                }
                let Some(chan) = self.chan(ch) else { return };
                chan.content[StreamDir::ToClient.index()] =
                    Some(Content { p, body_size: None, got: 0, is_response: false });
            }
            (BASIC, 80 | 120) => self.confirm(ts, ch, m, &a, wire, out),
            _ => {
                let Some(mut p) = self.chans.get_mut(&ch).and_then(|c| take_answered(c, m, ts, out)) else {
                    UNMATCHED.inc();
                    return;
                };
                p.response_bytes += wire;
                p.detail.response = method_name(m.0, m.1).map(str::to_string);
                match m {
                    (QUEUE, 11) => {
                        p.detail.queue = a.queue.or(p.detail.queue);
                        p.detail.message_count = a.message_count;
                    }
                    (QUEUE, 31 | 41) => p.detail.message_count = a.message_count,
                    (BASIC, 21) => {
                        if let (Some(tag), Some(q)) = (a.consumer_tag.clone(), p.detail.queue.clone()) {
                            if self.consumers.len() < MAX_CONSUMERS || self.consumers.contains_key(&tag) {
                                self.consumers.insert(tag, q);
                            }
                        }
                        p.detail.consumer_tag = a.consumer_tag;
                    }
                    (BASIC, 31) => {
                        if let Some(t) = &a.consumer_tag {
                            self.consumers.remove(t);
                        }
                    }
                    (BASIC, 71) => {
                        fill(&mut p.detail, &a);
                        let Some(chan) = self.chans.get_mut(&ch) else { return };
                        chan.content[StreamDir::ToClient.index()] =
                            Some(Content { p, body_size: None, got: 0, is_response: true });
                        return;
                    }
                    _ => {}
                }
                emit(p, ts, Outcome::Complete, out);
                if m == (CHANNEL, 41) {
                    self.close_channel(ch, None, ts, out);
                }
            }
        }
    }

    /// Publisher confirms: basic.ack/basic.nack from the broker.
    fn confirm(&mut self, ts: u64, ch: u16, m: (u16, u16), a: &Args, wire: u64, out: &mut Emit) {
        let Some(chan) = self.chans.get_mut(&ch).filter(|c| c.confirm) else {
            UNMATCHED.inc();
            return;
        };
        let tag = a.delivery_tag.unwrap_or(0);
        let mut done = Vec::new();
        if a.multiple {
            // Tag 0 with multiple: everything outstanding.
            while let Some(p) = chan.unconfirmed.front() {
                if tag != 0 && p.detail.delivery_tag.is_some_and(|t| t > tag) {
                    break;
                }
                done.push(chan.unconfirmed.pop_front().expect("front checked"));
            }
        } else if let Some(i) = chan.unconfirmed.iter().position(|p| p.detail.delivery_tag == Some(tag)) {
            done.extend(chan.unconfirmed.remove(i));
        }
        if done.is_empty() {
            UNMATCHED.inc();
            return;
        }
        self.unconfirmed = self.unconfirmed.saturating_sub(done.len());
        let name = method_name(m.0, m.1).map(str::to_string);
        for (i, mut p) in done.into_iter().enumerate() {
            p.detail.response = name.clone();
            p.detail.multiple = a.multiple;
            // The confirm frame's size is counted once.
            if i == 0 {
                p.response_bytes += wire;
            }
            emit(p, ts, Outcome::Complete, out);
        }
    }

    /// channel.close / connection.close sent by the broker.
    #[allow(clippy::too_many_arguments)]
    fn server_close(&mut self, ts: u64, ch: u16, m: (u16, u16), a: Args, start: u64, wire: u64, out: &mut Emit) {
        let close = (m, a.reply_code, a.reply_text.clone(), wire);
        let failed = a.failed_method;
        let chans: Vec<u16> = if m.0 == CONNECTION {
            let mut v: Vec<u16> = self.chans.keys().copied().collect();
            v.sort_unstable();
            v
        } else {
            vec![ch]
        };
        // The method the close names answers it; else the oldest pending one.
        let mut target = None;
        for c in &chans {
            if let Some(chan) = self.chans.get_mut(c) {
                if let Some(i) = chan.sync.iter().position(|p| Some(p.req) == failed) {
                    target = chan.sync.remove(i);
                    break;
                }
            }
        }
        if target.is_none() {
            target = chans.iter().find_map(|c| self.chans.get_mut(c).and_then(|x| x.sync.pop_front()));
        }
        if target.is_none() && failed == Some((BASIC, 40)) {
            target = chans.iter().find_map(|c| self.chans.get_mut(c).and_then(|x| x.unconfirmed.pop_back()));
            if target.is_some() {
                self.unconfirmed = self.unconfirmed.saturating_sub(1);
            }
        }
        let mut p = target.unwrap_or_else(|| Pending::new(start, wire, ch, m));
        answer_with_close(&mut p, &close);
        emit(p, ts, Outcome::Complete, out);
        for c in chans {
            self.close_channel(c, Some(&close), ts, out);
        }
    }

    /// Forget a channel. With `close`, what was still pending on it ends
    /// answered by that close; without, it ends unanswered.
    fn close_channel(&mut self, ch: u16, close: Option<&Close>, ts: u64, out: &mut Emit) {
        let Some(mut chan) = self.chans.remove(&ch) else { return };
        self.unconfirmed = self.unconfirmed.saturating_sub(chan.unconfirmed.len());
        let mut left: Vec<Pending> = chan.sync.drain(..).chain(chan.unconfirmed.drain(..)).collect();
        for c in chan.content.iter_mut() {
            if let Some(c) = c.take() {
                let mut p = c.p;
                p.detail.body_size = c.body_size;
                p.partial = true;
                left.push(p);
            }
        }
        left.sort_by_key(|p| p.start_ns);
        for mut p in left {
            match close {
                Some(close) => {
                    answer_with_close(&mut p, close);
                    emit(p, ts, Outcome::Complete, out);
                }
                None => emit(p, ts, Outcome::Timeout, out),
            }
        }
    }

    fn drain(&mut self) -> Vec<(Pending, bool)> {
        let mut v = Vec::new();
        for (_, mut c) in self.chans.drain() {
            v.extend(c.sync.drain(..).map(|p| (p, false)));
            v.extend(c.unconfirmed.drain(..).map(|p| (p, false)));
            for x in c.content.iter_mut() {
                if let Some(x) = x.take() {
                    let mut p = x.p;
                    p.detail.body_size = x.body_size;
                    // The message was cut off by the end of the connection.
                    p.partial = true;
                    v.push((p, true));
                }
            }
        }
        self.unconfirmed = 0;
        v.sort_by_key(|(p, _)| (p.start_ns, p.detail.channel));
        v
    }
}

/// (close method, reply code, reply text, close frame size).
type Close = ((u16, u16), Option<u16>, Option<String>, u64);

fn answer_with_close(p: &mut Pending, close: &Close) {
    let (m, code, text, wire) = close;
    p.detail.reply_code = *code;
    p.detail.reply_text = text.clone();
    // A close nothing was pending for is its own exchange, not an answer.
    if p.req != *m {
        p.detail.response = method_name(m.0, m.1).map(str::to_string);
        p.response_bytes += wire;
    }
}

fn add_bytes(c: &mut Content, wire: u64) {
    if c.is_response {
        c.p.response_bytes += wire;
    } else {
        c.p.request_bytes += wire;
    }
}

/// Copy the method arguments an exchange shows.
fn fill(d: &mut AmqpDetail, a: &Args) {
    let set = |dst: &mut Option<String>, src: &Option<String>| {
        if src.is_some() {
            dst.clone_from(src);
        }
    };
    set(&mut d.exchange, &a.exchange);
    set(&mut d.routing_key, &a.routing_key);
    set(&mut d.queue, &a.queue);
    set(&mut d.consumer_tag, &a.consumer_tag);
    set(&mut d.vhost, &a.vhost);
    set(&mut d.reply_text, &a.reply_text);
    d.delivery_tag = a.delivery_tag.or(d.delivery_tag);
    d.reply_code = a.reply_code.or(d.reply_code);
    d.message_count = a.message_count.or(d.message_count);
    d.multiple |= a.multiple;
    d.redelivered |= a.redelivered;
}

/// The pending synchronous method `m` answers. Methods queued before it
/// that it skips were answered in bytes never seen: they end unanswered.
fn take_answered(c: &mut Chan, m: (u16, u16), ts: u64, out: &mut Emit) -> Option<Pending> {
    let i = c.sync.iter().position(|p| answers(p.req, m.0, m.1))?;
    for old in c.sync.drain(..i).collect::<Vec<_>>() {
        emit(old, ts, Outcome::Timeout, out);
    }
    c.sync.pop_front()
}

fn emit(p: Pending, end_ns: u64, outcome: Outcome, out: &mut Emit) {
    out.push(Exchange {
        conn: out.conn.clone(),
        wire: Default::default(),
        protocol: Protocol::Amqp,
        start_ns: p.start_ns,
        end_ns: end_ns.max(p.start_ns),
        request_bytes: p.request_bytes,
        response_bytes: p.response_bytes,
        outcome,
        partial: p.partial,
        detail: Detail::Amqp(p.detail),
    });
}

impl ConnDecoder for AmqpDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if len == 0 {
            return;
        }
        let rx = &mut self.rx[dir.index()];
        let left = (rx.size - rx.got) as u64;
        match rx.state {
            // The gap ends with the frame (a snap length cutting a segment
            // that ends with a frame, the usual case): the frame is whole but
            // for the lost bytes, and the next segment starts a new frame.
            Rx::Payload | Rx::End if len == left + 1 => {
                if rx.ftype != FRAME_BODY && left > 0 {
                    rx.cut = true;
                }
                rx.got = rx.size;
                self.end_frame(dir, ts_ns, out);
            }
            Rx::Payload if len <= left => {
                // Inside one frame: the framing survives. Lost body bytes
                // only cost the body (never kept); a method or header frame
                // with a hole may not parse.
                rx.got += len as u32;
                if rx.ftype != FRAME_BODY {
                    rx.cut = true;
                }
                if rx.got == rx.size {
                    rx.state = Rx::End;
                }
            }
            _ => self.lose(dir, &[], ts_ns, out),
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let unanswered = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        for (p, content) in self.drain() {
            // A message whose content was still arriving was sent (in part);
            // a method still waiting for its answer was not answered.
            let outcome = if content { Outcome::Complete } else { unanswered };
            emit(p, ts_ns, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let mut old = Vec::new();
        let mut gone = 0;
        for c in self.chans.values_mut() {
            while c.sync.front().is_some_and(|p| p.start_ns < deadline_ns) {
                old.extend(c.sync.pop_front());
            }
            while c.unconfirmed.front().is_some_and(|p| p.start_ns < deadline_ns) {
                old.extend(c.unconfirmed.pop_front());
                gone += 1;
            }
        }
        self.unconfirmed = self.unconfirmed.saturating_sub(gone);
        old.sort_by_key(|p| p.start_ns);
        for p in old {
            let end = p.start_ns;
            emit(p, end, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests;
