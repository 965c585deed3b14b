#[path = "../harness/mod.rs"]
mod harness;

#[test]
fn binary_prints_help() {
    let out = std::process::Command::new(harness::cnflow_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("replay"));
}
