//! The lab's hosts, built from the manifest: a node namespace (a bridge for the pod network, the
//! API server's address, a link to an "internet" namespace), one network namespace and one
//! kubelet-named cgroup per pod, nftables DNAT in each pod for the Services (what kube-proxy
//! does), the cluster DNS (dnsmasq) and each container's command running in its pod. Nothing
//! routes out of the lab: the node's only links are the bridge and the internet namespace, whose
//! only route leads back to the pods. Everything created is recorded in the [`Lab`] first.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use recommender::cluster::{cluster_ips, Cluster};

use super::manifest::{LabPod, Manifest, Runs};
use super::state::Lab;
use crate::cmd::exec;

/// The internet host's side of its link, and the node's.
const INTERNET_GATEWAY: &str = "198.18.0.1";
/// Ports the internet host serves HTTP on, at every address.
const INTERNET_PORTS: [u16; 2] = [80, 443];
/// Where the API server answers on the node's address.
const APISERVER_PORT: u16 = 6443;

pub struct World<'m> {
    pub tag: String,
    manifest: &'m Manifest,
    cgroup_root: PathBuf,
    out: PathBuf,
    /// The program that plays the containers (`xtask lab-pod`).
    xtask: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    exec(Command::new("ip").args(args).stdout(Stdio::null()))
}

impl<'m> World<'m> {
    pub fn new(manifest: &'m Manifest, cgroup_root: PathBuf, out: &Path) -> Result<World<'m>> {
        Ok(World {
            tag: format!("erl{}", std::process::id()),
            manifest,
            cgroup_root,
            out: out.to_owned(),
            xtask: std::env::current_exe().context("finding the xtask binary")?,
        })
    }

    pub fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.tag)
    }

    pub fn pod_ns(&self, pod: &LabPod) -> String {
        self.ns(&pod.name)
    }

    fn add_ns(&self, lab: &mut Lab, which: &str) -> Result<String> {
        let ns = self.ns(which);
        lab.add_netns(&ns)?;
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The node and the internet: bridge, gateway, API server address, internet link.
    pub fn build_network(&self, lab: &mut Lab) -> Result<()> {
        let node = self.add_ns(lab, "node")?;
        in_ns(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{}/32", self.manifest.node_ip),
            "dev",
            "br0",
        ])?;
        let inet = self.add_ns(lab, "inet")?;
        ip(&[
            "link", "add", "eth0", "netns", &inet, "type", "veth", "peer", "name", "v-inet",
            "netns", &node,
        ])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{INTERNET_GATEWAY}/15"),
            "dev",
            "v-inet",
        ])?;
        ip(&["-n", &node, "link", "set", "v-inet", "up"])?;
        for addr in self.internet_addresses() {
            ip(&[
                "-n",
                &inet,
                "addr",
                "add",
                &format!("{addr}/15"),
                "dev",
                "eth0",
            ])?;
        }
        ip(&["-n", &inet, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &inet,
            "route",
            "add",
            "10.244.0.0/16",
            "via",
            INTERNET_GATEWAY,
        ])
    }

    fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self
            .manifest
            .pods
            .first()
            .map_or([10, 244, 1, 0], |p| p.ip.octets());
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The internet's addresses: those the cluster DNS gives names to (`--host-record=NAME,IP`)
    /// that belong to nothing in the cluster.
    pub fn internet_addresses(&self) -> BTreeSet<Ipv4Addr> {
        let cluster = &self.manifest.cluster;
        self.manifest
            .pods
            .iter()
            .flat_map(LabPod::command)
            .filter_map(|arg| {
                let record = arg.strip_prefix("--host-record=")?;
                record.rsplit(',').next()?.parse::<Ipv4Addr>().ok()
            })
            .filter(|ip| {
                let ip = IpAddr::V4(*ip);
                cluster.pod_by_ip(ip).is_none() && cluster.service_by_cluster_ip(ip).is_none()
            })
            .collect()
    }

    /// One pod: its namespace on the bridge, its Services, its resolver and its cgroup.
    pub fn add_pod(&self, lab: &mut Lab, pod: &LabPod, index: usize) -> Result<()> {
        let ns = self.add_ns(lab, &pod.name)?;
        let node = self.ns("node");
        let host_side = format!("v{index}");
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &host_side,
            "netns", &node,
        ])?;
        ip(&[
            "-n", &node, "link", "set", &host_side, "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", pod.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        kube_proxy(&self.manifest.cluster, &ns)?;
        // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf: the pod's resolver is the
        // cluster DNS, with the kubelet's search path.
        let etc = PathBuf::from("/etc/netns").join(&ns);
        lab.add_dir(&etc)?;
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!(
                "nameserver {}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\n",
                self.manifest.dns_ip,
                ns = pod.namespace
            ),
        )?;
        let cgroup = self.cgroup_root.join(pod.cgroup());
        lab.add_cgroup(&cgroup)?;
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating {}", cgroup.display()))?;
        Ok(())
    }

    /// A command run inside a pod: joined to its cgroup, then to its network namespace.
    pub fn in_pod(&self, pod: &LabPod, args: &[String]) -> Command {
        let procs = self.cgroup_root.join(pod.cgroup()).join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec ip netns exec {} \"$@\"",
                procs.display(),
                self.pod_ns(pod)
            ))
            .arg("sh")
            .args(args);
        cmd
    }

    /// A shell command line that runs `xtask lab-pod ARGS` in the pod, for the user to paste.
    pub fn shell_line(&self, pod: &LabPod, args: &str) -> String {
        let procs = self.cgroup_root.join(pod.cgroup()).join("cgroup.procs");
        format!(
            "sh -c 'echo $$ > {} && exec ip netns exec {} {} lab-pod {args}'",
            procs.display(),
            self.pod_ns(pod),
            self.xtask.display()
        )
    }

    /// The container's command as this machine runs it: `lab-pod` is this binary; `dnsmasq`
    /// gets the flags that make it the cluster DNS (listen on the pod's named DNS port, answer
    /// every Service name).
    pub fn container_command(&self, pod: &LabPod) -> Result<Vec<String>> {
        let command = pod.command();
        let (program, args) = command.split_first().context("no command")?;
        Ok(match program.as_str() {
            "lab-pod" => {
                let mut full = vec![self.xtask.display().to_string(), "lab-pod".into()];
                full.extend(args.iter().cloned());
                full
            }
            "dnsmasq" => {
                let port = pod
                    .port_named("dns")
                    .context("the cluster DNS pod has no port named dns")?;
                let mut full: Vec<String> = vec![
                    "dnsmasq".into(),
                    "--keep-in-foreground".into(),
                    "--no-resolv".into(),
                    "--no-hosts".into(),
                    "--bind-interfaces".into(),
                    format!("--listen-address={}", pod.ip),
                    format!("--port={port}"),
                    format!("--pid-file={}", self.out.join("dnsmasq.pid").display()),
                    format!("--log-facility={}", self.out.join("dnsmasq.log").display()),
                ];
                full.extend(service_records(&self.manifest.cluster));
                full.extend(args.iter().cloned());
                full
            }
            other => bail!(
                "pod {}: the lab runs `lab-pod` and `dnsmasq` containers, not {other:?}",
                pod.qualified()
            ),
        })
    }

    fn spawn(&self, lab: &mut Lab, mut cmd: Command, what: &str) -> Result<Child> {
        let log = self
            .out
            .join("pods")
            .join(format!("{}.log", what.replace('/', "_")));
        std::fs::create_dir_all(log.parent().expect("a log directory"))?;
        let log = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C reaches the lab, which stops its processes in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        lab.add_proc(child.id(), what)?;
        Ok(child)
    }

    /// Every long-running container, the internet's servers and the API server.
    pub fn start_processes(&self, lab: &mut Lab) -> Result<()> {
        // Servers first, so that clients find them listening.
        let mut pods: Vec<&LabPod> = self
            .manifest
            .pods
            .iter()
            .filter(|p| p.runs == Runs::Always)
            .collect();
        pods.sort_by_key(|p| p.command().iter().any(|a| a == "--call"));
        for pod in pods {
            let cmd = self.in_pod(pod, &self.container_command(pod)?);
            self.spawn(lab, cmd, &pod.qualified())?;
        }
        for port in INTERNET_PORTS {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.ns("inet")])
                .arg(&self.xtask)
                .args(["lab-pod", "--http", &port.to_string()]);
            self.spawn(lab, cmd, &format!("internet-{port}"))?;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("node")])
            .arg(&self.xtask)
            .args(["lab-pod", "--http", &APISERVER_PORT.to_string()]);
        self.spawn(lab, cmd, "apiserver")?;
        Ok(())
    }

    /// Fires every CronJob once: its Job's pod runs its command to the end.
    pub fn fire_cron_jobs(&self, lab: &mut Lab) -> Result<Vec<(String, Child)>> {
        let mut started = Vec::new();
        for pod in self
            .manifest
            .pods
            .iter()
            .filter(|p| p.runs == Runs::Scheduled)
        {
            let cmd = self.in_pod(pod, &self.container_command(pod)?);
            started.push((pod.qualified(), self.spawn(lab, cmd, &pod.qualified())?));
        }
        Ok(started)
    }

    /// Runs one command to its end in a pod (the monitor step's call).
    pub fn run_in_pod(&self, pod: &LabPod, args: &[String]) -> Result<()> {
        let mut full = vec![self.xtask.display().to_string(), "lab-pod".into()];
        full.extend(args.iter().cloned());
        let status = self.in_pod(pod, &full).status()?;
        if !status.success() {
            bail!(
                "in pod {}: {} failed ({status})",
                pod.qualified(),
                args.join(" ")
            );
        }
        Ok(())
    }
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<()> {
    exec(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args),
    )
}

/// Service ClusterIP:port → a backend's address and targetPort, as kube-proxy's nftables mode
/// does, from the same EndpointSlices the recommender reads.
fn kube_proxy(cluster: &Cluster, ns: &str) -> Result<()> {
    let mut rules = String::from(
        "table ip lab-kube-proxy {\n chain output {\n  type nat hook output priority -100;\n",
    );
    for service in &cluster.services {
        for cluster_ip in cluster_ips(service) {
            let IpAddr::V4(cluster_ip) = cluster_ip else {
                continue;
            };
            for port in service.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let backends = cluster.backends(service, port, IpAddr::V4(cluster_ip));
                if backends.is_empty() {
                    continue;
                }
                let l4 = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                let map: Vec<String> = backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {} . {}", b.ip, b.port))
                    .collect();
                rules += &format!(
                    "  ip daddr {cluster_ip} {l4} dport {} dnat ip to numgen random mod {} map {{ {} }}\n",
                    port.port,
                    backends.len(),
                    map.join(", ")
                );
            }
        }
    }
    rules += " }\n}\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    nft.stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())?;
    if !nft.wait()?.success() {
        bail!("nft rejected the lab's Service rules:\n{rules}");
    }
    Ok(())
}

/// `--host-record` flags for every Service, as CoreDNS's kubernetes plugin answers them.
fn service_records(cluster: &Cluster) -> Vec<String> {
    let mut records = Vec::new();
    for service in &cluster.services {
        let meta = &service.metadata;
        let (Some(name), Some(ns)) = (&meta.name, &meta.namespace) else {
            continue;
        };
        for ip in cluster_ips(service) {
            records.push(format!("--host-record={name}.{ns}.svc.cluster.local,{ip}"));
        }
    }
    records
}
