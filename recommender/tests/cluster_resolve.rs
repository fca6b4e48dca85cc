//! Resolution of flows against the fixture cluster, and the evaluator connections they stand for.

#[path = "fixtures/fixture.rs"]
mod fixture;

use fixture::{flow, ip, labels, workload};
use flow_model::{FlowRecord, Protocol, WorkloadRef};
use recommender::cluster::Cluster;
use recommender::policy::Endpoint;
use recommender::resolve::{self, Observation, Peer, SourceWorkload};

const WEB: &str = "shop/web-5d8f7c9b4-x2k4q";

/// (peer, port) of each resolved flow; asserts there is no note.
fn peers(c: &Cluster, record: &FlowRecord) -> Vec<(Peer, u16)> {
    let r = resolve::resolve(c, record);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    for f in &r.flows {
        assert_eq!(f.protocol, record.destination.protocol);
        assert_eq!(*f.observed, Observation::of(record));
    }
    r.flows
        .into_iter()
        .map(|f| (Peer::clone(&f.peer), f.port))
        .collect()
}

fn pods_peer(
    ns: &str,
    w: WorkloadRef,
    selector: &[(&str, &str)],
    service: Option<&str>,
    dns: bool,
) -> Peer {
    Peer::Pods {
        namespace: ns.into(),
        workload: w,
        selector: labels(selector).into(),
        service: service.map(Into::into),
        cluster_dns: dns,
    }
}

fn coredns(service: Option<&str>) -> Peer {
    pods_peer(
        "kube-system",
        workload("Deployment", "coredns"),
        &[("k8s-app", "kube-dns")],
        service,
        true,
    )
}

#[test]
fn source_is_the_pods_workload_and_selector() {
    let c = fixture::cluster();
    let r = resolve::resolve(&c, &flow(WEB, "198.18.0.10", 443, "TCP"));
    assert_eq!(
        *r.flows[0].source,
        SourceWorkload {
            namespace: "shop".into(),
            workload: workload("Deployment", "web"),
            selector: labels(&[("app", "web")]).into(),
        }
    );
    let r = resolve::resolve(
        &c,
        &flow("shop/report-29012345-k7v2x", "198.18.0.10", 443, "TCP"),
    );
    assert_eq!(r.flows[0].source.workload, workload("CronJob", "report"));
    assert_eq!(
        r.flows[0].source.selector,
        labels(&[("app", "report")]).into()
    );
}

#[test]
fn cluster_dns_through_the_service_and_directly() {
    let c = fixture::cluster();
    // Two backends of the same workload: one peer.
    assert_eq!(
        peers(&c, &flow(WEB, "10.96.0.10", 53, "UDP")),
        [(coredns(Some("kube-dns")), 53)]
    );
    assert_eq!(
        peers(&c, &flow(WEB, "10.96.0.10", 53, "TCP")),
        [(coredns(Some("kube-dns")), 53)]
    );
    assert_eq!(
        peers(&c, &flow(WEB, "10.244.1.2", 53, "UDP")),
        [(coredns(None), 53)]
    );
}

#[test]
fn cluster_dns_without_pods_in_the_snapshot_still_resolves() {
    let mut c = fixture::cluster();
    c.pods
        .retain(|p| p.metadata.namespace.as_deref() != Some("kube-system"));
    c.endpoint_slices
        .retain(|s| s.metadata.namespace.as_deref() != Some("kube-system"));
    let r = resolve::resolve(&c, &flow(WEB, "10.96.0.10", 53, "UDP"));
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert_eq!(
        r.flows
            .iter()
            .map(|f| (Peer::clone(&f.peer), f.port))
            .collect::<Vec<_>>(),
        [(
            pods_peer(
                "kube-system",
                workload("Service", "kube-dns"),
                &[("k8s-app", "kube-dns")],
                Some("kube-dns"),
                true
            ),
            53
        )]
    );
}

#[test]
fn service_with_named_target_port_differing_per_backend() {
    let c = fixture::cluster();
    assert_eq!(
        peers(&c, &flow(WEB, "10.96.10.20", 80, "TCP")),
        [
            (
                pods_peer(
                    "shop",
                    workload("Deployment", "api-v1"),
                    &[("app", "api"), ("version", "v1")],
                    Some("api"),
                    false
                ),
                8080
            ),
            (
                pods_peer(
                    "shop",
                    workload("Deployment", "api-v2"),
                    &[("app", "api"), ("version", "v2")],
                    Some("api"),
                    false
                ),
                9090
            ),
        ]
    );
}

#[test]
fn multi_port_dual_stack_service() {
    let c = fixture::cluster();
    let web = |port| {
        (
            pods_peer(
                "shop",
                workload("Deployment", "web"),
                &[("app", "web")],
                Some("web"),
                false,
            ),
            port,
        )
    };
    let from = "data/debug";
    assert_eq!(
        peers(&c, &flow(from, "10.96.10.10", 80, "TCP")),
        [web(8080)]
    );
    assert_eq!(
        peers(&c, &flow(from, "10.96.10.10", 9000, "TCP")),
        [web(9100)]
    );
    assert_eq!(
        peers(&c, &flow(from, "fd00:10:96::10", 80, "TCP")),
        [web(8080)]
    );
    // A pod IPv6 address directly.
    let direct = pods_peer(
        "shop",
        workload("Deployment", "web"),
        &[("app", "web")],
        None,
        false,
    );
    assert_eq!(
        peers(&c, &flow(from, "fd00:10:244:2::b", 8080, "TCP")),
        [(direct, 8080)]
    );
}

#[test]
fn load_balancer_and_external_ips_go_through_the_service_on_its_ports() {
    let c = fixture::cluster();
    let web = pods_peer(
        "shop",
        workload("Deployment", "web"),
        &[("app", "web")],
        Some("web-public"),
        false,
    );
    assert_eq!(
        peers(&c, &flow("data/debug", "203.0.113.11", 443, "TCP")),
        [(web.clone(), 8080)]
    );
    assert_eq!(
        peers(&c, &flow("data/debug", "198.51.100.7", 443, "TCP")),
        [(web, 8080)]
    );
    // The same address on a port the Service does not have is the node's.
    let node = Peer::Node {
        ip: ip("203.0.113.11"),
        node: "node-a".into(),
    };
    assert_eq!(
        peers(&c, &flow("data/debug", "203.0.113.11", 10250, "TCP")),
        [(node, 10250)]
    );
    let conns = resolve::connections_for(&c, &flow("data/debug", "198.51.100.7", 443, "TCP"));
    assert_eq!(conns.service.as_deref(), Some("shop/web-public"));
    assert_eq!(conns.connections.len(), 3);
    assert!(conns.connections.iter().all(|c| c.port == 8080));
}

#[test]
fn apiserver_through_the_kubernetes_service_and_directly() {
    let c = fixture::cluster();
    let api = Peer::ApiServer { ip: ip("10.0.0.1") };
    assert_eq!(
        peers(&c, &flow(WEB, "10.96.0.1", 443, "TCP")),
        [(api.clone(), 6443)]
    );
    assert_eq!(
        peers(&c, &flow(WEB, "10.0.0.1", 6443, "TCP")),
        [(api, 6443)]
    );
}

#[test]
fn headless_service_pods_resolve_directly() {
    let c = fixture::cluster();
    let pg = pods_peer(
        "data",
        workload("StatefulSet", "postgres"),
        &[("app", "postgres")],
        None,
        false,
    );
    assert_eq!(
        peers(&c, &flow(WEB, "10.244.1.40", 5432, "TCP")),
        [(pg, 5432)]
    );
}

#[test]
fn selectorless_service_to_an_external_address() {
    let c = fixture::cluster();
    // The names the client resolved are the Service's, not this address's.
    let ext = Peer::External {
        ip: ip("198.18.0.50"),
        service: Some("shop/payments".into()),
    };
    assert_eq!(
        peers(&c, &flow(WEB, "10.96.10.30", 443, "TCP")),
        [(ext, 443)]
    );
}

#[test]
fn nodes_and_host_network_pods_are_nodes() {
    let c = fixture::cluster();
    let node = |ip_: &str, name: &str| Peer::Node {
        ip: ip(ip_),
        node: name.into(),
    };
    assert_eq!(
        peers(&c, &flow(WEB, "10.0.0.12", 10250, "TCP")),
        [(node("10.0.0.12", "node-b"), 10250)]
    );
    assert_eq!(
        peers(&c, &flow(WEB, "fd00::11", 10250, "TCP")),
        [(node("fd00::11", "node-a"), 10250)]
    );
}

#[test]
fn anything_else_is_external() {
    let c = fixture::cluster();
    let ext = |a: &str| Peer::External {
        ip: ip(a),
        service: None,
    };
    assert_eq!(
        peers(&c, &flow(WEB, "198.18.0.10", 443, "TCP")),
        [(ext("198.18.0.10"), 443)]
    );
    assert_eq!(
        peers(&c, &flow(WEB, "2001:db8::1", 443, "TCP")),
        [(ext("2001:db8::1"), 443)]
    );
    // A finished pod's address belongs to nobody, and inside a node's pod range an ipBlock for it
    // would follow the address to the next pod: refused, naming the pod it was.
    let r = resolve::resolve(&c, &flow(WEB, "10.244.2.31", 80, "TCP"));
    assert!(r.flows.is_empty(), "{:?}", r.flows);
    assert!(
        r.notes[0].contains("node node-b's pod range 10.244.2.0/24")
            && r.notes[0].contains("shop/report-29012285-zz9zz, which has finished"),
        "{:?}",
        r.notes
    );
}

#[test]
fn unresolvable_records_are_notes() {
    let c = fixture::cluster();
    let note = |record: FlowRecord| {
        let r = resolve::resolve(&c, &record);
        assert!(r.flows.is_empty(), "{:?}", r.flows);
        assert_eq!(r.notes.len(), 1);
        r.notes[0].clone()
    };
    let n = note(flow(WEB, "10.96.10.10", 8080, "TCP"));
    assert!(n.starts_with("shop/web-5d8f7c9b4-x2k4q -> 10.96.10.10:8080/TCP: Service shop/web has no port 8080/TCP"), "{n}");
    let n = note(flow(WEB, "10.96.10.10", 80, "UDP"));
    assert!(n.contains("no port 80/UDP"), "{n}");
    let n = note(flow("data/unlabelled", "198.18.0.10", 443, "TCP"));
    assert!(n.contains("empty podSelector"), "{n}");
    let n = note(flow(
        "kube-system/kube-proxy-q8r4t",
        "10.0.0.1",
        6443,
        "TCP",
    ));
    assert!(n.contains("hostNetwork"), "{n}");
    let mut anonymous = flow("shop/gone-pod", "198.18.0.10", 443, "TCP");
    anonymous.source.namespace = None;
    let n = note(anonymous.clone());
    assert!(n.contains("no namespace"), "{n}");
    let conns = resolve::connections_for(&c, &anonymous);
    assert!(conns.connections.is_empty() && conns.notes[0].contains("no namespace"));
    let mut host = flow(WEB, "10.0.0.1", 6443, "TCP");
    host.source = serde_json::from_value(serde_json::json!({"kind": "host"})).unwrap();
    let n = note(host);
    assert!(
        n.starts_with("host node-a -> 10.0.0.1:6443/TCP: a node process"),
        "{n}"
    );
}

#[test]
fn source_missing_from_the_snapshot_uses_the_record() {
    let c = fixture::cluster();
    let mut record = flow("shop/web-5d8f7c9b4-gone1", "198.18.0.10", 443, "TCP");
    record.source.workload = Some(workload("ReplicaSet", "web-5d8f7c9b4"));
    record.source.labels = labels(&[
        ("app", "web"),
        ("tier", "frontend"),
        ("pod-template-hash", "5d8f7c9b4"),
    ]);
    let r = resolve::resolve(&c, &record);
    assert_eq!(r.flows[0].source.workload, workload("Deployment", "web"));
    assert_eq!(
        r.flows[0].source.selector,
        labels(&[("app", "web")]).into(),
        "the Deployment's selector"
    );
    // Workload unknown to the snapshot: stable labels.
    record.source.workload = Some(workload("Deployment", "gone"));
    let r = resolve::resolve(&c, &record);
    assert_eq!(
        r.flows[0].source.selector,
        labels(&[("app", "web"), ("tier", "frontend")]).into()
    );
}

#[test]
fn records_merge_by_key_before_resolution() {
    let c = fixture::cluster();
    let a = flow(WEB, "198.18.0.10", 443, "TCP");
    let mut b = a.clone();
    b.destination.dns_names = vec!["other.example.test".into()];
    let other = flow(WEB, "198.18.0.11", 443, "TCP");
    let merged = resolve::merge_records([a, other, b]);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0].count, 6);
    assert_eq!(merged[0].destination.dns_names.len(), 2);
    let all = resolve::resolve_all(&c, &merged);
    assert_eq!(all.flows.len(), 2);
}

#[test]
fn connections_go_through_the_service_to_every_backend() {
    let c = fixture::cluster();
    let conns = resolve::connections_for(&c, &flow(WEB, "10.96.10.20", 80, "TCP"));
    assert!(conns.notes.is_empty(), "{:?}", conns.notes);
    assert_eq!(conns.service.as_deref(), Some("shop/api"));
    assert_eq!(conns.connections.len(), 2);
    let first = &conns.connections[0];
    let Endpoint::Pod {
        namespace,
        name,
        ip: src,
        namespace_labels,
        ..
    } = &first.from
    else {
        panic!()
    };
    assert_eq!(
        (namespace.as_str(), name.as_str()),
        ("shop", "web-5d8f7c9b4-x2k4q")
    );
    assert_eq!(*src, Some(ip("10.244.1.10")));
    assert_eq!(namespace_labels["team"], "shop");
    let targets: Vec<_> = conns
        .connections
        .iter()
        .map(|c| match &c.to {
            Endpoint::Pod { name, ports, .. } => (name.clone(), c.port, ports[0].port),
            Endpoint::Ip(_) => panic!("pod expected"),
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("api-v1-6c7d8e9f0-aaaaa".into(), 8080, 8080),
            ("api-v2-7f8e9d0c1-bbbbb".into(), 9090, 9090)
        ]
    );
    assert!(conns
        .connections
        .iter()
        .all(|c| c.protocol == Protocol::Tcp));
}

#[test]
fn connections_to_addresses_and_v6_source_address() {
    let c = fixture::cluster();
    let conns = resolve::connections_for(&c, &flow(WEB, "fd00:10:96::10", 80, "TCP"));
    assert_eq!(conns.connections.len(), 3);
    let Endpoint::Pod { ip: src, .. } = &conns.connections[0].from else {
        panic!()
    };
    assert_eq!(*src, Some(ip("fd00:10:244:1::a")));
    let conns = resolve::connections_for(&c, &flow(WEB, "10.96.0.1", 443, "TCP"));
    assert_eq!(conns.connections[0].to, Endpoint::Ip(ip("10.0.0.1")));
    assert_eq!(conns.connections[0].port, 6443);
    let conns = resolve::connections_for(&c, &flow(WEB, "10.0.0.12", 10250, "TCP"));
    assert_eq!(conns.connections[0].to, Endpoint::Ip(ip("10.0.0.12")));
    let conns = resolve::connections_for(&c, &flow(WEB, "10.96.10.10", 81, "TCP"));
    assert!(conns.connections.is_empty());
    assert!(
        conns.notes[0].contains("no port 81/TCP"),
        "{:?}",
        conns.notes
    );
}

#[test]
fn a_resolver_memoizes_without_mixing_records_up() {
    let c = fixture::cluster();
    let mut a = flow(WEB, "198.18.0.10", 443, "TCP");
    a.destination.dns_names = vec!["a.example.test".into()];
    let mut b = flow("shop/web-5d8f7c9b4-b7m2n", "198.18.0.10", 443, "TCP");
    b.destination.dns_names = vec!["b.example.test".into()];
    let records = [
        a.clone(),
        b.clone(),
        flow(WEB, "10.96.10.20", 80, "TCP"),
        flow("data/debug", "10.96.10.20", 80, "TCP"),
        flow("data/unlabelled", "10.96.10.20", 80, "TCP"),
        flow(WEB, "10.96.10.10", 8080, "TCP"),
    ];
    let mut resolver = resolve::Resolver::new(&c);
    for record in &records {
        assert_eq!(resolver.resolve(record), resolve::resolve(&c, record));
        assert_eq!(
            resolver.connections_for(record),
            resolve::connections_for(&c, record)
        );
    }
    let all = resolve::resolve_all(&c, &records);
    let names: Vec<_> = all
        .flows
        .iter()
        .filter_map(|f| match &*f.peer {
            Peer::External { .. } => f.observed.dns_names.first().map(String::as_str),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a.example.test", "b.example.test"]);
    assert_eq!(all.notes.len(), 2, "{:?}", all.notes);
    // The two replicas of web are one shared source.
    assert!(std::sync::Arc::ptr_eq(
        &all.flows[0].source,
        &all.flows[1].source
    ));
}
