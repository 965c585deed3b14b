//! Reassembly of one direction of a TCP connection into an ordered byte
//! stream. Sequence numbers are mapped to 64-bit stream offsets relative to
//! the next expected byte, so wrap-around of the 32-bit space is invisible to
//! the rest of the code. Out-of-order segments wait in a bounded buffer;
//! holes that cannot be filled become [`StreamSink::on_gap`] calls.
use super::{Conn, StreamDir, StreamSink};
use crate::stats::{counter, Counter};
use std::collections::BTreeMap;
use std::sync::LazyLock;

static RETRANSMIT_BYTES: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.retransmit_bytes", &[]));
static OOO_SEGMENTS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.out_of_order_segments", &[]));
static OVERFLOWS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.buffer_overflows", &[]));
static GAP_LOST: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.gap_bytes", &[("reason", "lost")]));
static GAP_OVERFLOW: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.flow.gap_bytes", &[("reason", "buffer_overflow")]));
static GAP_TRUNCATED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.flow.gap_bytes", &[("reason", "truncated")]));

/// Register the reassembly counters so they are reported (as 0) before the
/// first event.
pub(crate) fn register_counters() {
    for c in [&RETRANSMIT_BYTES, &OOO_SEGMENTS, &OVERFLOWS, &GAP_LOST, &GAP_OVERFLOW, &GAP_TRUNCATED] {
        LazyLock::force(c);
    }
}

/// Accounting cost of a buffered segment besides its bytes, so that many tiny
/// (or fully truncated) segments are bounded too.
const SEG_OVERHEAD: usize = 64;

/// Linux caps receive windows at tcp_rmem's maximum (tens of MiB); a jump of
/// 256 MiB is another connection, not loss.
const MAX_SEQ_JUMP: u64 = 256 << 20;

/// Where delivered bytes go: the sink plus the connection and direction.
pub(crate) struct Out<'a, S: StreamSink + ?Sized> {
    pub conn: &'a Conn,
    pub dir: StreamDir,
    pub ts: u64,
    pub sink: &'a mut S,
}

impl<S: StreamSink + ?Sized> Out<'_, S> {
    fn data(&mut self, d: &[u8]) {
        if !d.is_empty() {
            self.sink.on_data(self.conn, self.dir, self.ts, d);
        }
    }
    fn gap(&mut self, len: u64, why: &Counter) {
        if len > 0 {
            why.add(len);
            self.sink.on_gap(self.conn, self.dir, self.ts, len);
        }
    }
}

#[derive(Debug)]
struct Seg {
    data: Vec<u8>,
    /// Original length (≥ data.len() when the capture cut the segment).
    len: u64,
}

/// Totals of one direction, for summaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HalfStats {
    /// Bytes delivered with on_data.
    pub bytes: u64,
    /// Bytes reported with on_gap.
    pub gap_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct HalfStream {
    /// Next expected sequence number; None until the first SYN or data.
    next: Option<u32>,
    /// Stream offset of `next` (bytes delivered + skipped so far).
    off: u64,
    ooo: BTreeMap<u64, Seg>,
    buffered: usize,
    /// Stream offset of the FIN, once seen.
    fin: Option<u64>,
    /// Highest acknowledgement the peer sent for this direction.
    peer_ack: Option<u32>,
    pub stats: HalfStats,
}

impl HalfStream {
    /// Stream offset of `seq` (negative = before the next expected byte).
    fn rel(&self, next: u32, seq: u32) -> i64 {
        seq.wrapping_sub(next) as i32 as i64
    }

    /// A SYN fixes the initial sequence number (data starts one after it).
    pub fn syn(&mut self, seq: u32) {
        if self.next.is_none() {
            self.next = Some(seq.wrapping_add(1));
        }
    }

    /// `seq` is further from the next expected byte than any TCP window
    /// reaches, so it cannot belong to this stream.
    pub fn implausible(&self, seq: u32) -> bool {
        self.next.is_some_and(|n| self.rel(n, seq).unsigned_abs() > MAX_SEQ_JUMP)
    }

    pub fn started(&self) -> bool {
        self.next.is_some()
    }

    /// The FIN has been reached in order: no more data will follow.
    pub fn finished(&self) -> bool {
        matches!(self.fin, Some(f) if self.off >= f)
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// One segment: `data` is the captured part of `len` payload bytes
    /// starting at `seq`; `fin` when the segment carries FIN.
    pub fn segment<S: StreamSink + ?Sized>(
        &mut self,
        seq: u32,
        data: &[u8],
        len: u64,
        fin: bool,
        max_buffer: usize,
        out: &mut Out<S>,
    ) {
        // Mid-stream start: the first byte seen is where the stream begins.
        let next = *self.next.get_or_insert(seq);
        let mut rel = self.rel(next, seq);
        if fin && self.fin.is_none() {
            let at = self.off as i64 + rel + len as i64;
            if at >= 0 {
                self.fin = Some(at as u64);
            }
        }
        if len == 0 {
            return;
        }
        let (mut data, mut len) = (data, len);
        if rel < 0 {
            let skip = rel.unsigned_abs();
            if skip >= len {
                RETRANSMIT_BYTES.add(len);
                return;
            }
            RETRANSMIT_BYTES.add(skip);
            data = &data[(skip as usize).min(data.len())..];
            len -= skip;
            rel = 0;
        }
        if rel == 0 {
            self.deliver(data, len, out);
            self.drain(out);
        } else {
            OOO_SEGMENTS.inc();
            let at = self.off + rel as u64;
            let cost = data.len() + SEG_OVERHEAD;
            match self.ooo.get_mut(&at) {
                Some(old) if old.len >= len => RETRANSMIT_BYTES.add(len),
                Some(old) => {
                    self.buffered = self.buffered - old.data.len() + data.len();
                    *old = Seg { data: data.to_vec(), len };
                }
                None => {
                    self.buffered += cost;
                    self.ooo.insert(at, Seg { data: data.to_vec(), len });
                }
            }
            if self.buffered > max_buffer {
                OVERFLOWS.inc();
                while self.buffered > max_buffer {
                    if !self.skip_to_first(&GAP_OVERFLOW, out) {
                        break;
                    }
                    self.drain(out);
                }
            }
            self.check_peer_ack(out);
        }
    }

    /// The peer acknowledged up to `ack`: bytes before it were received by the
    /// peer, so a hole before buffered data will never be filled by a
    /// retransmission and is skipped.
    pub fn peer_acked<S: StreamSink + ?Sized>(&mut self, ack: u32, out: &mut Out<S>) {
        match (self.peer_ack, self.next) {
            (Some(old), _) if (ack.wrapping_sub(old) as i32) <= 0 => return,
            _ => self.peer_ack = Some(ack),
        }
        self.check_peer_ack(out);
    }

    fn check_peer_ack<S: StreamSink + ?Sized>(&mut self, out: &mut Out<S>) {
        let (Some(ack), Some(next)) = (self.peer_ack, self.next) else { return };
        let Some((&first, _)) = self.ooo.first_key_value() else { return };
        let rel = self.rel(next, ack);
        if rel <= 0 {
            return;
        }
        let target = (self.off + rel as u64).min(first);
        self.skip_to(target, &GAP_LOST, out);
        self.drain(out);
    }

    /// Deliver everything buffered, skipping holes (connection closing).
    pub fn flush<S: StreamSink + ?Sized>(&mut self, out: &mut Out<S>) {
        while self.skip_to_first(&GAP_LOST, out) {
            self.drain(out);
        }
    }

    fn skip_to_first<S: StreamSink + ?Sized>(&mut self, why: &Counter, out: &mut Out<S>) -> bool {
        match self.ooo.first_key_value() {
            Some((&first, _)) => {
                self.skip_to(first, why, out);
                true
            }
            None => false,
        }
    }

    fn skip_to<S: StreamSink + ?Sized>(&mut self, target: u64, why: &Counter, out: &mut Out<S>) {
        if target > self.off {
            let n = target - self.off;
            out.gap(n, why);
            self.stats.gap_bytes += n;
            self.advance(n);
        }
    }

    fn advance(&mut self, n: u64) {
        self.off += n;
        self.next = self.next.map(|s| s.wrapping_add(n as u32));
    }

    fn deliver<S: StreamSink + ?Sized>(&mut self, data: &[u8], len: u64, out: &mut Out<S>) {
        let data = &data[..data.len().min(len as usize)];
        out.data(data);
        self.stats.bytes += data.len() as u64;
        let missing = len - data.len() as u64;
        out.gap(missing, &GAP_TRUNCATED);
        self.stats.gap_bytes += missing;
        self.advance(len);
    }

    /// Deliver buffered segments that are now in order.
    fn drain<S: StreamSink + ?Sized>(&mut self, out: &mut Out<S>) {
        while let Some(entry) = self.ooo.first_entry() {
            let at = *entry.key();
            if at > self.off {
                break;
            }
            let seg = entry.remove();
            self.buffered -= seg.data.len() + SEG_OVERHEAD;
            let end = at + seg.len;
            if end <= self.off {
                RETRANSMIT_BYTES.add(seg.len);
                continue;
            }
            let skip = self.off - at;
            RETRANSMIT_BYTES.add(skip);
            let data = &seg.data[(skip as usize).min(seg.data.len())..];
            self.deliver(data, seg.len - skip, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testing::{conn, Rec, Recorder};

    const MAX: usize = 1 << 20;

    fn seg(h: &mut HalfStream, r: &mut Recorder, seq: u32, data: &[u8]) {
        let c = conn();
        let mut out = Out { conn: &c, dir: StreamDir::ToServer, ts: 0, sink: r };
        h.segment(seq, data, data.len() as u64, false, MAX, &mut out);
    }

    #[test]
    fn in_order_and_out_of_order() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        h.syn(99);
        seg(&mut h, &mut r, 106, b"world");
        assert!(r.stream(StreamDir::ToServer).is_empty());
        seg(&mut h, &mut r, 100, b"hello ");
        assert_eq!(r.stream(StreamDir::ToServer), b"hello world");
        assert_eq!(h.buffered_bytes(), 0);
    }

    #[test]
    fn retransmission_and_overlap_are_trimmed() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        h.syn(0);
        seg(&mut h, &mut r, 1, b"abcd");
        seg(&mut h, &mut r, 1, b"abcd");
        seg(&mut h, &mut r, 3, b"cdef");
        seg(&mut h, &mut r, 9, b"ijk");
        seg(&mut h, &mut r, 8, b"hij");
        seg(&mut h, &mut r, 8, b"hi");
        seg(&mut h, &mut r, 7, b"g");
        assert_eq!(r.stream(StreamDir::ToServer), b"abcdefghijk");
        assert!(r.gaps().is_empty());
    }

    #[test]
    fn wrap_around() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        h.syn(u32::MAX - 3);
        seg(&mut h, &mut r, u32::MAX - 2, b"abc");
        seg(&mut h, &mut r, 3, b"gh");
        seg(&mut h, &mut r, 0, b"def");
        assert_eq!(r.stream(StreamDir::ToServer), b"abcdefgh");
    }

    #[test]
    fn overflow_skips_ahead_with_a_gap() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        let c = conn();
        h.syn(0);
        let mut out = Out { conn: &c, dir: StreamDir::ToServer, ts: 0, sink: &mut r };
        h.segment(1, b"ab", 2, false, 200, &mut out);
        // Hole at 3..10; buffered segments exceed the 200-byte cap.
        h.segment(10, &[b'x'; 100], 100, false, 200, &mut out);
        h.segment(110, &[b'y'; 100], 100, false, 200, &mut out);
        assert_eq!(r.gaps(), vec![7]);
        assert_eq!(r.stream(StreamDir::ToServer).len(), 202);
        assert_eq!(h.buffered_bytes(), 0);
    }

    #[test]
    fn truncated_segment_is_data_then_gap() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        let c = conn();
        let mut out = Out { conn: &c, dir: StreamDir::ToServer, ts: 0, sink: &mut r };
        h.segment(500, b"GET", 10, false, MAX, &mut out);
        h.segment(510, b"next", 4, false, MAX, &mut out);
        assert_eq!(r.events, vec![Rec::Data(b"GET".to_vec()), Rec::Gap(7), Rec::Data(b"next".to_vec())]);
    }

    #[test]
    fn peer_ack_beyond_hole_resyncs() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        let c = conn();
        h.syn(0);
        let mut out = Out { conn: &c, dir: StreamDir::ToServer, ts: 0, sink: &mut r };
        h.segment(1, b"aa", 2, false, MAX, &mut out);
        h.segment(5, b"cc", 2, false, MAX, &mut out);
        h.peer_acked(7, &mut out);
        assert_eq!(r.events, vec![Rec::Data(b"aa".to_vec()), Rec::Gap(2), Rec::Data(b"cc".to_vec())]);
    }

    #[test]
    fn fin_is_reached_in_order() {
        let (mut h, mut r) = (HalfStream::default(), Recorder::default());
        let c = conn();
        h.syn(0);
        let mut out = Out { conn: &c, dir: StreamDir::ToServer, ts: 0, sink: &mut r };
        h.segment(4, b"d", 1, true, MAX, &mut out);
        assert!(!h.finished());
        h.segment(1, b"abc", 3, false, MAX, &mut out);
        assert!(h.finished());
    }
}
