//! The test command: checks, a bounded fuzz run, then every test, closing with the real count.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::cmd::{command, exec, is_root, workspace_root};
use crate::setup::{self, Tools};

/// The crate that holds every fuzz target (a workspace of its own: nightly and cargo-fuzz).
const FUZZ_DIR: &str = "fuzz";

/// Fuzz targets, each run for a bounded time by `cargo xtask test` (see `fuzz/Cargo.toml`).
pub const FUZZ_TARGETS: &[&str] = &[
    "dns_answer",
    "dns_stream",
    "cgroup_path",
    "cluster_file",
    "pods_file",
    "ingest_body",
];

pub fn run(fuzz_seconds: u64) -> Result<()> {
    if !is_root() {
        bail!("the tests attach eBPF programs and create network namespaces: run them as root");
    }
    let tools = setup::run()?;
    exec(command("cargo").args(["fmt", "--all", "--", "--check"]))?;
    exec(command("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The recommender's library core builds without its front ends (no clap, no async runtime).
    exec(command("cargo").args([
        "check",
        "--quiet",
        "-p",
        "recommender",
        "--lib",
        "--no-default-features",
    ]))?;
    for target in FUZZ_TARGETS {
        fuzz(&tools, target, Budget::Seconds(fuzz_seconds))?;
    }
    let mut totals = cargo_test(&tools)?;
    // The lab: the whole system end to end (agent → serve in learning mode → export, validate,
    // verify → monitor mode), counted as one test.
    match crate::lab::run(&crate::lab::LabArgs::default()) {
        Ok(()) => totals.passed += 1,
        Err(error) => {
            eprintln!("xtask: the lab failed: {error:#}");
            totals.failed += 1;
        }
    }
    // The closing line CI reads: the real number of tests run across every test binary.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if totals.failed > 0 || !totals.success {
        bail!("tests failed");
    }
    Ok(())
}

/// How long one fuzz run goes on.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Seconds(u64),
    /// A number of executions (`-runs=N`), for the figures in BENCHMARKS.md.
    Runs(u64),
}

/// Runs one cargo-fuzz target within `budget`; a crash (or a leak, or an input slower than 10 s)
/// fails the run. The corpus grows in `fuzz/corpus/TARGET` (not committed); the seeds in
/// `fuzz/seeds/TARGET` are read as well.
pub fn fuzz(_tools: &Tools, target: &str, budget: Budget) -> Result<()> {
    if !FUZZ_TARGETS.contains(&target) {
        bail!(
            "no fuzz target {target} (targets: {})",
            FUZZ_TARGETS.join(", ")
        );
    }
    eprintln!("xtask: fuzzing {target} ({budget:?})");
    // Absolute paths: libFuzzer reads them from the directory cargo-fuzz runs it in, and xtask
    // may have been started anywhere in the workspace.
    let fuzz_dir = workspace_root().join(FUZZ_DIR);
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut cmd = command("cargo");
    cmd.args(["+nightly", "fuzz", "run", "--fuzz-dir", FUZZ_DIR, target])
        .arg(&corpus);
    let seeds = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(match budget {
            Budget::Seconds(s) => format!("-max_total_time={s}"),
            Budget::Runs(n) => format!("-runs={n}"),
        })
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        // The fuzz targets never load the kernel programs: don't build them a second time.
        .env("AYA_BUILD_SKIP", "1");
    // ASan's quarantine keeps 256 MiB of freed memory poisoned; with it every run touches fresh
    // pages and the parsers fuzz at a third of the rate (BENCHMARKS.md). Bounds and leak checks
    // stay; use-after-free, which safe Rust rules out, is what the smaller quarantine gives up.
    if std::env::var_os("ASAN_OPTIONS").is_none() {
        cmd.env("ASAN_OPTIONS", "quarantine_size_mb=0");
    }
    exec(&mut cmd)
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    success: bool,
}

/// `cargo test` over the workspace, echoing its output and adding up every `test result:` line.
fn cargo_test(tools: &Tools) -> Result<Totals> {
    let mut child = command("cargo")
        // Plain `cargo test`: libraries, binaries, integration tests and doc tests. Benchmarks are
        // left out on purpose: they are measured in release by `cargo bench`, not run as tests.
        .args(["test", "--", "--color", "never"])
        .env("KUBERNETES_VALIDATE", &tools.kubernetes_validate)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            add_result(&mut totals, rest);
        }
    }
    totals.success = child.wait()?.success();
    Ok(totals)
}

/// Adds `ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn add_result(totals: &mut Totals, summary: &str) {
    for part in summary.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => totals.passed += n,
            "failed" => totals.failed += n,
            "ignored" => totals.ignored += n,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_result_lines() {
        let mut t = Totals::default();
        add_result(
            &mut t,
            "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        add_result(
            &mut t,
            "FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        assert_eq!((t.passed, t.failed, t.ignored), (15, 2, 1));
    }
}
