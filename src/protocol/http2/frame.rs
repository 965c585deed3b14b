//! HTTP/2 frame header (RFC 9113 4.1) and shape checks used to detect
//! HTTP/2 without the preface and to find the next frame after lost bytes.

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS_MAX_FRAME_SIZE default: peers rarely raise it, so a longer
/// frame is a weak sign of misalignment when guessing.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub typ: u8,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit of the stream id.
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Some(Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            typ: b[3],
            flags: b[4],
            stream: sid & 0x7fff_ffff,
            reserved: sid & 0x8000_0000 != 0,
        })
    }

    /// Strict shape check: would a conforming peer send this header?
    pub fn plausible(&self) -> bool {
        if self.reserved || self.len > DEFAULT_MAX_FRAME {
            return false;
        }
        let s0 = self.stream == 0;
        let (flags_ok, shape_ok) = match self.typ {
            DATA => (self.flags & !(END_STREAM | PADDED) == 0, !s0),
            HEADERS => (self.flags & !(END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG) == 0, !s0 && self.len > 0),
            PRIORITY => (self.flags == 0, !s0 && self.len == 5),
            RST_STREAM => (self.flags == 0, !s0 && self.len == 4),
            SETTINGS => {
                (self.flags & !ACK == 0, s0 && self.len.is_multiple_of(6) && (self.flags & ACK == 0 || self.len == 0))
            }
            PUSH_PROMISE => (self.flags & !(END_HEADERS | PADDED) == 0, !s0 && self.len >= 4),
            PING => (self.flags & !ACK == 0, s0 && self.len == 8),
            GOAWAY => (self.flags == 0, s0 && self.len >= 8),
            WINDOW_UPDATE => (self.flags == 0, self.len == 4),
            CONTINUATION => (self.flags & !END_HEADERS == 0, !s0),
            _ => (false, false),
        };
        flags_ok && shape_ok
    }
}

/// How many consecutive plausible frames start at `data` (looking at no
/// more than `max_frames`), and whether the bytes seen contradict HTTP/2.
pub fn plausible_run(data: &[u8], max_frames: usize) -> (usize, bool) {
    let mut pos = 0;
    let mut n = 0;
    while n < max_frames {
        let Some(h) = data.get(pos..).and_then(FrameHeader::parse) else { break };
        if !h.plausible() {
            return (n, true);
        }
        n += 1;
        pos += HEADER_LEN + h.len as usize;
    }
    (n, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_frame_is_plausible() {
        let h = FrameHeader::parse(&[0, 0, 12, 4, 0, 0, 0, 0, 0]).unwrap();
        assert!(h.plausible());
        assert_eq!(h.len, 12);
    }

    #[test]
    fn other_protocols_are_not() {
        for s in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
            b"\x00\x00\x00\x21\x00\x12\x00\x03\x00\x00",
        ] {
            let (n, contradicted) = plausible_run(s, 4);
            assert!(n == 0 && contradicted, "{s:?}");
        }
    }
}
