//! Bounded FIFO of export requests for one endpoint and signal, optionally
//! mirrored to a directory (one file per request) so a restart while the
//! backend is down loses nothing.
//!
//! Requests stay accounted for until the sender calls `complete`, so a
//! request being retried still counts against the bound.
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
    inner: Mutex<Inner>,
    notify: Notify,
    depth: Counter,
    dropped: Counter,
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
            let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(d)?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let seq = p.file_name()?.to_str()?.strip_suffix(".pb")?.parse::<u64>().ok()?;
                    Some((seq, p))
                })
                .collect();
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
        Ok(Self { signal, capacity, dir, inner: Mutex::new(inner), notify: Notify::new(), depth, dropped })
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
            self.dropped.add(items.max(1) as u64);
            return Err(QueueFull);
        }
        let file = match &self.dir {
            Some(d) => {
                let p = d.join(format!("{:020}.pb", g.next_seq));
                g.next_seq += 1;
                if let Err(e) = write_atomically(&p, &payload.encode()) {
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

    /// The request was delivered or given up on: release its slot and file.
    pub fn complete(&self, e: Entry) {
        if let Some(f) = &e.file {
            let _ = std::fs::remove_file(f);
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

fn write_atomically(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, p)
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
        q.complete(e);
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
        q.complete(first);
        drop(q);
        std::fs::write(dir.path().join("00000000000000000099.pb"), b"\xff\xff garbage").unwrap();
        let q = Queue::open(Signal::Traces, 100, Some(dir.path().into()), d(), counter("test.q.d", &[])).unwrap();
        assert_eq!(q.len_items(), 5);
        assert_eq!(q.take().await.unwrap().items, 2);
        assert_eq!(q.take().await.unwrap().items, 3);
        q.push(spans(7)).unwrap();
        assert_eq!(q.take().await.unwrap().items, 7);
    }
}
