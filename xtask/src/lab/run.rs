//! The lab's story, step by step: build the cluster, learn until stable, show what was learned,
//! monitor, and clean up (or keep).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::agent::{free_port, get, Daemon};
use super::graph;
use super::manifest::{Manifest, Runs};
use super::state::{self, Lab};
use super::world::World;
use super::LabArgs;
use crate::cmd::{command, exec, output, workspace_root};
use crate::setup;

/// The service's learning thresholds in the lab: a workload is stable after 4 s without a new
/// edge (Calico's defaults, 2m30s and 10m, are for clusters).
const PROCESSING_INTERVAL: &str = "1s";
const STABILIZATION_PERIOD: &str = "4s";
/// When the CronJob fires, after the traffic starts.
const CRON_AFTER: Duration = Duration::from_secs(2);
/// The longest the lab waits for every workload to be stable.
const LEARNING_LIMIT: Duration = Duration::from_secs(90);
/// The call nobody made while learning, from the workload that makes it.
const PROBE_WORKLOAD: (&str, &str) = ("fulfilment", "worker");
const PROBE_URL: &str = "http://paste.example.test:443/upload";

/// When the lab began building its cluster: each step says how long after that it starts.
static BEGUN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn step(what: &str) {
    let at = BEGUN.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!("\n== [{at:5.1}s] {what}");
}

/// The files of one run.
struct Files {
    out: PathBuf,
}

impl Files {
    fn get(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

pub fn run(args: &LabArgs) -> Result<()> {
    let root = workspace_root();
    let mut lab = Lab::begin()?;
    state::catch_signals();
    let tools = setup::run()?;
    exec(command("cargo").args(["build", "--quiet", "-p", "agent", "-p", "recommender"]))?;
    state::check_interrupted()?;
    let started = *BEGUN.get_or_init(Instant::now);
    let manifest = Manifest::load(&root.join(&args.cluster))?;
    let files = Files {
        out: root.join(&args.out),
    };
    // A fresh start: no store, spool or flows of an earlier run (only the lab's own files go:
    // `--out` may name a directory that holds others).
    std::fs::create_dir_all(&files.out)?;
    for name in [
        "store.redb",
        "flows.jsonl",
        "policies.yaml",
        "lab-graph.svg",
        "token",
    ] {
        let _ = std::fs::remove_file(files.get(name));
    }
    for name in ["spool", "pods"] {
        let _ = std::fs::remove_dir_all(files.get(name));
    }
    std::fs::write(files.get("scheduled.json"), manifest.scheduled())?;
    let token = token()?;
    std::fs::write(files.get("token"), format!("{token}\n"))?;

    step(&format!(
        "building the cluster of {} ({} pods in {} namespaces, CoreDNS, Services, an API server, an internet)",
        args.cluster.display(),
        manifest.pods.len(),
        manifest.pods.iter().map(|p| &p.namespace).collect::<BTreeSet<_>>().len()
    ));
    let world = World::new(&manifest, super::cgroup2_root()?, &files.out)?;
    world.build_network(&mut lab)?;
    for (i, pod) in manifest.pods.iter().enumerate() {
        world.add_pod(&mut lab, pod, i)?;
        println!(
            "  {:<44} {:<15} {}",
            pod.qualified(),
            pod.ip,
            pod.command().join(" ")
        );
    }

    let bin = root.join("target/debug");
    let recommender = bin.join("recommender");
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut cluster_files: Vec<PathBuf> = manifest.files.clone();
    cluster_files.push(files.get("scheduled.json"));
    let serve_cmd = |mode: &str| {
        let mut cmd = Command::new(&recommender);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--mode",
            mode,
        ])
        .arg("--store")
        .arg(files.get("store.redb"))
        .arg("--token-file")
        .arg(files.get("token"))
        .args([
            "--processing-interval",
            PROCESSING_INTERVAL,
            "--stabilization-period",
            STABILIZATION_PERIOD,
        ])
        .arg("--cluster")
        .args(&cluster_files);
        cmd
    };
    step(&format!(
        "recommender serve --mode learn on {url} (the token in {})",
        files.get("token").display()
    ));
    let serve = Daemon::start(
        &mut lab,
        serve_cmd("learn"),
        "recommender (learn)",
        port,
        &files.get("serve-learn.log"),
    )?;

    step("agent run --recommender (ships flows with the token; spools while the service is away)");
    let agent_port = free_port()?;
    let mut agent_cmd = Command::new(bin.join("agent"));
    agent_cmd
        .args([
            "run",
            "--node-name",
            &manifest.node_name,
            "--flush-interval",
            "1",
        ])
        .arg("--pods-file")
        .arg(files.get("scheduled.json"))
        .args(["--recommender", &url])
        .arg("--token-file")
        .arg(files.get("token"))
        .arg("--spool-dir")
        .arg(files.get("spool"))
        .arg("--flows-out")
        .arg(files.get("flows.jsonl"))
        .args(["--metrics-addr", &format!("127.0.0.1:{agent_port}")]);
    let agent = Daemon::start(
        &mut lab,
        agent_cmd,
        "agent",
        agent_port,
        &files.get("agent.log"),
    )?;

    step("the workloads' traffic, until every workload is stable");
    world.start_processes(&mut lab)?;
    let expected: BTreeSet<(String, String)> = manifest
        .pods
        .iter()
        .filter(|p| {
            p.command()
                .iter()
                .any(|a| a == "--call" || a == "--backend")
        })
        .map(|p| (p.namespace.clone(), p.workload.1.clone()))
        .collect();
    learn(&world, &mut lab, &recommender, &url, &files, &expected)?;
    let learned_in = started.elapsed();

    step("recommender status");
    print!(
        "{}",
        recommender_output(&recommender, &["status", "--server", &url], &files)?
    );

    step("recommender export --default-deny --with-ingress (the policies, YAML)");
    let policies = recommender_output(
        &recommender,
        &[
            "export",
            "--server",
            &url,
            "--default-deny",
            "--with-ingress",
        ],
        &files,
    )?;
    std::fs::write(files.get("policies.yaml"), &policies)?;
    println!("{policies}");

    step("kubernetes-validate --strict (Kubernetes 1.37 schemas)");
    exec(
        Command::new(&tools.kubernetes_validate)
            .args(["--strict", "--quiet", "-k", "1.37.0"])
            .arg(files.get("policies.yaml")),
    )?;
    println!("  valid");

    step("recommender verify: do the policies allow every flow the agent saw?");
    let verified = Command::new(&recommender)
        .arg("verify")
        .arg("--cluster")
        .args(&cluster_files)
        .arg("--flows")
        .arg(files.get("flows.jsonl"))
        .arg("--policies")
        .arg(files.get("policies.yaml"))
        .status()?;
    if !verified.success() {
        bail!("the exported policies deny flows the agent saw ({verified})");
    }

    // The store is read offline while the service is down between its two modes.
    serve.stop(&mut lab)?;
    let edges = graph::load(&files.get("store.redb"))?;
    step(&format!(
        "the learned edges, one row per peer and workload ({} rows)",
        edges.len()
    ));
    print!("{}", graph::table(&edges));
    step(&format!(
        "the learned egress graph (SVG: {})",
        files.get("lab-graph.svg").display()
    ));
    std::fs::write(files.get("lab-graph.svg"), graph::svg(&edges))?;
    print!("{}", graph::text(&edges));

    step("recommender serve --mode monitor --baseline policies.yaml (same store, same address)");
    let mut monitor_cmd = serve_cmd("monitor");
    monitor_cmd
        .arg("--baseline")
        .arg(files.get("policies.yaml"));
    let serve = Daemon::start(
        &mut lab,
        monitor_cmd,
        "recommender (monitor)",
        port,
        &files.get("serve-monitor.log"),
    )?;
    monitor(&world, &manifest, port, &token)?;
    let total = started.elapsed();

    if args.keep {
        keep(lab, &world, &manifest, &url, &files)?;
        std::mem::forget((serve, agent));
        return Ok(());
    }
    step("cleaning up");
    agent.stop(&mut lab)?;
    serve.stop(&mut lab)?;
    let record = std::mem::take(&mut lab.state);
    lab.state = record;
    let state_copy = serde_json::to_string(&lab.state)?;
    drop(lab);
    let left = Lab::leftovers(&serde_json::from_str(&state_copy)?);
    if !left.is_empty() {
        bail!("the lab left: {}", left.join(", "));
    }
    println!("  removed every process, network namespace, cgroup and file the lab created");
    step(&format!(
        "lab passed in {:.1} s once built (learning took {:.1} s); files in {}",
        total.as_secs_f64(),
        learned_in.as_secs_f64(),
        files.out.display()
    ));
    Ok(())
}

/// Polls `status` with a progress display until every expected workload is stable; fires the
/// CronJobs on the way.
fn learn(
    world: &World<'_>,
    lab: &mut Lab,
    recommender: &Path,
    url: &str,
    files: &Files,
    expected: &BTreeSet<(String, String)>,
) -> Result<()> {
    let bar = ProgressBar::new(expected.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "  {spinner} [{elapsed_precise}] {bar:30} {pos}/{len} stable  {msg}",
        )
        .expect("a valid template"),
    );
    let begun = Instant::now();
    let mut cron = Vec::new();
    let mut fired = false;
    loop {
        state::check_interrupted()?;
        if !fired && begun.elapsed() >= CRON_AFTER {
            cron = world.fire_cron_jobs(lab)?;
            for (pod, _) in &cron {
                bar.println(format!("  the CronJob fired: pod {pod}"));
            }
            fired = true;
        }
        let report: Value = serde_json::from_str(&recommender_output(
            recommender,
            &["status", "--server", url, "-o", "json"],
            files,
        )?)
        .context("status -o json")?;
        let workloads = report["workloads"].as_array().cloned().unwrap_or_default();
        let state_of = |ns: &str, name: &str| {
            workloads
                .iter()
                .find(|w| w["namespace"] == ns && w["name"] == name)
                .and_then(|w| w["state"].as_str().map(str::to_owned))
        };
        let states: Vec<String> = expected
            .iter()
            .map(|(ns, name)| {
                format!(
                    "{ns}/{name}:{}",
                    state_of(ns, name).unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let stable = expected
            .iter()
            .filter(|(ns, n)| state_of(ns, n).as_deref() == Some("stable"))
            .count();
        bar.set_position(stable as u64);
        bar.set_message(states.join(" "));
        bar.tick();
        if fired && stable == expected.len() {
            bar.finish();
            break;
        }
        if begun.elapsed() > LEARNING_LIMIT {
            bar.abandon();
            bail!(
                "not every workload was stable after {} s: {}",
                LEARNING_LIMIT.as_secs(),
                states.join(" ")
            );
        }
        state::sleep(Duration::from_millis(500))?;
    }
    for (pod, mut child) in cron {
        let status = child.wait()?;
        if !status.success() {
            bail!("the CronJob's pod {pod} failed ({status})");
        }
    }
    Ok(())
}

/// Makes one call nobody made while learning and checks that the unexpected-egress counter of
/// its workload rises by exactly one.
fn monitor(world: &World<'_>, manifest: &Manifest, port: u16, token: &str) -> Result<()> {
    let (ns, workload) = PROBE_WORKLOAD;
    let pod = manifest
        .pods_of(ns, workload)
        .find(|p| p.runs == Runs::Always)
        .with_context(|| format!("no pod of {ns}/{workload} to make the unexpected call from"))?;
    let counter = || -> Result<u64> {
        let (_, body) = get(port, "/metrics", Some(token)).context("GET /metrics")?;
        Ok(unexpected(&body, ns, workload))
    };
    // Whatever the agent spooled while the service restarted is in before the probe.
    state::sleep(Duration::from_secs(3))?;
    let before = counter()?;
    println!("  egress_recommender_unexpected_egress_total{{namespace=\"{ns}\",workload=\"{workload}\"}} {before}");
    println!(
        "  pod {} calls {PROBE_URL}, never called while learning",
        pod.qualified()
    );
    world.run_in_pod(
        pod,
        &[
            "--times".into(),
            "1".into(),
            "--call".into(),
            PROBE_URL.into(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter()? == before {
        if Instant::now() > deadline {
            bail!("the unexpected-egress counter of {ns}/{workload} did not rise within 30 s");
        }
        state::sleep(Duration::from_millis(250))?;
    }
    // Two more flushes of the agent: a second count would show now.
    state::sleep(Duration::from_secs(3))?;
    let after = counter()?;
    println!("  egress_recommender_unexpected_egress_total{{namespace=\"{ns}\",workload=\"{workload}\"}} {after}");
    if after != before + 1 {
        bail!(
            "the unexpected-egress counter of {ns}/{workload} rose by {} instead of 1",
            after - before
        );
    }
    println!("  rose by exactly one");
    Ok(())
}

/// The value of `egress_recommender_unexpected_egress_total` for one workload (0 when absent).
fn unexpected(metrics: &str, namespace: &str, workload: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("egress_recommender_unexpected_egress_total{"))
        .filter(|l| {
            l.contains(&format!("namespace=\"{namespace}\""))
                && l.contains(&format!("workload=\"{workload}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// `--keep`: leaves everything up and says how to look around and how to stop it.
fn keep(lab: Lab, world: &World<'_>, manifest: &Manifest, url: &str, files: &Files) -> Result<()> {
    let token = files.get("token");
    let (ns, workload) = PROBE_WORKLOAD;
    let pod = manifest
        .pods_of(ns, workload)
        .next()
        .unwrap_or(&manifest.pods[0]);
    let notes = [
        format!(
            "the service:  target/debug/recommender status --server {url} --token-file {}",
            token.display()
        ),
        format!(
            "              target/debug/recommender export --server {url} --token-file {}",
            token.display()
        ),
        format!("              curl -s {url}/metrics | grep unexpected_egress"),
        format!(
            "              curl -s -H \"Authorization: Bearer $(cat {})\" {url}/v1/unexpected",
            token.display()
        ),
        format!(
            "the pods:     ip netns list | grep {}   (the node: {}, the internet: {})",
            world.tag,
            world.ns("node"),
            world.ns("inet")
        ),
        format!(
            "a call from {}, in its cgroup and network namespace:",
            pod.qualified()
        ),
        format!(
            "              {}",
            world.shell_line(pod, "--times 1 --call http://paste.example.test:443/again")
        ),
        format!(
            "the files:    {} (store, flows.jsonl, policies.yaml, lab-graph.svg, logs)",
            files.out.display()
        ),
        "stop it:      cargo xtask lab --down".to_owned(),
    ];
    step("the lab is kept running");
    for n in &notes {
        println!("  {n}");
    }
    let mut lab = lab;
    lab.state.notes = notes.to_vec();
    lab.keep()
}

/// Runs `recommender ARGS --token-file F` and returns its standard output.
fn recommender_output(recommender: &Path, args: &[&str], files: &Files) -> Result<String> {
    output(
        Command::new(recommender)
            .args(args)
            .arg("--token-file")
            .arg(files.get("token")),
    )
}

/// A bearer token of 128 random bits.
fn token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_counter_of_one_workload() {
        let metrics = "# HELP x\negress_recommender_unexpected_egress_total{namespace=\"fulfilment\",workload=\"worker\"} 2\negress_recommender_unexpected_egress_total{namespace=\"shop\",workload=\"worker\"} 5\n";
        assert_eq!(super::unexpected(metrics, "fulfilment", "worker"), 2);
        assert_eq!(super::unexpected(metrics, "fulfilment", "api"), 0);
    }
}
