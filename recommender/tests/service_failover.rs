//! HA on the Kubernetes store: two real `recommender serve --store kubernetes` processes against
//! one API stub and one Lease. The follower answers batches with 503 and Retry-After; the leader
//! acknowledges them once they are in the custom resources; the leader is killed with SIGKILL in
//! the middle of a stream of batches, the follower takes the Lease once it expires, reads the
//! store, and every batch acknowledged before the kill is there: in the new leader's status and
//! export, and in the LearnedEdgeSet objects themselves.

#[path = "service_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_stub::{resources, ApiStub, Resource};
use flow_model::FlowRecord;
use recommender::resolve::Peer;
use recommender::store::kubernetes::{KubernetesConfig, KubernetesStore};
use recommender::store::Store;
use support::{arg, cluster_args, run, web_record, Scratch, Server};

const PORTS_PER_BATCH: u16 = 5;
const SENDERS: u32 = 4;

fn les() -> Resource {
    Resource::new("egress-recommender.io", "v1alpha1", "learnededgesets")
}

/// Batch `b`'s address: 198.18.B.1, so that no two batches' addresses share a CIDR that holds
/// nothing else (export writes each as a /32).
fn address(b: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18 + (b / 250) as u8, (b % 250) as u8, 1)
}

/// Batch `b`: from shop/web to its own address on `PORTS_PER_BATCH` ports, count 1 each.
fn batch(b: u32) -> Vec<FlowRecord> {
    (0..PORTS_PER_BATCH)
        .map(|p| web_record(&address(b).to_string(), 2000 + p, 1))
        .collect()
}

fn replica(scratch: &Scratch, kubeconfig: &str, namespace: &str, name: &str) -> Server {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "kubernetes",
        "--store-namespace",
        namespace,
        "--identity",
        name,
        "--lease-duration",
        "2s",
        "--token-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(arg(&scratch.path("token")));
    args.extend(cluster_args());
    Server::launch(&args, &[("KUBECONFIG", kubeconfig)])
}

/// Sends batch `b` until it is acknowledged, as an agent's retries do; the refusals seen.
fn send_until_acknowledged(server: &Server, b: u32) -> Vec<support::Response> {
    let mut refused = Vec::new();
    loop {
        let response = server.send(&batch(b), None);
        if response.status == 200 {
            return refused;
        }
        assert_eq!(response.status, 503, "{response:?}\n{}", server.log());
        refused.push(response);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_failover_loses_nothing_acknowledged() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stub = runtime.block_on(ApiStub::start()).unwrap();
    stub.register_kind(les(), "LearnedEdgeSet", true);
    let scratch = Scratch::new("failover");
    let kubeconfig = scratch.path("kubeconfig");
    stub.write_kubeconfig(&kubeconfig).unwrap();
    let kubeconfig = arg(&kubeconfig);
    let namespace = format!("failover-{}", std::process::id());
    let a = replica(&scratch, &kubeconfig, &namespace, "replica-a");
    // A takes the Lease and reads the (empty) store: it acknowledges batch 0.
    send_until_acknowledged(&a, 0);
    let b = replica(&scratch, &kubeconfig, &namespace, "replica-b");
    // B is up, reads the store, and is a follower: batches get 503, Retry-After, and a closed
    // connection (so that an agent's retry may reach the leader).
    // (B may not have read the Lease yet: until it has, it knows of no holder.)
    let mut sent = 0;
    let refused = loop {
        let refused = b.send(&batch(1), None);
        sent += 1;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(
            refused.headers.contains("retry-after: "),
            "{}",
            refused.headers
        );
        assert!(
            refused.headers.contains("connection: close"),
            "{}",
            refused.headers
        );
        if refused.body.contains("replica-a") {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        refused.body.contains("does not hold the store's Lease"),
        "{}",
        refused.body
    );
    assert_eq!(
        b.metric("egress_recommender_ingest_refused_total{reason=\"not_leader\"}"),
        f64::from(sent)
    );

    // A stream of batches to A; A is killed in the middle of it.
    let acknowledged: Arc<Mutex<BTreeSet<u32>>> = Arc::new(Mutex::new([0].into()));
    let attempted: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (acknowledged, attempted, stop) =
                (acknowledged.clone(), attempted.clone(), stop.clone());
            let addr = a.addr;
            std::thread::spawn(move || {
                for k in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let n = 1 + s + k * SENDERS;
                    attempted.lock().unwrap().insert(n);
                    let body =
                        flow_model::batch::encode(&batch(n), flow_model::batch::Encoding::Gzip);
                    let auth = format!("Bearer {}", support::TOKEN);
                    let answer = support::try_request(
                        addr,
                        "POST",
                        "/v1/flows",
                        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
                        &body,
                    );
                    match answer {
                        Some(r) if r.status == 200 => {
                            acknowledged.lock().unwrap().insert(n);
                        }
                        Some(r) if r.status == 503 => {}
                        Some(r) => panic!("{r:?}"),
                        None => break,
                    }
                }
            })
        })
        .collect();
    // Kill once at least 20 batches are acknowledged.
    while acknowledged.lock().unwrap().len() < 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_log = a.log();
    a.kill();
    let killed = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let unacknowledged: BTreeSet<u32> = attempted
        .lock()
        .unwrap()
        .difference(&acknowledged)
        .copied()
        .collect();

    // What an agent does: send what was not acknowledged to the service again. B refuses until
    // the Lease expires and it has read the store.
    let mut refusals_during_failover = 0;
    for n in &unacknowledged {
        refusals_during_failover += send_until_acknowledged(&b, *n).len();
    }
    let failover = killed.elapsed();
    // A last batch, after the failover, for good measure.
    let last = attempted.lock().unwrap().iter().max().copied().unwrap_or(0) + 1;
    send_until_acknowledged(&b, last);
    assert_eq!(b.metric("egress_recommender_store_leader"), 1.0);
    eprintln!(
        "failover: {} batches acknowledged by A, {} resent to B, {} refusals by B, B took {:?} after the kill",
        acknowledged.len(),
        unacknowledged.len(),
        refusals_during_failover,
        failover
    );
    let everything: BTreeSet<u32> = acknowledged
        .iter()
        .chain(&unacknowledged)
        .copied()
        .chain([last])
        .collect();

    // The new leader's status and export hold every acknowledged edge (and the resent ones).
    let status: serde_json::Value = serde_json::from_str(&b.get("/v1/status").body).unwrap();
    let web = status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "web")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(
        web["edges"].as_u64().unwrap(),
        everything.len() as u64 * u64::from(PORTS_PER_BATCH),
        "{status}\n{a_log}\n{}",
        b.log()
    );
    let (code, yaml, err) = run(&[
        "export".into(),
        "--server".into(),
        b.url(),
        "--token-file".into(),
        arg(&scratch.path("token")),
    ]);
    assert_eq!(code, 0, "{err}");
    for n in &everything {
        assert!(
            yaml.contains(&format!("{}/32", address(*n))),
            "batch {n}:\n{yaml}"
        );
    }

    // And so do the custom resources: each acknowledged edge, counted once (batches B received
    // again may count twice when A had written them before it died: no batch ids in the CRs).
    let learned = runtime
        .block_on(async {
            let client =
                kube::Client::try_from(kube::Config::new(stub.url().parse().unwrap())).unwrap();
            let store = KubernetesStore::new(
                client,
                KubernetesConfig {
                    namespace: namespace.clone(),
                    writer: "test-reader".into(),
                    object_bytes: 1 << 20,
                },
                None,
            );
            store.load().await
        })
        .unwrap();
    let mut found: std::collections::BTreeMap<Ipv4Addr, Vec<u64>> = Default::default();
    for edge in &learned.edges {
        if let Peer::External {
            ip: std::net::IpAddr::V4(ip),
            ..
        } = &*edge.peer
        {
            found.entry(*ip).or_default().push(edge.observed.count);
        }
    }
    for n in &acknowledged {
        let counts = &found[&address(*n)];
        assert_eq!(counts.len(), usize::from(PORTS_PER_BATCH), "batch {n}");
        assert!(counts.iter().all(|c| *c == 1), "batch {n}: {counts:?}");
    }
    for n in &unacknowledged {
        let counts = &found[&address(*n)];
        assert!(
            counts.iter().all(|c| (1..=2).contains(c)),
            "batch {n}: {counts:?}"
        );
    }
    let lease = stub.objects(&resources::leases()).remove(0);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    let objects = stub.objects(&les());
    assert!(!objects.is_empty());
    assert!(objects
        .iter()
        .all(|o| o["metadata"]["namespace"] == namespace.as_str()));
    b.stop();
}
