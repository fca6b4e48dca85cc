//! `cargo xtask bench`: what the agent costs a node, measured side by side (BENCHMARKS.md has the
//! results and reads them).
//!
//! Parts (`--only PART` runs one):
//! - `connect`: a loopback connect storm, bare, with the agent, and with Debian's `tcplife`;
//! - `pods`: bulk TCP throughput and 64-byte UDP packet rate between two pods, bare and with the
//!   agent;
//! - `programs`: what each kernel program costs per run (the kernel's run-time statistics)
//!   under the same loads;
//! - `snapshot`: reading a full flow table, by batch and entry by entry;
//! - `storms`: the distinct-flow storm and the hostile pods of `agent/tests/storms.rs`, at the
//!   full size (a million destinations, a million DNS names).
//!
//! Every comparison is A-B-A with medians (see `measure`). Results are printed and written to
//! `target/bench/results.json`.

mod agent;
mod connect;
mod measure;
mod pods;
mod programs;
mod snapshot;
mod storms;
pub mod worker;
mod world;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::cmd::{command, exec, is_root, workspace_root};
use crate::setup;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Run one part only.
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// A-B-A rounds per comparison; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Connections per storm run (`connect`, `programs`).
    #[arg(long, default_value_t = 30_000)]
    pub connects: u32,
    /// Seconds per throughput run (`pods`).
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Size of the storms, as a multiple of what `cargo xtask test` runs (10: a million).
    #[arg(long, default_value_t = 10)]
    pub storm_scale: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Connect,
    Pods,
    Programs,
    Snapshot,
    Storms,
}

/// What the benchmark needs beyond the test set-up: the peer, the load generator, bpftool.
const PACKAGES: &[&str] = &["libbpf-tools", "iperf3", "bpftool"];

pub fn run(args: &BenchArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmark attaches eBPF programs and creates network namespaces: run it as root"
        );
    }
    setup::run()?;
    setup::ensure_debian_packages(PACKAGES)?;
    exec(command("cargo").args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "agent",
        "--bin",
        "agent",
        "--example",
        "probe_cost",
        "--example",
        "snapshot_cost",
    ]))?;
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let wants = |part| args.only.is_none_or(|p| p == part);
    let mut results = serde_json::Map::new();
    let machine = machine();
    eprintln!("bench: {machine}");
    results.insert("machine".into(), json!(machine));

    if wants(Part::Connect) || wants(Part::Pods) || wants(Part::Programs) {
        let world = world::BenchWorld::create(crate::lab::cgroup2_root()?)?;
        if wants(Part::Connect) {
            let r = connect::run(&world, args.rounds, args.connects, &dir)?;
            results.insert("connect".into(), r);
        }
        if wants(Part::Pods) {
            let r = pods::run(&world, args.rounds.max(1), args.seconds, &dir)?;
            results.insert("pods".into(), r);
        }
        if wants(Part::Programs) {
            let r = programs::run(&world, args.connects)?;
            results.insert("programs".into(), r);
        }
    }
    if wants(Part::Snapshot) {
        results.insert("snapshot".into(), snapshot::run()?);
    }
    if wants(Part::Storms) {
        results.insert("storms".into(), storms::run(args.storm_scale)?);
    }
    let results = Value::Object(results);
    let text = serde_json::to_string_pretty(&results)?;
    std::fs::write(dir.join("results.json"), &text)?;
    println!("{text}");
    Ok(())
}

/// Kernel and CPU, for the record.
fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("Linux {}, {cpus} CPUs, {model}", kernel.trim())
}
