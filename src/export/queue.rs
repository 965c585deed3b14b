//! Bounded FIFO of export requests for one endpoint and signal, optionally
//! mirrored to a directory (one file per request) so a restart while the
//! backend is down loses nothing.
//!
//! Requests stay accounted for until the sender calls `complete`, so a
//! request being retried still counts against the bound.
//!
//! Files are written to a temporary name, fsync'd, renamed and the directory
//! fsync'd, so a file under its final name is complete and durable; leftover
//! temporary files (a crash mid-write) are removed at open. A file may carry
//! a tag (`SEQ-TAG.pb`): the gateway's batch journal uses it to find the
//! files of a batch whose commit a crash interrupted ([`remove_tagged`]).
//! Requests given up on move to a dead-letter directory instead of being deleted.
//!
//! Spill (with a directory and a disk budget): when the memory bound is
//! reached, further requests are written to disk only (file kept, payload
//! not held) instead of being dropped, up to the budget in bytes; the sender
//! reads them back in order once the in-memory ones are gone. While anything
//! is spilled new requests spill too, so delivery stays first in, first out.
//!
//! Backlog compression: once the requests waiting for a sender hold an
//! eighth of the bound in items (32,768 spans by default: every sender busy
//! for a while, a burst, a slow or unreachable backend), further requests are
//! held zstd-compressed (level 1) until a sender takes them. OTLP requests
//! repeat the same attribute keys and values span after span and shrink ~9×
//! (a Redis span: ~630 bytes encoded, ~70 held, measured with the agent's own
//! requests), for ~0.5 µs of CPU per span paid only in a real backlog; short
//! waits (a sender about to take the request) cost nothing. So the bound in
//! items can absorb long bursts at the memory a much smaller uncompressed
//! queue used to need.
use super::payload::Payload;
use super::{QueueFull, Signal};
use crate::stats::Counter;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use tokio::sync::Notify;

/// A request waiting in memory: as given, or compressed (see the module doc).
enum Held {
    Plain(Payload),
    Packed { zstd: Box<[u8]>, raw_len: usize },
}

impl Held {
    /// Compressed protobuf form; the plain payload if compression fails
    /// (it cannot with in-memory buffers, but nothing is lost if it does).
    fn pack(payload: Payload) -> Self {
        let raw = payload.wire_bytes();
        thread_local! {
            static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let packed = ZSTD.try_with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                *z = zstd::bulk::Compressor::new(1).ok();
            }
            z.as_mut()?.compress(&raw).ok()
        });
        match packed {
            Ok(Some(zstd)) => Held::Packed { zstd: zstd.into_boxed_slice(), raw_len: raw.len() },
            _ => Held::Plain(payload),
        }
    }

    /// Bytes held: the protobuf size, the compressed size once compressed.
    fn bytes(&self) -> usize {
        match self {
            Held::Plain(p) => p.encoded_len(),
            Held::Packed { zstd, .. } => zstd.len(),
        }
    }

    /// Protobuf bytes of the request (for a file; empty only on a bug, as
    /// the compressed bytes are our own).
    fn wire(&self) -> Vec<u8> {
        match self {
            Held::Plain(p) => p.encode(),
            Held::Packed { zstd, raw_len } => zstd::bulk::decompress(zstd, *raw_len).unwrap_or_default(),
        }
    }

    fn into_payload(self, signal: Signal, items: usize) -> std::io::Result<Payload> {
        match self {
            Held::Plain(p) => Ok(p),
            Held::Packed { zstd, raw_len } => {
                let raw = zstd::bulk::decompress(&zstd, raw_len)?;
                Ok(Payload::Encoded(super::payload::Encoded { signal, bytes: raw.into(), items }))
            }
        }
    }
}

/// A request in `pending`.
struct Waiting {
    held: Held,
    items: usize,
    file: Option<PathBuf>,
    /// `held.bytes()`, computed once.
    bytes: usize,
}

pub struct Entry {
    pub payload: Payload,
    pub items: usize,
    file: Option<PathBuf>,
    /// Staged to the spill (disk only): `release` keeps the file, not the payload.
    spill_bytes: Option<u64>,
}

/// A request held on disk only.
struct Spilled {
    file: PathBuf,
    items: usize,
    bytes: u64,
}

impl Entry {
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }
}

struct Inner {
    pending: VecDeque<Waiting>,
    /// Items in `pending`.
    pending_items: usize,
    /// Memory held by `pending` (compressed sizes; see `Held::bytes`).
    held_bytes: usize,
    /// Items pending + taken but not yet completed (held in memory).
    accounted: usize,
    closed: bool,
    next_seq: u64,
    /// Requests on disk only, in order, after every `pending` one.
    spilled: VecDeque<Spilled>,
    spilled_items: usize,
    /// Bytes of spilled files, staged ones included (bounded by the budget).
    spilled_bytes: u64,
}

pub struct Queue {
    signal: Signal,
    capacity: usize,
    dir: Option<PathBuf>,
    dead_letter: Option<(PathBuf, Counter)>,
    /// Disk budget for spilled requests (bytes) and the counter of spilled items.
    spill: Option<(u64, Counter)>,
    inner: Mutex<Inner>,
    notify: Notify,
    depth: Counter,
    /// `cnflow.export.queue.bytes`: memory held by waiting requests.
    bytes_gauge: Option<Counter>,
    /// Waiting items reached `capacity / 8`: a new request is compressed.
    /// Read without the lock, so compression happens outside it.
    behind: std::sync::atomic::AtomicBool,
    dropped: Counter,
    /// Set by a drop, cleared by the next accepted request.
    dropping: std::sync::atomic::AtomicBool,
    /// Destination name, for logs.
    destination: String,
}

impl Queue {
    /// Opens the queue; with a directory, requests left there by a previous
    /// run are loaded first (in order).
    pub fn open(
        signal: Signal,
        capacity: usize,
        dir: Option<PathBuf>,
        depth: Counter,
        dropped: Counter,
    ) -> anyhow::Result<Self> {
        let mut inner = Inner {
            pending: VecDeque::new(),
            pending_items: 0,
            held_bytes: 0,
            accounted: 0,
            closed: false,
            next_seq: 0,
            spilled: VecDeque::new(),
            spilled_items: 0,
            spilled_bytes: 0,
        };
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("cannot create queue directory {}: {e}", d.display()))?;
            let mut files: Vec<(u64, PathBuf)> = Vec::new();
            for e in std::fs::read_dir(d)?.filter_map(|e| e.ok()) {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    // Never acknowledged: a crash interrupted its write.
                    tracing::info!(file = %p.display(), "removing a stale temporary queue file");
                    let _ = std::fs::remove_file(&p);
                } else if let Some((seq, _)) = parse_name(&name) {
                    files.push((seq, p));
                }
            }
            files.sort();
            for (seq, p) in files {
                inner.next_seq = inner.next_seq.max(seq + 1);
                match std::fs::read(&p)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok((b.len(), Payload::decode(signal, &b)?)))
                {
                    Ok((len, payload)) => {
                        let items = payload.items();
                        // Beyond the memory bound (a previous run spilled them):
                        // stay on disk only; a restart must not load the whole spill.
                        if !inner.spilled.is_empty() || inner.over_bound(items, capacity) {
                            inner.spilled_items += items;
                            inner.spilled_bytes += len as u64;
                            inner.spilled.push_back(Spilled { file: p, items, bytes: len as u64 });
                        } else {
                            inner.accounted += items;
                            let held = if backlogged(inner.pending_items, capacity) {
                                Held::pack(payload)
                            } else {
                                Held::Plain(payload)
                            };
                            let bytes = held.bytes();
                            inner.enqueue(Waiting { held, items, file: Some(p), bytes });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %p.display(), "dropping unreadable queued {} request: {e}", signal.name());
                        dropped.inc();
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
            if !inner.pending.is_empty() || !inner.spilled.is_empty() {
                tracing::info!(
                    dir = %d.display(),
                    requests = inner.pending.len(),
                    items = inner.accounted,
                    spilled_requests = inner.spilled.len(),
                    spilled_items = inner.spilled_items,
                    "resuming {} export queue from disk",
                    signal.name()
                );
            }
        }
        depth.set((inner.accounted + inner.spilled_items) as u64);
        Ok(Self {
            signal,
            capacity,
            dir,
            dead_letter: None,
            spill: None,
            behind: backlogged(inner.pending_items, capacity).into(),
            inner: Mutex::new(inner),
            notify: Notify::new(),
            depth,
            bytes_gauge: None,
            dropped,
            dropping: false.into(),
            destination: String::new(),
        })
    }

    /// Counts a refused request; logs once per episode of a full queue (the
    /// counter carries the totals, the log says when it starts).
    fn count_drop(&self, items: usize) {
        self.dropped.add(items.max(1) as u64);
        if !self.dropping.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                signal = self.signal.name(),
                destination = %self.destination,
                capacity = self.capacity,
                "export queue full: dropping new data for this destination (counted in cnflow.export.dropped)"
            );
        }
    }

    /// Reports the memory held by waiting requests in `gauge`.
    pub fn with_bytes_gauge(mut self, gauge: Counter) -> Self {
        gauge.set(self.inner.lock().held_bytes as u64);
        self.bytes_gauge = Some(gauge);
        self
    }

    /// Memory held by waiting requests (compressed ones at their compressed size).
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().held_bytes
    }

    /// Files `held` at the back of `pending`: called with the lock held.
    fn enqueue_locked(&self, g: &mut Inner, (held, bytes): (Held, usize), items: usize, file: Option<PathBuf>) {
        g.enqueue(Waiting { held, items, file, bytes });
        self.pending_changed(g);
    }

    /// After `pending` changed: whether new requests are compressed, and the gauge.
    fn pending_changed(&self, g: &Inner) {
        self.behind.store(backlogged(g.pending_items, self.capacity), std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bytes_gauge {
            b.set(g.held_bytes as u64);
        }
    }

    /// Held compressed in a backlog (see the module doc), with its size;
    /// done before taking the lock.
    fn hold(&self, payload: Payload) -> (Held, usize) {
        Self::sized(if self.behind.load(std::sync::atomic::Ordering::Relaxed) {
            Held::pack(payload)
        } else {
            Held::Plain(payload)
        })
    }

    fn sized(held: Held) -> (Held, usize) {
        let bytes = held.bytes();
        (held, bytes)
    }

    pub fn with_destination(mut self, name: &str) -> Self {
        self.destination = name.to_string();
        self
    }

    /// Requests given up on (`complete(_, false)`) are moved to `dir` and counted.
    pub fn with_dead_letter(mut self, dir: PathBuf, counter: Counter) -> Self {
        self.dead_letter = Some((dir, counter));
        self
    }

    /// With a queue directory: requests that do not fit in memory are
    /// written to disk only, up to `max_bytes`, and counted in `counter` (items).
    pub fn with_spill(mut self, max_bytes: u64, counter: Counter) -> Self {
        if self.dir.is_some() && max_bytes > 0 {
            self.spill = Some((max_bytes, counter));
        }
        self
    }

    /// Items on disk only (spilled), not counted in `len_items`.
    pub fn spilled_items(&self) -> usize {
        self.inner.lock().spilled_items
    }

    fn set_depth(&self, g: &Inner) {
        self.depth.set((g.accounted + g.spilled_items) as u64);
    }

    /// Writes `payload` as a spilled file if the budget allows; returns its
    /// path and size. Called with the lock held (like the other queue writes,
    /// so file order is queue order).
    fn spill_locked(&self, g: &mut Inner, wire: impl FnOnce() -> Vec<u8>, tag: Option<u64>) -> Option<(PathBuf, u64)> {
        let (budget, _) = self.spill.as_ref()?;
        let dir = self.dir.as_ref()?;
        let data = wire();
        let len = data.len() as u64;
        if g.spilled_bytes + len > *budget {
            return None;
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        let p = match tag {
            Some(t) => dir.join(format!("{seq:020}-{t:020}.pb")),
            None => dir.join(format!("{seq:020}.pb")),
        };
        match write_durably(&p, &data) {
            Ok(()) => {
                g.spilled_bytes += len;
                Some((p, len))
            }
            Err(e) => {
                // Nowhere to keep it: the caller drops it (counted).
                tracing::warn!(file = %p.display(), "cannot spill a {} request to disk: {e}", self.signal.name());
                None
            }
        }
    }

    fn spilled_one(&self, items: usize) {
        if let Some((_, c)) = &self.spill {
            c.add(items as u64);
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len_items(&self) -> usize {
        self.inner.lock().accounted
    }

    /// Enqueue without blocking. A request larger than the whole queue is
    /// still accepted when the queue is empty, so it cannot get stuck.
    pub fn push(&self, payload: Payload) -> Result<(), QueueFull> {
        let items = payload.items();
        // What will be dropped or written to the spill is not compressed
        // first (a backend that stays down would cost that for nothing).
        let (refused, plain) = {
            let g = self.inner.lock();
            let full = g.over_bound(items, self.capacity);
            (g.closed || (full && self.spill.is_none()), full || !g.spilled.is_empty())
        };
        if refused {
            self.count_drop(items);
            return Err(QueueFull);
        }
        let held = if plain { Self::sized(Held::Plain(payload)) } else { self.hold(payload) };
        let mut g = self.inner.lock();
        let full = g.over_bound(items, self.capacity);
        if !g.closed && (full || !g.spilled.is_empty()) {
            if let Some((file, bytes)) = self.spill_locked(&mut g, || held.0.wire(), None) {
                g.spilled_items += items;
                g.spilled.push_back(Spilled { file, items, bytes });
                self.set_depth(&g);
                drop(g);
                self.spilled_one(items);
                self.dropping.store(false, std::sync::atomic::Ordering::Relaxed);
                self.notify.notify_one();
                return Ok(());
            }
        }
        if g.closed || full {
            drop(g);
            self.count_drop(items);
            return Err(QueueFull);
        }
        let file = match &self.dir {
            Some(d) => {
                let p = d.join(format!("{:020}.pb", g.next_seq));
                g.next_seq += 1;
                if let Err(e) = write_durably(&p, &held.0.wire()) {
                    // Still deliverable from memory; only restart-safety is lost.
                    tracing::warn!(file = %p.display(), "cannot persist queued {} request: {e}", self.signal.name());
                    None
                } else {
                    Some(p)
                }
            }
            None => None,
        };
        g.accounted += items;
        self.enqueue_locked(&mut g, held, items, file);
        self.set_depth(&g);
        drop(g);
        self.dropping.store(false, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_one();
        Ok(())
    }

    /// Next request to send; None once closed and drained.
    pub async fn take(&self) -> Option<Entry> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.inner.lock();
                if let Some(w) = g.dequeue() {
                    self.pending_changed(&g);
                    drop(g);
                    match w.held.into_payload(self.signal, w.items) {
                        Ok(payload) => return Some(Entry { payload, items: w.items, file: w.file, spill_bytes: None }),
                        Err(e) => {
                            // Our own compressed bytes: only a bug gets here.
                            tracing::error!(
                                "dropping a queued {} request that cannot be decompressed: {e}",
                                self.signal.name()
                            );
                            self.dropped.add(w.items.max(1) as u64);
                            let mut g = self.inner.lock();
                            g.accounted = g.accounted.saturating_sub(w.items);
                            self.set_depth(&g);
                            continue;
                        }
                    }
                }
                if let Some(sp) = g.spilled.pop_front() {
                    // Back in memory while it is sent: accounted like any taken request.
                    g.spilled_items -= sp.items;
                    g.spilled_bytes = g.spilled_bytes.saturating_sub(sp.bytes);
                    g.accounted += sp.items;
                    drop(g);
                    match std::fs::read(&sp.file)
                        .map_err(anyhow::Error::from)
                        .and_then(|b| Ok(Payload::decode(self.signal, &b)?))
                    {
                        Ok(payload) => {
                            return Some(Entry { payload, items: sp.items, file: Some(sp.file), spill_bytes: None })
                        }
                        Err(e) => {
                            tracing::warn!(file = %sp.file.display(), "dropping unreadable spilled {} request: {e}", self.signal.name());
                            let _ = std::fs::remove_file(&sp.file);
                            self.dropped.add(sp.items.max(1) as u64);
                            let mut g = self.inner.lock();
                            g.accounted = g.accounted.saturating_sub(sp.items);
                            self.set_depth(&g);
                            continue;
                        }
                    }
                }
                if g.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Reserves room for `payload` and writes its file (tagged `tag`) durably,
    /// without making it visible to `take`: the caller commits, then calls
    /// [`Queue::release`]. `force` ignores the bound (replaying acknowledged data).
    pub fn stage(&self, payload: Payload, tag: u64, force: bool) -> Result<Entry, QueueFull> {
        let items = payload.items();
        let mut g = self.inner.lock();
        let full = !force && g.over_bound(items, self.capacity);
        if !g.closed && !force && (full || !g.spilled.is_empty()) {
            if let Some((file, bytes)) = self.spill_locked(&mut g, || payload.encode(), Some(tag)) {
                drop(g);
                self.dropping.store(false, std::sync::atomic::Ordering::Relaxed);
                return Ok(Entry { payload, items, file: Some(file), spill_bytes: Some(bytes) });
            }
        }
        if g.closed || full {
            drop(g);
            self.count_drop(items);
            return Err(QueueFull);
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        g.accounted += items;
        self.set_depth(&g);
        drop(g);
        self.dropping.store(false, std::sync::atomic::Ordering::Relaxed);
        let file = self.dir.as_ref().and_then(|d| {
            let p = d.join(format!("{seq:020}-{tag:020}.pb"));
            match write_durably(&p, &payload.encode()) {
                Ok(()) => Some(p),
                Err(e) => {
                    tracing::warn!(file = %p.display(), "cannot persist queued {} request: {e}", self.signal.name());
                    None
                }
            }
        });
        Ok(Entry { payload, items, file, spill_bytes: None })
    }

    /// Makes a staged entry available to `take` (a spilled one from disk).
    pub fn release(&self, e: Entry) {
        let mut g = self.inner.lock();
        match (e.spill_bytes, e.file) {
            (Some(bytes), Some(file)) => {
                g.spilled_items += e.items;
                g.spilled.push_back(Spilled { file, items: e.items, bytes });
                self.set_depth(&g);
                drop(g);
                self.spilled_one(e.items);
            }
            (_, file) => {
                // Compressed outside the lock when others are waiting.
                drop(g);
                let held = self.hold(e.payload);
                let mut g = self.inner.lock();
                self.enqueue_locked(&mut g, held, e.items, file);
            }
        }
        self.notify.notify_one();
    }

    /// The request was delivered (or given up on): release its slot and
    /// delete its file (or move it to the dead-letter directory).
    pub fn complete(&self, e: Entry, delivered: bool) {
        if let Some(f) = &e.file {
            match (&self.dead_letter, delivered) {
                (Some((dir, counter)), false) => {
                    counter.add(e.items as u64);
                    let to = dir.join(f.file_name().unwrap_or_default());
                    let moved = std::fs::create_dir_all(dir).and_then(|_| std::fs::rename(f, &to));
                    match moved.and_then(|_| sync_dir(dir)) {
                        Ok(()) => {
                            tracing::warn!(file = %to.display(), items = e.items, "request moved to the dead-letter directory")
                        }
                        Err(err) => {
                            tracing::warn!(file = %f.display(), "cannot move a request to the dead-letter directory: {err}");
                            let _ = std::fs::remove_file(f);
                        }
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        let mut g = self.inner.lock();
        g.accounted = g.accounted.saturating_sub(e.items);
        self.set_depth(&g);
    }

    /// No more pushes; `take` returns None once the backlog is sent.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Items still held when giving up at shutdown (those on disk survive).
    pub fn abandon(&self) -> (usize, bool) {
        let g = self.inner.lock();
        (g.accounted + g.spilled_items, self.dir.is_some())
    }
}

impl Inner {
    /// `items` more would pass the bound. An empty queue takes any request,
    /// so one larger than the bound cannot get stuck.
    fn over_bound(&self, items: usize, capacity: usize) -> bool {
        self.accounted > 0 && self.accounted + items > capacity
    }

    fn enqueue(&mut self, w: Waiting) {
        self.held_bytes += w.bytes;
        self.pending_items += w.items;
        self.pending.push_back(w);
    }

    fn dequeue(&mut self) -> Option<Waiting> {
        let w = self.pending.pop_front()?;
        self.held_bytes -= w.bytes;
        self.pending_items -= w.items;
        Some(w)
    }
}

/// Requests arriving now wait behind a real backlog: hold them compressed.
fn backlogged(pending_items: usize, capacity: usize) -> bool {
    pending_items > 0 && pending_items >= capacity / 8
}

/// `SEQ.pb` or `SEQ-TAG.pb` → (seq, tag).
fn parse_name(name: &str) -> Option<(u64, Option<u64>)> {
    let stem = name.strip_suffix(".pb")?;
    match stem.split_once('-') {
        Some((seq, tag)) => Some((seq.parse().ok()?, Some(tag.parse().ok()?))),
        None => Some((stem.parse().ok()?, None)),
    }
}

/// Tags of the request files in `dir` (missing directory = none).
pub fn tags_in(dir: &Path) -> Vec<u64> {
    let names = std::fs::read_dir(dir).into_iter().flatten().flatten();
    names.filter_map(|e| parse_name(&e.file_name().to_string_lossy())?.1).collect()
}

/// Deletes the request files of `dir` tagged `tag` (a batch whose commit did not finish).
pub fn remove_tagged(dir: &Path, tag: u64) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if parse_name(&e.file_name().to_string_lossy()).is_some_and(|(_, t)| t == Some(tag)) {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
}

/// Makes renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Temporary name, fsync, rename, fsync of the directory: once this returns
/// the file is on disk under its final name, complete.
pub fn write_durably(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, p)?;
    sync_dir(p.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{counter, gauge};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn spans(n: usize) -> Payload {
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    /// `n` spans shaped like the agent's (a dozen attributes, distinct ids and ports).
    fn redis_like(n: usize) -> Payload {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let spans = (0..n as u64)
            .map(|i| Span {
                trace_id: i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes().repeat(2),
                span_id: (i ^ 0x5bd1_e995).to_le_bytes().to_vec(),
                name: "SET".into(),
                kind: 2,
                start_time_unix_nano: 1_795_634_286_138_979_000 + i * 7919,
                end_time_unix_nano: 1_795_634_286_139_135_000 + i * 7919,
                attributes: vec![
                    kv("db.system.name", Value::StringValue("redis".into())),
                    kv("db.operation.name", Value::StringValue("SET".into())),
                    kv("db.query.text", Value::StringValue("SET ? ?".into())),
                    kv("server.address", Value::StringValue("10.200.41.2".into())),
                    kv("server.port", Value::IntValue(6379)),
                    kv("client.address", Value::StringValue("10.200.41.1".into())),
                    kv("client.port", Value::IntValue(30_000 + (i % 50) as i64)),
                    kv("network.transport", Value::StringValue("tcp".into())),
                    kv("cnflow.tcp.request.seq", Value::IntValue((i * 2_654_435_761 % (1 << 32)) as i64)),
                ],
                ..Default::default()
            })
            .collect();
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    #[tokio::test]
    async fn requests_waiting_behind_others_are_held_compressed_and_come_out_identical() {
        // Compressed from 8,000 / 8 = 1,000 waiting items on.
        let q =
            Queue::open(Signal::Traces, 8_000, None, gauge("test.queue.depth", &[("t", "pack")]), counter("t.d", &[]))
                .unwrap();
        let reqs: Vec<Payload> = (0..3).map(|_| redis_like(1000)).collect();
        let raw = reqs[0].encode().len();
        for r in &reqs {
            q.push(r.clone()).unwrap();
        }
        // The first was alone (plain: its protobuf size); the next two waited behind 1,000 items.
        let packed = q.held_bytes() - raw;
        assert!(packed > 0 && packed * 4 < 2 * raw, "two {raw}-byte requests held in {packed} bytes");
        assert_eq!(q.len_items(), 3000, "the bound still counts items");
        for r in &reqs {
            let e = q.take().await.unwrap();
            assert_eq!(e.items, 1000);
            assert_eq!(e.payload.encode(), r.encode(), "same bytes out");
            assert_eq!(&e.payload.clone().decoded().unwrap(), r);
            q.complete(e, true);
        }
        assert_eq!((q.held_bytes(), q.len_items()), (0, 0));
        // Taken as soon as it arrives: never compressed.
        q.push(reqs[0].clone()).unwrap();
        assert!(matches!(q.take().await.unwrap().payload, Payload::Traces(_)));
        // A short backlog (below an eighth of the bound) stays uncompressed.
        let g = gauge("test.queue.depth", &[("t", "nopack")]);
        let q = Queue::open(Signal::Traces, 100_000, None, g, counter("t.d", &[])).unwrap();
        for r in &reqs {
            q.push(r.clone()).unwrap();
        }
        assert_eq!(q.held_bytes(), 3 * raw);
        assert!(matches!(q.take().await.unwrap().payload, Payload::Traces(_)));
    }

    #[tokio::test]
    async fn compressed_requests_are_written_and_reloaded_as_protobuf() {
        let dir = tempfile::tempdir().unwrap();
        let d = || gauge("test.queue.depth", &[("t", "packdisk")]);
        let reqs: Vec<Payload> = (1..4).map(redis_like).collect();
        {
            let q = Queue::open(Signal::Traces, 8, Some(dir.path().into()), d(), counter("t.d", &[])).unwrap();
            for r in &reqs {
                q.push(r.clone()).unwrap();
            }
        }
        let q = Queue::open(Signal::Traces, 8, Some(dir.path().into()), d(), counter("t.d", &[])).unwrap();
        for r in &reqs {
            assert_eq!(&q.take().await.unwrap().payload.decoded().unwrap(), r);
        }
    }

    #[tokio::test]
    async fn bounded_in_items_and_drops_counted() {
        let dropped = counter("test.queue.dropped", &[("t", "bounded")]);
        let q = Queue::open(Signal::Traces, 10, None, gauge("test.queue.depth", &[("t", "b")]), dropped).unwrap();
        q.push(spans(6)).unwrap();
        q.push(spans(4)).unwrap();
        assert!(q.push(spans(1)).is_err());
        assert_eq!(dropped.get(), 1);
        let e = q.take().await.unwrap();
        assert_eq!(q.len_items(), 10, "taken but not completed still counts");
        q.complete(e, true);
        assert_eq!(q.len_items(), 4);
        q.push(spans(6)).unwrap();
        q.close();
        assert!(q.take().await.is_some());
        assert!(q.take().await.is_some());
        assert!(q.take().await.is_none());
    }

    #[tokio::test]
    async fn oversized_request_accepted_when_empty() {
        let q =
            Queue::open(Signal::Traces, 2, None, gauge("test.queue.depth", &[("t", "o")]), counter("test.q.d", &[]))
                .unwrap();
        q.push(spans(5)).unwrap();
        assert!(q.push(spans(1)).is_err());
    }

    #[tokio::test]
    async fn disk_queue_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = || gauge("test.queue.depth", &[("t", "disk")]);
        let q = Queue::open(Signal::Traces, 100, Some(dir.path().into()), d(), counter("test.q.d", &[])).unwrap();
        q.push(spans(1)).unwrap();
        q.push(spans(2)).unwrap();
        q.push(spans(3)).unwrap();
        let first = q.take().await.unwrap();
        q.complete(first, true);
        drop(q);
        std::fs::write(dir.path().join("00000000000000000099.pb"), b"\xff\xff garbage").unwrap();
        // A crash mid-write leaves a temporary file: never acknowledged, removed.
        std::fs::write(dir.path().join("00000000000000000098.tmp"), b"partial").unwrap();
        let q = Queue::open(Signal::Traces, 100, Some(dir.path().into()), d(), counter("test.q.d", &[])).unwrap();
        assert_eq!(q.len_items(), 5);
        assert!(!dir.path().join("00000000000000000098.tmp").exists());
        assert_eq!(q.take().await.unwrap().items, 2);
        assert_eq!(q.take().await.unwrap().items, 3);
        q.push(spans(7)).unwrap();
        assert_eq!(q.take().await.unwrap().items, 7);
    }

    fn spill_queue(dir: &Path, capacity: usize, budget: u64, tag: &'static str) -> (Queue, Counter, Counter) {
        let (dropped, spilled) = (counter("test.q.dropped", &[("t", tag)]), counter("test.q.spilled", &[("t", tag)]));
        let q =
            Queue::open(Signal::Traces, capacity, Some(dir.into()), gauge("test.queue.depth", &[("t", tag)]), dropped)
                .unwrap()
                .with_spill(budget, spilled);
        (q, dropped, spilled)
    }

    async fn take_items(q: &Queue, n: usize) -> Vec<usize> {
        let mut out = vec![];
        for _ in 0..n {
            let e = q.take().await.unwrap();
            out.push(e.items);
            q.complete(e, true);
        }
        out
    }

    #[tokio::test]
    async fn a_full_queue_spills_to_disk_in_order_instead_of_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let (q, dropped, spilled) = spill_queue(dir.path(), 10, 1 << 20, "spill");
        q.push(spans(6)).unwrap();
        q.push(spans(4)).unwrap();
        q.push(spans(5)).unwrap();
        assert_eq!((q.len_items(), q.spilled_items()), (10, 5), "memory stays at its bound");
        // Room in memory again, but something is spilled: the new one queues behind it.
        let first = q.take().await.unwrap();
        q.complete(first, true);
        q.push(spans(1)).unwrap();
        assert_eq!((dropped.get(), spilled.get()), (0, 6));
        assert_eq!(take_items(&q, 3).await, vec![4, 5, 1]);
        assert_eq!((q.len_items(), q.spilled_items()), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "delivered files are deleted");
    }

    #[tokio::test]
    async fn the_spill_is_bounded_in_bytes_then_drops() {
        let dir = tempfile::tempdir().unwrap();
        let one = spans(5).encode().len() as u64;
        let (q, dropped, spilled) = spill_queue(dir.path(), 5, one, "budget");
        q.push(spans(5)).unwrap();
        q.push(spans(5)).unwrap();
        assert!(q.push(spans(5)).is_err(), "over the disk budget");
        assert_eq!((dropped.get(), spilled.get()), (5, 5));
        // A memory-only queue (no budget) drops as before.
        let dir2 = tempfile::tempdir().unwrap();
        let (q2, dropped2, _) = spill_queue(dir2.path(), 5, 0, "nobudget");
        q2.push(spans(5)).unwrap();
        assert!(q2.push(spans(1)).is_err());
        assert_eq!(dropped2.get(), 1);
    }

    #[tokio::test]
    async fn spilled_requests_survive_a_restart_without_loading_them_all() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _, _) = spill_queue(dir.path(), 10, 1 << 20, "restart");
            for n in [4, 4, 4, 4, 4] {
                q.push(spans(n)).unwrap();
            }
            let e = q.stage(spans(3), 77, false).unwrap();
            assert!(e.on_disk());
            q.release(e);
            assert_eq!((q.len_items(), q.spilled_items()), (8, 15));
        }
        let (q, _, _) = spill_queue(dir.path(), 10, 1 << 20, "restart");
        assert_eq!((q.len_items(), q.spilled_items()), (8, 15), "memory bound kept at reopen");
        assert_eq!(take_items(&q, 6).await, vec![4, 4, 4, 4, 4, 3]);
    }
}
