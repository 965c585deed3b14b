//! Chooses a decoder per connection and routes flow events to it.
//!
//! Until the probes agree on a protocol, the first bytes of each direction are
//! kept (bounded by [`DETECT_BYTES`] per direction) together with a log of the
//! events that carried them, so the chosen decoder later sees the connection
//! from its first byte, gaps included.
use super::detect::{self, Verdict};
use super::{ConnDecoder, DecodeConfig, Emit};
use crate::flow::{CloseReason, Conn, StreamDir, StreamSink, Transport};
use crate::protocol::exchange::{Exchange, Protocol};
use crate::stats::{counter, Counter};
/// Keyed by connection id: a fast hasher, not SipHash (no attacker-chosen keys).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::LazyLock;

/// Bytes per direction inspected before a TCP flow is declared undetected.
pub const DETECT_BYTES: usize = 4096;
/// Datagrams inspected before a UDP flow is declared undetected.
pub const DETECT_DATAGRAMS: u32 = 4;

static UNDETECTED_TCP: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.undetected", &[("network.transport", "tcp")]));
static UNDETECTED_UDP: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.undetected", &[("network.transport", "udp")]));
static UNDETECTED_ICMP: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.undetected", &[("network.transport", "icmp")]));

/// TCP flows whose first bytes are a TLS handshake record: left undecoded
/// (also counted in `cnflow.protocol.undetected`).
static TLS_CIPHERTEXT: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.protocol.tls_ciphertext_flows", &[]));

/// A TLS handshake record (content type 22, version 3.0–3.4) carrying a
/// ClientHello (`msg` 1, client→server) or ServerHello (2, server→client).
fn is_tls_handshake(b: &[u8], msg: u8) -> bool {
    b.len() >= 6 && b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04 && b[5] == msg
}

/// `cnflow.protocol.detected{protocol}`, for every registry entry that is
/// detected (gRPC is a label the HTTP/2 decoder gives, never detected).
fn count_detected(p: Protocol) {
    static C: LazyLock<Vec<Option<Counter>>> = LazyLock::new(|| {
        Protocol::ALL
            .iter()
            .map(|p| {
                (!p.transports().is_empty()).then(|| counter("cnflow.protocol.detected", &[("protocol", p.name())]))
            })
            .collect()
    });
    if let Some(c) = &C[p as usize] {
        c.inc();
    }
}

/// Event kept while detection is undecided, replayed to the decoder afterwards.
enum Held {
    Data(StreamDir, u64, Vec<u8>),
    Gap(StreamDir, u64, u64),
}

#[derive(Default)]
struct Detecting {
    held: Vec<Held>,
    held_bytes: usize,
    /// Contiguous bytes since the last gap, per direction (index by `StreamDir::index`): what the probes see.
    probe_buf: [Vec<u8>; 2],
    datagrams: u32,
}

enum State {
    Detecting(Detecting),
    Decoding(Box<dyn ConnDecoder>),
    Undetected,
}

struct Entry {
    conn: Conn,
    state: State,
    /// TCP only: where each direction's messages start on the wire.
    wire: Option<Box<[DirWire; 2]>>,
}

/// Chunk starts remembered per direction (bounded): enough for the requests
/// a connection has in flight; older pending requests get no sequence number.
const WIRE_CHUNKS: usize = 32;

/// Sequence numbers of one TCP direction, to give exchanges the seq of their
/// first request and response byte without decoders tracking offsets.
///
/// Decoders report when a message started (the time of the data event that
/// carried its first byte) and its size on the wire. Each data event's
/// stream offset is remembered with its time; the first message starting in
/// an event begins at the event's offset, and a message following another in
/// order (pipelining) begins where the previous one ended (the cursor). Both
/// depend only on the byte stream and the message sizes, except the event
/// boundaries, which a client and a server capture can see differently
/// only when several messages share one segment (there the cursor decides).
#[derive(Default)]
struct DirWire {
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    /// Stream offset of the next byte.
    off: u64,
    /// (time, stream offset) of recent data events, oldest first.
    chunks: std::collections::VecDeque<(u64, u64)>,
    /// Offset after the last message attributed (in-order continuation).
    cursor: u64,
    /// Offset given to the last message attributed.
    last: Option<u64>,
    /// An event came with an earlier time than the one before it (for good):
    /// the searches below then scan from the front, else the times are in
    /// order and they look back from the newest events only. A long-lived
    /// connection keeps 32 events, and the scans from the front ran over
    /// all of them for every exchange.
    unordered: bool,
}

impl DirWire {
    fn data(&mut self, ts: u64, len: u64) {
        if self.chunks.len() >= WIRE_CHUNKS {
            self.chunks.pop_front();
        }
        if self.chunks.back().is_some_and(|&(t, _)| ts < t) {
            self.unordered = true;
        }
        self.chunks.push_back((ts, self.off));
        self.off += len;
    }

    fn seq(&self, off: u64) -> Option<u32> {
        self.base.map(|b| b.wrapping_add(off as u32))
    }

    /// The data events around `ts`: (offset of the earliest event at the
    /// latest time not after `ts`, offset where the events at that time end).
    fn events_at(&self, ts: u64) -> Option<(u64, u64)> {
        let i = self.chunks.iter().rposition(|(t, _)| *t <= ts)?;
        let t = self.chunks[i].0;
        let first = if self.unordered {
            self.chunks.iter().position(|(x, _)| *x == t).unwrap_or(i)
        } else {
            // In order: the events at the last one's time not after `ts`
            // are the ones just before it.
            let mut first = i;
            while first > 0 && self.chunks[first - 1].0 == t {
                first -= 1;
            }
            first
        };
        Some((self.chunks[first].1, self.chunks.get(i + 1).map_or(self.off, |c| c.1)))
    }

    /// Offset of a message whose first byte came in the event at `ts`, `len`
    /// bytes long: the first message of those events begins at their offset,
    /// one following another in them begins where it ended.
    fn message_at(&mut self, ts: u64, len: u64) -> Option<u64> {
        let (start, end) = self.events_at(ts)?;
        let at = if (start..end).contains(&self.cursor) { self.cursor } else { start };
        self.cursor = at + len;
        Some(at)
    }

    /// Offset of a request that started at `ts` and is `len` bytes long.
    fn request(&mut self, ts: u64, len: u64) -> Option<u64> {
        let at = self.message_at(ts, len)?;
        // Two messages given one offset (an exchange the server started,
        // sizes that do not add up): no key rather than a shared one, which
        // could join the wrong halves.
        if self.last.replace(at) == Some(at) {
            return None;
        }
        Some(at)
    }

    /// Offset of a response to a request sent at `req_ts`, `len` bytes long.
    fn response(&mut self, req_ts: u64, len: u64) -> Option<u64> {
        let start = if self.unordered {
            self.chunks.iter().find(|(t, _)| *t >= req_ts)?.1
        } else {
            // In order: the events from `req_ts` on are the last ones
            // (usually a few, since the request is recent).
            let mut j = self.chunks.len();
            while j > 0 && self.chunks[j - 1].0 >= req_ts {
                j -= 1;
            }
            self.chunks.get(j)?.1
        };
        let at = if (start..self.off).contains(&self.cursor) { self.cursor } else { start };
        self.cursor = at + len;
        Some(at)
    }
}

/// Give the exchanges a decoder just emitted their TCP sequence numbers.
fn annotate(wire: &mut Option<Box<[DirWire; 2]>>, new: &mut [Exchange]) {
    let Some(w) = wire else { return };
    let [req, resp] = &mut **w;
    for ex in new {
        if let Some(at) = req.request(ex.start_ns, ex.request_bytes) {
            ex.wire.request_seq = req.seq(at);
        }
        if ex.outcome == crate::protocol::exchange::Outcome::Complete && ex.response_bytes > 0 {
            let at = match ex.wire.response_ts {
                // Located by its own time: bytes the server sent before the
                // request reached it (HTTP/2's SETTINGS) come after the
                // request in a client's capture but before it in the
                // server's, and would otherwise shift the client's key.
                Some(ts) => resp.message_at(ts, ex.response_bytes),
                None => resp.response(ex.start_ns, ex.response_bytes),
            };
            if let Some(at) = at {
                ex.wire.response_seq = resp.seq(at);
            }
        }
    }
}

fn new_entry(conn: &Conn) -> Entry {
    let wire = (conn.transport == Transport::Tcp).then(Box::default);
    Entry { conn: conn.clone(), state: State::Detecting(Detecting::default()), wire }
}

pub struct Dispatcher {
    pub cfg: DecodeConfig,
    conns: HashMap<u64, Entry>,
    /// Exchanges produced since the last [`Dispatcher::take`].
    pub out: Vec<Exchange>,
}

fn count_undetected(t: Transport) {
    match t {
        Transport::Tcp => UNDETECTED_TCP.inc(),
        Transport::Udp => UNDETECTED_UDP.inc(),
        Transport::Icmp => UNDETECTED_ICMP.inc(),
    }
}

impl Dispatcher {
    pub fn new(cfg: DecodeConfig) -> Self {
        Self { cfg, conns: HashMap::default(), out: Vec::new() }
    }
    pub fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }
    /// Give back a `Vec` from [`Dispatcher::take`] once its exchanges are
    /// used: the next batch's exchanges go into its capacity instead of a
    /// `Vec` grown from empty for every batch (bounded: a burst's large
    /// buffer is not kept).
    pub fn recycle(&mut self, mut v: Vec<Exchange>) {
        const KEEP_MAX: usize = 4096;
        if self.out.is_empty() && v.capacity() > self.out.capacity() && v.capacity() <= KEEP_MAX {
            v.clear();
            self.out = v;
        }
    }
    /// Connections currently tracked (detecting, decoding or undetected).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }
    /// Bytes held for detection across all connections (bounded per connection).
    pub fn held_bytes(&self) -> usize {
        self.conns
            .values()
            .map(|e| match &e.state {
                State::Detecting(d) => d.held_bytes + d.probe_buf.iter().map(Vec::len).sum::<usize>(),
                _ => 0,
            })
            .sum()
    }
    /// The protocol chosen for a connection, if decided.
    pub fn is_decoding(&self, conn_id: u64) -> Option<bool> {
        self.conns.get(&conn_id).map(|e| matches!(e.state, State::Decoding(_)))
    }

    /// Emit requests older than the request timeout as Timeout exchanges.
    pub fn expire(&mut self, now_ns: u64) {
        let deadline = now_ns.saturating_sub(self.cfg.request_timeout_ns);
        for e in self.conns.values_mut() {
            if let State::Decoding(d) = &mut e.state {
                let from = self.out.len();
                d.expire(deadline, &mut Emit { conn: &e.conn, out: &mut self.out });
                annotate(&mut e.wire, &mut self.out[from..]);
            }
        }
    }

    fn start_decoder(cfg: &DecodeConfig, e: &mut Entry, proto: Protocol, out: &mut Vec<Exchange>) {
        count_detected(proto);
        let mut dec = proto.new_decoder(cfg);
        if let State::Detecting(d) = std::mem::replace(&mut e.state, State::Undetected) {
            let mut emit = Emit { conn: &e.conn, out };
            for h in d.held {
                match h {
                    Held::Data(dir, ts, bytes) => dec.on_data(dir, ts, &bytes, &mut emit),
                    Held::Gap(dir, ts, len) => dec.on_gap(dir, ts, len, &mut emit),
                }
            }
        }
        e.state = State::Decoding(dec);
    }
}

impl StreamSink for Dispatcher {
    fn on_data(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let cfg = self.cfg.clone();
        let Self { conns, out, .. } = self;
        let e = conns.entry(conn.id).or_insert_with(|| new_entry(conn));
        if let Some(w) = &mut e.wire {
            w[dir.index()].data(ts_ns, data.len() as u64);
        }
        let from = out.len();
        let d = match &mut e.state {
            State::Decoding(dec) => {
                dec.on_data(dir, ts_ns, data, &mut Emit { conn: &e.conn, out });
                annotate(&mut e.wire, &mut out[from..]);
                return;
            }
            State::Undetected => return,
            State::Detecting(d) => d,
        };
        let buf = &mut d.probe_buf[dir.index()];
        let take = data.len().min(DETECT_BYTES.saturating_sub(buf.len()));
        buf.extend_from_slice(&data[..take]);
        d.held.push(Held::Data(dir, ts_ns, data[..take].to_vec()));
        d.held_bytes += take;
        let full = take < data.len()
            || d.probe_buf.iter().any(|b| b.len() >= DETECT_BYTES)
            || d.held_bytes >= 2 * DETECT_BYTES;
        if is_tls_handshake(&d.probe_buf[0], 1) || is_tls_handshake(&d.probe_buf[1], 2) {
            // Ciphertext: decoding it could only produce garbage. The plaintext
            // of OpenSSL processes comes from the TLS uprobes as its own flow.
            TLS_CIPHERTEXT.inc();
            count_undetected(e.conn.transport);
            e.state = State::Undetected;
            return;
        }
        match detect::detect_stream(&e.conn, &d.probe_buf[0], &d.probe_buf[1], full) {
            Verdict::Detected(p) => {
                Self::start_decoder(&cfg, e, p, out);
                if take < data.len() {
                    if let State::Decoding(dec) = &mut e.state {
                        dec.on_data(dir, ts_ns, &data[take..], &mut Emit { conn: &e.conn, out });
                    }
                }
                annotate(&mut e.wire, &mut out[from..]);
            }
            Verdict::Wait if !full => {}
            Verdict::Wait | Verdict::Unknown => {
                count_undetected(e.conn.transport);
                e.state = State::Undetected;
            }
        }
    }

    fn on_gap(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, len: u64) {
        let Self { conns, out, .. } = self;
        let e = conns.entry(conn.id).or_insert_with(|| new_entry(conn));
        if let Some(w) = &mut e.wire {
            w[dir.index()].off += len;
        }
        match &mut e.state {
            State::Decoding(dec) => {
                let from = out.len();
                dec.on_gap(dir, ts_ns, len, &mut Emit { conn: &e.conn, out });
                annotate(&mut e.wire, &mut out[from..]);
            }
            State::Undetected => {}
            State::Detecting(d) => {
                // Bytes before and after a gap are not contiguous: probe only what follows it.
                d.probe_buf[dir.index()].clear();
                if d.held.len() >= 64 {
                    count_undetected(e.conn.transport);
                    e.state = State::Undetected;
                } else {
                    d.held.push(Held::Gap(dir, ts_ns, len));
                }
            }
        }
    }

    fn on_datagram(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8], orig_len: u32) {
        let cfg = self.cfg.clone();
        let Self { conns, out, .. } = self;
        let e = conns.entry(conn.id).or_insert_with(|| new_entry(conn));
        if let State::Detecting(d) = &mut e.state {
            match detect::detect_datagram(&e.conn, dir, data) {
                Some(p) => Self::start_decoder(&cfg, e, p, out),
                None => {
                    d.datagrams += 1;
                    if d.datagrams >= DETECT_DATAGRAMS || e.conn.transport == Transport::Tcp {
                        count_undetected(e.conn.transport);
                        e.state = State::Undetected;
                    }
                }
            }
        }
        if let State::Decoding(dec) = &mut e.state {
            dec.on_datagram(dir, ts_ns, data, orig_len, &mut Emit { conn: &e.conn, out });
        }
    }

    fn on_stream_start(&mut self, conn: &Conn, dir: StreamDir, seq: u32) {
        let e = self.conns.entry(conn.id).or_insert_with(|| new_entry(conn));
        if let Some(w) = &mut e.wire {
            w[dir.index()].base = Some(seq);
        }
    }

    fn on_close(&mut self, conn: &Conn, ts_ns: u64, reason: CloseReason) {
        if let Some(mut e) = self.conns.remove(&conn.id) {
            match &mut e.state {
                State::Decoding(dec) => {
                    let from = self.out.len();
                    dec.on_close(ts_ns, reason, &mut Emit { conn: &e.conn, out: &mut self.out });
                    annotate(&mut e.wire, &mut self.out[from..]);
                }
                State::Detecting(d) => {
                    // Never decided: only a flow that carried data counts as undetected.
                    if d.held_bytes > 0 || d.datagrams > 0 {
                        count_undetected(e.conn.transport);
                    }
                }
                State::Undetected => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::conn;

    #[test]
    fn undetected_flow_is_counted_and_dropped() {
        let mut d = Dispatcher::new(DecodeConfig::default());
        let c = conn(Transport::Tcp, 4444);
        let before = UNDETECTED_TCP.get();
        // The start of a TLS ClientHello: no decoder claims it.
        d.on_data(
            &c,
            StreamDir::ToServer,
            1,
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5e\x12\x9a\x01\x77\x30\x00\x11\x22",
        );
        assert_eq!(d.is_decoding(c.id), Some(false));
        assert!(UNDETECTED_TCP.get() > before);
        assert!(TLS_CIPHERTEXT.get() > 0, "a ClientHello is recognised as TLS ciphertext");
        d.on_data(&c, StreamDir::ToServer, 2, &[0u8; 10000]);
        assert_eq!(d.held_bytes(), 0);
        d.on_close(&c, 3, CloseReason::Fin);
        assert_eq!(d.conn_count(), 0);
    }

    #[test]
    fn split_first_bytes_are_detected_and_replayed() {
        let mut d = Dispatcher::new(DecodeConfig::default());
        let c = conn(Transport::Tcp, 4444);
        d.on_data(&c, StreamDir::ToServer, 1, b"GE");
        assert_eq!(d.is_decoding(c.id), Some(false));
        d.on_data(&c, StreamDir::ToServer, 2, b"T /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(d.is_decoding(c.id), Some(true));
        d.on_data(&c, StreamDir::ToClient, 3, b"HTTP/1.1 204 No Content\r\n\r\n");
        let ex = d.take();
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].start_ns, ex[0].end_ns), (1, 3));
    }

    /// Sequence numbers of exchange `i`: (request, response).
    fn seqs(ex: &[Exchange]) -> Vec<(Option<u32>, Option<u32>)> {
        ex.iter().map(|e| (e.wire.request_seq, e.wire.response_seq)).collect()
    }

    #[test]
    fn keep_alive_exchanges_get_their_first_bytes_seq() {
        let mut d = Dispatcher::new(DecodeConfig::default());
        let c = conn(Transport::Tcp, 8080);
        d.on_stream_start(&c, StreamDir::ToServer, 1000);
        d.on_stream_start(&c, StreamDir::ToClient, u32::MAX - 10);
        let req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for i in 0..3u64 {
            d.on_data(&c, StreamDir::ToServer, 10 * i + 1, req);
            d.on_data(&c, StreamDir::ToClient, 10 * i + 2, resp);
        }
        let ex = d.take();
        let (q, r) = (req.len() as u32, resp.len() as u32);
        let rs = |i: u32| Some((u32::MAX - 10).wrapping_add(i * r));
        assert_eq!(seqs(&ex), vec![(Some(1000), rs(0)), (Some(1000 + q), rs(1)), (Some(1000 + 2 * q), rs(2))]);
    }

    #[test]
    fn pipelined_requests_in_one_segment_are_told_apart() {
        let mut d = Dispatcher::new(DecodeConfig::default());
        let c = conn(Transport::Tcp, 6379);
        d.on_stream_start(&c, StreamDir::ToServer, 5);
        d.on_stream_start(&c, StreamDir::ToClient, 70);
        let one = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let two = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        d.on_data(&c, StreamDir::ToServer, 1, &[&one[..], &two[..], &two[..]].concat());
        // The replies split differently from the requests.
        d.on_data(&c, StreamDir::ToClient, 2, b"+OK\r\n$1\r");
        d.on_data(&c, StreamDir::ToClient, 3, b"\nv\r\n$1\r\nv\r\n");
        let ex = d.take();
        let (a, b) = (one.len() as u32, two.len() as u32);
        assert_eq!(seqs(&ex), vec![(Some(5), Some(70)), (Some(5 + a), Some(75)), (Some(5 + a + b), Some(82))]);
    }

    /// HTTP/2: the server's SETTINGS leave before the request reaches it, so
    /// a server-side capture sees them before the request and a client-side
    /// one after it. The responses' keys must not depend on that.
    #[test]
    fn http2_response_keys_do_not_depend_on_the_servers_early_settings() {
        fn frame(typ: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
            let n = payload.len() as u32;
            let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, typ, flags];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(payload);
            f
        }
        const END: u8 = 0x1 | 0x4; // END_STREAM | END_HEADERS
        let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        request.extend(frame(4, 0, 0, &[]));
        // :method GET, :scheme http, :path / (static table).
        for id in [1, 3] {
            request.extend(frame(1, END, id, &[0x82, 0x86, 0x84]));
        }
        let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let mut response = frame(4, 1, 0, &[]);
        for id in [1, 3] {
            response.extend(frame(1, END, id, &[0x88])); // :status 200
        }
        let keys = |settings_first: bool| {
            let mut d = Dispatcher::new(DecodeConfig::default());
            let c = conn(Transport::Tcp, 8080);
            d.on_stream_start(&c, StreamDir::ToServer, 1000);
            d.on_stream_start(&c, StreamDir::ToClient, 9000);
            let (t_req, t_settings) = if settings_first { (2, 1) } else { (1, 2) };
            let mut events = [(t_req, StreamDir::ToServer, &request), (t_settings, StreamDir::ToClient, &settings)];
            events.sort_by_key(|e| e.0);
            for (t, dir, bytes) in events {
                d.on_data(&c, dir, t, bytes);
            }
            d.on_data(&c, StreamDir::ToClient, 3, &response);
            let ex = d.take();
            assert_eq!(ex.len(), 2, "{ex:?}");
            seqs(&ex)
        };
        let (client_side, server_side) = (keys(false), keys(true));
        assert_eq!(client_side, server_side);
        // The responses are placed in the event that carried them.
        let at = 9000 + settings.len() as u32;
        assert_eq!(server_side.iter().map(|k| k.1).collect::<Vec<_>>(), vec![Some(at), Some(at + 10)]);
    }

    /// `DirWire` before the ordered-times searches (the oracle).
    #[derive(Default)]
    struct OldWire {
        base: Option<u32>,
        off: u64,
        chunks: std::collections::VecDeque<(u64, u64)>,
        cursor: u64,
        last: Option<u64>,
    }

    impl OldWire {
        fn data(&mut self, ts: u64, len: u64) {
            if self.chunks.len() >= WIRE_CHUNKS {
                self.chunks.pop_front();
            }
            self.chunks.push_back((ts, self.off));
            self.off += len;
        }

        fn seq(&self, off: u64) -> Option<u32> {
            self.base.map(|b| b.wrapping_add(off as u32))
        }

        /// Offset of a request that started at `ts` and is `len` bytes long.
        fn request(&mut self, ts: u64, len: u64) -> Option<u64> {
            // The earliest event at the latest time not after `ts`.
            let i = self.chunks.iter().rposition(|(t, _)| *t <= ts)?;
            let t = self.chunks[i].0;
            let first = self.chunks.iter().position(|(x, _)| *x == t).unwrap_or(i);
            let start = self.chunks[first].1;
            let end = self.chunks.get(i + 1).map_or(self.off, |c| c.1);
            let at = if (start..end).contains(&self.cursor) { self.cursor } else { start };
            self.cursor = at + len;
            // Two messages given one offset (an exchange the server started,
            // sizes that do not add up): no key rather than a shared one, which
            // could join the wrong halves.
            if self.last.replace(at) == Some(at) {
                return None;
            }
            Some(at)
        }

        /// Offset of a response to a request sent at `req_ts`, `len` bytes long.
        fn response(&mut self, req_ts: u64, len: u64) -> Option<u64> {
            let start = self.chunks.iter().find(|(t, _)| *t >= req_ts)?.1;
            let at = if (start..self.off).contains(&self.cursor) { self.cursor } else { start };
            self.cursor = at + len;
            Some(at)
        }
    }

    #[derive(Debug, Clone)]
    enum WireOp {
        Data(u64, u64),
        Gap(u64),
        Request(u64, u64),
        Response(u64, u64),
    }

    fn wire_op() -> impl proptest::strategy::Strategy<Value = WireOp> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..4, 0u64..40).prop_map(|(dt, n)| WireOp::Data(dt, n)),
            1 => (0u64..40).prop_map(WireOp::Gap),
            3 => (0u64..6, 0u64..40).prop_map(|(dt, n)| WireOp::Request(dt, n)),
            3 => (0u64..6, 0u64..40).prop_map(|(dt, n)| WireOp::Response(dt, n)),
        ]
    }

    proptest::proptest! {
        /// The searches from the newest events give what the scans gave, for times in
        /// order (event times advance by 0..3) and, once an event comes
        /// earlier (`back` > 0), through the scans again; past 32 events too.
        #[test]
        fn wire_offsets_as_before(ops in proptest::collection::vec(wire_op(), 0..120), back in proptest::option::of((0usize..120, 1u64..5))) {
            let (mut new, mut old) = (DirWire { base: Some(7), ..Default::default() }, OldWire { base: Some(7), ..Default::default() });
            let mut now = 10u64;
            for (k, op) in ops.into_iter().enumerate() {
                match op {
                    WireOp::Data(dt, n) => {
                        now += dt;
                        let ts = match back {
                            Some((at, by)) if at == k => now.saturating_sub(by),
                            _ => now,
                        };
                        new.data(ts, n);
                        old.data(ts, n);
                    }
                    WireOp::Gap(n) => {
                        new.off += n;
                        old.off += n;
                    }
                    WireOp::Request(dt, n) => {
                        let ts = now.saturating_sub(dt);
                        let (a, b) = (new.request(ts, n), old.request(ts, n));
                        proptest::prop_assert_eq!(a, b);
                        proptest::prop_assert_eq!(a.and_then(|o| new.seq(o)), b.and_then(|o| old.seq(o)));
                    }
                    WireOp::Response(dt, n) => {
                        let ts = now.saturating_sub(dt);
                        proptest::prop_assert_eq!(new.response(ts, n), old.response(ts, n));
                    }
                }
                proptest::prop_assert_eq!((new.cursor, new.last), (old.cursor, old.last));
            }
        }
    }

    #[test]
    fn two_messages_at_one_offset_get_no_key() {
        let mut w = DirWire { base: Some(100), ..Default::default() };
        w.data(1, 50);
        assert_eq!(w.request(1, 20), Some(0));
        assert_eq!(w.request(1, 0), Some(20));
        // Sizes that do not add up (a zero-length message): not a second key for offset 20.
        assert_eq!(w.request(1, 10), None);
        assert_eq!(w.request(1, 10), Some(30));
    }

    #[test]
    fn a_gap_moves_the_offsets_and_udp_has_no_seq() {
        let mut d = Dispatcher::new(DecodeConfig::default());
        let c = conn(Transport::Tcp, 8080);
        d.on_stream_start(&c, StreamDir::ToServer, 0);
        d.on_stream_start(&c, StreamDir::ToClient, 0);
        d.on_data(&c, StreamDir::ToServer, 1, b"GET /a HTTP/1.1\r\n\r\n");
        d.on_data(&c, StreamDir::ToClient, 2, b"HTTP/1.1 204 No Content\r\n\r\n");
        d.on_gap(&c, StreamDir::ToServer, 3, 100);
        d.on_gap(&c, StreamDir::ToClient, 3, 50);
        d.on_data(&c, StreamDir::ToServer, 4, b"GET /b HTTP/1.1\r\n\r\n");
        d.on_data(&c, StreamDir::ToClient, 5, b"HTTP/1.1 204 No Content\r\n\r\n");
        let ex = d.take();
        assert_eq!(ex.len(), 2);
        assert_eq!(seqs(&ex)[1], (Some(19 + 100), Some(27 + 50)));
        let mut d = Dispatcher::new(DecodeConfig::default());
        let u = conn(Transport::Udp, 53);
        let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        d.on_datagram(&u, StreamDir::ToServer, 6, q, q.len() as u32);
        d.on_datagram(&u, StreamDir::ToClient, 7, &r, r.len() as u32);
        let ex = d.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].wire, crate::protocol::exchange::Wire { txn_id: Some(0x1234), ..Default::default() });
    }

    proptest::proptest! {
        /// Whatever arrives, in whatever pieces: no panic, bounded detection state.
        #[test]
        fn arbitrary_events_never_panic(
            events in proptest::collection::vec((0u8..5, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0u64..3000), 0..60),
            port in proptest::prop_oneof![proptest::strategy::Just(80u16), proptest::strategy::Just(53), proptest::strategy::Just(6379), proptest::strategy::Just(9092), 1u16..65535],
            prefix in proptest::prop_oneof![
                proptest::strategy::Just(&b""[..]),
                proptest::strategy::Just(&b"GET / HTTP/1.1\r\n"[..]),
                proptest::strategy::Just(&b"*1\r\n$4\r\nPING\r\n"[..]),
                proptest::strategy::Just(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
                proptest::strategy::Just(&b"\x00\x1c\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"[..]),
            ],
        ) {
            let mut d = Dispatcher::new(DecodeConfig::default());
            for t in [Transport::Tcp, Transport::Udp, Transport::Icmp] {
                let c = conn(t, port);
                d.on_data(&c, StreamDir::ToServer, 0, prefix);
                for (i, (kind, bytes, n)) in events.iter().enumerate() {
                    let ts = i as u64 * 1_000_000;
                    let dir = if kind % 2 == 0 { StreamDir::ToServer } else { StreamDir::ToClient };
                    match kind {
                        0 | 1 => d.on_data(&c, dir, ts, bytes),
                        2 => d.on_gap(&c, dir, ts, *n),
                        3 => d.on_datagram(&c, dir, ts, bytes, bytes.len() as u32 + *n as u32),
                        _ => d.expire(ts + 60_000_000_000),
                    }
                    proptest::prop_assert!(d.held_bytes() <= 3 * DETECT_BYTES);
                }
                d.on_close(&c, 1 << 40, CloseReason::EndOfInput);
            }
            proptest::prop_assert_eq!(d.conn_count(), 0);
        }
    }
}
