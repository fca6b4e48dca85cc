//! Root tests: a connected UDP socket is a flow only once it sends.
//!
//! glibc's getaddrinfo sorts several answers (RFC 6724) by connecting a throwaway UDP socket to
//! each of them and closing it without sending: those connects must leave no flow. Same world as
//! `kernel_probes.rs` (a network namespace, a kubelet-named pod cgroup, cleaned up on drop).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent::kernel::{KernelEvent, Options, Probes};
use agent_common::{Counter, FlowKey, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

mod kernel_world;
use kernel_world::{attach, flows_of, Destination, World, V4, V6};

/// The pod's traffic. `connects`: UDP connects in every combination, with and without sends.
/// `gai`: getaddrinfo of a name with two addresses (from the netns's own hosts file), then one
/// TCP connection to the first answer.
const SCRIPT: &str = r#"
import ctypes, os, socket, sys
from socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM
V4, V6, what = sys.argv[1], sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
def udp(family):
    return socket.socket(family, SOCK_DGRAM)
def disconnect(s):
    # connect() to an AF_UNSPEC address, as getaddrinfo does between two answers of one family.
    sa = (ctypes.c_ubyte * 16)()
    assert libc.connect(s.fileno(), sa, 16) == 0, ctypes.get_errno()
if what == "connects":
    sinks = []
    for family, addr in ((AF_INET, V4), (AF_INET6, V6)):
        k = udp(family); k.bind((addr, 7000)); sinks.append(k)
    # Connected and closed without sending, on both families (getaddrinfo's sorting).
    a = udp(AF_INET); a.connect((V4, 443)); a.getsockname(); a.close()
    b = udp(AF_INET6); b.connect((V6, 443)); b.getsockname(); b.close()
    # One socket connected, disconnected, connected elsewhere, closed: still nothing sent.
    c = udp(AF_INET); c.connect((V4, 444)); disconnect(c); c.connect((V4, 445)); c.close()
    # Reconnected before sending: only the last destination counts, once for two datagrams.
    d = udp(AF_INET); d.connect((V4, 446)); d.connect((V4, 7000))
    d.send(b"1"); d.send(b"2"); d.close()
    e = udp(AF_INET6); e.connect((V6, 7000)); e.send(b"1"); e.send(b"2"); e.close()
    # An IPv4-mapped destination on a dual-stack socket is the IPv4 flow; the kernel sends each
    # datagram with an explicit address (sendmsg4), so each one counts. A pending IPv6 connect
    # of the same socket is forgotten.
    f = udp(AF_INET6); f.connect((V6, 448)); f.connect(("::ffff:" + V4, 7000))
    f.send(b"3"); f.send(b"3"); f.close()
    # Disconnected before sending with an address: the datagram counts, the old connect does not.
    g = udp(AF_INET); g.connect((V4, 447)); disconnect(g); g.sendto(b"4", (V4, 7001)); g.close()
    # Reconnected after sending: each connect that sent counts.
    h = udp(AF_INET); h.connect((V4, 7000)); h.send(b"5"); h.connect((V4, 7002)); h.send(b"6")
    h.close()
    for k in sinks:
        k.close()
    print("connects done")
elif what == "gai":
    listener = socket.socket(AF_INET, SOCK_STREAM)
    listener.bind(("0.0.0.0", 443)); listener.listen(8)
    infos = socket.getaddrinfo("two.example.test", 443, AF_INET, SOCK_STREAM)
    print("answers", ",".join(sorted(i[4][0] for i in infos)))
    s = socket.socket(AF_INET, SOCK_STREAM)
    s.connect(infos[0][4])
    print("connected", infos[0][4][0])
    s.close()
elif what in ("release", "pressure"):
    import resource
    # More sockets connected at once than any table of pending connects would hold (the agent
    # once had a 16,384-entry one), within the open-file limit's hard bound (raised if allowed).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (30000, max(hard, 30000)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100)
    s = udp(AF_INET); s.connect((V4, 7003))
    keep = []
    for i in range(n):
        t = udp(AF_INET); t.connect((V4, 10000 + i % 50000))
        if what == "pressure":
            keep.append(t)
        else:
            t.close()
    s.send(b"x")
    print(what, "sent")
"#;

fn v4(a: Ipv4Addr) -> [u8; 16] {
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&a.octets());
    daddr
}

/// The NewFlow events of `cgroup_id` that arrive within `wait`.
async fn new_flows(
    reader: &mut agent::kernel::EventReader,
    cgroup_id: u64,
    want: usize,
    wait: Duration,
) -> Vec<FlowKey> {
    let mut keys = Vec::new();
    let deadline = Instant::now() + wait;
    while keys.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut batch = Vec::new();
        match tokio::time::timeout(left, reader.next_batch(&mut batch)).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        }
        keys.extend(batch.into_iter().filter_map(|e| match e {
            KernelEvent::NewFlow(k) if k.cgroup_id == cgroup_id => Some(k),
            _ => None,
        }));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_udp_socket_is_a_flow_once_it_sends() {
    let mut probes = attach();
    let mut reader = probes.take_events().unwrap();
    let world = World::new("u");
    let cg = world.pod_cgroup_id();

    let seen = world.run_script(SCRIPT, &["connects"]);
    assert_eq!(seen["connects"], "done");

    let (v4a, v6a) = (v4(V4), V6.octets());
    let expected: BTreeMap<_, _> = [
        // d (two datagrams, one connect), f (IPv4-mapped: two datagrams) and h's first connect.
        ((AF_INET, v4a, 7000, IPPROTO_UDP), 4),
        // e: two datagrams, one connect.
        ((AF_INET6, v6a, 7000, IPPROTO_UDP), 1),
        // g's datagram, sent with an address after the disconnect.
        ((AF_INET, v4a, 7001, IPPROTO_UDP), 1),
        // h's second connect.
        ((AF_INET, v4a, 7002, IPPROTO_UDP), 1),
    ]
    .into_iter()
    .collect();
    let flows = flows_of(&probes, cg);
    let got: BTreeMap<_, _> = flows.iter().map(|(k, v)| (*k, v.count)).collect();
    // Above all, nothing for ports 443-448: connects that never sent.
    assert_eq!(got, expected, "flow table of the pod cgroup");
    for v in flows.values() {
        assert!(
            v.first_seen_ns > 0 && v.first_seen_ns <= v.last_seen_ns,
            "{v:?}"
        );
        assert_eq!((v.established, v.refused, v.timed_out), (0, 0, 0), "{v:?}");
    }

    // Each key announced once, and no other: wait a little past the four for a stray one.
    let mut keys = new_flows(&mut reader, cg, expected.len() + 1, Duration::from_secs(2)).await;
    keys.sort_by_key(|k| (k.family, k.daddr, k.dport, k.protocol));
    let announced: Vec<_> = keys
        .iter()
        .map(|k| (k.family, k.daddr, k.dport, k.protocol))
        .collect();
    assert_eq!(announced, expected.keys().copied().collect::<Vec<_>>());
    let counters = probes.counters().unwrap();
    assert_eq!(counters[Counter::FlowUpdateFailed as usize], 0);
    assert_eq!(counters[Counter::RingFullNewFlow as usize], 0);
}

/// `/etc/netns/<netns>/hosts`, which `ip netns exec` mounts over `/etc/hosts`; removed on drop.
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn new(netns: &str, content: &str) -> NetnsHosts {
        let dir = PathBuf::from("/etc/netns").join(netns);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = NetnsHosts(dir);
        std::fs::write(guard.0.join("hosts"), content).unwrap();
        guard
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getaddrinfo_with_two_answers_leaves_only_the_tcp_flow() {
    let probes = attach();
    let world = World::new("g");
    let cg = world.pod_cgroup_id();
    let answers = [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)];
    for a in answers {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                world.netns(),
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "d0",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _hosts = NetnsHosts::new(
        world.netns(),
        &format!(
            "127.0.0.1 localhost\n{} two.example.test\n{} two.example.test\n",
            answers[0], answers[1]
        ),
    );

    let seen = world.run_script(SCRIPT, &["gai"]);
    assert_eq!(seen["answers"], "198.18.0.10,198.18.0.11");
    let target: Ipv4Addr = seen["connected"].parse().unwrap();

    let flows = flows_of(&probes, cg);
    let keys: Vec<_> = flows.keys().copied().collect();
    assert_eq!(
        keys,
        vec![(AF_INET, v4(target), 443, IPPROTO_TCP)],
        "only the TCP connection, not getaddrinfo's UDP connects: {flows:?}"
    );
    let v = flows.values().next().unwrap();
    assert_eq!((v.count, v.established), (1, 1), "{v:?}");
}

/// The flows of the pod after `what` ran with probes of their own, attached at the pod cgroup.
fn run_with_many_pending_sockets(what: &str) -> BTreeMap<Destination, u64> {
    let world = World::new(&what[..1]);
    let probes = Probes::attach_with(world.pod_cgroup(), Options::default()).unwrap();
    let seen = world.run_script(SCRIPT, &[what]);
    assert_eq!(seen[what], "sent");
    flows_of(&probes, world.pod_cgroup_id())
        .into_iter()
        .map(|(k, v)| (k, v.count))
        .collect()
}

#[test]
fn sockets_connected_without_sending_never_crowd_out_a_pending_connect() {
    // 20,000 sockets connected between a connect and its first datagram, closed or kept open: the
    // pending connect lives in its own socket's storage, so nothing can push it out, and none of
    // them is a flow.
    let want: BTreeMap<_, _> = [((AF_INET, v4(V4), 7003, IPPROTO_UDP), 1)].into();
    assert_eq!(run_with_many_pending_sockets("release"), want);
    assert_eq!(run_with_many_pending_sockets("pressure"), want);
}
