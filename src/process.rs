//! Facts about a traced process (pid → executable name, cgroup → container
//! and pod), for spans whose local side is known by its process rather than
//! by its address: TLS plaintext read with uprobes (`capture::tls`).
//!
//! The facts are read from `/proc` when the TLS source first sees a
//! connection of the process, while it is certainly alive: a short-lived
//! client (curl) has often exited by the time its exchange becomes a span,
//! and its `/proc/PID` is gone then. They are kept in a bounded table keyed
//! by pid that telemetry (span attributes) and the Kubernetes enricher
//! (pid → pod) read.
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, LazyLock};

/// Processes remembered at most (least recently observed forgotten first).
pub const MAX_PROCESSES: usize = 16_384;

/// What is known about one process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `process.executable.name`: base name of `/proc/PID/exe`'s target
    /// (semconv), else `/proc/PID/comm` (cut at 15 bytes by the kernel).
    pub executable: Option<String>,
    /// Container and pod found in `/proc/PID/cgroup`.
    pub cgroup: CgroupRef,
}

/// The container runtime's id and the Kubernetes pod uid in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupRef {
    /// Pod uid with dashes (`kubepods-…-pod<uid>.slice` uses underscores).
    pub pod_uid: Option<String>,
    /// 64 hex digits, as in a pod status's `containerID` after `<runtime>://`.
    pub container_id: Option<String>,
}

/// pid → (facts, stale): stale once the pid exec'd after the facts were read.
type Table = LruCache<u32, (Arc<ProcessInfo>, bool)>;
static TABLE: LazyLock<Mutex<Table>> =
    LazyLock::new(|| Mutex::new(LruCache::new(NonZeroUsize::new(MAX_PROCESSES).unwrap())));

/// `pid` replaced its image (exec): what was read before describes the old
/// program (e.g. `ip netns exec` or a shell before `exec curl`), so any
/// later reading, even of the exiting process, replaces it.
pub fn exec_seen(pid: u32) {
    if let Some((_, stale)) = TABLE.lock().peek_mut(&pid) {
        *stale = true;
    }
}

/// Reads (again) the facts of `pid` under `proc_root` (normally `/proc`) and
/// remembers them; a pid reused by a new process is simply overwritten. A
/// process that is already gone keeps what was known of it.
pub fn observe(proc_root: &Path, pid: u32) -> Option<Arc<ProcessInfo>> {
    let (info, complete) = read(proc_root, pid)?;
    let mut t = TABLE.lock();
    if !complete {
        // An exiting process (a zombie keeps only its comm): what was read
        // while it lived is better, unless it was another program's.
        if let Some((known, false)) = t.get(&pid) {
            return Some(known.clone());
        }
    }
    let info = Arc::new(info);
    t.put(pid, (info.clone(), false));
    Some(info)
}

/// What was last observed of `pid`.
pub fn get(pid: u32) -> Option<Arc<ProcessInfo>> {
    TABLE.lock().get(&pid).map(|(i, _)| i.clone())
}

/// Remembers `info` as it is (tests, and callers that read elsewhere).
pub fn insert(info: ProcessInfo) {
    TABLE.lock().put(info.pid, (Arc::new(info), false));
}

/// The facts, and whether the process was fully readable (not exiting).
fn read(proc_root: &Path, pid: u32) -> Option<(ProcessInfo, bool)> {
    let dir = proc_root.join(pid.to_string());
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        // "/usr/bin/curl (deleted)" after an upgrade: the name is still curl.
        .map(|n| n.strip_suffix(" (deleted)").map(str::to_string).unwrap_or(n));
    let comm = || std::fs::read_to_string(dir.join("comm")).ok().map(|s| s.trim_end().to_string());
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok();
    if exe.is_none() && cgroup.is_none() {
        // Gone already (or not visible): nothing to remember.
        return comm().map(|c| (ProcessInfo { pid, executable: Some(c), cgroup: CgroupRef::default() }, false));
    }
    let complete = exe.is_some();
    let info = ProcessInfo {
        pid,
        executable: exe.or_else(comm).filter(|s| !s.is_empty()),
        cgroup: cgroup.as_deref().map(parse_cgroup).unwrap_or_default(),
    };
    Some((info, complete))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container id in one path segment: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope` (systemd
/// driver) or a bare `<id>` (cgroupfs driver, Docker's `/docker/<id>`).
fn container_in(seg: &str) -> Option<&str> {
    let s = seg.strip_suffix(".scope").unwrap_or(seg);
    if is_hex64(s) {
        return Some(s);
    }
    // cri-o's monitor process (`crio-conmon-<id>.scope`) is not the container.
    for prefix in ["cri-containerd-", "crio-", "docker-", "libpod-"] {
        if let Some(id) = s.strip_prefix(prefix).filter(|id| is_hex64(id)) {
            return Some(id);
        }
    }
    None
}

/// A pod uid in one path segment: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver).
fn pod_in(seg: &str) -> Option<String> {
    let s = seg.strip_suffix(".slice").unwrap_or(seg);
    let idx = s.rfind("pod")?;
    // Only `pod` at the start or after the systemd `-` separator.
    if idx != 0 && !s[..idx].ends_with('-') {
        return None;
    }
    let uid = &s[idx + 3..];
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-' || b == b'_',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| uid.replace('_', "-"))
}

/// The container and pod of a process from the text of `/proc/PID/cgroup`
/// (cgroup v1 `N:controllers:/path` lines or the v2 `0::/path` line; paths
/// relative to the reader's cgroup namespace may start with `/..`). The
/// innermost match wins: with nested runtimes (kind: a node that is itself
/// a container) the pod's container is the deepest segment.
pub fn parse_cgroup(text: &str) -> CgroupRef {
    let mut best = CgroupRef::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        let mut r = CgroupRef::default();
        for seg in path.split('/').rev() {
            if r.container_id.is_none() && r.pod_uid.is_none() {
                r.container_id = container_in(seg).map(str::to_string);
            }
            if r.pod_uid.is_none() {
                r.pod_uid = pod_in(seg);
            }
            if r.pod_uid.is_some() {
                break;
            }
        }
        // A line naming the pod beats one naming only a container (a
        // controller that does not nest per pod, e.g. cpuset at the root).
        let score = |c: &CgroupRef| (c.pod_uid.is_some() as u8) * 2 + c.container_id.is_some() as u8;
        if score(&r) > score(&best) {
            best = r;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e6c9a1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";
    const UID: &str = "5b1c4a2e-7d3f-4e8a-9b6c-0d1e2f3a4b5c";

    fn uid_(u: &str) -> String {
        u.replace('-', "_")
    }

    #[test]
    fn containerd_cgroup_v2_systemd_driver() {
        let t = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid_(UID)
        );
        let r = parse_cgroup(&t);
        assert_eq!(r.pod_uid.as_deref(), Some(UID));
        assert_eq!(r.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn guaranteed_qos_and_cgroup_namespace_relative_path() {
        // Guaranteed pods have no QoS slice; seen from another cgroup namespace
        // the path starts with `/..`.
        let t = format!("0::/../../kubepods-pod{}.slice/cri-containerd-{ID}.scope\n", uid_(UID));
        let r = parse_cgroup(&t);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref()), (Some(UID), Some(ID)));
    }

    #[test]
    fn crio_and_its_monitor() {
        let t = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope\n",
            uid_(UID)
        );
        assert_eq!(parse_cgroup(&t).container_id.as_deref(), Some(ID));
        // conmon lives in the pod's slice but is no container.
        let t = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-conmon-{ID}.scope\n",
            uid_(UID)
        );
        let r = parse_cgroup(&t);
        assert_eq!((r.pod_uid.as_deref(), r.container_id), (Some(UID), None));
    }

    #[test]
    fn cgroup_v1_cgroupfs_driver_docker_and_dockershim() {
        // cgroupfs driver (kubelet default before systemd): v1 controllers.
        let t = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:cpuset:/\n\
             4:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        let r = parse_cgroup(&t);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref()), (Some(UID), Some(ID)));
        // Docker through cri-dockerd with the systemd driver.
        let t = format!("1:name=systemd:/kubepods.slice/kubepods-pod{}.slice/docker-{ID}.scope\n0::/\n", uid_(UID));
        let r = parse_cgroup(&t);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref()), (Some(UID), Some(ID)));
        // Plain Docker (no Kubernetes): a container, no pod.
        let r = parse_cgroup(&format!("0::/docker/{ID}\n"));
        assert_eq!((r.pod_uid, r.container_id.as_deref()), (None, Some(ID)));
        let r = parse_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(r.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn kind_node_nesting_takes_the_innermost() {
        let node = "a".repeat(64);
        let t = format!(
            "0::/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid_(UID)
        );
        let r = parse_cgroup(&t);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref()), (Some(UID), Some(ID)));
    }

    #[test]
    fn host_processes_and_garbage() {
        for t in [
            "0::/\n",
            "0::/system.slice/nginx.service\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "4:memory:/process_api/44b5493845de6da79c5e0a6bd82df90d\n",
            "garbage",
            "",
            "0::/kubepods/podnot-a-uid/abc\n",
            "0::/kubepods/burstable/ipod5b1c4a2e-7d3f-4e8a-9b6c-0d1e2f3a4b5c\n",
        ] {
            assert_eq!(parse_cgroup(t), CgroupRef::default(), "{t:?}");
        }
    }

    #[test]
    fn this_process_is_observed() {
        let me = std::process::id();
        let info = observe(Path::new("/proc"), me).expect("own /proc entry");
        assert!(info.executable.as_deref().is_some_and(|e| !e.is_empty()));
        assert_eq!(get(me).as_deref(), Some(&*info));
        assert!(observe(Path::new("/proc"), u32::MAX).is_none());
    }

    /// An exiting process keeps what was read while it lived, unless it
    /// exec'd since (then the old program's facts are wrong: `ip netns exec curl`).
    #[test]
    fn exiting_readings_and_exec() {
        let root = tempfile::tempdir().unwrap();
        let pid = 4_000_001;
        std::fs::create_dir_all(root.path().join(pid.to_string())).unwrap();
        std::fs::write(root.path().join(format!("{pid}/comm")), "curl\n").unwrap();
        insert(ProcessInfo { pid, executable: Some("python3.11".into()), cgroup: CgroupRef::default() });
        observe(root.path(), pid);
        assert_eq!(get(pid).unwrap().executable.as_deref(), Some("python3.11"), "zombie reading ignored");
        exec_seen(pid);
        observe(root.path(), pid);
        assert_eq!(get(pid).unwrap().executable.as_deref(), Some("curl"), "the new program's name");
    }

    /// Everything is read under the root given (the host's /proc mounted
    /// elsewhere in a DaemonSet): a fake tree with an `exe` link and a
    /// `cgroup` file of a pod's container.
    #[test]
    fn facts_are_read_under_the_given_root() {
        let root = tempfile::tempdir().unwrap();
        let pid = 4_000_002;
        let dir = root.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/usr/local/bin/static-client (deleted)", dir.join("exe")).unwrap();
        let cg = format!("0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n", uid_(UID));
        std::fs::write(dir.join("cgroup"), cg).unwrap();
        let info = observe(root.path(), pid).expect("read under the root");
        assert_eq!(info.executable.as_deref(), Some("static-client"));
        assert_eq!((info.cgroup.pod_uid.as_deref(), info.cgroup.container_id.as_deref()), (Some(UID), Some(ID)));
        // Not under another root.
        let other = tempfile::tempdir().unwrap();
        assert!(observe(other.path(), pid + 1).is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = parse_cgroup(&s);
        }
    }
}
