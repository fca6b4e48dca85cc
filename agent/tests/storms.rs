//! Root tests: storms and hostile pods. The agent binary runs against pods that open connections
//! to a hundred thousand distinct destinations, flood it with DNS answers (valid, malformed,
//! truncated, compression loops, distinct names by the ten thousand), and churn sockets. It must
//! stay up and answer `/readyz` and `/metrics` throughout, keep its memory bounded, count what it
//! cannot keep, and still report a well-behaved pod's flows exactly.
//!
//! The sizes fit the test command; `EGRESS_STORM_SCALE=10` multiplies them to a million
//! destinations and a million DNS answers, which is how `cargo xtask bench --only storms` runs
//! them (in release), reading the `STORM {json}` line each test prints (peak memory, CPU time).

mod support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flow_model::{FlowRecord, Outcome, Protocol, SourceKind};
use serde_json::json;

use support::agent::{http_get, metric_sum, Agent};
use support::cgroup::{Driver, Qos};
use support::dns::API_NAME;
use support::expect::read_merged;
use support::hosts::*;
use support::pods::{pods_file_json, PodSpec};
use support::traffic::run_client;
use support::{die_with_parent, ChildGuard};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const READY: Duration = Duration::from_secs(90);
/// The agent's flow table (agent_common::FLOW_MAP_ENTRIES) and DNS bounds (agent/src/run.rs,
/// agent/src/dns/tcp.rs).
const FLOW_TABLE: f64 = 65_536.0;
const DNS_NAMES_BOUND: f64 = 200_000.0;
const DNS_TCP_BYTES_BOUND: f64 = (16 << 20) as f64;

fn scale() -> u64 {
    std::env::var("EGRESS_STORM_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(1)
}

fn pod(suffix: &str, index: u8) -> PodSpec {
    PodSpec::new(
        "storm",
        "load",
        "6b7c8d9e0",
        suffix,
        Driver::Systemd,
        Qos::BestEffort,
        index,
    )
}

/// The hosts, a pods file, and the agent (ready).
fn start(pods: Vec<PodSpec>) -> (Hosts, Agent) {
    let hosts = Hosts::build(pods);
    let pods_file = hosts.dir.path().join("pods.json");
    let specs: Vec<PodSpec> = hosts.pods.iter().map(|p| p.spec.clone()).collect();
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    let mut agent = Agent::start(AGENT, hosts.dir.path(), &pods_file);
    agent.wait_ready(READY);
    (hosts, agent)
}

/// Asks `/readyz` and `/metrics` every 100 ms on a thread of its own until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Watched>,
}

#[derive(Debug)]
struct Watched {
    polls: u64,
    failures: Vec<String>,
    slowest: Duration,
}

impl Watch {
    fn start(addr: SocketAddr) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut w = Watched {
                polls: 0,
                failures: Vec::new(),
                slowest: Duration::ZERO,
            };
            while !flag.load(Ordering::Relaxed) {
                for path in ["/readyz", "/metrics"] {
                    let t = Instant::now();
                    let answer = http_get(addr, path);
                    w.slowest = w.slowest.max(t.elapsed());
                    w.polls += 1;
                    match answer {
                        Some((200, _)) => {}
                        other => w.failures.push(format!("{path}: {other:?}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            w
        });
        Watch { stop, handle }
    }

    fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the watch thread")
    }
}

/// Peak resident memory of `pid`, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU time of every thread of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / 1e9
}

/// `python3 -c script args` in the background, its stdout collected.
fn spawn_python(mut cmd: std::process::Command, script: &str, args: &[String]) -> ChildGuard {
    cmd.args(["-c", script])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    ChildGuard {
        name: "load".into(),
        child: cmd.spawn().expect("spawn python3"),
    }
}

/// Waits for a background python to finish successfully; returns its JSON output line.
fn finish_python(mut guard: ChildGuard, timeout: Duration) -> serde_json::Value {
    let child: &mut Child = &mut guard.child;
    let status = support::agent::wait_exit(child, timeout)
        .unwrap_or_else(|| panic!("the load did not finish within {timeout:?}"));
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out = line;
        }
    }
    assert!(status.success(), "the load failed ({status}): {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("load output {out:?}: {e}"))
}

fn ours<'a>(records: &'a [FlowRecord], pod: &PodSpec) -> impl Iterator<Item = &'a FlowRecord> {
    let uid = pod.uid.clone();
    records.iter().filter(move |r| {
        r.source.kind == SourceKind::Pod && r.source.uid.as_deref() == Some(uid.as_str())
    })
}

fn find<'a>(
    records: &'a [FlowRecord],
    pod: &PodSpec,
    ip: &str,
    port: u16,
    protocol: Protocol,
) -> &'a FlowRecord {
    let ip: IpAddr = ip.parse().unwrap();
    ours(records, pod)
        .find(|r| {
            r.destination.ip == ip
                && r.destination.port == port
                && r.destination.protocol == protocol
        })
        .unwrap_or_else(|| panic!("no flow from {} to {ip}:{port}", pod.name))
}

/// The witness: a pod that behaves while the other one storms. Its flows must all arrive.
fn witness_traffic(hosts: &Hosts, index: usize) {
    run_client(
        hosts.pods[index].command("python3"),
        &[
            format!("resolve {API_NAME} 4 443"),
            format!("tcp {MULTI_V4} 80"),
            format!("refused {MULTI_V4} {CLOSED_PORT}"),
            format!("udp-connect {API_V4} {UDP_CONNECT_PORT}"),
        ],
    );
}

fn assert_witness(records: &[FlowRecord], pod: &PodSpec) {
    let api = find(records, pod, API_V4, 443, Protocol::Tcp);
    assert_eq!(api.outcome, Outcome::Established);
    assert_eq!(api.destination.dns_names, [API_NAME]);
    assert_eq!(
        find(records, pod, MULTI_V4, 80, Protocol::Tcp).outcome,
        Outcome::Established
    );
    assert_eq!(
        find(records, pod, MULTI_V4, CLOSED_PORT, Protocol::Tcp).outcome,
        Outcome::Refused
    );
    assert_eq!(
        find(records, pod, API_V4, UDP_CONNECT_PORT, Protocol::Udp).count,
        1
    );
}

/// Connections to `n` distinct destinations (refused: nothing listens there), as fast as one
/// client makes them. Prints `{"attempted": n, "refused": r}`.
const DISTINCT: &str = r#"
import json, socket, sys, ipaddress
n, ports = int(sys.argv[1]), 32
base = int(ipaddress.ip_address("198.18.128.0"))
refused = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    addr = str(ipaddress.ip_address(base + i // ports))
    if s.connect_ex((addr, 1000 + i % ports)) != 0:
        refused += 1
    s.close()
print(json.dumps({"attempted": n, "refused": refused}))
"#;

#[test]
fn a_storm_of_distinct_destinations_is_bounded_counted_and_served_throughout() {
    let n = 100_000 * scale();
    let (hosts, mut agent) = start(vec![pod("d1stn", 0), pod("w1tns", 1)]);
    // Every address of the storm is a host of the world; no port of theirs is open.
    hosts
        .world
        .ip(&["route", "add", "local", "198.18.128.0/17", "dev", "lo"]);
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid);
    let watch = Watch::start(agent.metrics_addr);
    let started = Instant::now();
    let storm = spawn_python(hosts.pods[0].command("python3"), DISTINCT, &[n.to_string()]);
    witness_traffic(&hosts, 1);
    let result = finish_python(storm, Duration::from_secs(600));
    let storm_seconds = started.elapsed().as_secs_f64();
    assert_eq!(result["refused"], json!(n), "{result}");
    // Two flushes, so that the last of the storm is in the table's reading.
    std::thread::sleep(Duration::from_secs(3));
    let watched = watch.finish();
    let metrics = agent.get("/metrics").expect("metrics at the end").1;
    let cpu = cpu_seconds(pid) - cpu0;
    let rss = peak_rss_mib(pid);
    agent.terminate(Duration::from_secs(60));

    assert!(
        watched.failures.is_empty(),
        "/readyz or /metrics failed during the storm: {watched:?}"
    );
    let records = read_merged(&agent.flows_out);
    let reported = ours(&records, &hosts.pods[0].spec)
        .filter(|r| r.destination.port >= 1000 && r.destination.port < 1032)
        .count() as f64;
    let evicted_unreported =
        metric_sum(&metrics, "egress_agent_flows_evicted_unreported_total", "");
    let tracked = metric_sum(&metrics, "egress_agent_flows_tracked", "");
    // Every destination was reported, or counted as evicted before its report: none is lost
    // silently (the counter is the machine's; other tests' evictions only add to it).
    assert!(
        reported + evicted_unreported >= n as f64,
        "{reported} reported + {evicted_unreported} counted < {n}"
    );
    assert!(tracked <= FLOW_TABLE, "{tracked} entries tracked");
    assert_witness(&records, &hosts.pods[1].spec);
    println!(
        "STORM {}",
        json!({
            "test": "distinct_destinations",
            "destinations": n,
            "storm_seconds": storm_seconds,
            "reported": reported,
            "evicted_unreported": evicted_unreported,
            "agent_peak_rss_mib": rss,
            "agent_cpu_seconds": cpu,
            "http_polls": watched.polls,
            "slowest_http_ms": watched.slowest.as_secs_f64() * 1e3,
        })
    );
}

/// Sends DNS answers from port 53 to the hostile pod, as fast as it can: distinct names (valid),
/// random bytes, answers cut in the middle, compression loops, 4.8 kB answers (longer than the
/// kernel copies), some with the TC bit. Prints
/// `{"sent": n}`.
const FLOOD: &str = r#"
import json, os, random, socket, struct, sys
src, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 53))
def name(i):
    return b"".join(bytes([len(p)]) + p for p in (b"f%d" % i, b"flood", b"test")) + b"\0"
def answer(i, records=1, flags=0x8180):
    q = name(i) + struct.pack(">HH", 1, 1)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([198, 18, 200 + i % 50, 1 + i % 250])
    return struct.pack(">HHHHHH", i & 0xffff, flags, 1, records, 0, 0) + q + rr * records
rnd = random.Random(7)
for i in range(n):
    kind = i % 8
    if kind < 4:
        pkt = answer(i)
    elif kind == 4:
        pkt = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200)))
    elif kind == 5:
        full = answer(i, records=20)
        pkt = full[:len(full) // 2]
    elif kind == 6:
        pkt = struct.pack(">HHHHHH", i & 0xffff, 0x8180, 1, 1, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1) + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + b"\x01\x02\x03\x04"
    else:
        # 4.8 kB: longer than the kernel copies (cut), some with the TC bit set.
        pkt = answer(i, records=300, flags=0x8380 if i % 16 == 7 else 0x8180)
    s.sendto(pkt, (dst, port))
print(json.dumps({"sent": n}))
"#;

/// The hostile pod's side: a UDP socket that reads whatever comes until it has been quiet for two
/// seconds, and TCP connections to the world's port 53 that never complete a message. Prints
/// `{"received": n}`.
const SINK: &str = r#"
import json, socket, sys
port, streams, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
u.bind(("0.0.0.0", port))
print(json.dumps({"ready": port}), flush=True)
held = [socket.create_connection((host, 53), timeout=5) for _ in range(streams)]
for c in held:
    c.recv(10)
u.settimeout(2.0)
received = 0
try:
    while True:
        u.recv(65535)
        received += 1
except socket.timeout:
    pass
print(json.dumps({"received": received}))
"#;

/// The world's TCP port 53 for the hostile pod: each connection gets a length prefix announcing
/// 65,535 bytes, ten bytes of them, and is then left open.
const STALL: &str = r#"
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 53)); s.listen(64)
print("ready", flush=True)
keep = []
while True:
    c, _ = s.accept()
    c.sendall(b"\xff\xff" + b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00")
    keep.append(c)
"#;

#[test]
fn a_pod_flooding_dns_answers_is_counted_and_bounded() {
    let n = 100_000 * scale();
    let (hosts, mut agent) = start(vec![pod("h0st1", 0), pod("w2tns", 1)]);
    const FLOODER: &str = "198.18.0.77";
    hosts
        .world
        .ip(&["addr", "add", &format!("{FLOODER}/32"), "dev", "lo"]);
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid);
    let watch = Watch::start(agent.metrics_addr);

    let mut stall_cmd = hosts.world.exec("python3");
    stall_cmd
        .args(["-u", "-c", STALL, FLOODER])
        .stdout(Stdio::piped());
    die_with_parent(&mut stall_cmd);
    let mut stall = ChildGuard {
        name: "stall".into(),
        child: stall_cmd.spawn().unwrap(),
    };
    let mut line = String::new();
    BufReader::new(stall.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let hostile = &hosts.pods[0];
    let mut sink_cmd = hostile.command("python3");
    sink_cmd
        .args(["-u", "-c", SINK, "5300", "20", FLOODER])
        .stdout(Stdio::piped());
    die_with_parent(&mut sink_cmd);
    let mut sink = ChildGuard {
        name: "sink".into(),
        child: sink_cmd.spawn().unwrap(),
    };
    let mut sink_out = BufReader::new(sink.child.stdout.take().unwrap());
    let mut line = String::new();
    sink_out.read_line(&mut line).unwrap();
    assert!(line.contains("ready"), "{line}");

    let started = Instant::now();
    let flood = spawn_python(
        hosts.world.exec("python3"),
        FLOOD,
        &[
            FLOODER.into(),
            hostile.spec.ip4.clone(),
            "5300".into(),
            n.to_string(),
        ],
    );
    witness_traffic(&hosts, 1);
    let sent = finish_python(flood, Duration::from_secs(600));
    assert_eq!(sent["sent"], json!(n));
    let status = support::agent::wait_exit(&mut sink.child, Duration::from_secs(120))
        .expect("the sink to finish");
    assert!(status.success());
    let mut last = String::new();
    for l in sink_out.lines().map_while(Result::ok) {
        last = l;
    }
    let received = serde_json::from_str::<serde_json::Value>(&last).unwrap()["received"]
        .as_f64()
        .unwrap();
    let flood_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let watched = watch.finish();
    let metrics = agent.get("/metrics").expect("metrics at the end").1;
    let cpu = cpu_seconds(pid) - cpu0;
    let rss = peak_rss_mib(pid);
    assert!(agent.running(), "the agent died:\n{}", agent.log_text());
    agent.terminate(Duration::from_secs(60));
    drop(stall);

    assert!(watched.failures.is_empty(), "{watched:?}");
    let answers = |result: &str| {
        metric_sum(
            &metrics,
            "egress_agent_dns_answers_total",
            &format!("result=\"{result}\""),
        )
    };
    let (parsed, rejected, cut) = (answers("parsed"), answers("rejected"), answers("cut"));
    let lost = |reason: &str| {
        metric_sum(
            &metrics,
            "egress_agent_events_lost_total",
            &format!("reason=\"{reason}\""),
        )
    };
    let (ring_full, rate_limited) = (lost("ring_full_dns"), lost("dns_rate_limited"));
    // Every answer the pod received went past the kernel program first: each was handled (parsed,
    // rejected, or named from the part received) or counted as dropped, over the pod's budget or
    // for want of ring space.
    let dropped = ring_full + rate_limited;
    assert!(
        parsed + rejected + cut + dropped >= received,
        "parsed {parsed} + rejected {rejected} + cut {cut} + dropped {dropped} < received {received}"
    );
    // The flood was held to its pod's budget (256 KiB of records a second): the rest of the
    // node's answers kept their room in the ring.
    assert!(rate_limited > 0.0, "{metrics}");
    assert!(
        received > 0.0 && parsed > 0.0 && rejected > 0.0 && cut > 0.0,
        "{metrics}"
    );
    let names = metric_sum(&metrics, "egress_agent_dns_names_cached", "");
    let held = metric_sum(&metrics, "egress_agent_dns_tcp_bytes_held", "");
    assert!(names <= DNS_NAMES_BOUND, "{names} names cached");
    assert!(held <= DNS_TCP_BYTES_BOUND, "{held} bytes held");
    let records = read_merged(&agent.flows_out);
    assert_witness(&records, &hosts.pods[1].spec);
    println!(
        "STORM {}",
        json!({
            "test": "dns_flood",
            "answers_sent": n,
            "answers_received": received,
            "flood_seconds": flood_seconds,
            "parsed": parsed, "rejected": rejected, "cut": cut,
            "rate_limited": rate_limited, "ring_full_dropped": ring_full,
            "names_cached": names,
            "agent_peak_rss_mib": rss,
            "agent_cpu_seconds": cpu,
            "slowest_http_ms": watched.slowest.as_secs_f64() * 1e3,
        })
    );
}

/// Churns sockets: UDP sockets connected and kept open without sending (thousands at a time),
/// refused TCP connects, TCP connects abandoned after 10 ms to a host that never answers, and
/// datagrams to thousands of ports. Prints what it did, for the exact outcome counts.
const CHURN: &str = r#"
import json, resource, socket, sys
rounds, host, closed, blackhole = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
keep = min(5000, hard - 200)
refused = timeouts = 0
for r in range(rounds):
    held = []
    for i in range(keep):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect((host, 20000 + i))
        held.append(u)
    for i in range(2000):
        t = socket.socket()
        if t.connect_ex((host, closed)) != 0:
            refused += 1
        t.close()
    for i in range(30):
        t = socket.socket()
        t.settimeout(0.01)
        try:
            t.connect((blackhole, 443))
        except socket.timeout:
            timeouts += 1
        t.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):
        u.sendto(b"x", (host, 30000 + (r * 3000 + i) % 30000))
    u.close()
    for h in held:
        h.close()
print(json.dumps({"refused": refused, "timeouts": timeouts, "rounds": rounds}))
"#;

#[test]
fn a_pod_churning_sockets_crowds_out_nobody_and_its_outcomes_are_exact() {
    let rounds = 3 * scale();
    let (hosts, mut agent) = start(vec![pod("c3urn", 0), pod("w3tns", 1)]);
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid);
    let watch = Watch::start(agent.metrics_addr);
    let started = Instant::now();
    let churn = spawn_python(
        hosts.pods[0].command("python3"),
        CHURN,
        &[
            rounds.to_string(),
            MULTI_V4.into(),
            CLOSED_PORT.to_string(),
            BLACKHOLE_V4.into(),
        ],
    );
    // The witness connects a UDP socket while thousands of the churner's wait unsent, and sends.
    witness_traffic(&hosts, 1);
    let done = finish_python(churn, Duration::from_secs(900));
    let churn_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let watched = watch.finish();
    let metrics = agent.get("/metrics").expect("metrics at the end").1;
    let cpu = cpu_seconds(pid) - cpu0;
    let rss = peak_rss_mib(pid);
    agent.terminate(Duration::from_secs(60));

    assert!(watched.failures.is_empty(), "{watched:?}");
    let records = read_merged(&agent.flows_out);
    assert_witness(&records, &hosts.pods[1].spec);
    let churner = &hosts.pods[0].spec;
    let refused = find(&records, churner, MULTI_V4, CLOSED_PORT, Protocol::Tcp);
    assert_eq!(refused.outcomes.refused, done["refused"].as_u64().unwrap());
    assert_eq!(refused.count, done["refused"].as_u64().unwrap());
    let blackhole = find(&records, churner, BLACKHOLE_V4, 443, Protocol::Tcp);
    assert_eq!(
        blackhole.outcomes.timeout,
        done["timeouts"].as_u64().unwrap()
    );
    // Connected and never sent: none of those thousands of sockets is a flow.
    assert!(
        ours(&records, churner).all(|r| !(20_000..30_000).contains(&r.destination.port)),
        "a UDP socket that never sent was recorded"
    );
    let tracked = metric_sum(&metrics, "egress_agent_flows_tracked", "");
    assert!(tracked <= FLOW_TABLE);
    assert!(agent.log_text().contains("kernel programs detached"));
    println!(
        "STORM {}",
        json!({
            "test": "socket_churn",
            "rounds": rounds,
            "refused_connects": done["refused"],
            "timed_out_connects": done["timeouts"],
            "churn_seconds": churn_seconds,
            "agent_peak_rss_mib": rss,
            "agent_cpu_seconds": cpu,
            "slowest_http_ms": watched.slowest.as_secs_f64() * 1e3,
        })
    );
}
