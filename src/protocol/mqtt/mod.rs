//! MQTT 3.1, 3.1.1 and 5.0 control packets: a fixed header (type, flags,
//! remaining length as a variable byte integer) and a body, parsed by hand
//! with bounds (a bounded prefix of each body is kept, the rest skipped).
//!
//! Exchanges:
//! - CONNECT → CONNACK (return/reason code ≠ 0 is an error);
//! - PUBLISH from the client: QoS 0 is sent without an answer (an exchange of
//!   its own); QoS 1 ends at the PUBACK, QoS 2 at the PUBCOMP (or at a
//!   failing PUBREC), paired by packet id;
//! - PUBLISH from the server (a delivery): QoS 0 stands alone; QoS 1/2 end at
//!   the client's PUBACK/PUBCOMP (the server's and the client's packet ids
//!   are separate spaces);
//! - SUBSCRIBE → SUBACK, UNSUBSCRIBE → UNSUBACK by packet id; PINGREQ →
//!   PINGRESP in order; DISCONNECT from the client stands alone.
//!
//! MQTT 5 properties are skipped by their length; a PUBLISH's are read for
//! the topic alias and the `traceparent`/`tracestate` user properties.
use super::resync::Resync;
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, FifoPairer, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::collections::HashMap;
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::MqttDetail;

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "mqtt")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "mqtt")]));
static UNMATCHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.unmatched_responses", &[("protocol", "mqtt")]));
static RESYNC_SKIPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.resync_skipped_bytes", &[("protocol", "mqtt")]));

/// Largest remaining length the encoding allows.
const MAX_REMAINING: u32 = 268_435_455;
/// Largest CONNECT the probe believes in.
const MAX_CONNECT: u32 = 1024 * 1024;
const MAX_TOKEN: usize = 256;
const MAX_LIST: usize = 16;
const MAX_ALIASES: usize = 256;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

fn type_name(t: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "RESERVED",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    NAMES[(t & 15) as usize]
}

/// First byte of a fixed header valid in direction `dir` (type, and the
/// flags the specification fixes).
fn valid_first_byte(b: u8, dir: StreamDir) -> bool {
    let (t, flags) = (b >> 4, b & 15);
    let flags_ok = match t {
        PUBLISH => (flags >> 1) & 3 != 3,
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => flags == 2,
        0 => false,
        _ => flags == 0,
    };
    let dir_ok = match t {
        CONNECT | SUBSCRIBE | UNSUBSCRIBE | PINGREQ => dir == StreamDir::ToServer,
        CONNACK | SUBACK | UNSUBACK | PINGRESP => dir == StreamDir::ToClient,
        _ => true,
    };
    flags_ok && dir_ok
}

/// Variable byte integer at the start of `b`: Ok(None) when more bytes are
/// needed, Err on a malformed (over-long) encoding.
fn varint(b: &[u8]) -> Result<Option<(u32, usize)>, ()> {
    let mut v: u32 = 0;
    for i in 0..4 {
        let Some(&x) = b.get(i) else { return Ok(None) };
        v |= ((x & 0x7f) as u32) << (7 * i);
        if x & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err(())
}

/// Bounded reader over a body (prefix).
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<String> {
        self.bin().map(|b| String::from_utf8_lossy(b).chars().take(MAX_TOKEN).collect())
    }
    fn varint(&mut self) -> Option<u32> {
        let (v, n) = varint(&self.b[self.pos.min(self.b.len())..]).ok()??;
        self.pos += n;
        Some(v)
    }
    /// An MQTT 5 property block, as a reader over its bytes.
    fn props(&mut self) -> Option<Reader<'a>> {
        let n = self.varint()? as usize;
        self.take(n).map(Reader::new)
    }
}

/// Content detection: a CONNECT naming the protocol "MQTT" (3.1.1, 5.0) or
/// "MQIsdp" (3.1) at the right level. Servers never speak first.
pub fn probe(_conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
    if dir != StreamDir::ToServer {
        return Probe::No;
    }
    match data.first() {
        None => return Probe::NeedMore,
        Some(0x10) => {}
        Some(_) => return Probe::No,
    }
    let (len, n) = match varint(&data[1..]) {
        Err(()) => return Probe::No,
        Ok(None) => return Probe::NeedMore,
        Ok(Some(v)) => v,
    };
    if !(10..=MAX_CONNECT).contains(&len) {
        return Probe::No;
    }
    let vh = &data[1 + n..];
    const V4: &[u8] = b"\x00\x04MQTT";
    const V3: &[u8] = b"\x00\x06MQIsdp";
    for (name, levels) in [(V4, &[4u8, 5][..]), (V3, &[3u8][..])] {
        let k = vh.len().min(name.len());
        if vh[..k] != name[..k] {
            continue;
        }
        return match vh.get(name.len()) {
            None => Probe::NeedMore,
            Some(l) if levels.contains(l) => Probe::Yes(90),
            Some(_) => Probe::No,
        };
    }
    Probe::No
}

/// What one direction's bytes look like as a run of MQTT packets (joined
/// mid-connection): the packet ids that ask for an answer and the ids that
/// answer, each with the packet type that carries it.
#[derive(Default)]
struct IdScan {
    ids: Vec<(u8, u16)>,
    complete: usize,
}

/// Most packets looked at per direction by the mid-connection probe.
const PROBE_PACKETS: usize = 32;

/// Reads `data` as consecutive MQTT packets sent in `dir`. None when a
/// packet is impossible there (type, flags, length, a PUBLISH topic that is
/// not UTF-8 or holds a wildcard); an unfinished last packet is allowed.
fn scan_ids(data: &[u8], dir: StreamDir) -> Option<IdScan> {
    let mut scan = IdScan::default();
    let mut at = 0;
    while at < data.len() && scan.complete < PROBE_PACKETS {
        let first = data[at];
        let t = first >> 4;
        if !valid_first_byte(first, dir) || matches!(t, CONNECT | AUTH) {
            return None;
        }
        let (len, n) = match varint(&data[at + 1..]) {
            Err(()) => return None,
            Ok(None) => break,
            Ok(Some(v)) => v,
        };
        let len = len as usize;
        let body_at = at + 1 + n;
        let body = &data[body_at.min(data.len())..(body_at + len).min(data.len())];
        let id_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        match t {
            PINGREQ | PINGRESP if len != 0 => return None,
            PUBACK | PUBREC | PUBREL | PUBCOMP | UNSUBACK if len < 2 => return None,
            SUBACK | SUBSCRIBE | UNSUBSCRIBE if len < 3 => return None,
            CONNACK if len < 2 => return None,
            PUBLISH => {
                let qos = (first >> 1) & 3;
                let Some(tl) = id_at(0) else { break };
                let tl = tl as usize;
                if tl == 0 || 2 + tl + if qos > 0 { 2 } else { 0 } > len {
                    return None;
                }
                let Some(topic) = body.get(2..2 + tl) else { break };
                match std::str::from_utf8(topic) {
                    Ok(t) if !t.contains(['+', '#', '\0']) && !t.chars().any(char::is_control) => {}
                    _ => return None,
                }
                if qos > 0 {
                    let Some(id) = id_at(2 + tl) else { break };
                    if id == 0 {
                        return None;
                    }
                    scan.ids.push((PUBLISH, id));
                }
            }
            PUBACK | PUBREC | PUBREL | PUBCOMP | SUBACK | UNSUBACK | SUBSCRIBE | UNSUBSCRIBE => {
                let Some(id) = id_at(0) else { break };
                if id == 0 {
                    return None;
                }
                scan.ids.push((t, id));
            }
            _ => {}
        }
        if body_at + len > data.len() {
            break;
        }
        at = body_at + len;
        scan.complete += 1;
    }
    Some(scan)
}

/// Joined mid-connection (no CONNECT seen): evidence is an exchange the two
/// sides agree on — a packet id asked for by one side (PUBLISH QoS 1/2,
/// SUBSCRIBE, UNSUBSCRIBE, PUBREL) answered by the matching type with the
/// same id by the other. Keep-alive pings alone are two bytes each and
/// prove nothing.
fn probe_mid_connection(to_server: &[u8], to_client: &[u8]) -> Probe {
    let (Some(up), Some(down)) = (scan_ids(to_server, StreamDir::ToServer), scan_ids(to_client, StreamDir::ToClient))
    else {
        return Probe::No;
    };
    let answers = |asks: &IdScan, replies: &IdScan| {
        asks.ids.iter().any(|&(t, id)| {
            let want: &[u8] = match t {
                PUBLISH => &[PUBACK, PUBREC],
                PUBREC => &[PUBREL],
                PUBREL => &[PUBCOMP],
                SUBSCRIBE => &[SUBACK],
                UNSUBSCRIBE => &[UNSUBACK],
                _ => &[],
            };
            replies.ids.iter().any(|&(rt, rid)| rid == id && want.contains(&rt))
        })
    };
    if answers(&up, &down) || answers(&down, &up) {
        Probe::Yes(70)
    } else if up.complete + down.complete < PROBE_PACKETS {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(MqttDecoder::new(cfg))
}

/// MQTT. The registry entry.
pub struct Mqtt;

impl super::registry::L7Protocol for Mqtt {
    const NAME: &'static str = "mqtt";
    const TRANSPORTS: &'static [Transport] = &[Transport::Tcp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn probe_flow(conn: &Conn, to_server: &[u8], to_client: &[u8]) -> Probe {
        match to_server.first() {
            Some(0x10) => probe(conn, StreamDir::ToServer, to_server),
            _ => probe_mid_connection(to_server, to_client),
        }
    }
    fn port_hint(port: u16) -> bool {
        port == 1883
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Head,
    Body,
    Lost,
}

struct DirRx {
    state: Rx,
    head: [u8; 5],
    head_n: usize,
    remaining: u32,
    got: u32,
    buf: Vec<u8>,
    cut: bool,
    /// Bytes were lost inside the body: nothing after the hole is kept.
    hole: bool,
    start_ns: u64,
    resync: Resync,
}

impl DirRx {
    fn new() -> Self {
        Self {
            state: Rx::Head,
            head: [0; 5],
            head_n: 0,
            remaining: 0,
            got: 0,
            buf: Vec::new(),
            cut: false,
            hole: false,
            start_ns: 0,
            resync: Resync::default(),
        }
    }
}

struct Pending {
    start_ns: u64,
    sent_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    detail: MqttDetail,
    partial: bool,
}

impl Pending {
    /// Bytes to the server count as the request's, to the client as the response's.
    fn add_bytes(&mut self, dir: StreamDir, n: u64) {
        match dir {
            StreamDir::ToServer => self.request_bytes += n,
            StreamDir::ToClient => self.response_bytes += n,
        }
    }
}

/// One whole packet (its body possibly cut).
struct Packet<'a> {
    first: u8,
    body: &'a [u8],
    remaining: u32,
    wire: u64,
    cut: bool,
    start_ns: u64,
    end_ns: u64,
}

pub struct MqttDecoder {
    rx: [DirRx; 2],
    level: u8,
    client_id: Option<String>,
    connect: Option<Pending>,
    /// Client-originated PUBLISH (QoS 1/2), SUBSCRIBE, UNSUBSCRIBE by packet id.
    outbound: KeyedPairer<u16, Pending>,
    /// Server-originated PUBLISH (QoS 1/2) awaiting the client's acknowledgement.
    inbound: KeyedPairer<u16, Pending>,
    pings: FifoPairer<Pending>,
    /// MQTT 5 topic aliases, per direction.
    aliases: [HashMap<u16, String>; 2],
    max_buf: usize,
}

impl MqttDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self {
            rx: [DirRx::new(), DirRx::new()],
            level: 0,
            client_id: None,
            connect: None,
            outbound: KeyedPairer::new(cfg.max_pending_per_conn),
            inbound: KeyedPairer::new(cfg.max_pending_per_conn),
            pings: FifoPairer::new(cfg.max_pending_per_conn),
            aliases: [HashMap::new(), HashMap::new()],
            max_buf: cfg.max_buffer_per_dir.max(64),
        }
    }

    fn feed(&mut self, dir: StreamDir, ts: u64, mut data: &[u8], out: &mut Emit) {
        let d = dir.index();
        while !data.is_empty() {
            let rx = &mut self.rx[d];
            match rx.state {
                Rx::Head => {
                    if rx.head_n == 0 {
                        rx.start_ns = ts;
                        if !valid_first_byte(data[0], dir) {
                            PARSE_ERRORS.inc();
                            rx.state = Rx::Lost;
                            rx.resync.clear();
                            continue;
                        }
                    }
                    rx.head[rx.head_n] = data[0];
                    rx.head_n += 1;
                    data = &data[1..];
                    if rx.head_n < 2 {
                        continue;
                    }
                    match varint(&rx.head[1..rx.head_n]) {
                        Ok(None) => continue,
                        Err(()) => {
                            PARSE_ERRORS.inc();
                            let carry = rx.head;
                            let n = rx.head_n;
                            rx.head_n = 0;
                            rx.state = Rx::Lost;
                            rx.resync.restart(&carry[1..n]);
                        }
                        Ok(Some((len, _))) => {
                            rx.remaining = len;
                            rx.got = 0;
                            rx.buf.clear();
                            rx.cut = false;
                            rx.hole = false;
                            rx.state = Rx::Body;
                            if len == 0 {
                                self.finish(dir, ts, out);
                            }
                        }
                    }
                }
                Rx::Body => {
                    let n = ((rx.remaining - rx.got) as usize).min(data.len());
                    if !rx.hole {
                        let room = self.max_buf.saturating_sub(rx.buf.len()).min(n);
                        rx.buf.extend_from_slice(&data[..room]);
                    }
                    rx.got += n as u32;
                    data = &data[n..];
                    if rx.got == rx.remaining {
                        self.finish(dir, ts, out);
                    }
                }
                Rx::Lost => {
                    let found = rx.resync.push(data, self.max_buf, &RESYNC_SKIPPED, |b| find_packet(b, dir));
                    data = &[];
                    if let Some((buf, at)) = found {
                        rx.state = Rx::Head;
                        rx.head_n = 0;
                        self.feed(dir, ts, &buf[at..], out);
                    }
                }
            }
        }
    }

    fn finish(&mut self, dir: StreamDir, ts: u64, out: &mut Emit) {
        let d = dir.index();
        let rx = &mut self.rx[d];
        rx.state = Rx::Head;
        let head_n = rx.head_n;
        rx.head_n = 0;
        let buf = std::mem::take(&mut rx.buf);
        let p = Packet {
            first: rx.head[0],
            body: &buf,
            remaining: rx.remaining,
            wire: head_n as u64 + rx.remaining as u64,
            // Bytes beyond the kept prefix were not lost, only not kept: a
            // body is cut when bytes were missing or its prefix did not hold
            // what was needed (decided where it is parsed).
            cut: rx.cut,
            start_ns: rx.start_ns,
            end_ns: ts,
        };
        self.packet(dir, &p, out);
        let rx = &mut self.rx[d];
        rx.buf = buf;
        rx.buf.clear();
    }

    fn base(&self, ptype: u8) -> MqttDetail {
        MqttDetail {
            packet: type_name(ptype).to_string(),
            protocol_level: self.level,
            client_id: self.client_id.clone(),
            ..Default::default()
        }
    }

    fn v5(&self) -> bool {
        self.level == 5
    }

    fn packet(&mut self, dir: StreamDir, p: &Packet, out: &mut Emit) {
        let t = p.first >> 4;
        let mut r = Reader::new(p.body);
        let to_server = dir == StreamDir::ToServer;
        match t {
            CONNECT if to_server => {
                let mut d = self.base(t);
                let parsed = (|| {
                    let _name = r.bin()?;
                    let level = r.u8()?;
                    let _flags = r.u8()?;
                    let _keep_alive = r.u16()?;
                    if level == 5 {
                        r.props()?;
                    }
                    // The client id; will, user name and password follow and are not read.
                    Some((level, r.str()?))
                })();
                let partial = match parsed {
                    Some((level, id)) => {
                        self.level = level;
                        self.client_id = (!id.is_empty()).then_some(id);
                        false
                    }
                    None => true,
                };
                d.protocol_level = self.level;
                d.client_id = self.client_id.clone();
                let pend = self.pending(p, d, partial);
                if let Some(old) = self.connect.replace(pend) {
                    EVICTED.inc();
                    emit(old, p.start_ns, Outcome::Timeout, out);
                }
            }
            CONNACK if !to_server => {
                let _flags = r.u8();
                let rc = r.u8();
                match self.connect.take() {
                    Some(mut c) => {
                        c.detail.reason_code = rc;
                        self.answer(c, "CONNACK", p, out);
                    }
                    None => UNMATCHED.inc(),
                }
            }
            PUBLISH => self.publish(dir, p, out),
            PUBACK | PUBREC | PUBCOMP => {
                let Some(id) = r.u16() else {
                    PARSE_ERRORS.inc();
                    return;
                };
                // MQTT 5: a reason code (absent = success).
                let rc = if self.v5() { r.u8().unwrap_or(0) } else { 0 };
                let map = if to_server { &mut self.inbound } else { &mut self.outbound };
                if t == PUBREC && rc < 0x80 {
                    // QoS 2 goes on (PUBREL, PUBCOMP).
                    match map.get_mut(&id) {
                        Some(x) => x.add_bytes(dir, p.wire),
                        None => UNMATCHED.inc(),
                    }
                    return;
                }
                match map.take(&id) {
                    Some(mut x) => {
                        if rc >= 0x80 {
                            x.detail.reason_code = Some(rc);
                        }
                        self.answer(x, type_name(t), p, out);
                    }
                    None => UNMATCHED.inc(),
                }
            }
            PUBREL => {
                // Second half of a QoS 2 flow: counted with its exchange.
                let Some(id) = r.u16() else { return };
                let map = if to_server { &mut self.outbound } else { &mut self.inbound };
                if let Some(x) = map.get_mut(&id) {
                    x.add_bytes(dir, p.wire);
                }
            }
            SUBSCRIBE | UNSUBSCRIBE if to_server => {
                let mut d = self.base(t);
                let mut partial = p.cut;
                let id = r.u16();
                if self.v5() && id.is_some() && r.props().is_none() {
                    partial = true;
                }
                while !r.done() && d.topics.len() < MAX_LIST {
                    let Some(f) = r.str() else {
                        partial = true;
                        break;
                    };
                    d.topics.push(f);
                    if t == SUBSCRIBE && r.u8().is_none() {
                        partial = true;
                        break;
                    }
                }
                let Some(id) = id else {
                    PARSE_ERRORS.inc();
                    return;
                };
                d.packet_id = Some(id);
                let pend = self.pending(p, d, partial);
                for old in self.outbound.insert(id, p.start_ns, pend) {
                    EVICTED.inc();
                    emit(old, p.start_ns, Outcome::Timeout, out);
                }
            }
            SUBACK | UNSUBACK if !to_server => {
                let Some(id) = r.u16() else {
                    PARSE_ERRORS.inc();
                    return;
                };
                if self.v5() {
                    r.props();
                }
                let codes: Vec<u8> = std::iter::from_fn(|| r.u8()).take(MAX_LIST).collect();
                match self.outbound.take(&id) {
                    Some(mut x) => {
                        x.detail.reason_code = codes.iter().copied().find(|c| *c >= 0x80);
                        if t == SUBACK {
                            x.detail.granted = codes;
                        }
                        self.answer(x, type_name(t), p, out);
                    }
                    None => UNMATCHED.inc(),
                }
            }
            PINGREQ if to_server => {
                let pend = self.pending(p, self.base(t), false);
                if let Some(old) = self.pings.push(p.start_ns, pend) {
                    EVICTED.inc();
                    emit(old, p.start_ns, Outcome::Timeout, out);
                }
            }
            PINGRESP if !to_server => match self.pings.pop() {
                Some(x) => self.answer(x, "PINGRESP", p, out),
                None => UNMATCHED.inc(),
            },
            DISCONNECT if to_server => {
                let mut d = self.base(t);
                if self.v5() {
                    d.reason_code = r.u8().filter(|c| *c >= 0x80);
                }
                let pend = self.pending(p, d, false);
                emit(pend, p.end_ns, Outcome::Complete, out);
            }
            // Server DISCONNECT (MQTT 5) and AUTH exchanges carry no operation of the client.
            DISCONNECT | AUTH => {}
            _ => PARSE_ERRORS.inc(),
        }
    }

    fn pending(&self, p: &Packet, detail: MqttDetail, partial: bool) -> Pending {
        Pending {
            start_ns: p.start_ns,
            sent_ns: p.end_ns,
            request_bytes: p.wire,
            response_bytes: 0,
            detail,
            partial: partial || p.cut,
        }
    }

    fn answer(&mut self, mut x: Pending, what: &str, p: &Packet, out: &mut Emit) {
        x.detail.response = Some(what.to_string());
        // A delivery is answered by the client, anything else by the server.
        let dir = if x.detail.delivery { StreamDir::ToServer } else { StreamDir::ToClient };
        x.add_bytes(dir, p.wire);
        x.partial |= p.cut;
        emit(x, p.end_ns, Outcome::Complete, out);
    }

    fn publish(&mut self, dir: StreamDir, p: &Packet, out: &mut Emit) {
        let flags = p.first & 15;
        let qos = (flags >> 1) & 3;
        let mut d = self.base(PUBLISH);
        d.qos = Some(qos);
        d.retain = flags & 1 == 1;
        d.dup = flags & 8 == 8;
        d.delivery = dir == StreamDir::ToClient;
        let mut r = Reader::new(p.body);
        let mut partial = p.cut;
        let topic = r.str();
        let id = if qos > 0 { r.u16() } else { None };
        let mut alias = None;
        let header_ok = topic.is_some() && (qos == 0 || id.is_some());
        let props_ok =
            header_ok && (!self.v5() || r.props().is_some_and(|mut pr| user_props(&mut pr, &mut d, &mut alias)));
        if props_ok {
            d.payload_bytes = Some(p.remaining as u64 - r.pos as u64);
        } else {
            // The kept prefix ended inside the header (or it is malformed).
            partial = true;
        }
        let aliases = &mut self.aliases[dir.index()];
        d.topic = match (topic, alias) {
            (Some(t), Some(a)) if !t.is_empty() => {
                if aliases.len() < MAX_ALIASES || aliases.contains_key(&a) {
                    aliases.insert(a, t.clone());
                }
                Some(t)
            }
            (Some(t), Some(a)) if t.is_empty() => aliases.get(&a).cloned(),
            (t, _) => t,
        };
        d.packet_id = id;
        let mut pend = self.pending(p, d, partial);
        if pend.detail.delivery {
            (pend.request_bytes, pend.response_bytes) = (0, p.wire);
        }
        let Some(id) = id.filter(|_| qos > 0) else {
            emit(pend, p.end_ns, Outcome::Complete, out);
            return;
        };
        let map = if dir == StreamDir::ToServer { &mut self.outbound } else { &mut self.inbound };
        if pend.detail.dup && map.get_mut(&id).is_some() {
            // A retransmission of a packet still in flight: the same exchange.
            return;
        }
        for old in map.insert(id, p.start_ns, pend) {
            EVICTED.inc();
            emit(old, p.start_ns, Outcome::Timeout, out);
        }
    }

    fn drain(&mut self, ts: u64, outcome: Outcome, out: &mut Emit) {
        let mut all: Vec<Pending> = self.connect.take().into_iter().collect();
        all.extend(self.outbound.drain());
        all.extend(self.inbound.drain());
        all.extend(self.pings.drain());
        all.sort_by_key(|p| p.start_ns);
        for p in all {
            emit(p, ts, outcome, out);
        }
    }
}

/// Reads a PUBLISH's MQTT 5 properties: the topic alias and the trace
/// context user properties; every other property is skipped by its type.
/// False when malformed.
fn user_props(r: &mut Reader, d: &mut MqttDetail, alias: &mut Option<u16>) -> bool {
    while !r.done() {
        let Some(id) = r.varint() else { return false };
        let ok = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => r.take(1).is_some(),
            0x13 | 0x21 | 0x22 => r.take(2).is_some(),
            0x23 => {
                *alias = r.u16();
                alias.is_some()
            }
            0x02 | 0x11 | 0x18 | 0x27 => r.take(4).is_some(),
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => r.bin().is_some(),
            0x0B => r.varint().is_some(),
            0x26 => match (r.str(), r.str()) {
                (Some(k), Some(v)) => {
                    let k = k.to_ascii_lowercase();
                    if matches!(k.as_str(), "traceparent" | "tracestate") && d.trace_headers.len() < 4 {
                        d.trace_headers.push((k, v));
                    }
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn emit(p: Pending, end_ns: u64, outcome: Outcome, out: &mut Emit) {
    let end = if outcome == Outcome::Complete && p.detail.response.is_none() { p.sent_ns } else { end_ns };
    out.push(Exchange {
        conn: out.conn.clone(),
        wire: Default::default(),
        protocol: Protocol::Mqtt,
        start_ns: p.start_ns,
        end_ns: end.max(p.start_ns),
        request_bytes: p.request_bytes,
        response_bytes: p.response_bytes,
        outcome,
        partial: p.partial,
        detail: Detail::Mqtt(p.detail),
    });
}

/// A plausible fixed header at `i` whose packet ends at the end of `buf` or
/// is followed by another plausible header.
fn header_at(buf: &[u8], i: usize, dir: StreamDir) -> Option<usize> {
    if !valid_first_byte(*buf.get(i)?, dir) {
        return None;
    }
    let (len, n) = varint(buf.get(i + 1..)?).ok()??;
    if len > MAX_REMAINING {
        return None;
    }
    Some(i + 1 + n + len as usize)
}

fn find_packet(buf: &[u8], dir: StreamDir) -> Option<usize> {
    (0..buf.len()).find(|&i| match header_at(buf, i, dir) {
        Some(end) if end == buf.len() => true,
        Some(end) if end < buf.len() => header_at(buf, end, dir).is_some(),
        _ => false,
    })
}

impl ConnDecoder for MqttDecoder {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit) {
        self.feed(dir, ts_ns, data, out);
    }

    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit) {
        if len == 0 {
            return;
        }
        let rx = &mut self.rx[dir.index()];
        match rx.state {
            Rx::Body if len <= (rx.remaining - rx.got) as u64 => {
                // Inside one body: skip it, the framing survives.
                rx.got += len as u32;
                rx.cut = true;
                rx.hole = true;
                if rx.got == rx.remaining {
                    self.finish(dir, ts_ns, out);
                }
            }
            Rx::Body => {
                rx.cut = true;
                rx.hole = true;
                rx.got = rx.remaining;
                self.finish(dir, ts_ns, out);
                let rx = &mut self.rx[dir.index()];
                rx.state = Rx::Lost;
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
            Rx::Head | Rx::Lost => {
                rx.state = Rx::Lost;
                rx.head_n = 0;
                rx.resync.clear();
                PARSE_ERRORS.inc();
            }
        }
    }

    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit) {
        let outcome = if reason == CloseReason::Rst { Outcome::Reset } else { Outcome::Timeout };
        self.drain(ts_ns, outcome, out);
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let mut old: Vec<Pending> = Vec::new();
        if self.connect.as_ref().is_some_and(|c| c.start_ns < deadline_ns) {
            old.extend(self.connect.take());
        }
        old.extend(self.outbound.expire(deadline_ns));
        old.extend(self.inbound.expire(deadline_ns));
        old.extend(self.pings.expire(deadline_ns));
        for p in old {
            let end = p.start_ns;
            emit(p, end, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests;
