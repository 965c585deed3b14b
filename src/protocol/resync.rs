//! Finding the next message boundary after lost bytes, shared by the
//! decoders of length-prefixed protocols (HTTP/2 frames, Kafka messages):
//! after a gap, a length prefix can no longer be trusted, so the bytes that
//! follow are kept, bounded, until a protocol-specific search finds a
//! plausible message start in them.
use crate::stats::Counter;

/// Bytes seen since framing was lost, waiting for a message start.
#[derive(Debug, Default)]
pub struct Resync {
    buf: Vec<u8>,
}

impl Resync {
    /// Framing was lost: start over from `carry` (bytes already read that
    /// may contain the next message start, e.g. all but the first byte of a
    /// rejected header).
    pub fn restart(&mut self, carry: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(carry);
    }
    pub fn clear(&mut self) {
        self.buf.clear();
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Everything kept so far, leaving nothing.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
    /// Append `data` and search the kept bytes with `find` (offset of a
    /// message start). Found: hands back the kept bytes and that offset, the
    /// caller re-feeds `&bytes[at..]`; the bytes before it are counted in
    /// `skipped`. Not found: keeps only the last `cap` bytes (a message start
    /// must be near the end to still be completed) and counts what it drops.
    pub fn push(
        &mut self,
        data: &[u8],
        cap: usize,
        skipped: &Counter,
        find: impl FnOnce(&[u8]) -> Option<usize>,
    ) -> Option<(Vec<u8>, usize)> {
        self.buf.extend_from_slice(data);
        match find(&self.buf) {
            Some(at) => {
                skipped.add(at as u64);
                Some((self.take(), at))
            }
            None => {
                if self.buf.len() > cap {
                    let drop = self.buf.len() - cap;
                    skipped.add(drop as u64);
                    self.buf.drain(..drop);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_start_or_keeps_a_bounded_tail() {
        let skipped = crate::stats::counter("cnflow.test.resync_skipped", &[]);
        let mut r = Resync::default();
        r.restart(b"xy");
        assert!(r.push(b"zzzz", 4, &skipped, |_| None).is_none());
        assert_eq!((r.len(), skipped.get()), (4, 2));
        let (bytes, at) = r.push(b"MSG", 4, &skipped, |b| b.windows(3).position(|w| w == b"MSG")).unwrap();
        assert_eq!(&bytes[at..], b"MSG");
        assert_eq!((r.len(), skipped.get()), (0, 6));
    }
}
