//! Reading a reply document longer than the buffer bound as its bytes
//! stream past, without keeping them: only `ok` and the number of documents
//! in `cursor.firstBatch`/`nextBatch` are taken (a large find's first batch
//! is the usual reason a reply is long). Each BSON element is skipped by
//! its length, so the cost is a few bytes of state per element header.

/// Where in the reply document the walker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Cursor,
    Batch,
}

/// Longest element header kept (type, key, value prefix): keys here are short.
const MAX_HDR: usize = 96;

#[derive(Debug, Default)]
pub struct Walker {
    /// Offset in the document of the next byte.
    pos: u64,
    /// Entered documents and where they end (at most three deep).
    levels: Vec<(Level, u64)>,
    hdr: Vec<u8>,
    skip_to: u64,
    count: u64,
    pub ok: Option<bool>,
    pub rows: Option<u64>,
    /// The document ended, or something did not add up: nothing more is read.
    done: bool,
}

fn i32_of(b: &[u8]) -> Option<i64> {
    b.get(..4).map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as i64)
}

impl Walker {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if self.pos < self.skip_to {
                let n = (self.skip_to - self.pos).min(data.len() as u64);
                self.pos += n;
                data = &data[n as usize..];
                continue;
            }
            self.hdr.push(data[0]);
            self.pos += 1;
            data = &data[1..];
            if !self.step() {
                self.done = true;
            }
        }
    }

    /// One more header byte read; false when the bytes cannot be this document.
    fn step(&mut self) -> bool {
        let Some(&(level, end)) = self.levels.last() else {
            // The document's own length.
            if self.hdr.len() == 4 {
                let Some(len) = i32_of(&self.hdr).filter(|&l| l >= 5) else { return false };
                self.levels.push((Level::Top, len as u64));
                self.hdr.clear();
            }
            return true;
        };
        let ty = self.hdr[0];
        if ty == 0 {
            // A terminator, exactly where its document ends.
            if self.pos != end {
                return false;
            }
            self.levels.pop();
            self.hdr.clear();
            if level == Level::Batch {
                self.rows = Some(self.count);
            }
            return !self.levels.is_empty();
        }
        let Some(klen) = self.hdr[1..].iter().position(|&b| b == 0) else {
            return self.hdr.len() < MAX_HDR;
        };
        let at = 1 + klen + 1;
        let need = match ty {
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x07 => 12,
            0x08 => 1,
            0x0a | 0x7f | 0xff | 0x06 => 0,
            0x10 => 4,
            0x13 => 16,
            0x02 | 0x03 | 0x04 | 0x05 | 0x0c | 0x0d | 0x0e | 0x0f => 4,
            // Regular expressions (two C strings) do not come in replies we read.
            _ => return false,
        };
        if self.hdr.len() < at + need {
            return true;
        }
        let v = &self.hdr[at..];
        let key = &self.hdr[1..1 + klen];
        let len = if matches!(ty, 0x02..=0x05 | 0x0c..=0x0f) { i32_of(v) } else { None };
        let value_start = self.pos - need as u64;
        match (level, ty, key) {
            (Level::Top, 0x03, b"cursor") | (Level::Cursor, 0x04, b"firstBatch" | b"nextBatch") => {
                let Some(len) = len.filter(|&l| l >= 5) else { return false };
                let inner_end = value_start + len as u64;
                if inner_end > end || self.levels.len() >= 3 {
                    return false;
                }
                let inner = if level == Level::Top { Level::Cursor } else { Level::Batch };
                self.count = 0;
                self.levels.push((inner, inner_end));
                self.hdr.clear();
                return true;
            }
            (Level::Top, _, b"ok") => {
                self.ok = match ty {
                    0x01 => v.get(..8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) == 1.0),
                    0x10 => i32_of(v).map(|n| n == 1),
                    0x12 => v.get(..8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) == 1),
                    0x08 => Some(v[0] == 1),
                    _ => None,
                };
            }
            _ => {}
        }
        if level == Level::Batch {
            self.count += 1;
        }
        // The rest of the value, after the bytes already read.
        let rest = match (ty, len) {
            (0x02 | 0x0d | 0x0e, Some(l)) if l >= 1 => l as u64,
            (0x03 | 0x04 | 0x0f, Some(l)) if l >= 5 => l as u64 - 4,
            (0x05, Some(l)) if l >= 0 => l as u64 + 1,
            (0x0c, Some(l)) if l >= 1 => l as u64 + 12,
            (_, None) => 0,
            _ => return false,
        };
        self.skip_to = self.pos + rest;
        self.hdr.clear();
        self.skip_to < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn counts_a_batch_and_reads_ok_in_any_segmentation() {
        let mut batch = bson::RawArrayBuf::new();
        for i in 0..300 {
            batch.push(rawdoc! { "_id": i, "s": "x".repeat(i as usize % 40), "d": { "n": 1.5, "b": true } });
        }
        let doc = rawdoc! { "cursor": { "firstBatch": batch, "id": 0i64, "ns": "a.b" }, "ok": 1.0,
        "$clusterTime": { "t": bson::Timestamp { time: 1, increment: 2 } } };
        for step in [1, 3, 7, 100, 5000] {
            let mut w = Walker::default();
            for c in doc.as_bytes().chunks(step) {
                w.feed(c);
            }
            assert_eq!((w.rows, w.ok), (Some(300), Some(true)), "step {step}");
        }
        // Cut anywhere: whatever was read is right, nothing is guessed.
        for cut in (0..doc.as_bytes().len()).step_by(97) {
            let mut w = Walker::default();
            w.feed(&doc.as_bytes()[..cut]);
            assert!(w.rows.is_none_or(|n| n == 300) && w.ok.is_none_or(|ok| ok));
        }
        let err = rawdoc! { "ok": 0, "code": 2 };
        let mut w = Walker::default();
        w.feed(err.as_bytes());
        assert_eq!((w.rows, w.ok), (None, Some(false)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..10)) {
            let mut w = Walker::default();
            for c in &chunks {
                w.feed(c);
            }
            proptest::prop_assert!(w.levels.len() <= 3);
        }
    }
}
