//! Consistent probability sampling as the OpenTelemetry specification
//! defines it ("TraceState: Probability Sampling", W3C Trace Context level 2):
//! a 56-bit randomness value R (the `rv` sub-key of the `ot` tracestate
//! member, else the trace id's last 7 bytes) is compared with a 56-bit
//! rejection threshold T (`th`): keep when `R >= T`. T = (1 - p) * 2^56, so
//! every participant that samples a trace at probability p2 >= p1 keeps what
//! a p1 participant kept, with no coordination.

/// 2^56: thresholds and randomness values are 56-bit.
pub const MAX_THRESHOLD: u64 = 1 << 56;
/// Hex digits of precision for encoded thresholds (the specification recommends 4).
pub const DEFAULT_PRECISION: u32 = 4;

/// A rejection threshold with its `th` encoding (computed once per configured probability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    /// 0 = keep everything; larger = keep less.
    pub value: u64,
    /// The `th` value: hex digits, trailing zeros removed (`0` for probability 1).
    pub th: String,
}

impl Threshold {
    /// Probability 1: `th:0`.
    pub fn always() -> Self {
        Self { value: 0, th: "0".into() }
    }

    /// The threshold of probability `p` (in [2^-56, 1]) at `precision` hex
    /// digits, following the specification's algorithm: the precision is
    /// raised by the leading `f` digits of small probabilities, and the
    /// value rounded to the nearest representable threshold. None for a
    /// probability that cannot be expressed (0, NaN, below 2^-56, above 1).
    pub fn from_probability(p: f64, precision: u32) -> Option<Self> {
        if !(p.is_finite() && p > 0.0 && p <= 1.0) || p < 1.0 / MAX_THRESHOLD as f64 {
            return None;
        }
        if p == 1.0 {
            return Some(Self::always());
        }
        // frexp: p = m * 2^exp with m in [0.5, 1).
        let exp = libm_frexp_exp(p);
        // Python's floor division `exp // -4`.
        let extra = (exp as f64 / -4.0).floor() as i64;
        let precision = (precision as i64 + extra).clamp(1, 12) as u32;
        // 2 - p lies in [1, 2): its 52 mantissa bits are the 13 hex digits
        // of the rejection probability; add half of the last kept digit to round.
        let mut rejection = 2.0 - p;
        rejection += 0.5 * 2f64.powi(-4 * precision as i32);
        let mantissa = if rejection >= 2.0 { (1u64 << 52) - 1 } else { rejection.to_bits() & ((1u64 << 52) - 1) };
        let digits = mantissa >> (52 - 4 * precision);
        if digits == 0 {
            return Some(Self::always());
        }
        let value = digits << (56 - 4 * precision);
        Some(Self { value, th: encode(value) })
    }

    /// Parse a `th` value (1 to 14 hex digits, right-padded with zeros).
    pub fn parse(th: &str) -> Option<Self> {
        if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u64::from_str_radix(th, 16).ok()? << (4 * (14 - th.len()));
        Some(Self { value: v, th: encode(v) })
    }

    /// The sampling probability this threshold stands for.
    pub fn probability(&self) -> f64 {
        (MAX_THRESHOLD - self.value) as f64 / MAX_THRESHOLD as f64
    }

    /// The specification's decision: keep when randomness >= threshold.
    pub fn keeps(&self, randomness: u64) -> bool {
        randomness >= self.value
    }
}

/// `th` encoding of a 56-bit threshold: 14 hex digits with trailing zeros removed.
pub fn encode(value: u64) -> String {
    if value == 0 {
        return "0".into();
    }
    let s = format!("{:014x}", value & (MAX_THRESHOLD - 1));
    s.trim_end_matches('0').to_string()
}

/// The base-2 exponent of `frexp(p)` for a positive finite `p`.
fn libm_frexp_exp(p: f64) -> i32 {
    let bits = p.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: normalise first.
        return libm_frexp_exp(p * 2f64.powi(64)) - 64;
    }
    biased - 1022
}

/// Randomness from a trace id: its least-significant 56 bits (W3C Trace
/// Context level 2 asks that these be random).
pub fn trace_id_randomness(trace_id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(b)
}

/// The OpenTelemetry (`ot`) member of a W3C tracestate, parsed: `th`, `rv`
/// and the other sub-keys kept in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtState {
    pub th: Option<Threshold>,
    pub rv: Option<u64>,
    /// Other sub-keys (`key:value`), passed through unchanged.
    pub rest: Vec<String>,
}

/// Split a tracestate into its `ot` member and the other members (in order).
pub fn split_tracestate(ts: &str) -> (OtState, Vec<&str>) {
    let mut ot = OtState::default();
    let mut others = Vec::new();
    if ts.is_empty() {
        // The usual case (no tracestate): what the loop below gives for it,
        // without the splitting (~100 instructions per exchange).
        return (ot, others);
    }
    for member in ts.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some(value) = member.strip_prefix("ot=") else {
            others.push(member);
            continue;
        };
        for sub in value.split(';').filter(|s| !s.is_empty()) {
            match sub.split_once(':') {
                Some(("th", v)) => ot.th = Threshold::parse(v),
                Some(("rv", v)) if v.len() == 14 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    ot.rv = u64::from_str_radix(v, 16).ok();
                }
                // A malformed rv is dropped: randomness falls back to the trace id.
                Some(("rv", _)) => {}
                _ => ot.rest.push(sub.to_string()),
            }
        }
    }
    (ot, others)
}

/// Rebuild a tracestate with `ot` as its first member (W3C: an updated
/// member moves to the front), the others after it in their order.
pub fn join_tracestate(ot: &OtState, others: &[&str]) -> String {
    let mut subs: Vec<String> = Vec::new();
    if let Some(th) = &ot.th {
        subs.push(format!("th:{}", th.th));
    }
    if let Some(rv) = ot.rv {
        subs.push(format!("rv:{:014x}", rv & (MAX_THRESHOLD - 1)));
    }
    subs.extend(ot.rest.iter().cloned());
    let mut members: Vec<String> = Vec::with_capacity(others.len() + 1);
    if !subs.is_empty() {
        members.push(format!("ot={}", subs.join(";")));
    }
    // W3C caps a tracestate at 32 members: the last ones go first.
    members.extend(others.iter().take(32 - members.len()).map(|s| s.to_string()));
    members.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's table ("Converting floating-point probability to
    /// threshold value"), 1-in-N at precision 3, 4 and 5.
    #[test]
    fn specification_table() {
        let table: &[(f64, [&str; 3])] = &[
            (1.0, ["0", "0", "0"]),
            (0.5, ["8", "8", "8"]),
            (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
            (0.25, ["c", "c", "c"]),
            (0.2, ["ccd", "cccd", "ccccd"]),
            (0.125, ["e", "e", "e"]),
            (0.1, ["e66", "e666", "e6666"]),
            (0.0625, ["f", "f", "f"]),
            (0.01, ["fd71", "fd70a", "fd70a4"]),
            (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
            (0.0001, ["fff972", "fff9724", "fff97247"]),
            (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
            (0.000001, ["ffffef4", "ffffef39", "ffffef391"]),
        ];
        for (p, ths) in table {
            for (prec, want) in [3, 4, 5].iter().zip(ths) {
                let t = Threshold::from_probability(*p, *prec).unwrap();
                assert_eq!(&t.th, want, "p={p} precision={prec}");
                assert_eq!(Threshold::parse(want).unwrap(), t, "p={p}");
            }
        }
        // The specification's worked example: 1% at 5 digits = 0xfd70a400000000.
        assert_eq!(Threshold::from_probability(0.01, 5).unwrap().value, 0xfd70a400000000);
        // Actual probabilities quoted by the table (precision 4).
        let p = Threshold::from_probability(0.1, 4).unwrap().probability();
        assert!((p - 0.100006103515625).abs() < 1e-15, "{p}");
    }

    #[test]
    fn invalid_probabilities_and_th_values() {
        for p in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY, 1e-18] {
            assert!(Threshold::from_probability(p, 4).is_none(), "{p}");
        }
        assert!(Threshold::from_probability(2f64.powi(-56), 4).is_some());
        for bad in ["", "g", "123456789abcdef", "-1"] {
            assert!(Threshold::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Threshold::parse("c").unwrap().value, 0xc0000000000000);
        assert_eq!(Threshold::parse("0").unwrap(), Threshold::always());
        assert_eq!(Threshold::parse("ffffffffffffff").unwrap().th, "ffffffffffffff");
    }

    #[test]
    fn decision_is_randomness_at_least_threshold() {
        // The specification's examples: th:8 keeps rv >= 0x80000000000000.
        let half = Threshold::parse("8").unwrap();
        assert!(half.keeps(0x80000000000000));
        assert!(!half.keeps(0x7fffffffffffff));
        assert!(Threshold::always().keeps(0));
        // A trace id's last 7 bytes: W3C level 2 example id.
        let id: [u8; 16] = hex::decode("4bf92f3577b34da6a3ce929d0e0e4736").unwrap().try_into().unwrap();
        assert_eq!(trace_id_randomness(&id), 0xce929d0e0e4736);
        assert!(Threshold::parse("c").unwrap().keeps(trace_id_randomness(&id)));
        assert!(!Threshold::parse("d").unwrap().keeps(trace_id_randomness(&id)));
        // Consistency: whatever 1% keeps, 10% keeps too.
        let (t1, t10) = (Threshold::from_probability(0.01, 4).unwrap(), Threshold::from_probability(0.1, 4).unwrap());
        for r in (0..MAX_THRESHOLD).step_by((MAX_THRESHOLD / 9973) as usize) {
            assert!(!t1.keeps(r) || t10.keeps(r));
        }
    }

    #[test]
    fn empty_tracestate_splits_to_nothing() {
        let (ot, others) = split_tracestate("");
        assert_eq!(ot, OtState::default());
        assert!(others.is_empty());
        // As the members of an empty list would split (no member at all).
        assert_eq!(split_tracestate(" , "), (OtState::default(), Vec::<&str>::new()));
    }

    #[test]
    fn tracestate_ot_member_round_trip() {
        let (ot, others) = split_tracestate("congo=t61rcWkgMzE, ot=th:c;rv:0123456789abcd;x:y ,rojo=00f067aa0ba902b7");
        assert_eq!(ot.th.as_ref().unwrap().value, 0xc0000000000000);
        assert_eq!(ot.rv, Some(0x0123456789abcd));
        assert_eq!(ot.rest, vec!["x:y"]);
        assert_eq!(others, vec!["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]);
        assert_eq!(
            join_tracestate(&ot, &others),
            "ot=th:c;rv:0123456789abcd;x:y,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // Malformed rv is ignored; an empty ot member disappears.
        let (ot, others) = split_tracestate("ot=rv:xyz");
        assert_eq!(ot, OtState::default());
        assert_eq!(join_tracestate(&ot, &others), "");
        assert_eq!(split_tracestate("").1.len(), 0);
    }
}
