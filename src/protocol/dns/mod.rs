//! DNS over UDP and TCP (hickory-proto for message decoding).
//!
//! UDP: one message per datagram. TCP: 2-byte length-prefixed messages, any
//! number per connection, reassembled across segments. Queries and responses
//! are told apart by the QR bit (not by direction) and paired by transaction
//! id and question (name, type, class) within the connection (the flow's
//! 5-tuple): a response whose question differs from the query's is not its
//! answer (RFC 5452 §9.1). mDNS (port 5353, RFC 6762) uses id 0 everywhere and
//! its responses may carry only answers: those pair with the query whose
//! question names an answer; responses that answer no query here
//! (announcements, answers to other hosts) give no exchange and are counted.
//! A message cut short by the snap length or a gap still yields its header
//! and question (partial).
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::DnsDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "dns")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "dns")]));
/// mDNS responses answering no query of this flow: dropped, no exchange.
static UNSOLICITED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "dns"), ("reason", "unsolicited")]));
/// Responses whose id matches a pending query but whose question does not.
static MISMATCH: LazyLock<Counter> = LazyLock::new(|| {
    counter("cnflow.protocol.unmatched_responses", &[("protocol", "dns"), ("reason", "question_mismatch")])
});

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

/// An mDNS response without a question (announcement or multicast answer,
/// RFC 6762 §6): claimed on port 5353 so that its flow is labelled and the
/// decoder counts it as unsolicited.
fn mdns_announcement(conn: &Conn, h: &Header) -> bool {
    is_mdns(conn) && h.response && h.opcode == 0 && h.qdcount == 0 && h.ancount > 0
}

/// An mDNS query asking several questions at once (RFC 6762 §5.3: browsers
/// and Apple devices ask for `_raop._tcp.local`, `_companion-link._tcp.local`
/// ... in one datagram). Unicast DNS never does, so it stays out of
/// [`plausible`]; outside captures had these as the largest class of missed
/// DNS queries.
fn mdns_multi_question(conn: &Conn, h: &Header) -> bool {
    is_mdns(conn) && !h.response && h.opcode == 0 && h.rcode == 0 && (2..=64).contains(&h.qdcount)
}

/// NetBIOS Name Service (RFC 1002, UDP 137) uses the DNS message format, but
/// its names are one 32-byte label of `A`..`P` (a 16-byte NetBIOS name, each
/// nibble + 'A') and its record types NB (0x20) / NBSTAT (0x21). Replays of
/// real office captures showed every NBNS broadcast labelled `dns` (with
/// names like `fhfaebeecaca...`). Checked on content, not on port 137:
/// NIMLOC (32) is obsolete and SRV (33) names start with `_service`, so no
/// DNS question has this shape.
fn netbios_name_service(msg: &[u8]) -> bool {
    let Some(rest) = msg.get(12..) else { return false };
    if rest.first() != Some(&32) {
        return false;
    }
    let Some(label) = rest.get(1..33) else { return false };
    if !label.iter().all(|b| matches!(b.to_ascii_uppercase(), b'A'..=b'P')) {
        return false;
    }
    // Skip the NetBIOS scope (further labels, rarely used) to the record type.
    let mut i = 33;
    while let Some(&len) = rest.get(i) {
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        i += 1 + len as usize;
    }
    let at = if rest.get(i).is_some_and(|l| l & 0xC0 == 0xC0) { i + 2 } else { i + 1 };
    matches!(rest.get(at..at + 2), Some([0, 0x20 | 0x21]))
}

/// The first question's class is one DNS uses: IN, CH, HS, NONE or ANY (the
/// top bit is mDNS's unicast-response flag). Another protocol's bytes read as
/// a DNS header give a random class: MikroTik's neighbour discovery (UDP
/// 5678) read as an UPDATE of class 19790 in an nDPI capture. A message
/// without a question (mDNS announcement) passes.
fn question_class_plausible(msg: &[u8]) -> bool {
    match header(msg) {
        Some(h) if h.qdcount == 0 => true,
        _ => first_question(msg).is_some_and(|q| matches!(u16::from(q.query_class()) & 0x7fff, 1 | 3 | 4 | 254 | 255)),
    }
}

/// Does the first data of a connection look like DNS? `dir` is the direction of `data`.
pub fn probe(conn: &Conn, _dir: StreamDir, data: &[u8]) -> Probe {
    match conn.transport {
        Transport::Udp => match header(data) {
            // Port 137 too: fuzzed or damaged NBNS names (nDPI's fuzz capture)
            // fail the content check, and no DNS server listens there.
            Some(_) if netbios_name_service(data) || conn.server.port() == 137 || conn.client.port() == 137 => {
                Probe::No
            }
            Some(h) if plausible(&h) || mdns_announcement(conn, &h) || mdns_multi_question(conn, &h) => {
                if !question_class_plausible(data) {
                    Probe::No
                } else if Message::from_vec(data).is_ok() {
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
                    if Message::from_vec(&data[2..2 + len]).is_ok() && question_class_plausible(&data[2..2 + len]) {
                        Probe::Yes(85)
                    } else {
                        Probe::No
                    }
                }
                // A long message still arriving: its question must already
                // parse (NetPerfMeter's data on TCP 9000 has a DNS-like header
                // and length prefix, and was labelled DNS on that alone).
                Some(_) if data.len() >= 1024 => {
                    if question_class_plausible(&data[2..]) {
                        Probe::Yes(40)
                    } else {
                        Probe::No
                    }
                }
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

/// hickory's name where it has one, else the IANA registry's, else RFC 3597 `TYPEn`.
fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => iana_type_name(n).map_or_else(|| format!("TYPE{n}"), str::to_string),
        t => t.to_string(),
    }
}

/// IANA "Resource Record (RR) TYPEs" registry, obsolete and meta types
/// included (https://www.iana.org/assignments/dns-parameters, 2024 edition).
fn iana_type_name(n: u16) -> Option<&'static str> {
    const LOW: [&str; 69] = [
        "",
        "A",
        "NS",
        "MD",
        "MF",
        "CNAME",
        "SOA",
        "MB",
        "MG",
        "MR",
        "NULL",
        "WKS",
        "PTR",
        "HINFO",
        "MINFO",
        "MX",
        "TXT",
        "RP",
        "AFSDB",
        "X25",
        "ISDN",
        "RT",
        "NSAP",
        "NSAP-PTR",
        "SIG",
        "KEY",
        "PX",
        "GPOS",
        "AAAA",
        "LOC",
        "NXT",
        "EID",
        "NIMLOC",
        "SRV",
        "ATMA",
        "NAPTR",
        "KX",
        "CERT",
        "A6",
        "DNAME",
        "SINK",
        "OPT",
        "APL",
        "DS",
        "SSHFP",
        "IPSECKEY",
        "RRSIG",
        "NSEC",
        "DNSKEY",
        "DHCID",
        "NSEC3",
        "NSEC3PARAM",
        "TLSA",
        "SMIMEA",
        "",
        "HIP",
        "NINFO",
        "RKEY",
        "TALINK",
        "CDS",
        "CDNSKEY",
        "OPENPGPKEY",
        "CSYNC",
        "ZONEMD",
        "SVCB",
        "HTTPS",
        "DSYNC",
        "HHIT",
        "BRID",
    ];
    let name = match n {
        0..=68 => LOW[n as usize],
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "NID",
        105 => "L32",
        106 => "L64",
        107 => "LP",
        108 => "EUI48",
        109 => "EUI64",
        128 => "NXNAME",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        258 => "AVC",
        259 => "DOA",
        260 => "AMTRELAY",
        261 => "RESINFO",
        262 => "WALLET",
        263 => "CLA",
        264 => "IPN",
        32768 => "TA",
        32769 => "DLV",
        _ => "",
    };
    (!name.is_empty()).then_some(name)
}

fn opcode_name(op: u8) -> String {
    match op {
        0 => "QUERY".into(),
        1 => "IQUERY".into(),
        2 => "STATUS".into(),
        4 => "NOTIFY".into(),
        5 => "UPDATE".into(),
        6 => "DSO".into(),
        n => format!("OPCODE{n}"),
    }
}

/// mDNS: either end on 5353. Its queries and answers set the top class bit
/// (unicast-response / cache-flush, RFC 6762 §5.4, §10.2), not part of the class.
fn is_mdns(conn: &Conn) -> bool {
    conn.server.port() == 5353 || conn.client.port() == 5353
}

fn class_num(c: DNSClass, mdns: bool) -> u16 {
    let n = u16::from(c);
    if mdns {
        n & 0x7fff
    } else {
        n
    }
}

/// What a response must echo to answer a query: id and question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    id: u16,
    /// Lower-cased (0x20 randomisation, RFC 4343); empty when the question was not decoded.
    name: String,
    qtype: u16,
    class: u16,
}

fn key_of(id: u16, q: Option<&Query>, mdns: bool) -> Key {
    match q {
        Some(q) => Key {
            id,
            name: name_str(q.name()).to_ascii_lowercase(),
            qtype: u16::from(q.query_type()),
            class: class_num(q.query_class(), mdns),
        },
        None => Key { id, name: String::new(), qtype: 0, class: 0 },
    }
}

/// Does an answer record (name, type, class) answer the question of `k`?
fn answers_key(k: &Key, a: &(String, u16, u16)) -> bool {
    const CNAME: u16 = 5;
    const ANY: u16 = 255;
    a.0 == k.name && (a.1 == k.qtype || k.qtype == ANY || a.1 == CNAME) && (a.2 == k.class || k.class == ANY)
}

fn class_name(c: DNSClass, mdns: bool) -> String {
    let n = class_num(c, mdns);
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
    /// Answer records as (lower-cased name, type, class): pairs answer-only mDNS responses.
    answer_keys: Vec<(String, u16, u16)>,
    /// UPDATE: first record of the update section (name, type).
    update: Option<(String, String)>,
    partial: bool,
}

fn decode(msg: &[u8], truncated_by_capture: bool, mdns: bool) -> Option<Decoded> {
    let h = header(msg)?;
    match Message::from_vec(msg) {
        Ok(m) => {
            let (answers, answer_keys) = answer_fields(&m.answers, mdns);
            // RFC 2136: the authority section of an UPDATE is its update section.
            let update = (h.opcode == 5)
                .then(|| m.authorities.first().map(|r| (name_str(&r.name), type_name(r.record_type()))))
                .flatten();
            Some(Decoded {
                h,
                question: m.queries.into_iter().next(),
                rcode: u16::from(m.metadata.response_code),
                answers,
                answer_count: m.answers.len().min(u16::MAX as usize) as u16,
                answer_keys,
                update,
                partial: false,
            })
        }
        Err(_) => {
            if !truncated_by_capture {
                if let Some((question, records)) = leading_sections(msg, &h) {
                    // Only a later section failed (e.g. an mDNS NSEC in the
                    // additionals): what is exported was all decoded.
                    let (answers, answer_keys) = answer_fields(&records, mdns);
                    return Some(Decoded {
                        h,
                        question,
                        rcode: h.rcode as u16,
                        answers,
                        answer_count: h.ancount,
                        answer_keys,
                        update: None,
                        partial: false,
                    });
                }
                PARSE_ERRORS.inc();
            }
            Some(Decoded {
                h,
                question: first_question(msg),
                rcode: h.rcode as u16,
                answers: Vec::new(),
                answer_count: h.ancount,
                answer_keys: Vec::new(),
                update: None,
                partial: true,
            })
        }
    }
}

/// Answers as "TYPE data" and as pairing keys (lower-cased name, type, class).
fn answer_fields(records: &[Record], mdns: bool) -> (Vec<String>, Vec<(String, u16, u16)>) {
    let kept = &records[..records.len().min(MAX_ANSWERS)];
    let text = kept.iter().map(|r| format!("{} {}", type_name(r.record_type()), name_str(&r.data))).collect();
    let keys = kept
        .iter()
        .map(|r| (name_str(&r.name).to_ascii_lowercase(), u16::from(r.record_type()), class_num(r.dns_class, mdns)))
        .collect();
    (text, keys)
}

/// Question and answer sections of a message whose later sections do not
/// decode; None when these two do not decode either. Not for UPDATE, whose
/// record sections mean something else.
fn leading_sections(msg: &[u8], h: &Header) -> Option<(Option<Query>, Vec<Record>)> {
    if h.opcode == 5 || h.qdcount > 1 {
        return None;
    }
    let mut d = BinDecoder::new(msg);
    d.read_slice(12).ok()?;
    let question = if h.qdcount == 1 { Some(Query::read(&mut d).ok()?) } else { None };
    let mut records = Vec::new();
    for _ in 0..h.ancount.min(MAX_ANSWERS as u16) {
        records.push(Record::read(&mut d).ok()?);
    }
    Some((question, records))
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
    pending: KeyedPairer<Key, Pending>,
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
            // Over UDP the transaction id (with the client's port) is what
            // both ends of a NATed lookup share; over TCP the dispatcher
            // fills in sequence numbers.
            wire: crate::exchange::Wire {
                txn_id: (out.conn.transport == Transport::Udp).then_some(d.id),
                ..Default::default()
            },
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
        let mdns = is_mdns(out.conn);
        let Some(d) = decode(msg, truncated, mdns) else { return };
        let partial = d.partial || truncated;
        let mut detail = DnsDetail { id: d.h.id, transport: Self::transport(out.conn), ..Default::default() };
        if let Some(q) = &d.question {
            detail.question_name = Some(name_str(q.name()));
            detail.question_type = Some(type_name(q.query_type()));
            detail.question_class = Some(class_name(q.query_class(), mdns));
        }
        if d.h.opcode != 0 {
            detail.opcode = Some(opcode_name(d.h.opcode));
        }
        if let Some((n, t)) = d.update.clone() {
            detail.update_name = Some(n);
            detail.update_type = Some(t);
        }
        let key = key_of(d.h.id, d.question.as_ref(), mdns);
        if !d.h.response {
            let p = Pending { ts, bytes: wire_len, detail, partial };
            for old in self.pending.insert(key, ts, p) {
                EVICTED.inc();
                let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
                Self::emit_unanswered(old, end, Outcome::Timeout, out);
            }
            return;
        }
        let (start, req_bytes, mut merged, req_partial) = match self.take_query(&key, &d) {
            Some(p) => (p.ts, p.bytes, p.detail, p.partial),
            None if mdns => {
                // Announcement or answer to another host's query: nothing asked it here.
                UNSOLICITED.inc();
                return;
            }
            None => {
                if self.pending.any_key(|k| k.id == key.id) {
                    MISMATCH.inc();
                }
                // Response without its query: capture started late or the query was lost.
                (ts, 0, detail.clone(), true)
            }
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

    /// The pending query a response answers: same id and question; without a
    /// question, the query named by an answer (mDNS), else (unicast, no
    /// answers) the oldest with the id. An undecoded query pairs on its id.
    fn take_query(&mut self, key: &Key, d: &Decoded) -> Option<Pending> {
        let id = key.id;
        if d.question.is_some() {
            return self.pending.take(key).or_else(|| self.pending.take_where(|k| k.id == id && k.name.is_empty()));
        }
        if !d.answer_keys.is_empty() {
            let found = self.pending.take_where(|k| k.id == id && d.answer_keys.iter().any(|a| answers_key(k, a)));
            if found.is_some() || id == 0 {
                return found;
            }
        }
        if id == 0 {
            return None;
        }
        self.pending.take_where(|k| k.id == id)
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
        response_t(id, name, RecordType::A, rcode, answers)
    }

    fn response_t(id: u16, name: &str, t: RecordType, rcode: ResponseCode, answers: Vec<RData>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let n = Name::from_str(name).unwrap();
        m.add_query(Query::query(n.clone(), t));
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
        let r2 = response_t(2, "b.example.", RecordType::AAAA, ResponseCode::NXDomain, vec![]);
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
            &framed(&response_t(2, "b.example.", RecordType::MX, ResponseCode::ServFail, vec![])),
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

    fn feed(d: &mut DnsDecoder, e: &mut Emit, ts: u64, m: &[u8]) {
        d.on_datagram(StreamDir::ToServer, ts, m, m.len() as u32, e);
    }

    fn mdns_response(id: u16, question: Option<(&str, RecordType)>, answers: &[(&str, RData)]) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        if let Some((n, t)) = question {
            m.add_query(Query::query(Name::from_str(n).unwrap(), t));
        }
        for (n, a) in answers {
            let mut r = Record::from_rdata(Name::from_str(n).unwrap(), 120, a.clone());
            // Cache-flush bit (RFC 6762 §10.2) on top of IN.
            r.dns_class = DNSClass::Unknown(0x8001);
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    /// NBNS datagrams as Windows sends them (name query broadcast and a
    /// registration with its NB record, RFC 1002 §4.2) are not DNS; a DNS
    /// question for a 32-letter a..p label of another type still is.
    #[test]
    fn netbios_name_service_is_not_dns() {
        let c = conn(Transport::Udp, 137);
        // "WORKGROUP" padded with spaces, suffix 0x00, first-level encoded.
        let name = b"FHEPFCELEHFCEPFFFACACACACACACAAA";
        let mut q = vec![0x82, 0x28, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 32];
        q.extend_from_slice(name);
        q.extend_from_slice(&[0, 0, 0x20, 0, 1]);
        assert_eq!(probe(&c, StreamDir::ToServer, &q), Probe::No);
        let mut stat = q.clone();
        let n = stat.len();
        stat[n - 3] = 0x21;
        assert_eq!(probe(&c, StreamDir::ToServer, &stat), Probe::No);
        // Registration (opcode 5, like a DNS UPDATE) with an additional NB record
        // whose name points back to the question.
        let mut reg = vec![0x82, 0x29, 0x29, 0x10, 0, 1, 0, 0, 0, 0, 0, 1, 32];
        reg.extend_from_slice(name);
        reg.extend_from_slice(&[
            0, 0, 0x20, 0, 1, 0xC0, 12, 0, 0x20, 0, 1, 0, 3, 0xF4, 0x80, 0, 6, 0, 0, 10, 200, 0, 1,
        ]);
        assert_eq!(probe(&c, StreamDir::ToServer, &reg), Probe::No);
        // The same label asked as a TXT record over DNS is DNS.
        let lower = std::str::from_utf8(name).unwrap().to_ascii_lowercase();
        let dnsq = query(7, &format!("{lower}.example."), RecordType::TXT);
        assert_eq!(probe(&conn(Transport::Udp, 53), StreamDir::ToServer, &dnsq), Probe::Yes(80));
        assert_eq!(probe(&c, StreamDir::ToServer, &query(8, "a.example.", RecordType::A)), Probe::No);
        assert_eq!(probe(&c, StreamDir::ToServer, b"\x82\x28\x01\x10\x00\x01\x00\x00\x00\x00\x00\x00\x20"), Probe::No);
    }

    /// A three-question mDNS query is one exchange named after its first
    /// question, answered by a response to any of them... on 5353 only.
    #[test]
    fn mdns_multi_question_query() {
        let c = conn(Transport::Udp, 5353);
        let mut m = Message::new(0, MessageType::Query, OpCode::Query);
        for n in ["_companion-link._tcp.local.", "_homekit._tcp.local.", "_sleep-proxy._udp.local."] {
            m.add_query(Query::query(Name::from_str(n).unwrap(), RecordType::PTR));
        }
        let q = m.to_vec().unwrap();
        assert_eq!(probe(&c, StreamDir::ToServer, &q), Probe::Yes(80));
        assert_eq!(probe(&conn(Transport::Udp, 53), StreamDir::ToServer, &q), Probe::No);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut e = Emit { conn: &c, out: &mut out };
        feed(&mut d, &mut e, 1, &q);
        d.on_close(10_000_000_000, CloseReason::EndOfInput, &mut e);
        assert_eq!(out.len(), 1);
        assert_eq!(dns(&out[0]).question_name.as_deref(), Some("_companion-link._tcp.local"));
    }

    /// Other protocols' bytes with a DNS-like header: a question of an
    /// unknown class (UDP) and a long TCP message whose question does not
    /// parse are not DNS; CH and ANY classes and mDNS's QU bit still are.
    #[test]
    fn question_class_and_long_tcp_message_need_a_real_question() {
        let c = conn(Transport::Udp, 5678);
        // MNDP-like: header of an UPDATE response, question class 0x4D5E.
        let mut m = vec![0, 0, 0xA8, 0x0D, 0, 1, 0, 6, 0, 0, 0, 0, 3, 0x88, 0, 5, 0, 0x05, 0x34, 0x4D, 0x5E];
        assert_eq!(probe(&c, StreamDir::ToServer, &m), Probe::No);
        m[19..21].copy_from_slice(&[0, 1]);
        m[2] = 0x81; // a standard response instead of an UPDATE: class IN now
        assert_ne!(probe(&c, StreamDir::ToServer, &m), Probe::No);
        let mut ch = query(9, "version.bind.", RecordType::TXT);
        let n = ch.len();
        ch[n - 1] = 3; // class CH
        assert_eq!(probe(&conn(Transport::Udp, 53), StreamDir::ToServer, &ch), Probe::Yes(80));
        ch[n - 2] = 0x80; // QU bit + IN
        ch[n - 1] = 1;
        assert_eq!(probe(&conn(Transport::Udp, 5353), StreamDir::ToServer, &ch), Probe::Yes(80));
        // TCP: a 1,400-byte message announced, 1,100 bytes here, no question.
        let t = conn(Transport::Tcp, 9000);
        let mut long = vec![0x05, 0x78, 0, 26, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        long.resize(1100, 0xEE);
        assert_eq!(probe(&t, StreamDir::ToServer, &long), Probe::No);
        let mut real = framed(&query(3, "a.example.", RecordType::TXT));
        real[0..2].copy_from_slice(&1400u16.to_be_bytes());
        real.resize(1100, 0);
        assert_eq!(probe(&conn(Transport::Tcp, 53), StreamDir::ToServer, &real), Probe::Yes(40));
    }

    #[test]
    fn mdns_pairs_on_question_and_drops_announcements() {
        let c = conn(Transport::Udp, 5353);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut e = Emit { conn: &c, out: &mut out };
        let ip: RData = RData::A("10.200.0.7".parse().unwrap());
        let ip6: RData = RData::AAAA("fd00::7".parse().unwrap());
        feed(&mut d, &mut e, 1, &query(0, "a.local.", RecordType::A));
        feed(&mut d, &mut e, 2, &query(0, "b.local.", RecordType::AAAA));
        // Unsolicited announcement of another host: no exchange. Claimed on
        // 5353 only (a question-less response elsewhere is no evidence).
        let ann = mdns_response(0, None, &[("c.local.", ip.clone())]);
        assert_eq!(probe(&c, StreamDir::ToClient, &ann), Probe::Yes(80));
        assert_eq!(probe(&conn(Transport::Udp, 53), StreamDir::ToClient, &ann), Probe::No);
        feed(&mut d, &mut e, 3, &ann);
        // An answer for a.local of the wrong type answers neither query.
        feed(&mut d, &mut e, 4, &mdns_response(0, None, &[("a.local.", ip6.clone())]));
        assert!(e.out.is_empty());
        // Answers only, no question section: paired through the answer name.
        feed(&mut d, &mut e, 5, &mdns_response(0, None, &[("B.local.", ip6)]));
        // With the question echoed (legacy unicast answers, RFC 6762 §6.7).
        feed(&mut d, &mut e, 6, &mdns_response(0, Some(("a.local.", RecordType::A)), &[("a.local.", ip)]));
        assert_eq!(e.out.len(), 2);
        let b = dns(&e.out[0]);
        assert_eq!(
            (b.question_name.as_deref(), b.answers.clone()),
            (Some("b.local"), vec!["AAAA fd00::7".to_string()])
        );
        assert_eq!((e.out[0].start_ns, e.out[0].end_ns, e.out[0].partial), (2, 5, false));
        let a = dns(&e.out[1]);
        assert_eq!((a.question_name.as_deref(), a.question_class.as_deref()), (Some("a.local"), Some("IN")));
        assert_eq!((e.out[1].start_ns, e.out[1].end_ns), (1, 6));
        d.on_close(10, CloseReason::Idle, &mut e);
        assert_eq!(e.out.len(), 2);
    }

    #[test]
    fn unicast_response_with_other_question_is_not_the_answer() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut e = Emit { conn: &c, out: &mut out };
        feed(&mut d, &mut e, 1, &query(5, "a.example.", RecordType::A));
        feed(&mut d, &mut e, 2, &response(5, "b.example.", ResponseCode::NoError, vec![]));
        assert_eq!(e.out.len(), 1);
        assert!(e.out[0].partial);
        assert_eq!(dns(&e.out[0]).question_name.as_deref(), Some("b.example"));
        // Case differences (0x20 randomisation) still pair.
        feed(&mut d, &mut e, 3, &response(5, "A.Example.", ResponseCode::NoError, vec![]));
        assert_eq!(e.out.len(), 2);
        assert!(!e.out[1].partial);
        assert_eq!(e.out[1].start_ns, 1);
        // A response without a question section (FORMERR style) pairs on its id.
        feed(&mut d, &mut e, 4, &query(6, "c.example.", RecordType::TXT));
        let mut m = Message::new(6, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::FormErr;
        feed(&mut d, &mut e, 5, &m.to_vec().unwrap());
        assert_eq!(e.out.len(), 3);
        assert_eq!(dns(&e.out[2]).rcode.as_deref(), Some("FORMERR"));
        assert_eq!(dns(&e.out[2]).question_name.as_deref(), Some("c.example"));
    }

    #[test]
    fn update_names_the_record_not_the_zone() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut e = Emit { conn: &c, out: &mut out };
        let zone = Name::from_str("example.test.").unwrap();
        let mut u = Message::new(77, MessageType::Query, OpCode::Update);
        u.add_query(Query::query(zone.clone(), RecordType::SOA));
        u.authorities.push(Record::from_rdata(
            Name::from_str("www.example.test.").unwrap(),
            300,
            RData::A("10.200.0.9".parse().unwrap()),
        ));
        let mut r = Message::new(77, MessageType::Response, OpCode::Update);
        r.add_query(Query::query(zone, RecordType::SOA));
        feed(&mut d, &mut e, 1, &u.to_vec().unwrap());
        feed(&mut d, &mut e, 2, &r.to_vec().unwrap());
        assert_eq!(e.out.len(), 1);
        let x = dns(&e.out[0]);
        assert_eq!(
            (x.question_name.as_deref(), x.question_type.as_deref(), x.opcode.as_deref()),
            (Some("example.test"), Some("SOA"), Some("UPDATE"))
        );
        assert_eq!((x.update_name.as_deref(), x.update_type.as_deref()), (Some("www.example.test"), Some("A")));
        let parts = semconv::span_parts(
            &e.out[0],
            x,
            crate::otel::span::Kind::Client,
            &crate::otel::span::NamingOptions::default(),
        );
        assert_eq!(parts.name, "UPDATE A www.example.test");
        assert!(parts.attrs.iter().any(|(k, v)| *k == "dns.question.name" && *v == "example.test".into()));
    }

    #[test]
    fn bad_additional_record_keeps_question_and_answers() {
        let c = conn(Transport::Udp, 53);
        let mut out = Vec::new();
        let mut d = DnsDecoder::new(&DecodeConfig::default());
        let mut e = Emit { conn: &c, out: &mut out };
        let mut r = response(4, "a.example.", ResponseCode::NoError, vec![RData::A("10.0.0.4".parse().unwrap())]);
        // One additional A record with a 3-byte address: the message as a whole does not decode.
        r[11] = 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3]);
        assert!(Message::from_vec(&r).is_err());
        feed(&mut d, &mut e, 1, &query(4, "a.example.", RecordType::A));
        feed(&mut d, &mut e, 2, &r);
        assert_eq!(e.out.len(), 1);
        assert!(!e.out[0].partial);
        assert_eq!(dns(&e.out[0]).answers, vec!["A 10.0.0.4"]);
    }

    #[test]
    fn every_iana_type_has_its_name() {
        for (n, name) in [
            (3, "MD"),
            (11, "WKS"),
            (23, "NSAP-PTR"),
            (38, "A6"),
            (64, "SVCB"),
            (65, "HTTPS"),
            (99, "SPF"),
            (109, "EUI64"),
            (249, "TKEY"),
            (250, "TSIG"),
            (253, "MAILB"),
            (256, "URI"),
            (32769, "DLV"),
            (54, "TYPE54"),
            (70, "TYPE70"),
            (65280, "TYPE65280"),
        ] {
            assert_eq!(type_name(RecordType::from(n)), name, "{n}");
        }
        // The table agrees with hickory wherever hickory has a name (ZERO and
        // the ANAME draft's private-use number are hickory's own).
        for n in 0..=u16::MAX {
            let t = RecordType::from(n);
            if !matches!(t, RecordType::Unknown(_) | RecordType::ZERO | RecordType::ANAME) {
                assert_eq!(iana_type_name(n), Some(t.to_string().as_str()), "{n}");
            }
        }
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
