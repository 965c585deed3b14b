//! Line-by-line parsing of HTTP/1 message heads that httparse (strict RFC
//! 9112) rejects but real peers send and real servers answer: odd-case or
//! malformed versions (`http/1.1`, `HTTP/1.`), HTTP/0.9 request lines (no
//! version, no headers), obs-fold header continuation lines, more header
//! lines than the fast path's array, header lines that are not `name: value`
//! (skipped, like nginx's `ignore_invalid_headers`), and heads cut short by
//! lost bytes. This is only the slow path: every head goes through httparse
//! first. Header values are slices of the input; a folded value spans its
//! continuation lines (line ends included), which [`super::text`] unfolds.

/// Longest method accepted (RFC 9110 allows any token; registered ones are
/// at most 17 bytes, `UPDATEREDIRECTREF`).
pub const MAX_METHOD: usize = 24;

/// RFC 9110 `tchar`: the bytes of a method or a header name.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `HTTP/` in any case, the start of a version token.
pub fn is_http_prefix(b: &[u8]) -> bool {
    b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"HTTP/")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Start<'a> {
    /// `version` is None for an HTTP/0.9 request line (`GET /page`).
    Request { method: &'a str, target: &'a [u8], version: Option<&'a [u8]> },
    /// `version` is the token without its `HTTP/` prefix.
    Status { version: &'a [u8], code: u16 },
}

#[derive(Debug)]
pub struct Head<'a> {
    pub start: Start<'a>,
    pub headers: Vec<httparse::Header<'a>>,
    /// Bytes of the head through its empty line (HTTP/0.9: through the
    /// request line), or of the complete lines read when the head is cut short.
    pub len: usize,
}

#[derive(Debug)]
pub enum Parsed<'a> {
    Head(Head<'a>),
    /// No line end yet, or (in `wait` mode) no empty line yet.
    Partial,
    /// The first line is not a start line of this direction.
    Invalid,
}

pub fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Split a line (without its line end) on spaces, as nginx does (runs of spaces are one separator).
fn words(line: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while line.get(i) == Some(&b' ') {
            i += 1;
        }
        if i >= line.len() {
            return None;
        }
        let s = i;
        while i < line.len() && line[i] != b' ' {
            i += 1;
        }
        Some((s, &line[s..i]))
    })
}

/// A request line: `METHOD target HTTP/x` (version in any case and form) or
/// the HTTP/0.9 `GET /path`. A target with inner spaces is kept whole.
pub fn request_line(line: &[u8]) -> Option<Start<'_>> {
    let mut w = words(line);
    let (_, method) = w.next()?;
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let (t0, first) = w.next()?;
    let mut last = (t0, first);
    let mut n = 1;
    for x in w {
        last = x;
        n += 1;
    }
    let method = std::str::from_utf8(method).ok()?;
    let ctl = |t: &[u8]| t.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f);
    if n == 1 {
        // HTTP/0.9 (RFC 1945 Simple-Request): GET and an absolute path only.
        return (method == "GET" && first.starts_with(b"/") && !ctl(first)).then_some(Start::Request {
            method,
            target: first,
            version: None,
        });
    }
    let (v0, version) = last;
    if !is_http_prefix(version) {
        return None;
    }
    let target = trim(&line[t0..v0]);
    (!ctl(target)).then_some(Start::Request { method, target, version: Some(&version[5..]) })
}

/// The start of a request line cut by the capture before its line end (snap
/// length, lost segment): `METHOD target ` followed by nothing or a prefix of
/// ` HTTP/x`. The target counts only when the space after it was captured, so
/// it is whole. The version is what was captured of it, if any.
pub fn cut_request_line(buf: &[u8]) -> Option<Start<'_>> {
    if buf.contains(&b'\n') {
        return None;
    }
    let mut w = words(buf);
    let (_, method) = w.next()?;
    let (t0, target) = w.next()?;
    if method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) || buf.get(t0 + target.len()) != Some(&b' ') {
        return None;
    }
    if target.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    let rest = trim(&buf[t0 + target.len()..]);
    let upper = rest.to_ascii_uppercase();
    let version = if upper.starts_with(b"HTTP/") {
        Some(&rest[5..])
    } else if b"HTTP/".starts_with(&upper) {
        None
    } else {
        return None;
    };
    Some(Start::Request { method: std::str::from_utf8(method).ok()?, target, version })
}

/// A status line: `HTTP/x NNN[ reason]`, version in any case and form.
pub fn status_line(line: &[u8]) -> Option<Start<'_>> {
    let mut w = words(line);
    let (_, version) = w.next()?;
    if !is_http_prefix(version) || version.len() > 16 {
        return None;
    }
    let (_, code) = w.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    Some(Start::Status { version: &version[5..], code })
}

/// Parse the head at the start of `input`. `request` chooses the start line;
/// `wait`: a head without its empty line is [`Parsed::Partial`] (more bytes
/// may come); otherwise what its complete lines say is returned (bytes were
/// lost after them).
pub fn parse(input: &[u8], request: bool, wait: bool) -> Parsed<'_> {
    // Empty lines before a request line are ignored (RFC 9112 §2.2).
    let mut pos = 0;
    while input[pos..].starts_with(b"\r\n") || input[pos..].starts_with(b"\n") {
        pos += if input[pos] == b'\r' { 2 } else { 1 };
    }
    let Some(nl) = input[pos..].iter().position(|&b| b == b'\n') else { return Parsed::Partial };
    let line = &input[pos..pos + nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = if request { request_line(line) } else { status_line(line) };
    let Some(start) = start else { return Parsed::Invalid };
    pos += nl + 1;
    if matches!(start, Start::Request { version: None, .. }) {
        return Parsed::Head(Head { start, headers: Vec::new(), len: pos });
    }
    let mut headers: Vec<httparse::Header> = Vec::new();
    // Where the value of the last header starts, to extend it over continuation lines.
    let mut last_value: Option<usize> = None;
    loop {
        let Some(nl) = input[pos..].iter().position(|&b| b == b'\n') else {
            if wait {
                return Parsed::Partial;
            }
            return Parsed::Head(Head { start, headers, len: pos });
        };
        let end = pos + nl;
        let line_end = if end > pos && input[end - 1] == b'\r' { end - 1 } else { end };
        let line = &input[pos..line_end];
        let next = end + 1;
        if line.is_empty() {
            return Parsed::Head(Head { start, headers, len: next });
        }
        if matches!(line[0], b' ' | b'\t') {
            // obs-fold: the value goes on (RFC 9112 §5.2 lets a recipient read it as one space).
            if let (Some(h), Some(vs)) = (headers.last_mut(), last_value) {
                h.value = trim(&input[vs..line_end]);
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = trim(&line[..colon]);
            let value = trim(&line[colon + 1..]);
            match std::str::from_utf8(name) {
                Ok(name) if !name.is_empty() && name.bytes().all(is_tchar) => {
                    let vs = value.as_ptr() as usize - input.as_ptr() as usize;
                    headers.push(httparse::Header { name, value });
                    last_value = Some(vs);
                }
                _ => last_value = None,
            }
        } else {
            last_value = None;
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(input: &[u8], request: bool, wait: bool) -> Head<'_> {
        match parse(input, request, wait) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_lines() {
        let r = |l: &'static [u8]| request_line(l);
        assert_eq!(
            r(b"QUERY /q HTTP/1.1"),
            Some(Start::Request { method: "QUERY", target: b"/q", version: Some(b"1.1") })
        );
        assert_eq!(r(b"GET /a HTTP/1."), Some(Start::Request { method: "GET", target: b"/a", version: Some(b"1.") }));
        assert_eq!(
            r(b"get  /a b  http/1.1"),
            Some(Start::Request { method: "get", target: b"/a b", version: Some(b"1.1") })
        );
        assert_eq!(r(b"GET /page"), Some(Start::Request { method: "GET", target: b"/page", version: None }));
        assert_eq!(
            r(b"CONNECT h:443 HTTP/1.1"),
            Some(Start::Request { method: "CONNECT", target: b"h:443", version: Some(b"1.1") })
        );
        for bad in [&b"POST /page"[..], b"GET key", b"SET a b", b"GET", b"", b"G(T / HTTP/1.1", b"GET /\x01 HTTP/1.1"] {
            assert_eq!(r(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"http/1.1 200 ok"), Some(Start::Status { version: b"1.1", code: 200 }));
        assert_eq!(status_line(b"HTTP/1. 404"), Some(Start::Status { version: b"1.", code: 404 }));
        assert_eq!(status_line(b"HTTP/1.1 20x OK"), None);
        assert_eq!(status_line(b"+OK"), None);
    }

    #[test]
    fn folded_unknown_and_many_headers() {
        let mut raw =
            b"POST /p HTTP/1.1\r\nHost: h\r\nX-Fold: a\r\n  b\r\n\tc\r\nnot a header\r\nUser-Agent: ua\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\nbody");
        let h = head(&raw, true, true);
        assert_eq!(&raw[h.len..], b"body");
        assert_eq!(h.headers.len(), 203);
        assert_eq!(h.headers[1].value, b"a\r\n  b\r\n\tc");
        assert_eq!((h.headers[2].name, h.headers[2].value), ("User-Agent", &b"ua"[..]));
    }

    #[test]
    fn cut_short_and_http09() {
        let raw = b"POST /up HTTP/1.1\r\nHost: example\r\nCookie: abc";
        assert!(matches!(parse(raw, true, true), Parsed::Partial));
        let h = head(raw, true, false);
        assert_eq!(h.headers.len(), 1);
        assert_eq!(h.len, 34);
        let h = head(b"\r\nGET /page\r\nmore", true, true);
        assert_eq!(h.start, Start::Request { method: "GET", target: b"/page", version: None });
        assert_eq!(h.len, 13);
        assert!(matches!(parse(b"garbage line\r\n", true, true), Parsed::Invalid));
        assert!(matches!(parse(b"GET /", true, true), Parsed::Partial));
    }
}
