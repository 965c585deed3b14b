//! Trace context carried by captured requests (W3C `traceparent`, B3 single
//! and multi header) and the ids of the spans cnflow makes.

/// The caller's span, as announced in the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
    /// W3C tracestate, passed through unchanged.
    pub trace_state: String,
}

/// `s` as N bytes of hex (either case), None when not exactly that or all zero.
fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Decoded and checked in one pass: the ids of every traced request go
    // through here (the `hex` crate validated each digit a second time).
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

/// B3 allows 64-bit trace ids; they are left-padded to 128 bits as B3 specifies.
fn b3_trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex_array::<16>(s),
        16 => {
            let low = hex_array::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// W3C Trace Context level 1: `version-traceid-parentid-flags`. Version ff is
/// invalid; higher versions are parsed by their first four fields as the spec asks.
pub fn parse_traceparent(v: &str) -> Option<Parent> {
    let v = v.trim();
    let b = v.as_bytes();
    // The usual header (55 bytes, dashes at 2, 35 and 52) is cut at those
    // offsets, without the searches: the four fields `split` gives whenever
    // the header can be accepted (each field must then be hex, so there is
    // no other dash, and no fifth field); otherwise a field fails below.
    let (version, trace, span, flags, more) = if b.len() == 55 && b[2] == b'-' && b[35] == b'-' && b[52] == b'-' {
        (&v[..2], &v[3..35], &v[36..52], &v[53..], false)
    } else {
        let mut parts = v.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (version, trace, span, flags, parts.next().is_some())
    };
    if version.len() != 2 || !version.bytes().all(|b| b.is_ascii_hexdigit()) || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    if version == "00" && (more || v.len() != 55) {
        return None;
    }
    let flags = hex_array::<1>(flags).map(|f| f[0]).or_else(|| (flags == "00").then_some(0))?;
    Some(Parent {
        trace_id: hex_array(trace)?,
        span_id: hex_array(span)?,
        sampled: flags & 1 == 1,
        trace_state: String::new(),
    })
}

/// B3 single header: `traceid-spanid[-sampled[-parentspanid]]` (a lone `0`/`1`/`d` carries no ids).
pub fn parse_b3_single(v: &str) -> Option<Parent> {
    let mut parts = v.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = parts.next().map(|s| s == "1" || s == "d").unwrap_or(true);
    Some(Parent { trace_id: b3_trace_id(trace)?, span_id: hex_array(span)?, sampled, trace_state: String::new() })
}

/// Trace context from request headers (lower-case names). traceparent wins over b3, b3 over X-B3-*.
pub fn extract(headers: &[(String, String)]) -> Option<Parent> {
    let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    if let Some(mut p) = get("traceparent").and_then(parse_traceparent) {
        p.trace_state = get("tracestate").unwrap_or_default().trim().to_string();
        return Some(p);
    }
    if let Some(p) = get("b3").and_then(parse_b3_single) {
        return Some(p);
    }
    let trace_id = b3_trace_id(get("x-b3-traceid")?.trim())?;
    let span_id = hex_array(get("x-b3-spanid")?.trim())?;
    let sampled = match (get("x-b3-sampled"), get("x-b3-flags")) {
        (_, Some("1")) => true,
        (Some(s), _) => s.trim() == "1" || s.trim().eq_ignore_ascii_case("true"),
        _ => true,
    };
    Some(Parent { trace_id, span_id, sampled, trace_state: String::new() })
}

/// Span/trace id source: random in live mode, a seeded sequence in replay so
/// that the same capture always yields the same output.
pub enum IdGen {
    /// Xoshiro256++ (rand's `SmallRng`), seeded from the thread's ChaCha
    /// generator: ids only have to be unique and unpredictable enough not
    /// to collide between nodes (256 bits of seed), not secret; drawing
    /// each one from the thread generator went through its thread-local
    /// and reseeding check every time.
    Random(rand::rngs::SmallRng),
    Seeded(u64),
}

impl IdGen {
    pub fn random() -> Self {
        use rand::SeedableRng;
        IdGen::Random(rand::rngs::SmallRng::from_rng(&mut rand::rng()))
    }

    // splitmix64: tiny, fixed forever (unlike rand's StdRng), good enough spread for ids.
    fn next_u64(&mut self) -> u64 {
        match self {
            IdGen::Random(rng) => rand::RngCore::next_u64(rng),
            IdGen::Seeded(state) => {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }
        }
    }

    fn nonzero(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        self.nonzero().to_be_bytes()
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.nonzero().to_be_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn traceparent_valid_and_invalid() {
        let p = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // Future versions may append fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }

    #[test]
    fn b3_single_and_multi() {
        let p = extract(&h(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")])).unwrap();
        assert_eq!(hex::encode(p.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(hex::encode(p.span_id), "e457b5a2e4d86bd1");
        let p = extract(&h(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]))
        .unwrap();
        assert_eq!(hex::encode(p.trace_id), "0000000000000000a3ce929d0e0e4736");
        assert!(!p.sampled);
        assert!(extract(&h(&[("b3", "1")])).is_none());
        assert!(extract(&h(&[("x-b3-traceid", "zz"), ("x-b3-spanid", "00f067aa0ba902b7")])).is_none());
    }

    #[test]
    fn traceparent_wins_and_keeps_tracestate() {
        let p = extract(&h(&[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.trace_state, "congo=t61rcWkgMzE");
    }

    /// The `split` form the offsets replaced.
    fn reference(v: &str) -> Option<Parent> {
        let v = v.trim();
        let mut parts = v.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || !version.bytes().all(|b| b.is_ascii_hexdigit()) || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if version == "00" && (parts.next().is_some() || v.len() != 55) {
            return None;
        }
        let flags = hex_array::<1>(flags).map(|f| f[0]).or_else(|| (flags == "00").then_some(0))?;
        Some(Parent {
            trace_id: hex_array(trace)?,
            span_id: hex_array(span)?,
            sampled: flags & 1 == 1,
            trace_state: String::new(),
        })
    }

    proptest::proptest! {
        /// Valid headers with one character replaced (dashes included) parse as before.
        #[test]
        fn traceparent_parses_as_split(at in 0usize..57, c in proptest::sample::select(vec!['-', '0', 'a', 'F', 'x', ' '])) {
            let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            for base in [good.to_string(), good.replacen("00", "01", 1), format!("{good}-x"), format!(" {good}")] {
                let mut s: Vec<char> = base.chars().collect();
                if at < s.len() {
                    s[at] = c;
                }
                let s: String = s.into_iter().collect();
                proptest::prop_assert_eq!(parse_traceparent(&s), reference(&s), "{}", s);
            }
        }
    }

    #[test]
    fn hex_array_decodes_as_the_hex_crate() {
        for s in [
            "00f067aa0ba902b7",
            "00F067AA0BA902B7",
            "0000000000000000",
            "00f067aa0ba902bz",
            "00f067aa0ba902b",
            "",
            "ffffffffffffffff",
            "0g00000000000000",
            "+1f067aa0ba902b7",
        ] {
            let mut want = [0u8; 8];
            let want = (s.len() == 16
                && s.bytes().all(|b| b.is_ascii_hexdigit())
                && hex::decode_to_slice(s, &mut want).is_ok()
                && want != [0; 8])
                .then_some(want);
            assert_eq!(hex_array::<8>(s), want, "{s}");
        }
    }

    #[test]
    fn seeded_ids_repeat() {
        let (mut a, mut b) = (IdGen::Seeded(7), IdGen::Seeded(7));
        assert_eq!(a.trace_id(), b.trace_id());
        assert_eq!(a.span_id(), b.span_id());
        assert_ne!(a.span_id(), [0; 8]);
        assert_ne!(IdGen::random().trace_id(), IdGen::random().trace_id());
        let mut g = IdGen::random();
        assert_ne!(g.span_id(), g.span_id());
    }
}
