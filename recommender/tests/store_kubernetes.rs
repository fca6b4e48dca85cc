//! The Kubernetes store (`serve --store kubernetes`) against the API stub: edges written read
//! back exactly; a workload's edges split into parts under the size bound; a write that meets
//! another writer's change (409 Conflict) merges it, counting each writer's additions once; a
//! replica without the Lease writes nothing; the Lease goes to one replica and, once its holder
//! stops renewing, to another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api_stub::{resources, ApiStub, Resource};
use flow_model::{Outcome, Outcomes, Protocol, WorkloadRef};
use recommender::policy::selectors::PodSelector;
use recommender::resolve::{Observation, Peer, SourceWorkload};
use recommender::store::kubernetes::{
    lease, KubernetesConfig, KubernetesStore, Leadership, LeaseConfig,
};
use recommender::store::{Commit, Edge, Store, StoreError};
use serde_json::Value;

const NS: &str = "egress-recommender";

fn les() -> Resource {
    Resource::new("egress-recommender.io", "v1alpha1", "learnededgesets")
}

async fn stub() -> ApiStub {
    let stub = ApiStub::start().await.unwrap();
    stub.register_kind(les(), "LearnedEdgeSet", true);
    stub
}

fn client(stub: &ApiStub) -> kube::Client {
    kube::Client::try_from(kube::Config::new(stub.url().parse().unwrap())).unwrap()
}

fn store(
    stub: &ApiStub,
    writer: &str,
    bound: usize,
    lead: Option<Arc<Leadership>>,
) -> KubernetesStore {
    KubernetesStore::new(
        client(stub),
        KubernetesConfig {
            namespace: NS.into(),
            writer: writer.into(),
            object_bytes: bound,
        },
        lead,
    )
}

fn source(name: &str) -> Arc<SourceWorkload> {
    Arc::new(SourceWorkload {
        namespace: "shop".into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: name.into(),
        },
        selector: PodSelector::labels([("app".to_string(), name.to_string())].into()),
    })
}

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// An edge of `source` to 198.18.(n/256).(n%256):443 observed `count` times.
fn edge(source: &Arc<SourceWorkload>, n: u32, count: u64) -> Edge {
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + n);
    Edge {
        source: Arc::clone(source),
        peer: Arc::new(Peer::External {
            ip: ip.into(),
            service: None,
        }),
        port: 443,
        protocol: Protocol::Tcp,
        learned_at: at("2026-11-26T16:00:05Z"),
        observed: Arc::new(Observation {
            first_seen: at("2026-11-26T16:00:00Z"),
            last_seen: at("2026-11-26T16:05:00.123456789Z"),
            count,
            outcome: Outcome::Established,
            outcomes: Outcomes {
                established: count,
                ..Outcomes::default()
            },
            dns_names: [format!("host-{n}.example.test")].into(),
        }),
    }
}

fn commit(edges: Vec<Edge>) -> Arc<Commit> {
    Arc::new(Commit {
        edges,
        acknowledged_at: jiff::Timestamp::now(),
        ..Commit::default()
    })
}

/// (source name, peer, count) of every edge, sorted.
/// The counts a fresh replica reads back from the stub.
async fn stored_counts(stub: &ApiStub) -> BTreeMap<(String, String), u64> {
    counts(
        &store(stub, "reader", 512 << 10, None)
            .load()
            .await
            .unwrap()
            .edges,
    )
}

fn counts(edges: &[Edge]) -> BTreeMap<(String, String), u64> {
    edges
        .iter()
        .map(|e| {
            (
                (e.source.workload.name.clone(), format!("{:?}", e.peer)),
                e.observed.count,
            )
        })
        .collect()
}

#[tokio::test]
async fn edges_read_back_exactly() {
    let stub = stub().await;
    let web = source("web");
    let db = source("db");
    let written = vec![edge(&web, 1, 12), edge(&web, 2, u64::MAX), edge(&db, 3, 1)];
    let first = store(&stub, "a", 512 << 10, None);
    assert!(first.load().await.unwrap().edges.is_empty());
    first.commit(commit(written.clone())).await.unwrap();
    // One object per source workload, named as deploy/samples shows.
    let mut names: Vec<String> = stub
        .objects(&les())
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["shop.deployment.db.0", "shop.deployment.web.0"]);
    let mut back = store(&stub, "b", 512 << 10, None)
        .load()
        .await
        .unwrap()
        .edges;
    back.sort_by_key(|e| format!("{:?}{:?}", e.source, e.peer));
    let mut expected = written;
    expected.sort_by_key(|e| format!("{:?}{:?}", e.source, e.peer));
    // Counts are int64 in the API: u64::MAX is written as i64::MAX.
    Arc::make_mut(&mut expected[2].observed).count = i64::MAX as u64;
    Arc::make_mut(&mut expected[2].observed)
        .outcomes
        .established = i64::MAX as u64;
    assert_eq!(back, expected);
}

#[tokio::test]
async fn a_large_workload_is_split_into_parts_under_the_bound() {
    let stub = stub().await;
    let web = source("web");
    let bound = 4096;
    let s = store(&stub, "a", bound, None);
    // Two commits: new edges go to the last part until it is full.
    s.commit(commit((0..60).map(|n| edge(&web, n, 1)).collect()))
        .await
        .unwrap();
    s.commit(commit((60..100).map(|n| edge(&web, n, 1)).collect()))
        .await
        .unwrap();
    let objects = stub.objects(&les());
    // ~300 bytes an edge: 100 edges are 30 KB, in 4 KiB parts.
    assert!(objects.len() >= 8, "{} objects", objects.len());
    let mut parts: Vec<u64> = Vec::new();
    for object in &objects {
        let spec = &object["spec"];
        let bytes = serde_json::to_vec(spec).unwrap().len();
        assert!(
            bytes <= bound,
            "{bytes} bytes in {}",
            object["metadata"]["name"]
        );
        assert_eq!(spec["source"]["workload"]["name"], "web");
        let part = spec["part"].as_u64().unwrap();
        assert_eq!(
            object["metadata"]["name"],
            format!("shop.deployment.web.{part}")
        );
        parts.push(part);
    }
    parts.sort();
    assert_eq!(parts, (0..objects.len() as u64).collect::<Vec<_>>());
    let total: usize = objects
        .iter()
        .map(|o| serde_json::to_vec(&o["spec"]).unwrap().len())
        .sum();
    eprintln!(
        "split: 100 edges in {} objects of at most {bound} bytes, {} bytes of spec an edge",
        objects.len(),
        total / 100
    );
    // Updating edges already placed keeps them where they are.
    s.commit(commit((0..100).map(|n| edge(&web, n, 2)).collect()))
        .await
        .unwrap();
    assert_eq!(stub.objects(&les()).len(), objects.len());
    let back = store(&stub, "b", bound, None).load().await.unwrap().edges;
    assert_eq!(back.len(), 100);
    assert!(back.iter().all(|e| e.observed.count == 2));
}

#[tokio::test]
async fn a_conflict_merges_the_other_writers_additions() {
    let stub = stub().await;
    let web = source("web");
    let a = store(&stub, "a", 512 << 10, None);
    a.load().await.unwrap();
    a.commit(commit(vec![edge(&web, 1, 5), edge(&web, 2, 1)]))
        .await
        .unwrap();
    // B reads the same, and adds 3 to edge 1 and a new edge 3.
    let b = store(&stub, "b", 512 << 10, None);
    b.load().await.unwrap();
    b.commit(commit(vec![edge(&web, 1, 8), edge(&web, 3, 4)]))
        .await
        .unwrap();
    let before = stub.resource_version();
    // A, not knowing, adds 2 to edge 1: its replace meets 409, it reads B's object and merges.
    a.commit(commit(vec![edge(&web, 1, 7)])).await.unwrap();
    let conflicts = stub
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 409)
        .count();
    assert_eq!(conflicts, 1);
    assert!(stub.resource_version() > before);
    let merged = stored_counts(&stub).await;
    let peer = |n: u32| format!("{:?}", edge(&web, n, 0).peer);
    assert_eq!(merged[&("web".into(), peer(1))], 5 + 3 + 2);
    assert_eq!(merged[&("web".into(), peer(2))], 1);
    assert_eq!(merged[&("web".into(), peer(3))], 4);
    // A's next absolute value keeps B's additions (A's memory never held them).
    a.commit(commit(vec![edge(&web, 1, 9)])).await.unwrap();
    let merged = stored_counts(&stub).await;
    assert_eq!(merged[&("web".into(), peer(1))], 5 + 3 + 2 + 2);
}

#[tokio::test]
async fn two_writers_creating_the_same_object_both_count() {
    let stub = stub().await;
    let web = source("web");
    let a = store(&stub, "a", 512 << 10, None);
    let b = store(&stub, "b", 512 << 10, None);
    a.load().await.unwrap();
    b.load().await.unwrap();
    a.commit(commit(vec![edge(&web, 1, 5)])).await.unwrap();
    // B's create meets 409 AlreadyExists: it reads A's object and adds its own to it.
    b.commit(commit(vec![edge(&web, 1, 3), edge(&web, 2, 1)]))
        .await
        .unwrap();
    assert!(stub
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.status == 409));
    let merged = stored_counts(&stub).await;
    assert_eq!(merged.values().copied().collect::<Vec<_>>(), [5 + 3, 1]);
}

#[tokio::test]
async fn a_conflict_with_its_own_unanswered_write_is_not_counted_twice() {
    let stub = stub().await;
    let web = source("web");
    let a = store(&stub, "a", 512 << 10, None);
    a.commit(commit(vec![edge(&web, 1, 5)])).await.unwrap();
    // The object changes under A as if by A's own write whose answer was lost.
    let mut object: Value = stub.objects(&les()).remove(0);
    object["apiVersion"] = "egress-recommender.io/v1alpha1".into();
    object["kind"] = "LearnedEdgeSet".into();
    object["spec"]["edges"][0]["observed"]["count"] = 6.into();
    stub.apply(object);
    a.commit(commit(vec![edge(&web, 1, 7)])).await.unwrap();
    let merged = stored_counts(&stub).await;
    assert_eq!(merged.values().copied().collect::<Vec<_>>(), [7]);
}

#[tokio::test]
async fn a_missing_crd_is_named() {
    let stub = stub().await;
    // What the API server answers for a resource it does not serve.
    stub.inject(les(), api_stub::Fault::Status(404));
    let err = store(&stub, "a", 512 << 10, None).load().await.unwrap_err();
    assert!(err.to_string().contains("install the CRD"), "{err}");
}

#[tokio::test]
async fn a_replica_without_the_lease_writes_nothing() {
    let stub = stub().await;
    let lead = Arc::new(Leadership::new("replica-a"));
    let s = store(&stub, "a", 512 << 10, Some(lead));
    let err = s
        .commit(commit(vec![edge(&source("web"), 1, 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    assert!(stub.objects(&les()).is_empty());
    assert!(!stub.requests().iter().any(|r| r.method != "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_goes_to_one_replica_and_then_to_the_other() {
    let stub = stub().await;
    let config = |id: &str| LeaseConfig {
        namespace: NS.into(),
        name: format!("store-lease-{}", std::process::id()),
        identity: id.into(),
        duration: Duration::from_secs(1),
    };
    let api = || kube::Api::namespaced(client(&stub), NS);
    let a = Arc::new(Leadership::new("replica-a"));
    let b = Arc::new(Leadership::new("replica-b"));
    let mut a_role = a.subscribe();
    let a_task = tokio::spawn(lease::run(api(), config("replica-a"), Arc::clone(&a)));
    a_role.wait_for(|leader| *leader).await.unwrap();
    let mut b_role = b.subscribe();
    let b_task = tokio::spawn(lease::run(api(), config("replica-b"), Arc::clone(&b)));
    // B reads the Lease held by A, and does not take it while A renews.
    stub.wait_for_request(|r| r.method == "GET" && r.path.contains("leases") && r.status == 200)
        .await;
    let renewals = |stub: &ApiStub| {
        stub.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.contains("leases") && r.status == 200)
            .count()
    };
    let seen = renewals(&stub);
    stub.wait_for_request(|_| renewals(&stub) >= seen + 3).await;
    assert!(!b.may_write());
    assert!(a.may_write());
    // A stops (as a killed process would): B takes over once the Lease has been silent for its
    // duration, and A, if it came back, would find it lost.
    a_task.abort();
    b_role.wait_for(|leader| *leader).await.unwrap();
    // A's own deadline (two thirds of the Lease after its last renewal began) passed before B
    // could take over (the whole Lease after B saw that renewal): never two writers.
    assert!(!a.may_write());
    let lease: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(stub.objects(&resources::leases()).remove(0)).unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    b_task.abort();
}
