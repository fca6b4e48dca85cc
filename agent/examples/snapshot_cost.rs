//! What reading a full flow table costs: fills the table (its default 65,536 entries) from a
//! cgroup of its own, then reads it by batch (`BPF_MAP_LOOKUP_BATCH`, what the agent does) and
//! entry by entry (what kernels before 5.6 get), five times each, and prints the median times as
//! JSON. `cargo xtask bench --only snapshot` runs it; by hand, as root:
//!
//! ```text
//! cargo run --release -p agent --example snapshot_cost
//! ```

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use agent::kernel::{Options, Probes};

fn main() -> anyhow::Result<()> {
    let root = agent::cgroup::mount::find_cgroup2_root()?;
    let cgroup = root.join(format!("erb-snapshot-{}", std::process::id()));
    std::fs::create_dir(&cgroup)?;
    let result = measure(&cgroup);
    let _ = std::fs::remove_dir(&cgroup);
    println!("{}", result?);
    Ok(())
}

fn measure(cgroup: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let options = Options::default();
    let probes = Probes::attach_with(cgroup, options)?;
    // More distinct destinations than the table holds: 127.0.0.0/8 is all local, each datagram
    // is one new key (and an ICMP error nobody reads).
    let keys = options.flow_entries as usize + 5_000;
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({keys}):\n s.sendto(b'x',('127.%d.%d.%d'%(1+i//65536,(i//256)%256,i%256),9))\n"
    );
    let procs = std::ffi::CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    let mut fill = Command::new("python3");
    fill.args(["-c", &script]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        fill.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    anyhow::ensure!(fill.status()?.success(), "filling the table failed");
    let mut batch = Vec::new();
    let mut by_entry = Vec::new();
    let mut entries = 0;
    for _ in 0..5 {
        let t = Instant::now();
        entries = probes.flow_table()?.len();
        batch.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let n = probes.flow_table_by_entry()?.len();
        by_entry.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            n == entries,
            "the two reads disagree: {n} and {entries} entries"
        );
    }
    batch.sort_by(f64::total_cmp);
    by_entry.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "entries": entries,
        "batch_ms_median": batch[2],
        "by_entry_ms_median": by_entry[2],
        "batch_ms": batch,
        "by_entry_ms": by_entry,
    }))
}
