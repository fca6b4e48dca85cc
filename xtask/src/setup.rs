//! Set-up: everything a fresh machine of the build kind lacks, installed idempotently.
//!
//! - `rust-src` for the nightly toolchain (`-Z build-std=core` for `bpfel-unknown-none`);
//! - `bpf-linker`, built against the nightly toolchain's own LLVM (no system LLVM needed);
//! - `cargo-fuzz`;
//! - the Debian packages the tests use (network namespaces, a real DNS server and client);
//! - `kubernetes-validate` in a virtualenv, the official schema validator the tests run;
//! - `kubectl`, whose kustomize renders `deploy/` for the manifest tests (Debian's
//!   `kubernetes-client` when no kubectl is on PATH).
//!
//! Tools go to `target/tools` inside the clone, so nothing outside it is assumed or cached.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{command, exec, is_root, output, tools_dir};

/// Pinned versions: a fresh machine gets what CI tested.
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.1";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Debian packages the tests and the lab use.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",       // ip netns, veth
    "dnsmasq-base",   // the real DNS server of the test hosts
    "bind9-dnsutils", // dig, for DNS over TCP
    "python3-venv",   // the schema validator's virtualenv
    "procps",
    "nftables", // the lab's stand-in for kube-proxy (Service DNAT)
];

/// What set-up made available.
pub struct Tools {
    pub kubernetes_validate: PathBuf,
}

pub fn run() -> Result<Tools> {
    ensure_debian_packages(DEBIAN_PACKAGES)?;
    ensure_kubectl()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    let kubernetes_validate = ensure_kubernetes_validate()?;
    Ok(Tools {
        kubernetes_validate,
    })
}

/// Installs those of `packages` that are missing.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let status = output(command("dpkg-query").args(["-W", "-f=${Status}", p]));
            !matches!(status.as_deref(), Ok("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("Debian packages {missing:?} are missing and installing them needs root");
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    exec(command("apt-get").arg("update").arg("-qq"))?;
    exec(
        command("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `kubectl kustomize` renders `deploy/` in the tests. Any kubectl will do (the manifests are
/// written for kustomize v2.0.3 onwards); Debian's `kubernetes-client` (kubectl 1.20) is installed
/// only when none is on PATH, since another package (Google's `kubectl`) may own the command.
fn ensure_kubectl() -> Result<()> {
    if output(command("kubectl").args(["version", "--client"])).is_ok() {
        return Ok(());
    }
    ensure_debian_packages(&["kubernetes-client"])
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is needed to build the eBPF programs")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to the nightly toolchain");
    exec(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The nightly toolchain's sysroot and the file name of the LLVM it ships.
fn nightly_llvm() -> Result<(PathBuf, PathBuf)> {
    let sysroot =
        PathBuf::from(output(command("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
            })
        })
        .with_context(|| format!("no libLLVM in {}", lib.display()))?;
    Ok((sysroot, llvm))
}

/// LLVM's major version from `libLLVM.so.22.1-rust-...` or `libLLVM-22-rust-....so`.
fn llvm_major(lib: &Path) -> Result<u32> {
    let name = lib.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let rest = name
        .strip_prefix("libLLVM.so.")
        .or_else(|| name.strip_prefix("libLLVM-"))
        .unwrap_or_default();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse()
        .with_context(|| format!("cannot read the LLVM version from {name}"))
}

fn ensure_bpf_linker() -> Result<()> {
    let tools = tools_dir();
    if tools.join("bin/bpf-linker").exists() {
        return Ok(());
    }
    let (_sysroot, llvm) = nightly_llvm()?;
    let major = llvm_major(&llvm)?;
    // bpf-linker's build looks for <prefix>/lib/libLLVM.so; point it at the toolchain's own.
    let prefix = tools.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly LLVM {major}");
    exec(
        command("cargo")
            .args(["+nightly", "install", "--locked", "--root"])
            .arg(&tools)
            .args([
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

fn ensure_cargo_fuzz() -> Result<()> {
    let tools = tools_dir();
    if tools.join("bin/cargo-fuzz").exists() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    exec(
        command("cargo")
            .args(["install", "--locked", "--root"])
            .arg(&tools)
            .args(["cargo-fuzz", "--version", CARGO_FUZZ_VERSION]),
    )
}

fn ensure_kubernetes_validate() -> Result<PathBuf> {
    let venv = tools_dir().join("venv");
    let bin = venv.join("bin/kubernetes-validate");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION}");
    exec(command("python3").args(["-m", "venv"]).arg(&venv))?;
    exec(
        command(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )?;
    Ok(bin)
}
