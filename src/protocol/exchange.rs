//! Exchanges: one request paired with its response (or a timeout). This is
//! what protocol decoders emit and what telemetry turns into spans/metrics.
use crate::flow::Conn;
use serde::Serialize;
use std::collections::VecDeque;
use std::hash::Hash;

/// Per-connection maps on the packet path: foldhash instead of SipHash; the
/// random seed and the per-connection caps bound what crafted keys can do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The protocol label and detail of an exchange come from the protocol
/// registry (`src/protocol/registry.rs`), the one list of protocols.
pub use crate::protocol::registry::{Detail, Protocol};

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Response seen.
    Complete,
    /// No response within the timeout (or before the connection/capture ended).
    Timeout,
    /// Stream/connection reset (RST_STREAM, GOAWAY, TCP RST) before the response completed.
    Reset,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub conn: Conn,
    /// What identifies this exchange on every node it crosses (TCP sequence
    /// numbers, UDP transaction id). Filled by the dispatcher for TCP (and by
    /// datagram decoders that have an id); decoders leave it `Default`.
    /// Not part of the exchange JSON: it differs between captures.
    #[serde(skip)]
    pub wire: Wire,
    pub protocol: Protocol,
    /// First request byte seen (ns since epoch).
    pub start_ns: u64,
    /// Last response byte seen, or the time the exchange was given up.
    pub end_ns: u64,
    /// Request/response size on the wire, including headers (bytes).
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub outcome: Outcome,
    /// Some fields could not be decoded (mid-connection start, lost or
    /// truncated bytes). Decoded fields are still accurate.
    pub partial: bool,
    pub detail: Detail,
}

/// Wire facts of one exchange that survive NAT and are the same in a capture
/// taken at the client and one taken at the server: the TCP sequence numbers
/// of the first request and first response byte (addresses and ports change
/// under DNAT/SNAT, sequence numbers do not), or a datagram protocol's
/// transaction id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    pub request_seq: Option<u32>,
    pub response_seq: Option<u32>,
    /// UDP request/response id (DNS transaction id).
    pub txn_id: Option<u16>,
    /// Time of the data event that carried the first response byte, given
    /// by decoders of multiplexed protocols (HTTP/2), where the response
    /// does not simply follow its request: the dispatcher then places the
    /// response by its own time instead of the request's.
    pub response_ts: Option<u64>,
}

/// Span attributes carrying the wire facts (ints), consumed by the gateway's
/// stitcher and stripped there before export unless asked to keep them.
pub mod wire_attr {
    pub const TCP_REQUEST_SEQ: &str = "cnflow.tcp.request.seq";
    pub const TCP_RESPONSE_SEQ: &str = "cnflow.tcp.response.seq";
    pub const UDP_TXN_ID: &str = "cnflow.udp.transaction.id";
    pub const UDP_CLIENT_PORT: &str = "cnflow.udp.client.port";
    /// Prefixes of every wire attribute (what the gateway strips), with the
    /// service-graph hand-over mark (`telemetry::network::graph::GATEWAY_PEER_ATTR`).
    pub const PREFIXES: [&str; 3] = ["cnflow.tcp.", "cnflow.udp.", "cnflow.graph."];
}

/// The join key of an exchange: equal for the CLIENT span exported by the
/// client's node and the SERVER span exported by the server's node, whatever
/// NAT sits between them. One definition used by the agents' sampler (both
/// nodes must decide alike), the gateway's stitcher and the agents' choice of
/// gateway.
///
/// - TCP: request and response sequence numbers (the response's is absent
///   for an unanswered request on both sides).
/// - UDP: transaction id and the client's port. The client's address is
///   unchanged under Service DNAT but not under masquerade, and Linux SNAT
///   keeps the source port unless it collides, so the port is the part of
///   the client's identity that survives both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireKey(pub u64);

impl WireKey {
    /// From the TCP facts (request seq required).
    pub fn tcp(request_seq: u32, response_seq: Option<u32>) -> Self {
        Self::mix(6, u64::from(request_seq), response_seq.map_or(1 << 40, u64::from))
    }
    pub fn udp(txn_id: u16, client_port: u16) -> Self {
        Self::mix(17, u64::from(txn_id), u64::from(client_port))
    }
    /// The key of an exchange, if its wire facts identify it.
    pub fn of(ex: &Exchange) -> Option<Self> {
        match (ex.wire.request_seq, ex.wire.txn_id) {
            (Some(rq), _) => Some(Self::tcp(rq, ex.wire.response_seq)),
            (None, Some(id)) => Some(Self::udp(id, ex.conn.client.port())),
            _ => None,
        }
    }
    /// The key from span attributes (name, int value) written by [`WireKey::attrs`].
    pub fn from_attrs<'a>(attrs: impl IntoIterator<Item = (&'a str, i64)>) -> Option<Self> {
        let (mut rq, mut rs, mut id, mut port) = (None, None, None, None);
        for (k, v) in attrs {
            match k {
                wire_attr::TCP_REQUEST_SEQ => rq = u32::try_from(v).ok(),
                wire_attr::TCP_RESPONSE_SEQ => rs = u32::try_from(v).ok(),
                wire_attr::UDP_TXN_ID => id = u16::try_from(v).ok(),
                wire_attr::UDP_CLIENT_PORT => port = u16::try_from(v).ok(),
                _ => {}
            }
        }
        match (rq, id, port) {
            (Some(rq), _, _) => Some(Self::tcp(rq, rs)),
            (None, Some(id), Some(port)) => Some(Self::udp(id, port)),
            _ => None,
        }
    }
    /// The span attributes of an exchange's wire facts.
    pub fn attrs(ex: &Exchange) -> Vec<(&'static str, i64)> {
        let mut a = Vec::new();
        Self::each_attr(ex, |k, v| a.push((k, v)));
        a
    }
    /// [`WireKey::attrs`] one by one, without a `Vec` (every span has them).
    pub fn each_attr(ex: &Exchange, mut f: impl FnMut(&'static str, i64)) {
        if let Some(rq) = ex.wire.request_seq {
            f(wire_attr::TCP_REQUEST_SEQ, i64::from(rq));
            if let Some(rs) = ex.wire.response_seq {
                f(wire_attr::TCP_RESPONSE_SEQ, i64::from(rs));
            }
        } else if let Some(id) = ex.wire.txn_id {
            f(wire_attr::UDP_TXN_ID, i64::from(id));
            f(wire_attr::UDP_CLIENT_PORT, i64::from(ex.conn.client.port()));
        }
    }
    /// 56 uniformly spread bits (sampling randomness, consistent hashing).
    pub fn randomness(self) -> u64 {
        self.0 >> 8
    }
    /// Fixed hash (FNV-1a, then the splitmix64 finaliser): every cnflow
    /// version and node computes the same key from the same facts.
    fn mix(tag: u8, a: u64, b: u64) -> Self {
        // The same 17 bytes as before, from an array: a chained iterator
        // was not unrolled (this runs for every exchange, several times).
        let mut bytes = [0u8; 17];
        bytes[0] = tag;
        bytes[1..9].copy_from_slice(&a.to_be_bytes());
        bytes[9..].copy_from_slice(&b.to_be_bytes());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self(z ^ (z >> 31))
    }
}

/// Bounded pairing helpers shared by the decoders.
///
/// In-order protocols (HTTP/1 pipelining, Redis) use [`FifoPairer`]; keyed
/// protocols (HTTP/2 stream id, Kafka correlation id, DNS txn id, ICMP echo)
/// use [`KeyedPairer`]. Both evict the oldest pending request when full and
/// hand it back so the caller can emit it as a timeout and count it.
#[derive(Debug)]
pub struct FifoPairer<R> {
    pending: VecDeque<(u64, R)>,
    cap: usize,
}

impl<R> FifoPairer<R> {
    pub fn new(cap: usize) -> Self {
        Self { pending: VecDeque::new(), cap: cap.max(1) }
    }
    /// Queue a request seen at `ts_ns`; returns a request evicted by the cap.
    pub fn push(&mut self, ts_ns: u64, req: R) -> Option<R> {
        let evicted = if self.pending.len() >= self.cap { self.pending.pop_front().map(|(_, r)| r) } else { None };
        self.pending.push_back((ts_ns, req));
        evicted
    }
    /// The oldest pending request, answered by the next response.
    pub fn pop(&mut self) -> Option<R> {
        self.pending.pop_front().map(|(_, r)| r)
    }
    pub fn front_mut(&mut self) -> Option<&mut R> {
        self.pending.front_mut().map(|(_, r)| r)
    }
    pub fn len(&self) -> usize {
        self.pending.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
    /// Remove requests queued before `deadline_ns`.
    pub fn expire(&mut self, deadline_ns: u64) -> Vec<R> {
        let mut out = Vec::new();
        while let Some((ts, _)) = self.pending.front() {
            if *ts >= deadline_ns {
                break;
            }
            out.push(self.pending.pop_front().unwrap().1);
        }
        out
    }
    pub fn drain(&mut self) -> impl Iterator<Item = R> + '_ {
        self.pending.drain(..).map(|(_, r)| r)
    }
}

#[derive(Debug)]
pub struct KeyedPairer<K: Eq + Hash + Clone, R> {
    pending: HashMap<K, (u64, R)>,
    order: VecDeque<(u64, K)>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, R> KeyedPairer<K, R> {
    pub fn new(cap: usize) -> Self {
        Self { pending: HashMap::default(), order: VecDeque::new(), cap: cap.max(1) }
    }
    /// Insert a request; returns requests displaced (same key re-used, or cap reached).
    pub fn insert(&mut self, key: K, ts_ns: u64, req: R) -> Vec<R> {
        let mut out = Vec::new();
        if let Some((_, old)) = self.pending.remove(&key) {
            out.push(old);
        }
        while self.pending.len() >= self.cap {
            match self.order.pop_front() {
                Some((ts, k)) => {
                    if matches!(self.pending.get(&k), Some((t, _)) if *t == ts) {
                        out.push(self.pending.remove(&k).unwrap().1);
                    }
                }
                None => break,
            }
        }
        self.order.push_back((ts_ns, key.clone()));
        self.pending.insert(key, (ts_ns, req));
        self.compact();
        out
    }
    pub fn take(&mut self, key: &K) -> Option<R> {
        self.pending.remove(key).map(|(_, r)| r)
    }
    pub fn get_mut(&mut self, key: &K) -> Option<&mut R> {
        self.pending.get_mut(key).map(|(_, r)| r)
    }
    /// Remove the oldest request whose key satisfies `pred` (for protocols
    /// that pair on part of the key, e.g. DNS answers without a question).
    pub fn take_where(&mut self, pred: impl Fn(&K) -> bool) -> Option<R> {
        let key =
            self.pending.iter().filter(|(k, _)| pred(k)).min_by_key(|(_, (ts, _))| *ts).map(|(k, _)| k.clone())?;
        self.take(&key)
    }
    /// Is any request pending whose key satisfies `pred`?
    pub fn any_key(&self, pred: impl Fn(&K) -> bool) -> bool {
        self.pending.keys().any(pred)
    }
    pub fn len(&self) -> usize {
        self.pending.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
    /// Remove requests inserted before `deadline_ns`.
    pub fn expire(&mut self, deadline_ns: u64) -> Vec<R> {
        let mut out = Vec::new();
        while let Some((ts, _)) = self.order.front() {
            if *ts >= deadline_ns {
                break;
            }
            let (ts, k) = self.order.pop_front().unwrap();
            if matches!(self.pending.get(&k), Some((t, _)) if *t == ts) {
                out.push(self.pending.remove(&k).unwrap().1);
            }
        }
        out
    }
    pub fn drain(&mut self) -> Vec<R> {
        self.order.clear();
        let mut v: Vec<(u64, R)> = self.pending.drain().map(|(_, v)| v).collect();
        v.sort_by_key(|(ts, _)| *ts);
        v.into_iter().map(|(_, r)| r).collect()
    }
    // Stale order entries (taken keys) would otherwise accumulate without bound.
    fn compact(&mut self) {
        if self.order.len() > self.pending.len() * 2 + 64 {
            let pending = &self.pending;
            self.order.retain(|(ts, k)| matches!(pending.get(k), Some((t, _)) if t == ts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_pairs_in_order_and_evicts_oldest() {
        let mut p = FifoPairer::new(2);
        assert!(p.push(1, "a").is_none());
        assert!(p.push(2, "b").is_none());
        assert_eq!(p.push(3, "c"), Some("a"));
        assert_eq!(p.pop(), Some("b"));
        assert_eq!(p.expire(10), vec!["c"]);
    }

    #[test]
    fn wire_key_hash_is_unchanged() {
        // The chained-iterator form the key was defined with: agents of
        // different versions must compute the same key from the same facts.
        fn reference(tag: u8, a: u64, b: u64) -> u64 {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in std::iter::once(tag).chain(a.to_be_bytes()).chain(b.to_be_bytes()) {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            let mut z = h;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        for (tag, a, b) in [(6, 0, 1 << 40), (6, u64::from(u32::MAX), 7), (17, 513, 40000), (6, 12345, 678)] {
            assert_eq!(WireKey::mix(tag, a, b).0, reference(tag, a, b));
        }
        assert_eq!(WireKey::tcp(1, None).0, reference(6, 1, 1 << 40));
    }

    #[test]
    fn keyed_pairs_by_key_and_expires() {
        let mut p = KeyedPairer::new(8);
        p.insert(7u32, 1, "x");
        p.insert(9u32, 5, "y");
        assert_eq!(p.take(&9), Some("y"));
        assert_eq!(p.expire(3), vec!["x"]);
        assert!(p.is_empty());
        for i in 0..1000u32 {
            p.insert(i, i as u64, "z");
            p.take(&i);
        }
        assert!(p.order.len() < 200);
    }
}
