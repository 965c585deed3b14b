//! Network namespaces standing in for pods: each has `eth0` (10.200.157.N/32)
//! whose veth peer sits in the host namespace under a CNI-like name
//! (`cali…`), with a host route to the pod as Calico/kindnet install.
//! Removed on drop, also when a test panics.
#![allow(dead_code)]
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub struct PodNetns {
    pub netns: String,
    pub host_veth: String,
    pub ip: String,
    /// Host-side address (10.200.157.N+100) so the host can talk to the pod.
    pub host_ip: String,
}

impl PodNetns {
    /// A pod stand-in with address 10.200.157.`n` (n < 100).
    pub fn new(n: u8) -> Self {
        assert!(n < 100);
        let id = format!("{}{}", std::process::id() % 10_000, SEQ.fetch_add(1, Ordering::Relaxed));
        let p = PodNetns {
            netns: format!("cnk8s-{id}"),
            host_veth: format!("cali{id}"),
            ip: format!("10.200.157.{n}"),
            host_ip: format!("10.200.157.{}", n + 100),
        };
        run(&["ip", "netns", "add", &p.netns]);
        run(&["ip", "link", "add", &p.host_veth, "type", "veth", "peer", "name", "eth0", "netns", &p.netns]);
        run(&["ip", "-n", &p.netns, "addr", "add", &format!("{}/32", p.ip), "dev", "eth0"]);
        run(&["ip", "-n", &p.netns, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &p.netns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &p.netns, "route", "add", &format!("{}/32", p.host_ip), "dev", "eth0"]);
        run(&["ip", "addr", "add", &format!("{}/32", p.host_ip), "dev", &p.host_veth]);
        run(&["ip", "link", "set", &p.host_veth, "up"]);
        run(&["ip", "route", "add", &format!("{}/32", p.ip), "dev", &p.host_veth, "src", &p.host_ip]);
        p
    }

    pub fn ifindex(&self) -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.host_veth))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A command run inside the stand-in's namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        // Deleting the namespace destroys eth0 and with it the host veth and route.
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

/// A pod stand-in whose namespace is not pinned anywhere: only its process
/// (`unshare -n sleep`) holds it, as with a container seen through hostPID.
pub struct ProcPod {
    pub child: std::process::Child,
    pub host_veth: String,
    pub ip: String,
}

impl ProcPod {
    pub fn new(n: u8) -> Self {
        let id = format!("{}{}", std::process::id() % 10_000, SEQ.fetch_add(1, Ordering::Relaxed));
        let child = Command::new("unshare").args(["-n", "sleep", "120"]).spawn().expect("unshare");
        let pid = child.id().to_string();
        let p = ProcPod { child, host_veth: format!("calp{id}"), ip: format!("10.200.157.{n}") };
        // Wait until the child has its own namespace.
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        for _ in 0..100 {
            if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != own {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run(&["ip", "link", "add", &p.host_veth, "type", "veth", "peer", "name", "podeth", "netns", &pid]);
        run(&["nsenter", "-t", &pid, "-n", "ip", "addr", "add", &format!("{}/32", p.ip), "dev", "podeth"]);
        run(&["nsenter", "-t", &pid, "-n", "ip", "link", "set", "podeth", "up"]);
        run(&["ip", "link", "set", &p.host_veth, "up"]);
        p
    }
}

impl Drop for ProcPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).output();
    }
}
