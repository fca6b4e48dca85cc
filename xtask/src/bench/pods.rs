//! Throughput and packet rate between two pods on a node bridge, bare and with the agent:
//! `iperf3` bulk TCP, and `iperf3` UDP with 64-byte datagrams at the highest rate the sender
//! reaches (`-b 0`), counted at the receiver. A-B-A rounds, median ratios.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::agent::Agent;
use super::measure::{cpu_ns, median, peak_rss_kib, ratio};
use super::world::BenchWorld;

#[derive(Clone, Copy)]
enum Load {
    /// Bulk TCP; the figure is bits per second received.
    Tcp,
    /// 64-byte UDP datagrams; the figure is datagrams per second received.
    Udp,
}

struct Run {
    /// Bits/s (TCP) or datagrams/s (UDP) at the receiver.
    rate: f64,
    /// The same per CPU second of the sender and the receiver (iperf3's own CPU figures): what
    /// the pods would reach on CPUs of their own, far less disturbed by the rest of a shared
    /// machine than the wall-clock rate.
    cpu_rate: f64,
    /// Datagrams received (UDP), for the agent's CPU per packet.
    packets: u64,
}

pub fn run(world: &BenchWorld, rounds: usize, seconds: u32, dir: &Path) -> Result<Value> {
    let server = IperfServer::start(world)?;
    let mut out = serde_json::Map::new();
    for (name, load) in [("tcp", Load::Tcp), ("udp", Load::Udp)] {
        let mut ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        let mut runs = Vec::new();
        let (mut cpu, mut packets, mut rss) = (0u64, 0u64, 0u64);
        iperf(world, load, 1)?; // warm-up
        for round in 0..rounds {
            let bare1 = iperf(world, load, seconds)?;
            let agent = Agent::start(dir)?;
            let cpu0 = cpu_ns(agent.pid());
            let with = iperf(world, load, seconds)?;
            cpu += cpu_ns(agent.pid()) - cpu0;
            rss = rss.max(peak_rss_kib(agent.pid()));
            agent.stop()?;
            let bare2 = iperf(world, load, seconds)?;
            packets += with.packets;
            ratios.push(ratio(bare1.rate, with.rate, bare2.rate));
            cpu_ratios.push(ratio(bare1.cpu_rate, with.cpu_rate, bare2.cpu_rate));
            eprintln!(
                "bench: {name} round {round}: bare {:.4e}, agent {:.4e}, bare {:.4e}; per CPU second {:.4e}, {:.4e}, {:.4e}",
                bare1.rate, with.rate, bare2.rate, bare1.cpu_rate, with.cpu_rate, bare2.cpu_rate
            );
            runs.push(json!({
                "rate": [bare1.rate, with.rate, bare2.rate],
                "per_cpu_second": [bare1.cpu_rate, with.cpu_rate, bare2.cpu_rate],
            }));
        }
        let mut part = json!({
            "rate_ratio": median(&ratios),
            "ratios": ratios,
            "cpu_rate_ratio": median(&cpu_ratios),
            "cpu_ratios": cpu_ratios,
            "runs": runs,
            "agent_peak_rss_mib": rss as f64 / 1024.0,
        });
        if let Load::Udp = load {
            part["agent_cpu_s_per_million_packets"] =
                json!(cpu as f64 / 1e9 / (packets as f64 / 1e6));
        } else {
            part["agent_cpu_s_per_run"] = json!(cpu as f64 / 1e9 / rounds as f64);
        }
        out.insert(name.to_owned(), part);
    }
    drop(server);
    Ok(Value::Object(out))
}

/// One iperf3 run from the client pod to the server pod.
fn iperf(world: &BenchWorld, load: Load, seconds: u32) -> Result<Run> {
    let mut cmd = world.client.command("iperf3");
    cmd.args(["-c", world.server.ip, "-J", "-t"])
        .arg(seconds.to_string());
    if let Load::Udp = load {
        cmd.args(["-u", "-b", "0", "-l", "64"]);
    }
    let out = cmd
        .output()
        .context("running iperf3 (Debian package iperf3)")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output: {}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(500)
                .collect::<String>()
        )
    })?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let end = &v["end"];
    let cpu = &end["cpu_utilization_percent"];
    // Percent of one CPU over the run, sender plus receiver.
    let cpus = (cpu["host_total"].as_f64().unwrap_or(f64::NAN)
        + cpu["remote_total"].as_f64().unwrap_or(f64::NAN))
        / 100.0;
    Ok(match load {
        Load::Tcp => {
            let rate = end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN);
            Run {
                rate,
                cpu_rate: rate / cpus,
                packets: 0,
            }
        }
        Load::Udp => {
            let sum = &end["sum"];
            let sent = sum["packets"].as_u64().unwrap_or(0);
            let lost = sum["lost_packets"].as_u64().unwrap_or(0);
            let received = sent.saturating_sub(lost);
            let secs = sum["seconds"].as_f64().unwrap_or(f64::NAN);
            let rate = received as f64 / secs;
            Run {
                rate,
                cpu_rate: rate / cpus,
                packets: received,
            }
        }
    })
}

/// `iperf3 -s` in the server pod, for the whole part.
struct IperfServer {
    child: Child,
}

impl IperfServer {
    fn start(world: &BenchWorld) -> Result<IperfServer> {
        let child = world
            .server
            .command("iperf3")
            .args(["-s", "-B", world.server.ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the iperf3 server (Debian package iperf3)")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(IperfServer { child })
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
