//! Exchanges: one request paired with its response (or a timeout). This is
//! what protocol decoders emit and what telemetry turns into spans/metrics.
use crate::flow::Conn;
use serde::Serialize;
use std::collections::VecDeque;
use std::hash::Hash;

/// Per-connection maps on the packet path: foldhash instead of SipHash; the
/// random seed and the per-connection caps bound what crafted keys can do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    Dns,
    Redis,
    Kafka,
    Icmp,
}

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

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Detail {
    Http(HttpDetail),
    Dns(DnsDetail),
    Redis(RedisDetail),
    Kafka(KafkaDetail),
    Icmp(IcmpDetail),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpDetail {
    /// "GET", "POST"... (None when not decoded).
    pub method: Option<String>,
    /// Path without query.
    pub path: Option<String>,
    /// Raw query string without '?', unmasked (telemetry masks it).
    pub query: Option<String>,
    /// "1.0", "1.1", "2".
    pub version: String,
    /// Host header or :authority.
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub status: Option<u16>,
    /// HTTP/1 reason phrase as sent ("OK", "Not Found"), bounded. `Some("")`
    /// when the status line ends in an empty one; None when it has none, when
    /// the status line was not seen, and always for HTTP/2 (which has none).
    /// Not exported as a span attribute: semconv defines none for it.
    pub reason: Option<String>,
    pub request_content_length: Option<u64>,
    pub response_content_length: Option<u64>,
    /// Trace-context headers as seen on the request, lower-case names:
    /// traceparent, tracestate, b3, x-b3-traceid, x-b3-spanid, x-b3-sampled, x-b3-parentspanid.
    pub trace_headers: Vec<(String, String)>,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    /// Content-Type of the request (used to recognise gRPC).
    pub content_type: Option<String>,
    pub grpc: Option<GrpcDetail>,
    /// RST_STREAM / GOAWAY error code, when the stream was reset.
    pub h2_error_code: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GrpcDetail {
    pub service: String,
    pub method: String,
    /// From trailers (or headers-only response). None when not seen.
    pub status_code: Option<u32>,
    pub message: Option<String>,
    /// Number of request / response messages (length-prefixed frames) seen.
    pub request_messages: u32,
    pub response_messages: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsDetail {
    pub id: u16,
    /// Question name without trailing dot, e.g. "example.com".
    pub question_name: Option<String>,
    /// "A", "AAAA", "CNAME", ... (numeric as "TYPE65" style when unknown).
    pub question_type: Option<String>,
    pub question_class: Option<String>,
    /// "NOERROR", "NXDOMAIN", "SERVFAIL", ...
    pub rcode: Option<String>,
    pub answer_count: u16,
    /// Answers as "TYPE data", e.g. "A 10.0.0.1", "CNAME foo.example.com".
    pub answers: Vec<String>,
    /// TC bit of the response.
    pub truncated: bool,
    /// "udp" or "tcp".
    pub transport: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisDetail {
    /// Upper-case command name, e.g. "SET".
    pub command: String,
    /// Upper-case sub-command for container commands, e.g. "SETNAME" for CLIENT SETNAME.
    pub subcommand: Option<String>,
    /// Number of arguments after the command name.
    pub arg_count: u32,
    /// Command text with arguments masked ("SET ? ?") – telemetry may unmask by config.
    pub query_masked: String,
    /// Command text unmasked, truncated to a bounded length.
    pub query_raw: String,
    /// Error reply text ("ERR wrong number of arguments ...") when the reply was an error.
    pub error: Option<String>,
    /// Error prefix, e.g. "ERR", "WRONGTYPE".
    pub error_prefix: Option<String>,
    /// RESP type of the reply: "simple", "error", "integer", "bulk", "array", "null", "map", ...
    pub response_type: Option<String>,
    /// 2 or 3.
    pub resp_version: u8,
    /// Selected database index when a SELECT was seen on the connection.
    pub db_index: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KafkaDetail {
    pub api_key: i16,
    /// "Produce", "Fetch", "Metadata", ...
    pub api_name: String,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub topics: Vec<String>,
    /// First non-zero error code found in the response (0 = none found).
    pub error_code: i16,
    /// Name for `error_code`, e.g. "UNKNOWN_TOPIC_OR_PARTITION".
    pub error_name: Option<String>,
    /// Records in the record sets of a Produce request or a Fetch response
    /// (0 when they were empty). None for other APIs, and when the body was
    /// not decoded to its end (snap length, lost bytes, or record sets beyond
    /// the bounded message prefix the decoder keeps).
    pub record_count: Option<u64>,
    /// Size of those record sets in bytes, as sent (compressed if they were).
    pub record_bytes: Option<u64>,
    /// Body decoding failed or was skipped; header-level only.
    pub header_only: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IcmpDetail {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    /// Echo identifier and sequence.
    pub echo_id: Option<u16>,
    pub echo_seq: Option<u16>,
    /// For errors (unreachable, time exceeded, too big): the quoted original flow.
    pub original: Option<IcmpOriginal>,
    /// Human name, e.g. "echo", "destination_unreachable".
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IcmpOriginal {
    pub protocol: u8,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
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
