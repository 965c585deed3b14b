//! Shared helpers for integration tests: network namespaces, veth pairs, real peers.
//! Include from a test file with `#[path = "../harness/mod.rs"] mod harness;`.
#![allow(dead_code)]

/// Path of the cnflow binary built for this test run.
pub fn cnflow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cnflow")
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
