//! The lab: the product as users run it, on this one machine.
//!
//! It builds the cluster of `deploy/lab/` (see `manifest`): pods as kubelet-named cgroups with
//! their own network namespaces on a node's bridge, real clients and servers in them (HTTP, a
//! database protocol, DNS lookups by name), the cluster DNS, Services translated by nftables as
//! kube-proxy would, an API server and an "internet" (see `world`). Then it runs the system as a
//! cluster does (see `run`): the agent ships to `recommender serve` in learning mode until every
//! workload is stable, the policies are exported, validated and verified, the learned graph is
//! drawn, and the service is switched to monitor mode, where one call nobody made while learning
//! must raise the unexpected-egress counter of its workload by exactly one. Everything it creates
//! is recorded (see `state`) and removed on success, failure and Ctrl-C, unless `--keep`.

mod agent;
mod graph;
mod manifest;
pub mod pod;
mod run;
mod state;
mod world;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{is_root, output};

#[derive(clap::Args)]
pub struct LabArgs {
    /// Where the lab keeps its files (store, flows, policies, graph, logs).
    #[arg(long, default_value = "target/lab")]
    pub out: PathBuf,
    /// The cluster to build: a directory of Kubernetes YAML.
    #[arg(long, default_value = "deploy/lab")]
    pub cluster: PathBuf,
    /// Leave the lab running to look around; `cargo xtask lab --down` removes it.
    #[arg(long, conflicts_with = "down")]
    pub keep: bool,
    /// Remove a lab left by `--keep` (or by a lab that could not clean up).
    #[arg(long)]
    pub down: bool,
}

impl Default for LabArgs {
    fn default() -> Self {
        LabArgs {
            out: "target/lab".into(),
            cluster: "deploy/lab".into(),
            keep: false,
            down: false,
        }
    }
}

pub fn run(args: &LabArgs) -> Result<()> {
    if !is_root() {
        bail!("the lab attaches eBPF programs, creates network namespaces and cgroups: run it as root");
    }
    if args.down {
        return down();
    }
    run::run(args)
}

/// `--down`: removes what a kept lab left.
fn down() -> Result<()> {
    match state::Lab::resume()? {
        None => {
            println!("no lab is up ({} does not exist)", state::STATE_FILE);
            Ok(())
        }
        Some(lab) => {
            let what = (
                lab.state.procs.len(),
                lab.state.netns.len(),
                lab.state.cgroups.len(),
            );
            lab.down()?;
            println!(
                "lab removed: {} processes, {} network namespaces, {} cgroups",
                what.0, what.1, what.2
            );
            Ok(())
        }
    }
}

/// The cgroup v2 mount, from util-linux's `findmnt` (the agent finds it itself from the mount table).
pub fn cgroup2_root() -> Result<PathBuf> {
    let target = output(Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]))?;
    let first = target.lines().next().context("cgroup v2 is not mounted")?;
    Ok(PathBuf::from(first))
}
