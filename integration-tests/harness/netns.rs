//! Two network namespaces joined by a veth pair (10.200.N.1/24 ↔ 10.200.N.2/24),
//! removed on drop (also when the test panics), and child processes that are
//! killed on drop. Include with `#[path = "../harness/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &[&str]) -> std::process::Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (real eBPF, network namespaces)");
}

pub struct NetnsPair {
    pub ns_a: String,
    pub ns_b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub ip_a: String,
    pub ip_b: String,
}

impl NetnsPair {
    /// `tag` keeps names readable; uniqueness comes from pid + a counter.
    pub fn new(tag: &str) -> Self {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let subnet = 1 + (std::process::id() as usize * 7 + n as usize * 31) % 250;
        let p = NetnsPair {
            ns_a: format!("cnf-{tag}-a-{id}"),
            ns_b: format!("cnf-{tag}-b-{id}"),
            // Interface names are limited to 15 bytes.
            veth_a: format!("cva{id}"),
            veth_b: format!("cvb{id}"),
            ip_a: format!("10.200.{subnet}.1"),
            ip_b: format!("10.200.{subnet}.2"),
        };
        // The guard exists before anything is created, so a failing step still cleans up.
        run(&["ip", "netns", "add", &p.ns_a]);
        run(&["ip", "netns", "add", &p.ns_b]);
        run(&[
            "ip", "link", "add", &p.veth_a, "netns", &p.ns_a, "type", "veth", "peer", "name", &p.veth_b, "netns",
            &p.ns_b,
        ]);
        for (ns, dev, ip) in [(&p.ns_a, &p.veth_a, &p.ip_a), (&p.ns_b, &p.veth_b, &p.ip_b)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    /// A command run inside namespace `ns` via `ip netns exec`.
    pub fn cmd(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs to completion inside `ns` with a time bound; returns stdout.
    pub fn exec(ns: &str, args: &[&str], timeout: Duration) -> String {
        let mut c = Self::cmd(ns, args[0]);
        c.args(&args[1..]).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let mut g = ChildGuard::new(child, &format!("{args:?}"));
        // Drained while the child runs: output beyond the pipe buffer would
        // otherwise block the child until the timeout.
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_string(&mut s);
                }
                s
            })
        };
        use std::io::Read;
        let out = drain(g.child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let err = drain(g.child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let status = g.wait_timeout(timeout).unwrap_or_else(|| panic!("{args:?} did not finish within {timeout:?}"));
        let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
        assert!(status.success(), "{args:?} failed ({status}): {out}\n{err}");
        out
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end, which removes the peer too.
        for ns in [&self.ns_a, &self.ns_b] {
            delete_netns(ns);
        }
    }
}

/// Deletes namespace `ns` after killing every process still in it. A guard
/// kills only its own child: an nginx master's workers outlive a SIGKILL of
/// the master, would keep the (then unnamed) namespace alive after `ip netns
/// del` and stay behind after the suite.
pub fn delete_netns(ns: &str) {
    kill_all_in(ns, Duration::ZERO);
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Kills every process in namespace `ns`: SIGTERM first when `grace` is not
/// zero (a broker's start script forwards only that to its VM) and up to
/// `grace` to exit, then SIGKILL for what is left.
pub fn kill_all_in(ns: &str, grace: Duration) {
    let pids = || -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", ns]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    };
    let signal_all = |sig| {
        for p in pids() {
            // SAFETY: kill(2) with a pid read from the test's namespace just now.
            unsafe { libc::kill(p, sig) };
        }
    };
    if !grace.is_zero() {
        signal_all(libc::SIGTERM);
        wait_until(grace, || pids().is_empty());
    }
    signal_all(libc::SIGKILL);
    wait_until(Duration::from_secs(10), || pids().is_empty());
}

/// Kills (SIGKILL) and reaps the child on drop.
pub struct ChildGuard {
    pub child: Child,
    pub what: String,
}

impl ChildGuard {
    pub fn new(child: Child, what: &str) -> Self {
        ChildGuard { child, what: what.to_string() }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory for a test's logs, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cnflow-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Names of the TCX programs attached to `iface` (ingress and egress) inside
/// namespace `ns`, queried with the kernel's BPF_PROG_QUERY (Debian's bpftool
/// 7.1 predates TCX and shows nothing). Runs in a helper thread because
/// setns(2) switches only the calling thread's namespace.
pub fn tcx_programs(ns: &str, iface: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let (ns, iface) = (ns.to_string(), iface.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns handle");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut names = Vec::new();
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(&iface, at).expect("query_tcx");
            names.extend(progs.iter().map(|p| format!("{at:?}:{}", p.name_as_str().unwrap_or("?"))));
        }
        names
    })
    .join()
    .expect("tcx query thread")
}
