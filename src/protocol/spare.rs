//! Buffers of messages a framer already handed out and the decoder has read,
//! kept for the next messages of the same direction: a request and its
//! answer are several messages, and each allocated its buffer.

/// Buffers kept, and the largest kept (bytes of capacity).
pub const SPARE_BUFS: usize = 16;
pub const SPARE_BUF_BYTES: usize = 4096;

#[derive(Debug, Default)]
pub struct SpareBufs {
    bufs: Vec<Vec<u8>>,
}

impl SpareBufs {
    /// An empty buffer, reused when one was given back.
    pub fn take(&mut self) -> Vec<u8> {
        self.bufs.pop().unwrap_or_default()
    }

    /// Takes back a buffer once its message has been read (kept within
    /// [`SPARE_BUFS`] buffers of at most [`SPARE_BUF_BYTES`]).
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if self.bufs.len() < SPARE_BUFS && buf.capacity() <= SPARE_BUF_BYTES {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    /// Bytes held (at most `SPARE_BUFS * SPARE_BUF_BYTES`).
    pub fn bytes(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum()
    }
}
