//! The lab's hosts: a node (a bridge for the pod network, routing to an "internet" host), one
//! network namespace and one kubelet-named cgroup per pod, nftables DNAT in each pod for the
//! Services (what kube-proxy does), CoreDNS as a real DNS server (dnsmasq) in its pod, and real
//! servers. `Drop` removes everything, also after a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use super::spec::{
    PodSpec, API, CLUSTER_DNS_IP, COREDNS, DNS_CNAMES, DNS_RECORDS, EXTERNAL_IPS, LEDGER,
    NODE_BRIDGE_IP, PODS, SERVICES, WEB,
};
use crate::cmd::exec;

pub struct World {
    tag: String,
    cgroup_root: PathBuf,
    namespaces: Vec<String>,
    cgroups: Vec<PathBuf>,
    resolv_dirs: Vec<PathBuf>,
    servers: Vec<Child>,
    out: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    exec(Command::new("ip").args(args))
}

impl World {
    pub fn create(cgroup_root: PathBuf, out: &Path) -> Result<World> {
        let mut world = World {
            tag: format!("erl{}", std::process::id()),
            cgroup_root,
            namespaces: Vec::new(),
            cgroups: Vec::new(),
            resolv_dirs: Vec::new(),
            servers: Vec::new(),
            out: out.to_owned(),
        };
        world.build_network()?;
        for pod in PODS {
            world.add_pod(pod)?;
        }
        world.start_servers()?;
        Ok(world)
    }

    pub fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.tag)
    }

    fn add_ns(&mut self, which: &str) -> Result<String> {
        let ns = self.ns(which);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The node routes between the pod bridge and the internet host; nothing leaves the lab.
    fn build_network(&mut self) -> Result<()> {
        let node = self.add_ns("node")?;
        exec(Command::new("ip").args([
            "netns",
            "exec",
            &node,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]))?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_BRIDGE_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        let inet = self.add_ns("inet")?;
        ip(&[
            "link", "add", "eth0", "netns", &inet, "type", "veth", "peer", "name", "v-inet",
            "netns", &node,
        ])?;
        ip(&["-n", &node, "addr", "add", "198.18.0.1/24", "dev", "v-inet"])?;
        ip(&["-n", &node, "link", "set", "v-inet", "up"])?;
        for addr in EXTERNAL_IPS {
            ip(&[
                "-n",
                &inet,
                "addr",
                "add",
                &format!("{addr}/24"),
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
            "198.18.0.1",
        ])
    }

    fn add_pod(&mut self, pod: &PodSpec) -> Result<()> {
        let ns = self.add_ns(pod.short())?;
        let node = self.ns("node");
        let host_side = format!("v-{}", pod.short());
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
        ip(&["-n", &ns, "route", "add", "default", "via", NODE_BRIDGE_IP])?;
        self.kube_proxy(&ns)?;
        // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf: the pod's resolver is the cluster DNS.
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc)?;
        self.resolv_dirs.push(etc.clone());
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {CLUSTER_DNS_IP}\nsearch {}.svc.cluster.local svc.cluster.local cluster.local\n", pod.namespace),
        )?;
        let cgroup = self.cgroup_root.join(pod.cgroup());
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating {}", cgroup.display()))?;
        self.cgroups.push(cgroup);
        Ok(())
    }

    /// Service ClusterIP:port → backend pod:targetPort, as kube-proxy's nftables mode would.
    fn kube_proxy(&self, ns: &str) -> Result<()> {
        let mut rules = String::from(
            "table ip lab-kube-proxy {\n chain output {\n  type nat hook output priority -100;\n",
        );
        for service in SERVICES {
            for (_, port, target, proto) in service.ports {
                let backend = service
                    .backends()
                    .next()
                    .context("every lab Service has a backend")?;
                let number = backend
                    .port_number(target, proto)
                    .context("every lab targetPort names a container port")?;
                let l4 = proto.to_ascii_lowercase();
                rules += &format!(
                    "  ip daddr {} {l4} dport {port} dnat to {}:{number}\n",
                    service.cluster_ip, backend.ip
                );
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

    /// A command run inside a pod: joined to its cgroup, then to its network namespace.
    pub fn in_pod(&self, pod: &PodSpec, program: &str, args: &[&str]) -> Command {
        let procs = self.cgroup_root.join(pod.cgroup()).join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec ip netns exec {} \"$@\"",
                procs.display(),
                self.ns(pod.short())
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        cmd
    }

    fn spawn(&mut self, mut cmd: Command, what: &str) -> Result<()> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        self.servers.push(child);
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        let mut dns_args = vec![
            "--no-daemon".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            format!("--listen-address={}", COREDNS.ip),
            "--bind-interfaces".to_owned(),
            format!("--port={}", COREDNS.ports[0].1),
            format!("--pid-file={}", self.out.join("coredns.pid").display()),
        ];
        dns_args.extend(
            DNS_RECORDS
                .iter()
                .map(|(name, addr)| format!("--host-record={name},{addr}")),
        );
        dns_args.extend(
            DNS_CNAMES
                .iter()
                .map(|(alias, target)| format!("--cname={alias},{target}")),
        );
        let dns_refs: Vec<&str> = dns_args.iter().map(String::as_str).collect();
        let coredns = self.in_pod(&COREDNS, "dnsmasq", &dns_refs);
        self.spawn(coredns, "CoreDNS (dnsmasq)")?;
        for pod in [&API, &LEDGER] {
            let (_, port, _) = pod.ports[0];
            let cmd = self.in_pod(pod, "python3", &["-c", &tcp_server(&[pod.ip], port)]);
            self.spawn(cmd, pod.name)?;
        }
        let inet = self.ns("inet");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &inet,
            "python3",
            "-c",
            &tcp_server(EXTERNAL_IPS, 443),
        ]);
        self.spawn(cmd, "the internet host")?;
        // Give the servers a moment to bind before anyone calls them.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(())
    }

    /// The workloads' traffic: web calls the api Service and the external API by name; api calls
    /// the ledger in another namespace through its Service.
    pub fn run_traffic(&self) -> Result<()> {
        let web = "import socket\n\
                   for name,port in (('api.shop.svc.cluster.local',80),('www.example.test',443)):\n\
                   \x20for info in socket.getaddrinfo(name,port,socket.AF_INET,socket.SOCK_STREAM):\n\
                   \x20 socket.create_connection(info[4],timeout=5).close()\n";
        let api = "import socket\n\
                   socket.create_connection(('ledger.payments.svc.cluster.local',5432),timeout=5).close()\n";
        for (pod, script) in [(&WEB, web), (&API, api)] {
            let status = self.in_pod(pod, "python3", &["-c", script]).status()?;
            if !status.success() {
                bail!(
                    "the traffic of {}/{} failed ({status})",
                    pod.namespace,
                    pod.name
                );
            }
        }
        Ok(())
    }
}

fn tcp_server(addresses: &[&str], port: u16) -> String {
    let binds: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "import socket,threading\n\
         def serve(a):\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((a,{port}));s.listen()\n while True:\n  c,_=s.accept();c.close()\n\
         ts=[threading.Thread(target=serve,args=(a,)) for a in ({},)]\n\
         [t.start() for t in ts]\n",
        binds.join(",")
    )
}

impl Drop for World {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for dir in &self.resolv_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Each pod's scope and slice; the shared parents go only if nothing else lives there.
        for cgroup in &self.cgroups {
            let mut dir = Some(cgroup.clone());
            while let Some(d) =
                dir.filter(|d| d.starts_with(&self.cgroup_root) && *d != self.cgroup_root)
            {
                if std::fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
}
