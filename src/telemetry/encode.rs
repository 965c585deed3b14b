//! Span batches written straight to OTLP protobuf or OTLP/JSON bytes.
//!
//! The sink keeps each finished span as a [`SpanRec`]: the mapping's
//! `SpanParts` moved in (no copy), ids as fixed arrays. Building prost
//! `Span`/`KeyValue` structs per span cost a `String` per attribute key and
//! value plus the JSON or protobuf pass over them; here the writers walk the
//! records once, keys stay `&'static str`, and the resource and scope blocks
//! are written once per resource per batch.
//!
//! Both writers produce what prost / the opentelemetry-proto serde mapping
//! produce for the equivalent `ExportTraceServiceRequest` (tests compare the
//! bytes); [`to_request`] builds that struct for outputs that need it (the
//! OTLP exporter queue, in-memory collection).
use super::attr::V;
use super::semconv::SCHEMA_URL;
use super::span::Kind;
use crate::workload::Identity;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::encoding::encoded_len_varint as vlen;
use std::sync::Arc;

/// One span waiting in the batch.
#[derive(Debug, Clone)]
pub struct SpanRec {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: String,
    /// W3C trace flags plus the OTLP "parent is remote" bits.
    pub flags: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub name: crate::otel::attr::Str,
    pub kind: Kind,
    pub attrs: Vec<(&'static str, V)>,
    /// Enricher attributes naming the peer, after `attrs`.
    pub peer: Vec<(String, String)>,
    /// Some(message) when the status is ERROR.
    pub error: Option<String>,
}

/// The spans of one resource in a batch, in arrival order: as records, or
/// (when every output takes protobuf) already encoded as they came, never both.
pub struct ResourceBatch {
    pub resource: Arc<Identity>,
    pub spans: Vec<SpanRec>,
    pub bodies: Bodies,
}

impl ResourceBatch {
    pub fn new(resource: Arc<Identity>, spans: Vec<SpanRec>) -> Self {
        Self { resource, spans, bodies: Bodies::default() }
    }
}

/// Span bodies encoded when each span was recorded, in order. Encoding
/// then, instead of when the batch is sent, reads the span's attributes
/// while they are still in the CPU's cache (a batch of 512 records is
/// ~600 KiB, more than the caches keep until it is sent) and gives the
/// attribute list back at once for the next span.
///
/// Each span is stored as the `ScopeSpans.spans` field it becomes (key,
/// length, body), so the spans of a resource are one run of request bytes;
/// `head` bytes in front stay free for the request's envelope, which
/// [`request_in_place`] writes there to send the buffer itself.
#[derive(Default)]
pub struct Bodies {
    bytes: Vec<u8>,
    /// Bytes kept free in front of the spans.
    head: usize,
    count: usize,
}

impl Bodies {
    /// Empty, with room in front for the envelope of `resource`'s spans and
    /// for about `capacity` bytes of them.
    pub fn for_resource(resource: &Identity, capacity: usize) -> Self {
        let mut b = Bodies { bytes: Vec::with_capacity(capacity), head: 0, count: 0 };
        b.reset(envelope_max(resource));
        b
    }

    /// Emptied for reuse by `resource`'s spans (the allocation kept).
    pub fn reuse_for(&mut self, resource: &Identity) {
        self.reset(envelope_max(resource));
    }

    /// Emptied, with `head` free bytes in front.
    fn reset(&mut self, head: usize) {
        self.bytes.clear();
        self.bytes.resize(head, 0);
        self.head = head;
        self.count = 0;
    }

    /// Appends the span, framed. Its length goes before its body but is
    /// known only after it: two bytes are set aside (a body of 128 bytes to
    /// 16 KiB, nearly every span), and the rare shorter or longer body is
    /// moved by the difference.
    pub fn push(&mut self, s: &SpanRec) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[(2 << 3) | LEN, 0, 0]);
        put_span(&mut self.bytes, s);
        let end = self.bytes.len();
        let len = end - start - 3;
        debug_assert_eq!(len, span_len(s), "span length mismatch");
        let mut v = [0u8; 10];
        let n = varint_into(&mut v, len as u64);
        match n {
            2 => {}
            1 => {
                self.bytes.copy_within(start + 3..end, start + 2);
                self.bytes.truncate(end - 1);
            }
            _ => {
                self.bytes.resize(end + n - 2, 0);
                self.bytes.copy_within(start + 3..end, start + 1 + n);
            }
        }
        self.bytes[start + 1..start + 1 + n].copy_from_slice(&v[..n]);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The framed spans.
    fn spans(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    /// Bytes held for reuse.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Number of spans in a batch.
pub fn span_count(batch: &[ResourceBatch]) -> usize {
    batch.iter().map(|r| r.spans.len() + r.bodies.len()).sum()
}

// ---------------------------------------------------------------- protobuf

const LEN: u8 = 2;

#[inline]
fn varint(buf: &mut Vec<u8>, v: u64) {
    let mut out = [0u8; 10];
    let n = varint_into(&mut out, v);
    buf.extend_from_slice(&out[..n]);
}

/// Key of a field with a tag < 16 (one byte).
#[inline]
fn key(buf: &mut Vec<u8>, tag: u8, wire_type: u8) {
    buf.push((tag << 3) | wire_type);
}

/// A length-delimited field header (tag < 16).
#[inline]
fn len_key(buf: &mut Vec<u8>, tag: u8, len: usize) {
    key(buf, tag, LEN);
    varint(buf, len as u64);
}

/// Size of a length-delimited field (tag < 16) with a body of `len` bytes.
#[inline]
fn field_len(len: usize) -> usize {
    1 + vlen(len as u64) + len
}

/// A string/bytes field, left out when empty (proto3 default).
#[inline]
fn bytes_field(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    if b.is_empty() {
    } else if b.len() < 128 {
        buf.reserve(2 + b.len());
        // SAFETY: room for `2 + b.len()` bytes was reserved after `len`, all
        // of which are written before `set_len`; `b` is another allocation.
        unsafe {
            let at = buf.as_mut_ptr().add(buf.len());
            *at = (tag << 3) | LEN;
            *at.add(1) = b.len() as u8;
            copy_short(b, at.add(2));
            buf.set_len(buf.len() + 2 + b.len());
        }
    } else {
        len_key(buf, tag, b.len());
        buf.extend_from_slice(b);
    }
}

#[inline]
fn bytes_field_len(b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        field_len(b.len())
    }
}

/// AnyValue body (the oneof is always present).
fn any_len(v: &V) -> usize {
    match v {
        V::S(s) => field_len(s.len()),
        V::B(_) => 2,
        V::I(i) => 1 + vlen(*i as u64),
        V::A(a) => field_len(array_len(a)),
    }
}

fn array_len(a: &[String]) -> usize {
    a.iter().map(|s| field_len(field_len(s.len()))).sum()
}

fn put_any(buf: &mut Vec<u8>, v: &V) {
    match v {
        V::S(s) => {
            len_key(buf, 1, s.len());
            buf.extend_from_slice(s.as_bytes());
        }
        V::B(b) => {
            key(buf, 2, 0);
            buf.push(u8::from(*b));
        }
        V::I(i) => {
            key(buf, 3, 0);
            varint(buf, *i as u64);
        }
        V::A(a) => {
            len_key(buf, 5, array_len(a));
            for s in a {
                len_key(buf, 1, field_len(s.len()));
                len_key(buf, 1, s.len());
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }
}

fn kv_len(k: &str, v: &V) -> usize {
    bytes_field_len(k.as_bytes()) + field_len(any_len(v))
}

/// Writes `v` as a varint into `out`; returns its length.
#[inline]
fn varint_into(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// Appends `head ++ key ++ mid[..mid_len] ++ val` (an attribute field whose
/// lengths are one-byte varints, so both `key` and `val` are under 128
/// bytes) after a single capacity check.
#[inline(always)]
fn put_parts(buf: &mut Vec<u8>, head: [u8; 4], key: &[u8], (mid, mid_len): ([u8; 4], usize), val: &[u8]) {
    debug_assert!(key.len() < 128 && val.len() < 128 && mid_len <= 4);
    let total = 4 + key.len() + mid_len + val.len();
    // Slack for the 4-byte store of `mid` when it is shorter.
    buf.reserve(total + 4);
    // SAFETY: `reserve` made room for `total + 4` bytes after `len`; every
    // write below stays within `len .. len + total + 4`, the sources are
    // other allocations, and the bytes up to `len + total` are all written
    // before `set_len`.
    unsafe {
        let at = buf.as_mut_ptr().add(buf.len());
        std::ptr::write_unaligned(at as *mut [u8; 4], head);
        copy_short(key, at.add(4));
        let m = at.add(4 + key.len());
        std::ptr::write_unaligned(m as *mut [u8; 4], mid);
        copy_short(val, m.add(mid_len));
        buf.set_len(buf.len() + total);
    }
}

/// Copies `src` (under 128 bytes) to `dst` with a few fixed-size moves
/// (overlapping when the length is not their multiple) instead of a call
/// to `memcpy`: attribute keys and values are mostly 3–40 bytes, where the
/// call and its size dispatch cost more than the copy itself.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and must not overlap `src`.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    use std::ptr::{read_unaligned as rd, write_unaligned as wr};
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read is within `src` (offsets from 0 and ending at `n`),
    // every write within `dst .. dst + n`.
    unsafe {
        if n >= 16 {
            if n > 64 {
                std::ptr::copy_nonoverlapping(s, dst, n);
            } else if n > 32 {
                let (a, b) = (rd(s as *const [u8; 16]), rd(s.add(16) as *const [u8; 16]));
                let (c, d) = (rd(s.add(n - 32) as *const [u8; 16]), rd(s.add(n - 16) as *const [u8; 16]));
                wr(dst as *mut [u8; 16], a);
                wr(dst.add(16) as *mut [u8; 16], b);
                wr(dst.add(n - 32) as *mut [u8; 16], c);
                wr(dst.add(n - 16) as *mut [u8; 16], d);
            } else {
                let (a, b) = (rd(s as *const [u8; 16]), rd(s.add(n - 16) as *const [u8; 16]));
                wr(dst as *mut [u8; 16], a);
                wr(dst.add(n - 16) as *mut [u8; 16], b);
            }
        } else if n >= 8 {
            let (a, b) = (rd(s as *const u64), rd(s.add(n - 8) as *const u64));
            wr(dst as *mut u64, a);
            wr(dst.add(n - 8) as *mut u64, b);
        } else if n >= 4 {
            let (a, b) = (rd(s as *const u32), rd(s.add(n - 4) as *const u32));
            wr(dst as *mut u32, a);
            wr(dst.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            let (a, b, c) = (*s, *s.add(n / 2), *s.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = b;
            *dst.add(n - 1) = c;
        }
    }
}

fn put_kv(buf: &mut Vec<u8>, tag: u8, k: &str, v: &V) {
    // The usual attribute (a named string or integer, under 128 bytes in
    // all): every length is a one-byte varint, so the whole field is known
    // from the two lengths and written in place after one capacity check,
    // the key and value by `copy_short` (a `memcpy` call per key and value
    // was a third of the encoding's instructions).
    if !k.is_empty() {
        match v {
            V::S(s) => {
                let s = s.as_bytes();
                // field(tag) { key(1) k, value(2) { string(1) s } }
                let a = 2 + s.len();
                let kv = 2 + k.len() + 2 + a;
                if kv < 128 {
                    let head = [(tag << 3) | LEN, kv as u8, (1 << 3) | LEN, k.len() as u8];
                    let mid = [(2 << 3) | LEN, a as u8, (1 << 3) | LEN, s.len() as u8];
                    put_parts(buf, head, k.as_bytes(), (mid, 4), s);
                    return;
                }
            }
            V::I(i) => {
                let mut num = [0u8; 10];
                let n = varint_into(&mut num, *i as u64);
                let a = 1 + n;
                let kv = 2 + k.len() + 2 + a;
                if kv < 128 {
                    let head = [(tag << 3) | LEN, kv as u8, (1 << 3) | LEN, k.len() as u8];
                    put_parts(buf, head, k.as_bytes(), ([(2 << 3) | LEN, a as u8, 3 << 3, 0], 3), &num[..n]);
                    return;
                }
            }
            V::B(_) | V::A(_) => {}
        }
    }
    let a = any_len(v);
    let kv = bytes_field_len(k.as_bytes()) + field_len(a);
    len_key(buf, tag, kv);
    bytes_field(buf, 1, k.as_bytes());
    len_key(buf, 2, a);
    put_any(buf, v);
}

fn str_kv_len(k: &str, v: &str) -> usize {
    bytes_field_len(k.as_bytes()) + field_len(field_len(v.len()))
}

fn put_str_kv(buf: &mut Vec<u8>, tag: u8, k: &str, v: &str) {
    len_key(buf, tag, str_kv_len(k, v));
    bytes_field(buf, 1, k.as_bytes());
    len_key(buf, 2, field_len(v.len()));
    len_key(buf, 1, v.len());
    buf.extend_from_slice(v.as_bytes());
}

fn status_len(s: &SpanRec) -> usize {
    match &s.error {
        // message (2), code ERROR = 2 (3)
        Some(m) => bytes_field_len(m.as_bytes()) + 2,
        None => 0,
    }
}

/// Span body, fields in tag order as prost writes them.
fn span_len(s: &SpanRec) -> usize {
    let mut n = field_len(16) + field_len(8);
    n += bytes_field_len(s.trace_state.as_bytes());
    n += if s.parent_span_id.is_some() { field_len(8) } else { 0 };
    n += bytes_field_len(s.name.as_bytes());
    n += 2; // kind: never 0 (UNSPECIFIED)
    n += if s.start_ns != 0 { 9 } else { 0 };
    n += if s.end_ns != 0 { 9 } else { 0 };
    n += s.attrs.iter().map(|(k, v)| field_len(kv_len(k, v))).sum::<usize>();
    n += s.peer.iter().map(|(k, v)| field_len(str_kv_len(k, v))).sum::<usize>();
    n += field_len(status_len(s));
    n += if s.flags != 0 { 6 } else { 0 }; // tag 16 takes two key bytes
    n
}

fn put_span(buf: &mut Vec<u8>, s: &SpanRec) {
    len_key(buf, 1, 16);
    buf.extend_from_slice(&s.trace_id);
    len_key(buf, 2, 8);
    buf.extend_from_slice(&s.span_id);
    bytes_field(buf, 3, s.trace_state.as_bytes());
    if let Some(p) = &s.parent_span_id {
        len_key(buf, 4, 8);
        buf.extend_from_slice(p);
    }
    bytes_field(buf, 5, s.name.as_bytes());
    key(buf, 6, 0);
    varint(buf, s.kind.otlp() as u64);
    if s.start_ns != 0 {
        key(buf, 7, 1);
        buf.extend_from_slice(&s.start_ns.to_le_bytes());
    }
    if s.end_ns != 0 {
        key(buf, 8, 1);
        buf.extend_from_slice(&s.end_ns.to_le_bytes());
    }
    for (k, v) in &s.attrs {
        put_kv(buf, 9, k, v);
    }
    for (k, v) in &s.peer {
        put_str_kv(buf, 9, k, v);
    }
    len_key(buf, 15, status_len(s));
    if let Some(m) = &s.error {
        bytes_field(buf, 2, m.as_bytes());
        key(buf, 3, 0);
        buf.push(status::StatusCode::Error as u8);
    }
    if s.flags != 0 {
        buf.extend_from_slice(&[(16 << 3 | 5) as u8 | 0x80, 1]);
        buf.extend_from_slice(&s.flags.to_le_bytes());
    }
}

fn resource_len(r: &Identity) -> usize {
    r.attributes.iter().map(|(k, v)| field_len(str_kv_len(k, v))).sum()
}

fn scope_len() -> usize {
    field_len("cnflow".len()) + field_len(env!("CARGO_PKG_VERSION").len())
}

fn put_scope(buf: &mut Vec<u8>) {
    bytes_field(buf, 1, b"cnflow");
    bytes_field(buf, 2, env!("CARGO_PKG_VERSION").as_bytes());
}

/// The bodies of a batch's span records, encoded once by [`prepare_proto`]
/// (all resources, in order, with each resource's range; spans encoded when
/// recorded are in their resource's own [`Bodies`]). Reused from batch to batch.
#[derive(Default)]
pub struct Prepared {
    bodies: Bodies,
    ranges: Vec<std::ops::Range<usize>>,
}

impl Prepared {
    /// Bytes held for reuse.
    pub fn capacity(&self) -> usize {
        self.bodies.capacity()
    }
}

/// Encode every span of the batch (into `p`) and return the length of the
/// whole `ExportTraceServiceRequest` for [`write_proto`]. A span's length
/// comes before its body: the body is written here once (its length set
/// after it, see [`Bodies::push`]) and the spans copied in one piece there,
/// where measuring each span first walked its attributes twice.
pub fn prepare_proto(batch: &[ResourceBatch], p: &mut Prepared) -> usize {
    p.bodies.reset(0);
    p.ranges.clear();
    let mut total = 0;
    for rb in batch {
        debug_assert!(rb.spans.is_empty() || rb.bodies.is_empty(), "records and encoded spans mixed");
        let from = p.bodies.bytes.len();
        for s in &rb.spans {
            p.bodies.push(s);
        }
        p.ranges.push(from..p.bodies.bytes.len());
        total += field_len(resource_spans_len(rb, spans_of(rb, p, p.ranges.len() - 1).len()));
    }
    total
}

/// The framed spans of the `i`th resource batch: encoded as they came, or by `prepare_proto`.
fn spans_of<'a>(rb: &'a ResourceBatch, p: &'a Prepared, i: usize) -> &'a [u8] {
    if rb.bodies.is_empty() {
        &p.bodies.bytes[p.ranges[i].clone()]
    } else {
        rb.bodies.spans()
    }
}

fn resource_spans_len(rb: &ResourceBatch, spans: usize) -> usize {
    field_len(resource_len(&rb.resource)) + field_len(scope_spans_len(spans))
}

fn scope_spans_len(spans: usize) -> usize {
    field_len(scope_len()) + spans + field_len(SCHEMA_URL.len())
}

/// A `ResourceSpans` up to its spans (which are `spans` bytes long).
fn put_envelope(buf: &mut Vec<u8>, rb: &ResourceBatch, spans: usize) {
    len_key(buf, 1, resource_spans_len(rb, spans));
    len_key(buf, 1, resource_len(&rb.resource));
    for (k, v) in &rb.resource.attributes {
        put_str_kv(buf, 1, k, v);
    }
    len_key(buf, 2, scope_spans_len(spans));
    len_key(buf, 1, scope_len());
    put_scope(buf);
}

/// The most bytes [`put_envelope`] writes for this resource (lengths as
/// 5-byte varints: up to 32 GiB).
fn envelope_max(r: &Identity) -> usize {
    3 * 6 + resource_len(r) + 6 + scope_len()
}

/// Append the request prepared by [`prepare_proto`] (same batch, same `p`).
pub fn write_proto(batch: &[ResourceBatch], p: &Prepared, buf: &mut Vec<u8>) {
    for (i, rb) in batch.iter().enumerate() {
        let spans = spans_of(rb, p, i);
        put_envelope(buf, rb, spans.len());
        buf.extend_from_slice(spans);
        bytes_field(buf, 3, SCHEMA_URL.as_bytes());
    }
}

/// The batch's `ExportTraceServiceRequest` made in the span buffer itself
/// when the batch holds one resource whose spans were encoded as recorded
/// (the usual batch of a node agent without Kubernetes, and of every
/// single-workload node): the envelope goes into the room left in front
/// and the request is that buffer, not a copy of it. `None` otherwise, and
/// the batch is unchanged; else the resource's spans are taken.
pub fn request_in_place(batch: &mut [ResourceBatch]) -> Option<bytes::Bytes> {
    let [rb] = batch else { return None };
    if rb.bodies.is_empty() || !rb.spans.is_empty() {
        return None;
    }
    let spans = rb.bodies.spans().len();
    let mut env = Vec::with_capacity(rb.bodies.head);
    put_envelope(&mut env, rb, spans);
    let b = &mut rb.bodies;
    if env.len() > b.head {
        debug_assert!(false, "envelope_max is below an envelope");
        return None;
    }
    let start = b.head - env.len();
    b.bytes[start..b.head].copy_from_slice(&env);
    bytes_field(&mut b.bytes, 3, SCHEMA_URL.as_bytes());
    let bytes = std::mem::take(&mut b.bytes);
    b.reset(0);
    Some(bytes::Bytes::from(bytes).slice(start..))
}

/// Append the protobuf encoding of the batch as an `ExportTraceServiceRequest`
/// (also the encoding of `TracesData`). `p` is scratch space.
pub fn encode_proto(batch: &[ResourceBatch], buf: &mut Vec<u8>, p: &mut Prepared) {
    let n = prepare_proto(batch, p);
    buf.reserve(n);
    write_proto(batch, p, buf);
}

/// Length of what [`encode_proto`] writes.
pub fn proto_len(batch: &[ResourceBatch]) -> usize {
    prepare_proto(batch, &mut Prepared::default())
}

// ---------------------------------------------------------------- JSON

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(buf: &mut Vec<u8>, b: &[u8]) {
    for x in b {
        buf.push(HEX[(x >> 4) as usize]);
        buf.push(HEX[(x & 15) as usize]);
    }
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        buf.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            hex(buf, &[c]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&b[start..]);
    buf.push(b'"');
}

fn json_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn json_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn json_any(buf: &mut Vec<u8>, v: &V) {
    match v {
        V::S(s) => {
            buf.extend_from_slice(b"{\"stringValue\":");
            json_str(buf, s);
        }
        V::B(b) => {
            buf.extend_from_slice(if *b { b"{\"boolValue\":true" } else { b"{\"boolValue\":false" });
        }
        V::I(i) => {
            // 64-bit integers are strings in the protobuf JSON mapping.
            buf.extend_from_slice(b"{\"intValue\":\"");
            json_i64(buf, *i);
            buf.push(b'"');
        }
        V::A(a) => {
            buf.extend_from_slice(b"{\"arrayValue\":{\"values\":[");
            for (i, s) in a.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"stringValue\":");
                json_str(buf, s);
                buf.push(b'}');
            }
            buf.extend_from_slice(b"]}");
        }
    }
    buf.push(b'}');
}

fn json_kv(buf: &mut Vec<u8>, k: &str, v: &V) {
    buf.extend_from_slice(b"{\"key\":");
    json_str(buf, k);
    buf.extend_from_slice(b",\"value\":");
    json_any(buf, v);
    buf.push(b'}');
}

fn json_str_kv(buf: &mut Vec<u8>, k: &str, v: &str) {
    buf.extend_from_slice(b"{\"key\":");
    json_str(buf, k);
    buf.extend_from_slice(b",\"value\":{\"stringValue\":");
    json_str(buf, v);
    buf.extend_from_slice(b"}}");
}

fn json_span(buf: &mut Vec<u8>, s: &SpanRec) {
    buf.extend_from_slice(b"{\"traceId\":\"");
    hex(buf, &s.trace_id);
    buf.extend_from_slice(b"\",\"spanId\":\"");
    hex(buf, &s.span_id);
    buf.extend_from_slice(b"\",\"traceState\":");
    json_str(buf, &s.trace_state);
    buf.extend_from_slice(b",\"parentSpanId\":\"");
    if let Some(p) = &s.parent_span_id {
        hex(buf, p);
    }
    buf.extend_from_slice(b"\",\"flags\":");
    json_u64(buf, u64::from(s.flags));
    buf.extend_from_slice(b",\"name\":");
    json_str(buf, &s.name);
    buf.extend_from_slice(b",\"kind\":");
    json_u64(buf, s.kind.otlp() as u64);
    buf.extend_from_slice(b",\"startTimeUnixNano\":\"");
    json_u64(buf, s.start_ns);
    buf.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    json_u64(buf, s.end_ns);
    buf.extend_from_slice(b"\",\"attributes\":[");
    let mut first = true;
    for (k, v) in &s.attrs {
        if !std::mem::take(&mut first) {
            buf.push(b',');
        }
        json_kv(buf, k, v);
    }
    for (k, v) in &s.peer {
        if !std::mem::take(&mut first) {
            buf.push(b',');
        }
        json_str_kv(buf, k, v);
    }
    buf.extend_from_slice(
        b"],\"droppedAttributesCount\":0,\"events\":[],\"droppedEventsCount\":0,\"links\":[],\"droppedLinksCount\":0,\"status\":{\"message\":",
    );
    match &s.error {
        Some(m) => {
            json_str(buf, m);
            buf.extend_from_slice(b",\"code\":2}}");
        }
        None => buf.extend_from_slice(b"\"\",\"code\":0}}"),
    }
}

/// Append the batch as one OTLP/JSON `ExportTraceServiceRequest` (no newline),
/// field for field what the opentelemetry-proto serde mapping writes.
pub fn encode_json(batch: &[ResourceBatch], buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"resourceSpans\":[");
    for (i, rb) in batch.iter().enumerate() {
        debug_assert!(rb.bodies.is_empty(), "JSON needs the span records");
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"resource\":{\"attributes\":[");
        for (j, (k, v)) in rb.resource.attributes.iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            json_str_kv(buf, k, v);
        }
        buf.extend_from_slice(b"],\"droppedAttributesCount\":0,\"entityRefs\":[]},\"scopeSpans\":[{\"scope\":{\"name\":\"cnflow\",\"version\":");
        json_str(buf, env!("CARGO_PKG_VERSION"));
        buf.extend_from_slice(b",\"attributes\":[],\"droppedAttributesCount\":0},\"spans\":[");
        for (j, s) in rb.spans.iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            json_span(buf, s);
        }
        buf.extend_from_slice(b"],\"schemaUrl\":");
        json_str(buf, SCHEMA_URL);
        buf.extend_from_slice(b"}],\"schemaUrl\":\"\"}");
    }
    buf.extend_from_slice(b"]}");
}

// ---------------------------------------------------------------- prost structs

fn to_span(s: SpanRec) -> Span {
    let status = match s.error {
        Some(message) => Status { message, code: status::StatusCode::Error as i32 },
        None => Status::default(),
    };
    let mut attributes = super::attr::to_proto(&s.attrs);
    attributes.extend(s.peer.into_iter().map(|(k, v)| KeyValue {
        key: k,
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
        key_strindex: 0,
    }));
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.into(),
        kind: s.kind.otlp(),
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes,
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status: Some(status),
    }
}

/// The batch as a prost request (exporter queue, in-memory collection).
pub fn to_request(batch: Vec<ResourceBatch>) -> ExportTraceServiceRequest {
    let resource_spans = batch
        .into_iter()
        .map(|rb| ResourceSpans {
            resource: {
                debug_assert!(rb.bodies.is_empty(), "a prost request needs the span records");
                Some(super::resource::to_proto(&rb.resource))
            },
            scope_spans: vec![ScopeSpans {
                scope: Some(super::metrics::scope()),
                spans: rb.spans.into_iter().map(to_span).collect(),
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests;
