//! The lab: the whole system on this one machine, no cluster needed.
//!
//! It builds a small world of its own — a "pod" (a kubelet-named cgroup with its own network
//! namespace) and an "outside" host in 198.18.0.0/15 running a real DNS server and real TCP/UDP
//! servers — runs the agent, makes the pod resolve and call the outside, stops the agent with
//! SIGTERM (which flushes every flow) and prints what it recorded. Everything it creates is removed
//! on the way out, also on failure.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{command, exec as run_cmd, is_root, workspace_root};
use crate::setup;

#[derive(clap::Args)]
pub struct LabArgs {
    /// Keep the lab's files (flows, pods file, logs) in this directory.
    #[arg(long, default_value = "target/lab")]
    pub out: PathBuf,
}

const POD_UID: &str = "6f1c2a4e-9b1d-4c53-a8f0-1d2e3f405a6b";
const CONTAINER_ID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904a0b1c2d3e4f5a6b7c8d9e0f1";
const POD_IP: &str = "10.244.1.10";
const POD_GW: &str = "10.244.1.1";
const EXTERNAL_IP: &str = "198.18.0.10";
const DNS_IP: &str = "198.18.0.53";

pub fn run(args: &LabArgs) -> Result<()> {
    if !is_root() {
        bail!("the lab attaches eBPF programs and creates network namespaces: run it as root");
    }
    setup::run()?;
    run_cmd(command("cargo").args(["build", "--quiet", "-p", "agent"]))?;
    let out = workspace_root().join(&args.out);
    std::fs::create_dir_all(&out)?;
    let world = World::create(&out)?;
    let flows = out.join("flows.jsonl");
    let _ = std::fs::remove_file(&flows);
    let agent = world.start_agent(&flows)?;
    world.pod_traffic()?;
    agent.stop()?;
    let text =
        std::fs::read_to_string(&flows).with_context(|| format!("reading {}", flows.display()))?;
    println!("--- flows recorded by the agent ({}):", flows.display());
    print!("{text}");
    let ours = text.lines().filter(|l| l.contains(POD_UID)).count();
    if ours == 0 {
        bail!("the agent recorded no flow from the lab pod");
    }
    println!("--- {ours} flow records from the lab pod");
    Ok(())
}

/// The lab's namespaces, cgroup and servers; `Drop` removes them.
struct World {
    pid: u32,
    out: PathBuf,
    cgroup: PathBuf,
    servers: Vec<Child>,
}

impl World {
    fn ns(&self, which: &str) -> String {
        format!("erlab-{}-{which}", self.pid)
    }

    fn create(out: &Path) -> Result<World> {
        let cgroup_root = cgroup2_root()?;
        let uid_escaped = POD_UID.replace('-', "_");
        let cgroup = cgroup_root.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_escaped}.slice/cri-containerd-{CONTAINER_ID}.scope"
        ));
        let mut world = World {
            pid: std::process::id(),
            out: out.to_owned(),
            cgroup,
            servers: Vec::new(),
        };
        let (pod, ext) = (world.ns("pod"), world.ns("ext"));
        let ip = |args: &[&str]| run_cmd(Command::new("ip").args(args));
        ip(&["netns", "add", &pod])?;
        ip(&["netns", "add", &ext])?;
        ip(&[
            "link", "add", "erlab-p", "netns", &pod, "type", "veth", "peer", "name", "erlab-e",
            "netns", &ext,
        ])?;
        let in_ns =
            |ns: &str, args: &[&str]| run_cmd(Command::new("ip").args(["-n", ns]).args(args));
        in_ns(&pod, &["link", "set", "lo", "up"])?;
        in_ns(&pod, &["link", "set", "erlab-p", "up"])?;
        in_ns(
            &pod,
            &["addr", "add", &format!("{POD_IP}/24"), "dev", "erlab-p"],
        )?;
        in_ns(&pod, &["route", "add", "198.18.0.0/15", "via", POD_GW])?;
        in_ns(&ext, &["link", "set", "lo", "up"])?;
        in_ns(&ext, &["link", "set", "erlab-e", "up"])?;
        in_ns(
            &ext,
            &["addr", "add", &format!("{POD_GW}/24"), "dev", "erlab-e"],
        )?;
        in_ns(
            &ext,
            &["addr", "add", &format!("{EXTERNAL_IP}/32"), "dev", "lo"],
        )?;
        in_ns(&ext, &["addr", "add", &format!("{DNS_IP}/32"), "dev", "lo"])?;
        std::fs::create_dir_all(&world.cgroup)
            .with_context(|| format!("creating {}", world.cgroup.display()))?;
        // The pod's resolver: `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf.
        let etc = PathBuf::from("/etc/netns").join(&pod);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {DNS_IP}\n"))?;
        world.start_servers()?;
        world.write_pods_file()?;
        Ok(world)
    }

    fn start_servers(&mut self) -> Result<()> {
        let ext = self.ns("ext");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ext,
                "dnsmasq",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
            ])
            .arg(format!("--listen-address={DNS_IP}"))
            .args(["--bind-interfaces", "--port=53"])
            .arg(format!("--host-record=api.example.test,{EXTERNAL_IP}"))
            .arg("--cname=www.example.test,api.example.test")
            .arg(format!(
                "--pid-file={}",
                self.out.join("dnsmasq.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq")?;
        self.servers.push(dnsmasq);
        let server = format!(
            "import socket,threading\n\
             def tcp(p):\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{EXTERNAL_IP}',p));s.listen()\n while True:\n  c,_=s.accept();c.close()\n\
             for p in (443,8443): threading.Thread(target=tcp,args=(p,),daemon=True).start()\n\
             u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('{EXTERNAL_IP}',514))\n\
             while True: u.recv(2048)\n"
        );
        let servers = Command::new("ip")
            .args(["netns", "exec", &ext, "python3", "-c", &server])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the lab's servers")?;
        self.servers.push(servers);
        Ok(())
    }

    fn write_pods_file(&self) -> Result<()> {
        let pods = serde_json_pods();
        std::fs::write(self.out.join("pods.json"), pods)?;
        Ok(())
    }

    fn start_agent(&self, flows: &Path) -> Result<Agent> {
        let port = free_port()?;
        let log = std::fs::File::create(self.out.join("agent.log"))?;
        let child = Command::new(workspace_root().join("target/debug/agent"))
            .args(["run", "--node-name", "lab-node", "--flush-interval", "1"])
            .arg("--pods-file")
            .arg(self.out.join("pods.json"))
            .arg("--flows-out")
            .arg(flows)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .stderr(log)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent { child: Some(child) };
        wait_ready(port)?;
        Ok(agent)
    }

    /// Runs the pod's traffic from inside its cgroup and network namespace.
    fn pod_traffic(&self) -> Result<()> {
        let script = format!(
            "import socket\n\
             ip=socket.getaddrinfo('www.example.test',443,socket.AF_INET,socket.SOCK_STREAM)[0][4][0]\n\
             for p in (443,8443):\n s=socket.create_connection((ip,p),timeout=3);s.close()\n\
             try: socket.create_connection(('{EXTERNAL_IP}',9),timeout=3)\n\
             except OSError: pass\n\
             u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.sendto(b'lab',('{EXTERNAL_IP}',514))\n"
        );
        let procs = self.cgroup.join("cgroup.procs");
        let status = Command::new("sh")
            .arg("-c")
            // Join the pod's cgroup first, then its network namespace, then run the client.
            .arg(format!(
                "echo $$ > {} && exec ip netns exec {} python3 -c \"$0\"",
                procs.display(),
                self.ns("pod")
            ))
            .arg(script)
            .status()?;
        if !status.success() {
            bail!("the lab pod's traffic failed ({status})");
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for which in ["pod", "ext"] {
            let ns = self.ns(which);
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        // Remove the cgroup and its now-empty parents that the lab created (kubepods.slice stays
        // if anything else lives there: rmdir only succeeds on empty cgroups).
        let mut dir = Some(self.cgroup.clone());
        while let Some(d) = dir {
            if std::fs::remove_dir(&d).is_err() || !d.to_string_lossy().contains("kubepods") {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
}

struct Agent {
    child: Option<Child>,
}

impl Agent {
    /// SIGTERM, then wait: the agent flushes every flow before it exits.
    fn stop(mut self) -> Result<()> {
        let mut child = self.child.take().expect("agent runs");
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !matches!(signalled, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}; see target/lab/agent.log");
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("cgroup v2 is not mounted")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: lab\r\n\r\n");
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the agent did not become ready within 60 s; see target/lab/agent.log")
}

fn serde_json_pods() -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{{"apiVersion":"v1","kind":"Pod",
"metadata":{{"name":"web-5d8f7c9b4-x2k4q","namespace":"shop","uid":"{POD_UID}",
  "labels":{{"app":"web","pod-template-hash":"5d8f7c9b4"}},
  "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d8f7c9b4","uid":"1","controller":true}}]}},
"spec":{{"nodeName":"lab-node","containers":[{{"name":"web","image":"web"}}]}},
"status":{{"podIP":"{POD_IP}","containerStatuses":[{{"name":"web","containerID":"containerd://{CONTAINER_ID}","image":"web","imageID":"","ready":true,"restartCount":0}}]}}}}]}}"#
    )
}
