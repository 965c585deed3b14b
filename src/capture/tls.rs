//! TLS plaintext through uprobes on OpenSSL (libssl.so.3 / libssl.so.1.1).
//!
//! Loads `cnflow-tls` (uprobes on SSL_read/SSL_write and their `_ex`
//! variants, the sock_{send,recv}_length raw tracepoints for the socket
//! under a call),
//! finds the libssl files that processes map by scanning `/proc/*/maps`, and
//! attaches one set of uprobes per distinct file (device + inode), through
//! `/proc/PID/root/...` so libraries inside containers are found too. A
//! uprobe is placed on the file, so every process mapping it, including ones
//! started later, is covered without another attachment. Other executable
//! mappings (the program itself, other libraries) are looked at once per
//! file for the `SSL_*` symbols ([`super::tls_symbols`]): OpenSSL or
//! BoringSSL linked statically is attached the same way when its symbols
//! are there (exported, or the file is not stripped).
//!
//! `/proc` is the configured root ([`TlsSettings::proc_root`]): in a
//! DaemonSet the host's may be mounted elsewhere.
//!
//! New processes are followed with the `sched_process_exec` tracepoint (their
//! maps are read shortly after exec, once the dynamic loader has mapped
//! their libraries), exits of the processes known to map an attached file
//! with `sched_process_exit`; when a file's last known user exits, one
//! /proc scan confirms no other process (e.g. a forked worker, which never
//! execs) maps it and the file is detached. A slow full rescan is the
//! fallback for what events miss (a libssl loaded with `dlopen` long after
//! exec, lost events).
//!
//! The records are converted by [`super::tls_stream::TlsStreams`] into TCP
//! [`PacketEvent`]s and sent into the same channel as captured packets.
use super::tls_sites::{self, Placement};
use super::tls_stream::{socket_addrs, TlsCall, TlsStreams};
use super::tls_symbols::{self, Lookup};
use super::wakeup::{IdleSwitch, IDLE_SAFETY};
use super::PacketEvent;
use crate::stats::{counter, gauge, Counter};
use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::uprobe::{UProbeLink, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use bytes::Bytes;
use cnflow_common::{
    TlsConfig, TlsRecord, TLS_COUNTER_NAMES, TLS_DIR_WRITE, TLS_HEADER_LEN, TLS_NUM_COUNTERS, TLS_READER_DATA,
    TLS_READER_PROC,
};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

#[cfg(feature = "ebpf")]
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cnflow-tls"));
#[cfg(not(feature = "ebpf"))]
static BPF_OBJECT: &[u8] = &[];

/// Process events: attached for the agent's whole life (they fire per exec and exit).
const PROC_TRACEPOINTS: [(&str, &str); 2] =
    [("cnflow_proc_exec", "sched_process_exec"), ("cnflow_proc_exit", "sched_process_exit")];
/// The socket of each SSL call. They fire on every socket send and receive
/// of every process (~4 per request-response exchange): 1.65% of the cycles
/// of a core saturated by a Redis server and its client, although neither
/// used TLS (README "Session 29"). So, unless CNFLOW_TLS_SOCKET_HOOKS=always,
/// they are attached on the node's first use of TLS (see [`SocketHooks`]).
const SOCK_TRACEPOINTS: [(&str, &str); 2] =
    [("cnflow_sock_send", "sock_send_length"), ("cnflow_sock_recv", "sock_recv_length")];
/// The uprobe that announces TLS use before any SSL_read/SSL_write.
const SSL_NEW_PROBE: &str = "cnflow_ssl_new";

/// `TLS_PROC_EVENTS` kinds (`kind << 32 | tgid`).
const PROC_EXEC: u64 = 1;
const PROC_EXIT: u64 = 2;
const PROC_FIRST_CALL: u64 = 3;
const PROC_SSL_NEW: u64 = 4;

/// Offsets of `skc_v6_daddr` / `skc_v6_rcv_saddr` in `struct sock_common`:
/// 56 and 72 on every x86_64/arm64 kernel with IPv6 and network namespaces
/// since 4.x (checked with `bpftool btf dump` on 6.18); read from the
/// kernel's BTF when it names them differently is a next step.
const V6_DADDR_OFF: u32 = 56;
const V6_SADDR_OFF: u32 = 72;

/// How often the process-event ring is read (its records wake nobody).
const PROC_POLL: Duration = Duration::from_millis(10);
/// How often the plaintext ring is drained when the programs did not wake the reader.
const RING_POLL: Duration = Duration::from_millis(10);
/// How often every `/proc/*/maps` is read anyway (the events are the fast path).
pub const RESCAN: Duration = Duration::from_secs(30);
/// When an exec'd process's maps are read: libraries the executable needs
/// are mapped by the dynamic loader within milliseconds; one loaded at
/// import time (Python's `import ssl` loads `_ssl` → libssl) comes later.
/// The first check, at once, sees the executable itself (mapped by the
/// kernel at exec): a program linking OpenSSL statically is attached before
/// it gets far.
const EXEC_CHECKS: [Duration; 4] =
    [Duration::ZERO, Duration::from_millis(20), Duration::from_millis(300), Duration::from_secs(3)];
/// Pending exec checks at most (an exec storm beyond it is left to the rescan, counted).
const MAX_PENDING: usize = 8192;
/// Delay before the /proc scan that confirms a file lost its last user
/// (several exits in a burst share one scan).
const ORPHAN_CHECK: Duration = Duration::from_secs(1);
/// Symbol-lookup verdicts remembered (per file: device + inode), so each
/// executable file is read once; the least recently seen is forgotten first
/// (counted) and read again if it shows up again.
const MAX_VERDICTS: usize = 16_384;

static LIBS_SHARED: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.tls.libraries", &[("kind", "libssl")]));
static LIBS_STATIC: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.tls.libraries", &[("kind", "static")]));
static VERDICTS_EVICTED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.symbol_lookups_evicted", &[]));
static ATTACH_FAILED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "attach_failed")]));
static ATTACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "attached")]));
static ATTACH_GONE: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "attach_process_gone")]));
static DETACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "detached")]));
static BAD_RECORD: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.records", &[("reason", "bad_record")]));
/// 1 once the socket tracepoints are attached (see [`SocketHooks`]).
static SOCKET_HOOKS: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.tls.socket_hooks_attached", &[]));
static EV_EXEC: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exec")]));
static EV_EXIT: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exit")]));
static EV_DROPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exec_check_dropped")]));
static SCANS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.scans", &[]));
static WOKEN_DATA: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.reader_wakeups", &[("reader", "data")]));
static WOKEN_PROC: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.reader_wakeups", &[("reader", "process_events")]));

/// The [`IdleSwitch`] of TLS reader `reader`: its entry in the programs' `TLS_IDLE`.
fn tls_idle(map: Arc<Mutex<Array<MapData, u32>>>, reader: u32, woken: &'static LazyLock<Counter>) -> IdleSwitch {
    let set = move |on: bool| match map.lock().unwrap_or_else(|e| e.into_inner()).set(reader, on as u32, 0) {
        Ok(()) => true,
        // Polling goes on (or stays on): nothing is lost, only wakeups spent.
        Err(e) => {
            tracing::debug!(error = %e, "TLS: cannot update TLS_IDLE");
            false
        }
    };
    IdleSwitch::new(Box::new(set), woken)
}

/// What the TLS source needs from the configuration.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Plaintext bytes copied per SSL call.
    pub snaplen: u32,
    /// Plaintext bytes copied of a call that starts with an HTTP/1 status line (0 = `snaplen`).
    pub http_response_snaplen: u32,
    /// Extra library files to attach to (CNFLOW_TLS_LIBRARIES), besides every
    /// `libssl.so*` that a process maps.
    pub libraries: Vec<PathBuf>,
    /// Where the processes' `/proc` is (normally `/proc`).
    pub proc_root: PathBuf,
    /// CNFLOW_TLS_SOCKET_HOOKS=always: the socket tracepoints from the start.
    pub socket_hooks_always: bool,
    /// Where on the functions the probes go (CNFLOW_TLS_PROBE_PLACEMENT).
    pub placement: Placement,
}

/// `cnflow.tls.symbol_lookups{result=...}`: one per file read.
fn lookup_counter(l: &Lookup) -> Counter {
    counter("cnflow.tls.symbol_lookups", &[("result", l.label())])
}

/// A running TLS source; dropping it stops the tasks and detaches everything.
pub struct TlsCapture {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<PerCpuArray<MapData, u64>>,
    /// Tells the discovery thread to stop (it owns the programs and links).
    stop: Arc<AtomicBool>,
}

impl Drop for TlsCapture {
    fn drop(&mut self) {
        // The last values, for the agent's final counter line.
        mirror_counters(&self.counters);
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Kernel counters of the TLS programs (summed over CPUs).
fn mirror_counters(map: &PerCpuArray<MapData, u64>) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for (i, name) in TLS_COUNTER_NAMES.iter().enumerate().take(TLS_NUM_COUNTERS as usize) {
        let v = map.get(&(i as u32), 0).map(|vals| vals.iter().sum::<u64>()).unwrap_or(0);
        counter("cnflow.tls.calls", &[("reason", name)]).set(v);
        out.push((*name, v));
    }
    out
}

/// `TlsRecord::direction` bit set by the kernel when no socket was used
/// inside the call and the 5-tuple is the thread's last socket (memory-BIO
/// users such as h2o do their socket I/O around the SSL calls).
const DIR_SOCKET_GUESSED: u8 = 0x80;

/// A library file identity: (device, inode).
type FileId = (u64, u64);

/// How a file came to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibKind {
    /// By its name: a `libssl.so*`, or a file of CNFLOW_TLS_LIBRARIES.
    Libssl,
    /// Any other executable mapping (the program, another library): attached
    /// only when its symbol tables define the `SSL_*` functions (OpenSSL or
    /// BoringSSL linked statically).
    Static,
}

impl LibKind {
    fn label(self) -> &'static str {
        match self {
            LibKind::Libssl => "libssl",
            LibKind::Static => "static",
        }
    }
}

struct Attached {
    path: PathBuf,
    kind: LibKind,
    /// Dropping them detaches.
    _links: Vec<UProbeLink>,
    /// The `SSL_new` probe, while the socket tracepoints wait.
    ssl_new: Option<UProbeLink>,
}

/// The socket tracepoints, attached when the node first uses TLS: the first
/// `SSL_new` (a connection object, created a handshake before its first
/// SSL_read/SSL_write) or, for connections made before the agent started, a
/// thread's first SSL call. The kernel announces both on `TLS_HOOK_EVENTS`,
/// waking a thread of their own ([`wait_for_tls_use`]). Calls made before
/// they are attached carry no socket and are parked (see `tls_stream`)
/// until a later call of their connection names it; only a connection whose
/// calls all end within the ~0.5 ms the attach takes loses its 5-tuple
/// (counted as `cnflow.tls.calls{reason=no_socket}`). Once attached they
/// stay, and the `SSL_new` probes are removed.
struct SocketHooks {
    /// Shared with the discovery thread's uprobe attaching.
    bpf: Arc<Mutex<aya::Ebpf>>,
    /// `TLS_CONFIG` (`socket_hooks` set on attach).
    config: Mutex<Array<MapData, TlsConfig>>,
    links: Mutex<Vec<RawTracePointLink>>,
    on: AtomicBool,
}

impl SocketHooks {
    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Attaches the socket tracepoints (once; `why` and `pid` for the log)
    /// and tells the kernel to stop announcing TLS use.
    fn attach(&self, why: &str, pid: u32) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_on() {
            return;
        }
        let t0 = Instant::now();
        let r = attach_tracepoints(&mut self.bpf.lock().unwrap_or_else(|e| e.into_inner()), &SOCK_TRACEPOINTS);
        match r {
            Ok(l) => {
                *links = l;
                self.on.store(true, Ordering::Release);
                SOCKET_HOOKS.set(1);
                let mut c = self.config.lock().unwrap_or_else(|e| e.into_inner());
                let set = c.get(&0, 0).and_then(|conf| c.set(0, TlsConfig { socket_hooks: 1, ..conf }, 0));
                if let Err(e) = set {
                    tracing::warn!(error = %e, "TLS: cannot update TLS_CONFIG");
                }
                tracing::info!(
                    reason = %why,
                    pid,
                    attach_us = t0.elapsed().as_micros() as u64,
                    "TLS: socket tracepoints attached (first use of TLS on this node)"
                );
            }
            // Checked at start: only a kernel resource shortage gets here;
            // the next announcement tries again.
            Err(e) => tracing::warn!(error = format!("{e:#}"), "TLS: cannot attach the socket tracepoints"),
        }
    }
}

/// Waits for the kernel's announcement of the node's first TLS use and
/// attaches the socket tracepoints (own thread: the discovery thread may be
/// busy reading a new process's libraries for tens of milliseconds, longer
/// than a handshake on a fast network). Ends once they are attached.
fn wait_for_tls_use(hooks: Arc<SocketHooks>, mut ring: RingBuf<MapData>, stop: Arc<AtomicBool>) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) && !hooks.is_on() {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the ring (and its fd) lives in this frame.
        // The kernel wakes it for an announcement; the timeout only checks `stop`.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        let mut first = None;
        while let Some(item) = ring.next() {
            if let Ok(raw) = <[u8; 8]>::try_from(&item[..item.len().min(8)]) {
                first = first.or(Some(u64::from_ne_bytes(raw)));
            }
        }
        if let Some(v) = first {
            hooks.attach(if v >> 32 == PROC_SSL_NEW { "SSL_new" } else { "first SSL call" }, v as u32);
        }
    }
}

struct Attacher {
    /// Locked only while attaching (shared with [`SocketHooks`]).
    bpf: Arc<Mutex<aya::Ebpf>>,
    /// Links per attached file.
    attached: HashMap<FileId, Attached>,
    /// Files that could not be attached (stripped, not OpenSSL): not retried.
    failed: HashSet<FileId>,
    /// Symbol lookups of the files looked at so far (bounded, LRU).
    verdicts: lru::LruCache<FileId, Lookup>,
    extra: Vec<PathBuf>,
    /// The processes' /proc.
    proc_root: PathBuf,
    /// This process's pid as `proc_root` numbers it (skipped).
    own_pid: u32,
    /// Known processes mapping each attached file (the kernel reports their exits).
    users: HashMap<FileId, HashSet<u32>>,
    /// The same pids, in the kernel's `TLS_PIDS`.
    pids: aya::maps::HashMap<MapData, u32, u8>,
    /// When a file has lost its last known user: confirm with a scan then.
    orphan_check: Option<Instant>,
    socket_hooks: Arc<SocketHooks>,
    /// Some attached file still has its `SSL_new` probe.
    ssl_new_probes: bool,
    /// Where on the functions the probes go (CNFLOW_TLS_PROBE_PLACEMENT).
    placement: Placement,
}

impl Attacher {
    /// The symbol lookup of file `id` (read through `path` once, then remembered).
    /// Offsets are read again whenever a file is about to be attached (only
    /// "no" is taken from memory): a file rewritten in place keeps its inode,
    /// and a probe at a stale offset would land inside another instruction.
    fn verdict(&mut self, id: FileId, path: &Path) -> Lookup {
        if let Some(v) = self.verdicts.get(&id).filter(|v| !matches!(v, Lookup::Found(_))) {
            return *v;
        }
        let v = tls_symbols::lookup_file(path);
        lookup_counter(&v).inc();
        if matches!(v, Lookup::TooLarge) {
            tracing::info!(file = %path.display(), "TLS: file or symbol table too large to look for SSL_* symbols; skipped");
        }
        // Unreadable is mostly a process that exited before its root was
        // read through: asked again when the file shows up again.
        if v != Lookup::Unreadable && self.verdicts.push(id, v).is_some_and(|(old, _)| old != id) {
            VERDICTS_EVICTED.inc();
        }
        v
    }

    /// Attaches the probes to `path` (file `id`) when its symbols are there;
    /// on any failure detaches what was attached. A `Static` candidate
    /// without the symbols is silently left alone (most files are).
    fn attach_file(&mut self, id: FileId, path: &Path, kind: LibKind) {
        if self.attached.contains_key(&id) || self.failed.contains(&id) {
            return;
        }
        let funcs = match self.verdict(id, path) {
            Lookup::Found(funcs) => funcs,
            _ if kind == LibKind::Static => return,
            Lookup::Unreadable if !path.exists() => {
                // The process it was reached through exited: retried with the next user.
                ATTACH_GONE.inc();
                return;
            }
            other => {
                ATTACH_FAILED.inc();
                self.failed.insert(id);
                tracing::warn!(
                    library = %path.display(),
                    lookup = %other.label(),
                    "TLS: no SSL_read/SSL_write symbols in this library (stripped or not OpenSSL?); its traffic stays encrypted"
                );
                return;
            }
        };
        let probes = tls_sites::plan(&funcs, self.placement, |offset, len| read_at(path, offset, len));
        let mut links = Vec::with_capacity(probes.len());
        let mut sites: Vec<&str> = Vec::new();
        for probe in &probes {
            match self.attach_uprobe(probe.program, probe.offset, path) {
                Ok(l) => {
                    links.push(l);
                    if !sites.contains(&probe.site.as_str()) {
                        sites.push(&probe.site);
                    }
                }
                Err(_) if !path.exists() => {
                    // The process whose root the path goes through exited
                    // (a short-lived one, often): not the file's fault; the
                    // next process mapping it retries.
                    ATTACH_GONE.inc();
                    return;
                }
                Err(e) => {
                    ATTACH_FAILED.inc();
                    self.failed.insert(id);
                    tracing::warn!(
                        library = %path.display(),
                        site = %probe.site,
                        error = format!("{e:#}"),
                        "TLS: cannot attach to this library; its traffic stays encrypted"
                    );
                    return;
                }
            }
        }
        // Optional: without it a thread's first SSL call brings the socket
        // tracepoints in (that call itself parked until a later one names its socket).
        let ssl_new_offset =
            tls_symbols::SYMBOLS.iter().position(|s| *s == "SSL_new").and_then(|i| funcs[i]).map(|f| f.offset);
        let ssl_new = match ssl_new_offset {
            Some(offset) if !self.socket_hooks.is_on() => self
                .attach_uprobe(SSL_NEW_PROBE, offset, path)
                .inspect_err(
                    |e| tracing::debug!(library = %path.display(), error = format!("{e:#}"), "TLS: no SSL_new probe"),
                )
                .ok(),
            _ => None,
        };
        self.ssl_new_probes |= ssl_new.is_some();
        ATTACHED.inc();
        tracing::info!(
            library = %path.display(),
            kind = %kind.label(),
            sites = %sites.join(","),
            dev = id.0,
            inode = id.1,
            "TLS: uprobes attached"
        );
        self.attached.insert(id, Attached { path: path.to_path_buf(), kind, _links: links, ssl_new });
        self.set_gauges();
    }

    /// Uprobe program `prog` (loaded) on the code at file offset `offset` of `path`, in every process.
    fn attach_uprobe(&self, prog: &str, offset: u64, path: &Path) -> Result<UProbeLink> {
        let mut bpf = self.bpf.lock().unwrap_or_else(|e| e.into_inner());
        let p: &mut UProbe = bpf.program_mut(prog).context("program missing")?.try_into()?;
        let lid = p.attach(offset, path, UProbeScope::AllProcesses)?;
        Ok(p.take_link(lid)?)
    }

    /// Once the socket tracepoints are attached: removes the `SSL_new`
    /// probes, which only waited for that.
    fn drop_ssl_new_probes(&mut self) {
        if self.ssl_new_probes && self.socket_hooks.is_on() {
            let links: Vec<UProbeLink> = self.attached.values_mut().filter_map(|a| a.ssl_new.take()).collect();
            self.ssl_new_probes = false;
            // Detaching a uprobe waits for RCU grace periods (tens of ms):
            // not here, where process events wait (a short-lived client
            // exited before its executable was read when it was).
            let _ = std::thread::Builder::new().name("cnflow-tls-detach".into()).spawn(move || drop(links));
        }
    }

    fn set_gauges(&self) {
        let statics = self.attached.values().filter(|a| a.kind == LibKind::Static).count() as u64;
        LIBS_STATIC.set(statics);
        LIBS_SHARED.set(self.attached.len() as u64 - statics);
    }

    fn detach(&mut self, id: FileId) {
        if let Some(a) = self.attached.remove(&id) {
            DETACHED.inc();
            tracing::info!(library = %a.path.display(), kind = %a.kind.label(), "TLS: no process maps this library any more: detached");
        }
        self.users.remove(&id);
        self.set_gauges();
    }

    /// Ids of the configured extra files (always attached while they exist).
    fn extra_ids(&mut self) -> HashSet<FileId> {
        let mut ids = HashSet::new();
        for p in self.extra.clone() {
            if let Ok(m) = std::fs::metadata(&p) {
                let id = (m.dev(), m.ino());
                ids.insert(id);
                self.attach_file(id, &p, LibKind::Libssl);
            }
        }
        ids
    }

    /// Attaches the libraries `pid` maps and records it as their user.
    fn add_user(&mut self, pid: u32, lib: &MappedLib) {
        // Through the process's root: the path as the process sees it
        // (a container's filesystem), while the file is the same inode.
        if !self.attached.contains_key(&lib.id) {
            let path = in_root(&self.proc_root, pid, &lib.path);
            self.attach_file(lib.id, &path, lib.kind);
        }
        if self.attached.contains_key(&lib.id) && self.users.entry(lib.id).or_default().insert(pid) {
            // Full map: the exit is missed; the next full scan forgets the pid.
            let _ = self.pids.insert(pid, 1, 0);
            // Executable and cgroup now, while the process surely lives (the
            // ring reader does it again at its first connection, which may
            // be read after a short-lived client has exited).
            crate::process::observe(&self.proc_root, pid);
        }
    }

    /// A process (just exec'd) is looked at: attach what it maps.
    fn scan_pid(&mut self, pid: u32) {
        let Ok(maps) = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("maps")) else { return };
        for lib in parse_maps(&maps, &self.extra) {
            self.add_user(pid, &lib);
        }
    }

    /// A known user exited: when a file has no known user left, a scan soon
    /// confirms (a forked child may map it without ever being seen).
    fn exited(&mut self, pid: u32) {
        let _ = self.pids.remove(&pid);
        for set in self.users.values_mut() {
            if set.remove(&pid) && set.is_empty() && self.orphan_check.is_none() {
                self.orphan_check = Some(Instant::now() + ORPHAN_CHECK);
            }
        }
    }

    /// One pass over /proc: attach new libssl files, rebuild the users,
    /// detach files no process maps.
    fn rescan(&mut self) {
        SCANS.inc();
        self.orphan_check = None;
        let keep = self.extra_ids();
        let old = std::mem::take(&mut self.users);
        for (pid, lib) in mapped_files(&self.proc_root, &self.extra, self.own_pid) {
            self.add_user(pid, &lib);
        }
        // Pids no longer users of anything leave the kernel's set.
        let now: HashSet<u32> = self.users.values().flatten().copied().collect();
        for pid in old.values().flatten() {
            if !now.contains(pid) {
                let _ = self.pids.remove(pid);
            }
        }
        let gone: Vec<FileId> =
            self.attached.keys().filter(|k| !keep.contains(k) && !self.users.contains_key(k)).copied().collect();
        for id in gone {
            self.detach(id);
        }
        self.set_gauges();
    }
}

/// Attaches `programs` (loaded) to their raw tracepoints; all or none.
fn attach_tracepoints(bpf: &mut aya::Ebpf, programs: &[(&str, &str)]) -> Result<Vec<RawTracePointLink>> {
    let mut links = Vec::with_capacity(programs.len());
    for (prog, name) in programs {
        let p: &mut RawTracePoint = bpf.program_mut(prog).context("program missing")?.try_into()?;
        let id = p.attach(name).with_context(|| format!("attaching {prog} to raw tracepoint {name}"))?;
        links.push(p.take_link(id)?);
    }
    Ok(links)
}

/// The discovery loop (own thread: /proc reads and attaching block): process
/// events from the kernel, delayed checks of exec'd processes, the confirm
/// scan after a last user's exit, the slow rescan, the counters.
fn discover(
    mut att: Attacher,
    mut events: RingBuf<MapData>,
    mut idle: IdleSwitch,
    counters: Arc<PerCpuArray<MapData, u64>>,
    stop: Arc<AtomicBool>,
    tracepoints: Vec<RawTracePointLink>,
) {
    use std::cmp::Reverse;
    let _tracepoints = tracepoints;
    let fd = events.as_raw_fd();
    let mut pending: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut next_rescan = Instant::now() + RESCAN;
    let mut next_counters = Instant::now() + Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        att.drop_ssl_new_probes();
        let now = Instant::now();
        // The kernel writes process events without waking this thread,
        // unless it is idle (then a pending record makes poll return at once).
        let poll = if idle.is_on() { IDLE_SAFETY } else { PROC_POLL };
        let mut next = next_rescan.min(next_counters).min(now + poll);
        if let Some(Reverse((t, _))) = pending.peek() {
            next = next.min(*t);
        }
        if let Some(t) = att.orphan_check {
            next = next.min(t);
        }
        let wait = next.saturating_duration_since(now).as_millis().min(poll.as_millis()) as i32;
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the fd stays open while `events` lives.
        unsafe { libc::poll(&mut pfd, 1, wait) };
        let now = Instant::now();
        let mut got = 0;
        while let Some(item) = events.next() {
            got += 1;
            let Ok(raw) = <[u8; 8]>::try_from(&item[..item.len().min(8)]) else { continue };
            let v = u64::from_ne_bytes(raw);
            let pid = v as u32;
            drop(item);
            match v >> 32 {
                PROC_FIRST_CALL => {
                    // Executable and cgroup while the process lives: the
                    // ring reader may get to its records after it exited.
                    crate::process::observe(&att.proc_root, pid);
                }
                PROC_EXEC => {
                    EV_EXEC.inc();
                    crate::process::exec_seen(pid);
                    crate::process::observe(&att.proc_root, pid);
                    if pending.len() + EXEC_CHECKS.len() > MAX_PENDING {
                        EV_DROPPED.inc();
                        continue;
                    }
                    for d in EXEC_CHECKS {
                        pending.push(Reverse((now + d, pid)));
                    }
                }
                PROC_EXIT => {
                    EV_EXIT.inc();
                    att.exited(pid);
                }
                _ => BAD_RECORD.inc(),
            }
        }
        // Going idle needs no second drain here: poll() reports a pending record.
        idle.after_drain(got);
        while let Some(Reverse((t, pid))) = pending.peek().copied() {
            if t > now {
                break;
            }
            pending.pop();
            if pid != att.own_pid {
                att.scan_pid(pid);
            }
        }
        if now >= next_rescan || att.orphan_check.is_some_and(|t| now >= t) {
            att.rescan();
            next_rescan = now + RESCAN;
        }
        if now >= next_counters {
            let c = mirror_counters(&counters);
            tracing::debug!(counters = ?c, "TLS counters");
            next_counters = now + Duration::from_secs(2);
        }
    }
}

/// A mapped library of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedLib {
    pub id: FileId,
    /// Path inside the process's mount namespace.
    pub path: String,
    pub kind: LibKind,
}

/// Up to `len` bytes of the file at `path` from `offset` (fewer at its end).
fn read_at(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some(buf)
}

/// Whether a mapped file is an OpenSSL libssl (or one of the configured extras).
fn is_libssl(path: &str, extra: &[PathBuf]) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libssl.so") || extra.iter().any(|e| e.as_os_str() == path)
}

/// The files of a process, from the text of `/proc/PID/maps`, once each:
/// the libssl files (by name), and every other executable file mapping,
/// which may link OpenSSL statically (looked up by symbols).
pub fn parse_maps(maps: &str, extra: &[PathBuf]) -> Vec<MappedLib> {
    let mut out: Vec<MappedLib> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path (the path may contain spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(_), Some(perms), Some(_), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(rest) = f.next().map(str::trim_start) else { continue };
        let (path, deleted) = match rest.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (rest, false),
        };
        if !path.starts_with('/') {
            continue;
        }
        let kind = if is_libssl(path, extra) {
            LibKind::Libssl
        } else if perms.as_bytes().get(2) == Some(&b'x') && !deleted {
            // A deleted file cannot be opened by its path (another file may
            // have its name now): not looked at.
            LibKind::Static
        } else {
            continue;
        };
        let Some((maj, min)) = dev.split_once(':') else { continue };
        let (Ok(maj), Ok(min), Ok(ino)) =
            (u64::from_str_radix(maj, 16), u64::from_str_radix(min, 16), inode.parse::<u64>())
        else {
            continue;
        };
        if ino == 0 {
            continue;
        }
        // stat's st_dev encoding (makedev), so explicit paths compare equal.
        let id = (libc::makedev(maj as u32, min as u32), ino);
        match out.iter_mut().find(|l| l.id == id) {
            // The same file by its libssl name elsewhere in the maps wins.
            Some(l) if kind == LibKind::Libssl => l.kind = kind,
            Some(_) => {}
            None => out.push(MappedLib { id, path: path.to_string(), kind }),
        }
    }
    out
}

/// `path` as process `pid` sees it, through its root under `proc_root`
/// (a container's filesystem).
fn in_root(proc_root: &Path, pid: u32, path: &str) -> PathBuf {
    let mut p = proc_root.join(pid.to_string()).join("root").into_os_string();
    p.push(path);
    PathBuf::from(p)
}

/// This process's pid in the pid namespace of `proc_root` (its `self`
/// link): the host's when the host's /proc is mounted in a container.
fn own_pid(proc_root: &Path) -> u32 {
    std::fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

/// (pid, file) for every process under `proc_root` but `me` and each file
/// [`parse_maps`] finds in its maps.
fn mapped_files(proc_root: &Path, extra: &[PathBuf], me: u32) -> Vec<(u32, MappedLib)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // A process may exit between readdir and read: skipped.
        let Ok(maps) = std::fs::read_to_string(e.path().join("maps")) else { continue };
        for lib in parse_maps(&maps, extra) {
            out.push((pid, lib));
        }
    }
    out
}

/// Whether `local` is a listening TCP port in `pid`'s network namespace.
#[cfg(test)]
fn listening(proc_root: &Path, pid: u32, local: std::net::SocketAddr) -> Option<bool> {
    listening_ports(proc_root, pid).map(|ports| ports.contains(&local.port()))
}

/// The listening TCP ports of `pid`'s network namespace (None: no table readable).
fn listening_ports(proc_root: &Path, pid: u32) -> Option<HashSet<u16>> {
    let mut ports: Option<HashSet<u16>> = None;
    for f in ["tcp", "tcp6"] {
        let Ok(t) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("net").join(f)) else { continue };
        let ports = ports.get_or_insert_with(HashSet::new);
        for line in t.lines().skip(1) {
            let mut it = line.split_whitespace();
            let (Some(_), Some(l), Some(_), Some(st)) = (it.next(), it.next(), it.next(), it.next()) else { continue };
            // st 0A = LISTEN; the local address field is HEXADDR:HEXPORT.
            if st == "0A" {
                if let Some(p) = l.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) {
                    ports.insert(p);
                }
            }
        }
    }
    ports
}

/// [`listening`] with the answer kept per process. Reading
/// `/proc/PID/net/tcp{,6}` makes the kernel walk its whole TCP hash table;
/// done for every new TLS connection it took a quarter of the agent's CPU on
/// a busy host (perf, 2026-12-04). A process's listening ports rarely change,
/// so a set is trusted for [`LISTEN_MAX_AGE`]; a port missing from a set
/// older than [`LISTEN_RECHECK`] is read again (a server that has just
/// started listening), so a client opening many connections costs at most a
/// few reads per second.
struct ListenCache {
    root: PathBuf,
    by_pid: parking_lot::Mutex<HashMap<u32, ListenEntry>>,
}

/// When the set was read, and the ports (None: no table readable).
type ListenEntry = (Instant, Option<HashSet<u16>>);

const LISTEN_MAX_AGE: Duration = Duration::from_secs(5);
const LISTEN_RECHECK: Duration = Duration::from_millis(250);
/// Processes remembered at most (the map is emptied beyond it).
const LISTEN_MAX_PIDS: usize = 4096;

impl ListenCache {
    fn new(root: PathBuf) -> Self {
        Self { root, by_pid: parking_lot::Mutex::new(HashMap::new()) }
    }

    fn check(&self, pid: u32, local: std::net::SocketAddr) -> Option<bool> {
        self.check_at(pid, local, Instant::now())
    }

    fn check_at(&self, pid: u32, local: std::net::SocketAddr, now: Instant) -> Option<bool> {
        let mut m = self.by_pid.lock();
        if let Some((at, ports)) = m.get(&pid) {
            let age = now.saturating_duration_since(*at);
            let hit = ports.as_ref().map(|p| p.contains(&local.port()));
            match hit {
                Some(true) if age < LISTEN_MAX_AGE => return Some(true),
                Some(false) | None if age < LISTEN_RECHECK => return hit,
                _ => {}
            }
        }
        if m.len() >= LISTEN_MAX_PIDS {
            m.clear();
        }
        let ports = listening_ports(&self.root, pid);
        let hit = ports.as_ref().map(|p| p.contains(&local.port()));
        m.insert(pid, (now, ports));
        hit
    }
}

fn decode(item: &[u8], offset: i64) -> Option<TlsCall> {
    if item.len() < TLS_HEADER_LEN {
        return None;
    }
    // SAFETY: TlsRecord is repr(C) plain data; the header part is fully present
    // and read unaligned; `data` is taken from the slice below, not the struct.
    let mut rec = std::mem::MaybeUninit::<TlsRecord>::zeroed();
    unsafe { std::ptr::copy_nonoverlapping(item.as_ptr(), rec.as_mut_ptr() as *mut u8, TLS_HEADER_LEN) };
    let r = unsafe { rec.assume_init() };
    let cap = r.cap_len as usize;
    if cap > item.len() - TLS_HEADER_LEN || cap > r.len as usize {
        return None;
    }
    Some(TlsCall {
        ts_ns: (r.ts_ns as i64 + offset) as u64,
        pid: (r.pid_tgid >> 32) as u32,
        ssl: r.ssl,
        write: r.direction & !DIR_SOCKET_GUESSED == TLS_DIR_WRITE,
        tuple_guessed: r.direction & DIR_SOCKET_GUESSED != 0,
        len: r.len,
        tuple: socket_addrs(r.family, r.local_addr, r.local_port, r.remote_addr, r.remote_port),
        tls_version: r.tls_version,
        offset: r.offset,
        data: Bytes::copy_from_slice(&item[TLS_HEADER_LEN..TLS_HEADER_LEN + cap]),
    })
}

impl TlsCapture {
    /// Loads and attaches the TLS programs; packet events go to `tx`.
    pub fn start(cfg: &TlsSettings, tx: mpsc::Sender<Vec<PacketEvent>>) -> Result<Self> {
        if BPF_OBJECT.is_empty() {
            anyhow::bail!("built without the `ebpf` feature");
        }
        let mut bpf = aya::Ebpf::load(BPF_OBJECT).context("loading the TLS eBPF object")?;
        for (prog, _) in PROC_TRACEPOINTS.iter().chain(&SOCK_TRACEPOINTS) {
            let p: &mut RawTracePoint = bpf.program_mut(prog).context("program missing")?.try_into()?;
            p.load().with_context(|| format!("loading {prog}"))?;
        }
        let tp_links = attach_tracepoints(&mut bpf, &PROC_TRACEPOINTS)?;
        // Attached now either way, so a kernel without them (Linux < 6.3: no
        // 5-tuple) fails at start; detached again (dropped) until needed.
        let sock_links = attach_tracepoints(&mut bpf, &SOCK_TRACEPOINTS)
            .context("the sock_send_length/sock_recv_length tracepoints (Linux ≥ 6.3) give the 5-tuple")?;
        let hooks_on = cfg.socket_hooks_always;
        let sock_links = if hooks_on { sock_links } else { Vec::new() };
        SOCKET_HOOKS.set(hooks_on as u64);
        for prog in tls_sites::programs().chain([SSL_NEW_PROBE]) {
            let p: &mut UProbe = bpf.program_mut(prog).context("program missing")?.try_into()?;
            p.load().with_context(|| format!("loading {prog} (verifier)"))?;
        }
        let mut config: Array<MapData, TlsConfig> = Array::try_from(bpf.take_map("TLS_CONFIG").context("TLS_CONFIG")?)?;
        let conf = TlsConfig {
            snaplen: cfg.snaplen.clamp(1, cnflow_common::MAX_PAYLOAD as u32),
            own_tgid: own_pid(&cfg.proc_root),
            v6_daddr_off: V6_DADDR_OFF,
            v6_saddr_off: V6_SADDR_OFF,
            socket_hooks: hooks_on as u32,
            http_response_snaplen: cfg.http_response_snaplen,
        };
        config.set(0, conf, 0)?;
        let hook_events = RingBuf::try_from(bpf.take_map("TLS_HOOK_EVENTS").context("TLS_HOOK_EVENTS")?)?;
        let ring = RingBuf::try_from(bpf.take_map("TLS_EVENTS").context("TLS_EVENTS")?)?;
        let proc_events = RingBuf::try_from(bpf.take_map("TLS_PROC_EVENTS").context("TLS_PROC_EVENTS")?)?;
        let pids = aya::maps::HashMap::try_from(bpf.take_map("TLS_PIDS").context("TLS_PIDS")?)?;
        let counters: Arc<PerCpuArray<MapData, u64>> =
            Arc::new(PerCpuArray::try_from(bpf.take_map("TLS_COUNTERS").context("TLS_COUNTERS")?)?);
        let idle_map: Arc<Mutex<Array<MapData, u32>>> =
            Arc::new(Mutex::new(Array::try_from(bpf.take_map("TLS_IDLE").context("TLS_IDLE")?)?));
        for c in [
            &LIBS_SHARED,
            &LIBS_STATIC,
            &VERDICTS_EVICTED,
            &ATTACH_FAILED,
            &ATTACH_GONE,
            &ATTACHED,
            &DETACHED,
            &BAD_RECORD,
            &SOCKET_HOOKS,
            &EV_EXEC,
            &EV_EXIT,
            &EV_DROPPED,
            &SCANS,
            &WOKEN_DATA,
            &WOKEN_PROC,
        ] {
            LazyLock::force(c);
        }
        for l in [Lookup::Found([None; 5]), Lookup::NoSymbols, Lookup::NotElf, Lookup::TooLarge, Lookup::Unreadable] {
            lookup_counter(&l);
        }
        mirror_counters(&counters);

        let bpf = Arc::new(Mutex::new(bpf));
        let socket_hooks = Arc::new(SocketHooks {
            bpf: bpf.clone(),
            config: Mutex::new(config),
            links: Mutex::new(sock_links),
            on: AtomicBool::new(hooks_on),
        });
        let mut att = Attacher {
            bpf,
            attached: HashMap::new(),
            failed: HashSet::new(),
            verdicts: lru::LruCache::new(NonZeroUsize::new(MAX_VERDICTS).expect("non-zero")),
            extra: cfg.libraries.clone(),
            proc_root: cfg.proc_root.clone(),
            own_pid: own_pid(&cfg.proc_root),
            users: HashMap::new(),
            pids,
            orphan_check: None,
            socket_hooks: socket_hooks.clone(),
            ssl_new_probes: false,
            placement: cfg.placement,
        };
        let t0 = Instant::now();
        att.rescan();
        tracing::info!(
            libraries = att.attached.len(),
            files_looked_up = att.verdicts.len(),
            first_scan_ms = t0.elapsed().as_millis() as u64,
            snaplen = cfg.snaplen,
            proc_root = %cfg.proc_root.display(),
            socket_hooks = %if hooks_on { "attached" } else { "on_first_use" },
            "TLS plaintext capture loaded"
        );
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (counters, stop) = (counters.clone(), stop.clone());
            let idle = tls_idle(idle_map.clone(), TLS_READER_PROC, &WOKEN_PROC);
            // The programs and every link live as long as this thread.
            std::thread::Builder::new()
                .name("cnflow-tls-discovery".into())
                .spawn(move || discover(att, proc_events, idle, counters, stop, tp_links))
                .context("starting the TLS discovery thread")?;
        }
        if !hooks_on {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("cnflow-tls-hooks".into())
                .spawn(move || wait_for_tls_use(socket_hooks, hook_events, stop))
                .context("starting the TLS socket-hook thread")?;
        }
        // SAFETY: the RingBuf owns its fd and keeps it open while the AsyncFd lives.
        let afd = unsafe { AsyncFd::register(ring) }.context("registering the TLS ring with tokio")?;
        let idle = tls_idle(idle_map, TLS_READER_DATA, &WOKEN_DATA);
        let read = tokio::spawn(read_ring(afd, idle, tx, cfg.proc_root.clone()));
        Ok(TlsCapture { tasks: vec![read], counters, stop })
    }
}

async fn read_ring(
    mut afd: AsyncFd<RingBuf<MapData>>,
    mut idle: IdleSwitch,
    tx: mpsc::Sender<Vec<PacketEvent>>,
    proc_root: PathBuf,
) {
    // Executable and cgroup (→ container → pod) of each process, read when
    // its connection first shows up: short-lived clients are gone by the
    // time their exchange becomes a span.
    let (root1, root2) = (proc_root.clone(), proc_root.clone());
    let listen = ListenCache::new(root1);
    let mut streams = TlsStreams::new(Box::new(move |pid, local| listen.check(pid, local))).with_process_observer(
        Box::new(move |pid| {
            crate::process::observe(&root2, pid);
        }),
    );
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    // The programs do not wake this reader per record (that costs the traced
    // process several µs per call): it drains on this tick, and is woken
    // only when the ring fills past 1 MiB.
    // Idle ([`IdleSwitch`]): no tick, the programs wake it (the safety tick aside).
    let mut drain = tokio::time::interval(RING_POLL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut safety = tokio::time::interval(IDLE_SAFETY);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            _ = drain.tick(), if !idle.is_on() => {}
            _ = safety.tick(), if idle.is_on() => {}
            r = afd.readable_mut() => match r {
                Ok(mut g) => g.clear_ready(),
                Err(e) => {
                    tracing::error!(error = %e, "TLS ring poll failed; TLS capture stopped");
                    return;
                }
            },
            _ = reap.tick() => {
                // Connections of exited processes end (FIN) instead of idling out.
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                streams.reap(wall, |pid| proc_root.join(pid.to_string()).exists(), &mut batch);
            }
        }
        let offset = super::kernel_record::mono_to_wall_offset();
        let ring = afd.get_mut();
        loop {
            let mut got = 0;
            while let Some(item) = ring.next() {
                got += 1;
                match decode(&item, offset) {
                    Some(call) => {
                        tracing::trace!(pid = call.pid, ssl = call.ssl, write = call.write, len = call.len, tuple = ?call.tuple, "TLS call");
                        streams.push(call, &mut batch)
                    }
                    None => BAD_RECORD.inc(),
                }
                if batch.len() >= super::ebpf::BATCH && tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return;
                }
            }
            if !idle.after_drain(got) {
                break;
            }
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_find_libssl_once_per_file() {
        let maps = "\
7f00-7f01 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r-xp 00001000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f03-7f04 rw-p 00000000 00:00 0 [heap]
7f04-7f05 r-xp 00000000 00:2a 77 /opt/app/libmyssl.so (deleted)
";
        let libs = parse_maps(maps, &[]);
        assert_eq!(libs.len(), 1);
        assert_eq!(libs[0].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(libs[0].id, (libc::makedev(8, 1), 1234));
        assert_eq!(libs[0].kind, LibKind::Libssl);
        let libs = parse_maps(maps, &[PathBuf::from("/opt/app/libmyssl.so")]);
        assert_eq!(libs.len(), 2);
    }

    /// Executable mappings other than libssl are candidates for the symbol
    /// lookup, once per file; data mappings, anonymous and special mappings
    /// and deleted files are not.
    #[test]
    fn executable_mappings_are_static_candidates() {
        let maps = "\
55d0-55d1 r--p 00000000 fd:00 501 /opt/my app/client
55d1-55d2 r-xp 00001000 fd:00 501 /opt/my app/client
55d2-55d3 r--p 00002000 fd:00 501 /opt/my app/client
7f00-7f01 r-xp 00000000 fd:00 600                        /usr/lib/x86_64-linux-gnu/libc.so.6
7f01-7f02 r-xp 00000000 fd:00 601 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r-xp 00000000 fd:00 602 /tmp/old (deleted)
7f03-7f04 r-xp 00000000 00:00 0 [vdso]
7f04-7f05 r-xp 00000000 00:01 0 
7f05-7f06 rwxp 00000000 fd:00 603 /opt/jit
";
        let libs = parse_maps(maps, &[]);
        let seen: Vec<(&str, LibKind)> = libs.iter().map(|l| (l.path.as_str(), l.kind)).collect();
        assert_eq!(
            seen,
            vec![
                ("/opt/my app/client", LibKind::Static),
                ("/usr/lib/x86_64-linux-gnu/libc.so.6", LibKind::Static),
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3", LibKind::Libssl),
                ("/opt/jit", LibKind::Static),
            ]
        );
        // A configured file is attached by name, as a libssl.
        let libs = parse_maps(maps, &[PathBuf::from("/opt/my app/client")]);
        assert_eq!(libs[0].kind, LibKind::Libssl);
    }

    #[test]
    fn arbitrary_maps_text_never_panics() {
        for t in
            ["", "x", "a b c d e", "a b c zz:yy 1 /x", "a r-xp c 1:2 99999999999999999999999 /x", "a r-xp c : 1 /x"]
        {
            let _ = parse_maps(t, &[]);
        }
    }

    /// Discovery reads everything under the configured root: a fake /proc
    /// tree with two processes (one mapping a libssl, one a program that
    /// links OpenSSL statically, reached through its root) and the agent
    /// itself (its `self` link), which is skipped.
    #[test]
    fn discovery_reads_under_the_configured_proc_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let w = |rel: &str, text: &[u8]| {
            let p = r.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("100/maps", b"7f01-7f02 r-xp 00001000 08:01 1234 /usr/lib/libssl.so.3\n");
        w(
            "200/maps",
            b"55d1-55d2 r-xp 00001000 08:01 501 /app/client\n7f00-7f01 r-xp 00000000 08:01 600 /lib/libc.so.6\n",
        );
        w("300/maps", b"55d1-55d2 r-xp 00001000 08:01 700 /usr/local/bin/cnflow\n");
        w("200/root/app/client", &tls_symbols::elf_with(&["SSL_write", "SSL_read"], &[]));
        w("200/root/lib/libc.so.6", &tls_symbols::elf_with(&["memcpy"], &["SSL_write"]));
        w("200/net/tcp", b"  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n");
        std::os::unix::fs::symlink("300", r.join("self")).unwrap();
        w("notapid/maps", b"garbage");

        assert_eq!(own_pid(r), 300);
        assert_eq!(own_pid(&r.join("missing")), std::process::id(), "no self link: this process's pid");
        let mut found: Vec<(u32, String, LibKind)> =
            mapped_files(r, &[], own_pid(r)).into_iter().map(|(pid, l)| (pid, l.path, l.kind)).collect();
        found.sort_by_key(|f| (f.0, f.1.clone()));
        assert_eq!(
            found,
            vec![
                (100, "/usr/lib/libssl.so.3".into(), LibKind::Libssl),
                (200, "/app/client".into(), LibKind::Static),
                (200, "/lib/libc.so.6".into(), LibKind::Static),
            ]
        );
        // The program's file through its root (a container's filesystem).
        assert_eq!(in_root(r, 200, "/app/client"), r.join("200/root/app/client"));
        assert!(matches!(tls_symbols::lookup_file(&in_root(r, 200, "/app/client")), Lookup::Found(_)));
        assert_eq!(tls_symbols::lookup_file(&in_root(r, 200, "/lib/libc.so.6")), Lookup::NoSymbols);
        assert_eq!(tls_symbols::lookup_file(&in_root(r, 100, "/usr/lib/libssl.so.3")), Lookup::Unreadable);
        // Sockets under the root too.
        let local: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(listening(r, 200, local), Some(true));
        assert_eq!(listening(r, 200, "127.0.0.1:8081".parse().unwrap()), Some(false));
        assert_eq!(listening(r, 100, local), None, "no table: unknown");
        // And the process facts (cgroup → pod) the same way.
        w("200/cgroup", b"0::/kubepods.slice/kubepods-pod5b1c4a2e_7d3f_4e8a_9b6c_0d1e2f3a4b5c.slice/cri-containerd-3f4e6c9a1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f.scope\n");
        std::os::unix::fs::symlink("/app/client", r.join("200/exe")).unwrap();
        let info = crate::process::observe(r, 200).unwrap();
        assert_eq!(info.executable.as_deref(), Some("client"));
        assert_eq!(info.cgroup.pod_uid.as_deref(), Some("5b1c4a2e-7d3f-4e8a-9b6c-0d1e2f3a4b5c"));
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(decode(&[0u8; 8], 0).is_none());
    }

    #[test]
    fn listening_ports_are_read_again_only_when_stale() {
        let root = tempfile::tempdir().unwrap();
        let tcp = root.path().join("7/net/tcp");
        std::fs::create_dir_all(tcp.parent().unwrap()).unwrap();
        let table = |ports: &[u16]| {
            let mut t = String::from("  sl  local_address rem_address   st\n");
            for p in ports {
                t.push_str(&format!("   0: 0100007F:{p:04X} 00000000:0000 0A 0\n"));
            }
            // An established connection's local port is not a listening one.
            t.push_str("   1: 0100007F:D431 0100007F:1F90 01 0\n");
            std::fs::write(&tcp, t).unwrap();
        };
        table(&[8080]);
        let c = ListenCache::new(root.path().to_path_buf());
        let at = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let t0 = Instant::now();
        assert_eq!(c.check_at(7, at(8080), t0), Some(true));
        assert_eq!(c.check_at(7, at(0xD431), t0), Some(false));
        assert_eq!(c.check_at(8, at(8080), t0), None, "no table: unknown");
        // A new listener: not seen from a fresh set, seen once it is stale.
        table(&[8080, 9090]);
        assert_eq!(c.check_at(7, at(9090), t0 + LISTEN_RECHECK / 2), Some(false));
        assert_eq!(c.check_at(7, at(9090), t0 + LISTEN_RECHECK), Some(true));
        // A closed listener stays trusted until the set is old.
        table(&[]);
        let t1 = t0 + LISTEN_RECHECK;
        assert_eq!(c.check_at(7, at(8080), t1 + LISTEN_MAX_AGE / 2), Some(true));
        assert_eq!(c.check_at(7, at(8080), t1 + LISTEN_MAX_AGE), Some(false));
    }
}
