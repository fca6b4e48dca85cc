//! Builds the kernel programs (`agent-ebpf`) and leaves the object at `$OUT_DIR/agent-ebpf`, where
//! `src/kernel/loader.rs` embeds it.
//!
//! aya-build runs `rustup run nightly cargo build --target bpfel-unknown-none -Z build-std=core`,
//! which needs the nightly toolchain with `rust-src` and `bpf-linker`. Missing pieces are reported
//! here with the command that installs them, instead of as a linker error deep in cargo output.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

const SETUP_HINT: &str = "run the project set-up first: `cargo xtask setup`";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("agent/ has no parent directory")?
        .to_path_buf();
    let ebpf_dir = workspace.join("agent-ebpf");
    // The ABI crate is compiled into the programs too.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("agent-common").display()
    );

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !skip {
        ensure_bpf_linker(&workspace)?;
        ensure_rust_src()?;
    }

    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir: ebpf_dir.to_str().context("agent-ebpf path is not UTF-8")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the eBPF programs (agent-ebpf) failed")?;
    if skip {
        // Let `include_bytes_aligned!` compile; loading an empty object fails with a clear error.
        let out = PathBuf::from(env::var("OUT_DIR")?).join("agent-ebpf");
        if !out.exists() {
            std::fs::write(&out, [])?;
        }
    }
    Ok(())
}

/// Finds `bpf-linker` on PATH or where `cargo xtask setup` installs it (`target/tools/bin`), and
/// puts its directory first on PATH for the nested cargo that links the programs.
fn ensure_bpf_linker(workspace: &Path) -> anyhow::Result<()> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let candidates = [
        target_dir.join("tools/bin"),
        workspace.join("target/tools/bin"),
    ];
    // Rebuild the programs when the linker changes. Only an existing file may be named here: cargo
    // considers a missing one always changed and would rerun this script on every build.
    if let Some(found) = dirs.iter().find(|d| d.join("bpf-linker").is_file()) {
        println!(
            "cargo:rerun-if-changed={}",
            found.join("bpf-linker").display()
        );
        return Ok(());
    }
    if let Some(dir) = candidates.iter().find(|d| d.join("bpf-linker").is_file()) {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("bpf-linker").display()
        );
        dirs.insert(0, dir.clone());
        // Only this build script's process (and the cargo it spawns) sees the change.
        env::set_var("PATH", env::join_paths(dirs)?);
        return Ok(());
    }
    bail!(
        "bpf-linker was not found on PATH nor in {}; it is needed to link the eBPF programs: {SETUP_HINT}",
        candidates[0].display()
    )
}

/// `-Z build-std=core` needs the nightly toolchain's `rust-src` component.
fn ensure_rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let Ok(out) = out else {
        // No rustup: aya-build then uses the current toolchain and reports its own errors.
        return Ok(());
    };
    if !out.status.success() {
        bail!("the nightly Rust toolchain is not installed: {SETUP_HINT}");
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!("the nightly toolchain has no rust-src component: {SETUP_HINT}");
    }
    Ok(())
}
