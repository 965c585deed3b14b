//! The open batch on disk (with CNFLOW_GATEWAY_QUEUE_DIR), so a request is
//! acknowledged only once it is durable.
//!
//! Each signal's open batch has a log file `journal/<signal>/batch-<ID>.log`:
//! a request is appended (length-prefixed protobuf) under the batcher's lock,
//! so the log holds exactly the batch's requests, and fsync'd before the
//! receiver answers. When the batch is flushed it is committed:
//! 1. its merged requests are written (fsync'd) to every destination's queue
//!    as files tagged `ID`, not yet visible to the senders;
//! 2. the log is deleted (the commit point) and its directory fsync'd;
//! 3. the queued requests are released to the senders.
//!
//! At start, a log still present means its commit did not finish: the
//! destination files tagged with its ID are deleted (they were never sent,
//! as release comes after the commit) and the log is committed again. So a
//! kill at any moment delivers every acknowledged request exactly once (a
//! kill between a backend's answer and the deletion of the queue file still
//! resends that request: at-least-once there, as with any queue).
use crate::export::queue::{remove_tagged, sync_dir, tags_in};
use crate::export::{Payload, Signal};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Open {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
}

pub struct Journal {
    dir: PathBuf,
    signal: Signal,
    open: Mutex<Option<Open>>,
    next_id: Mutex<u64>,
}

/// A log left by a previous run: its ID and requests.
pub struct Leftover {
    pub id: u64,
    pub path: PathBuf,
    pub requests: Vec<Payload>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn log_id(name: &str) -> Option<u64> {
    name.strip_prefix("batch-")?.strip_suffix(".log")?.parse().ok()
}

/// Requests of a log; a torn last record (a crash mid-append, never acknowledged) is ignored.
fn read_log(path: &Path, signal: Signal) -> Result<Vec<Payload>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let Some(rec) = rest.get(4..4 + n) else { break };
        match Payload::decode(signal, rec) {
            Ok(p) => out.push(p),
            Err(e) => tracing::warn!(file = %path.display(), "skipping an unreadable journal record: {e}"),
        }
        rest = &rest[4 + n..];
    }
    Ok(out)
}

impl Journal {
    /// Opens `queue_dir/journal/<signal>`; logs left there are returned for
    /// re-commit after the destination files of their batch (in
    /// `queue_dir/destination-*/<signal>`) are deleted. Must run before the
    /// exporters load their queues.
    pub fn open(queue_dir: &Path, signal: Signal) -> Result<(Self, Vec<Leftover>)> {
        let dir = queue_dir.join("journal").join(signal.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dest_dirs: Vec<PathBuf> = std::fs::read_dir(queue_dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("destination-"))
            .map(|e| e.path().join(signal.name()))
            .collect();
        let mut max_id = dest_dirs.iter().flat_map(|d| tags_in(d)).max().unwrap_or(0);
        let mut leftovers = Vec::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some(id) = log_id(&name) else { continue };
            max_id = max_id.max(id);
            for d in &dest_dirs {
                let n = remove_tagged(d, id).with_context(|| format!("cleaning {}", d.display()))?;
                if n > 0 {
                    tracing::info!(dir = %d.display(), files = n, batch = id, "removed the files of an uncommitted batch");
                }
            }
            let requests = read_log(&e.path(), signal).with_context(|| format!("reading {}", e.path().display()))?;
            leftovers.push(Leftover { id, path: e.path(), requests });
        }
        leftovers.sort_by_key(|l| l.id);
        if !leftovers.is_empty() {
            let n: usize = leftovers.iter().flat_map(|l| &l.requests).map(Payload::items).sum();
            tracing::info!(
                signal = signal.name(),
                batches = leftovers.len(),
                items = n,
                "re-committing journaled batches"
            );
        }
        // IDs grow across restarts (clock, and past every ID still on disk).
        let next = now_ns().max(max_id + 1);
        Ok((Self { dir, signal, open: Mutex::new(None), next_id: Mutex::new(next) }, leftovers))
    }

    /// Appends a request to the open batch's log (called under the batcher's
    /// lock). Returns the file to fsync before acknowledging.
    pub fn append(&self, p: &Payload) -> std::io::Result<Arc<File>> {
        let mut g = self.open.lock();
        if g.is_none() {
            let id = {
                let mut n = self.next_id.lock();
                *n = (*n).max(now_ns());
                let id = *n;
                *n += 1;
                id
            };
            let path = self.dir.join(format!("batch-{id:020}.log"));
            let file = File::options().create_new(true).append(true).open(&path)?;
            // The new name must survive a crash too.
            sync_dir(&self.dir)?;
            *g = Some(Open { id, path, file: Arc::new(file) });
        }
        let open = g.as_ref().expect("opened above");
        let body = p.encode();
        let mut rec = Vec::with_capacity(body.len() + 4);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&body);
        (&*open.file).write_all(&rec)?;
        Ok(open.file.clone())
    }

    /// Closes the open batch (called under the batcher's lock when it is
    /// flushed): its ID and log path, to commit.
    pub fn seal(&self) -> Option<(u64, PathBuf)> {
        self.open.lock().take().map(|o| (o.id, o.path))
    }

    /// Step 2 of the commit: the log is gone.
    pub fn commit(&self, log: &Path) {
        if let Err(e) = std::fs::remove_file(log).and_then(|_| sync_dir(&self.dir)) {
            tracing::warn!(signal = self.signal.name(), file = %log.display(), "cannot delete a committed journal: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::queue::write_durably;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(n: usize) -> Payload {
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    /// A crash after step 1 of a commit (queue files written, log not yet
    /// deleted): at the next open the batch's queue files are removed and the
    /// log is handed back whole; a torn last record and other batches' files stay untouched.
    #[test]
    fn an_interrupted_commit_is_redone_from_the_log() {
        let q = tempfile::tempdir().unwrap();
        let dest = q.path().join("destination-0/traces");
        std::fs::create_dir_all(&dest).unwrap();
        let (j, left) = Journal::open(q.path(), Signal::Traces).unwrap();
        assert!(left.is_empty());
        j.append(&spans(2)).unwrap();
        j.append(&spans(3)).unwrap().sync_data().unwrap();
        let (id, log) = j.seal().unwrap();
        write_durably(&dest.join(format!("{:020}-{id:020}.pb", 7)), &spans(5).encode()).unwrap();
        write_durably(&dest.join(format!("{:020}-{:020}.pb", 6, id - 1)), &spans(1).encode()).unwrap();
        write_durably(&dest.join(format!("{:020}.pb", 5)), &spans(1).encode()).unwrap();
        // A record cut short by the crash (its request was never acknowledged).
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(j);

        let (j, left) = Journal::open(q.path(), Signal::Traces).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].id, &left[0].path), (id, &log));
        assert_eq!(left[0].requests.iter().map(Payload::items).collect::<Vec<_>>(), vec![2, 3]);
        let mut names: Vec<String> =
            std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names.len(), 2, "only the interrupted batch's file is gone: {names:?}");
        assert!(names.iter().all(|n| !n.ends_with(&format!("{id:020}.pb"))));
        j.commit(&left[0].path);
        assert!(!log.exists());
        // New batches get larger IDs than any on disk.
        j.append(&spans(1)).unwrap();
        assert!(j.seal().unwrap().0 > id);
    }
}
