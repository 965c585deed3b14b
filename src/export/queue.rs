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
use super::payload::Payload;
use super::{QueueFull, Signal};
use crate::stats::Counter;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use tokio::sync::Notify;

pub struct Entry {
    pub payload: Payload,
    pub items: usize,
    file: Option<PathBuf>,
}

impl Entry {
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }
}

struct Inner {
    pending: VecDeque<Entry>,
    /// Items pending + taken but not yet completed.
    accounted: usize,
    closed: bool,
    next_seq: u64,
}

pub struct Queue {
    signal: Signal,
    capacity: usize,
    dir: Option<PathBuf>,
    dead_letter: Option<(PathBuf, Counter)>,
    inner: Mutex<Inner>,
    notify: Notify,
    depth: Counter,
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
        let mut inner = Inner { pending: VecDeque::new(), accounted: 0, closed: false, next_seq: 0 };
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
                match std::fs::read(&p).map_err(anyhow::Error::from).and_then(|b| Ok(Payload::decode(signal, &b)?)) {
                    Ok(payload) => {
                        let items = payload.items();
                        inner.accounted += items;
                        inner.pending.push_back(Entry { payload, items, file: Some(p) });
                    }
                    Err(e) => {
                        tracing::warn!(file = %p.display(), "dropping unreadable queued {} request: {e}", signal.name());
                        dropped.inc();
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
            if !inner.pending.is_empty() {
                tracing::info!(
                    dir = %d.display(),
                    requests = inner.pending.len(),
                    items = inner.accounted,
                    "resuming {} export queue from disk",
                    signal.name()
                );
            }
        }
        depth.set(inner.accounted as u64);
        Ok(Self {
            signal,
            capacity,
            dir,
            dead_letter: None,
            inner: Mutex::new(inner),
            notify: Notify::new(),
            depth,
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

    pub fn with_destination(mut self, name: &str) -> Self {
        self.destination = name.to_string();
        self
    }

    /// Requests given up on (`complete(_, false)`) are moved to `dir` and counted.
    pub fn with_dead_letter(mut self, dir: PathBuf, counter: Counter) -> Self {
        self.dead_letter = Some((dir, counter));
        self
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
        let mut g = self.inner.lock();
        if g.closed || (g.accounted + items > self.capacity && g.accounted > 0) {
            drop(g);
            self.count_drop(items);
            return Err(QueueFull);
        }
        let file = match &self.dir {
            Some(d) => {
                let p = d.join(format!("{:020}.pb", g.next_seq));
                g.next_seq += 1;
                if let Err(e) = write_durably(&p, &payload.encode()) {
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
        g.pending.push_back(Entry { payload, items, file });
        self.depth.set(g.accounted as u64);
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
                if let Some(e) = g.pending.pop_front() {
                    return Some(e);
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
        if g.closed || (!force && g.accounted + items > self.capacity && g.accounted > 0) {
            drop(g);
            self.count_drop(items);
            return Err(QueueFull);
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        g.accounted += items;
        self.depth.set(g.accounted as u64);
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
        Ok(Entry { payload, items, file })
    }

    /// Makes a staged entry available to `take`.
    pub fn release(&self, e: Entry) {
        self.inner.lock().pending.push_back(e);
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
        self.depth.set(g.accounted as u64);
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
        (g.accounted, self.dir.is_some())
    }
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
}
