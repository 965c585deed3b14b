//! HPACK Huffman decoding (RFC 7541 §5.2, Appendix B).
//!
//! The HPACK code is canonical: codes of one length are consecutive and
//! ordered by symbol, so the table is fully defined by each symbol's code
//! length. Decoding looks at the next 32 bits at once and finds the code
//! length by comparing against per-length limits (a handful of compares for
//! the common 5–8 bit codes) instead of walking bit by bit.

/// Code length of symbols 0..=255 and of EOS (256), RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

struct Table {
    /// End (exclusive) of the codes of length ≤ L, left-aligned in 32 bits
    /// (u64 because the end of the last length is 2^32).
    limit: [u64; MAX_LEN + 1],
    /// First code of length L, right-aligned.
    first: [u32; MAX_LEN + 1],
    /// Index in `symbols` of the first code of length L.
    base: [u16; MAX_LEN + 1],
    /// Symbols ordered by (code length, symbol), i.e. by code.
    symbols: [u16; 257],
}

const fn build() -> Table {
    let mut t = Table { limit: [0; MAX_LEN + 1], first: [0; MAX_LEN + 1], base: [0; MAX_LEN + 1], symbols: [0; 257] };
    let mut n = 0;
    let mut code: u32 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        t.first[len] = code;
        t.base[len] = n as u16;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                t.symbols[n] = sym as u16;
                n += 1;
                code += 1;
            }
            sym += 1;
        }
        t.limit[len] = (code as u64) << (32 - len);
        code <<= 1;
        len += 1;
    }
    t
}

static TABLE: Table = build();

/// Shortest code length.
const MIN_LEN: usize = 5;

/// Decodes a Huffman-coded string literal. `None` when it is invalid: EOS
/// inside the string, more than 7 bits of padding, or padding that is not
/// the most significant bits of EOS (all ones).
pub fn decode(buf: &[u8]) -> Option<Vec<u8>> {
    let t = &TABLE;
    // Every code is at least 5 bits long.
    let mut out = Vec::with_capacity(buf.len() * 8 / MIN_LEN);
    // Unconsumed bits, left-aligned at bit 63; the bits below them are zero.
    let mut acc: u64 = 0;
    let mut nbits: usize = 0;
    let mut bytes = buf.iter();
    loop {
        while nbits <= 56 {
            let Some(&b) = bytes.next() else { break };
            acc |= (b as u64) << (56 - nbits);
            nbits += 8;
        }
        if nbits < MIN_LEN {
            break;
        }
        let peek = acc >> 32;
        let mut len = MIN_LEN;
        while len <= MAX_LEN && peek >= t.limit[len] {
            len += 1;
        }
        if len > MAX_LEN {
            // Unreachable: the code is complete (Kraft sum 1), every 30 bits hold a code.
            return None;
        }
        if len > nbits {
            // Only padding is left (or an incomplete code: checked below).
            break;
        }
        let idx = t.base[len] as usize + ((peek >> (32 - len)) as u32 - t.first[len]) as usize;
        let sym = t.symbols[idx];
        if sym == EOS {
            return None;
        }
        out.push(sym as u8);
        acc <<= len;
        nbits -= len;
    }
    if nbits > 7 {
        return None;
    }
    let pad = if nbits == 0 { 0 } else { !0u64 << (64 - nbits) };
    (acc & pad == pad).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encoder from the same table, for round trips.
    fn encode(s: &[u8]) -> Vec<u8> {
        let t = &TABLE;
        let code_of = |sym: u16| -> (u32, usize) {
            let len = LENGTHS[sym as usize] as usize;
            let idx = (t.base[len] as usize..).find(|&i| t.symbols[i] == sym).unwrap();
            (t.first[len] + (idx - t.base[len] as usize) as u32, len)
        };
        let (mut acc, mut n, mut out) = (0u64, 0usize, Vec::new());
        for &b in s {
            let (c, l) = code_of(b as u16);
            acc = (acc << l) | c as u64;
            n += l;
            while n >= 8 {
                out.push((acc >> (n - 8)) as u8);
                n -= 8;
            }
        }
        if n > 0 {
            out.push(((acc << (8 - n)) as u8) | (0xFF >> n));
        }
        out
    }

    #[test]
    fn rfc_7541_examples() {
        // C.4.1: "www.example.com"
        let enc = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        assert_eq!(decode(&enc).unwrap(), b"www.example.com");
        // C.4.2: "no-cache"
        assert_eq!(decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(), b"no-cache");
        assert_eq!(encode(b"www.example.com"), enc);
        assert_eq!(decode(&[]).unwrap(), b"");
        // EOS (30 ones) inside the string; 8 bits of padding.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(decode(&[0xff]), None);
        // Padding must be ones: '0' is 00000, then 000 padding.
        assert_eq!(decode(&[0x00]), None);
        assert_eq!(decode(&[0x07]).unwrap(), b"0");
    }

    proptest! {
        #[test]
        fn round_trips(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(decode(&encode(&s)), Some(s));
        }

        /// loona-hpack's (bit-by-bit) decoder is the oracle, valid input or not.
        #[test]
        fn agrees_with_loona(raw in proptest::collection::vec(any::<u8>(), 0..64), s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut reference = loona_hpack::huffman::HuffmanDecoder::new();
            for input in [raw, encode(&s)] {
                prop_assert_eq!(decode(&input), reference.decode(&input).ok());
            }
        }
    }
}
