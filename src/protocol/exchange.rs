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
