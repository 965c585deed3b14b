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
