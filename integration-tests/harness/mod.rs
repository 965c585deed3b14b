//! Shared helpers for integration tests: network namespaces, veth pairs, real peers.
//! Include from a test file with `#[path = "../harness/mod.rs"] mod harness;`.
#![allow(dead_code)]

/// Path of the cnflow binary built for this test run.
pub fn cnflow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cnflow")
}

/// `N` distinct ports free on 127.0.0.1 of the calling thread's namespace:
/// all bound at once, so no two of them can be the same port (taking them
/// one call at a time could hand out a port twice).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [_; N] = std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

/// A counter from the agent's log: `key=N` on the last line containing
/// `marker` ("final counters", "capture stopped", "counters:"); `None` when
/// there is no such line or key.
pub fn logged_counter(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
}

/// A counter of the agent's "final counters" line, 0 when absent (counters
/// that never moved may not be listed).
pub fn final_counter(log: &str, key: &str) -> u64 {
    logged_counter(log, "final counters", key).unwrap_or(0)
}

/// Directory holding committed pcaps.
pub fn pcaps_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/pcaps")
}

/// `cnflow` run inside network namespace `ns` the way every live test runs
/// it: TLS uprobes off (they see every OpenSSL process on the host, not only
/// this test's namespaces, and tests count spans exactly; the TLS tests turn
/// them back on), info logs without colours, no stdin.
pub fn cnflow_in(ns: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, cnflow_bin()])
        .env("CNFLOW_TLS", "false")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    c
}
