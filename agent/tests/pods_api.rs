//! The agent's watch of its node's pods (`agent::pods_api`) against the API stub, which speaks
//! the API server's JSON: paged lists, watches with ADDED/MODIFIED/DELETED and BOOKMARK, a stream
//! broken mid-line, 410 Gone, errors. Only the node's pods are asked for (field selector), owners
//! are resolved as from a pods file, and the index follows every change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent::metrics::Metrics;
use agent::pods::PodIndex;
use agent::pods_api::{self, ApiPods};
use api_stub::{resources, ApiStub, Fault};
use serde_json::{json, Value};

const NODE: &str = "node-a";
/// Bound on each wait for the watch to catch up; reaching it is a failure, not a measurement.
const BOUND: Duration = Duration::from_secs(60);

fn pod(name: &str, uid: &str, node: &str, owner: Option<(&str, &str)>, hash: &str) -> Value {
    let owners: Vec<Value> = owner
        .into_iter()
        .map(|(kind, name)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "owner-uid",
                   "controller": true, "blockOwnerDeletion": true})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
                     "labels": {"app": "web", "pod-template-hash": hash},
                     "ownerReferences": owners},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"}})
}

async fn until(api: &mut ApiPods, what: &str, pred: impl Fn(&PodIndex) -> bool) {
    let wait = async {
        while !pred(&api.index()) {
            assert!(
                api.changed().await,
                "the watch ended while waiting for {what}"
            );
        }
    };
    tokio::time::timeout(BOUND, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {BOUND:?} waiting for {what}"));
}

fn workload(index: &PodIndex, uid: &str) -> Option<(String, String)> {
    index
        .get(uid)
        .map(|p| (p.workload.kind.clone(), p.workload.name.clone()))
}

fn pod_requests(stub: &ApiStub, watch: bool) -> Vec<api_stub::RequestRecord> {
    stub.requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods" && r.is_watch() == watch)
        .collect()
}

#[tokio::test]
async fn follows_this_nodes_pods_through_lists_watches_and_410() {
    let stub = ApiStub::start().await.unwrap();
    // More pods than a page holds would be nice, but the watcher's page size is the API's; a
    // bare pod, a Deployment's pod and a pod on another node are enough to see the selector.
    stub.apply(pod(
        "web-5d8f7c9b4-x2k4q",
        "AAAAAAAA-0000-4000-8000-000000000001",
        NODE,
        Some(("ReplicaSet", "web-5d8f7c9b4")),
        "5d8f7c9b4",
    ));
    stub.apply(pod(
        "elsewhere",
        "bbbbbbbb-0000-4000-8000-000000000002",
        "node-b",
        None,
        "x",
    ));
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    stub.write_kubeconfig(kubeconfig.path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig.path()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let metrics = Arc::new(Metrics::new());
    let synced = Arc::new(AtomicBool::new(false));
    let mut api = pods_api::start(client, NODE, Arc::clone(&metrics), Arc::clone(&synced));

    until(&mut api, "the first list", |i| !i.is_empty()).await;
    // The list may be published before the flag; the flag follows within the same batch.
    tokio::time::timeout(BOUND, async {
        while !synced.load(Ordering::Acquire) {
            api.changed().await;
        }
    })
    .await
    .expect("synced after the first list");
    let index = api.index();
    assert_eq!(index.len(), 1, "only this node's pod: {:?}", index.keys());
    // UIDs in lower case, as cgroup paths give them; the ReplicaSet's Deployment by its hash.
    assert_eq!(
        workload(&index, "aaaaaaaa-0000-4000-8000-000000000001"),
        Some(("Deployment".into(), "web".into()))
    );
    tokio::time::timeout(BOUND, stub.wait_for_watches(&resources::pods(), 1))
        .await
        .expect("a watch after the list");
    for watch in [false, true] {
        let requests = pod_requests(&stub, watch);
        assert!(!requests.is_empty(), "no pods request (watch: {watch})");
        for r in requests {
            assert_eq!(
                r.param("fieldSelector"),
                Some("spec.nodeName=node-a"),
                "{r:?}"
            );
        }
    }

    // ADDED, MODIFIED and DELETED as the watch tells them.
    let late = "cccccccc-0000-4000-8000-000000000003";
    stub.apply(pod("db-0", late, NODE, Some(("StatefulSet", "db")), "x"));
    until(&mut api, "a new pod", |i| i.contains_key(late)).await;
    assert_eq!(
        workload(&api.index(), late),
        Some(("StatefulSet".into(), "db".into()))
    );
    let mut relabelled = pod("db-0", late, NODE, Some(("StatefulSet", "db")), "x");
    relabelled["metadata"]["labels"]["app"] = json!("db");
    stub.apply(relabelled.clone());
    until(&mut api, "a label change", |i| {
        i.get(late).is_some_and(|p| p.labels["app"] == "db")
    })
    .await;
    stub.delete(&relabelled);
    stub.send_bookmarks();
    let job = "dddddddd-0000-4000-8000-000000000004";
    stub.apply(pod(
        "backup-28472910-abcde",
        job,
        NODE,
        Some(("Job", "backup-28472910")),
        "x",
    ));
    until(&mut api, "a pod after a deletion and a bookmark", |i| {
        i.contains_key(job)
    })
    .await;
    assert!(
        api.index().contains_key(late),
        "a deleted pod stays named for its last flows"
    );

    // A stream broken in the middle of a line, then a 410 Gone: the watcher resumes, then relists.
    let lists_before = pod_requests(&stub, false).len();
    stub.inject(resources::pods(), Fault::BreakWatch { after_events: 0 });
    stub.inject(resources::pods(), Fault::ExpireWatch);
    stub.break_watches(Some(&resources::pods()));
    let after_gone = "eeeeeeee-0000-4000-8000-000000000005";
    // Applied once the relist is under way, so that it arrives whichever way the watcher took.
    tokio::time::timeout(BOUND, async {
        while pod_requests(&stub, false).len() == lists_before {
            stub.wait_for_request(|r| r.path == "/api/v1/pods").await;
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a relist after 410 Gone");
    stub.apply(pod("bare", after_gone, NODE, None, "x"));
    until(&mut api, "a pod after the relist", |i| {
        i.contains_key(after_gone)
    })
    .await;
    assert_eq!(
        workload(&api.index(), after_gone),
        Some(("Pod".into(), "bare".into()))
    );
    assert!(!api
        .index()
        .contains_key("bbbbbbbb-0000-4000-8000-000000000002"));
    let text = metrics.encode();
    let errors: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("egress_agent_pod_watch_errors_total ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(errors >= 1, "the 410 is counted:\n{text}");
    for r in pod_requests(&stub, false) {
        assert_eq!(r.param("fieldSelector"), Some("spec.nodeName=node-a"));
    }
}
