//! The flow table: finds (or creates) the connection of each packet, decides
//! client/server roles, runs TCP reassembly and hands datagrams through.
//! Bounded by a flow count (least recently active flow is evicted) and by
//! per-direction reassembly buffers; idle flows are closed by [`FlowTable::expire`].
use super::key::{icmp_echo, FlowKey};
use super::role::port_is_server;
use super::tcp::{HalfStream, Out};
use super::{CloseReason, Conn, ConnInfo, RoleEvidence, StreamDir, StreamSink, Transport};
use crate::capture::{Direction, PacketEvent, L4};
use crate::stats::{counter, gauge, Counter};
use lru::LruCache;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// How long a connection closed by FIN/RST is remembered (at most the idle
/// timeout): long enough for its last ACKs and retransmitted FINs, short
/// enough that connection churn does not fill the table with dead entries
/// that would push out live idle connections.
pub const CLOSED_LINGER_NS: u64 = 5_000_000_000;

static ACTIVE: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.flow.active", &[]));
static CREATED_TCP: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.created", &[("transport", "tcp")]));
static CREATED_UDP: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.created", &[("transport", "udp")]));
static CREATED_ICMP: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.created", &[("transport", "icmp")]));
static CLOSED_FIN: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.closed", &[("reason", "fin")]));
static CLOSED_RST: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.closed", &[("reason", "rst")]));
static CLOSED_IDLE: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.closed", &[("reason", "idle")]));
static CLOSED_EVICTED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.closed", &[("reason", "evicted")]));
static CLOSED_END: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.closed", &[("reason", "end_of_input")]));
/// Connections restarted because a segment was nowhere near the expected
/// sequence number (a reused port whose SYN the capture lost).
static SEQUENCE_JUMPS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.sequence_jumps", &[]));
static IGNORED_NO_FLOW: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.flow.ignored_packets", &[("reason", "no_flow")]));
static IGNORED_CLOSED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.flow.ignored_packets", &[("reason", "after_close")]));

fn count_close(reason: CloseReason) {
    match reason {
        CloseReason::Fin => CLOSED_FIN.inc(),
        CloseReason::Rst => CLOSED_RST.inc(),
        CloseReason::Idle => CLOSED_IDLE.inc(),
        CloseReason::Evicted => CLOSED_EVICTED.inc(),
        CloseReason::EndOfInput => CLOSED_END.inc(),
    }
}

/// Limits of the flow table.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub max_flows: usize,
    /// Out-of-order bytes buffered per direction before skipping ahead.
    pub max_buffer_bytes: usize,
    pub idle_timeout_ns: u64,
}

impl Default for FlowConfig {
    /// The defaults of the agent's CNFLOW_MAX_FLOWS, CNFLOW_MAX_FLOW_BUFFER_BYTES
    /// and CNFLOW_FLOW_IDLE_TIMEOUT_SECS.
    fn default() -> Self {
        Self { max_flows: 65_536, max_buffer_bytes: 256 * 1024, idle_timeout_ns: 120 * 1_000_000_000 }
    }
}

#[derive(Debug)]
struct TcpFlow {
    /// Indexed by [`StreamDir::index`].
    half: [HalfStream; 2],
}

#[derive(Debug)]
enum State {
    Tcp(Box<TcpFlow>),
    Datagram,
    /// Closed TCP connection (at this packet time) kept briefly so that its
    /// last ACKs and retransmissions do not start a new mid-stream flow.
    Closed(u64),
}

#[derive(Debug)]
struct Flow {
    conn: Conn,
    /// Whether endpoint `a` of the key is the client.
    a_is_client: bool,
    last_ts: u64,
    state: State,
}

pub struct FlowTable {
    cfg: FlowConfig,
    flows: LruCache<FlowKey, Flow>,
    /// Flows closed by FIN/RST, oldest first, with their close time. An entry
    /// whose key was reopened since is stale and skipped.
    closed: VecDeque<(u64, FlowKey)>,
}

impl FlowTable {
    pub fn new(cfg: &FlowConfig) -> Self {
        super::tcp::register_counters();
        for c in [
            &ACTIVE,
            &CREATED_TCP,
            &CREATED_UDP,
            &CREATED_ICMP,
            &CLOSED_FIN,
            &CLOSED_RST,
            &CLOSED_IDLE,
            &CLOSED_EVICTED,
            &CLOSED_END,
            &IGNORED_NO_FLOW,
            &IGNORED_CLOSED,
        ] {
            LazyLock::force(c);
        }
        Self { cfg: cfg.clone(), flows: LruCache::unbounded(), closed: VecDeque::new() }
    }

    /// Number of tracked flows (including recently closed TCP connections).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Out-of-order bytes currently buffered across all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.flows
            .iter()
            .map(|(_, f)| match &f.state {
                State::Tcp(t) => t.half.iter().map(HalfStream::buffered_bytes).sum(),
                _ => 0,
            })
            .sum()
    }

    pub fn push<S: StreamSink + ?Sized>(&mut self, ev: &PacketEvent, sink: &mut S) {
        let (key, forward) = FlowKey::of(ev);
        let flags = match ev.l4 {
            L4::Tcp { flags, .. } => flags,
            _ => 0,
        };
        let mut reopen = false;
        if let Some(flow) = self.flows.get_mut(&key) {
            match &flow.state {
                State::Closed(_) if flags & (SYN | ACK) == SYN => reopen = true,
                State::Closed(_) => {
                    IGNORED_CLOSED.inc();
                    return;
                }
                // Port reuse: a fresh SYN on a flow whose client already sent data.
                State::Tcp(t)
                    if flags & (SYN | ACK) == SYN && t.half[0].started() && {
                        let client_sent = forward == flow.a_is_client;
                        client_sent && t.half[0].stats.bytes > 0
                    } =>
                {
                    reopen = true
                }
                // Same port, other connection, its SYN lost (ring full): its
                // sequence numbers are unrelated to ours, and treating the
                // difference as a hole would report gigabytes lost and stall
                // the stream (or, behind us, drop it all as retransmissions).
                State::Tcp(t)
                    if ev.payload_len > 0 && {
                        let i = if forward == flow.a_is_client { 0 } else { 1 };
                        matches!(ev.l4, L4::Tcp { seq, .. } if t.half[i].implausible(seq))
                    } =>
                {
                    SEQUENCE_JUMPS.inc();
                    reopen = true
                }
                _ => {}
            }
            if !reopen {
                flow.last_ts = flow.last_ts.max(ev.ts_ns);
                let dir = if forward == flow.a_is_client { StreamDir::ToServer } else { StreamDir::ToClient };
                if let Some(reason) = Self::process(flow, dir, ev, self.cfg.max_buffer_bytes, sink) {
                    Self::close(flow, ev.ts_ns, reason, sink);
                    flow.state = State::Closed(ev.ts_ns);
                    self.note_closed(ev.ts_ns, key);
                    ACTIVE.set(self.flows.len() as u64);
                }
                return;
            }
        }
        if reopen {
            if let Some(mut old) = self.flows.pop(&key) {
                if !matches!(old.state, State::Closed(_)) {
                    Self::close(&mut old, ev.ts_ns, CloseReason::Idle, sink);
                }
            }
        }
        // Pure ACKs, lone FINs and RSTs of unknown connections carry nothing
        // to decode and would only create noise flows.
        if matches!(ev.l4, L4::Tcp { .. }) && flags & SYN == 0 && ev.payload_len == 0 {
            IGNORED_NO_FLOW.inc();
            return;
        }
        while self.flows.len() >= self.cfg.max_flows {
            // Dead connections go first; live ones only when none is left.
            if self.pop_closed(u64::MAX) {
                continue;
            }
            let Some((_, mut old)) = self.flows.pop_lru() else { break };
            if !matches!(old.state, State::Closed(_)) {
                Self::close(&mut old, ev.ts_ns, CloseReason::Evicted, sink);
            }
        }
        let mut flow = Self::new_flow(&key, forward, ev);
        let dir = if forward == flow.a_is_client { StreamDir::ToServer } else { StreamDir::ToClient };
        let closed = Self::process(&mut flow, dir, ev, self.cfg.max_buffer_bytes, sink);
        if let Some(reason) = closed {
            Self::close(&mut flow, ev.ts_ns, reason, sink);
            flow.state = State::Closed(ev.ts_ns);
            self.note_closed(ev.ts_ns, key);
        }
        self.flows.push(key, flow);
        ACTIVE.set(self.flows.len() as u64);
    }

    fn new_flow(key: &FlowKey, forward: bool, ev: &PacketEvent) -> Flow {
        // Decide whether the packet's sender is the client.
        let (src_is_client, evidence) = match ev.l4 {
            L4::Tcp { flags, .. } if flags & SYN != 0 => (flags & ACK == 0, RoleEvidence::Syn),
            L4::Icmp { v6 } => match ev.payload.first().and_then(|t| icmp_echo(v6, *t)) {
                Some(request) => (request, RoleEvidence::FirstPacket),
                None => (true, RoleEvidence::FirstPacket),
            },
            _ => match port_is_server(ev.dst_port, ev.src_port) {
                Some(dst_is_server) => (dst_is_server, RoleEvidence::Port),
                None => (true, RoleEvidence::FirstPacket),
            },
        };
        let (transport, state) = match ev.l4 {
            L4::Tcp { .. } => {
                CREATED_TCP.inc();
                (Transport::Tcp, State::Tcp(Box::new(TcpFlow { half: Default::default() })))
            }
            L4::Udp => {
                CREATED_UDP.inc();
                (Transport::Udp, State::Datagram)
            }
            L4::Icmp { .. } => {
                CREATED_ICMP.inc();
                (Transport::Icmp, State::Datagram)
            }
        };
        let src = SocketAddr::new(ev.src, if transport == Transport::Icmp { 0 } else { ev.src_port });
        let dst = SocketAddr::new(ev.dst, if transport == Transport::Icmp { 0 } else { ev.dst_port });
        let (client, server) = if src_is_client { (src, dst) } else { (dst, src) };
        let client_to_server = if src_is_client { ev.direction } else { flip(ev.direction) };
        let conn = Arc::new(ConnInfo {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            ifindex: key.ifindex,
            transport,
            client,
            server,
            client_to_server,
            evidence,
            first_ts_ns: ev.ts_ns,
        });
        Flow { conn, a_is_client: forward == src_is_client, last_ts: ev.ts_ns, state }
    }

    /// Apply one packet; returns a close reason when the connection ended.
    fn process<S: StreamSink + ?Sized>(
        flow: &mut Flow,
        dir: StreamDir,
        ev: &PacketEvent,
        max_buffer: usize,
        sink: &mut S,
    ) -> Option<CloseReason> {
        let Flow { conn, state, .. } = flow;
        match state {
            State::Closed(_) => None,
            State::Datagram => {
                sink.on_datagram(conn, dir, ev.ts_ns, &ev.payload, ev.payload_len);
                None
            }
            State::Tcp(t) => {
                let L4::Tcp { seq, ack, flags } = ev.l4 else { return None };
                let i = dir.index();
                let [h0, h1] = &mut t.half;
                let (me, peer) = if i == 0 { (h0, h1) } else { (h1, h0) };
                // SYN with data (TCP Fast Open): the data starts after the SYN.
                let data_seq = if flags & SYN != 0 { seq.wrapping_add(1) } else { seq };
                if !me.started() {
                    // Offset 0 of this direction is `data_seq` (after the SYN
                    // or the first byte seen): the seq → offset mapping.
                    sink.on_stream_start(conn, dir, data_seq);
                }
                let mut out = Out { conn, dir, ts: ev.ts_ns, sink };
                if flags & SYN != 0 {
                    me.syn(seq);
                }
                me.segment(data_seq, &ev.payload, ev.payload_len as u64, flags & FIN != 0, max_buffer, &mut out);
                if flags & ACK != 0 && peer.started() {
                    out.dir = dir.flip();
                    peer.peer_acked(ack, &mut out);
                    out.dir = dir;
                }
                if flags & RST != 0 {
                    me.flush(&mut out);
                    out.dir = dir.flip();
                    peer.flush(&mut out);
                    return Some(CloseReason::Rst);
                }
                (me.finished() && peer.finished()).then_some(CloseReason::Fin)
            }
        }
    }

    /// Deliver what is still buffered (skipping holes), then report the close.
    fn close<S: StreamSink + ?Sized>(flow: &mut Flow, ts: u64, reason: CloseReason, sink: &mut S) {
        if let State::Tcp(t) = &mut flow.state {
            for (i, h) in t.half.iter_mut().enumerate() {
                let dir = if i == 0 { StreamDir::ToServer } else { StreamDir::ToClient };
                h.flush(&mut Out { conn: &flow.conn, dir, ts, sink });
            }
        }
        count_close(reason);
        sink.on_close(&flow.conn, ts, reason);
    }

    fn note_closed(&mut self, at: u64, key: FlowKey) {
        self.closed.push_back((at, key));
        // Entries of flows that left the table otherwise (evicted, reopened)
        // are dropped now and then, so the queue stays within the table's size.
        if self.closed.len() > 2 * self.flows.len() + 64 {
            let flows = &self.flows;
            self.closed.retain(|(at, k)| {
                matches!(flows.peek(k), Some(Flow { state: State::Closed(t), .. }) if t == at) || *k == key
            });
        }
    }

    /// Removes the oldest flow closed at or before `deadline`; false when there is none.
    fn pop_closed(&mut self, deadline: u64) -> bool {
        while let Some(&(at, key)) = self.closed.front() {
            if at > deadline {
                return false;
            }
            self.closed.pop_front();
            if matches!(self.flows.peek(&key), Some(Flow { state: State::Closed(t), .. }) if *t == at) {
                self.flows.pop(&key);
                return true;
            }
        }
        false
    }

    /// Close flows idle since before `now_ns - idle timeout` and forget
    /// connections closed more than [`CLOSED_LINGER_NS`] ago.
    pub fn expire<S: StreamSink + ?Sized>(&mut self, now_ns: u64, sink: &mut S) {
        let linger = CLOSED_LINGER_NS.min(self.cfg.idle_timeout_ns);
        while self.pop_closed(now_ns.saturating_sub(linger)) {}
        let deadline = now_ns.saturating_sub(self.cfg.idle_timeout_ns);
        while let Some((_, f)) = self.flows.peek_lru() {
            if f.last_ts > deadline {
                break;
            }
            let Some((_, mut f)) = self.flows.pop_lru() else { break };
            if !matches!(f.state, State::Closed(_)) {
                Self::close(&mut f, now_ns, CloseReason::Idle, sink);
            }
        }
        ACTIVE.set(self.flows.len() as u64);
    }

    /// Close every flow (end of a replayed capture), least recently active first.
    pub fn finish<S: StreamSink + ?Sized>(&mut self, sink: &mut S) {
        self.closed.clear();
        while let Some((_, mut f)) = self.flows.pop_lru() {
            if !matches!(f.state, State::Closed(_)) {
                let ts = f.last_ts;
                Self::close(&mut f, ts, CloseReason::EndOfInput, sink);
            }
        }
        ACTIVE.set(0);
    }
}

fn flip(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}
