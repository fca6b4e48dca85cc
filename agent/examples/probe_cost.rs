//! Attaches the probes at the cgroup v2 root with the kernel's BPF run-time statistics on, and
//! prints what they cost so far each time a line arrives on stdin, until stdin closes: one JSON
//! object per line with, per program, the verifier's instruction count, the runs and the total
//! run time in ns, and the loss counters. `cargo xtask bench --only programs` drives it around
//! each load and takes the differences. By hand, as root:
//!
//! ```text
//! cargo run --release -p agent --example probe_cost   # then press Enter after some traffic
//! ```

use std::io::BufRead;

use agent::kernel::{enable_run_time_stats, Probes};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let root = agent::cgroup::mount::find_cgroup2_root()?;
    let _stats = enable_run_time_stats()?;
    let mut probes = Probes::attach(&root)?;
    // Taken so that the ring buffer is read (and not full) as in the agent.
    let mut reader = probes.take_events()?;
    eprintln!("attached at {}", root.display());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(()).is_err() {
                break;
            }
        }
    });
    let mut events = Vec::new();
    loop {
        tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    return Ok(());
                }
                reader.drain(&mut events);
                events.clear();
                println!("{}", snapshot(&probes)?);
            }
            r = reader.next_batch(&mut events) => {
                r?;
                events.clear();
            }
        }
    }
}

fn snapshot(probes: &Probes) -> anyhow::Result<serde_json::Value> {
    let programs: Vec<_> = probes
        .program_stats()?
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "insns": s.verified_insns,
                "runs": s.run_count,
                "ns": s.run_time.as_nanos() as u64,
            })
        })
        .collect();
    Ok(json!({"programs": programs, "counters": probes.counters()?.to_vec()}))
}
