//! MongoDB wire format, stateless: the 16-byte MsgHeader, the opcodes,
//! OP_MSG sections, legacy OP_QUERY/OP_REPLY, OP_COMPRESSED decompression,
//! and what a command or reply document says. Documents are read with
//! `bson`'s borrowed raw API (no allocation per element); a document cut by
//! the snap length or the buffer bound is read by hand only as far as its
//! first element (the command name and collection).
use bson::raw::{RawBsonRef, RawDocument};
use std::io::Read;

pub const HEADER: usize = 16;
/// Largest message a server accepts (`maxMessageSizeBytes`, 48 MB).
pub const MAX_MESSAGE: u32 = 48_000_000;

pub const OP_REPLY: i32 = 1;
pub const OP_UPDATE: i32 = 2001;
pub const OP_INSERT: i32 = 2002;
pub const OP_QUERY: i32 = 2004;
pub const OP_GET_MORE: i32 = 2005;
pub const OP_DELETE: i32 = 2006;
pub const OP_KILL_CURSORS: i32 = 2007;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;

/// OP_MSG flagBits.
pub const CHECKSUM_PRESENT: u32 = 1;
pub const MORE_TO_COME: u32 = 1 << 1;
pub const EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits 0-15 must be understood by a receiver; only these two are defined.
const KNOWN_FLAGS: u32 = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED;
/// OP_REPLY responseFlags: the query failed, the document is `{$err, code}`.
const QUERY_FAILURE: u32 = 1 << 1;

/// Longest kept error message, masked query text, name.
const MAX_TEXT: usize = 256;
const MAX_QUERY: usize = 512;
/// Nesting shown in the masked text: enough for `pipeline: [{$match: {f: {$gte: ?}}}]`.
const MAX_DEPTH: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub request_id: i32,
    pub response_to: i32,
    pub op: i32,
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4).map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

pub fn header(b: &[u8]) -> Option<Header> {
    Some(Header {
        len: i32_at(b, 0)? as u32,
        request_id: i32_at(b, 4)?,
        response_to: i32_at(b, 8)?,
        op: i32_at(b, 12)?,
    })
}

/// Opcodes a client sends.
pub fn request_op(op: i32) -> bool {
    matches!(op, OP_MSG | OP_QUERY | OP_COMPRESSED | OP_GET_MORE | OP_INSERT | OP_UPDATE | OP_DELETE | OP_KILL_CURSORS)
}

/// Opcodes a server sends.
pub fn reply_op(op: i32) -> bool {
    matches!(op, OP_MSG | OP_REPLY | OP_COMPRESSED)
}

/// Legacy writes (removed in MongoDB 6.0) that get no reply.
pub fn unanswered_op(op: i32) -> bool {
    matches!(op, OP_INSERT | OP_UPDATE | OP_DELETE | OP_KILL_CURSORS)
}

/// A header that could start a message in this direction: plausible length,
/// an opcode of that side, and requests answer nothing (`responseTo` 0).
pub fn plausible(h: &Header, to_server: bool) -> bool {
    // The smallest message: a header, flags and one empty document.
    if !(HEADER as u32 + 9..=MAX_MESSAGE).contains(&h.len) {
        return false;
    }
    if to_server {
        h.response_to == 0 && request_op(h.op)
    } else {
        h.response_to != 0 && reply_op(h.op)
    }
}

pub fn op_name(op: i32) -> &'static str {
    match op {
        OP_REPLY => "OP_REPLY",
        OP_UPDATE => "OP_UPDATE",
        OP_INSERT => "OP_INSERT",
        OP_QUERY => "OP_QUERY",
        OP_GET_MORE => "OP_GET_MORE",
        OP_DELETE => "OP_DELETE",
        OP_KILL_CURSORS => "OP_KILL_CURSORS",
        OP_COMPRESSED => "OP_COMPRESSED",
        OP_MSG => "OP_MSG",
        _ => "unknown",
    }
}

pub fn compressor_name(id: u8) -> Option<&'static str> {
    match id {
        0 => Some("noop"),
        1 => Some("snappy"),
        2 => Some("zlib"),
        3 => Some("zstd"),
        _ => None,
    }
}

/// An OP_COMPRESSED body, decompressed as far as `bound` bytes.
pub struct Decompressed {
    pub op: i32,
    pub compressor: &'static str,
    pub body: Vec<u8>,
    /// Fewer bytes than the original message had (the bound, or compressed bytes missing).
    pub cut: bool,
    /// The original size was over `bound`.
    pub over_bound: bool,
}

/// Decompress an OP_COMPRESSED body (after the header): originalOpcode,
/// uncompressedSize, compressorId, then the compressed original body.
/// `complete`: `body` holds every byte of the message. None when the
/// envelope is not valid or the data does not decompress.
pub fn decompress(body: &[u8], complete: bool, bound: usize) -> Option<Decompressed> {
    let op = i32_at(body, 0)?;
    let size = i32_at(body, 4)?;
    let id = *body.get(8)?;
    let compressor = compressor_name(id)?;
    if op == OP_COMPRESSED || !(request_op(op) || reply_op(op)) || size < 0 || size as u32 > MAX_MESSAGE {
        return None;
    }
    let data = &body[9..];
    let size = size as usize;
    let want = size.min(bound);
    let over_bound = size > bound;
    let mut out = Vec::with_capacity(want);
    match id {
        0 => out.extend_from_slice(&data[..data.len().min(want)]),
        1 => {
            // Snappy's raw format decompresses whole blocks only.
            if !complete || over_bound {
                return Some(Decompressed { op, compressor, body: out, cut: true, over_bound });
            }
            let n = snap::raw::decompress_len(data).ok()?;
            if n != size {
                return None;
            }
            out = snap::raw::Decoder::new().decompress_vec(data).ok()?;
        }
        2 => {
            let r = flate2::read::ZlibDecoder::new(data).take(want as u64);
            read_prefix(r, &mut out, complete)?;
        }
        _ => {
            // Creating a zstd context costs more than decompressing a small
            // message (a third of replay time on compressed captures): one per
            // thread, its session reset by `with_context` before each use.
            thread_local! {
                static ZSTD: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
                    std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
            }
            ZSTD.with(|ctx| {
                let mut ctx = ctx.borrow_mut();
                let r = zstd::stream::read::Decoder::with_context(data, &mut ctx).take(want as u64);
                read_prefix(r, &mut out, complete)
            })?;
        }
    }
    let cut = out.len() < size;
    if complete && !over_bound && cut {
        // Every compressed byte was there, yet fewer came out than announced.
        return None;
    }
    Some(Decompressed { op, compressor, body: out, cut, over_bound })
}

/// Reads what a decoder yields; an error after some output (the compressed
/// data ends early) keeps that prefix when the message was cut anyway.
fn read_prefix(mut r: impl Read, out: &mut Vec<u8>, complete: bool) -> Option<()> {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Some(()),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) if !complete => return Some(()),
            Err(_) => return None,
        }
    }
}

/// A document at the start of `b`: whole and valid (`Full`), or the bytes
/// present of one that is longer than `b` (`Cut`).
#[derive(Debug, Clone, Copy)]
pub enum Doc<'a> {
    Full(&'a RawDocument),
    Cut(&'a [u8]),
}

impl<'a> Doc<'a> {
    fn at(b: &'a [u8]) -> Option<(Doc<'a>, usize)> {
        let len = i32_at(b, 0)?;
        if len < 5 {
            return None;
        }
        let len = len as usize;
        match b.get(..len) {
            Some(d) => Some((Doc::Full(RawDocument::from_bytes(d).ok()?), len)),
            None => Some((Doc::Cut(b), b.len())),
        }
    }
    pub fn full(self) -> Option<&'a RawDocument> {
        match self {
            Doc::Full(d) => Some(d),
            Doc::Cut(_) => None,
        }
    }
    /// Key of the first element and its value when that is a string.
    pub fn first(self) -> Option<(&'a str, Option<&'a str>)> {
        let b = match self {
            Doc::Full(d) => d.as_bytes(),
            Doc::Cut(b) => b,
        };
        first_element(b)
    }
}

/// The first element of a (possibly cut) document, read by hand: type byte,
/// key, and for a string its value.
fn first_element(b: &[u8]) -> Option<(&str, Option<&str>)> {
    let ty = *b.get(4)?;
    let rest = b.get(5..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    let key = std::str::from_utf8(&rest[..end]).ok()?;
    if key.is_empty() || !valid_type(ty) {
        return None;
    }
    let val = &rest[end + 1..];
    let s = if ty == 0x02 {
        let n = i32_at(val, 0)?;
        (n >= 1).then(|| val.get(4..4 + n as usize - 1)).flatten().and_then(|s| std::str::from_utf8(s).ok())
    } else {
        None
    };
    Some((key, s))
}

fn valid_type(t: u8) -> bool {
    matches!(t, 0x01..=0x13 | 0x7f | 0xff)
}

/// What a message's body holds, opcode by opcode.
#[derive(Debug, Default)]
pub struct Body<'a> {
    /// OP_MSG flagBits / OP_QUERY flags / OP_REPLY responseFlags.
    pub flags: u32,
    /// The command (OP_MSG section 0, OP_QUERY query) or the first reply document.
    pub doc: Option<Doc<'a>>,
    /// OP_QUERY/OP_GET_MORE/legacy writes: "db.collection".
    pub full_collection: Option<&'a str>,
    /// OP_REPLY: numberReturned.
    pub number_returned: Option<i32>,
    /// OP_MSG: documents in kind-1 sequences (bulk inserts, updates, deletes).
    pub sequence_docs: u32,
}

fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
}

/// Parse the body (bytes after the header) of a message with opcode `op`.
/// `b` may be cut short; None when what is there is not that message.
pub fn body(op: i32, b: &[u8]) -> Option<Body<'_>> {
    let mut out = Body::default();
    match op {
        OP_MSG => {
            out.flags = i32_at(b, 0)? as u32;
            if out.flags & 0xffff & !KNOWN_FLAGS != 0 {
                return None;
            }
            let mut rest = &b[4..];
            // The checksum, when present, is the last 4 bytes of the whole
            // message; only a cut message can end inside it, harmlessly.
            while let Some((&kind, r)) = rest.split_first() {
                if out.flags & CHECKSUM_PRESENT != 0 && rest.len() == 4 {
                    break;
                }
                match kind {
                    0 => {
                        let (d, n) = Doc::at(r)?;
                        if out.doc.is_some() {
                            return None;
                        }
                        out.doc = Some(d);
                        rest = &r[n..];
                    }
                    1 => {
                        let size = i32_at(r, 0)?;
                        if size < 5 {
                            return None;
                        }
                        let size = size as usize;
                        let Some(seq) = r.get(4..size) else { break };
                        let (_id, mut docs) = cstr(seq)?;
                        while !docs.is_empty() {
                            let n = i32_at(docs, 0)?;
                            if n < 5 || n as usize > docs.len() {
                                return None;
                            }
                            out.sequence_docs = out.sequence_docs.saturating_add(1);
                            docs = &docs[n as usize..];
                        }
                        rest = &r[size..];
                    }
                    _ => return None,
                }
            }
            out.doc?;
        }
        OP_QUERY => {
            out.flags = i32_at(b, 0)? as u32;
            let (ns, rest) = cstr(&b[4..])?;
            out.full_collection = Some(ns);
            let rest = rest.get(8..)?;
            out.doc = Some(Doc::at(rest)?.0);
        }
        OP_REPLY => {
            out.flags = i32_at(b, 0)? as u32;
            out.number_returned = Some(i32_at(b, 16)?);
            if let Some(rest) = b.get(20..).filter(|r| !r.is_empty()) {
                out.doc = Some(Doc::at(rest)?.0);
            }
        }
        OP_GET_MORE | OP_INSERT | OP_UPDATE | OP_DELETE => {
            let (ns, _) = cstr(b.get(4..)?)?;
            out.full_collection = Some(ns);
        }
        OP_KILL_CURSORS => {}
        _ => return None,
    }
    Some(out)
}

/// What a request asks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Request {
    pub operation: Option<String>,
    pub collection: Option<String>,
    pub database: Option<String>,
    pub query_masked: Option<String>,
    /// No reply will come (OP_MSG moreToCome, legacy writes).
    pub no_reply: bool,
    pub exhaust_allowed: bool,
}

/// Commands whose arguments are credentials: nothing of them is kept.
fn sensitive(cmd: &str) -> bool {
    let c = cmd.to_ascii_lowercase();
    matches!(
        c.as_str(),
        "saslstart"
            | "saslcontinue"
            | "authenticate"
            | "getnonce"
            | "createuser"
            | "updateuser"
            | "copydbsaslstart"
            | "copydbgetnonce"
            | "copydb"
    )
}

fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn get<'a>(d: &'a RawDocument, key: &str) -> Option<RawBsonRef<'a>> {
    d.get(key).ok().flatten()
}

pub fn request(op: i32, b: &Body) -> Request {
    let mut r = Request {
        no_reply: unanswered_op(op) || (op == OP_MSG && b.flags & MORE_TO_COME != 0),
        exhaust_allowed: op == OP_MSG && b.flags & EXHAUST_ALLOWED != 0,
        ..Default::default()
    };
    // Legacy "db.collection" (OP_QUERY on "db.$cmd" is a command).
    let (ns_db, ns_coll) = match b.full_collection.and_then(|ns| ns.split_once('.')) {
        Some((db, coll)) => (Some(db), Some(coll)),
        None => (b.full_collection, None),
    };
    r.database = ns_db.map(|s| bounded(s, MAX_TEXT));
    match op {
        OP_INSERT => r.operation = Some("insert".into()),
        OP_UPDATE => r.operation = Some("update".into()),
        OP_DELETE => r.operation = Some("delete".into()),
        OP_GET_MORE => r.operation = Some("getMore".into()),
        OP_KILL_CURSORS => r.operation = Some("killCursors".into()),
        _ => {}
    }
    if r.operation.is_some() {
        r.collection = ns_coll.map(|s| bounded(s, MAX_TEXT));
        return r;
    }
    let Some(mut doc) = b.doc else { return r };
    let command = op == OP_MSG || ns_coll == Some("$cmd");
    if !command {
        // A legacy OP_QUERY find on "db.collection".
        r.operation = Some("find".into());
        r.collection = ns_coll.map(|s| bounded(s, MAX_TEXT));
        return r;
    }
    // Legacy commands may be wrapped: {$query: {cmd...}, $readPreference: ...}.
    if let Some(inner) = doc.full().and_then(|d| get(d, "$query")).and_then(|v| v.as_document()) {
        doc = Doc::Full(inner);
    }
    let Some((cmd, value)) = doc.first() else { return r };
    r.operation = Some(bounded(cmd, MAX_TEXT));
    r.collection = value.filter(|v| !v.is_empty()).map(|v| bounded(v, MAX_TEXT));
    if let Some(d) = doc.full() {
        if cmd == "getMore" {
            r.collection = get(d, "collection").and_then(|v| v.as_str()).map(|v| bounded(v, MAX_TEXT));
        }
        if let Some(db) = get(d, "$db").and_then(|v| v.as_str()) {
            r.database = Some(bounded(db, MAX_TEXT));
        }
        if !sensitive(cmd) {
            let mut s = String::new();
            mask_doc(d, 0, true, &mut s);
            if s.len() > MAX_QUERY {
                s = bounded(&s, MAX_QUERY - 3);
                s.push_str("...");
            }
            r.query_masked = Some(s);
        }
    }
    r
}

/// `{"find": "orders", "filter": {"status": ?}}`: keys kept, values masked,
/// except the command's own value (the collection name). Session and
/// routing fields (`lsid`, `$db`, `$clusterTime`, …) are left out.
fn mask_doc(d: &RawDocument, depth: usize, top: bool, s: &mut String) {
    s.push('{');
    let mut first = true;
    for (i, el) in d.iter().enumerate() {
        if s.len() > MAX_QUERY {
            break;
        }
        let Ok((k, v)) = el else {
            s.push_str("...");
            break;
        };
        let k = k.as_str();
        if top && (k.starts_with('$') || k == "lsid" || k == "txnNumber") {
            continue;
        }
        if !first {
            s.push_str(", ");
        }
        first = false;
        s.push('"');
        s.push_str(k);
        s.push_str("\": ");
        match v {
            RawBsonRef::String(v) if top && i == 0 => {
                s.push('"');
                s.push_str(v);
                s.push('"');
            }
            v => mask_value(v, depth + 1, s),
        }
    }
    s.push('}');
}

fn mask_value(v: RawBsonRef, depth: usize, s: &mut String) {
    match v {
        RawBsonRef::Document(d) if depth < MAX_DEPTH => mask_doc(d, depth, false, s),
        RawBsonRef::Array(a) if depth < MAX_DEPTH => {
            s.push('[');
            for (i, el) in a.into_iter().enumerate() {
                if s.len() > MAX_QUERY {
                    break;
                }
                let Ok(el) = el else { break };
                if i > 0 {
                    s.push_str(", ");
                }
                mask_value(el, depth + 1, s);
            }
            s.push(']');
        }
        RawBsonRef::Document(_) => s.push_str("{...}"),
        RawBsonRef::Array(_) => s.push_str("[...]"),
        _ => s.push('?'),
    }
}

/// What a reply says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reply {
    /// `ok` read (true: 1); None when the document was cut before it.
    pub ok: Option<bool>,
    pub code: Option<i32>,
    pub code_name: Option<String>,
    pub errmsg: Option<String>,
    pub returned_rows: Option<u64>,
    /// More replies follow without a new request (exhaust).
    pub more_to_come: bool,
}

fn as_i64(v: RawBsonRef) -> Option<i64> {
    match v {
        RawBsonRef::Int32(n) => Some(n as i64),
        RawBsonRef::Int64(n) => Some(n),
        RawBsonRef::Double(f) if f.is_finite() => Some(f as i64),
        RawBsonRef::Boolean(b) => Some(b as i64),
        _ => None,
    }
}

fn error_fields(r: &mut Reply, d: &RawDocument) {
    r.code = get(d, "code").and_then(as_i64).map(|c| c as i32);
    r.code_name = get(d, "codeName").and_then(|v| v.as_str()).map(|s| bounded(s, MAX_TEXT));
    r.errmsg = get(d, "errmsg").or_else(|| get(d, "$err")).and_then(|v| v.as_str()).map(|s| bounded(s, MAX_TEXT));
}

pub fn reply(op: i32, b: &Body) -> Reply {
    let mut r = Reply { more_to_come: op == OP_MSG && b.flags & MORE_TO_COME != 0, ..Default::default() };
    let Some(d) = b.doc.and_then(Doc::full) else { return r };
    if op == OP_REPLY && b.flags & QUERY_FAILURE != 0 {
        r.ok = Some(false);
        error_fields(&mut r, d);
        return r;
    }
    match get(d, "ok").and_then(as_i64) {
        Some(ok) => r.ok = Some(ok == 1),
        // A legacy query's reply holds data documents, no `ok`.
        None if op == OP_REPLY => {
            r.ok = Some(true);
            r.returned_rows = b.number_returned.map(|n| n.max(0) as u64);
            return r;
        }
        None => return r,
    }
    if r.ok == Some(false) {
        error_fields(&mut r, d);
        return r;
    }
    // ok: 1 with write errors (duplicate key, validation) or a write-concern error.
    if let Some(e) = get(d, "writeErrors").and_then(|v| v.as_array()).and_then(|a| a.into_iter().next()) {
        if let Some(e) = e.ok().and_then(|e| e.as_document()) {
            error_fields(&mut r, e);
        }
    } else if let Some(e) = get(d, "writeConcernError").and_then(|v| v.as_document()) {
        error_fields(&mut r, e);
    }
    let cursor = get(d, "cursor").and_then(|v| v.as_document());
    let batch = cursor.and_then(|c| get(c, "firstBatch").or_else(|| get(c, "nextBatch"))).and_then(|v| v.as_array());
    r.returned_rows = match batch {
        Some(a) => Some(a.into_iter().take_while(|e| e.is_ok()).count() as u64),
        None => get(d, "n").and_then(as_i64).map(|n| n.max(0) as u64),
    };
    r
}
