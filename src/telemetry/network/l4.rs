//! L4 network metrics per workload pair, from the packets userspace already
//! receives. Names follow OBI's network metrics (`obi.network.flow.bytes` →
//! `cnflow.network.flow.bytes`, with OBI's `src.*`/`dst.*`/`k8s.src.*`/
//! `k8s.dst.*` attributes) plus TCP connection counters.
//!
//! What a packet counts for:
//! - bytes (L4 payload length on the wire) and packets, per direction. The
//!   eBPF program drops empty TCP segments other than SYN/FIN/RST, so pure
//!   ACKs are neither counted nor seen.
//! - SYN (client) starts an attempt; its SYN/ACK opens the connection and
//!   gives the handshake time (SYN → SYN/ACK: one round trip from the capture
//!   point to the server; the client's final ACK is a pure ACK, not delivered);
//!   RST before the SYN/ACK fails it (`connection_refused`), no answer within
//!   the SYN timeout fails it (`timeout`); FIN or RST after it closes it.
//! - retransmission: a segment whose data (or SYN) lies entirely at or before
//!   what that direction already sent.
//!
//! A connection is counted on the interface it was first seen on: capturing
//! both ends of a path on one node (two pod veths) does not double it.
//!
//! Bounded: at most `max_pairs` pairs (first come; the rest share one
//! `otel.metric.overflow=true` series, counted) and `max_conns` tracked
//! connections (least recently active dropped first, counted).
use super::{Hist, HistDesc, MetricsOut, SumDesc};
use crate::capture::{PacketEvent, L4};
use crate::flow::role::port_is_server;
use crate::flow::{FlowKey, StreamDir, Transport};
use crate::otel::attr::{Attrs, Str, V};
use crate::otel::semconv::OVERFLOW_KEY;
use crate::stats::{self, Counter};
use crate::telemetry::config::Temporality;
use crate::workload::Enricher;
use lru::LruCache;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Looked up for every packet: foldhash instead of SipHash, as the decoders' per-connection maps.
type Hasher = foldhash::fast::RandomState;
type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

static PAIRS_OVERFLOW: LazyLock<Counter> =
    LazyLock::new(|| stats::counter("cnflow.network.dropped", &[("reason", "pair_limit")]));
static OTHER_INTERFACE: LazyLock<Counter> =
    LazyLock::new(|| stats::counter("cnflow.network.ignored_packets", &[("reason", "other_interface")]));
static CONNS_EVICTED: LazyLock<Counter> =
    LazyLock::new(|| stats::counter("cnflow.network.dropped", &[("reason", "connection_limit")]));

pub(crate) const FLOW_BYTES: SumDesc = SumDesc {
    name: "cnflow.network.flow.bytes",
    unit: "By",
    description: "L4 payload bytes sent from src to dst, as delivered by the capture (pure TCP ACKs are not seen).",
};
pub(crate) const FLOW_PACKETS: SumDesc = SumDesc {
    name: "cnflow.network.flow.packets",
    unit: "{packet}",
    description: "Packets sent from src to dst, as delivered by the capture (pure TCP ACKs are not seen).",
};
pub(crate) const OPENED: SumDesc = SumDesc {
    name: "cnflow.network.tcp.connections.opened",
    unit: "{connection}",
    description: "TCP connections whose SYN was answered by a SYN/ACK (src is the client).",
};
pub(crate) const CLOSED: SumDesc = SumDesc {
    name: "cnflow.network.tcp.connections.closed",
    unit: "{connection}",
    description: "Opened TCP connections that ended with a FIN or RST (cnflow.tcp.close.reason).",
};
pub(crate) const FAILED: SumDesc = SumDesc {
    name: "cnflow.network.tcp.connections.failed",
    unit: "{connection}",
    description: "TCP connection attempts refused (RST to the SYN) or unanswered within the SYN timeout (error.type).",
};
pub(crate) const RETRANSMISSIONS: SumDesc = SumDesc {
    name: "cnflow.network.tcp.retransmissions",
    unit: "{segment}",
    description: "TCP segments carrying data or SYN already sent in that direction.",
};
/// Round trips inside a host or a cluster are tens of microseconds.
pub(crate) const HANDSHAKE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
pub(crate) const HANDSHAKE: HistDesc = HistDesc {
    name: "cnflow.network.tcp.handshake.duration",
    description: "Time from the client's SYN to the server's SYN/ACK, seen at the capture point.",
    buckets: HANDSHAKE_BUCKETS,
};

/// Settings of [`NetworkMetrics`].
#[derive(Debug, Clone)]
pub struct L4Config {
    pub max_pairs: usize,
    pub max_conns: usize,
    pub syn_timeout_ns: u64,
    pub idle_timeout_ns: u64,
}

#[derive(Debug)]
struct Pair {
    /// Attributes of the client end with `src`/`dst` prefixes: `[as src, as dst]`.
    client: [Vec<(&'static str, V)>; 2],
    server: [Vec<(&'static str, V)>; 2],
    common: Vec<(&'static str, V)>,
    c: PairCounts,
}

#[derive(Debug)]
struct PairCounts {
    /// Indexed by [`StreamDir::index`].
    bytes: [u64; 2],
    packets: [u64; 2],
    opened: u64,
    closed_fin: u64,
    closed_rst: u64,
    refused: u64,
    timeout: u64,
    retrans: u64,
    handshake: Hist,
}

impl PairCounts {
    fn new() -> Self {
        Self {
            bytes: [0; 2],
            packets: [0; 2],
            opened: 0,
            closed_fin: 0,
            closed_rst: 0,
            refused: 0,
            timeout: 0,
            retrans: 0,
            handshake: Hist::new(HANDSHAKE_BUCKETS),
        }
    }
}

#[derive(Debug)]
struct Conn {
    /// Index into `pairs`; `None` = the overflow pair.
    pair: Option<usize>,
    /// The interface the connection was first seen on; the same packets seen
    /// again on another interface (both ends of a pod-to-pod path on one
    /// node) are not counted twice.
    ifindex: u32,
    a_is_client: bool,
    syn_ts: Option<u64>,
    syn_seq: u32,
    opened: bool,
    ended: bool,
    /// Next sequence number expected per direction (after the highest seen).
    next: [Option<u32>; 2],
    last_ts: u64,
}

/// Aggregates L4 metrics; feed it every packet, call [`expire`](Self::expire)
/// regularly and [`collect`](Self::collect) once per export interval.
pub struct NetworkMetrics {
    cfg: L4Config,
    temporality: Temporality,
    pairs: Vec<Pair>,
    pair_index: HashMap<(IpAddr, IpAddr, Transport, u16), usize>,
    overflow: PairCounts,
    conns: LruCache<FlowKey, Conn, Hasher>,
    /// SYNs waiting for an answer: (time, connection).
    pending: VecDeque<(u64, FlowKey)>,
    start_ns: Option<u64>,
}

/// OBI-style endpoint attributes: `{p}.address`, and from the workload
/// identity `k8s.{p}.namespace`, `k8s.{p}.name` (pod), `k8s.{p}.owner.name`
/// and `k8s.{p}.owner.type` (the controlling workload).
fn endpoint(ip: IpAddr, enricher: &dyn Enricher, src: bool) -> Vec<(&'static str, V)> {
    let k = |s: &'static str, d: &'static str| if src { s } else { d };
    let mut out = vec![(k("src.address", "dst.address"), V::from(ip.to_string()))];
    if let Some(id) = enricher.identity(ip) {
        if let Some(ns) = id.get("k8s.namespace.name") {
            out.push((k("k8s.src.namespace", "k8s.dst.namespace"), V::from(Str::copy(ns))));
        }
        if let Some(pod) = id.get("k8s.pod.name") {
            out.push((k("k8s.src.name", "k8s.dst.name"), V::from(Str::copy(pod))));
        }
        const OWNERS: &[(&str, &str)] = &[
            ("k8s.deployment.name", "Deployment"),
            ("k8s.statefulset.name", "StatefulSet"),
            ("k8s.daemonset.name", "DaemonSet"),
            ("k8s.cronjob.name", "CronJob"),
            ("k8s.job.name", "Job"),
            ("k8s.replicaset.name", "ReplicaSet"),
        ];
        if let Some((name, kind)) = OWNERS.iter().find_map(|(key, kind)| id.get(key).map(|n| (n, *kind))) {
            out.push((k("k8s.src.owner.name", "k8s.dst.owner.name"), V::from(Str::copy(name))));
            out.push((k("k8s.src.owner.type", "k8s.dst.owner.type"), V::from(kind)));
        }
    }
    out
}

/// Serial-number comparison: `a` is at or before `b`.
fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

impl NetworkMetrics {
    pub fn new(cfg: L4Config, temporality: Temporality) -> Self {
        LazyLock::force(&PAIRS_OVERFLOW);
        LazyLock::force(&CONNS_EVICTED);
        LazyLock::force(&OTHER_INTERFACE);
        Self {
            cfg,
            temporality,
            pairs: Vec::new(),
            pair_index: HashMap::default(),
            overflow: PairCounts::new(),
            conns: LruCache::unbounded_with_hasher(Hasher::default()),
            pending: VecDeque::new(),
            start_ns: None,
        }
    }

    /// Distinct pairs held (the overflow series not included).
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    fn pair_of(&mut self, client: IpAddr, server: IpAddr, t: Transport, port: u16, e: &dyn Enricher) -> Option<usize> {
        let key = (client, server, t, port);
        if let Some(i) = self.pair_index.get(&key) {
            return Some(*i);
        }
        if self.pairs.len() >= self.cfg.max_pairs {
            PAIRS_OVERFLOW.inc();
            return None;
        }
        let transport = match t {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
        };
        let mut common = vec![("network.transport", V::from(transport))];
        if t != Transport::Icmp {
            common.push(("server.port", V::I(i64::from(port))));
        }
        self.pairs.push(Pair {
            client: [endpoint(client, e, true), endpoint(client, e, false)],
            server: [endpoint(server, e, true), endpoint(server, e, false)],
            common,
            c: PairCounts::new(),
        });
        self.pair_index.insert(key, self.pairs.len() - 1);
        Some(self.pairs.len() - 1)
    }

    fn counts(&mut self, pair: Option<usize>) -> &mut PairCounts {
        match pair {
            Some(i) => &mut self.pairs[i].c,
            None => &mut self.overflow,
        }
    }

    /// Account one captured packet.
    pub fn packet(&mut self, ev: &PacketEvent, enricher: &dyn Enricher) {
        self.start_ns.get_or_insert(ev.ts_ns);
        let (mut key, forward) = FlowKey::of(ev);
        key.ifindex = 0;
        let (seq, flags) = match ev.l4 {
            L4::Tcp { seq, flags, .. } => (seq, flags),
            _ => (0, 0),
        };
        let is_tcp = matches!(ev.l4, L4::Tcp { .. });
        let fresh_syn = is_tcp && flags & (SYN | ACK) == SYN;
        // A new SYN on a known connection that already opened, ended, or used
        // another initial sequence number is a new attempt (port reuse).
        let restart = fresh_syn
            && self.conns.peek(&key).is_some_and(|c| {
                let client_sent = forward == c.a_is_client;
                c.ifindex == ev.ifindex
                    && (c.opened || c.ended || !client_sent || c.syn_ts.is_some_and(|_| c.syn_seq != seq))
            });
        if restart {
            self.conns.pop(&key);
        }
        if !self.conns.contains(&key) {
            let src_is_client = if is_tcp && flags & SYN != 0 {
                flags & ACK == 0
            } else {
                port_is_server(ev.dst_port, ev.src_port).unwrap_or(true)
            };
            let (client, server, sport) =
                if src_is_client { (ev.src, ev.dst, ev.dst_port) } else { (ev.dst, ev.src, ev.src_port) };
            let t = match ev.l4 {
                L4::Tcp { .. } => Transport::Tcp,
                L4::Udp => Transport::Udp,
                L4::Icmp { .. } => Transport::Icmp,
            };
            let pair = self.pair_of(client, server, t, sport, enricher);
            while self.conns.len() >= self.cfg.max_conns.max(1) {
                if self.conns.pop_lru().is_none() {
                    break;
                }
                CONNS_EVICTED.inc();
            }
            self.conns.push(
                key,
                Conn {
                    pair,
                    ifindex: ev.ifindex,
                    a_is_client: forward == src_is_client,
                    syn_ts: None,
                    syn_seq: 0,
                    opened: false,
                    ended: false,
                    next: [None; 2],
                    last_ts: ev.ts_ns,
                },
            );
        }
        let Some(conn) = self.conns.get_mut(&key) else { return };
        conn.last_ts = conn.last_ts.max(ev.ts_ns);
        if conn.ifindex != ev.ifindex {
            OTHER_INTERFACE.inc();
            return;
        }
        let dir = if forward == conn.a_is_client { StreamDir::ToServer } else { StreamDir::ToClient };
        let pair = conn.pair;
        // Connection events are worked out on the connection, then counted on its pair.
        let mut ev_retrans = 0u64;
        let (mut opened, mut rtt, mut fin, mut rst, mut refused) = (false, None, false, false, false);
        let mut new_pending = None;
        if is_tcp {
            let d = dir.index();
            if flags & SYN != 0 {
                if fresh_syn && dir == StreamDir::ToServer {
                    match conn.syn_ts {
                        Some(_) => ev_retrans += 1,
                        None => {
                            conn.syn_ts = Some(ev.ts_ns);
                            conn.syn_seq = seq;
                            new_pending = Some(ev.ts_ns);
                        }
                    }
                } else if flags & ACK != 0 && dir == StreamDir::ToClient {
                    if conn.opened {
                        ev_retrans += 1;
                    } else if !conn.ended {
                        conn.opened = true;
                        opened = true;
                        rtt = conn.syn_ts.map(|t| ev.ts_ns.saturating_sub(t));
                    }
                }
                conn.next[d] = Some(seq.wrapping_add(1));
            }
            if ev.payload_len > 0 {
                let end = seq.wrapping_add(ev.payload_len);
                match conn.next[d] {
                    Some(n) if seq_le(end, n) => ev_retrans += 1,
                    _ => conn.next[d] = Some(end),
                }
            }
            if flags & RST != 0 && !conn.ended {
                conn.ended = true;
                if conn.opened {
                    rst = true;
                } else if conn.syn_ts.is_some() {
                    refused = true;
                }
            } else if flags & FIN != 0 && conn.opened && !conn.ended {
                conn.ended = true;
                fin = true;
            }
        }
        if let Some(ts) = new_pending {
            if self.pending.len() >= self.cfg.max_conns.max(1) {
                // Oldest unanswered SYN forgotten: it can no longer be judged.
                self.pending.pop_front();
                CONNS_EVICTED.inc();
            }
            self.pending.push_back((ts, key));
        }
        let c = self.counts(pair);
        c.bytes[dir.index()] += u64::from(ev.payload_len);
        c.packets[dir.index()] += 1;
        c.retrans += ev_retrans;
        c.opened += u64::from(opened);
        c.closed_fin += u64::from(fin);
        c.closed_rst += u64::from(rst);
        c.refused += u64::from(refused);
        if let Some(ns) = rtt {
            c.handshake.record(HANDSHAKE_BUCKETS, ns as f64 / 1e9);
        }
    }

    /// Housekeeping at `now_ns`: SYNs unanswered for the SYN timeout count as
    /// failed; connections idle for the idle timeout are forgotten.
    pub fn expire(&mut self, now_ns: u64) {
        let timeout = self.cfg.syn_timeout_ns;
        self.fail_pending(|ts| ts.saturating_add(timeout) <= now_ns);
        while let Some((_, c)) = self.conns.peek_lru() {
            if c.last_ts.saturating_add(self.cfg.idle_timeout_ns) > now_ns {
                break;
            }
            self.conns.pop_lru();
        }
    }

    /// End of input: every SYN still unanswered failed.
    pub fn finish(&mut self) {
        self.fail_pending(|_| true);
    }

    fn fail_pending(&mut self, due: impl Fn(u64) -> bool) {
        while let Some(&(ts, key)) = self.pending.front() {
            if !due(ts) {
                break;
            }
            self.pending.pop_front();
            let Some(conn) = self.conns.peek_mut(&key) else { continue };
            if conn.syn_ts != Some(ts) || conn.opened || conn.ended {
                continue;
            }
            conn.ended = true;
            let pair = conn.pair;
            self.counts(pair).timeout += 1;
        }
    }

    /// The metrics aggregated so far (reset in delta mode).
    pub fn collect(&mut self, now_ns: u64) -> Vec<Metric> {
        let start = self.start_ns.unwrap_or(now_ns).min(now_ns);
        let mut out = MetricsOut::new(self.temporality, start, now_ns);
        for p in &self.pairs {
            let up = labels(&p.client[0], &p.server[1], &p.common);
            let down = labels(&p.server[0], &p.client[1], &p.common);
            emit(&mut out, &p.c, up, down);
        }
        let overflow: Attrs = vec![(OVERFLOW_KEY, V::B(true))];
        emit(&mut out, &self.overflow, overflow.clone(), overflow);
        if self.temporality == Temporality::Delta {
            for p in &mut self.pairs {
                p.c = PairCounts::new();
            }
            self.overflow = PairCounts::new();
            self.start_ns = Some(now_ns);
        }
        out.metrics
    }
}

fn labels(src: &[(&'static str, V)], dst: &[(&'static str, V)], common: &[(&'static str, V)]) -> Attrs {
    let mut a: Attrs = src.iter().chain(dst).chain(common).cloned().collect();
    a.sort_by(|x, y| x.0.cmp(y.0));
    a
}

/// `up`: attributes with the client as src (client→server traffic and the
/// connection counters); `down`: server→client traffic.
fn emit(out: &mut MetricsOut, c: &PairCounts, up: Attrs, down: Attrs) {
    out.sum(&FLOW_BYTES, &up, c.bytes[0]);
    out.sum(&FLOW_BYTES, &down, c.bytes[1]);
    out.sum(&FLOW_PACKETS, &up, c.packets[0]);
    out.sum(&FLOW_PACKETS, &down, c.packets[1]);
    out.sum(&OPENED, &up, c.opened);
    let with = |k: &'static str, v: &str| {
        let mut a = up.clone();
        a.push((k, V::from(Str::copy(v))));
        a.sort_by(|x, y| x.0.cmp(y.0));
        a
    };
    out.sum(&CLOSED, &with("cnflow.tcp.close.reason", "fin"), c.closed_fin);
    out.sum(&CLOSED, &with("cnflow.tcp.close.reason", "rst"), c.closed_rst);
    out.sum(&FAILED, &with("error.type", "connection_refused"), c.refused);
    out.sum(&FAILED, &with("error.type", "timeout"), c.timeout);
    out.sum(&RETRANSMISSIONS, &up, c.retrans);
    out.hist(&HANDSHAKE, &up, &c.handshake);
}
