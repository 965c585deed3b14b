//! Golden-file helpers: run `cnflow replay` on a committed capture and compare
//! its output with a committed file under integration-tests/golden/.
//! `CNFLOW_BLESS=1 cargo test --test golden_x` rewrites the golden files
//! (review the diff by eye before committing it).
//! Include with `#[path = "../harness/golden.rs"] mod golden;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn pcap_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/pcaps").join(name)
}

pub fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/golden").join(name)
}

/// stdout of `cnflow replay <pcap> --format <format> [extra...]`; panics with stderr on failure.
pub fn replay(pcap: &str, format: &str, extra: &[&str]) -> String {
    let path = pcap_path(pcap);
    assert!(path.exists(), "missing capture {}", path.display());
    let out = Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .arg("replay")
        .arg(&path)
        .args(["--format", format])
        .args(extra)
        .output()
        .expect("running cnflow replay");
    assert!(out.status.success(), "cnflow replay {pcap} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Exchanges (JSON lines) of a capture, parsed.
pub fn exchanges(pcap: &str) -> Vec<serde_json::Value> {
    replay(pcap, "exchanges", &[])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Compare `actual` with the golden file, or rewrite it when CNFLOW_BLESS=1.
pub fn assert_golden(golden: &str, actual: &str) {
    let path = golden_path(golden);
    if std::env::var("CNFLOW_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CNFLOW_BLESS=1 to create it)", path.display()));
    if expected == actual {
        return;
    }
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let first = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    panic!(
        "{} differs from the output ({} expected lines, {} actual); first difference at line {}:\n  expected: {}\n  actual:   {}\n(CNFLOW_BLESS=1 rewrites the golden file)",
        path.display(),
        e.len(),
        a.len(),
        first + 1,
        e.get(first).unwrap_or(&"<none>"),
        a.get(first).unwrap_or(&"<none>"),
    );
}

/// `cnflow replay <pcap> --format exchanges` must print exactly `golden`.
pub fn check_exchanges(pcap: &str, golden: &str) -> Vec<serde_json::Value> {
    let out = replay(pcap, "exchanges", &[]);
    assert_golden(golden, &out);
    out.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Field of an exchange by JSON pointer, as a string for compact assertions ("" when absent/null).
pub fn field(ex: &serde_json::Value, pointer: &str) -> String {
    match ex.pointer(pointer) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// One compact line per exchange: the given fields joined by spaces (for readable assertions).
pub fn summary(exs: &[serde_json::Value], pointers: &[&str]) -> Vec<String> {
    exs.iter().map(|e| pointers.iter().map(|p| field(e, p)).collect::<Vec<_>>().join(" ")).collect()
}

/// Response time of an exchange in microseconds.
pub fn duration_us(ex: &serde_json::Value) -> u64 {
    let s = ex["start_ns"].as_u64().unwrap();
    let e = ex["end_ns"].as_u64().unwrap();
    (e - s) / 1000
}
