//! Root tests of the kernel probes against real traffic.
//!
//! Each test builds its own world: a network namespace with a veth pair (198.18.0.1/24 and
//! fd00:e5::1/64), a cgroup named the way the kubelet's systemd driver names a pod's container,
//! servers inside the namespace (in the test's own cgroup), and a client process moved into the
//! pod cgroup before it runs. Every address used belongs to that namespace. A guard removes it
//! all, also when an assertion fails. Several tests attach their own probes at once, which also
//! checks that multi-attach works.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use agent::kernel::{DnsAnswer, Error, KernelEvent, Options, Probes};
use agent_common::{Counter, FlowKey, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

mod kernel_world;
use kernel_world::{attach, attached, flows_of, hex, World, V4, V6};

fn key(cgroup_id: u64, family: u8, addr: &[u8], dport: u16, protocol: u8) -> FlowKey {
    let mut daddr = [0u8; 16];
    daddr[..addr.len()].copy_from_slice(addr);
    FlowKey {
        cgroup_id,
        daddr,
        dport,
        family,
        protocol,
        _pad: [0; 4],
    }
}

/// Collects events until `done` holds for the ones seen so far, or panics after 10 s.
async fn collect_until(
    reader: &mut agent::kernel::EventReader,
    mut done: impl FnMut(&[KernelEvent]) -> bool,
) -> Vec<KernelEvent> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut batch = Vec::new();
        match tokio::time::timeout(left, reader.next_batch(&mut batch)).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("events did not arrive in time; seen: {all:?}"),
        }
        all.extend(batch);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_and_tcp_outcomes_are_attributed_to_the_pod_cgroup() {
    let mut probes = attach();
    let mut reader = probes.take_events().unwrap();
    assert!(matches!(probes.take_events(), Err(Error::EventsTaken)));
    let mut world = World::new("f");
    world.start_servers();
    let cg = world.pod_cgroup_id();

    let seen = world.run_client("flows");
    // What the application saw, to be sure the scenario itself went as planned.
    assert_eq!(seen["8080"], "established");
    assert_eq!(seen["v6-8080"], "established");
    assert_eq!(seen["mapped-8080"], "established");
    assert_eq!(seen["8081"], "refused");
    assert_eq!(seen["v6-8081"], "refused");
    assert_eq!(seen["8082a"], "established");
    assert_eq!(seen["8082b"], "timeout");

    let v4 = V4.octets();
    let v6 = V6.octets();
    let expected: BTreeMap<_, _> = [
        // Two IPv4 connects and one through an IPv4-mapped IPv6 address, recorded as IPv4.
        ((AF_INET, v4.as_slice(), 8080, IPPROTO_TCP), (3, 3, 0, 0)),
        ((AF_INET6, v6.as_slice(), 8080, IPPROTO_TCP), (1, 1, 0, 0)),
        ((AF_INET, v4.as_slice(), 8081, IPPROTO_TCP), (1, 0, 1, 0)),
        // The RST is seen by the ingress program on the IPv6 path too.
        ((AF_INET6, v6.as_slice(), 8081, IPPROTO_TCP), (1, 0, 1, 0)),
        ((AF_INET, v4.as_slice(), 8082, IPPROTO_TCP), (2, 1, 0, 1)),
        ((AF_INET, v4.as_slice(), 8083, IPPROTO_TCP), (1, 1, 0, 0)),
        // Unconnected UDP counts datagrams; connected UDP counts connects that sent (see
        // kernel_udp_connect.rs).
        ((AF_INET, v4.as_slice(), 9999, IPPROTO_UDP), (2, 0, 0, 0)),
        ((AF_INET, v4.as_slice(), 9998, IPPROTO_UDP), (1, 0, 0, 0)),
    ]
    .into_iter()
    .map(|((f, a, p, proto), counts)| {
        let k = key(cg, f, a, p, proto);
        ((k.family, k.daddr, k.dport, k.protocol), counts)
    })
    .collect();

    let flows = flows_of(&probes, cg);
    let got: BTreeMap<_, _> = flows
        .iter()
        .map(|(k, v)| (*k, (v.count, v.established, v.refused, v.timed_out)))
        .collect();
    assert_eq!(got, expected, "flow table of the pod cgroup");
    for v in flows.values() {
        assert!(
            v.first_seen_ns > 0 && v.first_seen_ns <= v.last_seen_ns,
            "{v:?}"
        );
    }

    // Every key is announced once on the ring buffer.
    let want: Vec<FlowKey> = expected
        .keys()
        .map(|(f, a, p, proto)| FlowKey {
            cgroup_id: cg,
            daddr: *a,
            dport: *p,
            family: *f,
            protocol: *proto,
            _pad: [0; 4],
        })
        .collect();
    let events = collect_until(&mut reader, |evs| {
        want.iter().all(|k| evs.contains(&KernelEvent::NewFlow(*k)))
    })
    .await;
    let ours = events
        .iter()
        .filter(|e| matches!(e, KernelEvent::NewFlow(k) if k.cgroup_id == cg))
        .count();
    assert_eq!(ours, want.len(), "one announcement per new key: {events:?}");

    let counters = probes.counters().unwrap();
    assert!(counters[Counter::FlowInserted as usize] >= want.len() as u64);
    assert_eq!(counters[Counter::RingFullNewFlow as usize], 0);
    assert_eq!(counters[Counter::FlowUpdateFailed as usize], 0);
    assert_eq!(reader.malformed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_are_captured_for_the_receiving_socket() {
    let mut probes = attach();
    let mut reader = probes.take_events().unwrap();
    let mut world = World::new("d");
    world.start_servers();
    let cg = world.pod_cgroup_id();

    let seen = world.run_client("dns");
    let udp_answer = hex(&seen["udp"]);
    let tcp_answer = hex(&seen["tcp"]);
    assert_eq!(&udp_answer[..4], &[0x12, 0x34, 0x81, 0x80]);

    let dns_of_pod = |evs: &[KernelEvent]| -> Vec<DnsAnswer> {
        evs.iter()
            .filter_map(|e| match e {
                KernelEvent::Dns(d) if d.cgroup_id == cg => Some(d.clone()),
                _ => None,
            })
            .collect()
    };
    let events = collect_until(&mut reader, |evs| dns_of_pod(evs).len() >= 5).await;
    let all = dns_of_pod(&events);
    assert_eq!(all.len(), 5, "{all:?}");
    // The TCP connection's SYN-ACK announces where its stream starts: one byte after its
    // sequence number, the first byte of the answer that follows.
    let (starts, answers): (Vec<DnsAnswer>, Vec<DnsAnswer>) = all
        .into_iter()
        .partition(|d| d.flags & agent_common::DNS_FLAG_STREAM_START != 0);
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(starts[0].payload.is_empty() && starts[0].transport == IPPROTO_TCP);
    let udp = answers
        .iter()
        .find(|d| d.transport == IPPROTO_UDP && d.family == AF_INET && d.payload.len() < 200)
        .expect("a UDP answer");
    assert_eq!(udp.family, AF_INET);
    assert_eq!(udp.payload, udp_answer);
    assert_eq!(udp.wire_len as usize, udp_answer.len());
    let udp6 = answers
        .iter()
        .find(|d| d.transport == IPPROTO_UDP && d.family == AF_INET6)
        .expect("a UDP answer over IPv6");
    assert_eq!(udp6.payload, hex(&seen["udp6"]));
    assert_eq!(udp6.wire_len as usize, udp6.payload.len());
    // An answer longer than the capture is cut at DNS_CAPTURE_MAX; wire_len tells the real size.
    let big_answer = hex(&seen["big"]);
    assert!(big_answer.len() > agent_common::DNS_CAPTURE_MAX);
    let big = answers
        .iter()
        .find(|d| d.wire_len as usize > agent_common::DNS_CAPTURE_MAX)
        .expect("the long answer");
    assert_eq!(big.wire_len as usize, big_answer.len());
    assert_eq!(big.payload, big_answer[..agent_common::DNS_CAPTURE_MAX]);
    // ... and what was received of it still names the addresses in the part copied.
    let got = agent::dns::parse_payload(big.transport, &big.payload, big.wire_len).unwrap();
    assert!(!got.complete && !got.addrs.is_empty(), "{got:?}");
    // Over TCP the payload is the stream segment: the length prefix, then the message.
    let tcp = answers
        .iter()
        .find(|d| d.transport == IPPROTO_TCP)
        .expect("a TCP answer");
    assert_eq!(tcp.payload, tcp_answer);
    assert_eq!(tcp.wire_len as usize, tcp_answer.len());
    assert_eq!(&tcp.payload[2..], udp_answer.as_slice());
    assert_eq!(
        (tcp.seq, tcp.socket_cookie),
        (starts[0].seq, starts[0].socket_cookie)
    );

    // The queries themselves are flows of the pod: UDP 53 over both families (sendto) and TCP 53.
    let flows = flows_of(&probes, cg);
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&V4.octets());
    assert_eq!(flows.len(), 3, "{flows:?}");
    assert_eq!(flows[&(AF_INET6, V6.octets(), 53, IPPROTO_UDP)].count, 1);
    assert_eq!(flows[&(AF_INET, daddr, 53, IPPROTO_UDP)].count, 2);
    assert_eq!(flows[&(AF_INET, daddr, 53, IPPROTO_TCP)].established, 1);
    assert_eq!(probes.counters().unwrap()[Counter::RingFullDns as usize], 0);
}

#[test]
fn attaching_to_a_directory_that_is_not_cgroup2_says_so() {
    let err = Probes::attach(Path::new("/tmp")).unwrap_err();
    assert!(matches!(err, Error::NoCgroup2(_)), "{err}");
    assert!(err.to_string().contains("cgroup v2"), "{err}");
}

#[test]
fn events_need_a_runtime() {
    let mut probes = attach();
    assert!(matches!(probes.take_events(), Err(Error::NoRuntime)));
}

#[test]
fn several_probes_attach_at_once_and_drop_detaches_them() {
    // A cgroup of this test's own is the attach point, so that parallel tests do not count.
    let world = World::new("a");
    let dir = world.pod_cgroup().to_path_buf();
    // BPF_CGROUP_INET_INGRESS, INET4_CONNECT, INET6_CONNECT, UDP4_SENDMSG, UDP6_SENDMSG,
    // BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_SOCK_RELEASE; and no BPF_CGROUP_SOCK_OPS (3): the
    // outcomes come from per-socket hooks, not from a callback on every TCP state change.
    let types = [0u32, 10, 11, 14, 15, 1, 34];
    // A link is detached when its last fd closes. A child forked by a parallel test holds copies
    // of this process's fds until it execs (they are close-on-exec), hence the short wait.
    let counts = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if types.iter().all(|t| attached(&dir, *t) == n) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert!(counts(0));
    let first = Probes::attach(&dir).unwrap();
    assert!(counts(1));
    assert_eq!(attached(&dir, 3), 0, "no sock_ops program");
    let second = Probes::attach(&dir).unwrap();
    assert!(
        counts(2),
        "a second agent must be able to attach beside the first"
    );
    drop(first);
    assert!(counts(1));
    drop(second);
    assert!(counts(0), "dropping the probes must detach every program");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_table_evicts_and_the_loss_is_counted() {
    // Attached at the pod cgroup itself, so that only this test's traffic reaches this table.
    let world = World::new("e");
    let options = Options {
        flow_entries: 8,
        ..Options::default()
    };
    let mut probes = Probes::attach_with(world.pod_cgroup(), options).unwrap();
    let mut reader = probes.take_events().unwrap();
    world.run_client("many");

    let table = probes.flow_table().unwrap();
    assert!(
        table.len() <= 8,
        "{} entries in an 8-entry table",
        table.len()
    );
    // Read by batch (what the agent does) and entry by entry, the table is the same.
    let sorted = |mut t: Vec<(FlowKey, agent_common::FlowValue)>| {
        t.sort_by_key(|(k, _)| (k.dport, k.cgroup_id));
        t
    };
    assert!(!table.is_empty());
    assert_eq!(
        sorted(table.clone()),
        sorted(probes.flow_table_by_entry().unwrap())
    );
    let counters = probes.counters().unwrap();
    // Every new key was inserted (evicting a colder one) and announced: user space sees 40 flows
    // and can tell that 40 - len were evicted.
    assert_eq!(counters[Counter::FlowInserted as usize], 40);
    assert_eq!(counters[Counter::FlowUpdateFailed as usize], 0);
    let events = collect_until(&mut reader, |evs| evs.len() >= 40).await;
    assert_eq!(events.len(), 40);
}

#[test]
fn without_privileges_the_error_says_what_is_needed() {
    const CHILD: &str = "ER_KERNEL_TEST_UNPRIVILEGED";
    let root = agent::cgroup::mount::find_cgroup2_root().expect("cgroup2 root");
    if std::env::var_os(CHILD).is_some() {
        let err = Probes::attach(&root).unwrap_err();
        assert!(matches!(err, Error::NotRoot), "{err}");
        assert_eq!(
            err.to_string(),
            "must run as root or with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"
        );
        return;
    }
    // Re-run this test as root without any capability: an empty bounding set leaves uid 0 with
    // no effective capabilities after exec.
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_privileges_the_error_says_what_is_needed",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "unprivileged run failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
