//! HPACK (RFC 7541) header decoding that keeps going when the dynamic table
//! is not fully known: a capture that starts mid-connection, or bytes lost
//! to a gap, leave us without entries the encoder still refers to.
//!
//! Model: `table` holds the newest entries we saw inserted, newest first. As
//! long as no insertion was missed, their indices are exact; an index past
//! them is reported as unknown (never guessed). Whenever an insertion may
//! have been missed, indices of known entries would shift by an unknown
//! amount, so [`Hpack::lost`] forgets them and learning starts again.
//! Entry sizes we cannot compute are counted as lower bounds, so we only
//! ever evict later than the encoder does: kept-but-evicted entries at the
//! tail are never referenced by a correct encoder.
use std::collections::VecDeque;

/// RFC 7541 Appendix A.
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// HTTP/2's default SETTINGS_HEADER_TABLE_SIZE.
const DEFAULT_TABLE: usize = 4096;
/// Our model never holds more than this, whatever the peers negotiate
/// (evicting early only turns lookups into "unknown").
const MAX_TABLE: usize = 64 * 1024;
/// Strings longer than this are not kept (their size still counts).
const MAX_STRING: usize = 8 * 1024;

struct Entry {
    name: Option<Box<[u8]>>,
    value: Option<Box<[u8]>>,
    /// Lower bound of the RFC size (name + value + 32).
    size: usize,
}

/// Outcome of decoding one header block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatus {
    /// Fields whose name or value could not be recovered.
    pub unknown: u32,
    /// The block was malformed; fields after the error are missing and the
    /// table has been reset to "unknown".
    pub error: bool,
    /// An index pointed past a table we believed complete (peer bug or our
    /// desync): counted as a parse error by the caller.
    pub bad_index: bool,
}

/// Receives each decoded field; `None` marks a part that could not be recovered.
pub type FieldSink<'a> = dyn FnMut(Option<&[u8]>, Option<&[u8]>) + 'a;

/// A decoded string literal: bytes (if recoverable and small enough),
/// decoded length lower bound, bytes consumed.
type Literal = (Option<Box<[u8]>>, usize, usize);

pub struct Hpack {
    table: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// Older entries than those in `table` may exist.
    unknown_tail: bool,
}

impl Hpack {
    /// `complete`: the connection was seen from its start.
    pub fn new(complete: bool) -> Self {
        Self { table: VecDeque::new(), size: 0, max: DEFAULT_TABLE, unknown_tail: !complete }
    }

    /// Insertions may have been missed: forget positions, keep learning.
    pub fn lost(&mut self) {
        self.table.clear();
        self.size = 0;
        self.unknown_tail = true;
    }

    pub fn is_complete(&self) -> bool {
        !self.unknown_tail
    }

    /// Decode one complete header block, calling `cb(name, value)` per field;
    /// `None` marks a part that could not be recovered.
    pub fn decode(&mut self, buf: &[u8], cb: &mut FieldSink) -> BlockStatus {
        let mut st = BlockStatus::default();
        let mut pos = 0;
        while pos < buf.len() {
            let b = buf[pos];
            let rest = &buf[pos..];
            let used = if b & 0x80 != 0 {
                let Some((idx, n)) = int(rest, 7) else { return self.fail(st) };
                match self.lookup(idx, &mut st) {
                    Some((name, value)) => cb(name, value),
                    None => {
                        st.unknown += 1;
                        cb(None, None)
                    }
                }
                n
            } else if b & 0xe0 == 0x20 {
                let Some((sz, n)) = int(rest, 5) else { return self.fail(st) };
                self.max = sz.min(MAX_TABLE);
                if sz == 0 {
                    // Everything, including entries we never saw, is evicted.
                    self.unknown_tail = false;
                }
                self.evict(0);
                n
            } else {
                let indexing = b & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let Some((idx, mut n)) = int(rest, prefix) else { return self.fail(st) };
                let (name, name_len): (Option<Box<[u8]>>, usize) = if idx == 0 {
                    let Some((s, len, used)) = string(&rest[n..]) else { return self.fail(st) };
                    n += used;
                    (s, len)
                } else {
                    match self.lookup(idx, &mut st) {
                        Some((Some(name), _)) => (Some(name.into()), name.len()),
                        _ => (None, 0),
                    }
                };
                let Some((value, value_len, used)) = string(&rest[n..]) else { return self.fail(st) };
                n += used;
                if name.is_none() || value.is_none() {
                    st.unknown += 1;
                }
                cb(name.as_deref(), value.as_deref());
                if indexing {
                    self.insert(Entry { name, value, size: name_len + value_len + 32 });
                }
                n
            };
            pos += used;
        }
        st
    }

    fn fail(&mut self, mut st: BlockStatus) -> BlockStatus {
        st.error = true;
        self.lost();
        st
    }

    #[allow(clippy::type_complexity)]
    fn lookup(&self, idx: usize, st: &mut BlockStatus) -> Option<(Option<&[u8]>, Option<&[u8]>)> {
        if idx == 0 {
            st.bad_index = true;
            return None;
        }
        if idx <= STATIC_TABLE.len() {
            let (n, v) = STATIC_TABLE[idx - 1];
            return Some((Some(n.as_bytes()), Some(v.as_bytes())));
        }
        match self.table.get(idx - STATIC_TABLE.len() - 1) {
            Some(e) => Some((e.name.as_deref(), e.value.as_deref())),
            None => {
                if !self.unknown_tail {
                    st.bad_index = true;
                }
                None
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        if e.size > self.max {
            // RFC 7541 4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            self.unknown_tail = false;
            return;
        }
        self.evict(e.size);
        self.size += e.size;
        self.table.push_front(e);
    }

    fn evict(&mut self, incoming: usize) {
        if self.size + incoming > self.max {
            // Known entries alone overflow: unseen older ones are gone too.
            self.unknown_tail = false;
        }
        while self.size + incoming > self.max {
            match self.table.pop_back() {
                Some(old) => self.size -= old.size,
                None => break,
            }
        }
    }
}

/// RFC 7541 5.1 integer; None when truncated or absurdly large.
fn int(buf: &[u8], prefix: u8) -> Option<(usize, usize)> {
    let mask = ((1u16 << prefix) - 1) as u8;
    let first = *buf.first()? & mask;
    if first < mask {
        return Some((first as usize, 1));
    }
    let mut value = mask as usize;
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += ((b & 0x7f) as usize) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// RFC 7541 5.2 string: (decoded bytes if recoverable and small enough,
/// decoded length lower bound, bytes consumed).
fn string(buf: &[u8]) -> Option<Literal> {
    let huffman = *buf.first()? & 0x80 != 0;
    let (len, n) = int(buf, 7)?;
    let raw = buf.get(n..n.checked_add(len)?)?;
    if !huffman {
        let s = (raw.len() <= MAX_STRING).then(|| raw.into());
        return Some((s, raw.len(), n + len));
    }
    // Huffman codes are at most 30 bits, so decoding never shrinks below this.
    let lower = raw.len() * 8 / 30;
    if raw.len() > MAX_STRING {
        return Some((None, lower, n + len));
    }
    let decoded = super::huffman::decode(raw);
    Some(match decoded {
        Some(d) => {
            let l = d.len();
            (Some(d.into_boxed_slice()), l, n + len)
        }
        None => (None, lower, n + len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Option<String>, Option<String>)>;

    fn decode_all(h: &mut Hpack, buf: &[u8]) -> (Fields, BlockStatus) {
        let mut v = Vec::new();
        let st = h.decode(buf, &mut |n, val| {
            v.push((n.map(|x| String::from_utf8_lossy(x).into()), val.map(|x| String::from_utf8_lossy(x).into())))
        });
        (v, st)
    }

    #[test]
    fn static_table_matches_loona() {
        let mut reference = loona_hpack::Decoder::new();
        for i in 1..=61u8 {
            let got = reference.decode(&[0x80 | i]).unwrap();
            let (n, v) = STATIC_TABLE[i as usize - 1];
            assert_eq!(got, vec![(n.as_bytes().to_vec(), v.as_bytes().to_vec())], "index {i}");
        }
    }

    #[test]
    fn matches_loona_encoder_across_blocks() {
        let mut enc = loona_hpack::Encoder::new();
        let mut h = Hpack::new(true);
        for round in 0..5 {
            let path = format!("/svc.Echo/Call{round}");
            let headers: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"POST"),
                (b":path", path.as_bytes()),
                (b":authority", b"10.200.0.2:50051"),
                (b"content-type", b"application/grpc"),
                (b"x-custom", b"value-that-repeats"),
            ];
            let block = enc.encode(headers.iter().copied());
            let (got, st) = decode_all(&mut h, &block);
            assert_eq!(st, BlockStatus::default());
            assert_eq!(got.len(), 5);
            assert_eq!(got[1].1.as_deref(), Some(path.as_str()));
            assert_eq!(got[4].1.as_deref(), Some("value-that-repeats"));
        }
    }

    #[test]
    fn rfc7541_c4_huffman_requests() {
        let mut h = Hpack::new(true);
        let c41 = hex::decode("828684418cf1e3c2e5f23a6ba0ab90f4ff").unwrap();
        let (got, _) = decode_all(&mut h, &c41);
        assert_eq!(got[3], (Some(":authority".into()), Some("www.example.com".into())));
        let c42 = hex::decode("828684be5886a8eb10649cbf").unwrap();
        let (got, st) = decode_all(&mut h, &c42);
        assert_eq!(st, BlockStatus::default());
        assert_eq!(got[3], (Some(":authority".into()), Some("www.example.com".into())));
        assert_eq!(got[4], (Some("cache-control".into()), Some("no-cache".into())));
    }

    #[test]
    fn mid_connection_marks_unknown_and_learns() {
        // Second request of RFC 7541 C.4 without having seen the first.
        let mut h = Hpack::new(false);
        let c42 = hex::decode("828684be5886a8eb10649cbf").unwrap();
        let (got, st) = decode_all(&mut h, &c42);
        assert_eq!(st.unknown, 1);
        assert!(!st.bad_index && !st.error);
        assert_eq!(got[3], (None, None));
        assert_eq!(got[4].1.as_deref(), Some("no-cache"));
        // cache-control: no-cache was learnt at index 62.
        let (got, st) = decode_all(&mut h, &[0xbe]);
        assert_eq!(st.unknown, 0);
        assert_eq!(got[0].1.as_deref(), Some("no-cache"));
    }

    #[test]
    fn truncated_block_resets_table() {
        let mut h = Hpack::new(true);
        let c41 = hex::decode("828684418cf1e3c2e5f23a6ba0ab90f4ff").unwrap();
        let (_, st) = decode_all(&mut h, &c41[..8]);
        assert!(st.error);
        assert!(!h.is_complete());
    }

    #[test]
    fn size_update_zero_makes_table_known() {
        let mut h = Hpack::new(false);
        let (_, st) = decode_all(&mut h, &[0x20, 0x82]);
        assert_eq!(st, BlockStatus::default());
        assert!(h.is_complete());
    }
}
