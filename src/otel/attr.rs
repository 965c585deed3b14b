//! Attribute values kept in a form that is ordered (metric series keys),
//! printable (text output) and convertible to OTLP `KeyValue`s.
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use std::fmt;

/// Inline capacity of [`Str`]: an IPv6 address text fits more often than not,
/// every IPv4 address and number does.
const INLINE: usize = 22;

/// The decimal digits of every byte value, zero-padded to three bytes, and their count.
const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let v = o as u8;
        t[o] = if v >= 100 {
            ([b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10], 3)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, 0], 2)
        } else {
            ([b'0' + v, 0, 0], 1)
        };
        o += 1;
    }
    t
};

/// The text of a string attribute value. Spans carry a dozen of them per
/// exchange and the metric series key copies several: constants
/// (`"redis"`, `"tcp"`) are kept by reference and short texts (addresses,
/// numbers) inline, so building and copying them allocates nothing; only
/// longer texts from the exchange (statements, paths) are on the heap.
/// Compares, orders and hashes as the text.
#[derive(Clone)]
pub struct Str(Repr);

/// Private, so that inline bytes only ever come from a `&str` (or ASCII
/// digits and dots): `as_str` need not validate them again each time a value
/// is hashed, compared or encoded.
#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Inline(u8, [u8; INLINE]),
    Heap(String),
    /// A long text many exchanges carry (a statement's summary or masked
    /// text, kept once per statement): a clone is a reference count.
    Shared(std::sync::Arc<str>),
}

impl Str {
    /// A constant (no copy).
    #[inline]
    pub const fn lit(s: &'static str) -> Self {
        Str(Repr::Static(s))
    }
    /// A copy of `s` (inline when short).
    #[inline]
    pub fn copy(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut b = [0u8; INLINE];
            b[..s.len()].copy_from_slice(s.as_bytes());
            Str(Repr::Inline(s.len() as u8, b))
        } else {
            Str(Repr::Heap(s.to_string()))
        }
    }
    /// `s`, moved inline when short (its copies then allocate nothing).
    pub fn compact(s: String) -> Self {
        if s.len() <= INLINE {
            Self::copy(&s)
        } else {
            Str(Repr::Heap(s))
        }
    }
    /// `s` to be cloned often: inline when short, else shared behind a
    /// reference count (clones do not copy it).
    pub fn shared(s: &str) -> Self {
        if s.len() <= INLINE {
            Self::copy(s)
        } else {
            Str(Repr::Shared(s.into()))
        }
    }
    /// The concatenation of `parts` (a span name such as `GET /users/{id}`),
    /// inline when short.
    pub fn concat(parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > INLINE {
            return Str(Repr::Heap(parts.concat()));
        }
        let mut b = [0u8; INLINE];
        let mut n = 0;
        for p in parts {
            b[n..n + p.len()].copy_from_slice(p.as_bytes());
            n += p.len();
        }
        Str(Repr::Inline(n as u8, b))
    }
    /// The upper-case text of `b` when it is ASCII and fits inline (a Redis
    /// command word): folded straight into the inline bytes, one pass.
    /// `None` otherwise.
    pub fn ascii_upper(b: &[u8]) -> Option<Self> {
        if b.len() > INLINE {
            return None;
        }
        let mut buf = [0u8; INLINE];
        let mut high = 0u8;
        for (d, &c) in buf.iter_mut().zip(b) {
            high |= c;
            *d = c.to_ascii_uppercase();
        }
        // Only ASCII (every byte below 0x80) keeps the inline invariant.
        (high < 0x80).then_some(Str(Repr::Inline(b.len() as u8, buf)))
    }
    /// Decimal text of an integer, without allocating.
    pub fn int(i: i64) -> Self {
        Self::copy(itoa::Buffer::new().format(i))
    }
    /// The dotted text of an IPv4 address (as `Display` writes it), each
    /// octet's digits from a table: every span carries three or four addresses.
    pub fn ipv4(ip: std::net::Ipv4Addr) -> Self {
        let mut b = [0u8; INLINE];
        let mut n = 0;
        for (i, o) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                b[n] = b'.';
                n += 1;
            }
            // Three bytes written, the digits then zeros: the next dot and
            // digits overwrite the zeros, and those left past the end keep
            // the inline invariant (bytes past the length are zero).
            let (digits, len) = OCTET_TEXT[usize::from(o)];
            b[n..n + 3].copy_from_slice(&digits);
            n += usize::from(len);
        }
        // At most 15 ASCII bytes (18 written).
        Str(Repr::Inline(n as u8, b))
    }
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            // SAFETY: inline bytes are written only by `copy` (the bytes of a
            // `&str`, cut at its length), `concat` (whole `&str`s one after
            // the other) and `ipv4` (ASCII), and `Repr` is private: `b[..n]`
            // is always valid UTF-8.
            Repr::Inline(n, b) => unsafe { std::str::from_utf8_unchecked(&b[..usize::from(*n)]) },
            Repr::Heap(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

/// The empty text (a constant).
impl Default for Str {
    fn default() -> Self {
        Str::lit("")
    }
}

/// As the text: an exchange detail holding `Str`s serializes as it did with `String`s.
impl serde::Serialize for Str {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}
impl PartialEq for Str {
    /// As the texts, without a `memcmp` call for the common cases (metric
    /// series keys are compared on every exchange): two inline texts compare
    /// as their length and whole arrays, since every constructor starts from
    /// a zeroed array (bytes past the length are zero); one constant with
    /// itself by address.
    // Always inlined: the metric series lookup compares several per
    // exchange, and as a call it cost more than the comparison.
    #[inline(always)]
    fn eq(&self, o: &Self) -> bool {
        match (&self.0, &o.0) {
            (Repr::Inline(n, a), Repr::Inline(m, b)) => n == m && a == b,
            (Repr::Static(a), Repr::Static(b)) if std::ptr::eq(*a, *b) => true,
            _ => self.as_str() == o.as_str(),
        }
    }
}
impl Eq for Str {}
impl PartialOrd for Str {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Str {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(o.as_str())
    }
}
impl std::hash::Hash for Str {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}
impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl PartialEq<str> for Str {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}
impl PartialEq<&str> for Str {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}
impl From<&'static str> for Str {
    fn from(s: &'static str) -> Self {
        Str::lit(s)
    }
}
impl From<String> for Str {
    fn from(s: String) -> Self {
        Str(Repr::Heap(s))
    }
}
impl From<Str> for String {
    fn from(s: Str) -> Self {
        match s.0 {
            Repr::Heap(s) => s,
            r => Str(r).as_str().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum V {
    S(Str),
    I(i64),
    B(bool),
    A(Vec<String>),
}

impl fmt::Display for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V::S(s) => {
                if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
                    write!(f, "{s:?}")
                } else {
                    f.write_str(s)
                }
            }
            V::I(i) => write!(f, "{i}"),
            V::B(b) => write!(f, "{b}"),
            V::A(a) => write!(f, "{a:?}"),
        }
    }
}

/// A constant: kept by reference. (Other text: `String` or [`Str::copy`].)
impl From<&'static str> for V {
    fn from(s: &'static str) -> Self {
        V::S(Str::lit(s))
    }
}
impl From<String> for V {
    fn from(s: String) -> Self {
        V::S(Str::from(s))
    }
}
impl From<Str> for V {
    fn from(s: Str) -> Self {
        V::S(s)
    }
}
impl From<i64> for V {
    fn from(i: i64) -> Self {
        V::I(i)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> Self {
        V::B(b)
    }
}

pub type Attrs = Vec<(&'static str, V)>;

/// Attributes kept to be appended again and again (a connection's endpoint
/// attributes): when none owns heap memory (constants, inline texts,
/// numbers, booleans: the usual case), appending them is one copy of their
/// bytes instead of a clone per value (~50 instructions each through the
/// derived `Clone`s).
pub struct KeptAttrs {
    attrs: Attrs,
    plain: bool,
}

impl KeptAttrs {
    pub fn new(a: &[(&'static str, V)]) -> Self {
        let plain = a.iter().all(|(_, v)| match v {
            V::S(s) => matches!(s.0, Repr::Static(_) | Repr::Inline(..)),
            V::I(_) | V::B(_) => true,
            V::A(_) => false,
        });
        Self { attrs: a.to_vec(), plain }
    }

    /// Appends a clone of the kept attributes to `dst`.
    #[inline]
    pub fn append_to(&self, dst: &mut Attrs) {
        if !self.plain {
            return dst.extend_from_slice(&self.attrs);
        }
        let n = self.attrs.len();
        dst.reserve(n);
        // SAFETY: `plain`: no kept value owns anything (a `Static` or
        // `Inline` text, an integer, a boolean; keys are `&'static str`), so
        // a bitwise copy is a clone and dropping both frees nothing twice.
        // `attrs` is private and never changed after `new`. `reserve` made
        // room for `n` more entries past `len`, and the two lists do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.attrs.as_ptr(), dst.as_mut_ptr().add(dst.len()), n);
            dst.set_len(dst.len() + n);
        }
    }
}

/// Appending to an attribute list. `Vec::push` builds the 48-byte entry on
/// the stack (tag byte, inline text and words written separately) and then
/// copies it with 16-byte loads that overlap several of those smaller
/// stores: the CPU cannot forward them and each load waits for the stores
/// to reach the cache (~15 cycles). In a live profile of the agent those
/// loads were half of span building's own time. `put` makes room first and
/// writes the entry in place, so no such copy is made.
pub trait Put {
    fn put(&mut self, key: &'static str, value: impl Into<V>);
}

impl Put for Attrs {
    #[inline(always)]
    fn put(&mut self, key: &'static str, value: impl Into<V>) {
        if self.len() == self.capacity() {
            self.reserve(1);
        }
        let len = self.len();
        // SAFETY: the capacity check above leaves room for one more entry at
        // `len`; it is initialised by the write before the length covers it.
        // The value is converted here, after the (rare) reserve call: built
        // before it, it would have to be kept on the stack across the call.
        unsafe {
            self.as_mut_ptr().add(len).write((key, value.into()));
            self.set_len(len + 1);
        }
    }
}

/// Attribute lists of at least this capacity go to the span pool, smaller
/// ones to the metric pool.
const SPAN_ATTRS: usize = 16;
/// Lists kept per pool and thread, and the largest capacity kept (bounded:
/// at most 2 × 8 lists of ≤ 64 entries, 48 bytes each, per thread).
const SPARE_LISTS: usize = 8;
const SPARE_MAX_CAP: usize = 64;

thread_local! {
    /// Emptied attribute lists (span, metric) for [`take_attrs`].
    static SPARE: std::cell::RefCell<[Vec<Attrs>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// An empty attribute list with room for `cap` entries, reused from one
/// given back by [`recycle_attrs`] when there is one. Every exchange builds a
/// span list (~1 KiB) and a metric list that are dropped soon after (the
/// metric one when its series exists, the span one when no output takes
/// spans): allocated and freed one at a time, each allocation took
/// mimalloc's slow path (its free list refilled from the blocks freed since).
pub fn take_attrs(cap: usize) -> Attrs {
    let pool = usize::from(cap >= SPAN_ATTRS);
    // `try_with`: no panic even during thread teardown (then no reuse).
    let spare = SPARE.try_with(|s| s.borrow_mut()[pool].pop()).ok().flatten();
    match spare {
        Some(mut v) => {
            v.reserve(cap);
            v
        }
        None => Vec::with_capacity(cap),
    }
}

/// Give back an attribute list that is no longer needed (its values are
/// dropped now; the list is kept for [`take_attrs`], within bounds).
pub fn recycle_attrs(mut v: Attrs) {
    // Only values that own memory are dropped: most (constants, inline
    // texts, numbers) own nothing, and the drop of a `V` is a call since
    // texts can be shared (reference-counted).
    let len = v.len();
    // SAFETY: the length is zeroed first, so nothing is dropped twice even
    // if a drop panicked (the rest would leak); each entry is dropped at
    // most once, in place, and the ones skipped own no memory.
    unsafe {
        v.set_len(0);
        for e in std::slice::from_raw_parts_mut(v.as_mut_ptr(), len) {
            if e.1.owns_memory() {
                std::ptr::drop_in_place(e);
            }
        }
    }
    if v.capacity() == 0 || v.capacity() > SPARE_MAX_CAP {
        return;
    }
    let pool = usize::from(v.capacity() >= SPAN_ATTRS);
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s[pool].len() < SPARE_LISTS {
            s[pool].push(v);
        }
    });
}

impl V {
    /// Dropping it frees memory (a heap or shared text, an array).
    #[inline(always)]
    fn owns_memory(&self) -> bool {
        match self {
            V::S(s) => matches!(s.0, Repr::Heap(_) | Repr::Shared(_)),
            V::I(_) | V::B(_) => false,
            V::A(_) => true,
        }
    }
}

pub fn to_any(v: &V) -> AnyValue {
    let value = match v {
        V::S(s) => any_value::Value::StringValue(s.to_string()),
        V::I(i) => any_value::Value::IntValue(*i),
        V::B(b) => any_value::Value::BoolValue(*b),
        V::A(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(|s| AnyValue { value: Some(any_value::Value::StringValue(s.clone())) }).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

pub fn to_proto(attrs: &[(&'static str, V)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| KeyValue { key: (*k).to_string(), value: Some(to_any(v)), key_strindex: 0 }).collect()
}

pub fn get<'a>(attrs: &'a [(&'static str, V)], key: &str) -> Option<&'a V> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recycling a list drops what its values own (a shared text's count
    /// goes back down) and nothing else.
    #[test]
    fn recycled_lists_drop_what_their_values_own() {
        let shared = Str::shared(&"s".repeat(40));
        let Repr::Shared(count) = &shared.0 else { panic!("long texts are shared") };
        let count = count.clone();
        let mut v = take_attrs(8);
        v.put("shared", shared.clone());
        v.put("heap", V::from("h".repeat(40)));
        v.put("inline", Str::copy("short"));
        v.put("int", 7i64);
        v.push(("array", V::A(vec!["a".repeat(30)])));
        assert_eq!(std::sync::Arc::strong_count(&count), 3);
        recycle_attrs(v);
        assert_eq!(std::sync::Arc::strong_count(&count), 2);
        drop(shared);
        assert_eq!(std::sync::Arc::strong_count(&count), 1);
        let again = take_attrs(8);
        assert!(again.is_empty());
    }
    use proptest::prelude::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        foldhash::fast::FixedState::with_seed(7).hash_one(t)
    }

    /// A list given back comes back empty, with its capacity; the pools
    /// keep a bounded number of lists of bounded capacity.
    #[test]
    fn recycled_attr_lists_come_back_empty_and_bounded() {
        let mut v = take_attrs(21);
        v.push(("a", V::S(Str::copy("a text longer than the inline size"))));
        let at = v.as_ptr();
        recycle_attrs(v);
        let w = take_attrs(21);
        assert!(w.is_empty() && w.capacity() >= 21);
        assert_eq!(w.as_ptr(), at);
        for _ in 0..20 {
            recycle_attrs(Vec::with_capacity(21));
            recycle_attrs(Vec::with_capacity(4));
        }
        recycle_attrs(Vec::with_capacity(SPARE_MAX_CAP + 1));
        SPARE.with(|s| {
            let s = s.borrow();
            assert!(s.iter().all(|p| p.len() <= SPARE_LISTS));
            assert!(s.iter().flatten().all(|v| v.is_empty() && v.capacity() <= SPARE_MAX_CAP));
        });
        assert!(take_attrs(5).capacity() >= 5);
        assert!(take_attrs(40).capacity() >= 40);
    }

    proptest! {
        /// `ascii_upper` is the upper-case copy of ASCII text that fits
        /// inline, equal (text, hash, order) to `Str::copy` of it.
        #[test]
        fn ascii_upper_is_the_upper_case_copy(b in proptest::collection::vec(any::<u8>(), 0..30)) {
            let got = Str::ascii_upper(&b);
            if b.len() <= INLINE && b.is_ascii() {
                let want = String::from_utf8(b.to_ascii_uppercase()).unwrap();
                let got = got.unwrap();
                prop_assert_eq!(got.as_str(), want.as_str());
                prop_assert_eq!(&got, &Str::copy(&want));
                prop_assert_eq!(hash(&got), hash(&Str::copy(&want)));
            } else {
                prop_assert!(got.is_none());
            }
        }
    }

    proptest! {
        /// Every way of making a `Str` holds the text, and it compares,
        /// orders and hashes as the text (metric series keys rely on it).
        #[test]
        fn str_is_its_text(a in ".{0,40}", b in ".{0,40}", i in any::<i64>(), ip in any::<[u8; 4]>()) {
            let (sa, sb) = (Str::copy(&a), Str::compact(b.clone()));
            prop_assert_eq!(sa.as_str(), a.as_str());
            prop_assert_eq!(sb.as_str(), b.as_str());
            prop_assert_eq!(sa == sb, a == b);
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
            prop_assert_eq!(hash(&sa), hash(a.as_str()));
            prop_assert_eq!(String::from(sb.clone()), b.clone());
            prop_assert_eq!(format!("{sa:?}"), format!("{a:?}"));
            prop_assert_eq!(Str::int(i).to_string(), i.to_string());
            let v4 = std::net::Ipv4Addr::from(ip);
            prop_assert_eq!(Str::ipv4(v4).to_string(), v4.to_string());
            // Equal to the same text made another way (inline bytes past the length are zero).
            prop_assert_eq!(Str::ipv4(v4), Str::copy(&v4.to_string()));
            prop_assert_eq!(Str::copy(&a) == Str::concat(&[&b]), a == b);
            prop_assert_eq!(V::from(sa.clone()), V::from(a.clone()));
        }
    }

    #[test]
    fn str_edges() {
        assert_eq!(Str::lit("redis"), Str::copy("redis"));
        assert_eq!(Str::copy(&"x".repeat(INLINE)).as_str().len(), INLINE);
        assert_eq!(Str::copy(&"é".repeat(INLINE)).as_str(), "é".repeat(INLINE));
        assert_eq!(Str::ipv4("255.255.255.255".parse().unwrap()).as_str(), "255.255.255.255");
        assert_eq!(Str::int(i64::MIN).as_str(), i64::MIN.to_string());
        assert_eq!(V::from("a").to_string(), V::from("a".to_string()).to_string());
    }
}
