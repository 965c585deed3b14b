//! Reading the per-CPU record rings in timestamp order.
//!
//! The TC programs write each packet to the ring of the CPU they run on (see
//! `RINGS` in bpf-programs/src/main.rs): no lock or cache line shared
//! between CPUs per packet. Order across rings is restored here: a request
//! captured on one CPU and its response on another must reach the decoders
//! in that order. The reader keeps a few records of each ring in hand and
//! always delivers the oldest head; a ring whose hand is empty is read
//! before anything is delivered, so a delivered record is never older than
//! one still waiting in a ring — except for a record whose program had
//! reserved it but not yet committed when its ring was read, which can only
//! be concurrent with (not caused by) what is delivered meanwhile.
use super::PacketEvent;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::ops::Range;

/// Records taken from a ring at once (their payloads share one allocation).
const CHUNK: usize = 64;

/// One ring's records, raw, oldest first; `None` when it has none now.
pub trait RecordSource {
    /// Calls `f` with up to `max` records (each a raw ring entry), oldest first;
    /// returns how many there were.
    fn take<F: FnMut(&[u8])>(&mut self, max: usize, f: F) -> usize;
}

/// Turns a raw entry into an event and the range of its payload bytes
/// (None = undecodable, counted by the decoder). Generic, not `dyn`: the
/// decoder is inlined where the event is stored, so the event's fields are
/// written into the hand once instead of into a return slot that is then
/// copied (a wide load right after narrow stores: a store-forwarding stall
/// that was a few percent of the agent's samples).
pub trait Decode: Fn(&[u8]) -> Option<(PacketEvent, Range<usize>)> {}
impl<F: Fn(&[u8]) -> Option<(PacketEvent, Range<usize>)>> Decode for F {}

/// Merges several record sources by `ts_ns`.
pub struct Merger {
    hands: Vec<VecDeque<PacketEvent>>,
    /// Per source, the payload bytes of its last chunk when that chunk was
    /// full (0 otherwise): the next chunk's buffer starts at that size.
    reserve: Vec<usize>,
}

impl Merger {
    pub fn new(sources: usize) -> Self {
        Self { hands: (0..sources).map(|_| VecDeque::new()).collect(), reserve: vec![0; sources] }
    }

    /// Up to `max` events in timestamp order; true once every source was
    /// found empty (nothing more to read now).
    pub fn next_batch<S: RecordSource, D: Decode>(
        &mut self,
        sources: &mut [S],
        max: usize,
        decode: &D,
    ) -> (Vec<PacketEvent>, bool) {
        debug_assert_eq!(sources.len(), self.hands.len());
        let mut out = Vec::with_capacity(max);
        // Sources found empty in this call: not read again until the next
        // call (a drain must end even while packets keep arriving).
        let mut empty = vec![false; sources.len()];
        while out.len() < max {
            for (i, s) in sources.iter_mut().enumerate() {
                if self.hands[i].is_empty() && !empty[i] && self.fill(i, s, decode) == 0 {
                    empty[i] = true;
                }
            }
            // The oldest head and the oldest of the other heads, as (ts, ring):
            // on equal timestamps the lower ring first.
            let mut first: Option<(u64, usize)> = None;
            let mut second: Option<(u64, usize)> = None;
            for (i, h) in self.hands.iter().enumerate() {
                let Some(e) = h.front() else { continue };
                let k = (e.ts_ns, i);
                if first.is_none_or(|f| k < f) {
                    second = first;
                    first = Some(k);
                } else if second.is_none_or(|s| k < s) {
                    second = Some(k);
                }
            }
            let Some((_, i)) = first else {
                return (out, true);
            };
            // That ring's records stay the oldest until one passes the other
            // heads: delivered as a run, without comparing every head again
            // per record (a run ends when the hand is empty, which is then
            // read before anything else is delivered).
            let hand = &mut self.hands[i];
            while out.len() < max {
                match hand.front() {
                    Some(e) if second.is_none_or(|s| (e.ts_ns, i) < s) => {
                        out.push(hand.pop_front().expect("non-empty hand"))
                    }
                    _ => break,
                }
            }
        }
        (out, false)
    }

    /// Reads up to `CHUNK` records of source `i` into its hand.
    fn fill<S: RecordSource, D: Decode>(&mut self, i: usize, s: &mut S, decode: &D) -> usize {
        let hand = &mut self.hands[i];
        // While the ring stays busy, the next chunk's payloads are about as
        // many bytes as the last one's: allocated once, instead of grown
        // from empty by doubling (each growth copied what was read so far).
        // A quiet ring starts from empty, so a lone small record never holds
        // a large buffer.
        let mut payloads = BytesMut::with_capacity(self.reserve[i]);
        let mut spans = Vec::new();
        let start = hand.len();
        let n = s.take(CHUNK, |raw| {
            if let Some((ev, range)) = decode(raw) {
                let from = payloads.len();
                payloads.extend_from_slice(&raw[range]);
                spans.push(from..payloads.len());
                hand.push_back(ev);
            }
        });
        self.reserve[i] = if n == CHUNK { payloads.len() } else { 0 };
        let payloads: Bytes = payloads.freeze();
        for (ev, span) in hand.iter_mut().skip(start).zip(spans) {
            ev.payload = payloads.slice(span);
        }
        n
    }

    /// Records taken from the rings and not delivered yet.
    #[cfg(test)]
    fn in_hand(&self) -> usize {
        self.hands.iter().map(|h| h.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring holding raw records `ts (8 bytes LE) ++ payload`.
    struct Fake(VecDeque<Vec<u8>>);

    impl RecordSource for Fake {
        fn take<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> usize {
            let mut n = 0;
            while n < max {
                let Some(r) = self.0.pop_front() else { break };
                f(&r);
                n += 1;
            }
            n
        }
    }

    fn decode(raw: &[u8]) -> Option<(PacketEvent, Range<usize>)> {
        let ts = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
        if ts == u64::MAX {
            return None; // undecodable
        }
        let ev =
            crate::flow::testing::tcp(crate::flow::testing::CLIENT, crate::flow::testing::SERVER, ts, 0, 0, 0, b"");
        Some((ev, 8..raw.len()))
    }

    fn rec(ts: u64) -> Vec<u8> {
        rec_of(ts, 0)
    }

    /// A record of ring `ring` (named in its payload, so the order of equal
    /// timestamps across rings can be checked).
    fn rec_of(ts: u64, ring: usize) -> Vec<u8> {
        let mut r = ts.to_le_bytes().to_vec();
        r.extend_from_slice(format!("p{ts}r{ring}").as_bytes());
        r
    }

    proptest! {
        /// Every record comes out once, in timestamp order (ties: lower ring
        /// first, each ring's own order kept), with its own payload, whatever
        /// the batch size.
        #[test]
        fn merged_in_timestamp_order(
            rings in prop::collection::vec(prop::collection::vec(0u64..50, 0..200), 1..5),
            max in 1usize..300,
        ) {
            let mut sources: Vec<Fake> = rings
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut ts = r.clone();
                    ts.sort();
                    Fake(ts.into_iter().map(|t| rec_of(t, i)).collect())
                })
                .collect();
            let mut want: Vec<(u64, usize)> =
                rings.iter().enumerate().flat_map(|(i, r)| r.iter().map(move |&t| (t, i))).collect();
            want.sort();
            let mut m = Merger::new(sources.len());
            let mut got = Vec::new();
            loop {
                let (b, done) = m.next_batch(&mut sources, max, &decode);
                prop_assert!(b.len() <= max);
                got.extend(b);
                if done {
                    break;
                }
            }
            prop_assert_eq!(m.in_hand(), 0);
            let got: Vec<String> = got.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).collect();
            let want: Vec<String> = want.iter().map(|(t, i)| format!("p{t}r{i}")).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// A ring read empty is not read again in the same call, so a drain
    /// ends; what arrives later comes in the next call.
    #[test]
    fn a_drain_ends_and_later_records_follow() {
        let mut sources = vec![Fake(VecDeque::from(vec![rec(1), rec(3)])), Fake(VecDeque::from(vec![rec(2)]))];
        let mut m = Merger::new(2);
        let (b, done) = m.next_batch(&mut sources, 10, &decode);
        assert!(done);
        assert_eq!(b.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), vec![1, 2, 3]);
        sources[1].0.push_back(rec(4));
        sources[1].0.push_back(vec![0xff; 8]); // undecodable: skipped
        let (b, done) = m.next_batch(&mut sources, 10, &decode);
        assert!(done);
        assert_eq!(b.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), vec![4]);
    }
}
