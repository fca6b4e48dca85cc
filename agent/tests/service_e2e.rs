//! The whole system on one machine (issue 6): two real agents, each watching the cgroup subtree of
//! its own simulated node (`--cgroup-root`), ship the flows of real test pods to one real
//! `recommender serve`. The service is killed with SIGKILL mid-stream and restarted on the same
//! store while the agents keep running: every batch acknowledged before the kill is in the store,
//! and the agents' spools deliver the rest. The exported policies allow every flow sent
//! (`recommender verify`), and every record is counted once (the agents' records summed equal the
//! store's edge counts). The figures are printed for the lead to quote (`--nocapture`).

mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flow_model::{FlowRecord, SourceKind};
use recommender_lib::store::EmbeddedStore;
use serde_json::json;

use support::agent::{free_port, http_get, metric_sum, wait_exit, Agent};
use support::cgroup::{cgroup_root, Cgroup, Driver, Qos};
use support::dns::API_NAME;
use support::hosts::{Hosts, API_V4, MULTI_V4, UDP_SENDTO_PORT};
use support::pods::{test_pods, PodSpec};
use support::traffic::{run_client, Server};
use support::{die_with_parent, random_hex, random_uid, run, unique_prefix, wait_for, ChildGuard};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// The port pod `cart` serves on for the cross-node pod-to-pod flow.
const CART_PORT: u16 = 7000;

/// One simulated node: its name, its cgroup subtree (what its agent attaches to) and its files.
struct Node {
    name: &'static str,
    /// The subtree's directory name below the cgroup v2 root.
    subtree: String,
    dir: PathBuf,
}

/// `recommender serve` as a child process on a fixed port (so that a restart is found at the same
/// URL), with its output in a log file.
struct Service {
    child: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Service {
    fn start(bin: &Path, addr: SocketAddr, dir: &Path, cluster: &Path, run_no: u32) -> Service {
        let log = dir.join(format!("serve-{run_no}.log"));
        let file = std::fs::File::create(&log).expect("create the service log");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", &addr.to_string()])
            .arg("--store")
            .arg(dir.join("store.redb"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--cluster")
            .arg(cluster)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut service = Service {
            child: ChildGuard {
                name: "recommender".into(),
                child,
            },
            addr,
            log,
        };
        wait_for("the service's /readyz", READY_TIMEOUT, || {
            if !service.child.running() {
                panic!("the service exited:\n{}", service.log_text());
            }
            matches!(http_get(addr, "/readyz"), Some((200, _))).then_some(())
        });
        service
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(mut self) {
        self.child.signal(libc::SIGKILL);
        wait_exit(&mut self.child.child, Duration::from_secs(30))
            .expect("SIGKILL ends the service");
    }

    fn stop(mut self) {
        self.child.signal(libc::SIGTERM);
        let status = wait_exit(&mut self.child.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("the service ignores SIGTERM:\n{}", self.log_text()));
        assert!(status.success(), "serve: {status}\n{}", self.log_text());
    }
}

/// The `recommender` binary of this build, built now so that `cargo test -p agent` runs the
/// current service too (with plain `cargo test` over the workspace it is already built).
fn recommender_bin() -> PathBuf {
    let dir = Path::new(AGENT)
        .parent()
        .expect("the agent binary's directory");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "recommender",
        "--bin",
        "recommender",
    ]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    run(&mut cmd);
    dir.join("recommender")
}

/// The cluster snapshot the service resolves against: namespaces, nodes, the Deployments and
/// ReplicaSets that own the pods, and the pods with their nodes and addresses.
fn cluster_snapshot(pods: &[PodSpec], nodes: &[&Node]) -> String {
    let mut items = Vec::new();
    let namespaces: BTreeSet<&str> = pods.iter().map(|p| p.namespace.as_str()).collect();
    for ns in namespaces {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}));
    }
    for (i, node) in nodes.iter().enumerate() {
        items.push(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("10.244.0.{}", 2 + i)}]}}));
    }
    let mut owners = BTreeSet::new();
    for pod in pods {
        if owners.insert((pod.namespace.clone(), pod.deployment.clone())) {
            let selector = json!({"app": pod.deployment});
            items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": pod.deployment, "namespace": pod.namespace, "uid": random_uid()},
                "spec": {"selector": {"matchLabels": selector},
                         "template": {"metadata": {"labels": selector}, "spec": {"containers": [{"name": pod.deployment, "image": "registry.example.test/web:1.0"}]}}}}));
            items.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": pod.replica_set, "namespace": pod.namespace, "uid": random_uid(),
                             "labels": pod.labels,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": pod.deployment,
                                                  "uid": random_uid(), "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"selector": {"matchLabels": pod.labels}}}));
        }
        items.push(pod.to_json());
    }
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .expect("serialize the snapshot")
}

/// One agent's counter from its `/metrics`.
fn agent_metric(agent: &Agent, name: &str) -> u64 {
    let (status, body) = agent.get("/metrics").expect("the agent's /metrics answers");
    assert_eq!(status, 200);
    metric_sum(&body, name, "") as u64
}

/// The batch ids an agent logged as acknowledged, one per acknowledgement.
fn acknowledgements(agent: &Agent) -> Vec<String> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("batch acknowledged"))
        .filter_map(|l| {
            let id = l.split("batch_id=").nth(1)?.split_whitespace().next()?;
            Some(id.trim_matches('"').to_owned())
        })
        .collect()
}

fn acknowledged_ids(agent: &Agent) -> BTreeSet<String> {
    acknowledgements(agent).into_iter().collect()
}

/// The records an agent wrote to its `--flows-out` file.
fn records_of(agent: &Agent) -> Vec<FlowRecord> {
    let file = std::fs::File::open(&agent.flows_out).expect("the agent's flows file");
    flow_model::read_records(std::io::BufReader::new(file), "flows").expect("valid records")
}

/// The records' counts summed.
fn total_count(records: &[FlowRecord]) -> u64 {
    records.iter().map(|r| r.count).sum()
}

/// One round of traffic from every pod to the external hosts: DNS and TCP from `web`, TCP from
/// `api` and `cart`, datagrams from the second `web`. Returns the connections and datagrams made.
fn traffic_round(hosts: &Hosts) -> u64 {
    let [web_a, api_a, web_b, cart_b] = &hosts.pods[..] else {
        panic!("four pods")
    };
    let mut sent = 0;
    let mut client = |pod: &support::hosts::Pod, actions: Vec<String>| {
        sent += actions.len() as u64;
        run_client(pod.command("python3"), &actions);
    };
    client(
        web_a,
        vec![
            format!("resolve {API_NAME} 4 443"),
            format!("tcp {MULTI_V4} 80"),
            format!("tcp {MULTI_V4} 8080"),
        ],
    );
    client(
        api_a,
        vec![format!("tcp {API_V4} 443"), format!("tcp {MULTI_V4} 9000")],
    );
    client(
        web_b,
        vec![
            format!("tcp {MULTI_V4} 80"),
            format!("udp-sendto {MULTI_V4} {UDP_SENDTO_PORT}"),
        ],
    );
    client(cart_b, vec![format!("tcp {API_V4} 443")]);
    // `resolve` is a DNS query and a connection.
    sent + 1
}

/// Rounds of traffic, each followed by a pause longer than the agents' flush interval, so that
/// every round becomes batches of its own.
fn traffic(hosts: &Hosts, rounds: u32) -> u64 {
    (0..rounds)
        .map(|_| {
            let sent = traffic_round(hosts);
            std::thread::sleep(Duration::from_millis(1300));
            sent
        })
        .sum()
}

#[test]
fn two_agents_one_service_killed_and_restarted_learn_policies_that_allow_every_flow() {
    support::require_root();
    let recommender = recommender_bin();
    let prefix = unique_prefix();
    let nodes_dir = support::TempDir::new(&format!("{prefix}-e2e"));
    let nodes: Vec<Node> = ["node-a", "node-b"]
        .into_iter()
        .map(|name| {
            let dir = nodes_dir.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            Node {
                name,
                subtree: format!("{prefix}-{name}"),
                dir,
            }
        })
        .collect();
    // Declared before the pods, so dropped after them: a subtree is removed once its pods are.
    let _subtrees: Vec<Cgroup> = nodes.iter().map(|n| Cgroup::create(&n.subtree)).collect();
    // The shared test pods (web on both nodes, api on node-a), plus a CRI-O pod on node-b.
    let [web_x2k4q, web_h7m2p, api_q8w2e] = <[PodSpec; 3]>::try_from(test_pods())
        .unwrap_or_else(|_| panic!("test_pods() gives three pods"));
    let on = |pod: PodSpec, node: &Node| pod.on_node(node.name, &node.subtree);
    let pods = vec![
        on(web_x2k4q, &nodes[0]),
        on(api_q8w2e, &nodes[0]),
        on(web_h7m2p, &nodes[1]),
        on(
            PodSpec::new(
                "shop",
                "cart",
                "6b7c8d9e5",
                "t4r5w",
                Driver::Systemd,
                Qos::Burstable,
                3,
            )
            .crio(),
            &nodes[1],
        ),
    ];
    let hosts = Hosts::build(pods.clone());
    let cluster = nodes_dir.path().join("cluster.json");
    std::fs::write(
        &cluster,
        cluster_snapshot(&pods, &nodes.iter().collect::<Vec<_>>()),
    )
    .unwrap();
    let token = format!("e2e-{}", random_hex(16));
    std::fs::write(nodes_dir.path().join("token"), &token).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let service = Service::start(&recommender, addr, nodes_dir.path(), &cluster, 1);

    let mut agents: Vec<Agent> = nodes
        .iter()
        .map(|node| {
            let own: Vec<PodSpec> = pods
                .iter()
                .filter(|p| p.node == node.name)
                .cloned()
                .collect();
            let pods_file = node.dir.join("pods.json");
            std::fs::write(&pods_file, support::pods::pods_file_json(&own)).unwrap();
            let extra: Vec<OsString> = vec![
                "--cgroup-root".into(),
                cgroup_root().join(&node.subtree).into(),
                "--recommender".into(),
                service.url().into(),
                "--token-file".into(),
                nodes_dir.path().join("token").into(),
                "--spool-dir".into(),
                node.dir.join("spool").into(),
            ];
            Agent::start_on(
                AGENT,
                &node.dir,
                node.name,
                &pods_file,
                &extra,
                "info,agent::ship=debug",
            )
        })
        .collect();
    for agent in &mut agents {
        agent.wait_ready(READY_TIMEOUT);
    }

    // Streaming: a cross-node pod-to-pod flow (web on node-a to cart on node-b), then rounds to
    // the external hosts, until both agents have had batches acknowledged.
    let cart = Server::start(hosts.pods[3].command("python3"), CART_PORT);
    let cart_ip = &hosts.pods[3].spec.ip4;
    run_client(
        hosts.pods[0].command("python3"),
        &[
            format!("tcp {cart_ip} {CART_PORT}"),
            format!("udp-ask {cart_ip} {CART_PORT}"),
        ],
    );
    cart.finish();
    let mut sent = 2 + traffic(&hosts, 2);
    wait_for(
        "both agents to have batches acknowledged",
        DELIVERY_TIMEOUT,
        || {
            agents
                .iter()
                .all(|a| agent_metric(a, "egress_agent_batches_acknowledged_total") >= 2)
                .then_some(())
        },
    );
    sent += traffic(&hosts, 1);

    // SIGKILL mid-stream. Nothing is acknowledged after this: what each agent counts now is what
    // was acknowledged before the kill.
    service.kill();
    let acked_before: Vec<BTreeSet<String>> = agents
        .iter()
        .map(|a| {
            let batches = agent_metric(a, "egress_agent_batches_acknowledged_total") as usize;
            wait_for(
                "the acknowledgements in the agent's log",
                Duration::from_secs(10),
                || {
                    let acks = acknowledgements(a);
                    (acks.len() >= batches).then(|| acks.into_iter().collect())
                },
            )
        })
        .collect();
    let records_acked_before: u64 = agents
        .iter()
        .map(|a| agent_metric(a, "egress_agent_records_acknowledged_total"))
        .sum();
    // The agents keep running while the service is down: their flows go to the spool.
    sent += traffic(&hosts, 2);
    wait_for(
        "both agents to fail a delivery and spool",
        DELIVERY_TIMEOUT,
        || {
            agents
                .iter()
                .all(|a| {
                    agent_metric(a, "egress_agent_delivery_failures_total") > 0
                        && agent_metric(a, "egress_agent_spool_batches") > 0
                })
                .then_some(())
        },
    );
    let spooled: u64 = agents
        .iter()
        .map(|a| agent_metric(a, "egress_agent_spool_batches"))
        .sum();

    // Every batch acknowledged before the kill is in the store.
    let learned = EmbeddedStore::open_existing(&nodes_dir.path().join("store.redb"))
        .expect("the store opens after the kill")
        .load_now()
        .expect("the store reads after the kill");
    let stored_ids: BTreeSet<&str> = learned
        .batch_ids
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    let acked_ids: BTreeSet<&str> = acked_before.iter().flatten().map(String::as_str).collect();
    let lost: Vec<_> = acked_ids.difference(&stored_ids).collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the kill but not in the store: {lost:?}"
    );
    let durable_unacked = stored_ids.difference(&acked_ids).count();
    drop(learned);

    // Restarted on the same store and address: the spools drain while traffic goes on.
    let service = Service::start(&recommender, addr, nodes_dir.path(), &cluster, 2);
    sent += traffic(&hosts, 1);
    wait_for("the spools to drain", DELIVERY_TIMEOUT, || {
        agents
            .iter()
            .all(|a| agent_metric(a, "egress_agent_spool_batches") == 0)
            .then_some(())
    });
    for agent in &mut agents {
        let status = agent.terminate(Duration::from_secs(60));
        assert!(status.success(), "agent: {status}\n{}", agent.log_text());
    }
    let acked_after: Vec<BTreeSet<String>> = agents.iter().map(acknowledged_ids).collect();
    let recovered: usize = acked_after
        .iter()
        .zip(&acked_before)
        .map(|(after, before)| after.difference(before).count())
        .sum();

    // The policies, exported over HTTP, allow every flow the agents saw.
    let export = run(Command::new(&recommender)
        .args(["export", "--server", &service.url(), "--token-file"])
        .arg(nodes_dir.path().join("token")));
    let policies = nodes_dir.path().join("policies.yaml");
    std::fs::write(&policies, &export.stdout).unwrap();
    let yaml = String::from_utf8_lossy(&export.stdout);
    for workload in ["web", "api", "cart"] {
        assert!(
            yaml.contains(&format!("name: {workload}-egress")),
            "no policy for {workload}:\n{yaml}"
        );
    }
    let mut verify = Command::new(&recommender);
    verify
        .args(["verify", "--cluster"])
        .arg(&cluster)
        .arg("--flows");
    for agent in &agents {
        verify.arg(&agent.flows_out);
    }
    verify.arg("--policies").arg(&policies);
    let verified = verify.output().expect("run verify");
    let verdict = String::from_utf8_lossy(&verified.stderr).into_owned();
    assert!(
        verified.status.success()
            && verdict.contains(" 0 denied")
            && verdict.contains(" 0 flows skipped"),
        "verify: {}\n{}{verdict}\npolicies:\n{yaml}",
        verified.status,
        String::from_utf8_lossy(&verified.stdout)
    );
    service.stop();

    // Counted once: the agents' records summed equal the store's edge counts.
    let records: Vec<FlowRecord> = agents.iter().flat_map(records_of).collect();
    assert!(
        records.iter().all(|r| r.source.kind == SourceKind::Pod),
        "only the subtrees' pods are seen: {:?}",
        records.iter().find(|r| r.source.kind != SourceKind::Pod)
    );
    for (agent, node) in agents.iter().zip(&nodes) {
        let own = records_of(agent);
        assert!(!own.is_empty(), "{} reported nothing", node.name);
        assert!(own.iter().all(|r| r.node == node.name));
        let uids: BTreeSet<_> = own.iter().filter_map(|r| r.source.uid.clone()).collect();
        let expected: BTreeSet<_> = pods
            .iter()
            .filter(|p| p.node == node.name)
            .map(|p| p.uid.clone())
            .collect();
        assert_eq!(uids, expected, "{} reports exactly its own pods", node.name);
    }
    let learned = EmbeddedStore::open_existing(&nodes_dir.path().join("store.redb"))
        .unwrap()
        .load_now()
        .unwrap();
    let stored: u64 = learned.edges.iter().map(|e| e.observed.count).sum();
    let reported = total_count(&records);
    assert_eq!(
        stored, reported,
        "the store's edge counts equal the agents' records summed"
    );
    let all_acked: usize = acked_after.iter().map(BTreeSet::len).sum();
    let stored_ids: BTreeSet<&str> = learned
        .batch_ids
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(
        acked_after
            .iter()
            .flatten()
            .all(|id| stored_ids.contains(id.as_str())),
        "every acknowledged batch is in the store"
    );
    eprintln!(
        "e2e: 2 agents, 1 service; {sent} connections and datagrams sent by 4 pods; {} records \
         (count total {reported}) in {all_acked} batches; {} batches ({records_acked_before} \
         records) acknowledged before SIGKILL, all {} in the store after it ({durable_unacked} \
         more durable but unacknowledged); {spooled} batches spooled while down; {recovered} \
         batches delivered after the restart; {} edges, counts summed {stored} = records \
         summed {reported} (counted once); verify: {}",
        records.len(),
        acked_ids.len(),
        acked_ids.len(),
        learned.edges.len(),
        verdict.trim().trim_start_matches("verify: ")
    );
}
