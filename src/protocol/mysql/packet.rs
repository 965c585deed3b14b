//! MySQL packet framing: the 4-byte header (3-byte length, sequence id), the
//! 16 MB split (a payload of exactly 0xffffff continues in the next packet),
//! and the compressed protocol's outer frames (zlib, inflated in bounded
//! chunks as they stream past). Only the first bytes of each payload are
//! kept; the rest is counted and skipped.
use crate::protocol::spare::SpareBufs;
use flate2::{Decompress, FlushDecompress, Status};

/// A payload of this length continues in the next packet.
pub const MAX_PAYLOAD: u32 = 0xff_ffff;

/// One logical packet (a 16 MB split joined), with a bounded head.
#[derive(Debug, Clone, Default)]
pub struct Packet {
    /// Sequence id of its first part.
    pub seq: u8,
    /// Sequence id of its last part.
    pub last_seq: u8,
    /// Payload length (all parts).
    pub len: u64,
    /// First bytes of the payload.
    pub head: Vec<u8>,
    /// Bytes of the payload were lost (gap, snap length).
    pub cut: bool,
    pub start_ts: u64,
    /// Bytes on the wire, headers included.
    pub wire: u64,
}

impl Packet {
    pub fn first(&self) -> Option<u8> {
        self.head.first().copied()
    }
    /// The length of the first part: a 0xfe/0xff header byte only marks
    /// EOF/OK/ERR in a packet shorter than a full split.
    pub fn single(&self) -> bool {
        self.len < MAX_PAYLOAD as u64
    }
}

/// Splits one direction's byte stream into packets.
#[derive(Debug)]
pub struct Framer {
    hdr: [u8; 4],
    hdr_n: usize,
    /// Payload bytes left in the current part.
    left: u32,
    /// The current part is 0xffffff long: another part follows.
    more: bool,
    cur: Option<Packet>,
    keep: usize,
    /// Framing lost: the caller resynchronises.
    pub lost: bool,
    /// Heads of packets already read, for the next ones (see [`Framer::recycle`]).
    pub spare: SpareBufs,
}

impl Framer {
    pub fn new(keep: usize) -> Self {
        Self { hdr: [0; 4], hdr_n: 0, left: 0, more: false, cur: None, keep, lost: false, spare: SpareBufs::default() }
    }

    /// Between packets (nothing half-read).
    pub fn at_boundary(&self) -> bool {
        self.hdr_n == 0 && self.cur.is_none() && !self.lost
    }

    pub fn reset(&mut self) {
        self.hdr_n = 0;
        self.left = 0;
        self.more = false;
        self.cur = None;
        self.lost = false;
    }

    /// Takes back the head of a packet it produced once the packet has been
    /// read: the allocation serves a later packet.
    pub fn recycle(&mut self, head: Vec<u8>) {
        self.spare.give(head);
    }

    fn new_packet(&mut self, ts: u64) -> Packet {
        Packet { start_ts: ts, head: self.spare.take(), ..Default::default() }
    }

    /// Read from `data` until one packet completes; returns the bytes used and that packet.
    pub fn feed(&mut self, ts: u64, data: &[u8]) -> (usize, Option<Packet>) {
        let mut pos = 0;
        while pos < data.len() && !self.lost {
            if self.hdr_n > 0 || self.cur.is_none() || (self.left == 0 && self.more) {
                if self.hdr_n < 4 {
                    let n = (4 - self.hdr_n).min(data.len() - pos);
                    self.hdr[self.hdr_n..self.hdr_n + n].copy_from_slice(&data[pos..pos + n]);
                    self.hdr_n += n;
                    pos += n;
                    if self.cur.is_none() && self.hdr_n == n {
                        // The packet starts with its first header byte.
                        self.cur = Some(self.new_packet(ts));
                    }
                    if self.hdr_n < 4 {
                        continue;
                    }
                }
                self.hdr_n = 0;
                let len = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]);
                let seq = self.hdr[3];
                let p = self.cur.get_or_insert_with(Packet::default);
                if p.wire == 0 {
                    p.seq = seq;
                }
                p.last_seq = seq;
                p.wire += 4;
                self.left = len;
                self.more = len == MAX_PAYLOAD;
                if len == 0 {
                    return (pos, self.finish());
                }
                continue;
            }
            let n = (self.left as usize).min(data.len() - pos);
            if let Some(p) = self.cur.as_mut() {
                let room = self.keep.saturating_sub(p.head.len()).min(n);
                if !p.cut {
                    p.head.extend_from_slice(&data[pos..pos + room]);
                }
                p.len += n as u64;
                p.wire += n as u64;
            }
            self.left -= n as u32;
            pos += n;
            if self.left == 0 {
                if self.more {
                    continue;
                }
                return (pos, self.finish());
            }
        }
        (pos, None)
    }

    fn finish(&mut self) -> Option<Packet> {
        self.more = false;
        self.cur.take()
    }

    /// `len` bytes are missing. Inside a payload only that payload is cut;
    /// otherwise the packet in flight (if any) is handed back cut and the
    /// framing is lost.
    pub fn gap(&mut self, len: u64) -> Option<Packet> {
        if len == 0 {
            return None;
        }
        if self.lost {
            return None;
        }
        if self.hdr_n == 0 && self.left > 0 && len <= self.left as u64 {
            self.left -= len as u32;
            if let Some(p) = self.cur.as_mut() {
                p.cut = true;
                p.len += len;
                p.wire += len;
            }
            if self.left == 0 && !self.more {
                return self.finish();
            }
            return None;
        }
        let p = self.cur.take().map(|mut p| {
            p.cut = true;
            p.len += (self.left as u64).min(len);
            p.wire += len;
            p
        });
        self.reset();
        self.lost = true;
        p
    }
}

/// Compressed-protocol frame header: 3-byte compressed length, sequence id,
/// 3-byte uncompressed length (0: the payload is not compressed).
pub const COMP_HEADER: usize = 7;

/// What the compression layer handed over besides plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    None,
    /// Plain bytes of this length are missing (a cut inside a frame).
    Gap(u64),
    /// Framing of the outer layer lost: what follows is unknown.
    Lost,
}

/// The compressed protocol's outer layer for one direction.
pub struct Inflater {
    hdr: [u8; COMP_HEADER],
    hdr_n: usize,
    /// Bytes of the current frame's payload still to come.
    left: u32,
    /// Declared uncompressed length (0 = stored as is).
    ulen: u32,
    produced: u64,
    z: Decompress,
    /// The zlib stream of this frame failed: skip to its end.
    broken: bool,
    /// The frame's input is read; zlib may still hold output.
    draining: bool,
    pub lost: bool,
    /// Frames whose zlib stream did not inflate.
    pub errors: u64,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("left", &self.left).field("lost", &self.lost).finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            hdr: [0; COMP_HEADER],
            hdr_n: 0,
            left: 0,
            ulen: 0,
            produced: 0,
            z: Decompress::new(true),
            broken: false,
            draining: false,
            lost: false,
            errors: 0,
        }
    }
}

impl Inflater {
    /// Read from `data`, appending plain bytes to `out` (at most `out_cap`
    /// of them per call). Returns the bytes used and an event that comes
    /// after the bytes in `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>, out_cap: usize) -> (usize, Inner) {
        let mut pos = 0;
        loop {
            if self.draining {
                // All input of a zlib frame read: inflate what zlib still holds.
                if out.len() >= out_cap {
                    return (pos, Inner::None);
                }
                let made = if self.broken { 0 } else { self.inflate(&[], out, out_cap).1 };
                if made == 0 || self.broken || self.produced >= self.ulen as u64 {
                    self.draining = false;
                    self.hdr_n = 0;
                    if self.produced < self.ulen as u64 {
                        // The frame said it held more than it gave: those plain bytes are missing.
                        let missing = self.ulen as u64 - self.produced;
                        return (pos, Inner::Gap(missing));
                    }
                }
                continue;
            }
            if pos >= data.len() || self.lost || out.len() >= out_cap {
                return (pos, Inner::None);
            }
            if self.left == 0 && self.hdr_n < COMP_HEADER {
                let n = (COMP_HEADER - self.hdr_n).min(data.len() - pos);
                self.hdr[self.hdr_n..self.hdr_n + n].copy_from_slice(&data[pos..pos + n]);
                self.hdr_n += n;
                pos += n;
                if self.hdr_n < COMP_HEADER {
                    continue;
                }
                let h = self.hdr;
                self.left = u32::from_le_bytes([h[0], h[1], h[2], 0]);
                self.ulen = u32::from_le_bytes([h[4], h[5], h[6], 0]);
                self.produced = 0;
                self.broken = false;
                self.z.reset(true);
                if self.left == 0 {
                    self.hdr_n = 0;
                }
                continue;
            }
            let n = (self.left as usize).min(data.len() - pos);
            let input = &data[pos..pos + n];
            let used = if self.ulen == 0 {
                out.extend_from_slice(input);
                n
            } else if self.broken {
                n
            } else {
                let (used, made) = self.inflate(input, out, out_cap);
                if self.broken {
                    n
                } else if used == 0 && made == 0 && out.len() < out_cap {
                    // No progress with room to write: not a zlib stream we can follow.
                    self.errors += 1;
                    self.broken = true;
                    n
                } else {
                    used
                }
            };
            self.left -= used as u32;
            pos += used;
            if self.left == 0 {
                if self.ulen != 0 {
                    self.draining = true;
                } else {
                    self.hdr_n = 0;
                }
            }
        }
    }

    /// Inflate `input` into `out` (up to `out_cap`); returns bytes used and made.
    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, out_cap: usize) -> (usize, u64) {
        let room = out_cap.saturating_sub(out.len());
        let (before_in, before_out, start) = (self.z.total_in(), self.z.total_out(), out.len());
        out.resize(start + room, 0);
        let res = self.z.decompress(input, &mut out[start..], FlushDecompress::None);
        let used = (self.z.total_in() - before_in) as usize;
        let made = self.z.total_out() - before_out;
        out.truncate(start + made as usize);
        self.produced += made;
        if res.is_err() || self.produced > self.ulen as u64 {
            // Corrupt or lying frame: what it produced beyond its declared
            // size is dropped, the rest of it skipped.
            let over = self.produced.saturating_sub(self.ulen as u64) as usize;
            out.truncate(out.len() - over.min(out.len()));
            self.produced = self.produced.min(self.ulen as u64);
            self.errors += 1;
            self.broken = true;
        } else if matches!(res, Ok(Status::StreamEnd)) && used < input.len() {
            // Bytes after the end of the zlib stream.
            self.broken = true;
        }
        (used, made)
    }

    /// `len` bytes of the compressed stream are missing.
    pub fn gap(&mut self, len: u64) -> Inner {
        if len == 0 || self.lost {
            return Inner::None;
        }
        if self.hdr_n == COMP_HEADER && self.left > 0 && len <= self.left as u64 {
            self.left -= len as u32;
            if self.ulen == 0 {
                if self.left == 0 {
                    self.hdr_n = 0;
                }
                return Inner::Gap(len);
            }
            // A zlib stream cannot go on after a hole: the frame's remaining plain bytes are lost.
            self.broken = true;
            let missing = (self.ulen as u64).saturating_sub(self.produced);
            self.produced = self.ulen as u64;
            if self.left == 0 {
                self.hdr_n = 0;
            }
            return if missing > 0 { Inner::Gap(missing) } else { Inner::None };
        }
        self.hdr_n = 0;
        self.left = 0;
        self.draining = false;
        self.lost = true;
        Inner::Lost
    }

    pub fn found(&mut self) {
        self.lost = false;
        self.draining = false;
        self.hdr_n = 0;
        self.left = 0;
    }
}

/// Offset of a plausible compressed frame start in `buf`: its length chains
/// to the next header or exactly to the end of `buf`.
pub fn find_comp_frame(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        let mut at = i;
        let mut frames = 0;
        loop {
            let Some(h) = buf.get(at..at + COMP_HEADER) else { return false };
            let clen = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
            let ulen = u32::from_le_bytes([h[4], h[5], h[6], 0]) as usize;
            if clen == 0 || (ulen != 0 && (ulen + 64 < clen || buf.get(at + COMP_HEADER) != Some(&0x78))) {
                return false;
            }
            at += COMP_HEADER + clen;
            frames += 1;
            if at == buf.len() {
                return true;
            }
            if at > buf.len() {
                return frames > 1;
            }
        }
    })
}

/// Plain packet header at `buf[i..]` with a length that chains through
/// further headers exactly to the end of `buf`, the first header passing `ok`
/// (sequence id, payload); later headers continue the sequence or restart it (a new command).
pub fn chains(buf: &[u8], i: usize, ok: impl Fn(u8, &[u8]) -> bool) -> bool {
    let Some(h) = buf.get(i..i + 4) else { return false };
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let payload = &buf[i + 4..(i + 4 + len).min(buf.len())];
    if !ok(h[3], payload) {
        return false;
    }
    let mut at = i + 4 + len;
    let mut seq = h[3];
    loop {
        if at == buf.len() {
            return true;
        }
        if at > buf.len() {
            return false;
        }
        let Some(h) = buf.get(at..at + 4) else { return false };
        // The next packet of this exchange, or a new command.
        if h[3] != seq.wrapping_add(1) && h[3] != 0 {
            return false;
        }
        seq = h[3];
        at += 4 + u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn splits_join_and_heads_are_bounded() {
        let mut f = Framer::new(16);
        let big = vec![7u8; MAX_PAYLOAD as usize + 10];
        let mut wire = frame(1, &big[..MAX_PAYLOAD as usize]);
        wire.extend(frame(2, &big[MAX_PAYLOAD as usize..]));
        wire.extend(frame(3, b"\xfe\x00\x00\x02\x00"));
        let (n, p) = f.feed(1, &wire);
        let p = p.unwrap();
        assert_eq!((p.seq, p.last_seq, p.len, p.head.len(), p.wire), (1, 2, big.len() as u64, 16, n as u64));
        let (_, p) = f.feed(2, &wire[n..]);
        assert_eq!(p.unwrap().head, b"\xfe\x00\x00\x02\x00");
        assert!(f.at_boundary());
    }

    #[test]
    fn gap_inside_payload_keeps_framing() {
        let mut f = Framer::new(64);
        let wire = frame(0, &[b'a'; 100]);
        assert!(f.feed(1, &wire[..30]).1.is_none());
        let p = f.gap(50);
        assert!(p.is_none() && !f.lost);
        let (_, p) = f.feed(2, &wire[80..]);
        let p = p.unwrap();
        assert!(p.cut && p.len == 100 && p.wire == 104);
        // A gap past the end: the packet comes back cut and framing is lost.
        assert!(f.feed(3, &wire[..30]).1.is_none());
        assert!(f.gap(500).unwrap().cut && f.lost);
    }

    fn compress(plain: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain).unwrap();
        e.finish().unwrap()
    }

    fn comp_frame(seq: u8, plain: &[u8], z: bool) -> Vec<u8> {
        let body = if z { compress(plain) } else { plain.to_vec() };
        let mut v = (body.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(&(if z { plain.len() as u32 } else { 0 }).to_le_bytes()[..3]);
        v.extend(body);
        v
    }

    #[test]
    fn inflates_in_bounded_chunks() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = comp_frame(0, &plain, true);
        wire.extend(comp_frame(1, b"hello", false));
        for cut in [1, 7, 100, wire.len()] {
            let mut inf = Inflater::default();
            let mut got = Vec::new();
            for c in wire.chunks(cut) {
                let mut c = c;
                while !c.is_empty() {
                    let mut out = Vec::new();
                    let (n, ev) = inf.feed(c, &mut out, 4096);
                    assert!(out.len() <= 4096 && ev == Inner::None);
                    got.extend(out);
                    c = &c[n..];
                }
            }
            assert_eq!(got.len(), plain.len() + 5);
            assert_eq!(&got[..plain.len()], &plain[..]);
        }
        assert_eq!(find_comp_frame(&wire), Some(0));
    }

    #[test]
    fn gap_in_compressed_frame_reports_lost_plain_bytes() {
        let plain = vec![3u8; 5000];
        let wire = comp_frame(0, &plain, true);
        let mut inf = Inflater::default();
        let mut out = Vec::new();
        let (n, _) = inf.feed(&wire[..10], &mut out, 1 << 20);
        assert_eq!(n, 10);
        let missing = wire.len() - 10;
        let ev = inf.gap(missing as u64);
        assert_eq!(ev, Inner::Gap(5000 - out.len() as u64));
        assert!(!inf.lost);
        assert_eq!(inf.gap(10), Inner::Lost);
    }

    #[test]
    fn bomb_is_bounded_by_declared_length() {
        // A frame that claims 10 bytes but inflates to a megabyte.
        let body = compress(&vec![0u8; 1 << 20]);
        let mut wire = (body.len() as u32).to_le_bytes()[..3].to_vec();
        wire.push(0);
        wire.extend_from_slice(&10u32.to_le_bytes()[..3]);
        wire.extend(body);
        let mut inf = Inflater::default();
        let mut total = 0;
        let mut c = &wire[..];
        while !c.is_empty() {
            let mut out = Vec::new();
            let (n, _) = inf.feed(c, &mut out, 4096);
            total += out.len();
            c = &c[n..];
        }
        assert!(total <= 10 && inf.errors == 1);
    }
}
