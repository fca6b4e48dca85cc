//! The benchmark's hosts: pods as kubelet-named cgroups with network namespaces of their own.
//!
//! - `storm`: a pod alone in its namespace, for the loopback connect storm (its own loopback, so
//!   nothing else on the machine shares its ports or its traffic);
//! - `client` and `server`: two pods on a node bridge (veth pairs into a `node` namespace, as
//!   bridge CNIs wire pods), for throughput and packet rate between pods.
//!
//! Names carry `erb<pid>`; `Drop` removes every namespace and cgroup, also after a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::exec;

/// One pod of the benchmark.
pub struct Pod {
    pub uid: String,
    pub ip: &'static str,
    netns: String,
    cgroup: PathBuf,
}

pub struct BenchWorld {
    namespaces: Vec<String>,
    cgroups: Vec<PathBuf>,
    cgroup_root: PathBuf,
    pub storm: Pod,
    pub client: Pod,
    pub server: Pod,
}

const NODE_IP: &str = "10.244.9.1";

impl BenchWorld {
    pub fn create(cgroup_root: PathBuf) -> Result<BenchWorld> {
        let tag = format!("erb{}", std::process::id());
        let mut world = BenchWorld {
            namespaces: Vec::new(),
            cgroups: Vec::new(),
            cgroup_root,
            storm: placeholder(),
            client: placeholder(),
            server: placeholder(),
        };
        world.storm = world.pod(&tag, "storm", "127.0.0.1")?;
        // Every ephemeral port for the storm's client, reused as soon as the kernel allows.
        sysctl(
            &world.storm.netns,
            "net.ipv4.ip_local_port_range",
            "1024 65000",
        )?;
        let node = format!("{tag}-node");
        add_ns(&mut world.namespaces, &node)?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        world.client = world.pod(&tag, "client", "10.244.9.10")?;
        world.server = world.pod(&tag, "server", "10.244.9.20")?;
        for (i, pod) in [&world.client, &world.server].into_iter().enumerate() {
            let host_side = format!("vb{i}");
            ip(&[
                "link", "add", "eth0", "netns", &pod.netns, "type", "veth", "peer", "name",
                &host_side, "netns", &node,
            ])?;
            ip(&[
                "-n", &node, "link", "set", &host_side, "master", "br0", "up",
            ])?;
            ip(&[
                "-n",
                &pod.netns,
                "addr",
                "add",
                &format!("{}/24", pod.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod.netns, "link", "set", "eth0", "up"])?;
        }
        Ok(world)
    }

    /// A pod: its namespace (loopback up) and its container's cgroup, as the kubelet's systemd
    /// driver names them.
    fn pod(&mut self, tag: &str, name: &str, ip: &'static str) -> Result<Pod> {
        let netns = format!("{tag}-{name}");
        add_ns(&mut self.namespaces, &netns)?;
        let n = self.cgroups.len() + 1;
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        let cgroup = self.cgroup_root.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{:064x}.scope",
            uid.replace('-', "_"),
            n
        ));
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating {}", cgroup.display()))?;
        self.cgroups.push(cgroup.clone());
        Ok(Pod {
            uid,
            ip,
            netns,
            cgroup,
        })
    }
}

impl Pod {
    /// `program args...` inside the pod: in its cgroup from before exec, in its namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = self.cgroup.join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec ip netns exec {} \"$@\"",
                procs.display(),
                self.netns
            ))
            .arg("sh")
            .arg(program);
        cmd
    }
}

fn placeholder() -> Pod {
    Pod {
        uid: String::new(),
        ip: "",
        netns: String::new(),
        cgroup: PathBuf::new(),
    }
}

fn ip(args: &[&str]) -> Result<()> {
    exec(Command::new("ip").args(args))
}

fn add_ns(namespaces: &mut Vec<String>, name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    namespaces.push(name.to_owned());
    ip(&["-n", name, "link", "set", "lo", "up"])
}

fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    exec(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "sh",
        "-c",
        "echo \"$1\" > \"$2\"",
        "sh",
        value,
        &path,
    ]))
}

impl Drop for BenchWorld {
    fn drop(&mut self) {
        for cgroup in &self.cgroups {
            // Whatever still runs in a pod (a killed worker) goes first: rmdir needs it empty.
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for cgroup in &self.cgroups {
            remove_up_to(cgroup, &self.cgroup_root);
        }
    }
}

/// Removes `dir` and its empty parents below `root` (the kubelet's shared slices stay while
/// another pod, of another test or a real kubelet, uses them).
fn remove_up_to(dir: &Path, root: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && dir.exists() {
        if std::time::Instant::now() > deadline {
            eprintln!("bench: cannot remove {}", dir.display());
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut parent = dir.parent();
    while let Some(p) = parent.filter(|p| p.starts_with(root) && *p != root) {
        if std::fs::remove_dir(p).is_err() {
            break;
        }
        parent = p.parent();
    }
}
