//! The loopback connect storm: what the agent costs connections, beside a peer that sends every
//! connection to user space (Debian's `tcplife`, libbpf-tools).
//!
//! Each round runs the storm bare, with the agent, bare, with tcplife, bare: each tool's rate is
//! taken against the mean of the bare runs around it, and the median over the rounds is reported.
//! With the agent, its CPU time over the storm and its peak RSS are read, and its records are
//! checked: the storm's flow must count every connect exactly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::agent::{counted, Agent};
use super::measure::{cpu_ns, median, peak_rss_kib, ratio};
use super::world::BenchWorld;

/// One storm run.
struct Storm {
    connects: u64,
    seconds: f64,
    /// CPU time of the storm's client and server threads.
    cpu_seconds: f64,
    port: u16,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.connects as f64 / self.seconds
    }

    /// Connections per CPU second of the storm's own threads: the rate it would reach on a CPU
    /// of its own, which the load of other processes on a shared machine disturbs far less.
    fn cpu_rate(&self) -> f64 {
        self.connects as f64 / self.cpu_seconds
    }
}

pub fn run(world: &BenchWorld, rounds: usize, connects: u32, dir: &Path) -> Result<Value> {
    let _tracefs = TraceFs::mount()?;
    let mut agent_ratios = Vec::new();
    let mut tcplife_ratios = Vec::new();
    let mut agent_cpu_ratios = Vec::new();
    let mut tcplife_cpu_ratios = Vec::new();
    let mut runs = Vec::new();
    let (mut agent_cpu, mut agent_connects, mut agent_rss) = (0u64, 0u64, 0u64);
    let (mut tcplife_cpu, mut tcplife_connects, mut tcplife_events) = (0u64, 0u64, 0u64);
    // A warm-up run: the first storm after a pause is slower (caches, page tables).
    storm(world, connects)?;
    for round in 0..rounds {
        let bare1 = storm(world, connects)?;
        let agent = Agent::start(dir)?;
        let cpu0 = cpu_ns(agent.pid());
        let with_agent = storm(world, connects)?;
        let cpu = cpu_ns(agent.pid()) - cpu0;
        let rss = peak_rss_kib(agent.pid());
        let flows = agent.stop()?;
        let seen = counted(&flows, &world.storm.uid, with_agent.port)?;
        if seen != with_agent.connects {
            bail!(
                "the agent counted {seen} of the storm's {} connects (round {round}, {})",
                with_agent.connects,
                flows.display()
            );
        }
        let bare2 = storm(world, connects)?;
        let (with_tcplife, cpu_t, events) = under_tcplife(world, connects)?;
        let bare3 = storm(world, connects)?;

        agent_ratios.push(ratio(bare1.rate(), with_agent.rate(), bare2.rate()));
        tcplife_ratios.push(ratio(bare2.rate(), with_tcplife.rate(), bare3.rate()));
        agent_cpu_ratios.push(ratio(
            bare1.cpu_rate(),
            with_agent.cpu_rate(),
            bare2.cpu_rate(),
        ));
        tcplife_cpu_ratios.push(ratio(
            bare2.cpu_rate(),
            with_tcplife.cpu_rate(),
            bare3.cpu_rate(),
        ));
        agent_cpu += cpu;
        agent_connects += with_agent.connects;
        agent_rss = agent_rss.max(rss);
        tcplife_cpu += cpu_t;
        tcplife_connects += with_tcplife.connects;
        tcplife_events += events;
        eprintln!(
            "bench: connect round {round}: bare {:.0}/s, agent {:.0}/s, bare {:.0}/s, tcplife {:.0}/s, bare {:.0}/s; per CPU second {:.0}, {:.0}, {:.0}, {:.0}, {:.0}",
            bare1.rate(),
            with_agent.rate(),
            bare2.rate(),
            with_tcplife.rate(),
            bare3.rate(),
            bare1.cpu_rate(),
            with_agent.cpu_rate(),
            bare2.cpu_rate(),
            with_tcplife.cpu_rate(),
            bare3.cpu_rate(),
        );
        runs.push(json!({
            "bare": [bare1.rate(), bare2.rate(), bare3.rate()],
            "agent": with_agent.rate(),
            "tcplife": with_tcplife.rate(),
            "bare_per_cpu_second": [bare1.cpu_rate(), bare2.cpu_rate(), bare3.cpu_rate()],
            "agent_per_cpu_second": with_agent.cpu_rate(),
            "tcplife_per_cpu_second": with_tcplife.cpu_rate(),
            "agent_counted": seen,
        }));
    }
    Ok(json!({
        "connects_per_run": connects,
        "rounds": rounds,
        "agent_rate_ratio": median(&agent_ratios),
        "agent_ratios": agent_ratios,
        "tcplife_rate_ratio": median(&tcplife_ratios),
        "tcplife_ratios": tcplife_ratios,
        "agent_cpu_rate_ratio": median(&agent_cpu_ratios),
        "agent_cpu_ratios": agent_cpu_ratios,
        "tcplife_cpu_rate_ratio": median(&tcplife_cpu_ratios),
        "tcplife_cpu_ratios": tcplife_cpu_ratios,
        "agent_cpu_s_per_million_connects": agent_cpu as f64 / 1e9 / (agent_connects as f64 / 1e6),
        "agent_peak_rss_mib": agent_rss as f64 / 1024.0,
        "agent_counts_exact": true,
        "tcplife_cpu_s_per_million_connects": tcplife_cpu as f64 / 1e9 / (tcplife_connects as f64 / 1e6),
        "tcplife_lines_per_connect": tcplife_events as f64 / tcplife_connects as f64,
        "runs": runs,
    }))
}

/// One storm of `connects` in the storm pod.
fn storm(world: &BenchWorld, connects: u32) -> Result<Storm> {
    let exe = std::env::current_exe()?;
    let out = world
        .storm
        .command(exe)
        .args(["bench-worker", "connect-storm", "--connects"])
        .arg(connects.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running the storm")?;
    if !out.status.success() {
        bail!("the storm failed ({})", out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("storm output: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(Storm {
        connects: v["connects"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
        cpu_seconds: v["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        port: v["port"].as_u64().unwrap_or(0) as u16,
    })
}

/// A storm with tcplife running system-wide, its output read (and counted) as a user would pipe
/// it; returns the storm, tcplife's CPU time over it and the lines it printed.
fn under_tcplife(world: &BenchWorld, connects: u32) -> Result<(Storm, u64, u64)> {
    // Line-buffered, as on a terminal: piped, stdio would hold the header (and every line) back
    // until 4 KiB have gathered.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "tcplife"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcplife (Debian package libbpf-tools)")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    // tcplife prints its header once its programs are attached.
    match lines.next() {
        Some(Ok(header)) if header.contains("PID") => {}
        other => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let _ = child.wait();
            bail!("tcplife did not start: {other:?} {err}");
        }
    }
    let printed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&printed);
    let reader = std::thread::spawn(move || {
        for _ in lines.map_while(Result::ok) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let pid = child.id();
    let cpu0 = cpu_ns(pid);
    let result = storm(world, connects);
    // The last events reach tcplife's output within its polling interval.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cpu = cpu_ns(pid) - cpu0;
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = reader.join();
    Ok((result?, cpu, printed.load(Ordering::Relaxed)))
}

/// tracefs at /sys/kernel/tracing, which tcplife needs to attach; mounted if it is not, and
/// unmounted again afterwards only in that case.
struct TraceFs {
    mounted_here: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

impl TraceFs {
    fn mount() -> Result<TraceFs> {
        let mounted = std::fs::read_to_string("/proc/self/mounts")?
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(TRACEFS));
        if mounted {
            return Ok(TraceFs {
                mounted_here: false,
            });
        }
        crate::cmd::exec(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
        Ok(TraceFs { mounted_here: true })
    }
}

impl Drop for TraceFs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
}
