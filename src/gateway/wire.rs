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
//! What is walked is checked as prost would (field framing down to the
//! attributes, wire types of the fields read, UTF-8 of the addresses read), so
//! a request that is not protobuf is refused as before; what is not walked
//! (span events and links, attribute keys' UTF-8, values other than addresses)
//! is forwarded as it came, for the backend to judge.
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
const I32: u8 = 5;

#[inline]
fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    // Most varints here (keys, lengths of attributes) fit in one byte.
    if let Some(&byte) = b.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
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
        let key = read_varint(self.b, &mut self.pos)?;
        if key > u64::from(u32::MAX) {
            return Err(WireError("invalid key"));
        }
        let (num, wt) = ((key >> 3) as u32, (key & 7) as u8);
        if num == 0 {
            return Err(WireError("field number 0"));
        }
        let body_start;
        match wt {
            VARINT => {
                body_start = self.pos;
                read_varint(self.b, &mut self.pos)?;
            }
            I64 | I32 => {
                body_start = self.pos;
                let n = if wt == I64 { 8 } else { 4 };
                if self.b.len() - self.pos < n {
                    return Err(WireError("truncated fixed-size field"));
                }
                self.pos += n;
            }
            LEN => {
                let len = read_varint(self.b, &mut self.pos)?;
                body_start = self.pos;
                if len > (self.b.len() - self.pos) as u64 {
                    return Err(WireError("length beyond the message"));
                }
                self.pos += len as usize;
            }
            // Groups are not used by OTLP; prost refuses them in known fields.
            _ => return Err(WireError("unsupported wire type")),
        }
        Ok(Some(Field { num, wt, raw: &self.b[start..self.pos], body: &self.b[body_start..self.pos] }))
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
                        2 | 3 => {
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

/// The walk below reads the framing down to the attributes only. A defect
/// deeper inside a span or log record (invalid UTF-8 in a name or key, a
/// field with the wrong wire type, a truncated nested value) would be
/// acknowledged, concatenated into a batch with other clients' requests, and
/// make the backend refuse that whole batch: one bad client would lose
/// everyone's data (found by `gateway_fuzz`). A full prost decode, dropped
/// at once, refuses such a request here, as the decoded path would.
fn validate(kind: Kind, req: &[u8]) -> Result<(), WireError> {
    use prost::Message;
    let ok = match kind {
        Kind::Traces => {
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(req).is_ok()
        }
        Kind::Logs => opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(req).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(WireError("not a valid OTLP export request"))
    }
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
/// `batch::merge_*`, then splits at `max` leaf items (usize::MAX = no
/// split) like `batch::split_*`: (request bytes, items) per output request.
pub fn merge_split(parts: &[&[u8]], max: usize) -> Result<Vec<(Vec<u8>, usize)>, WireError> {
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
    let mut outs = Vec::new();
    let mut cur: Vec<Seg> = Vec::new();
    let mut n = 0usize;
    let max = max.max(1);
    for (ri, r) in groups.iter().enumerate() {
        if max == usize::MAX && r.scopes.is_empty() {
            cur.push((ri, None, 0..0));
        }
        for (si, s) in r.scopes.iter().enumerate() {
            if max == usize::MAX && s.leaves.is_empty() {
                cur.push((ri, Some(si), 0..0));
            }
            let mut i = 0;
            while i < s.leaves.len() {
                if n == max {
                    outs.push((write_segments(&groups, &cur), n));
                    cur.clear();
                    n = 0;
                }
                let take = (max - n).min(s.leaves.len() - i);
                cur.push((ri, Some(si), i..i + take));
                n += take;
                i += take;
            }
        }
    }
    // Unlimited: always one request, as `merge_*` returns (even empty).
    if !cur.is_empty() || max == usize::MAX {
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
        fn merge_split_on_the_wire_as_decoded(reqs in prop::collection::vec(traces(), 1..4), max in prop_oneof![Just(usize::MAX), 1usize..6]) {
            let bytes: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
            let slices: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
            let got = merge_split(&slices, max).unwrap();
            let merged = merge_traces(reqs);
            let want = if max == usize::MAX { vec![merged] } else { split_traces(merged, max) };
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
                        prop_assert!(merge_split(&[out], 3).is_ok());
                    }
                }
                let _ = merge_split(&[input], 2);
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
}
