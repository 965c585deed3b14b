//! Builds the eBPF TC program (bpf-programs/) with nightly + bpf-linker and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`. Only with the
//! `ebpf` feature (default); `--no-default-features` builds without it.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_BIN: &str = "cnflow-tc";
/// Uprobes on OpenSSL (TLS plaintext), loaded separately so CNFLOW_TLS=false costs nothing.
const BPF_TLS_BIN: &str = "cnflow-tls";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    for p in ["bpf-programs/src", "bpf-programs/Cargo.toml", "bpf-programs/Cargo.lock", "common/src"] {
        println!("cargo:rerun-if-changed={}", manifest.join(p).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    if let Err(msg) = build_bpf(&manifest, &out_dir) {
        // A panic is the only way to show a multi-line reason as a build error.
        panic!(
            "\n\ncnflow: cannot build the eBPF program: {msg}\n\
             It needs rustup with a nightly toolchain + rust-src and bpf-linker 0.10.0:\n  \
             rustup toolchain install nightly --profile minimal\n  \
             rustup component add rust-src --toolchain nightly\n  \
             cargo install bpf-linker --version 0.10.0 --locked\n\
             (or run `bash .ci/setup.sh`), or build without live capture: --no-default-features\n"
        );
    }
}

fn ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `rustup run nightly <program>` command with the outer cargo's toolchain
/// overrides removed, so the nested build really uses nightly.
fn nightly(program: &str) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", program]);
    for k in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        c.env_remove(k);
    }
    c
}

fn build_bpf(manifest: &Path, out_dir: &Path) -> Result<(), String> {
    ok(Command::new("rustup").arg("--version")).ok_or("`rustup` was not found in PATH")?;
    ok(nightly("rustc").arg("--version")).ok_or("the nightly toolchain is not installed")?;
    let comps = ok(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
        .unwrap_or_default();
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        return Err("the rust-src component of the nightly toolchain is not installed".into());
    }
    ok(Command::new("bpf-linker").arg("--version")).ok_or("`bpf-linker` was not found in PATH")?;

    // Shared by every profile/clippy run so `core` is built once: <target>/bpf.
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out_dir.ancestors().nth(4).map(|t| t.join("bpf")).unwrap_or_else(|| out_dir.join("bpf"));
    let status = nightly("cargo")
        .current_dir(manifest.join("bpf-programs"))
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bin",
            BPF_BIN,
            "--bin",
            BPF_TLS_BIN,
        ])
        // BTF with func_info: the kernel only accepts bpf_loop callbacks
        // (used to split GSO packets) from programs that carry it.
        .env("RUSTFLAGS", "-C link-arg=--btf")
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .map_err(|e| format!("cannot run nightly cargo: {e}"))?;
    if !status.success() {
        return Err(format!("nightly cargo build of bpf-programs failed ({status}); see the errors above"));
    }
    for bin in [BPF_BIN, BPF_TLS_BIN] {
        let obj = target_dir.join("bpfel-unknown-none/release").join(bin);
        std::fs::copy(&obj, out_dir.join(bin)).map_err(|e| format!("copy {}: {e}", obj.display()))?;
    }
    Ok(())
}
