//! The live agent and real servers inside a network namespace, shared by
//! agent_run and the rotel end-to-end tests.
//! Include with `#[path = "../harness/agent.rs"] mod agent;` (needs `netns.rs` as `mod netns`).
#![allow(dead_code)]

use crate::netns::{read, wait_until, ChildGuard, NetnsPair};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Starts `cnflow <sub>` inside `ns` capturing on `ifaces` (CNFLOW_INTERFACES),
/// stdout/stderr to agent.out/agent.err in `dir`; returns once every
/// interface is attached.
pub fn start_agent(ns: &str, ifaces: &str, sub: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> ChildGuard {
    let mut c = crate::harness::cnflow_in(ns);
    c.arg(sub).args(args).env("CNFLOW_INTERFACES", ifaces).env("CNFLOW_STATS_INTERVAL_SECS", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(std::fs::File::create(dir.join("agent.out")).unwrap());
    c.stderr(std::fs::File::create(dir.join("agent.err")).unwrap());
    let g = ChildGuard::new(c.spawn().unwrap(), "cnflow agent");
    let n = ifaces.split(',').count();
    assert!(
        wait_until(Duration::from_secs(30), || read(&dir.join("agent.err")).matches("capture attached").count() >= n),
        "agent did not attach: {}",
        read(&dir.join("agent.err"))
    );
    g
}

/// SIGINT, then a clean exit within 20 s (final flush and export included).
pub fn stop_agent(mut g: ChildGuard) {
    g.signal(libc::SIGINT);
    assert!(g.wait_timeout(Duration::from_secs(20)).is_some_and(|s| s.success()), "agent did not exit cleanly");
}

pub fn nginx(ns: &str, ip: &str, dir: &Path) -> ChildGuard {
    std::fs::create_dir_all(dir.join("www/users")).unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("www/users/{i}")), "user\n").unwrap();
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; server {{ listen {ip}:8080; root {d}/www; }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = NetnsPair::cmd(ns, "nginx");
    c.args(["-c", conf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    ChildGuard::new(c.spawn().unwrap(), "nginx")
}

pub fn redis(ns: &str, ip: &str) -> ChildGuard {
    let mut c = NetnsPair::cmd(ns, "redis-server");
    c.args(["--bind", ip, "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null());
    ChildGuard::new(c.spawn().unwrap(), "redis-server")
}

/// Pipelined Redis SETs from `ns`: `n` commands, 16 in flight per connection.
pub fn redis_benchmark_set(ns: &str, ip: &str, n: usize) {
    NetnsPair::exec(
        ns,
        &["redis-benchmark", "-h", ip, "-n", &n.to_string(), "-c", "2", "-P", "16", "-t", "set", "-q"],
        Duration::from_secs(30),
    );
}

pub fn wait_port(ns: &str, ip: &str, port: u16) {
    let ok = wait_until(Duration::from_secs(10), || {
        NetnsPair::cmd(ns, "bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ok, "{ip}:{port} not listening");
}
