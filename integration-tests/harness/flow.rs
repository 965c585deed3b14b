//! Helpers for flow/replay tests: a pair of network namespaces joined by a
//! veth, child processes killed on drop, code run inside a namespace, and
//! tcpdump captures. Everything is removed on drop, also when a test fails.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Two namespaces `a` (client side) and `b` (server side) joined by a veth
/// pair with 10.200.`subnet`.1/24 (in a) and 10.200.`subnet`.2/24 (in b).
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    /// veth name inside `a`.
    pub veth_a: String,
    pub ip_a: String,
    pub ip_b: String,
}

impl NetnsPair {
    pub fn new(tag: &str, subnet: u8) -> Self {
        let pid = std::process::id();
        let me = NetnsPair {
            a: format!("cnf{tag}{pid}a"),
            b: format!("cnf{tag}{pid}b"),
            veth_a: "vcnfa".into(),
            ip_a: format!("10.200.{subnet}.1"),
            ip_b: format!("10.200.{subnet}.2"),
        };
        // Built before the commands so Drop cleans up whatever was created.
        let steps: Vec<Vec<String>> = vec![
            vec!["ip".into(), "netns".into(), "add".into(), me.a.clone()],
            vec!["ip".into(), "netns".into(), "add".into(), me.b.clone()],
            format!("ip -n {} link add vcnfa type veth peer name vcnfb netns {}", me.a, me.b)
                .split(' ')
                .map(String::from)
                .collect(),
            format!("ip -n {} addr add {}/24 dev vcnfa", me.a, me.ip_a).split(' ').map(String::from).collect(),
            format!("ip -n {} addr add {}/24 dev vcnfb", me.b, me.ip_b).split(' ').map(String::from).collect(),
            format!("ip -n {} link set vcnfa up", me.a).split(' ').map(String::from).collect(),
            format!("ip -n {} link set vcnfb up", me.b).split(' ').map(String::from).collect(),
            format!("ip -n {} link set lo up", me.a).split(' ').map(String::from).collect(),
            format!("ip -n {} link set lo up", me.b).split(' ').map(String::from).collect(),
        ];
        for s in &steps {
            let v: Vec<&str> = s.iter().map(String::as_str).collect();
            run(&v).unwrap();
        }
        me
    }

    /// Command prefix running `prog` inside namespace `ns`.
    pub fn cmd(ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// Poll `cond` every 50 ms for at most `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A running tcpdump writing a classic pcap; stop it with [`Tcpdump::stop`].
pub struct Tcpdump {
    proc: Option<Proc>,
    stderr: std::path::PathBuf,
}

impl Tcpdump {
    /// `tcpdump -i IFACE [extra] -w OUT [FILTER]` inside `ns`; returns once it listens.
    pub fn start(ns: &str, iface: &str, extra: &[&str], out: &Path, filter: &str) -> Self {
        let stderr = out.with_extension("stderr");
        let err = std::fs::File::create(&stderr).unwrap();
        let child = NetnsPair::cmd(ns, "tcpdump")
            .args(["-i", iface, "-U", "--immediate-mode", "-B", "32768", "-n", "-s", "0", "-Z", "root"])
            .args(extra)
            .arg("-w")
            .arg(out)
            .args(filter.split_whitespace())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("tcpdump");
        let me = Tcpdump { proc: Some(Proc(child)), stderr };
        let ok = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&me.stderr).map(|s| s.contains("listening on")).unwrap_or(false)
        });
        assert!(ok, "tcpdump did not start: {}", std::fs::read_to_string(&me.stderr).unwrap_or_default());
        me
    }

    /// SIGINT so tcpdump flushes the file, then wait (bounded) for it to
    /// exit. Returns the number of packets the kernel dropped.
    pub fn stop(mut self) -> u64 {
        if let Some(mut p) = self.proc.take() {
            let pid = nix::unistd::Pid::from_raw(p.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let done = wait_for(Duration::from_secs(10), || matches!(p.0.try_wait(), Ok(Some(_))));
            assert!(done, "tcpdump did not exit");
        }
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        err.lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }
}
