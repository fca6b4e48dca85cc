//! The lab: the whole system on this one machine, no cluster needed.
//!
//! It builds a small cluster of its own (see `spec`): pods as kubelet-named cgroups with their own
//! network namespaces, CoreDNS as a real DNS server behind the `kube-dns` ClusterIP, Services
//! translated by nftables as kube-proxy would, and an "internet" host in 198.18.0.0/15. It runs the
//! agent, lets the workloads call each other and the outside by name, stops the agent (SIGTERM
//! flushes every flow), then has the recommender learn policies from those flows, checks them
//! with the official schema validator, verifies that they allow everything observed, and asks the
//! evaluator about a connection nobody made. It exits 0 only when the recommendation verifies,
//! and removes everything it created.

mod agent;
mod cluster;
pub mod spec;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{command, exec, is_root, output, workspace_root};
use crate::setup;
use spec::{LEDGER, NODE_NAME, PODS, WEB};

#[derive(clap::Args)]
pub struct LabArgs {
    /// Where the lab keeps its files (flows, cluster snapshot, policies, logs).
    #[arg(long, default_value = "target/lab")]
    pub out: PathBuf,
}

pub fn run(args: &LabArgs) -> Result<()> {
    if !is_root() {
        bail!("the lab attaches eBPF programs and creates network namespaces: run it as root");
    }
    let tools = setup::run()?;
    exec(command("cargo").args(["build", "--quiet", "-p", "agent", "-p", "recommender"]))?;
    let out = workspace_root().join(&args.out);
    std::fs::create_dir_all(&out)?;
    let file = |name: &str| out.join(name);
    std::fs::write(file("pods.json"), cluster::pods_file())?;
    std::fs::write(file("cluster.json"), cluster::snapshot())?;
    let _ = std::fs::remove_file(file("flows.jsonl"));

    step("building the lab cluster (pods, CoreDNS, Services, an internet host)");
    let world = world::World::create(cgroup2_root()?, &out)?;
    step("running the agent and the workloads' traffic");
    let bin = workspace_root().join("target/debug");
    let agent = agent::Agent::start(
        &bin.join("agent"),
        &file("pods.json"),
        &file("flows.jsonl"),
        &file("agent.log"),
        NODE_NAME,
    )?;
    world.run_traffic()?;
    agent
        .stop()
        .with_context(|| format!("see {}", file("agent.log").display()))?;
    drop(world);

    let flows = std::fs::read_to_string(file("flows.jsonl"))?;
    let ours: Vec<&str> = flows
        .lines()
        .filter(|l| PODS.iter().any(|p| l.contains(p.uid)))
        .collect();
    step(&format!(
        "the agent recorded {} flows from the lab's pods:",
        ours.len()
    ));
    for line in &ours {
        println!("  {line}");
    }
    if ours.is_empty() {
        bail!("the agent recorded no flow from the lab's pods");
    }

    let recommender = bin.join("recommender");
    let inputs = |cmd: &mut Command| {
        cmd.arg("--cluster")
            .arg(file("cluster.json"))
            .arg("--flows")
            .arg(file("flows.jsonl"));
    };
    step("recommended policies (recommender recommend --default-deny --with-ingress):");
    let mut recommend = Command::new(&recommender);
    recommend.args(["recommend", "--default-deny", "--with-ingress"]);
    inputs(&mut recommend);
    let policies = output(&mut recommend)?;
    std::fs::write(file("policies.yaml"), &policies)?;
    println!("{policies}");

    step("schema check (kubernetes-validate --strict, Kubernetes 1.37):");
    exec(
        Command::new(&tools.kubernetes_validate)
            .args(["--strict", "--quiet", "-k", "1.37.0"])
            .arg(file("policies.yaml")),
    )?;
    println!("  valid");

    step("verify: do the policies allow every flow the agent saw?");
    let mut verify = Command::new(&recommender);
    verify
        .arg("verify")
        .arg("--policies")
        .arg(file("policies.yaml"));
    inputs(&mut verify);
    let verified = verify.status()?;

    step("evaluate: a connection nobody made (web → ledger, skipping the api) must be denied:");
    let denied = evaluate(
        &recommender,
        &file("cluster.json"),
        &file("policies.yaml"),
        &WEB,
        &LEDGER,
        5432,
    )?;
    if !verified.success() {
        bail!("the recommendation does not allow everything the agent saw");
    }
    if denied {
        bail!("the recommendation allows a connection that was never observed");
    }
    step(&format!("lab passed; files in {}", out.display()));
    Ok(())
}

/// Runs `recommender evaluate` and returns whether it said `allowed`.
fn evaluate(
    recommender: &Path,
    cluster: &Path,
    policies: &Path,
    from: &spec::PodSpec,
    to: &spec::PodSpec,
    port: u16,
) -> Result<bool> {
    let status = Command::new(recommender)
        .arg("evaluate")
        .arg("--cluster")
        .arg(cluster)
        .arg("--policies")
        .arg(policies)
        .arg("--from")
        .arg(format!("{}/{}", from.namespace, from.name))
        .arg("--to")
        .arg(format!("{}/{}", to.namespace, to.name))
        .arg("--port")
        .arg(port.to_string())
        .status()?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("recommender evaluate failed ({status})"),
    }
}

fn step(what: &str) {
    println!("\n== {what}");
}

/// The cgroup v2 mount, from util-linux's `findmnt` (the agent finds it itself from the mount table).
pub fn cgroup2_root() -> Result<PathBuf> {
    let target = output(Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]))?;
    let first = target.lines().next().context("cgroup v2 is not mounted")?;
    Ok(PathBuf::from(first))
}
