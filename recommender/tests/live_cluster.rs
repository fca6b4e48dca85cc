//! The live cluster model against the API stub (no API server can be had on these machines):
//! paged lists, readiness only after every kind is listed, list errors retried, a broken watch and
//! a 410 relist, a Service whose backends change, a pod IP reused by another workload.

use std::sync::Arc;
use std::time::Duration;

use api_stub::{resources, ApiStub, Fault};
use flow_model::FlowRecord;
use recommender::cluster::Cluster;
use recommender::live::LiveCluster;
use recommender::resolve::Peer;
use recommender::service::model::{ClusterSource, ModelCell};
use serde_json::{json, Value};

fn client(stub: &ApiStub) -> kube::Client {
    kube::Client::try_from(kube::Config::new(stub.url().parse().unwrap())).unwrap()
}

fn pod(ns: &str, name: &str, ip: &str, owner: &str, created: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "namespace": ns, "labels": {"app": owner},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner,
                             "uid": format!("uid-{owner}"), "controller": true}]});
    if let Some(created) = created {
        meta["creationTimestamp"] = json!(created);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn service(ns: &str, name: &str, cluster_ip: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "selector": {"app": app},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})
}

fn slice(ns: &str, service: &str, backend: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-abc"), "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                          "targetRef": {"kind": "Pod", "namespace": ns, "name": backend}}]})
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
           "labels": {"kubernetes.io/metadata.name": name}}})
}

fn flow(to: &str, port: u16, first_seen: jiff::Timestamp) -> FlowRecord {
    let line = json!({"node": "node-a",
        "source": {"kind": "pod", "namespace": "shop", "pod": "client-0", "uid": "uid-client-0",
                   "workload": {"kind": "StatefulSet", "name": "client"}, "labels": {"app": "client"}},
        "destination": {"ip": to, "port": port, "protocol": "TCP"},
        "first_seen": first_seen.to_string(), "last_seen": first_seen.to_string(),
        "count": 1, "outcome": "established"});
    serde_json::from_value(line).unwrap()
}

fn seed(stub: &ApiStub) {
    stub.apply(namespace("shop"));
    stub.apply(pod("shop", "client-0", "10.0.0.2", "client", None));
}

async fn start(stub: &ApiStub, page_size: u32) -> Arc<ModelCell> {
    let cell = ModelCell::new();
    let source = LiveCluster {
        client: client(stub),
        service_cidrs: Vec::new(),
        page_size,
    };
    source.start(Arc::clone(&cell)).await.unwrap();
    cell
}

/// Waits (bounded) until the model satisfies `ready`; the bound is a hang guard, not a timing
/// assertion.
async fn until(cell: &ModelCell, what: &str, ready: impl Fn(&Cluster) -> bool) -> Arc<Cluster> {
    for _ in 0..1200 {
        if let Some(model) = cell.current().filter(|m| ready(m)) {
            return model;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the live model never got to: {what}");
}

/// The workloads a flow resolves to.
fn peers(model: &Cluster, record: &FlowRecord) -> Vec<String> {
    let interner = recommender::service::state::Interner::default();
    let prepared = recommender::service::ingest::prepare(
        None,
        std::slice::from_ref(record),
        model,
        None,
        &interner,
    );
    let mut names: Vec<String> = prepared
        .edges
        .iter()
        .map(|e| match &*e.peer {
            Peer::Pods { workload, .. } => workload.name.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn lists_page_and_the_model_is_ready_only_after_every_kind_listed() {
    let stub = ApiStub::start().await.unwrap();
    seed(&stub);
    for i in 0..7 {
        stub.apply(pod(
            "shop",
            &format!("web-{i}"),
            &format!("10.0.1.{i}"),
            "web",
            None,
        ));
    }
    // NetworkPolicies fail to list until the faults are cleared: the watcher retries with backoff,
    // and the model stays unpublished.
    for _ in 0..1000 {
        stub.inject(resources::networkpolicies(), Fault::Status(500));
    }
    let cell = start(&stub, 3).await;
    stub.wait_for_request(|r| r.path.ends_with("/networkpolicies") && r.status == 500)
        .await;
    stub.wait_for_request(|r| r.path == "/api/v1/pods" && r.param("continue").is_some())
        .await;
    let failed_twice =
        |r: &api_stub::RequestRecord| r.path.ends_with("/networkpolicies") && r.status == 500;
    while stub.requests().iter().filter(|r| failed_twice(r)).count() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !cell.is_loaded(),
        "published before NetworkPolicies were listed"
    );
    stub.clear_faults();
    let model = cell.wait_loaded().await;
    assert_eq!(model.pods.len(), 8);
    assert!(model.pod("shop", "web-6").is_some());
    // Every kind was listed, the pods in pages of 3 (8 pods: 3 requests).
    let pod_lists = stub
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .count();
    assert_eq!(pod_lists, 3);
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/namespaces",
        "/api/v1/nodes",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/batch/v1/jobs",
        "/apis/batch/v1/cronjobs",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ] {
        assert!(
            stub.requests()
                .iter()
                .any(|r| r.path == path && r.status == 200),
            "{path} never listed"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_broken_watch_resumes_and_a_410_relists_dropping_what_was_deleted_meanwhile() {
    let stub = ApiStub::start().await.unwrap();
    seed(&stub);
    stub.apply(pod("shop", "gone-0", "10.0.0.9", "gone", None));
    let cell = start(&stub, 500).await;
    until(&cell, "listed", |m| m.pod("shop", "gone-0").is_some()).await;
    stub.wait_for_watches(&resources::pods(), 1).await;

    // A stream broken mid-line: the watcher resumes from its last version and misses nothing.
    stub.break_watches(Some(&resources::pods()));
    stub.apply(pod("shop", "new-0", "10.0.0.10", "new", None));
    until(&cell, "new-0 seen after the break", |m| {
        m.pod("shop", "new-0").is_some()
    })
    .await;

    // The watch breaks, the pod is deleted while no watch is open (nothing runs between these
    // lines on this single-threaded runtime), and the next watch is told 410 Gone: only the
    // relist can show the deletion.
    stub.wait_for_watches(&resources::pods(), 1).await;
    let gone_uid = stub
        .objects(&resources::pods())
        .into_iter()
        .find(|p| p["metadata"]["name"] == "gone-0")
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap();
    let lists_before = stub
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .count();
    stub.break_watches(Some(&resources::pods()));
    stub.inject(resources::pods(), Fault::ExpireWatch);
    assert!(stub.delete(&pod("shop", "gone-0", "", "gone", None)));
    let model = until(&cell, "gone-0 dropped by the relist", |m| {
        m.pod("shop", "gone-0").is_none()
    })
    .await;
    assert!(model.pod("shop", "new-0").is_some());
    let lists_after = stub
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .count();
    assert!(
        lists_after > lists_before,
        "a 410 makes the watcher list again"
    );
    // The pod removed by the relist left a tombstone like any deleted pod.
    assert!(model.pod_by_uid(&gone_uid).is_some());
}

#[tokio::test]
async fn a_flow_to_a_service_resolves_to_its_new_backends_after_they_change() {
    let stub = ApiStub::start().await.unwrap();
    seed(&stub);
    stub.apply(pod("shop", "blue-0", "10.0.2.1", "blue", None));
    stub.apply(pod("shop", "green-0", "10.0.2.2", "green", None));
    stub.apply(service("shop", "web", "10.96.0.50", "blue"));
    stub.apply(slice("shop", "web", "blue-0", "10.0.2.1"));
    let cell = start(&stub, 500).await;
    let model = cell.wait_loaded().await;
    let now = jiff::Timestamp::now();
    assert_eq!(peers(&model, &flow("10.96.0.50", 80, now)), vec!["blue"]);
    drop(model);

    stub.apply(service("shop", "web", "10.96.0.50", "green"));
    stub.apply(slice("shop", "web", "green-0", "10.0.2.2"));
    let model = until(&cell, "the slice points at green", |m| {
        m.endpoint_slices
            .iter()
            .any(|s| format!("{:?}", s.endpoints).contains("10.0.2.2"))
    })
    .await;
    assert_eq!(
        peers(&model, &flow("10.96.0.50", 80, jiff::Timestamp::now())),
        vec!["green"]
    );
}

#[tokio::test]
async fn a_reused_pod_ip_resolves_to_the_pod_that_had_it_when_the_flow_was_seen() {
    let stub = ApiStub::start().await.unwrap();
    seed(&stub);
    stub.apply(pod(
        "shop",
        "old-0",
        "10.0.3.7",
        "old",
        Some("2026-01-01T00:00:00Z"),
    ));
    let cell = start(&stub, 500).await;
    cell.wait_loaded().await;
    let seen_while_old_lived = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1);

    assert!(stub.delete(&pod("shop", "old-0", "", "old", None)));
    let reused = pod("shop", "new-0", "10.0.3.7", "new", None);
    stub.apply(reused);
    let model = until(&cell, "new-0 has the address", |m| {
        m.pod_by_ip("10.0.3.7".parse().unwrap())
            .and_then(|p| p.metadata.name.as_deref())
            == Some("new-0")
    })
    .await;
    assert_eq!(model.tombstones.len(), 1);
    // A flow seen before the reuse (delivered late, from an agent's spool) names the old workload;
    // one seen now names the new one.
    assert_eq!(
        peers(&model, &flow("10.0.3.7", 8080, seen_while_old_lived)),
        vec!["old"]
    );
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
    assert_eq!(peers(&model, &flow("10.0.3.7", 8080, later)), vec!["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_live_reads_the_cluster_from_the_kubeconfig() {
    let stub = ApiStub::start().await.unwrap();
    seed(&stub);
    stub.apply(pod("shop", "blue-0", "10.0.2.1", "blue", None));
    let dir = std::env::temp_dir().join(format!("live-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    stub.write_kubeconfig(&kubeconfig).unwrap();
    let flows = dir.join("flows.jsonl");
    let record = serde_json::to_string(&flow("10.0.2.1", 8080, jiff::Timestamp::now())).unwrap();
    std::fs::write(&flows, record + "\n").unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_recommender"))
            .args(["recommend", "--live", "--flows"])
            .arg(&flows)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        out
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("kind: NetworkPolicy"), "{stdout}");
    assert!(
        stdout.contains("app: blue"),
        "the peer by its labels, read from the API: {stdout}"
    );
    assert!(stub.requests().iter().any(|r| r.path == "/api/v1/pods"));
}
