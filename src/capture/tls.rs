//! TLS plaintext through uprobes on OpenSSL (libssl.so.3 / libssl.so.1.1).
//!
//! Loads `cnflow-tls` (uprobes on SSL_read/SSL_write and their `_ex`
//! variants, the sock_{send,recv}_length raw tracepoints for the socket
//! under a call),
//! finds the libssl files that processes map by scanning `/proc/*/maps`, and
//! attaches one set of uprobes per distinct file (device + inode), through
//! `/proc/PID/root/...` so libraries inside containers are found too. A
//! uprobe is placed on the file, so every process mapping it, including ones
//! started later, is covered without another attachment.
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
use super::tls_stream::{socket_addrs, TlsCall, TlsStreams};
use super::PacketEvent;
use crate::stats::{counter, gauge, Counter};
use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::uprobe::{UProbeLink, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use bytes::Bytes;
use cnflow_common::{TlsConfig, TlsRecord, TLS_COUNTER_NAMES, TLS_DIR_WRITE, TLS_HEADER_LEN, TLS_NUM_COUNTERS};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

#[cfg(feature = "ebpf")]
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cnflow-tls"));
#[cfg(not(feature = "ebpf"))]
static BPF_OBJECT: &[u8] = &[];

/// (program, symbol, return probe)
const PROBES: [(&str, &str, bool); 8] = [
    ("cnflow_ssl_write", "SSL_write", false),
    ("cnflow_ssl_write_ret", "SSL_write", true),
    ("cnflow_ssl_write_ex", "SSL_write_ex", false),
    ("cnflow_ssl_write_ex_ret", "SSL_write_ex", true),
    ("cnflow_ssl_read", "SSL_read", false),
    ("cnflow_ssl_read_ret", "SSL_read", true),
    ("cnflow_ssl_read_ex", "SSL_read_ex", false),
    ("cnflow_ssl_read_ex_ret", "SSL_read_ex", true),
];
const TRACEPOINTS: [(&str, &str); 4] = [
    ("cnflow_sock_send", "sock_send_length"),
    ("cnflow_sock_recv", "sock_recv_length"),
    ("cnflow_proc_exec", "sched_process_exec"),
    ("cnflow_proc_exit", "sched_process_exit"),
];

/// `TLS_PROC_EVENTS` kinds (`kind << 32 | tgid`).
const PROC_EXEC: u64 = 1;
const PROC_EXIT: u64 = 2;
const PROC_FIRST_CALL: u64 = 3;

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
const EXEC_CHECKS: [Duration; 3] = [Duration::from_millis(20), Duration::from_millis(300), Duration::from_secs(3)];
/// Pending exec checks at most (an exec storm beyond it is left to the rescan, counted).
const MAX_PENDING: usize = 8192;
/// Delay before the /proc scan that confirms a file lost its last user
/// (several exits in a burst share one scan).
const ORPHAN_CHECK: Duration = Duration::from_secs(1);

static LIBS: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.tls.libraries", &[]));
static ATTACH_FAILED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "attach_failed")]));
static ATTACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "attached")]));
static DETACHED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.library_changes", &[("change", "detached")]));
static BAD_RECORD: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.records", &[("reason", "bad_record")]));
static EV_EXEC: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exec")]));
static EV_EXIT: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exit")]));
static EV_DROPPED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.tls.process_events", &[("event", "exec_check_dropped")]));
static SCANS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.tls.scans", &[]));

/// What the TLS source needs from the configuration.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Plaintext bytes copied per SSL call.
    pub snaplen: u32,
    /// Extra library files to attach to (CNFLOW_TLS_LIBRARIES), besides every
    /// `libssl.so*` that a process maps.
    pub libraries: Vec<PathBuf>,
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

struct Attacher {
    bpf: aya::Ebpf,
    /// Links per attached file; dropping them detaches.
    attached: HashMap<FileId, (PathBuf, Vec<UProbeLink>)>,
    /// Files that could not be attached (stripped, not OpenSSL): not retried.
    failed: HashSet<FileId>,
    extra: Vec<PathBuf>,
    /// Known processes mapping each attached file (the kernel reports their exits).
    users: HashMap<FileId, HashSet<u32>>,
    /// The same pids, in the kernel's `TLS_PIDS`.
    pids: aya::maps::HashMap<MapData, u32, u8>,
    /// When a file has lost its last known user: confirm with a scan then.
    orphan_check: Option<Instant>,
}

impl Attacher {
    /// Attaches all probes to `path`; on any failure detaches what was attached.
    fn attach_file(&mut self, id: FileId, path: &Path) {
        if self.attached.contains_key(&id) || self.failed.contains(&id) {
            return;
        }
        let mut links = Vec::with_capacity(PROBES.len());
        for (prog, sym, _) in PROBES {
            let r = (|| -> Result<UProbeLink> {
                let p: &mut UProbe = self.bpf.program_mut(prog).context("program missing")?.try_into()?;
                let lid = p.attach(sym, path, UProbeScope::AllProcesses)?;
                Ok(p.take_link(lid)?)
            })();
            match r {
                Ok(l) => links.push(l),
                Err(e) => {
                    ATTACH_FAILED.inc();
                    self.failed.insert(id);
                    tracing::warn!(
                        library = %path.display(),
                        symbol = sym,
                        error = format!("{e:#}"),
                        "TLS: cannot attach to this library (stripped or not OpenSSL?); its traffic stays encrypted"
                    );
                    return;
                }
            }
        }
        ATTACHED.inc();
        tracing::info!(library = %path.display(), dev = id.0, inode = id.1, "TLS: uprobes attached");
        self.attached.insert(id, (path.to_path_buf(), links));
        LIBS.set(self.attached.len() as u64);
    }

    fn detach(&mut self, id: FileId) {
        if let Some((path, _links)) = self.attached.remove(&id) {
            DETACHED.inc();
            tracing::info!(library = %path.display(), "TLS: no process maps this library any more: detached");
        }
        self.users.remove(&id);
        LIBS.set(self.attached.len() as u64);
    }

    /// Ids of the configured extra files (always attached while they exist).
    fn extra_ids(&mut self) -> HashSet<FileId> {
        let mut ids = HashSet::new();
        for p in self.extra.clone() {
            if let Ok(m) = std::fs::metadata(&p) {
                let id = (m.dev(), m.ino());
                ids.insert(id);
                self.attach_file(id, &p);
            }
        }
        ids
    }

    /// Attaches the libraries `pid` maps and records it as their user.
    fn add_user(&mut self, pid: u32, lib: &MappedLib) {
        // Through the process's root: the path as the process sees it
        // (a container's filesystem), while the file is the same inode.
        if !self.attached.contains_key(&lib.id) {
            let path = PathBuf::from(format!("/proc/{pid}/root{}", lib.path));
            self.attach_file(lib.id, &path);
        }
        if self.attached.contains_key(&lib.id) && self.users.entry(lib.id).or_default().insert(pid) {
            // Full map: the exit is missed; the next full scan forgets the pid.
            let _ = self.pids.insert(pid, 1, 0);
            // Executable and cgroup now, while the process surely lives (the
            // ring reader does it again at its first connection, which may
            // be read after a short-lived client has exited).
            crate::process::observe(Path::new("/proc"), pid);
        }
    }

    /// A process (just exec'd) is looked at: attach what it maps.
    fn scan_pid(&mut self, pid: u32) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
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
        for (pid, lib) in mapped_libssl(&self.extra) {
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
        LIBS.set(self.attached.len() as u64);
    }
}

/// The discovery loop (own thread: /proc reads and attaching block): process
/// events from the kernel, delayed checks of exec'd processes, the confirm
/// scan after a last user's exit, the slow rescan, the counters.
fn discover(
    mut att: Attacher,
    mut events: RingBuf<MapData>,
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
        let now = Instant::now();
        // The kernel writes process events without waking this thread.
        let mut next = next_rescan.min(next_counters).min(now + PROC_POLL);
        if let Some(Reverse((t, _))) = pending.peek() {
            next = next.min(*t);
        }
        if let Some(t) = att.orphan_check {
            next = next.min(t);
        }
        let wait = next.saturating_duration_since(now).as_millis().min(PROC_POLL.as_millis()) as i32;
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the fd stays open while `events` lives.
        unsafe { libc::poll(&mut pfd, 1, wait) };
        let now = Instant::now();
        while let Some(item) = events.next() {
            let Ok(raw) = <[u8; 8]>::try_from(&item[..item.len().min(8)]) else { continue };
            let v = u64::from_ne_bytes(raw);
            let pid = v as u32;
            drop(item);
            match v >> 32 {
                PROC_FIRST_CALL => {
                    // Executable and cgroup while the process lives: the
                    // ring reader may get to its records after it exited.
                    crate::process::observe(Path::new("/proc"), pid);
                }
                PROC_EXEC => {
                    EV_EXEC.inc();
                    crate::process::exec_seen(pid);
                    crate::process::observe(Path::new("/proc"), pid);
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
        while let Some(Reverse((t, pid))) = pending.peek().copied() {
            if t > now {
                break;
            }
            pending.pop();
            if pid != std::process::id() {
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
}

/// Whether a mapped file is an OpenSSL libssl (or one of the configured extras).
fn is_libssl(path: &str, extra: &[PathBuf]) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libssl.so") || extra.iter().any(|e| e.as_os_str() == path)
}

/// libssl files mapped by a process, from the text of `/proc/PID/maps`.
pub fn parse_maps(maps: &str, extra: &[PathBuf]) -> Vec<MappedLib> {
    let mut out: Vec<MappedLib> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut f = line.split_whitespace();
        let (Some(_), Some(_), Some(_), Some(dev), Some(inode)) = (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(path) = f.next() else { continue };
        if !path.starts_with('/') || !is_libssl(path, extra) {
            continue;
        }
        let Some((maj, min)) = dev.split_once(':') else { continue };
        let (Ok(maj), Ok(min), Ok(ino)) =
            (u64::from_str_radix(maj, 16), u64::from_str_radix(min, 16), inode.parse::<u64>())
        else {
            continue;
        };
        // stat's st_dev encoding (makedev), so explicit paths compare equal.
        let id = (libc::makedev(maj as u32, min as u32), ino);
        if !out.iter().any(|l| l.id == id) {
            out.push(MappedLib { id, path: path.to_string() });
        }
    }
    out
}

/// (pid, library) for every process mapping a libssl.
fn mapped_libssl(extra: &[PathBuf]) -> Vec<(u32, MappedLib)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    let me = std::process::id();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // A process may exit between readdir and read: skipped.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        for lib in parse_maps(&maps, extra) {
            out.push((pid, lib));
        }
    }
    out
}

/// Whether `local` is a listening TCP port in `pid`'s network namespace.
fn listening(pid: u32, local: std::net::SocketAddr) -> Option<bool> {
    let mut any = false;
    for f in ["tcp", "tcp6"] {
        let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) else { continue };
        any = true;
        for line in t.lines().skip(1) {
            let mut it = line.split_whitespace();
            let (Some(_), Some(l), Some(_), Some(st)) = (it.next(), it.next(), it.next(), it.next()) else { continue };
            // st 0A = LISTEN; the local address field is HEXADDR:HEXPORT.
            if st == "0A" && l.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) == Some(local.port())
            {
                return Some(true);
            }
        }
    }
    any.then_some(false)
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
        // Without the socket tracepoints (Linux < 6.3) there is no 5-tuple.
        let mut tp_links = Vec::new();
        for (prog, name) in TRACEPOINTS {
            let r = (|| -> Result<RawTracePointLink> {
                let p: &mut RawTracePoint = bpf.program_mut(prog).context("program missing")?.try_into()?;
                p.load().with_context(|| format!("loading {prog}"))?;
                let id = p.attach(name).with_context(|| format!("attaching to raw tracepoint {name}"))?;
                Ok(p.take_link(id)?)
            })();
            tp_links
                .push(r.context("the sock_send_length/sock_recv_length tracepoints (Linux ≥ 6.3) give the 5-tuple")?);
        }
        for (prog, _, _) in PROBES {
            let p: &mut UProbe = bpf.program_mut(prog).context("program missing")?.try_into()?;
            p.load().with_context(|| format!("loading {prog} (verifier)"))?;
        }
        {
            let mut c: Array<_, TlsConfig> = Array::try_from(bpf.map_mut("TLS_CONFIG").context("TLS_CONFIG")?)?;
            let conf = TlsConfig {
                snaplen: cfg.snaplen.clamp(1, cnflow_common::MAX_PAYLOAD as u32),
                own_tgid: std::process::id(),
                v6_daddr_off: V6_DADDR_OFF,
                v6_saddr_off: V6_SADDR_OFF,
            };
            c.set(0, conf, 0)?;
        }
        let ring = RingBuf::try_from(bpf.take_map("TLS_EVENTS").context("TLS_EVENTS")?)?;
        let proc_events = RingBuf::try_from(bpf.take_map("TLS_PROC_EVENTS").context("TLS_PROC_EVENTS")?)?;
        let pids = aya::maps::HashMap::try_from(bpf.take_map("TLS_PIDS").context("TLS_PIDS")?)?;
        let counters: Arc<PerCpuArray<MapData, u64>> =
            Arc::new(PerCpuArray::try_from(bpf.take_map("TLS_COUNTERS").context("TLS_COUNTERS")?)?);
        for c in [&LIBS, &ATTACH_FAILED, &ATTACHED, &DETACHED, &BAD_RECORD, &EV_EXEC, &EV_EXIT, &EV_DROPPED, &SCANS] {
            LazyLock::force(c);
        }
        mirror_counters(&counters);

        let mut att = Attacher {
            bpf,
            attached: HashMap::new(),
            failed: HashSet::new(),
            extra: cfg.libraries.clone(),
            users: HashMap::new(),
            pids,
            orphan_check: None,
        };
        att.rescan();
        tracing::info!(libraries = att.attached.len(), snaplen = cfg.snaplen, "TLS plaintext capture loaded");
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (counters, stop) = (counters.clone(), stop.clone());
            // The programs and every link live as long as this thread.
            std::thread::Builder::new()
                .name("cnflow-tls-discovery".into())
                .spawn(move || discover(att, proc_events, counters, stop, tp_links))
                .context("starting the TLS discovery thread")?;
        }
        // SAFETY: the RingBuf owns its fd and keeps it open while the AsyncFd lives.
        let afd = unsafe { AsyncFd::register(ring) }.context("registering the TLS ring with tokio")?;
        let read = tokio::spawn(read_ring(afd, tx));
        Ok(TlsCapture { tasks: vec![read], counters, stop })
    }
}

async fn read_ring(mut afd: AsyncFd<RingBuf<MapData>>, tx: mpsc::Sender<Vec<PacketEvent>>) {
    // Executable and cgroup (→ container → pod) of each process, read when
    // its connection first shows up: short-lived clients are gone by the
    // time their exchange becomes a span.
    let mut streams = TlsStreams::new(Box::new(listening)).with_process_observer(Box::new(|pid| {
        crate::process::observe(Path::new("/proc"), pid);
    }));
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    // The programs do not wake this reader per record (that costs the traced
    // process several µs per call): it drains on this tick, and is woken
    // only when the ring fills past 1 MiB.
    let mut drain = tokio::time::interval(RING_POLL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            _ = drain.tick() => {}
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
                streams.reap(wall, |pid| Path::new(&format!("/proc/{pid}")).exists(), &mut batch);
            }
        }
        let offset = super::kernel_record::mono_to_wall_offset();
        let ring = afd.get_mut();
        while let Some(item) = ring.next() {
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
        let libs = parse_maps(maps, &[PathBuf::from("/opt/app/libmyssl.so")]);
        assert_eq!(libs.len(), 2);
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(decode(&[0u8; 8], 0).is_none());
    }
}
