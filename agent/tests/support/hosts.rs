//! The whole test world, built in one call and removed on drop.
//!
//! ```text
//!  pod netns (x3)                 world netns ("router" + external hosts)
//!  eth0 10.244.1.1x/24  ──veth──┐  br0 10.244.1.1/24, fd00:10:244::1/64
//!       fd00:10:244::1x/64      │      10.244.0.1/24 (node network)
//!  node netns                   │  lo  198.18.0.10 api, .11 multi-port, .12 node target,
//!  eth0 10.244.0.2/24   ──veth──┘      .53 dns; 2001:db8::10, 2001:db8::53
//! ```
//! The pods' and node's default routes point at the bridge; the world namespace has no route beyond
//! its own links, so nothing can leave the machine.

use std::process::Command;

use super::cgroup::Cgroup;
use super::dns::Dnsmasq;
use super::netns::{self, Netns};
use super::pods::PodSpec;
use super::servers::Servers;
use super::{require_root, unique_prefix, TempDir};

/// The external host that `api.example.test` (and, through the CNAME, `www.example.test`) names.
pub const API_V4: &str = "198.18.0.10";
/// An external host with several open ports and one closed one.
pub const MULTI_V4: &str = "198.18.0.11";
/// The external host only the node (non-pod) process talks to.
pub const NODE_TARGET_V4: &str = "198.18.0.12";
/// An address in the external range where nothing answers: the world drops what is sent to it
/// (a blackhole route), so a connect to it times out.
pub const BLACKHOLE_V4: &str = "198.18.0.99";
/// The DNS host (dnsmasq).
pub const DNS_V4: &str = "198.18.0.53";
/// The external IPv6 host that `v6.example.test` names.
pub const API_V6: &str = "2001:db8::10";
pub const DNS_V6: &str = "2001:db8::53";

/// Open TCP ports on every external address.
pub const TCP_PORTS: [u16; 4] = [443, 80, 8080, 9000];
/// A port nothing listens on: connects to it are refused.
pub const CLOSED_PORT: u16 = 81;
/// UDP receivers: one for unconnected `sendto`, one for connected sockets.
pub const UDP_SENDTO_PORT: u16 = 9999;
pub const UDP_CONNECT_PORT: u16 = 9998;

/// The node's address on the node network.
pub const NODE_V4: &str = "10.244.0.2";

/// A pod: its metadata, its container's cgroup and its network namespace.
pub struct Pod {
    pub spec: PodSpec,
    // Field order is drop order: the cgroup guard kills the pod's processes before the namespace
    // they use goes away.
    pub cgroup: Cgroup,
    pub netns: Netns,
}

impl Pod {
    /// `program` run inside the pod: in its network namespace (with the test resolver) and in its
    /// container cgroup from before exec.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = self.netns.exec(program);
        self.cgroup.join_on_exec(&mut cmd);
        cmd
    }
}

/// A node process's place: a plain network namespace and a cgroup that is not a pod's.
pub struct NodeHost {
    pub cgroup: Cgroup,
    pub netns: Netns,
}

impl NodeHost {
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = self.netns.exec(program);
        self.cgroup.join_on_exec(&mut cmd);
        cmd
    }
}

/// Everything a test sends to or from. Drop order (field order) is: processes, pods, node, world,
/// temp dir.
pub struct Hosts {
    pub servers: Servers,
    pub dns: Dnsmasq,
    pub pods: Vec<Pod>,
    pub node: NodeHost,
    /// A TCP port, unique to this test process, that only the node process connects to; agents of
    /// parallel tests see the node traffic of every test, and this tells ours apart.
    pub node_port: u16,
    pub world: Netns,
    pub dir: TempDir,
    pub prefix: String,
}

impl Hosts {
    /// Builds the world for `pods`. Any failure panics; guards built so far are dropped on the way
    /// out, so a half-built world is removed too.
    pub fn build(pods: Vec<PodSpec>) -> Hosts {
        require_root();
        netns::sweep_stale();
        let prefix = unique_prefix();
        let dir = TempDir::new(&prefix);

        let world = Netns::new(&format!("{prefix}-world"));
        world.ip(&["link", "add", "br0", "type", "bridge"]);
        for addr in ["10.244.1.1/24", "10.244.0.1/24", "fd00:10:244::1/64"] {
            world.ip(&["addr", "add", addr, "dev", "br0"]);
        }
        world.ip(&["link", "set", "br0", "up"]);
        // The external hosts are addresses on the world's loopback: locally delivered, reachable
        // through the bridge, and needing no `dummy` link type (which some kernels lack).
        for addr in [API_V4, MULTI_V4, NODE_TARGET_V4, DNS_V4] {
            world.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        for addr in [API_V6, DNS_V6] {
            world.ip(&["addr", "add", &format!("{addr}/128"), "dev", "lo"]);
        }
        world.ip(&["route", "add", "blackhole", &format!("{BLACKHOLE_V4}/32")]);
        // The world routes between the node network and the pod network (the node calls a pod's
        // server); it has no link to anywhere else, so forwarding cannot reach the real network.
        world.sysctl("net.ipv4.ip_forward", "1");

        let node_ns = Netns::new(&format!("{prefix}-node"));
        attach(&world, &node_ns, "vnode", NODE_V4, None);
        let node = NodeHost {
            cgroup: Cgroup::create(&format!("{prefix}-node.slice")),
            netns: node_ns,
        };

        let dns = Dnsmasq::start(&world, &[DNS_V4, DNS_V6], API_V4, API_V6, dir.path());
        let node_port = 20000 + (std::process::id() % 30000) as u16;
        let mut tcp_ports = TCP_PORTS.to_vec();
        tcp_ports.push(node_port);
        let servers = Servers::start(&world, &tcp_ports, &[UDP_SENDTO_PORT, UDP_CONNECT_PORT]);
        let mut hosts = Hosts {
            servers,
            dns,
            pods: Vec::new(),
            node,
            node_port,
            world,
            dir,
            prefix,
        };
        for spec in pods {
            hosts.add_pod(spec);
        }
        hosts
    }

    /// Starts one more pod: its namespace on the bridge, its resolver, its container cgroup. Tests
    /// call this after the agent started to see a pod that is newer than the agent.
    pub fn add_pod(&mut self, spec: PodSpec) -> &Pod {
        let i = self.pods.len();
        let ns = Netns::new(&format!("{}-pod{i}", self.prefix));
        attach(
            &self.world,
            &ns,
            &format!("vp{i}"),
            &spec.ip4,
            Some(&spec.ip6),
        );
        ns.set_resolver(DNS_V4);
        let cgroup = Cgroup::create(&spec.cgroup_path());
        self.pods.push(Pod {
            spec,
            cgroup,
            netns: ns,
        });
        &self.pods[i]
    }
}

/// Joins `ns` to the world bridge with a veth pair (`eth0` inside `ns`, `world_end` on the bridge)
/// and routes everything through the bridge. Creating both ends from inside the world namespace
/// keeps the root namespace's interface names out of it, so parallel tests cannot collide.
fn attach(world: &Netns, ns: &Netns, world_end: &str, ip4: &str, ip6: Option<&str>) {
    world.ip(&[
        "link",
        "add",
        world_end,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ]);
    world.ip(&["link", "set", world_end, "master", "br0", "up"]);
    let (gw4, prefix4) = if ip4.starts_with("10.244.0.") {
        ("10.244.0.1", "24")
    } else {
        ("10.244.1.1", "24")
    };
    ns.ip(&["addr", "add", &format!("{ip4}/{prefix4}"), "dev", "eth0"]);
    if let Some(ip6) = ip6 {
        ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
    }
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", gw4]);
    if ip6.is_some() {
        ns.ip(&["-6", "route", "add", "default", "via", "fd00:10:244::1"]);
    }
}
