//! What each kernel program costs per run, under the benchmark's loads, as the kernel measures it
//! (`BPF_ENABLE_STATS` run-time statistics, the same figures `bpftool prog` shows), and what
//! that comes to per connection and per packet: the profile behind the ratios of `connect` and
//! `pods`.
//!
//! `agent --example probe_cost` attaches the programs at the root with the statistics on and
//! prints them whenever asked; the part asks before and after each load and takes differences.
//! The statistics themselves add a little to every run (two clock reads).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::world::BenchWorld;
use crate::cmd::workspace_root;

pub fn run(world: &BenchWorld, connects: u32) -> Result<Value> {
    let mut probe = Command::new(workspace_root().join("target/release/examples/probe_cost"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting probe_cost")?;
    let mut stdin = probe.stdin.take().expect("piped");
    let mut stdout = BufReader::new(probe.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(probe.stderr.take().expect("piped"));
    let mut attached = String::new();
    stderr.read_line(&mut attached)?;
    if !attached.starts_with("attached") {
        let _ = probe.kill();
        bail!("probe_cost did not attach: {attached}");
    }
    let mut snap = || -> Result<Value> {
        writeln!(stdin)?;
        let line = stdout.next().context("probe_cost ended")??;
        Ok(serde_json::from_str(&line)?)
    };
    let server = world
        .server
        .command("iperf3")
        .args(["-s", "-B", world.server.ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut phases = serde_json::Map::new();
    let s0 = snap()?;
    let storm = world
        .storm
        .command(std::env::current_exe()?)
        .args(["bench-worker", "connect-storm", "--connects"])
        .arg(connects.to_string())
        .output()?;
    let s1 = snap()?;
    phases.insert(
        "connect_storm".into(),
        per_unit(&s0, &s1, connects as f64, "connection"),
    );
    for (name, extra) in [
        ("udp_64b", &["-u", "-b", "0", "-l", "64"][..]),
        ("tcp_bulk", &[][..]),
    ] {
        let before = snap()?;
        let out = world
            .client
            .command("iperf3")
            .args(["-c", world.server.ip, "-J", "-t", "3"])
            .args(extra)
            .output()?;
        let after = snap()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // Packets the programs saw: both directions of the pod pair, counted by the kernel
        // itself as runs of the per-packet programs.
        let packets = if name == "udp_64b" {
            let sum = &v["end"]["sum"];
            sum["packets"].as_f64().unwrap_or(f64::NAN)
        } else {
            f64::NAN
        };
        phases.insert(
            name.into(),
            per_unit(&before, &after, packets, "datagram sent"),
        );
    }
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    drop(stdin);
    let _ = probe.wait();
    if !storm.status.success() {
        bail!("the storm failed");
    }
    Ok(Value::Object(phases))
}

/// The differences between two snapshots, per program, and per `unit` when `units` is known.
fn per_unit(before: &Value, after: &Value, units: f64, unit: &str) -> Value {
    let programs = after["programs"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let (mut total_runs, mut total_ns) = (0.0, 0.0);
    for p in programs {
        let name = p["name"].as_str().unwrap_or("?");
        let old = before["programs"]
            .as_array()
            .and_then(|a| a.iter().find(|q| q["name"] == name).cloned())
            .unwrap_or_default();
        let runs = p["runs"].as_f64().unwrap_or(0.0) - old["runs"].as_f64().unwrap_or(0.0);
        let ns = p["ns"].as_f64().unwrap_or(0.0) - old["ns"].as_f64().unwrap_or(0.0);
        total_runs += runs;
        total_ns += ns;
        rows.push(json!({
            "program": name,
            "insns": p["insns"],
            "runs": runs,
            "ns_per_run": if runs > 0.0 { ns / runs } else { 0.0 },
            format!("runs_per_{}", unit.replace(' ', "_")): runs / units,
            format!("ns_per_{}", unit.replace(' ', "_")): ns / units,
        }));
    }
    json!({
        "units": units,
        "programs": rows,
        format!("ns_per_{}", unit.replace(' ', "_")): total_ns / units,
        format!("runs_per_{}", unit.replace(' ', "_")): total_runs / units,
    })
}
