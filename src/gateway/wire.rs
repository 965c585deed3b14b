//! OTLP trace and log requests read and edited in their protobuf form.
//!
//! Decoding a request into prost types and encoding it again costs an
//! allocation per string, attribute and span: most of the gateway's CPU went
//! there (and into copies of those trees), while GeoIP only adds a few
//! attributes. Protobuf lets a message be extended by appending fields (a
//! repeated field's entries may come in any number of runs), so enrichment
//! copies each span's bytes and appends the new `attributes` entries, with the
//! enclosing length prefixes rewritten. Batching concatenates requests the same
//! way (grouping resources and scopes by their bytes). Decoding the result
//! gives exactly what decode → `geo_attributes::enrich_*` → encode gave (see
//! the equivalence tests).
//!
//! Before the walk, `validate` checks the whole request the way prost's
//! decode would (every field's wire type and framing, UTF-8 of every string,
//! nesting depth) without decoding it: what the gateway acknowledges is what
//! a prost-based backend accepts, and a malformed request is refused here
//! rather than poisoning a merged batch.
use super::geo_attributes::{GEO_FIELDS, ROLES};
use super::geoip::{is_public, parse_ip, GeoInfo, GeoIp};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid protobuf: {0}")]
pub struct WireError(&'static str);

/// The request shapes handled on the wire: resource → scope → leaf items,
/// differing only in the leaf's attributes field number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Traces,
    Logs,
}

impl Kind {
    fn leaf_attributes(self) -> u32 {
        match self {
            Kind::Traces => 9, // Span.attributes
            Kind::Logs => 6,   // LogRecord.attributes
        }
    }
}

/// Whether an attribute key is one of the agents' wire attributes: spans
/// carrying one need the stitch stage (which joins and strips them), so
/// their request takes the decoded path. The same rule as the stitcher's
/// (`exchange::wire_attr::PREFIXES`), so the two cannot disagree.
fn is_wire_attr(key: &[u8]) -> bool {
    crate::exchange::wire_attr::PREFIXES.iter().any(|p| key.starts_with(p.as_bytes()))
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

/// Most varints here (keys, lengths of attributes) fit in one byte: that
/// case is inlined into the walks (a call per key and length showed as 14%
/// of the gateway's CPU in perf), the rest is out of line.
#[inline(always)]
fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    if let Some(&byte) = b.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
    read_varint_long(b, pos)
}

#[inline(never)]
fn read_varint_long(b: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(*pos) else { return Err(WireError("truncated varint")) };
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err(WireError("varint overflow"));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError("varint overflow"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_len_field(out: &mut Vec<u8>, num: u32, len: usize) {
    put_varint(out, (u64::from(num) << 3) | u64::from(LEN));
    put_varint(out, len as u64);
}

fn len_field_size(num: u32, len: usize) -> usize {
    varint_len((u64::from(num) << 3) | u64::from(LEN)) + varint_len(len as u64) + len
}

struct Field<'a> {
    num: u32,
    wt: u8,
    /// The whole entry: key, length (if any) and value.
    raw: &'a [u8],
    /// The value; for LEN fields the bytes after the length.
    body: &'a [u8],
}

impl Field<'_> {
    fn expect(&self, wt: u8) -> Result<(), WireError> {
        if self.wt == wt {
            Ok(())
        } else {
            Err(WireError("wrong wire type"))
        }
    }
}

struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
}

fn fields(b: &[u8]) -> Fields<'_> {
    Fields { b, pos: 0 }
}

impl<'a> Fields<'a> {
    #[inline]
    fn next(&mut self) -> Result<Option<Field<'a>>, WireError> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let start = self.pos;
        let (num, wt) = read_key(self.b, &mut self.pos)?;
        let body_start = self.pos;
        let body_end = match wt {
            LEN => {
                let body = len_body(self.b, &mut self.pos)?;
                return Ok(Some(Field { num, wt, raw: &self.b[start..self.pos], body }));
            }
            // An unknown group (OTLP has none, but prost skips them): kept
            // whole in `raw`, the body is what lies between the group's keys.
            START_GROUP => skip_group(self.b, &mut self.pos, num, RECURSION_LIMIT)?,
            _ => {
                skip_scalar(self.b, &mut self.pos, wt)?;
                self.pos
            }
        };
        Ok(Some(Field { num, wt, raw: &self.b[start..self.pos], body: &self.b[body_start..body_end] }))
    }
}

/// A field key as prost's `decode_key` reads it: (field number, wire type).
#[inline]
fn read_key(b: &[u8], pos: &mut usize) -> Result<(u32, u8), WireError> {
    let key = read_varint(b, pos)?;
    if key > u64::from(u32::MAX) {
        return Err(WireError("invalid key"));
    }
    let wt = (key & 7) as u8;
    if wt > I32 {
        return Err(WireError("invalid wire type"));
    }
    let num = (key >> 3) as u32;
    if num == 0 {
        return Err(WireError("field number 0"));
    }
    Ok((num, wt))
}

/// A length-delimited value (after its key): the bytes after the length.
#[inline]
fn len_body<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WireError> {
    let len = read_varint(b, pos)?;
    if len > (b.len() - *pos) as u64 {
        return Err(WireError("length beyond the message"));
    }
    let body = &b[*pos..*pos + len as usize];
    *pos += len as usize;
    Ok(body)
}

/// Skips a varint or fixed-size value.
#[inline]
fn skip_scalar(b: &[u8], pos: &mut usize, wt: u8) -> Result<(), WireError> {
    let n = match wt {
        VARINT => return read_varint(b, pos).map(|_| ()),
        I64 => 8,
        I32 => 4,
        _ => return Err(WireError("wrong wire type")),
    };
    if b.len() - *pos < n {
        return Err(WireError("truncated fixed-size field"));
    }
    *pos += n;
    Ok(())
}

/// Skips an unknown field as prost's `skip_field` does, `budget` being its
/// recursion budget (`DecodeContext`): none left refuses even a scalar, and
/// each group level takes one.
fn skip_field(b: &[u8], pos: &mut usize, num: u32, wt: u8, budget: u32) -> Result<(), WireError> {
    if budget == 0 {
        return Err(WireError("recursion limit reached"));
    }
    match wt {
        LEN => len_body(b, pos).map(|_| ()),
        START_GROUP => skip_group(b, pos, num, budget).map(|_| ()),
        END_GROUP => Err(WireError("unexpected end group")),
        _ => skip_scalar(b, pos, wt),
    }
}

/// The fields of a group up to its end key (which must carry the group's
/// number); returns where the end key starts.
fn skip_group(b: &[u8], pos: &mut usize, num: u32, budget: u32) -> Result<usize, WireError> {
    loop {
        let at = *pos;
        let (n, wt) = read_key(b, pos)?;
        if wt == END_GROUP {
            return if n == num { Ok(at) } else { Err(WireError("unexpected end group")) };
        }
        skip_field(b, pos, n, wt, budget - 1)?;
    }
}

fn utf8(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError("invalid UTF-8 in a string"))
}

/// The address attributes of one attribute set (first occurrence of each
/// key, as `str_attr` does) and every key, for the no-overwrite rule.
struct Scan<'a> {
    keys: Vec<&'a [u8]>,
    /// Per role: None = key absent; Some(None) = not a string value.
    addrs: [Option<Option<&'a str>>; 5],
    /// Set when `watch_stitch` and a key is a wire attribute (stays set).
    stitch: bool,
    watch_stitch: bool,
}

impl<'a> Scan<'a> {
    fn new(watch_stitch: bool) -> Self {
        Self { keys: Vec::with_capacity(16), addrs: [None; 5], stitch: false, watch_stitch }
    }

    /// Reads the `attr`-numbered KeyValue entries of a message body.
    fn run(&mut self, body: &'a [u8], attr: u32) -> Result<(), WireError> {
        self.keys.clear();
        self.addrs = [None; 5];
        let mut f = fields(body);
        while let Some(x) = f.next()? {
            if x.num != attr {
                continue;
            }
            x.expect(LEN)?;
            let key = kv_key(x.body)?;
            if self.watch_stitch && is_wire_attr(key) {
                self.stitch = true;
            }
            // Values are read for the address keys only (all end so).
            if key.ends_with(b".address") {
                for (i, (role, _)) in ROLES.iter().enumerate() {
                    if self.addrs[i].is_none() && key == role.as_bytes() {
                        self.addrs[i] = Some(key_value(x.body)?.1);
                    }
                }
            }
            self.keys.push(key);
        }
        Ok(())
    }

    fn has_key(&self, k: &[u8]) -> bool {
        self.keys.iter().any(|x| x.len() == k.len() && *x == k)
    }
}

/// A KeyValue's key (the last one, as prost keeps). Not checked for UTF-8:
/// keys are only compared, and forwarded as they came.
#[inline]
fn kv_key(b: &[u8]) -> Result<&[u8], WireError> {
    let mut key: &[u8] = b"";
    let mut f = fields(b);
    while let Some(x) = f.next()? {
        if x.num == 1 {
            x.expect(LEN)?;
            key = x.body;
        }
    }
    Ok(key)
}

/// KeyValue → (key, string value if the value is a string). Repeated fields
/// resolve as prost does: the last key, the last member of the value's oneof.
fn key_value(b: &[u8]) -> Result<(&[u8], Option<&str>), WireError> {
    let mut key: &[u8] = b"";
    let mut value = None;
    let mut f = fields(b);
    while let Some(x) = f.next()? {
        match x.num {
            1 => {
                x.expect(LEN)?;
                key = x.body;
            }
            2 => {
                x.expect(LEN)?;
                let mut v = fields(x.body);
                while let Some(y) = v.next()? {
                    match y.num {
                        1 => {
                            y.expect(LEN)?;
                            value = Some(Some(y.body));
                        }
                        // bool, int, string_value_strindex
                        2 | 3 | 8 => {
                            y.expect(VARINT)?;
                            value = Some(None);
                        }
                        4 => {
                            y.expect(I64)?;
                            value = Some(None);
                        }
                        5..=7 => {
                            y.expect(LEN)?;
                            value = Some(None);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    utf8(key)?;
    let value = match value.flatten() {
        Some(s) => Some(utf8(s)?),
        None => None,
    };
    Ok((key, value))
}

/// The attributes GeoIP adds for one address, encoded once as `attr` entries.
struct Encoded {
    /// (key, whole encoded field entry)
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn encode_info(g: &GeoInfo, prefix: &str, attr: u32) -> Encoded {
    let mut entries = Vec::new();
    for (k, v) in GEO_FIELDS.iter().zip(super::geo_attributes::values(g)) {
        let Some(v) = v else { continue };
        let key = format!("{prefix}{k}").into_bytes();
        // AnyValue
        let mut any = Vec::new();
        match v {
            Value::Str(s) => {
                put_len_field(&mut any, 1, s.len());
                any.extend_from_slice(s.as_bytes());
            }
            Value::Int(i) => {
                any.push(3 << 3);
                put_varint(&mut any, i as u64);
            }
            Value::Double(d) => {
                any.push((4 << 3) | I64);
                any.extend_from_slice(&d.to_le_bytes());
            }
        }
        let mut kv = Vec::new();
        put_len_field(&mut kv, 1, key.len());
        kv.extend_from_slice(&key);
        put_len_field(&mut kv, 2, any.len());
        kv.extend_from_slice(&any);
        let mut entry = Vec::with_capacity(kv.len() + 4);
        put_len_field(&mut entry, attr, kv.len());
        entry.extend_from_slice(&kv);
        entries.push((key, entry));
    }
    Encoded { entries }
}

/// A GeoIP attribute value (see `geo_attributes::values`).
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
}

/// Lookups and encodings done once per request for each distinct address.
struct Memo<'g> {
    geo: &'g GeoIp,
    /// (address, prefix role or 5 for none, attributes field) → encoded attributes
    cache: HashMap<(IpAddr, u8, u32), Option<std::rc::Rc<Encoded>>, foldhash::fast::RandomState>,
}

impl Memo<'_> {
    fn get(&mut self, ip: IpAddr, role: Option<usize>, attr: u32) -> Option<std::rc::Rc<Encoded>> {
        let geo = self.geo;
        self.cache
            .entry((ip, role.map_or(5, |r| r as u8), attr))
            .or_insert_with(|| {
                let info = geo.lookup(ip)?;
                Some(std::rc::Rc::new(encode_info(&info, role.map_or("", |r| ROLES[r].1), attr)))
            })
            .clone()
    }
}

/// Appends the GeoIP attributes for a scanned attribute set to `added`
/// (the rules of `geo_attributes::enrich_attrs`). Returns whether any address had data.
fn additions(scan: &Scan<'_>, memo: &mut Memo<'_>, attr: u32, added: &mut Vec<u8>) -> bool {
    let mut found = [None::<(usize, IpAddr)>; 5];
    let mut n = 0;
    for (i, a) in scan.addrs.iter().enumerate() {
        if let Some(ip) = a.flatten().and_then(parse_ip).filter(|ip| is_public(*ip)) {
            found[n] = Some((i, ip));
            n += 1;
        }
    }
    let mut any = false;
    for (role, ip) in found.into_iter().flatten() {
        let Some(enc) = memo.get(ip, (n > 1).then_some(role), attr) else { continue };
        any = true;
        for (key, entry) in &enc.entries {
            // Only the original keys need checking: one role's keys are
            // distinct, and with several roles each has its own prefix.
            if !scan.has_key(key) {
                added.extend_from_slice(entry);
            }
        }
    }
    any
}

/// What `process` found and made.
#[derive(Debug, Default)]
pub struct Processed {
    /// The enriched request; None when nothing changed (forward the input).
    pub bytes: Option<Vec<u8>>,
    /// Spans or log records.
    pub items: usize,
    /// Attribute sets that got GeoIP data (as `enrich_traces` counts them).
    pub enriched: u64,
    /// A span carries a wire attribute: the request must take the decoded path
    /// (`bytes` is then None and the other fields incomplete).
    pub needs_decode: bool,
}

struct Walk<'g, 'a> {
    memo: Option<Memo<'g>>,
    scan: Scan<'a>,
    added: Vec<u8>,
    leaf_attr: u32,
    items: usize,
    enriched: u64,
    changed: bool,
}

impl<'a> Walk<'_, 'a> {
    /// Writes one attribute-bearing message (`num` field) with its additions.
    fn message(&mut self, out: &mut Vec<u8>, num: u32, body: &'a [u8], attr: u32) -> Result<(), WireError> {
        self.scan.run(body, attr)?;
        self.added.clear();
        if let Some(memo) = &mut self.memo {
            if additions(&self.scan, memo, attr, &mut self.added) {
                self.enriched += 1;
            }
        }
        self.changed |= !self.added.is_empty();
        put_len_field(out, num, body.len() + self.added.len());
        out.extend_from_slice(body);
        out.extend_from_slice(&self.added);
        Ok(())
    }

    fn scope(&mut self, out: &mut Vec<u8>, body: &'a [u8]) -> Result<(), WireError> {
        let mut f = fields(body);
        while let Some(x) = f.next()? {
            match x.num {
                2 => {
                    x.expect(LEN)?;
                    self.items += 1;
                    self.message(out, 2, x.body, self.leaf_attr)?;
                    if self.scan.stitch {
                        return Ok(());
                    }
                }
                1 | 3 => {
                    x.expect(LEN)?;
                    if x.num == 3 {
                        utf8(x.body)?;
                    }
                    out.extend_from_slice(x.raw);
                }
                _ => out.extend_from_slice(x.raw),
            }
        }
        Ok(())
    }

    fn resource(&mut self, out: &mut Vec<u8>, body: &'a [u8], scratch: &mut Vec<u8>) -> Result<(), WireError> {
        let mut f = fields(body);
        while let Some(x) = f.next()? {
            match x.num {
                1 => {
                    x.expect(LEN)?;
                    self.message(out, 1, x.body, 1)?;
                }
                2 => {
                    x.expect(LEN)?;
                    scratch.clear();
                    self.scope(scratch, x.body)?;
                    if self.scan.stitch {
                        return Ok(());
                    }
                    put_len_field(out, 2, scratch.len());
                    out.extend_from_slice(scratch);
                }
                3 => {
                    x.expect(LEN)?;
                    utf8(x.body)?;
                    out.extend_from_slice(x.raw);
                }
                _ => out.extend_from_slice(x.raw),
            }
        }
        Ok(())
    }
}

/// Checks and counts a trace or log request and adds GeoIP attributes (with `geo`).
pub fn process(kind: Kind, req: &[u8], geo: Option<&GeoIp>) -> Result<Processed, WireError> {
    validate(kind, req)?;
    let mut w = Walk {
        memo: geo.map(|geo| Memo { geo, cache: HashMap::default() }),
        scan: Scan::new(kind == Kind::Traces),
        added: Vec::new(),
        leaf_attr: kind.leaf_attributes(),
        items: 0,
        enriched: 0,
        changed: false,
    };
    // Enrichment adds a few hundred bytes per span at most.
    let mut out = Vec::with_capacity(if geo.is_some() { req.len() + req.len() / 2 } else { 0 });
    let (mut rs, mut ss) = (Vec::new(), Vec::new());
    let mut f = fields(req);
    while let Some(x) = f.next()? {
        if x.num == 1 {
            x.expect(LEN)?;
            rs.clear();
            w.resource(&mut rs, x.body, &mut ss)?;
            if w.scan.stitch {
                return Ok(Processed { needs_decode: true, ..Default::default() });
            }
            put_len_field(&mut out, 1, rs.len());
            out.extend_from_slice(&rs);
        } else {
            out.extend_from_slice(x.raw);
        }
    }
    Ok(Processed { bytes: w.changed.then_some(out), items: w.items, enriched: w.enriched, needs_decode: false })
}

/// prost's `DecodeContext` recursion limit (`prost::RECURSION_LIMIT`, not
/// exported): messages nest at most this deep below the request.
const RECURSION_LIMIT: u32 = 100;

/// Checks that prost would decode the request, without decoding it.
///
/// The enrichment walk reads the framing down to the attributes only. A
/// defect deeper inside a span or log record (invalid UTF-8 in a name or key,
/// a field with the wrong wire type, a truncated nested value) would be
/// acknowledged, concatenated into a batch with other clients' requests, and
/// make the backend refuse that whole batch: one bad client would lose
/// everyone's data (found by `gateway_fuzz`). A prost decode refuses such a
/// request, but allocates every string, attribute and span, which cost more
/// than the whole wire path; this walk accepts exactly what
/// `ExportTraceServiceRequest::decode` / `ExportLogsServiceRequest::decode`
/// accept (the differential proptest below is the oracle) and allocates nothing.
pub fn validate(kind: Kind, req: &[u8]) -> Result<(), WireError> {
    let top = match kind {
        Kind::Traces => Msg::TraceRequest,
        Kind::Logs => Msg::LogsRequest,
    };
    // prost's `Message::decode` gives the request's fields the full budget.
    check_message(req, top, RECURSION_LIMIT)
}

/// The messages a trace or log request contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    TraceRequest,
    LogsRequest,
    ResourceSpans,
    ResourceLogs,
    Resource,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Scope,
    ScopeSpans,
    ScopeLogs,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
}

/// How prost reads a known field: the wire type it requires and what it checks.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// int32/int64/uint32/bool/enum: any varint (prost truncates, never refuses).
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    /// `string`: UTF-8.
    Str,
    Message(Msg),
}

/// The fields of each message, as opentelemetry-proto 0.33's prost types
/// declare them (repeated fields read like singular ones: none is a packed
/// scalar). Any other number is an unknown field, skipped.
fn schema(m: Msg, num: u32) -> Option<Ty> {
    use Msg as M;
    use Ty::*;
    Some(match (m, num) {
        (M::TraceRequest, 1) => Message(M::ResourceSpans),
        (M::LogsRequest, 1) => Message(M::ResourceLogs),
        (M::ResourceSpans | M::ResourceLogs, 1) => Message(M::Resource),
        (M::ResourceSpans, 2) => Message(M::ScopeSpans),
        (M::ResourceLogs, 2) => Message(M::ScopeLogs),
        (M::ResourceSpans | M::ResourceLogs, 3) => Str, // schema_url
        // attributes, dropped_attributes_count, entity_refs
        (M::Resource, 1) => Message(M::KeyValue),
        (M::Resource, 2) => Varint,
        (M::Resource, 3) => Message(M::EntityRef),
        // schema_url, type, id_keys, description_keys
        (M::EntityRef, 1..=4) => Str,
        // key, value, key_strindex
        (M::KeyValue, 1) => Str,
        (M::KeyValue, 2) => Message(M::AnyValue),
        (M::KeyValue, 3) => Varint,
        // The oneof: string, bool, int, double, array, kvlist, bytes, string_value_strindex
        (M::AnyValue, 1) => Str,
        (M::AnyValue, 2 | 3 | 8) => Varint,
        (M::AnyValue, 4) => Fixed64,
        (M::AnyValue, 5) => Message(M::ArrayValue),
        (M::AnyValue, 6) => Message(M::KeyValueList),
        (M::AnyValue, 7) => Bytes,
        (M::ArrayValue, 1) => Message(M::AnyValue),
        (M::KeyValueList, 1) => Message(M::KeyValue),
        // name, version, attributes, dropped_attributes_count
        (M::Scope, 1 | 2) => Str,
        (M::Scope, 3) => Message(M::KeyValue),
        (M::Scope, 4) => Varint,
        (M::ScopeSpans | M::ScopeLogs, 1) => Message(M::Scope),
        (M::ScopeSpans, 2) => Message(M::Span),
        (M::ScopeLogs, 2) => Message(M::LogRecord),
        (M::ScopeSpans | M::ScopeLogs, 3) => Str, // schema_url
        // trace_id, span_id, trace_state, parent_span_id, name, kind,
        // start/end time, attributes, dropped counts, events, links, status, flags
        (M::Span, 1 | 2 | 4) => Bytes,
        (M::Span, 3 | 5) => Str,
        (M::Span, 6 | 10 | 12 | 14) => Varint,
        (M::Span, 7 | 8) => Fixed64,
        (M::Span, 9) => Message(M::KeyValue),
        (M::Span, 11) => Message(M::Event),
        (M::Span, 13) => Message(M::Link),
        (M::Span, 15) => Message(M::Status),
        (M::Span, 16) => Fixed32,
        // time_unix_nano, name, attributes, dropped_attributes_count
        (M::Event, 1) => Fixed64,
        (M::Event, 2) => Str,
        (M::Event, 3) => Message(M::KeyValue),
        (M::Event, 4) => Varint,
        // trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags
        (M::Link, 1 | 2) => Bytes,
        (M::Link, 3) => Str,
        (M::Link, 4) => Message(M::KeyValue),
        (M::Link, 5) => Varint,
        (M::Link, 6) => Fixed32,
        // message, code (1 is reserved: unknown)
        (M::Status, 2) => Str,
        (M::Status, 3) => Varint,
        // time, observed time, severity number and text, body, attributes,
        // dropped_attributes_count, flags, trace_id, span_id, event_name
        (M::LogRecord, 1 | 11) => Fixed64,
        (M::LogRecord, 2 | 7) => Varint,
        (M::LogRecord, 3 | 12) => Str,
        (M::LogRecord, 5) => Message(M::AnyValue),
        (M::LogRecord, 6) => Message(M::KeyValue),
        (M::LogRecord, 8) => Fixed32,
        (M::LogRecord, 9 | 10) => Bytes,
        _ => return None,
    })
}

/// One message body as prost's `merge_field` loop reads it; `budget` is the
/// recursion budget its fields get (prost's `DecodeContext`).
fn check_message(b: &[u8], m: Msg, budget: u32) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < b.len() {
        let (num, wt) = read_key(b, &mut pos)?;
        let Some(ty) = schema(m, num) else {
            skip_field(b, &mut pos, num, wt, budget)?;
            continue;
        };
        match (ty, wt) {
            (Ty::Varint, VARINT) | (Ty::Fixed64, I64) | (Ty::Fixed32, I32) => skip_scalar(b, &mut pos, wt)?,
            (Ty::Bytes, LEN) => {
                len_body(b, &mut pos)?;
            }
            (Ty::Str, LEN) => {
                utf8(len_body(b, &mut pos)?)?;
            }
            (Ty::Message(sub), LEN) => {
                // prost's `message::merge`: no budget left refuses even an
                // empty message; its fields get one less.
                if budget == 0 {
                    return Err(WireError("recursion limit reached"));
                }
                check_message(len_body(b, &mut pos)?, sub, budget - 1)?;
            }
            _ => return Err(WireError("wrong wire type")),
        }
    }
    Ok(())
}

/// A piece of an output request: (resource, scope or None, leaf range).
type Seg = (usize, Option<usize>, std::ops::Range<usize>);

struct ScopeGroup<'a> {
    key: Vec<u8>,
    leaves: Vec<&'a [u8]>,
}

struct ResourceGroup<'a> {
    key: Vec<u8>,
    scopes: Vec<ScopeGroup<'a>>,
    by_scope: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
}

/// Merges requests (traces or logs) by resource and scope like
/// `batch::merge_*`, then splits at `max` leaf items and `max_bytes`
/// (usize::MAX = no split) like `batch::split_*`: (request bytes, items) per
/// output request. The byte bound holds for an upper estimate of the output
/// (each opened resource or scope entry counted with its largest possible
/// tag and length prefix), so a request is never larger than `max_bytes`
/// unless it is a single leaf larger than that: backends refuse messages
/// above their limit (gRPC's default is 4 MiB) and a full 8,192-span batch
/// of ~600-byte spans is ~5 MB.
pub fn merge_split(parts: &[&[u8]], max: usize, max_bytes: usize) -> Result<Vec<(Vec<u8>, usize)>, WireError> {
    let mut groups: Vec<ResourceGroup<'_>> = Vec::new();
    let mut by_resource: HashMap<Vec<u8>, usize, foldhash::fast::RandomState> = HashMap::default();
    for part in parts {
        let mut f = fields(part);
        while let Some(x) = f.next()? {
            if x.num != 1 {
                continue; // unknown request fields: prost drops them too
            }
            x.expect(LEN)?;
            let mut scopes = Vec::new();
            let (key, head) = identity(x.body, |y| {
                scopes.push(y.body);
            })?;
            let ri = *by_resource.entry(key).or_insert_with(|| {
                groups.push(ResourceGroup { key: head, scopes: Vec::new(), by_scope: HashMap::default() });
                groups.len() - 1
            });
            let r = &mut groups[ri];
            for s in scopes {
                let mut leaves = Vec::new();
                let (skey, head) = identity(s, |z| leaves.push(z.raw))?;
                let si = *r.by_scope.entry(skey).or_insert_with(|| {
                    r.scopes.push(ScopeGroup { key: head, leaves: Vec::new() });
                    r.scopes.len() - 1
                });
                r.scopes[si].leaves.append(&mut leaves);
            }
        }
    }
    use super::batch::SEG_OVERHEAD;
    let mut outs = Vec::new();
    let mut cur: Vec<Seg> = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    let max = max.max(1);
    // No split: empty resources and scopes are kept, as `merge_*` keeps them.
    let unlimited = max == usize::MAX && max_bytes == usize::MAX;
    // Bytes an entry for (ri, si) adds to `cur` besides its leaves.
    let open = |cur: &[Seg], ri: usize, si: usize| {
        let g = &groups[ri];
        match cur.last() {
            Some((r, Some(s), _)) if *r == ri && *s == si => 0,
            Some((r, _, _)) if *r == ri => g.scopes[si].key.len() + SEG_OVERHEAD,
            _ => g.key.len() + g.scopes[si].key.len() + 2 * SEG_OVERHEAD,
        }
    };
    for (ri, r) in groups.iter().enumerate() {
        if unlimited && r.scopes.is_empty() {
            bytes += r.key.len() + SEG_OVERHEAD;
            cur.push((ri, None, 0..0));
        }
        for (si, s) in r.scopes.iter().enumerate() {
            if unlimited && s.leaves.is_empty() {
                bytes += open(&cur, ri, si);
                cur.push((ri, Some(si), 0..0));
            }
            for (i, leaf) in s.leaves.iter().enumerate() {
                let mut o = open(&cur, ri, si);
                if n > 0 && (n == max || bytes + o + leaf.len() > max_bytes) {
                    outs.push((write_segments(&groups, &cur), n));
                    cur.clear();
                    (n, bytes) = (0, 0);
                    o = open(&cur, ri, si);
                }
                bytes += o + leaf.len();
                match cur.last_mut() {
                    Some((r, Some(s), range)) if *r == ri && *s == si && range.end == i => range.end = i + 1,
                    _ => cur.push((ri, Some(si), i..i + 1)),
                }
                n += 1;
            }
        }
    }
    // Unlimited: always one request, as `merge_*` returns (even empty).
    if !cur.is_empty() || unlimited {
        outs.push((write_segments(&groups, &cur), n));
    }
    Ok(outs)
}

/// A resource's (or scope's) identity as `batch::merge_*` sees it: the
/// bytes of field 1 (resource/scope, absent = empty) and field 3 (schema URL),
/// then any other field but 2; and the fields to write for the group (those of
/// its first occurrence, all but 2). Field 2 entries go to `child`.
fn identity<'a>(body: &'a [u8], mut child: impl FnMut(&Field<'a>)) -> Result<(Vec<u8>, Vec<u8>), WireError> {
    let (mut one, mut three, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let mut head = Vec::new();
    let mut f = fields(body);
    while let Some(y) = f.next()? {
        match y.num {
            2 => {
                y.expect(LEN)?;
                child(&y);
                continue;
            }
            1 | 3 => {
                y.expect(LEN)?;
                if y.num == 1 { &mut one } else { &mut three }.extend_from_slice(y.body);
            }
            _ => other.extend_from_slice(y.raw),
        }
        head.extend_from_slice(y.raw);
    }
    let mut key = Vec::with_capacity(one.len() + three.len() + other.len() + 6);
    for part in [one, three, other] {
        put_varint(&mut key, part.len() as u64);
        key.extend_from_slice(&part);
    }
    Ok((key, head))
}

fn write_segments(groups: &[ResourceGroup<'_>], segs: &[Seg]) -> Vec<u8> {
    let scope_len = |ri: usize, si: usize, r: &std::ops::Range<usize>| {
        let s = &groups[ri].scopes[si];
        s.key.len() + s.leaves[r.clone()].iter().map(|l| l.len()).sum::<usize>()
    };
    // Runs of segments of the same resource become one ResourceSpans.
    let runs: Vec<&[Seg]> = segs.chunk_by(|a, b| a.0 == b.0).collect();
    let rs_len = |run: &[Seg]| {
        groups[run[0].0].key.len()
            + run.iter().filter_map(|(ri, si, r)| si.map(|si| len_field_size(2, scope_len(*ri, si, r)))).sum::<usize>()
    };
    let total: usize = runs.iter().map(|run| len_field_size(1, rs_len(run))).sum();
    let mut out = Vec::with_capacity(total);
    for run in runs {
        put_len_field(&mut out, 1, rs_len(run));
        out.extend_from_slice(&groups[run[0].0].key);
        for (ri, si, r) in run {
            let Some(si) = *si else { continue };
            put_len_field(&mut out, 2, scope_len(*ri, si, r));
            let s = &groups[*ri].scopes[si];
            out.extend_from_slice(&s.key);
            for l in &s.leaves[r.clone()] {
                out.extend_from_slice(l);
            }
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::batch::{merge_traces, split_traces};
    use crate::gateway::geo_attributes::{enrich_logs, enrich_traces};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;
    use prost::Message;
    use std::sync::LazyLock;

    /// MaxMind's test databases: City and ASN data of various depth.
    static GEO: LazyLock<GeoIp> = LazyLock::new(|| {
        let d = concat!(env!("CARGO_MANIFEST_DIR"), "/integration-tests/geoip/");
        GeoIp::open(Some(&format!("{d}GeoLite2-City-Test.mmdb")), Some(&format!("{d}GeoLite2-ASN-Test.mmdb")), 64)
            .unwrap()
            .unwrap()
    });

    const KEYS: &[&str] = &[
        "client.address",
        "server.address",
        "source.address",
        "destination.address",
        "network.peer.address",
        "http.route",
        "geo.country.iso_code",
        "client.geo.locality.name",
        "as.number",
        "server.as.organization.name",
        "",
    ];
    const ADDRS: &[&str] = &[
        "81.2.69.142",
        "216.160.83.56",
        "89.160.20.112",
        "2.125.160.216",
        "1.128.0.1",
        "2001:218::1",
        "[2a02:d300::1]",
        "10.200.0.7",
        "127.0.0.1",
        "not an address",
        "",
    ];

    fn value() -> impl Strategy<Value = Option<AnyValue>> {
        let v = prop_oneof![
            4 => prop::sample::select(ADDRS).prop_map(|s| any_value::Value::StringValue(s.into())),
            1 => any::<i64>().prop_map(any_value::Value::IntValue),
            1 => any::<bool>().prop_map(any_value::Value::BoolValue),
            1 => any::<f64>().prop_map(any_value::Value::DoubleValue),
            1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(any_value::Value::BytesValue),
        ];
        prop_oneof![8 => v.prop_map(|v| Some(AnyValue { value: Some(v) })), 1 => Just(Some(AnyValue { value: None })), 1 => Just(None)]
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (prop::sample::select(KEYS), value()).prop_map(|(k, value)| KeyValue {
                key: k.into(),
                value,
                ..Default::default()
            }),
            0..7,
        )
    }

    fn span() -> impl Strategy<Value = Span> {
        (attrs(), "[a-z /]{0,8}", any::<u64>(), prop::collection::vec(any::<u8>(), 0..17), any::<bool>()).prop_map(
            |(attributes, name, t, id, events)| Span {
                name,
                span_id: id.clone(),
                trace_id: id,
                start_time_unix_nano: t,
                kind: (t % 6) as i32,
                events: if events {
                    vec![span::Event { name: "e".into(), attributes: attributes.clone(), ..Default::default() }]
                } else {
                    vec![]
                },
                status: events.then(|| Status { message: "m".into(), code: 2 }),
                attributes,
                ..Default::default()
            },
        )
    }

    fn resource() -> impl Strategy<Value = Option<Resource>> {
        prop_oneof![4 => attrs().prop_map(|attributes| Some(Resource { attributes, ..Default::default() })), 1 => Just(None)]
    }

    fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
        prop_oneof![Just(None), "[ab]{0,2}".prop_map(|name| Some(InstrumentationScope { name, ..Default::default() })),]
    }

    fn traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let ss = (scope(), prop::collection::vec(span(), 0..5), "[x]{0,1}")
            .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
        let rs = (resource(), prop::collection::vec(ss, 0..3), "[y]{0,1}")
            .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
        prop::collection::vec(rs, 0..4).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    fn logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let rec = (attrs(), any::<u64>()).prop_map(|(attributes, t)| LogRecord {
            attributes,
            time_unix_nano: t,
            body: Some(AnyValue { value: Some(any_value::Value::StringValue("x".into())) }),
            ..Default::default()
        });
        let sl = (scope(), prop::collection::vec(rec, 0..5)).prop_map(|(scope, log_records)| ScopeLogs {
            scope,
            log_records,
            ..Default::default()
        });
        let rl = (resource(), prop::collection::vec(sl, 0..3)).prop_map(|(resource, scope_logs)| ResourceLogs {
            resource,
            scope_logs,
            ..Default::default()
        });
        prop::collection::vec(rl, 0..4).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    fn processed_traces(
        req: &ExportTraceServiceRequest,
        geo: Option<&GeoIp>,
    ) -> (ExportTraceServiceRequest, Processed) {
        let bytes = req.encode_to_vec();
        let p = process(Kind::Traces, &bytes, geo).unwrap();
        let out = ExportTraceServiceRequest::decode(p.bytes.as_deref().unwrap_or(&bytes)).unwrap();
        (out, p)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Wire enrichment decodes to what decode → enrich → encode gave, with the same counts.
        #[test]
        fn traces_enriched_on_the_wire_as_decoded(req in traces()) {
            let mut want = req.clone();
            let enriched = enrich_traces(&GEO, &mut want);
            let (got, p) = processed_traces(&req, Some(&GEO));
            prop_assert!(!p.needs_decode);
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(p.items, crate::export::payload::trace_items(&req));
            prop_assert_eq!(p.enriched, enriched);
            prop_assert_eq!(p.bytes.is_some(), want != req);
            // Without GeoIP: checked and counted, never changed.
            let (same, p) = processed_traces(&req, None);
            prop_assert!(p.bytes.is_none());
            prop_assert_eq!(same, req);
        }

        #[test]
        fn logs_enriched_on_the_wire_as_decoded(req in logs()) {
            let mut want = req.clone();
            let enriched = enrich_logs(&GEO, &mut want);
            let bytes = req.encode_to_vec();
            let p = process(Kind::Logs, &bytes, Some(&GEO)).unwrap();
            let got = ExportLogsServiceRequest::decode(p.bytes.as_deref().unwrap_or(&bytes)).unwrap();
            prop_assert_eq!(got, want);
            prop_assert_eq!(p.items, crate::export::payload::log_items(&req));
            prop_assert_eq!(p.enriched, enriched);
        }

        /// Batching on the wire gives the requests `merge_traces` + `split_traces` give.
        #[test]
        fn merge_split_on_the_wire_as_decoded(
            reqs in prop::collection::vec(traces(), 1..4),
            max in prop_oneof![Just(usize::MAX), 1usize..6],
            max_bytes in prop_oneof![Just(usize::MAX), 1usize..400],
        ) {
            let bytes: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
            let slices: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
            let got = merge_split(&slices, max, max_bytes).unwrap();
            let merged = merge_traces(reqs);
            let want = if max == usize::MAX && max_bytes == usize::MAX {
                vec![merged]
            } else {
                split_traces(merged, max, max_bytes)
            };
            // The byte bound holds unless a request is a single span.
            for (b, n) in &got {
                prop_assert!(b.len() <= max_bytes || *n <= 1, "{} bytes, {} spans, bound {}", b.len(), n, max_bytes);
            }
            let decoded: Vec<ExportTraceServiceRequest> =
                got.iter().map(|(b, _)| ExportTraceServiceRequest::decode(&b[..]).unwrap()).collect();
            prop_assert_eq!(got.iter().map(|(_, n)| *n).collect::<Vec<_>>(), want.iter().map(crate::export::payload::trace_items).collect::<Vec<_>>());
            prop_assert_eq!(decoded, want);
        }

        /// Arbitrary bytes, and valid requests with bytes flipped or cut, never panic.
        #[test]
        fn hostile_bytes_never_panic(
            req in traces(),
            junk in prop::collection::vec(any::<u8>(), 0..512),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = req.encode_to_vec();
            if !b.is_empty() {
                for (i, v) in &flips {
                    let i = i.index(b.len());
                    b[i] = *v;
                }
                b.truncate(cut.index(b.len() + 1));
            }
            for input in [&junk[..], &b[..]] {
                for kind in [Kind::Traces, Kind::Logs] {
                    if let Ok(p) = process(kind, input, Some(&GEO)) {
                        // What passed the walk still frames as a request.
                        let out = p.bytes.as_deref().unwrap_or(input);
                        prop_assert!(merge_split(&[out], 3, 200).is_ok());
                    }
                }
                let _ = merge_split(&[input], 2, usize::MAX);
            }
        }
    }

    #[test]
    fn stitch_requests_take_the_decoded_path() {
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        attributes: vec![crate::telemetry::resource::kv_str("client.address", "81.2.69.142")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (_, p) = processed_traces(&req, Some(&GEO));
        assert!(!p.needs_decode && p.bytes.is_some());
        req.resource_spans[0].scope_spans[0].spans[0].attributes.push(KeyValue {
            key: "cnflow.tcp.request.seq".into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(3)) }),
            ..Default::default()
        });
        let p = process(Kind::Traces, &req.encode_to_vec(), Some(&GEO)).unwrap();
        assert!(p.needs_decode && p.bytes.is_none());
        // A DNS span's key is its transaction id (a request of UDP spans only).
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        span.attributes.last_mut().unwrap().key = "cnflow.udp.transaction.id".into();
        let p = process(Kind::Traces, &req.encode_to_vec(), Some(&GEO)).unwrap();
        assert!(p.needs_decode && p.bytes.is_none());
        // Logs have no stitch stage.
        let p = process(Kind::Logs, &req.encode_to_vec(), Some(&GEO));
        assert!(p.is_ok_and(|p| !p.needs_decode));
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [&[0x0a, 0x05, 0x01][..], &[0x0b][..], &[0x00, 0x00][..], &[0x0a, 0x02, 0x12, 0x05][..], &[0x08][..]]
        {
            assert!(process(Kind::Traces, bad, Some(&GEO)).is_err(), "{bad:?}");
        }
        // Field 1 as a varint: the wrong wire type for resource_spans.
        assert!(process(Kind::Traces, &[0x08, 0x01], None).is_err());
        // Invalid UTF-8 in an address value.
        let kv = [
            0x0a, 0x0e, b'c', b'l', b'i', b'e', b'n', b't', b'.', b'a', b'd', b'd', b'r', b'e', b's', b's', 0x12, 0x03,
            0x0a, 0x01, 0xff,
        ];
        let mut span = vec![0x4a, kv.len() as u8];
        span.extend_from_slice(&kv);
        let mut ss = vec![0x12, span.len() as u8];
        ss.extend_from_slice(&span);
        let mut rs = vec![0x12, ss.len() as u8];
        rs.extend_from_slice(&ss);
        let mut req = vec![0x0a, rs.len() as u8];
        req.extend_from_slice(&rs);
        assert!(ExportTraceServiceRequest::decode(&req[..]).is_err());
        assert!(process(Kind::Traces, &req, Some(&GEO)).is_err());
    }

    /// `validate` against prost's decode, the oracle: requests using every
    /// field of the schema (nested AnyValues, chains near the recursion limit)
    /// mutated as field trees (inserted, removed, duplicated and renumbered
    /// fields, wrong wire types, groups, invalid UTF-8, overlong varints) and
    /// as bytes (flips, cuts).
    mod differential {
        use super::*;
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, EntityRef, KeyValueList};
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        use prop::collection::vec;

        fn text() -> impl Strategy<Value = String> {
            "[a-z.é]{0,6}"
        }

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            vec(any::<u8>(), 0..17)
        }

        fn any_value() -> impl Strategy<Value = AnyValue> {
            use any_value::Value as V;
            let leaf = prop_oneof![
                text().prop_map(V::StringValue),
                any::<bool>().prop_map(V::BoolValue),
                any::<i64>().prop_map(V::IntValue),
                any::<f64>().prop_map(V::DoubleValue),
                bytes().prop_map(V::BytesValue),
                any::<i32>().prop_map(V::StringValueStrindex),
            ];
            let leaf =
                prop_oneof![6 => leaf.prop_map(|v| AnyValue { value: Some(v) }), 1 => Just(AnyValue { value: None })];
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4)
                        .prop_map(|values| AnyValue { value: Some(V::ArrayValue(ArrayValue { values })) }),
                    vec((text(), inner), 0..4).prop_map(|kvs| AnyValue {
                        value: Some(V::KvlistValue(KeyValueList {
                            values: kvs
                                .into_iter()
                                .map(|(key, v)| KeyValue { key, value: Some(v), ..Default::default() })
                                .collect(),
                        })),
                    }),
                ]
            })
        }

        fn kvs() -> impl Strategy<Value = Vec<KeyValue>> {
            let key = prop_oneof![prop::sample::select(KEYS).prop_map(String::from), text()];
            let kv = (key, prop::option::of(any_value()), prop_oneof![3 => Just(0), 1 => any::<i32>()])
                .prop_map(|(key, value, key_strindex)| KeyValue { key, value, key_strindex });
            vec(kv, 0..4)
        }

        fn resource() -> impl Strategy<Value = Option<Resource>> {
            let entity = (text(), text(), vec(text(), 0..3), vec(text(), 0..3)).prop_map(
                |(schema_url, r#type, id_keys, description_keys)| EntityRef {
                    schema_url,
                    r#type,
                    id_keys,
                    description_keys,
                },
            );
            prop::option::of((kvs(), any::<u32>(), vec(entity, 0..2)).prop_map(
                |(attributes, dropped_attributes_count, entity_refs)| Resource {
                    attributes,
                    dropped_attributes_count,
                    entity_refs,
                },
            ))
        }

        fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
            prop::option::of((text(), text(), kvs(), any::<u32>()).prop_map(
                |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                    name,
                    version,
                    attributes,
                    dropped_attributes_count,
                },
            ))
        }

        fn span() -> impl Strategy<Value = Span> {
            let event = (any::<u64>(), text(), kvs(), any::<u32>()).prop_map(
                |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
                    time_unix_nano,
                    name,
                    attributes,
                    dropped_attributes_count,
                },
            );
            let link = (bytes(), bytes(), text(), kvs(), any::<u32>(), any::<u32>()).prop_map(
                |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                },
            );
            let status = prop::option::of((text(), any::<i32>()).prop_map(|(message, code)| Status { message, code }));
            let ids =
                (bytes(), bytes(), text(), bytes(), any::<u32>(), text(), any::<i32>(), any::<u64>(), any::<u64>());
            let rest = (kvs(), any::<u32>(), vec(event, 0..2), any::<u32>(), vec(link, 0..2), any::<u32>(), status);
            (ids, rest).prop_map(
                |((ti, si, ts, pi, flags, name, kind, start, end), (attrs, da, ev, de, li, dl, st))| Span {
                    trace_id: ti,
                    span_id: si,
                    trace_state: ts,
                    parent_span_id: pi,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: attrs,
                    dropped_attributes_count: da,
                    events: ev,
                    dropped_events_count: de,
                    links: li,
                    dropped_links_count: dl,
                    status: st,
                },
            )
        }

        fn log_record() -> impl Strategy<Value = LogRecord> {
            let head = (any::<u64>(), any::<u64>(), any::<i32>(), text(), prop::option::of(any_value()));
            let tail = (kvs(), any::<u32>(), any::<u32>(), bytes(), bytes(), text());
            (head, tail).prop_map(|((t, ot, sn, stx, body), (attributes, d, flags, ti, si, event_name))| LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: ot,
                severity_number: sn,
                severity_text: stx,
                body,
                attributes,
                dropped_attributes_count: d,
                flags,
                trace_id: ti,
                span_id: si,
                event_name,
            })
        }

        fn rich_traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
            let ss = (scope(), vec(span(), 0..3), text()).prop_map(|(scope, spans, schema_url)| ScopeSpans {
                scope,
                spans,
                schema_url,
            });
            let rs = (resource(), vec(ss, 0..3), text())
                .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
            vec(rs, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
        }

        fn rich_logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
            let sl = (scope(), vec(log_record(), 0..3), text())
                .prop_map(|(scope, log_records, schema_url)| ScopeLogs { scope, log_records, schema_url });
            let rl = (resource(), vec(sl, 0..3), text()).prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                resource,
                scope_logs,
                schema_url,
            });
            vec(rl, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
        }

        /// An AnyValue `levels` arrays (or key-value lists) deep.
        fn deep(levels: usize, kvlist: bool) -> AnyValue {
            let mut v = AnyValue { value: Some(any_value::Value::IntValue(1)) };
            for i in 0..levels {
                v = AnyValue {
                    value: Some(if kvlist && i % 2 == 0 {
                        any_value::Value::KvlistValue(KeyValueList {
                            values: vec![KeyValue { key: "k".into(), value: Some(v), ..Default::default() }],
                        })
                    } else {
                        any_value::Value::ArrayValue(ArrayValue { values: vec![v] })
                    }),
                };
            }
            v
        }

        fn deep_kv(levels: usize, kvlist: bool) -> KeyValue {
            KeyValue { key: "deep".into(), value: Some(deep(levels, kvlist)), ..Default::default() }
        }

        /// A field of a message as the mutations see it.
        #[derive(Debug, Clone, PartialEq)]
        enum Node {
            /// Anything but a length-delimited field: the bytes after the key.
            Raw {
                num: u32,
                wt: u8,
                value: Vec<u8>,
            },
            Len {
                num: u32,
                body: Vec<u8>,
            },
            /// A length-delimited field whose body parses as fields and
            /// encodes back to the same bytes (a message, or by chance a string).
            Msg {
                num: u32,
                children: Vec<Node>,
            },
            Group {
                num: u32,
                children: Vec<Node>,
                end: u32,
            },
        }

        fn parse(b: &[u8]) -> Option<Vec<Node>> {
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < b.len() {
                let key = read_varint(b, &mut pos).ok()?;
                let (num, wt) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
                let start = pos;
                match wt {
                    VARINT => {
                        read_varint(b, &mut pos).ok()?;
                    }
                    I64 | I32 => pos += if wt == I64 { 8 } else { 4 },
                    LEN => {
                        let len = usize::try_from(read_varint(b, &mut pos).ok()?).ok()?;
                        let body = b.get(pos..pos.checked_add(len)?)?;
                        pos += len;
                        out.push(match parse(body).filter(|c| !body.is_empty() && encode(c) == body) {
                            Some(children) => Node::Msg { num, children },
                            None => Node::Len { num, body: body.to_vec() },
                        });
                        continue;
                    }
                    _ => return None,
                }
                out.push(Node::Raw { num, wt, value: b.get(start..pos)?.to_vec() });
            }
            Some(out)
        }

        fn key(out: &mut Vec<u8>, num: u32, wt: u8) {
            put_varint(out, (u64::from(num) << 3) | u64::from(wt));
        }

        fn encode(nodes: &[Node]) -> Vec<u8> {
            let mut out = Vec::new();
            for n in nodes {
                match n {
                    Node::Raw { num, wt, value } => {
                        key(&mut out, *num, *wt);
                        out.extend_from_slice(value);
                    }
                    Node::Len { num, body } => {
                        put_len_field(&mut out, *num, body.len());
                        out.extend_from_slice(body);
                    }
                    Node::Msg { num, children } => {
                        let body = encode(children);
                        put_len_field(&mut out, *num, body.len());
                        out.extend_from_slice(&body);
                    }
                    Node::Group { num, children, end } => {
                        key(&mut out, *num, START_GROUP);
                        out.extend_from_slice(&encode(children));
                        key(&mut out, *end, END_GROUP);
                    }
                }
            }
            out
        }

        /// xorshift64*: the mutations follow from one proptest seed.
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
            fn below(&mut self, n: usize) -> usize {
                (self.next() % n.max(1) as u64) as usize
            }
        }

        fn lists(nodes: &[Node]) -> usize {
            1 + nodes
                .iter()
                .map(|n| match n {
                    Node::Msg { children, .. } | Node::Group { children, .. } => lists(children),
                    _ => 0,
                })
                .sum::<usize>()
        }

        /// Applies `f` to the `k`-th field list (depth first).
        fn visit(nodes: &mut Vec<Node>, k: &mut usize, f: &mut dyn FnMut(&mut Vec<Node>)) -> bool {
            if *k == 0 {
                f(nodes);
                return true;
            }
            *k -= 1;
            for n in nodes.iter_mut() {
                if let Node::Msg { children, .. } | Node::Group { children, .. } = n {
                    if visit(children, k, f) {
                        return true;
                    }
                }
            }
            false
        }

        fn field_number(r: &mut Rng) -> u32 {
            match r.below(10) {
                0 => [0x1fff_ffff, 1000, 19000][r.below(3)],
                _ => r.below(17) as u32 + 1,
            }
        }

        fn scalar(r: &mut Rng, wt: u8) -> Vec<u8> {
            match wt {
                VARINT => match r.below(4) {
                    // Ten bytes: the last may overflow 64 bits (> 1).
                    0 => [&[0xff; 9][..], &[r.below(4) as u8]].concat(),
                    // Not minimal, still valid.
                    1 => vec![0x80, 0x00],
                    _ => {
                        let mut v = Vec::new();
                        put_varint(&mut v, r.next() >> r.below(64));
                        v
                    }
                },
                I64 => r.next().to_le_bytes().to_vec(),
                I32 => (r.next() as u32).to_le_bytes().to_vec(),
                _ => Vec::new(),
            }
        }

        fn random_node(r: &mut Rng) -> Node {
            let num = field_number(r);
            match r.below(9) {
                0..=2 => {
                    let wt = [VARINT, I64, I32][r.below(3)];
                    Node::Raw { num, wt, value: scalar(r, wt) }
                }
                3 | 4 => Node::Len { num, body: (0..r.below(6)).map(|_| r.next() as u8).collect() },
                5 | 6 => {
                    // Groups, up to past the recursion limit.
                    let depth = if r.below(4) == 0 { 90 + r.below(20) } else { 1 + r.below(3) };
                    let mut g = Node::Raw { num, wt: VARINT, value: vec![1] };
                    for _ in 0..depth {
                        let end = if r.below(20) == 0 { num + 1 } else { num };
                        g = Node::Group { num, children: vec![g], end };
                    }
                    g
                }
                7 => Node::Raw { num, wt: END_GROUP, value: Vec::new() },
                _ => Node::Raw { num, wt: 6 + r.below(2) as u8, value: Vec::new() },
            }
        }

        fn mutate_list(r: &mut Rng, l: &mut Vec<Node>) {
            let i = r.below(l.len());
            match r.below(8) {
                0 | 1 => l.insert(r.below(l.len() + 1), random_node(r)),
                _ if l.is_empty() => l.push(random_node(r)),
                2 => {
                    l.remove(i);
                }
                3 => l.insert(i, l[i].clone()),
                4 => {
                    let n = field_number(r);
                    match &mut l[i] {
                        Node::Raw { num, .. } | Node::Len { num, .. } | Node::Msg { num, .. } => *num = n,
                        Node::Group { num, end, .. } => (*num, *end) = (n, n),
                    }
                }
                5 => {
                    // Another wire type for the same field number.
                    let (num, body) = match &l[i] {
                        Node::Raw { num, value, .. } => (*num, value.clone()),
                        Node::Len { num, body } => (*num, body.clone()),
                        Node::Msg { num, children } | Node::Group { num, children, .. } => (*num, encode(children)),
                    };
                    l[i] = match r.below(4) {
                        0 => Node::Len { num, body },
                        1 => Node::Group { num, children: parse(&body).unwrap_or_default(), end: num },
                        _ => {
                            let wt = [VARINT, I64, I32][r.below(3)];
                            Node::Raw { num, wt, value: scalar(r, wt) }
                        }
                    };
                }
                6 => {
                    // Invalid UTF-8 in a string (or harmless in bytes).
                    let bad = [0x80, 0xc3, 0xed, 0xf4, 0xff][r.below(5)];
                    if let Node::Len { body, .. } = &mut l[i] {
                        if body.is_empty() || r.below(2) == 0 {
                            body.push(bad);
                        } else {
                            let j = r.below(body.len());
                            body[j] = bad;
                        }
                    } else if let Some(Node::Len { body, .. }) = l.iter_mut().find(|n| matches!(n, Node::Len { .. })) {
                        body.insert(0, bad);
                    }
                }
                _ => {
                    if let Node::Raw { wt: VARINT, value, .. } = &mut l[i] {
                        *value = scalar(r, VARINT);
                    } else {
                        let num = field_number(r);
                        let end = if r.below(8) == 0 { num + 1 } else { num };
                        let inner = l.remove(i);
                        l.insert(i, Node::Group { num, children: vec![inner], end });
                    }
                }
            }
        }

        /// The request's bytes after 0 to 3 tree mutations and maybe byte ones.
        fn mutated(valid: &[u8], seed: u64) -> Vec<u8> {
            let mut r = Rng(seed | 1);
            let Some(mut tree) = parse(valid) else { return valid.to_vec() };
            for _ in 0..r.below(4) {
                let mut k = r.below(lists(&tree));
                visit(&mut tree, &mut k, &mut |l| mutate_list(&mut r, l));
            }
            let mut b = encode(&tree);
            if !b.is_empty() && r.below(5) == 0 {
                for _ in 0..=r.below(2) {
                    let i = r.below(b.len());
                    b[i] = r.next() as u8;
                }
            }
            if r.below(8) == 0 {
                b.truncate(r.below(b.len() + 1));
            }
            b
        }

        /// validate, and the whole wire path, accept what prost accepts.
        fn check(b: &[u8]) -> Result<(), TestCaseError> {
            let traces = ExportTraceServiceRequest::decode(b).is_ok();
            let logs = ExportLogsServiceRequest::decode(b).is_ok();
            prop_assert_eq!(validate(Kind::Traces, b).is_ok(), traces, "traces {:02x?}", b);
            prop_assert_eq!(validate(Kind::Logs, b).is_ok(), logs, "logs {:02x?}", b);
            prop_assert_eq!(process(Kind::Traces, b, Some(&GEO)).is_ok(), traces);
            prop_assert_eq!(process(Kind::Logs, b, Some(&GEO)).is_ok(), logs);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1500))]

            #[test]
            fn traces_validated_as_prost_decodes(
                mut req in rich_traces(),
                chain in prop::option::of((30usize..52, any::<bool>())),
                seed in any::<u64>(),
            ) {
                if let Some((levels, kvlist)) = chain {
                    let span = req.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans).next();
                    if let Some(span) = span {
                        span.attributes.push(deep_kv(levels, kvlist));
                    }
                }
                let valid = req.encode_to_vec();
                prop_assert!(validate(Kind::Traces, &valid).is_ok() || chain.is_some());
                check(&valid)?;
                check(&mutated(&valid, seed))?;
            }

            #[test]
            fn logs_validated_as_prost_decodes(
                mut req in rich_logs(),
                chain in prop::option::of((30usize..52, any::<bool>())),
                seed in any::<u64>(),
            ) {
                if let Some((levels, kvlist)) = chain {
                    let rec = req.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs).flat_map(|s| &mut s.log_records).next();
                    if let Some(rec) = rec {
                        rec.body = Some(deep(levels, kvlist));
                    }
                }
                let valid = req.encode_to_vec();
                prop_assert!(validate(Kind::Logs, &valid).is_ok() || chain.is_some());
                check(&valid)?;
                check(&mutated(&valid, seed))?;
            }
        }

        fn one_span_with(kv: KeyValue) -> ExportTraceServiceRequest {
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span { attributes: vec![kv], ..Default::default() }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
        }

        /// The recursion limit at its exact boundary, for messages, unknown
        /// fields at the last level and nested groups.
        #[test]
        fn recursion_limit_as_prost() {
            let (mut accepted, mut refused) = (0, 0);
            for levels in 40..56 {
                for kvlist in [false, true] {
                    let mut req = one_span_with(deep_kv(levels, kvlist));
                    let plain = req.encode_to_vec();
                    // An unknown field in the innermost AnyValue's parent.
                    let mut v = req.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.as_mut().unwrap();
                    for _ in 1..levels {
                        v = match v.value.as_mut().unwrap() {
                            any_value::Value::ArrayValue(a) => &mut a.values[0],
                            any_value::Value::KvlistValue(l) => l.values[0].value.as_mut().unwrap(),
                            _ => unreachable!(),
                        };
                    }
                    v.value = Some(any_value::Value::ArrayValue(ArrayValue { values: vec![] }));
                    let mut with_unknown = req.encode_to_vec();
                    // A varint field 99 appended to the request, then at depth via the tree.
                    let mut tree = parse(&with_unknown).unwrap();
                    fn innermost(nodes: &mut Vec<Node>) -> &mut Vec<Node> {
                        let i = nodes.iter().position(|n| matches!(n, Node::Msg { .. }));
                        match i {
                            Some(i) => match &mut nodes[i] {
                                Node::Msg { children, .. } => innermost(children),
                                _ => unreachable!(),
                            },
                            None => nodes,
                        }
                    }
                    innermost(&mut tree).push(Node::Raw { num: 99, wt: VARINT, value: vec![1] });
                    with_unknown = encode(&tree);
                    for b in [plain, with_unknown] {
                        let want = ExportTraceServiceRequest::decode(&b[..]).is_ok();
                        assert_eq!(validate(Kind::Traces, &b).is_ok(), want, "levels {levels} kvlist {kvlist}");
                        if want {
                            accepted += 1
                        } else {
                            refused += 1
                        }
                    }
                }
            }
            assert!(accepted > 4 && refused > 4, "the boundary lies in the range: {accepted} / {refused}");
            // Nested unknown groups in a span.
            let (mut accepted, mut refused) = (0, 0);
            for depth in 90..102 {
                let mut g = Node::Raw { num: 30, wt: VARINT, value: vec![1] };
                for _ in 0..depth {
                    g = Node::Group { num: 30, children: vec![g], end: 30 };
                }
                let mut tree = parse(&one_span_with(deep_kv(0, false)).encode_to_vec()).unwrap();
                let Node::Msg { children: ss, .. } = &mut tree[0] else { unreachable!() };
                let Node::Msg { children: spans, .. } = &mut ss[0] else { unreachable!() };
                let Node::Msg { children: span, .. } = &mut spans[0] else { unreachable!() };
                span.push(g);
                let b = encode(&tree);
                let want = ExportTraceServiceRequest::decode(&b[..]).is_ok();
                assert_eq!(validate(Kind::Traces, &b).is_ok(), want, "group depth {depth}");
                assert_eq!(process(Kind::Traces, &b, Some(&GEO)).is_ok(), want, "group depth {depth}");
                if want {
                    accepted += 1
                } else {
                    refused += 1
                }
            }
            assert!(accepted > 2 && refused > 2, "{accepted} / {refused}");
        }

        /// One of each message of the schema, every field set.
        fn full_requests() -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
            use any_value::Value as V;
            let leaf = |v| AnyValue { value: Some(v) };
            let value = leaf(V::ArrayValue(ArrayValue {
                values: vec![
                    leaf(V::StringValue("s".into())),
                    leaf(V::BoolValue(true)),
                    leaf(V::IntValue(-3)),
                    leaf(V::DoubleValue(1.5)),
                    leaf(V::BytesValue(vec![0xff])),
                    leaf(V::StringValueStrindex(7)),
                    leaf(V::KvlistValue(KeyValueList {
                        values: vec![KeyValue { key: "k".into(), value: Some(leaf(V::IntValue(1))), key_strindex: 2 }],
                    })),
                ],
            }));
            let attrs = vec![KeyValue { key: "a".into(), value: Some(value.clone()), key_strindex: 1 }];
            let resource = Some(Resource {
                attributes: attrs.clone(),
                dropped_attributes_count: 1,
                entity_refs: vec![EntityRef {
                    schema_url: "u".into(),
                    r#type: "t".into(),
                    id_keys: vec!["i".into()],
                    description_keys: vec!["d".into()],
                }],
            });
            let scope = Some(InstrumentationScope {
                name: "n".into(),
                version: "v".into(),
                attributes: attrs.clone(),
                dropped_attributes_count: 1,
            });
            let span = Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                trace_state: "ts".into(),
                parent_span_id: vec![3; 8],
                flags: 1,
                name: "n".into(),
                kind: 2,
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                attributes: attrs.clone(),
                dropped_attributes_count: 1,
                events: vec![Event {
                    time_unix_nano: 1,
                    name: "e".into(),
                    attributes: attrs.clone(),
                    dropped_attributes_count: 1,
                }],
                dropped_events_count: 1,
                links: vec![Link {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    trace_state: "ts".into(),
                    attributes: attrs.clone(),
                    dropped_attributes_count: 1,
                    flags: 1,
                }],
                dropped_links_count: 1,
                status: Some(Status { message: "m".into(), code: 2 }),
            };
            let record = LogRecord {
                time_unix_nano: 1,
                observed_time_unix_nano: 2,
                severity_number: 9,
                severity_text: "info".into(),
                body: Some(value),
                attributes: attrs,
                dropped_attributes_count: 1,
                flags: 1,
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                event_name: "e".into(),
            };
            let traces = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource.clone(),
                    scope_spans: vec![ScopeSpans { scope: scope.clone(), spans: vec![span], schema_url: "u".into() }],
                    schema_url: "u".into(),
                }],
            };
            let logs = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource,
                    scope_logs: vec![ScopeLogs { scope, log_records: vec![record], schema_url: "u".into() }],
                    schema_url: "u".into(),
                }],
            };
            (traces, logs)
        }

        /// Every field number 1 to 17 with every wire type, valid or not,
        /// added to every message of a request that sets every field: the
        /// schema as prost reads it, known and unknown (reserved) numbers.
        #[test]
        fn every_field_number_and_wire_type_in_every_message() {
            let (traces, logs) = full_requests();
            let values: [(u8, &[u8]); 9] = [
                (VARINT, &[5]),
                (I64, &[0; 8]),
                (I32, &[0; 4]),
                (LEN, b""),
                (LEN, b"ab"),
                (LEN, &[0xff]),
                (LEN, &[0x08, 0x01]),
                (START_GROUP, b""),
                (END_GROUP, b""),
            ];
            let (mut accepted, mut refused) = (0, 0);
            for (kind, valid) in [(Kind::Traces, traces.encode_to_vec()), (Kind::Logs, logs.encode_to_vec())] {
                let tree = parse(&valid).unwrap();
                for k in 0..lists(&tree) {
                    for num in 1..=17 {
                        for (wt, value) in values {
                            let mut t = tree.clone();
                            let node = match wt {
                                LEN => Node::Len { num, body: value.to_vec() },
                                START_GROUP => Node::Group { num, children: vec![], end: num },
                                _ => Node::Raw { num, wt, value: value.to_vec() },
                            };
                            visit(&mut t, &mut { k }, &mut |l| l.push(node.clone()));
                            let b = encode(&t);
                            let want = match kind {
                                Kind::Traces => ExportTraceServiceRequest::decode(&b[..]).is_ok(),
                                Kind::Logs => ExportLogsServiceRequest::decode(&b[..]).is_ok(),
                            };
                            assert_eq!(
                                validate(kind, &b).is_ok(),
                                want,
                                "{kind:?} list {k} field {num} {wt} {value:?}"
                            );
                            if want {
                                accepted += 1;
                            } else {
                                refused += 1;
                            }
                        }
                    }
                }
            }
            assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
        }

        /// A string_value_strindex after a string address: the value is no
        /// longer a string for prost (the oneof's last member), so no GeoIP.
        #[test]
        fn strindex_overrides_a_string_address() {
            let req = one_span_with(crate::telemetry::resource::kv_str("client.address", "81.2.69.142"));
            let mut tree = parse(&req.encode_to_vec()).unwrap();
            // Span → attribute → value: the path is fixed in this request.
            let Node::Msg { children: ss, .. } = &mut tree[0] else { unreachable!() };
            let Node::Msg { children: spans, .. } = &mut ss[0] else { unreachable!() };
            let Node::Msg { children: span, .. } = &mut spans[0] else { unreachable!() };
            let Node::Msg { children: kv, .. } = &mut span[0] else { unreachable!() };
            let Node::Msg { children: value, .. } = &mut kv[1] else { unreachable!() };
            value.push(Node::Raw { num: 8, wt: VARINT, value: vec![5] });
            let b = encode(&tree);
            let mut want = ExportTraceServiceRequest::decode(&b[..]).unwrap();
            assert_eq!(enrich_traces(&GEO, &mut want), 0);
            let p = process(Kind::Traces, &b, Some(&GEO)).unwrap();
            assert_eq!(p.enriched, 0);
            assert!(p.bytes.is_none());
        }
    }
}
