//! Root tests of the agent binary across its life: connections that were open before it started,
//! and delivery to the recommender through SIGTERM, SIGKILL and restarts, with the test hosts of
//! `support/` (network namespaces, kubelet-named pod cgroups) and the ingest stand-in of
//! `support/recommender.rs` on the loopback address.
//!
//! Every agent on the machine sees every connection on it, so each test keeps only the records of
//! its own pods (by UID).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flow_model::{FlowRecord, Outcome, Protocol, SourceKind};

use support::agent::{agent_command, free_port, http_get, metric_sum, wait_exit};
use support::expect::{merge, read_merged};
use support::hosts::*;
use support::pods::{pods_file_json, test_pods, PodSpec};
use support::recommender::Recommender;
use support::{die_with_parent, wait_for, ChildGuard};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "lifecycle-test-token";

/// An agent started with extra flags; killed on drop.
struct RunningAgent {
    child: ChildGuard,
    metrics: SocketAddr,
    log: PathBuf,
}

impl RunningAgent {
    fn start(dir: &Path, name: &str, pods_file: &Path, flows_out: &Path, extra: &[&str]) -> Self {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = agent_command(AGENT, pods_file, flows_out, metrics);
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn the agent");
        let mut agent = RunningAgent {
            child: ChildGuard {
                name: "agent".into(),
                child,
            },
            metrics,
            log,
        };
        let addr = agent.metrics;
        wait_for("the agent's /readyz", READY_TIMEOUT, || {
            if let Ok(Some(status)) = agent.child.child.try_wait() {
                panic!("the agent exited ({status}):\n{}", agent.log_text());
            }
            matches!(http_get(addr, "/readyz"), Some((200, _))).then_some(())
        });
        agent
    }

    fn metric(&self, name: &str, label: &str) -> f64 {
        let (_, body) = http_get(self.metrics, "/metrics").expect("GET /metrics");
        metric_sum(&body, name, label)
    }

    fn terminate(mut self) {
        self.child.signal(libc::SIGTERM);
        let status = wait_exit(&mut self.child.child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", self.log_text()));
        assert!(status.success(), "exit {status}:\n{}", self.log_text());
    }

    fn kill(mut self) {
        self.child.signal(libc::SIGKILL);
        wait_exit(&mut self.child.child, EXIT_TIMEOUT).expect("exit after SIGKILL");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A pod process that holds connections open until its stdin closes: the given TCP and connected
/// UDP sockets first, then one more TCP connection to `tcp` per `again` line read. `serve PORT`
/// listens instead and holds every connection it accepts.
const HOLDER_PY: &str = r#"
import socket, sys
held = []
mode = sys.argv[1]
if mode == 'serve':
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[2])))
    s.listen(16)
    s.setblocking(False)
    held.append(s)
    print('ready', flush=True)
    import select
    while True:
        r, _, _ = select.select([s, sys.stdin], [], [])
        if sys.stdin in r:
            if not sys.stdin.readline():
                break
        if s in r:
            c, peer = s.accept()
            held.append(c)
            print('accepted', peer[0], flush=True)
else:
    thost, tport, uhost, uport = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    t = socket.create_connection((thost, tport), timeout=5)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((uhost, uport))
    u.send(b'hello')
    held += [t, u]
    print('ready', flush=True)
    for line in sys.stdin:
        if line.strip() == 'again':
            held.append(socket.create_connection((thost, tport), timeout=5))
            print('done', flush=True)
"#;

/// A holder process: its stdin (closing it ends the process) and its stdout lines.
struct Holder {
    _child: ChildGuard,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Holder {
    fn start(mut cmd: Command, args: &[String]) -> Holder {
        cmd.args(["-u", "-c", HOLDER_PY])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn the holder");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let holder = Holder {
            _child: ChildGuard {
                name: "holder".into(),
                child,
            },
            stdin,
            lines,
        };
        holder.expect("ready");
        holder
    }

    fn expect(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the holder never said {prefix:?}"));
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, got {line:?}"
        );
        line
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }
}

fn ours<'a>(
    records: &'a [FlowRecord],
    pods: &'a [PodSpec],
) -> impl Iterator<Item = &'a FlowRecord> {
    records.iter().filter(move |r| {
        r.source.kind == SourceKind::Pod
            && pods
                .iter()
                .any(|p| r.source.uid.as_deref() == Some(p.uid.as_str()))
    })
}

/// A TCP connection and a connected UDP socket that has sent, opened by pod 0 before the agent
/// starts, are reported as `preexisting` flows of pod 0 with its full identity; pod 1's side of the
/// TCP connection (accepted by its listener) is not a flow. A new connection to the same place once
/// the agent runs is counted as itself, not again as the old one.
#[test]
fn connections_open_before_the_agent_starts_are_preexisting() {
    const PORT: u16 = 7100;
    let hosts = Hosts::build(test_pods());
    let specs: Vec<PodSpec> = hosts.pods.iter().map(|p| p.spec.clone()).collect();
    let pods_file = hosts.dir.path().join("pods.json");
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    let (client, server) = (&hosts.pods[0], &hosts.pods[1]);

    let server_holder = Holder::start(
        server.command("python3"),
        &["serve".into(), PORT.to_string()],
    );
    let mut client_holder = Holder::start(
        client.command("python3"),
        &[
            "hold".into(),
            server.spec.ip4.clone(),
            PORT.to_string(),
            MULTI_V4.into(),
            UDP_CONNECT_PORT.to_string(),
        ],
    );
    server_holder.expect("accepted");
    hosts
        .servers
        .expect_line(&format!("udp v4 {UDP_CONNECT_PORT} {} 5", client.spec.ip4));

    let flows = hosts.dir.path().join("flows.jsonl");
    let agent = RunningAgent::start(hosts.dir.path(), "agent", &pods_file, &flows, &[]);
    let reported =
        |records: &[FlowRecord]| ours(records, &specs).any(|r| r.outcome == Outcome::Preexisting);
    wait_for("the preexisting flows", Duration::from_secs(30), || {
        flows
            .exists()
            .then(|| read_merged(&flows))
            .filter(|r| reported(r))
    });
    client_holder.send("again");
    client_holder.expect("done");
    server_holder.expect("accepted");
    // The new connection's flush, then the exit's.
    std::thread::sleep(Duration::from_secs(2));
    let scanned = agent.metric("egress_agent_netns_scanned_total", "");
    let inbound = agent.metric("egress_agent_existing_sockets_total", "result=\"inbound\"");
    agent.terminate();

    let records = read_merged(&flows);
    let mine: Vec<&FlowRecord> = ours(&records, &specs).collect();
    let all: Vec<String> = mine.iter().map(|r| r.to_json_line()).collect();
    let all = all.join("\n");
    assert_eq!(mine.len(), 2, "exactly two flows of the test pods:\n{all}");
    let tcp = mine
        .iter()
        .find(|r| r.destination.protocol == Protocol::Tcp)
        .unwrap_or_else(|| panic!("the TCP flow:\n{all}"));
    assert_eq!(
        tcp.source.uid.as_deref(),
        Some(client.spec.uid.as_str()),
        "{all}"
    );
    assert_eq!(tcp.destination.ip.to_string(), server.spec.ip4);
    assert_eq!(tcp.destination.port, PORT);
    assert_eq!(
        (
            tcp.count,
            tcp.outcomes.preexisting,
            tcp.outcomes.established
        ),
        (2, 1, 1),
        "one connection from before the agent, one after, each counted once:\n{all}"
    );
    let udp = mine
        .iter()
        .find(|r| r.destination.protocol == Protocol::Udp)
        .unwrap_or_else(|| panic!("the UDP flow:\n{all}"));
    assert_eq!(udp.source.uid.as_deref(), Some(client.spec.uid.as_str()));
    assert_eq!(udp.destination.ip.to_string(), MULTI_V4);
    assert_eq!(udp.destination.port, UDP_CONNECT_PORT);
    assert_eq!(udp.outcome, Outcome::Preexisting);
    assert_eq!((udp.count, udp.outcomes.preexisting), (1, 1));
    // The identity path is the kernel flows': namespace, pod, workload from the pods file.
    assert_eq!(udp.source.namespace.as_deref(), Some("shop"));
    assert_eq!(udp.source.pod.as_deref(), Some(client.spec.name.as_str()));
    assert_eq!(udp.source.workload.as_ref().unwrap().name, "web");
    assert_eq!(udp.source.workload.as_ref().unwrap().kind, "Deployment");
    assert!(scanned >= 4.0, "namespaces scanned: {scanned}");
    assert!(
        inbound >= 1.0,
        "pod 1's accepted connection counted as inbound"
    );
}

/// The gzip batches in a spool directory: (batch id, records), oldest first.
fn spooled(dir: &Path) -> Vec<(String, Vec<FlowRecord>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "batch"));
    files.sort();
    files
        .iter()
        .map(|path| {
            let data = std::fs::read(path).unwrap();
            let end = data.iter().position(|b| *b == b'\n').unwrap();
            let header = std::str::from_utf8(&data[..end]).unwrap();
            let id = header
                .split_whitespace()
                .find_map(|f| f.strip_prefix("id="))
                .unwrap()
                .to_owned();
            let records = flow_model::batch::decode(
                &data[end + 1..],
                flow_model::batch::Encoding::Gzip,
                64 << 20,
                &path.display().to_string(),
            )
            .unwrap();
            (id, records)
        })
        .collect()
}

fn totals<'a>(records: impl Iterator<Item = &'a FlowRecord>) -> BTreeMap<flow_model::FlowKey, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(r.key()).or_default() += r.count;
    }
    out
}

/// With the recommender down, agent A is stopped with SIGTERM (its last flows go to the spool)
/// and agent B is killed with SIGKILL after spooling; when the recommender is up, agent C delivers
/// both spools: every record of the test's pods arrives, each batch is kept once, and the counts
/// equal what the agents wrote to --flows-out.
#[test]
fn spooled_batches_survive_sigterm_and_sigkill_and_count_once() {
    let hosts = Hosts::build(test_pods());
    let specs: Vec<PodSpec> = hosts.pods.iter().map(|p| p.spec.clone()).collect();
    let dir = hosts.dir.path();
    let pods_file = dir.join("pods.json");
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let spool = dir.join("spool");
    let flows = dir.join("flows.jsonl");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = runtime.block_on(Recommender::down_at_first(TOKEN));
    let url = server.url();
    let args = [
        "--recommender",
        url.as_str(),
        "--token-file",
        token.to_str().unwrap(),
        "--spool-dir",
        spool.to_str().unwrap(),
        "--shutdown-grace",
        "5",
    ];
    let pod_flows_spooled = |pod: &PodSpec, port: u16| {
        spooled(&spool).iter().any(|(_, records)| {
            records.iter().any(|r| {
                r.source.uid.as_deref() == Some(pod.uid.as_str()) && r.destination.port == port
            })
        })
    };

    // A: the service is down; SIGTERM puts the final flush in the spool.
    let a = RunningAgent::start(dir, "agent-a", &pods_file, &flows, &args);
    support::traffic::run_client(
        hosts.pods[0].command("python3"),
        &[format!("tcp {API_V4} 443"), format!("tcp {MULTI_V4} 80")],
    );
    a.terminate();
    assert!(pod_flows_spooled(&specs[0], 443) && pod_flows_spooled(&specs[0], 80));
    let after_a: BTreeSet<String> = spooled(&spool).into_iter().map(|(id, _)| id).collect();

    // B: finds A's spool, adds its own, and dies without a chance to do anything.
    let b = RunningAgent::start(dir, "agent-b", &pods_file, &flows, &args);
    support::traffic::run_client(
        hosts.pods[1].command("python3"),
        &[format!("tcp {MULTI_V4} 8080")],
    );
    wait_for("B to spool pod 1's flow", Duration::from_secs(30), || {
        pod_flows_spooled(&specs[1], 8080).then_some(())
    });
    // Quiet for two flushes, so that --flows-out and the spool hold the same records.
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.metric("egress_agent_spool_batches", "") >= after_a.len() as f64);
    b.kill();
    let after_b: BTreeSet<String> = spooled(&spool).into_iter().map(|(id, _)| id).collect();
    assert!(after_a.is_subset(&after_b));
    assert!(after_b.len() > after_a.len());

    // C: the service is back; both spools are delivered, then C's own batches.
    runtime.block_on(server.up());
    let c = RunningAgent::start(dir, "agent-c", &pods_file, &flows, &args);
    wait_for(
        "the spools to be delivered",
        Duration::from_secs(60),
        || {
            let kept: BTreeSet<String> = server.batch_ids().into_iter().collect();
            after_b.is_subset(&kept).then_some(())
        },
    );
    c.terminate();
    assert!(spooled(&spool).is_empty(), "the spool is empty at the end");

    let received = server.received();
    let written = read_merged(&flows);
    let delivered = totals(ours(&merge(received.clone()), &specs));
    let expected = totals(ours(&written, &specs));
    assert_eq!(delivered, expected, "the service got what the agents wrote");
    for (pod, port) in [(0, 443), (0, 80), (1, 8080)] {
        assert!(
            ours(&received, &specs)
                .any(|r| r.source.uid.as_deref() == Some(specs[pod].uid.as_str())
                    && r.destination.port == port),
            "pod {pod} → {port} delivered"
        );
    }
    // Every batch was whole (no 400), and each id was kept once however often it was sent.
    let log = server.log();
    assert!(log.iter().all(|s| s.status != 400), "{log:?}");
    let starts: BTreeSet<String> = server
        .batch_ids()
        .iter()
        .map(|id| id.rsplit_once(':').unwrap().0.to_owned())
        .collect();
    assert!(
        starts.len() >= 3,
        "batches of agents A, B and C: {starts:?}"
    );
}
