//! TLS plaintext (from the uprobes on OpenSSL, see `capture::tls`) turned into
//! ordinary TCP [`PacketEvent`]s, so the flow table reassembles it and the
//! protocol decoders run on it exactly as on captured packets.
//!
//! Each `(process, SSL *)` becomes one synthetic TCP connection: a SYN from
//! the client, a SYN-ACK, then one segment per SSL_read/SSL_write whose
//! sequence number is the stream offset of that direction (so a call whose
//! plaintext was cut by the snap length leaves a counted gap, as a truncated
//! packet does). Its 5-tuple is the socket's, and its `ifindex` is a pseudo
//! interface that carries the TLS marker, the process id and the TLS version
//! (see [`TlsSource`]): the ciphertext of the same connection, captured by
//! TC on a real interface, stays a separate flow, and the client's and the
//! server's plaintext of one connection (both processes traced on one node)
//! stay two flows, one per process, each giving the span of its own side.
use super::{Direction, PacketEvent, L4};
use crate::stats::{counter, Counter};
use bytes::Bytes;
use lru::LruCache;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::LazyLock;

/// Bit 31 of `ifindex` marks a TLS plaintext pseudo interface (real interface
/// indexes are small positive numbers).
const TLS_FLAG: u32 = 1 << 31;
/// Bits 24..28: TLS version code (0 unknown, 1..=4 = TLS 1.0..1.3).
const VERSION_SHIFT: u32 = 24;
/// Bits 0..24: the process id (Linux caps pid_max at 2^22).
const PID_MASK: u32 = (1 << VERSION_SHIFT) - 1;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

/// Connections (process, SSL *) remembered at most.
pub const MAX_CONNS: usize = 65_536;
/// Connections with calls waiting for their socket, and calls kept per
/// connection (a memory-BIO server's first call comes before any socket
/// I/O of its thread was seen; the next one names it).
const MAX_PARKED_CONNS: usize = 4096;
const MAX_PARKED_CALLS: usize = 16;
/// Parked calls older than this (by the reaper's clock) are dropped.
const PARK_NS: u64 = 10_000_000_000;

/// What a TLS pseudo interface says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSource {
    /// Process (tgid) whose SSL calls carried the plaintext.
    pub pid: u32,
    /// Negotiated protocol version ("1.2", "1.3"), when the library layout is known.
    pub version: Option<&'static str>,
}

impl TlsSource {
    /// The TLS facts of a connection whose `ifindex` is a TLS pseudo interface.
    pub fn of_ifindex(ifindex: u32) -> Option<Self> {
        if ifindex & TLS_FLAG == 0 {
            return None;
        }
        let version = match (ifindex >> VERSION_SHIFT) & 0x7 {
            1 => Some("1.0"),
            2 => Some("1.1"),
            3 => Some("1.2"),
            4 => Some("1.3"),
            _ => None,
        };
        Some(Self { pid: ifindex & PID_MASK, version })
    }

    fn ifindex(pid: u32, wire_version: u16) -> u32 {
        // Only the four TLS versions count as evidence; SSLv3 or a library
        // whose SSL object does not start with the version stays unknown.
        let code = match wire_version {
            0x0301..=0x0304 => (wire_version - 0x0300) as u32,
            _ => 0,
        };
        TLS_FLAG | (code << VERSION_SHIFT) | (pid & PID_MASK)
    }
}

/// Whether an `ifindex` is a TLS pseudo interface.
pub fn is_tls_ifindex(ifindex: u32) -> bool {
    ifindex & TLS_FLAG != 0
}

/// One SSL call with plaintext, as decoded from a kernel record.
#[derive(Debug, Clone)]
pub struct TlsCall {
    pub ts_ns: u64,
    pub pid: u32,
    pub ssl: u64,
    /// The process wrote (SSL_write*) rather than read.
    pub write: bool,
    /// Plaintext bytes the call moved.
    pub len: u32,
    /// Local and remote socket address, when the socket under the call was seen.
    pub tuple: Option<(SocketAddr, SocketAddr)>,
    /// `tuple` is the thread's last socket outside the call, not one used
    /// inside it: good enough to start a connection, never to replace the
    /// socket of a known one.
    pub tuple_guessed: bool,
    pub tls_version: u16,
    /// Bytes this `SSL *` moved in this direction before the call (kernel count).
    pub offset: u64,
    /// The captured prefix of the plaintext.
    pub data: Bytes,
}

static NO_TUPLE: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.records", &[("reason", "dropped_no_socket")]));
static FED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.records", &[("reason", "delivered")]));
static CONNS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.connections", &[]));
static GUESSED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.connections_from_thread_socket", &[]));

#[derive(Debug)]
struct ConnState {
    local: SocketAddr,
    remote: SocketAddr,
    local_is_client: bool,
    ifindex: u32,
    /// Next sequence number written by / read by the process.
    written: u32,
    read: u32,
    /// Kernel offset of the first call seen per direction (written, read):
    /// sequence numbers are 1 + offset - base, so a record the kernel could
    /// not deliver leaves a gap. (A reused `SSL *` continues the kernel's
    /// count, hence the base.)
    base: [Option<u64>; 2],
}

/// Tells whether the process listens on a local port (then it is the server).
pub type ListenCheck = dyn Fn(u32, SocketAddr) -> Option<bool> + Send;

/// Turns SSL calls into TCP packet events, one synthetic connection per (pid, SSL *).
pub struct TlsStreams {
    conns: LruCache<(u32, u64), ConnState>,
    /// Calls of (pid, SSL *) not tied to a socket yet.
    parked: LruCache<(u32, u64), Vec<TlsCall>>,
    listening: Box<ListenCheck>,
    /// Called with the pid of every new connection (see `with_process_observer`).
    observe: Option<Box<dyn FnMut(u32) + Send>>,
}

impl TlsStreams {
    /// `listening(pid, local)`: Some(true) when `local` is a listening port of
    /// `pid`'s network namespace; None when unknown (then the side that
    /// writes first is taken as the client, as in HTTP and Redis).
    pub fn new(listening: Box<ListenCheck>) -> Self {
        for c in [&NO_TUPLE, &FED, &CONNS, &GUESSED] {
            LazyLock::force(c);
        }
        Self {
            conns: LruCache::new(NonZeroUsize::new(MAX_CONNS).unwrap()),
            parked: LruCache::new(NonZeroUsize::new(MAX_PARKED_CONNS).unwrap()),
            listening,
            observe: None,
        }
    }

    /// `f(pid)` runs when a process's new connection appears, while the
    /// process is alive (e.g. to read its executable and cgroup, see
    /// `crate::process::observe`).
    pub fn with_process_observer(mut self, f: Box<dyn FnMut(u32) + Send>) -> Self {
        self.observe = Some(f);
        self
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The packet events standing for `call`, appended to `out`.
    pub fn push(&mut self, call: TlsCall, out: &mut Vec<PacketEvent>) {
        let key = (call.pid, call.ssl);
        // A socket that is closing (peer's FIN/RST) has already released its
        // local port: such a 5-tuple is incomplete, the remembered one is right.
        let call_tuple = call.tuple.filter(|(l, r)| l.port() != 0 && r.port() != 0);
        // A reused SSL * (freed and allocated again) on another socket is a new connection.
        let tuple = match (call_tuple, self.conns.get(&key)) {
            (_, Some(c)) if call.tuple_guessed => Some((c.local, c.remote)),
            (Some(t), Some(c)) if (c.local, c.remote) != t => {
                let old = self.conns.pop(&key).expect("present");
                fin(&old, call.ts_ns, out);
                Some(t)
            }
            (Some(t), _) => Some(t),
            // A read served from OpenSSL's buffer: no socket call under it.
            (None, Some(c)) => Some((c.local, c.remote)),
            (None, None) => None,
        };
        let Some((local, remote)) = tuple else {
            // No socket yet (a memory-BIO thread's first call): parked until
            // a later call of this SSL * names its socket.
            self.park(key, call);
            return;
        };
        if call.tuple_guessed && !self.conns.contains(&key) {
            GUESSED.inc();
        }
        let mut parked = Vec::new();
        if !self.conns.contains(&key) {
            parked = self.parked.pop(&key).unwrap_or_default();
            let first = parked.first().unwrap_or(&call);
            let local_is_client = match (self.listening)(call.pid, local) {
                Some(listens) => !listens,
                None => first.write,
            };
            let st = ConnState {
                local,
                remote,
                local_is_client,
                ifindex: TlsSource::ifindex(call.pid, call.tls_version),
                written: 1,
                read: 1,
                base: [None, None],
            };
            if let Some(f) = &mut self.observe {
                f(call.pid);
            }
            handshake(&st, first.ts_ns, out);
            CONNS.inc();
            self.conns.put(key, st);
        }
        for c in parked {
            self.feed(key, c, out);
        }
        self.feed(key, call, out);
    }

    /// Keeps a call without a socket for its connection's first call with one.
    fn park(&mut self, key: (u32, u64), call: TlsCall) {
        if !self.parked.contains(&key) && self.parked.len() == MAX_PARKED_CONNS {
            if let Some((_, lost)) = self.parked.pop_lru() {
                NO_TUPLE.add(lost.len() as u64);
            }
        }
        let v = self.parked.get_or_insert_mut(key, Vec::new);
        if v.len() < MAX_PARKED_CALLS {
            v.push(call);
        } else {
            NO_TUPLE.inc();
        }
    }

    /// One call of a known connection as a TCP segment.
    fn feed(&mut self, key: (u32, u64), call: TlsCall, out: &mut Vec<PacketEvent>) {
        let st = self.conns.get_mut(&key).expect("inserted");
        let i = if call.write { 0 } else { 1 };
        let base = *st.base[i].get_or_insert(call.offset);
        // Wrapping like TCP sequence numbers; the flow table compares mod 2^32.
        let seq = 1u32.wrapping_add(call.offset.wrapping_sub(base) as u32);
        let end = seq.wrapping_add(call.len);
        let (src, dst, direction, ack) = if call.write {
            (st.local, st.remote, Direction::Egress, st.read)
        } else {
            (st.remote, st.local, Direction::Ingress, st.written)
        };
        if call.write {
            st.written = end;
        } else {
            st.read = end;
        }
        out.push(event(st.ifindex, call.ts_ns, src, dst, direction, seq, ack, ACK | PSH, call.len, call.data));
        FED.inc();
    }

    /// Ends the connections of processes that are gone (`alive(pid)` false).
    pub fn reap(&mut self, now_ns: u64, alive: impl Fn(u32) -> bool, out: &mut Vec<PacketEvent>) {
        // Parked calls of gone processes, or whose socket never showed up: lost.
        let stale: Vec<(u32, u64)> = self
            .parked
            .iter()
            .filter(|((pid, _), v)| !alive(*pid) || v.first().is_some_and(|c| now_ns.saturating_sub(c.ts_ns) > PARK_NS))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(v) = self.parked.pop(&k) {
                NO_TUPLE.add(v.len() as u64);
            }
        }
        let dead: Vec<(u32, u64)> = self.conns.iter().filter(|((pid, _), _)| !alive(*pid)).map(|(k, _)| *k).collect();
        for k in dead {
            if let Some(st) = self.conns.pop(&k) {
                fin(&st, now_ns, out);
            }
        }
    }
}

/// Client and server ends of a connection, and the direction of client→server data.
fn ends(st: &ConnState) -> (SocketAddr, SocketAddr, Direction) {
    if st.local_is_client {
        (st.local, st.remote, Direction::Egress)
    } else {
        (st.remote, st.local, Direction::Ingress)
    }
}

fn flip(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

fn handshake(st: &ConnState, ts: u64, out: &mut Vec<PacketEvent>) {
    let (c, s, c2s) = ends(st);
    out.push(event(st.ifindex, ts, c, s, c2s, 0, 0, SYN, 0, Bytes::new()));
    out.push(event(st.ifindex, ts, s, c, flip(c2s), 0, 1, SYN | ACK, 0, Bytes::new()));
}

fn fin(st: &ConnState, ts: u64, out: &mut Vec<PacketEvent>) {
    let (w, r) = (st.written, st.read);
    let (l2r, r2l) = (Direction::Egress, Direction::Ingress);
    out.push(event(st.ifindex, ts, st.local, st.remote, l2r, w, r, FIN | ACK, 0, Bytes::new()));
    out.push(event(st.ifindex, ts, st.remote, st.local, r2l, r, w.wrapping_add(1), FIN | ACK, 0, Bytes::new()));
}

#[allow(clippy::too_many_arguments)]
fn event(
    ifindex: u32,
    ts_ns: u64,
    src: SocketAddr,
    dst: SocketAddr,
    direction: Direction,
    seq: u32,
    ack: u32,
    flags: u8,
    payload_len: u32,
    payload: Bytes,
) -> PacketEvent {
    PacketEvent {
        ts_ns,
        ifindex,
        direction,
        src: src.ip(),
        dst: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
        l4: L4::Tcp { seq, ack, flags },
        payload_len,
        payload,
    }
}

/// Socket addresses from the kernel record's raw fields (family 2 or 10).
pub fn socket_addrs(
    family: u8,
    local: [u8; 16],
    local_port: u16,
    remote: [u8; 16],
    remote_port: u16,
) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |a: [u8; 16]| -> Option<IpAddr> {
        match family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            10 => {
                let v6 = Ipv6Addr::from(a);
                // A dual-stack socket talking IPv4 shows the mapped form.
                Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
            }
            _ => None,
        }
    };
    Some((SocketAddr::new(ip(local)?, local_port), SocketAddr::new(ip(remote)?, remote_port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowConfig, FlowTable};
    use crate::protocol::{DecodeConfig, Dispatcher};

    fn call(ts: u64, pid: u32, ssl: u64, write: bool, data: &[u8], tuple: bool) -> TlsCall {
        let local: SocketAddr = "10.200.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "10.200.0.2:8443".parse().unwrap();
        TlsCall {
            ts_ns: ts,
            pid,
            ssl,
            write,
            len: data.len() as u32,
            tuple: tuple.then_some((local, remote)),
            tuple_guessed: false,
            tls_version: 0x0304,
            offset: 0,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn ifindex_round_trip() {
        let i = TlsSource::ifindex(4_000_000, 0x0303);
        assert_eq!(TlsSource::of_ifindex(i), Some(TlsSource { pid: 4_000_000, version: Some("1.2") }));
        assert_eq!(TlsSource::of_ifindex(TlsSource::ifindex(7, 0x1234)).unwrap().version, None);
        assert_eq!(TlsSource::of_ifindex(7), None);
    }

    #[test]
    fn ipv4_mapped_and_v6() {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&[10, 200, 0, 1]);
        let (l, _) = socket_addrs(10, a, 1, a, 2).unwrap();
        assert_eq!(l, "10.200.0.1:1".parse().unwrap());
        assert!(socket_addrs(0, a, 1, a, 2).is_none());
    }

    /// A client's SSL calls become one HTTP exchange with the CLIENT's view.
    #[test]
    fn http_over_ssl_calls_decodes() {
        let mut s = TlsStreams::new(Box::new(|_, _| None));
        let mut evs = Vec::new();
        s.push(call(1_000, 42, 0xdead, true, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", true), &mut evs);
        // The response arrives in two reads, the second from OpenSSL's buffer (no socket call).
        s.push(call(2_000, 42, 0xdead, false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", true), &mut evs);
        let mut more = call(3_000, 42, 0xdead, false, b"\r\nhi", false);
        more.offset = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".len() as u64;
        s.push(more, &mut evs);
        // A read after the peer closed: the socket already lost its local port.
        let mut late = call(3_500, 42, 0xdead, false, b"", true);
        late.tuple = Some(("10.200.0.1:0".parse().unwrap(), "10.200.0.2:8443".parse().unwrap()));
        s.push(late, &mut evs);
        assert_eq!(s.len(), 1, "same connection");
        // Unknown connection without a socket: parked, never decoded alone.
        s.push(call(3_000, 42, 0xbeef, false, b"x", false), &mut evs);
        let mut flows = FlowTable::new(&FlowConfig::default());
        let mut d = Dispatcher::new(DecodeConfig::default());
        for e in &evs {
            flows.push(e, &mut d);
        }
        let ex = d.take();
        assert_eq!(ex.len(), 1, "{ex:?}");
        let c = &ex[0].conn;
        assert_eq!(c.client, "10.200.0.1:40000".parse().unwrap());
        assert_eq!(c.client_to_server, Direction::Egress);
        assert_eq!(TlsSource::of_ifindex(c.ifindex).unwrap().pid, 42);
        assert_eq!(ex[0].protocol.name(), "http1");
    }

    /// A record the kernel could not deliver (ring full) leaves a gap of its
    /// length, and a reused `SSL *` starts its new connection at sequence 1.
    #[test]
    fn lost_record_is_a_gap() {
        let mut s = TlsStreams::new(Box::new(|_, _| Some(false)));
        let mut evs = Vec::new();
        let mut a = call(1, 5, 7, true, b"abc", true);
        a.offset = 1000;
        s.push(a, &mut evs);
        let mut b = call(2, 5, 7, true, b"def", true);
        b.offset = 1010;
        s.push(b, &mut evs);
        let seqs: Vec<u32> = evs
            .iter()
            .filter(|e| e.payload_len > 0)
            .map(|e| match e.l4 {
                L4::Tcp { seq, .. } => seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, vec![1, 11]);
    }

    /// A memory-BIO server (h2o): the first call's tuple is the thread's last
    /// socket; later guesses (another connection's socket) never move it.
    #[test]
    fn guessed_tuple_starts_but_never_moves_a_connection() {
        let mut s = TlsStreams::new(Box::new(|_, _| Some(true)));
        let mut evs = Vec::new();
        let mut a = call(1, 3, 5, false, b"GET / HTTP/1.1\r\n\r\n", true);
        a.tuple_guessed = true;
        s.push(a, &mut evs);
        let mut b = call(2, 3, 5, true, b"HTTP/1.1 204 No Content\r\n\r\n", true);
        b.tuple = Some(("10.200.0.1:40000".parse().unwrap(), "10.200.0.9:1".parse().unwrap()));
        b.tuple_guessed = true;
        b.offset = 0;
        s.push(b, &mut evs);
        assert_eq!(s.len(), 1);
        assert!(evs.iter().all(|e| e.l4 != L4::Tcp { seq: 0, ack: 0, flags: FIN | ACK }));
        assert!(evs.iter().all(|e| e.src_port == 8443 || e.dst_port == 8443), "one peer: {evs:?}");
    }

    /// A memory-BIO server's first call (no socket seen in its thread yet)
    /// waits for the next call of the same SSL * and is delivered before it.
    #[test]
    fn parked_first_call_goes_first() {
        let mut s = TlsStreams::new(Box::new(|_, _| Some(true)));
        let mut evs = Vec::new();
        let mut settings = call(1, 3, 5, true, b"early", false);
        settings.offset = 0;
        s.push(settings, &mut evs);
        assert!(evs.is_empty() && s.is_empty());
        let mut req = call(2, 3, 5, false, b"GET / HTTP/1.1\r\n\r\n", true);
        req.tuple_guessed = true;
        s.push(req, &mut evs);
        let data: Vec<&[u8]> = evs.iter().filter(|e| e.payload_len > 0).map(|e| &e.payload[..]).collect();
        assert_eq!(data, vec![&b"early"[..], &b"GET / HTTP/1.1\r\n\r\n"[..]]);
        assert_eq!(evs[0].ts_ns, 1, "the connection starts at the first call");
        // Parked calls of a process that is gone are dropped by the reaper.
        s.push(call(3, 4, 6, true, b"x", false), &mut evs);
        s.reap(4, |pid| pid != 4, &mut Vec::new());
        assert!(s.parked.is_empty());
    }

    /// The server process (listening port) reads first and is the server.
    #[test]
    fn listening_process_is_server() {
        let mut s = TlsStreams::new(Box::new(|_, l| Some(l.port() == 40000)));
        let mut evs = Vec::new();
        s.push(call(1, 9, 1, false, b"GET / HTTP/1.1\r\n\r\n", true), &mut evs);
        // SYN from the remote client to the local server.
        assert_eq!(evs[0].src_port, 8443);
        assert_eq!(evs[0].direction, Direction::Ingress);
        // Same SSL *, other socket: the old connection is closed with FINs first.
        let mut evs = Vec::new();
        let mut c = call(2, 9, 1, false, b"x", true);
        c.tuple = Some(("10.200.0.1:40000".parse().unwrap(), "10.200.0.3:1".parse().unwrap()));
        s.push(c, &mut evs);
        assert!(matches!(evs[0].l4, L4::Tcp { flags, .. } if flags & FIN != 0));
        assert_eq!(s.len(), 1);
        let mut evs = Vec::new();
        s.reap(3, |_| false, &mut evs);
        assert!(s.is_empty());
        assert_eq!(evs.len(), 2);
    }

    fn run(calls: Vec<TlsCall>) -> Vec<crate::exchange::Exchange> {
        let mut s = TlsStreams::new(Box::new(|_, _| None));
        let mut flows = FlowTable::new(&FlowConfig::default());
        let mut d = Dispatcher::new(DecodeConfig::default());
        let mut evs = Vec::new();
        for c in calls {
            s.push(c, &mut evs);
        }
        s.reap(u64::MAX / 2, |_| false, &mut evs);
        for e in &evs {
            flows.push(e, &mut d);
        }
        flows.finish(&mut d);
        d.take()
    }

    use proptest::prelude::*;
    proptest! {
        /// Arbitrary calls (processes, SSL pointers, tuples, offsets, bytes) never panic.
        #[test]
        fn arbitrary_calls_never_panic(raw in proptest::collection::vec(
            (0u32..3, 0u64..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64), any::<u64>(), 0u8..3, any::<u16>()),
            0..40,
        )) {
            let calls = raw
                .into_iter()
                .enumerate()
                .map(|(i, (pid, ssl, write, data, offset, t, port))| TlsCall {
                    ts_ns: i as u64,
                    pid,
                    ssl,
                    write,
                    len: data.len() as u32 + (offset % 3) as u32,
                    tuple: match t {
                        0 => None,
                        1 => Some(("10.200.0.1:1".parse().unwrap(), SocketAddr::new("10.200.0.2".parse().unwrap(), port))),
                        _ => Some(("[fd00::1]:0".parse().unwrap(), "[fd00::2]:443".parse().unwrap())),
                    },
                    tuple_guessed: port % 2 == 0,
                    tls_version: port,
                    offset: offset % 100_000,
                    data: Bytes::from(data),
                })
                .collect();
            let _ = run(calls);
        }

        /// HTTP/1 requests and responses cut into SSL calls at any sizes give
        /// one exchange per request, from the client's and the server's process.
        #[test]
        fn any_segmentation_gives_every_exchange(n in 1usize..5, cut in 1usize..50) {
            let req = b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n".repeat(n);
            let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".repeat(n);
            let client: SocketAddr = "10.200.0.1:40000".parse().unwrap();
            let server: SocketAddr = "10.200.0.2:443".parse().unwrap();
            let mut calls = Vec::new();
            // Client (pid 1) and server (pid 2) processes, each with its own SSL *.
            for (pid, local, remote, first_write) in [(1, client, server, true), (2, server, client, false)] {
                for (write, bytes) in [(first_write, &req), (!first_write, &resp)] {
                    let mut off = 0u64;
                    for c in bytes.chunks(cut) {
                        calls.push(TlsCall {
                            ts_ns: calls.len() as u64,
                            pid,
                            ssl: 9,
                            write,
                            len: c.len() as u32,
                            tuple: Some((local, remote)),
                            tuple_guessed: false,
                            tls_version: 0x0303,
                            offset: off,
                            data: Bytes::copy_from_slice(c),
                        });
                        off += c.len() as u64;
                    }
                }
            }
            let ex = run(calls);
            prop_assert_eq!(ex.len(), 2 * n);
            prop_assert!(ex.iter().all(|e| e.conn.client == client && e.conn.server == server));
        }
    }
}
