//! Attaches the probes at the cgroup v2 root for a while and prints what they cost and saw:
//! per-program invocations and mean run time (kernel BPF stats), loss counters, flow table size,
//! events received. Run as root, with traffic of your choice meanwhile:
//!
//! ```text
//! cargo run -p agent --example probe_cost -- 10
//! ```

use std::time::Duration;

use agent::kernel::{enable_run_time_stats, KernelEvent, Probes};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let root = agent::cgroup::mount::find_cgroup2_root()?;
    let _stats = enable_run_time_stats()?;
    let mut probes = Probes::attach(&root)?;
    let mut reader = probes.take_events()?;
    eprintln!("attached at {}; collecting for {secs} s", root.display());

    let (mut flows, mut dns) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut batch = Vec::new();
    while let Ok(r) = tokio::time::timeout_at(deadline, reader.next_batch(&mut batch)).await {
        r?;
        for ev in batch.drain(..) {
            match ev {
                KernelEvent::NewFlow(_) => flows += 1,
                KernelEvent::Dns(_) => dns += 1,
            }
        }
    }

    println!(
        "{:<12} {:>10} {:>12} {:>10}",
        "program", "insns", "runs", "ns/run"
    );
    for s in probes.program_stats()? {
        let per = if s.run_count == 0 {
            0.0
        } else {
            s.run_time.as_nanos() as f64 / s.run_count as f64
        };
        let insns = s.verified_insns.map_or("?".into(), |n| n.to_string());
        println!(
            "{:<12} {:>10} {:>12} {:>10.1}",
            s.name, insns, s.run_count, per
        );
    }
    println!("counters: {:?}", probes.counters()?);
    let started = std::time::Instant::now();
    let entries = probes.flow_table()?.len();
    println!(
        "flow table entries: {entries} (snapshot took {:?})",
        started.elapsed()
    );
    println!(
        "events: {flows} new flows, {dns} DNS answers, {} malformed",
        reader.malformed()
    );
    Ok(())
}
