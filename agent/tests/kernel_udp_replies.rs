//! Root tests: the replies of an unconnected UDP server are not egress flows, and a client's
//! queries still are.
//!
//! One world (netns, kubelet-style cgroups) with two pods: pod A runs a UDP server that answers
//! every datagram with `sendto` (IPv4 on port 5300, a dual-stack IPv6 socket on 5301); the same
//! client script runs outside any pod (the test's own cgroup) and in pod B. The probes are
//! attached at the world's top cgroup, so that their counters count this world's traffic only.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin},
};

use agent::kernel::{Options, Probes};
use agent_common::{Counter, FlowValue, AF_INET, AF_INET6, IPPROTO_UDP};

mod kernel_world;
use kernel_world::{in_cgroup, parse_lines, World, V4, V6};

/// The server of pod A. Answers every datagram to the peer it came from; on "send PORT" on stdin
/// it sends one datagram of its own, from the IPv4 socket, to V4:PORT (a server that initiates).
const SERVER: &str = r#"
import socket, sys, threading
V4 = sys.argv[1]
def echo(s):
    while True:
        d, peer = s.recvfrom(2048)
        s.sendto(b"re:" + d, peer)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((V4, 5300))
threading.Thread(target=echo, args=(u,), daemon=True).start()
d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
d.bind(("::", 5301))
threading.Thread(target=echo, args=(d,), daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    port = int(line.split()[1])
    u.sendto(b"hello", (V4, port))
    print("sent", port, flush=True)
"#;

/// A client with unconnected sockets: asks, gets the answer, asks again on the same socket.
/// Prints the local port of each socket, the address the server answered to.
const CLIENT: &str = r#"
import socket, sys
V4, V6 = sys.argv[1], sys.argv[2]
def ask(family, addr, port, times):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(5.0)
    for i in range(times):
        s.sendto(b"q%d" % i, (addr, port))
        a, _ = s.recvfrom(2048)
        assert a == b"re:q%d" % i, a
    return s.getsockname()[1]
print("v4", ask(socket.AF_INET, V4, 5300, 2))
print("v6", ask(socket.AF_INET6, V6, 5301, 1))
# IPv4 to the dual-stack socket: it answers to ::ffff:198.18.0.1.
print("mapped", ask(socket.AF_INET, V4, 5301, 1))
"#;

/// Replies the server sends per client run: 2 (v4), 1 (v6), 1 (mapped).
const REPLIES_PER_CLIENT: u64 = 4;

type Flows = BTreeMap<(u8, [u8; 16], u16, u8), FlowValue>;

fn flows_of(probes: &Probes, cgroup_id: u64) -> Flows {
    probes
        .flow_table()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.cgroup_id == cgroup_id)
        .map(|(k, v)| ((k.family, k.daddr, k.dport, k.protocol), v))
        .collect()
}

fn v4_key(port: u16) -> (u8, [u8; 16], u16, u8) {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&V4.octets());
    (AF_INET, a, port, IPPROTO_UDP)
}

fn v6_key(port: u16) -> (u8, [u8; 16], u16, u8) {
    (AF_INET6, V6.octets(), port, IPPROTO_UDP)
}

fn cgroup_id(dir: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir).unwrap())
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(world: &World) -> Server {
        let mut cmd = world.python(SERVER, &[V4.to_string()]);
        in_cgroup(&mut cmd, world.pod_cgroup());
        let mut child = cmd.spawn().expect("spawn server");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            stdin,
            stdout,
        };
        assert_eq!(server.line(), "ready", "server did not start");
        server
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// The server sends a datagram of its own to V4:port.
    fn send_to(&mut self, port: u16) {
        writeln!(self.stdin, "send {port}").unwrap();
        assert_eq!(self.line(), format!("sent {port}"));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs CLIENT in the netns, in `cgroup` (or the test's own one), and returns its local ports.
fn run_client(world: &World, cgroup: Option<&std::path::Path>) -> BTreeMap<String, u16> {
    let mut cmd = world.python(CLIENT, &[V4.to_string(), V6.to_string()]);
    if let Some(dir) = cgroup {
        in_cgroup(&mut cmd, dir);
    }
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lines(&out.stdout)
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect()
}

#[test]
fn udp_server_replies_are_not_flows_but_client_queries_are() {
    let mut world = World::new("u");
    let pod_b = world.add_pod("b");
    let probes = Probes::attach_with(world.top_cgroup(), Options::default()).unwrap();
    let (cg_a, cg_b) = (world.pod_cgroup_id(), cgroup_id(&pod_b));
    let mut server = Server::start(&world);

    let outside = run_client(&world, None);
    let inside = run_client(&world, Some(&pod_b));
    // The server, having answered, sends to a peer that never sent to it: that is egress.
    server.send_to(5399);

    // Pod A answered 8 datagrams and initiated one: only the one is a flow.
    let flows_a = flows_of(&probes, cg_a);
    let ports: Vec<u16> = outside.values().chain(inside.values()).copied().collect();
    for (k, v) in &flows_a {
        assert!(
            !ports.contains(&k.2),
            "a reply was recorded as a flow: {k:?} {v:?}; clients {outside:?} {inside:?}"
        );
    }
    assert_eq!(
        flows_a.keys().copied().collect::<Vec<_>>(),
        vec![v4_key(5399)],
        "flows of the server pod: {flows_a:?}"
    );
    assert_eq!(flows_a[&v4_key(5399)].count, 1);

    let counters = probes.counters().unwrap();
    assert_eq!(
        counters[Counter::UdpRepliesSkipped as usize],
        2 * REPLIES_PER_CLIENT,
        "every reply of the server, and nothing else, is counted as skipped"
    );

    // Pod B asked first: its queries are flows, the second one on the same socket included, even
    // though the server's answer arrived in between.
    let flows_b = flows_of(&probes, cg_b);
    let counts: BTreeMap<_, _> = flows_b.iter().map(|(k, v)| (*k, v.count)).collect();
    let expected: BTreeMap<_, _> = [(v4_key(5300), 2), (v6_key(5301), 1), (v4_key(5301), 1)]
        .into_iter()
        .collect();
    assert_eq!(counts, expected, "flows of the client pod");
}

#[test]
fn a_client_keeps_counting_its_flow_whatever_the_peer_sends_back() {
    // Pod A is the client here: it sends to a peer outside any pod, which answers and then sends
    // once more on its own. Pod A's next datagram to the peer is still counted.
    let world = World::new("v");
    let probes = Probes::attach_with(world.top_cgroup(), Options::default()).unwrap();
    const PEER: &str = r#"
import socket, sys
V4 = sys.argv[1]
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p.bind((V4, 5310))
print("ready", flush=True)
d, peer = p.recvfrom(2048)
p.sendto(b"answer", peer)
p.sendto(b"unsolicited", peer)
d, peer = p.recvfrom(2048)
print("got", d.decode(), flush=True)
"#;
    const POD: &str = r#"
import socket, sys
V4 = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5.0)
s.sendto(b"first", (V4, 5310))
s.recvfrom(2048); s.recvfrom(2048)
s.sendto(b"second", (V4, 5310))
print("done", s.getsockname()[1])
"#;
    let mut peer = world.python(PEER, &[V4.to_string()]).spawn().unwrap();
    let mut peer_out = BufReader::new(peer.stdout.take().unwrap());
    let mut line = String::new();
    peer_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let mut cmd = world.python(POD, &[V4.to_string()]);
    in_cgroup(&mut cmd, world.pod_cgroup());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    line.clear();
    peer_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got second");
    let _ = peer.wait();

    let flows = flows_of(&probes, world.pod_cgroup_id());
    let counts: BTreeMap<_, _> = flows.iter().map(|(k, v)| (*k, v.count)).collect();
    assert_eq!(counts, [(v4_key(5310), 2)].into_iter().collect());
    assert_eq!(
        probes.counters().unwrap()[Counter::UdpRepliesSkipped as usize],
        0
    );
}
