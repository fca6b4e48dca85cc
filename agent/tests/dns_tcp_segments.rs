//! Root test: a DNS answer over TCP that spans several segments, and the answer after it on the
//! same connection, both give their names.
//!
//! A real DNS server (dnsmasq) answers `www.big.test` with a CNAME chain and 250 addresses (about
//! 4 kB, three segments: the sending side's GSO is turned off, so that the segments reach the pod
//! one by one as they would on a real network), then, on the same connection, `chain.big.test`
//! with a chain of its own. The pod (`dig +tcp +keepopen`) then connects to the address that came
//! last in the long answer and to the one in the second answer. Both flows must carry every name
//! of their chain: the stream was captured whole, in order, and cut into its two messages.

mod support;

use std::time::Duration;

use agent::kernel::{KernelEvent, Probes};
use agent_common::{DNS_FLAG_STREAM_START, IPPROTO_TCP};
use flow_model::{FlowRecord, Protocol, SourceKind};

use support::agent::Agent;
use support::cgroup::{Driver, Qos};
use support::dns::Dnsmasq;
use support::expect::read_merged;
use support::hosts::Hosts;
use support::pods::{pods_file_json, PodSpec};
use support::run;
use support::traffic::run_client;

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
/// The DNS server of this test, beside the world's own.
const BIG_DNS: &str = "198.18.0.54";

#[test]
fn a_long_answer_over_tcp_and_the_chain_after_it_name_their_addresses() {
    let pod = PodSpec::new(
        "shop",
        "web",
        "5d8f7c9b4",
        "t7cp2",
        Driver::Systemd,
        Qos::BestEffort,
        0,
    );
    let hosts = Hosts::build(vec![pod]);
    let world = &hosts.world;
    world.ip(&["addr", "add", &format!("{BIG_DNS}/32"), "dev", "lo"]);
    // Every address of the answers is a host of the world (the servers listen on 0.0.0.0).
    world.ip(&["route", "add", "local", "198.18.3.0/24", "dev", "lo"]);
    world.ip(&["route", "add", "local", "198.18.4.0/24", "dev", "lo"]);
    // One segment per packet from the world to the pod: TCP sizes its packets by the device's
    // GSO limit, so that the answer leaves as MSS-sized segments.
    for dev in ["br0", "vp0"] {
        world.ip(&["link", "set", dev, "gso_max_segs", "1"]);
    }
    let addresses = hosts.dir.path().join("big.hosts");
    let lines: String = (1..=250)
        .map(|i| format!("198.18.3.{i} many.big.test\n"))
        .chain(["198.18.4.1 target.big.test\n".to_owned()])
        .collect();
    std::fs::write(&addresses, lines).unwrap();
    let _dns = Dnsmasq::start_with(
        world,
        &[BIG_DNS],
        &[
            format!("--addn-hosts={}", addresses.display()),
            "--cname=www.big.test,edge.big.test".into(),
            "--cname=edge.big.test,many.big.test".into(),
            "--cname=chain.big.test,c2.big.test".into(),
            "--cname=c2.big.test,target.big.test".into(),
        ],
        hosts.dir.path(),
        "bigdns",
    );

    let pods_file = hosts.dir.path().join("pods.json");
    let specs: Vec<PodSpec> = hosts.pods.iter().map(|p| p.spec.clone()).collect();
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    let mut agent = Agent::start(AGENT, hosts.dir.path(), &pods_file);
    agent.wait_ready(Duration::from_secs(90));
    // Probes of the test's own on the pod's cgroup, to see the pieces the kernel copies.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let mut probes = Probes::attach(hosts.pods[0].cgroup.path()).unwrap();
    let mut reader = probes.take_events().unwrap();

    let pod = &hosts.pods[0];
    let mut dig = pod.command("dig");
    dig.args([
        &format!("@{BIG_DNS}"),
        "+tcp",
        "+keepopen",
        "+noall",
        "+answer",
        "www.big.test",
        "A",
        "chain.big.test",
        "A",
    ]);
    let out = String::from_utf8(run(&mut dig).stdout).unwrap();
    let a_records: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| (f[0], f[4]))
        })
        .collect();
    assert_eq!(a_records.len(), 251, "{out}");
    // The address that came last in the long answer: in its last segment.
    let last = a_records
        .iter()
        .rev()
        .find(|(owner, _)| *owner == "many.big.test.")
        .map(|(_, ip)| ip.to_string())
        .unwrap();
    assert_eq!(
        a_records.last().unwrap(),
        &("target.big.test.", "198.18.4.1")
    );
    run_client(
        pod.command("python3"),
        &[format!("tcp {last} 443"), "tcp 198.18.4.1 443".into()],
    );

    // The pieces: the stream's start, then the long answer in several records, each of them one
    // segment (shorter than the message), and the second answer.
    let mut events = Vec::new();
    support::wait_for("the DNS pieces", Duration::from_secs(10), || {
        reader.drain(&mut events);
        let n = tcp_pieces(&events).count();
        (n >= 5).then_some(())
    });
    let pieces: Vec<_> = tcp_pieces(&events).collect();
    let data: Vec<_> = pieces
        .iter()
        .filter(|d| d.flags & DNS_FLAG_STREAM_START == 0)
        .collect();
    assert_eq!(pieces.len() - data.len(), 1, "one stream start: {pieces:?}");
    let segment_sized = data.iter().filter(|d| d.wire_len <= 1500).count();
    assert!(
        data.len() >= 4 && segment_sized == data.len(),
        "the answer arrived in segments: {:?}",
        data.iter().map(|d| (d.seq, d.wire_len)).collect::<Vec<_>>()
    );
    drop(probes);

    agent.terminate(Duration::from_secs(30));
    let records: Vec<FlowRecord> = read_merged(&agent.flows_out)
        .into_iter()
        .filter(|r| {
            r.source.kind == SourceKind::Pod
                && r.source.uid.as_deref() == Some(hosts.pods[0].spec.uid.as_str())
        })
        .collect();
    let names = |ip: &str| -> Vec<String> {
        records
            .iter()
            .find(|r| {
                r.destination.ip.to_string() == ip
                    && r.destination.port == 443
                    && r.destination.protocol == Protocol::Tcp
            })
            .unwrap_or_else(|| panic!("no flow to {ip}: {records:#?}"))
            .destination
            .dns_names
            .clone()
    };
    assert_eq!(
        names(&last),
        ["edge.big.test", "many.big.test", "www.big.test"]
    );
    assert_eq!(
        names("198.18.4.1"),
        ["c2.big.test", "chain.big.test", "target.big.test"]
    );
}

/// The TCP DNS records of the test's probes (attached at the pod's cgroup: all of them are its).
fn tcp_pieces(events: &[KernelEvent]) -> impl Iterator<Item = &agent::kernel::DnsAnswer> {
    events.iter().filter_map(|e| match e {
        KernelEvent::Dns(d) if d.transport == IPPROTO_TCP => Some(d),
        _ => None,
    })
}
