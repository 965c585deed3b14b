//! DNS over UDP and TCP (hickory-proto for message decoding).
//!
//! UDP: one message per datagram. TCP: 2-byte length-prefixed messages, any
//! number per connection, reassembled across segments. Queries and responses
//! are told apart by the QR bit (not by direction) and paired by transaction
//! id within the connection (the flow's 5-tuple). A message cut short by the
//! snap length or a gap still yields its header and question (partial).
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::DnsDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "dns")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "dns")]));

/// Answers kept per response.
const MAX_ANSWERS: usize = 16;
const MAX_TCP_MESSAGE: usize = 2 + 65_535;
/// Bytes searched for a message boundary after lost TCP bytes before giving up on them.
const RESYNC_WINDOW: usize = 4096;

/// Fixed 12-byte DNS header fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    id: u16,
    response: bool,
    opcode: u8,
    truncated: bool,
    rcode: u8,
    qdcount: u16,
    ancount: u16,
}

fn header(b: &[u8]) -> Option<Header> {
    if b.len() < 12 {
        return None;
    }
    Some(Header {
        id: u16::from_be_bytes([b[0], b[1]]),
        response: b[2] & 0x80 != 0,
        opcode: (b[2] >> 3) & 0x0f,
        truncated: b[2] & 0x02 != 0,
        rcode: b[3] & 0x0f,
        qdcount: u16::from_be_bytes([b[4], b[5]]),
        ancount: u16::from_be_bytes([b[6], b[7]]),
    })
}

/// What real DNS traffic looks like: one question, a standard opcode, and no error in queries.
fn plausible(h: &Header) -> bool {
    h.qdcount == 1 && matches!(h.opcode, 0 | 2 | 4 | 5) && (h.response || h.rcode == 0)
}

/// Does the first data of a connection look like DNS? `dir` is the direction of `data`.
pub fn probe(conn: &Conn, _dir: StreamDir, data: &[u8]) -> Probe {
    match conn.transport {
        Transport::Udp => match header(data) {
            Some(h) if plausible(&h) => {
                if Message::from_vec(data).is_ok() {
                    Probe::Yes(80)
                } else if first_question(data).is_some() {
                    // Truncated by the snap length: the question is still there.
                    Probe::Yes(50)
                } else {
                    Probe::No
                }
            }
            _ => Probe::No,
        },
        Transport::Tcp => {
            if data.len() < 2 {
                return Probe::NeedMore;
            }
            let len = u16::from_be_bytes([data[0], data[1]]) as usize;
            if len < 12 {
                return Probe::No;
            }
            match header(&data[2..]) {
                None => Probe::NeedMore,
                Some(h) if !plausible(&h) => Probe::No,
                Some(_) if data.len() >= 2 + len => {
                    if Message::from_vec(&data[2..2 + len]).is_ok() {
                        Probe::Yes(85)
                    } else {
                        Probe::No
                    }
                }
                Some(_) if data.len() >= 1024 => Probe::Yes(40),
                Some(_) => Probe::NeedMore,
            }
        }
        Transport::Icmp => Probe::No,
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(DnsDecoder::new(cfg))
}

/// DNS over UDP and TCP. The registry entry.
pub struct Dns;

impl super::registry::L7Protocol for Dns {
    const NAME: &'static str = "dns";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp, Transport::Udp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn port_hint(port: u16) -> bool {
        matches!(port, 53 | 5353 | 5300)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

fn first_question(msg: &[u8]) -> Option<Query> {
    let mut d = BinDecoder::new(msg.get(12..)?);
    Query::read(&mut d).ok()
}

fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

fn class_name(c: DNSClass) -> String {
    let n = u16::from(c);
    match n {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        254 => "NONE".into(),
        255 => "ANY".into(),
        _ => format!("CLASS{n}"),
    }
}

fn rcode_name(rcode: u16) -> String {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
        "NOTZONE",
    ];
    NAMES.get(rcode as usize).map_or_else(|| format!("RCODE{rcode}"), |s| s.to_string())
}

fn name_str(n: &impl std::fmt::Display) -> String {
    let s = n.to_string();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => s,
    }
}

/// Fields of one decoded message.
struct Decoded {
    h: Header,
    question: Option<Query>,
    rcode: u16,
    answers: Vec<String>,
    answer_count: u16,
    partial: bool,
}

fn decode(msg: &[u8], truncated_by_capture: bool) -> Option<Decoded> {
    let h = header(msg)?;
    match Message::from_vec(msg) {
        Ok(m) => {
            let answers = m
                .answers
                .iter()
                .take(MAX_ANSWERS)
                .map(|r| format!("{} {}", type_name(r.record_type()), name_str(&r.data)))
                .collect();
            Some(Decoded {
                h,
                question: m.queries.into_iter().next(),
                rcode: u16::from(m.metadata.response_code),
                answers,
                answer_count: m.answers.len().min(u16::MAX as usize) as u16,
                partial: false,
            })
        }
        Err(_) => {
            if !truncated_by_capture {
                PARSE_ERRORS.inc();
            }
            Some(Decoded {
                h,
                question: first_question(msg),
                rcode: h.rcode as u16,
                answers: Vec::new(),
                answer_count: h.ancount,
                partial: true,
            })
        }
    }
}

struct Pending {
    ts: u64,
    bytes: u64,
    detail: DnsDetail,
    partial: bool,
}

#[derive(Default)]
struct TcpSide {
    buf: Vec<u8>,
    /// Bytes of a message (already handled from its truncated start) still to skip.
    skip: u64,
    /// Lost bytes left us at an unknown offset: look for a message boundary.
    resync: bool,
}

pub struct DnsDecoder {
    cfg: DecodeConfig,
    pending: KeyedPairer<u16, Pending>,
    tcp: [TcpSide; 2],
}

impl DnsDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self { cfg: cfg.clone(), pending: KeyedPairer::new(cfg.max_pending_per_conn), tcp: Default::default() }
    }

    fn transport(conn: &Conn) -> String {
        match conn.transport {
            Transport::Tcp => "tcp".into(),
            _ => "udp".into(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(out: &mut Emit, start: u64, end: u64, req: u64, resp: u64, outcome: Outcome, partial: bool, d: DnsDetail) {
        out.push(Exchange {
            conn: out.conn.clone(),
            protocol: Protocol::Dns,
            start_ns: start,
            end_ns: end,
            request_bytes: req,
            response_bytes: resp,
            outcome,
            partial,
            detail: Detail::Dns(d),
        });
    }

    fn emit_unanswered(p: Pending, end: u64, outcome: Outcome, out: &mut Emit) {
        Self::emit(out, p.ts, end, p.bytes, 0, outcome, p.partial, p.detail);
    }

    /// One message; `wire_len` is its size on the wire (with the TCP length
    /// prefix), `truncated` says bytes of it were not captured.
    fn on_message(&mut self, ts: u64, msg: &[u8], wire_len: u64, truncated: bool, out: &mut Emit) {
        let Some(d) = decode(msg, truncated) else { return };
        let partial = d.partial || truncated;
        let mut detail = DnsDetail { id: d.h.id, transport: Self::transport(out.conn), ..Default::default() };
        if let Some(q) = &d.question {
            detail.question_name = Some(name_str(q.name()));
            detail.question_type = Some(type_name(q.query_type()));
            detail.question_class = Some(class_name(q.query_class()));
        }
        if !d.h.response {
            let p = Pending { ts, bytes: wire_len, detail, partial };
            for old in self.pending.insert(d.h.id, ts, p) {
                EVICTED.inc();
                let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
                Self::emit_unanswered(old, end, Outcome::Timeout, out);
            }
            return;
        }
        let (start, req_bytes, mut merged, req_partial) = match self.pending.take(&d.h.id) {
            Some(p) => (p.ts, p.bytes, p.detail, p.partial),
            // Response without its query: capture started late or the query was lost.
            None => (ts, 0, detail.clone(), true),
        };
        if merged.question_name.is_none() {
            merged.question_name = detail.question_name;
            merged.question_type = detail.question_type;
            merged.question_class = detail.question_class;
        }
        merged.rcode = Some(rcode_name(d.rcode));
        merged.answer_count = d.answer_count;
        merged.answers = d.answers;
        merged.truncated = d.h.truncated;
        Self::emit(out, start.min(ts), ts, req_bytes, wire_len, Outcome::Complete, partial || req_partial, merged);
    }

    fn tcp_data(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let i = dir.index();
        if self.tcp[i].skip > 0 {
            let k = self.tcp[i].skip.min(data.len() as u64);
            self.tcp[i].skip -= k;
            data = &data[k as usize..];
        }
        let mut buf = std::mem::take(&mut self.tcp[i].buf);
        buf.extend_from_slice(data);
        let mut pos = 0;
        if self.tcp[i].resync {
            match find_boundary(&buf) {
                Some(at) => {
                    pos = at;
                    self.tcp[i].resync = false;
                }
                None => {
                    let keep = buf.len().min(RESYNC_WINDOW);
                    buf.drain(..buf.len() - keep);
                    self.tcp[i].buf = buf;
                    return;
                }
            }
        }
        while buf.len() - pos >= 2 {
            let len = u16::from_be_bytes([buf[pos], buf[pos + 1]]) as usize;
            if buf.len() - pos < 2 + len {
                break;
            }
            self.on_message(ts, &buf[pos + 2..pos + 2 + len], 2 + len as u64, false, out);
            pos += 2 + len;
        }
        buf.drain(..pos);
        buf.truncate(MAX_TCP_MESSAGE.max(self.cfg.max_buffer_per_dir));
        self.tcp[i].buf = buf;
    }

    fn tcp_gap(&mut self, dir: StreamDir, ts: u64, len: u64, out: &mut Emit) {
        let side = &mut self.tcp[dir.index()];
        if side.resync {
            side.buf.clear();
            return;
        }
        if side.skip > 0 {
            if len <= side.skip {
                side.skip -= len;
            } else {
                side.skip = 0;
                side.resync = true;
            }
            return;
        }
        let buf = std::mem::take(&mut side.buf);
        if buf.len() >= 2 {
            // The buffered start of a message is all we get of it; the gap may end inside it.
            let total = 2 + u16::from_be_bytes([buf[0], buf[1]]) as u64;
            let missing = total.saturating_sub(buf.len() as u64);
            self.on_message(ts, &buf[2..], total, true, out);
            let side = &mut self.tcp[dir.index()];
            if len <= missing {
                side.skip = missing - len;
                return;
            }
        }
        self.tcp[dir.index()].resync = true;
    }
}

/// First offset where a complete, plausible length-prefixed message starts.
fn find_boundary(buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(13)).find(|&i| {
        let len = u16::from_be_bytes([buf[i], buf[i + 1]]) as usize;
        len >= 12
            && header(&buf[i + 2..]).is_some_and(|h| plausible(&h))
            && buf.len() >= i + 2 + len
            && Message::from_vec(&buf[i + 2..i + 2 + len]).is_ok()
    })
}

impl ConnDecoder for DnsDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.tcp_data(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if len > 0 {
            self.tcp_gap(dir, ts_ns, len, out);
        }
    }

    fn on_datagram(&mut self, _dir: StreamDir, ts_ns: u64, data: &[u8], orig_len: u32, out: &mut Emit) {
        let wire = (orig_len as u64).max(data.len() as u64);
        self.on_message(ts_ns, data, wire, wire > data.len() as u64, out);
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        for p in self.pending.drain() {
            Self::emit_unanswered(p, ts_ns, outcome, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        for p in self.pending.expire(deadline_ns) {
            Self::emit_unanswered(p, end, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::conn;
    use hickory_proto::op::{MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::{rdata, Name, RData, Record};
    use proptest::prelude::*;
    use std::str::FromStr;

    fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn response(id: u16, name: &str, rcode: ResponseCode, answers: Vec<RData>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let n = Name::from_str(name).unwrap();
        m.add_query(Query::query(n.clone(), RecordType::A));
        for a in answers {
            m.add_answer(Record::from_rdata(n.clone(), 60, a));
        }
        m.to_vec().unwrap()
    }

    fn dns(ex: &Exchange) -> &DnsDetail {
        match &ex.detail {
            Detail::Dns(d) => d,
            _ => panic!(),
        }
    }

    fn framed(m: &[u8]) -> Vec<u8> {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    }

    #[test]
    fn udp_pairs_by_id() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let q1 = query(1, "a.example.", RecordType::A);
        let q2 = query(2, "b.example.", RecordType::AAAA);
        assert_eq!(probe(&c, StreamDir::ToServer, &q1), Probe::Yes(80));
        let mut e = Emit { conn: &c, out: &mut out };
        d.on_datagram(StreamDir::ToServer, 1, &q1, q1.len() as u32, &mut e);
        d.on_datagram(StreamDir::ToServer, 2, &q2, q2.len() as u32, &mut e);
        let r2 = response(2, "b.example.", ResponseCode::NXDomain, vec![]);
        let r1 = response(
            1,
            "a.example.",
            ResponseCode::NoError,
            vec![
                RData::CNAME(rdata::CNAME(Name::from_str("c.example.").unwrap())),
                RData::A("10.0.0.1".parse().unwrap()),
            ],
        );
        d.on_datagram(StreamDir::ToClient, 3, &r2, r2.len() as u32, &mut e);
        d.on_datagram(StreamDir::ToClient, 4, &r1, r1.len() as u32, &mut e);
        assert_eq!(out.len(), 2);
        let b = dns(&out[0]);
        assert_eq!(
            (b.id, b.question_name.as_deref(), b.question_type.as_deref()),
            (2, Some("b.example"), Some("AAAA"))
        );
        assert_eq!(b.rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (2, 3));
        let a = dns(&out[1]);
        assert_eq!(a.answers, vec!["CNAME c.example", "A 10.0.0.1"]);
        assert_eq!((a.answer_count, a.transport.as_str(), a.question_class.as_deref()), (2, "udp", Some("IN")));
    }

    #[test]
    fn truncated_datagram_keeps_question() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let q = query(7, "x.example.", RecordType::A);
        let r = response(7, "x.example.", ResponseCode::NoError, vec![RData::A("10.0.0.9".parse().unwrap()); 20]);
        let mut e = Emit { conn: &c, out: &mut out };
        d.on_datagram(StreamDir::ToServer, 1, &q, q.len() as u32, &mut e);
        d.on_datagram(StreamDir::ToClient, 2, &r[..60], r.len() as u32, &mut e);
        assert_eq!(out.len(), 1);
        assert!(out[0].partial);
        assert_eq!(dns(&out[0]).answer_count, 20);
        assert_eq!(out[0].response_bytes, r.len() as u64);
    }

    #[test]
    fn tcp_multi_message_split_and_gap() {
        let c = conn(Transport::Tcp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut qs = framed(&query(1, "a.example.", RecordType::A));
        qs.extend(framed(&query(2, "b.example.", RecordType::MX)));
        assert_eq!(probe(&c, StreamDir::ToServer, &qs[..5]), Probe::NeedMore);
        assert_eq!(probe(&c, StreamDir::ToServer, &qs), Probe::Yes(85));
        assert_eq!(probe(&c, StreamDir::ToServer, b"\x00\x00\x00\x10\x00\x03"), Probe::No);
        let mut e = Emit { conn: &c, out: &mut out };
        for (i, b) in qs.chunks(7).enumerate() {
            d.on_data(StreamDir::ToServer, i as u64, b, &mut e);
        }
        let big =
            framed(&response(1, "a.example.", ResponseCode::NoError, vec![RData::A("10.0.0.1".parse().unwrap()); 30]));
        d.on_data(StreamDir::ToClient, 100, &big[..40], &mut e);
        d.on_gap(StreamDir::ToClient, 101, 100, &mut e);
        d.on_data(StreamDir::ToClient, 102, &big[140..], &mut e);
        d.on_data(
            StreamDir::ToClient,
            103,
            &framed(&response(2, "b.example.", ResponseCode::ServFail, vec![])),
            &mut e,
        );
        assert_eq!(e.out.len(), 2);
        assert!(e.out[0].partial);
        assert_eq!(dns(&e.out[0]).transport, "tcp");
        assert_eq!(dns(&e.out[1]).rcode.as_deref(), Some("SERVFAIL"));
        assert!(!e.out[1].partial);
        assert_eq!(dns(&e.out[1]).question_type.as_deref(), Some("MX"));
        // Lost framing entirely: resynchronise on the next whole message.
        d.on_gap(StreamDir::ToClient, 104, 5, &mut e);
        d.on_data(StreamDir::ToClient, 105, b"\x01\x02\x03", &mut e);
        d.on_data(StreamDir::ToServer, 106, &framed(&query(3, "c.example.", RecordType::A)), &mut e);
        d.on_data(StreamDir::ToClient, 107, &framed(&response(3, "c.example.", ResponseCode::NoError, vec![])), &mut e);
        assert_eq!(e.out.len(), 3);
        assert_eq!(dns(&e.out[2]).id, 3);
    }

    #[test]
    fn unanswered_queries_time_out() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let q = query(9, "t.example.", RecordType::A);
        let mut e = Emit { conn: &c, out: &mut out };
        d.on_datagram(StreamDir::ToServer, 5, &q, q.len() as u32, &mut e);
        d.on_close(50, CloseReason::Idle, &mut e);
        assert_eq!(out[0].outcome, Outcome::Timeout);
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..300), 0..40)) {
            for t in [Transport::Udp, Transport::Tcp] {
                let c = conn(t, 53);
                let mut out = Vec::new();
                let mut d = DnsDecoder::new(&DecodeConfig::default());
                let mut e = Emit { conn: &c, out: &mut out };
                for (i, (up, bytes, gap)) in chunks.iter().enumerate() {
                    let dir = if *up { StreamDir::ToServer } else { StreamDir::ToClient };
                    let _ = probe(&c, dir, bytes);
                    match t {
                        Transport::Udp => d.on_datagram(dir, i as u64, bytes, bytes.len() as u32 + *gap as u32, &mut e),
                        _ if *gap > 250 => d.on_gap(dir, i as u64, *gap, &mut e),
                        _ => d.on_data(dir, i as u64, bytes, &mut e),
                    }
                    prop_assert!(d.tcp.iter().all(|s| s.buf.len() <= MAX_TCP_MESSAGE));
                }
                d.on_close(1000, CloseReason::Fin, &mut e);
            }
        }
    }
}
