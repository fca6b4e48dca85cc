//! `cargo xtask bench-agent`: what the kernel programs cost per run, under load the lab's own
//! workloads generate (TCP connects through a Service, DNS lookups, unconnected UDP), measured by
//! the kernel's BPF run-time statistics (`agent --example probe_cost`). Results go in BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::{command, exec, is_root, workspace_root};
use crate::lab::cgroup2_root;
use crate::lab::spec::{DNS_RECORDS, EXTERNAL_IPS, SERVICES, WEB};
use crate::lab::world::World;
use crate::setup;

#[derive(clap::Args)]
pub struct BenchAgentArgs {
    /// TCP connects (and as many UDP datagrams; a tenth as many DNS lookups) the web pod makes.
    #[arg(long, default_value_t = 20_000)]
    pub connects: u32,
}

pub fn run(args: &BenchAgentArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmark attaches eBPF programs and creates network namespaces: run it as root"
        );
    }
    setup::run()?;
    exec(command("cargo").args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "agent",
        "--example",
        "probe_cost",
    ]))?;
    let out = workspace_root().join("target/bench-agent");
    std::fs::create_dir_all(&out)?;
    let world = World::create(cgroup2_root()?, &out)?;
    // Long enough for the traffic; probe_cost prints its figures when the time is up.
    let seconds = (args.connects / 500).max(20);
    let mut probe = Command::new(workspace_root().join("target/release/examples/probe_cost"))
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting probe_cost")?;
    let mut attached = String::new();
    BufReader::new(probe.stderr.take().expect("piped")).read_line(&mut attached)?;
    if !attached.starts_with("attached") {
        let _ = probe.kill();
        let _ = probe.wait();
        bail!("probe_cost did not attach: {attached}");
    }
    let n = args.connects;
    let lookups = n / 10;
    // The api Service (kube-proxy's DNAT to its pod), the external host, the api's DNS name.
    let api = SERVICES
        .iter()
        .find(|s| s.name == "api")
        .context("the lab declares the api Service")?;
    let (api_ip, api_port) = (api.cluster_ip, api.ports[0].1);
    let external = EXTERNAL_IPS[0];
    let (api_name, _) = DNS_RECORDS[0];
    let script = format!(
        "import socket,time\n\
         t=time.monotonic()\n\
         for i in range({n}):\n\
         \x20socket.create_connection(('{api_ip}',{api_port}),timeout=5).close()\n\
         tcp=time.monotonic()-t\n\
         u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({n}): u.sendto(b'x',('{external}',9999))\n\
         for i in range({lookups}): socket.getaddrinfo('{api_name}',{api_port},socket.AF_INET,socket.SOCK_STREAM)\n\
         print(f'{n} TCP connects in {{tcp:.2f}} s, {n} UDP datagrams, {lookups} DNS lookups')\n"
    );
    let traffic = world.in_pod(&WEB, "python3", &["-c", &script]).output()?;
    print!("{}", String::from_utf8_lossy(&traffic.stdout));
    let result = probe.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&result.stdout));
    if !traffic.status.success() || !result.status.success() {
        bail!(
            "the benchmark failed: {}",
            String::from_utf8_lossy(&traffic.stderr)
        );
    }
    Ok(())
}
