//! Lookups on the fixture cluster: pods, workloads, selectors, Services, backends, nodes.

#[path = "fixtures/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;

use fixture::{ip, labels, workload};
use flow_model::Protocol;
use recommender::cluster::{self, Cluster, IpOwner};

fn pod<'c>(c: &'c Cluster, ns: &str, name: &str) -> &'c k8s_openapi::api::core::v1::Pod {
    c.pod(ns, name)
        .unwrap_or_else(|| panic!("fixture pod {ns}/{name}"))
}

#[test]
fn fixture_loads_with_a_note_for_the_configmap() {
    let loaded = Cluster::load_files(&fixture::cluster_files()).unwrap();
    assert_eq!(loaded.notes.len(), 1, "{:?}", loaded.notes);
    assert!(loaded.notes[0].contains("ConfigMap kube-system/coredns"));
    let c = loaded.cluster;
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.pods.len(), 7 + 5 + 4);
    assert_eq!(c.namespaces.len(), 3);
}

#[test]
fn namespace_labels_include_the_name_label() {
    let c = fixture::cluster();
    assert_eq!(
        c.namespace_labels("shop"),
        labels(&[("kubernetes.io/metadata.name", "shop"), ("team", "shop")])
    );
    // `default` has no Namespace object in the fixture.
    assert_eq!(
        c.namespace_labels("default"),
        labels(&[("kubernetes.io/metadata.name", "default")])
    );
}

#[test]
fn pods_by_ip_both_families_and_terminated_ones_skipped() {
    let c = fixture::cluster();
    let by_ip = |s: &str| c.pod_by_ip(ip(s)).and_then(|p| p.metadata.name.clone());
    assert_eq!(by_ip("10.244.1.10").as_deref(), Some("web-5d8f7c9b4-x2k4q"));
    assert_eq!(
        by_ip("fd00:10:244:1::a").as_deref(),
        Some("web-5d8f7c9b4-x2k4q")
    );
    assert_eq!(by_ip("10.244.2.31"), None, "Succeeded pod keeps no address");
    assert!(matches!(c.ip_owner(ip("10.244.2.31")), IpOwner::Unknown));
    // hostNetwork pods and node addresses are nodes.
    assert!(matches!(
        c.ip_owner(ip("10.0.0.12")),
        IpOwner::Node {
            node: Some("node-b")
        }
    ));
    assert!(matches!(
        c.ip_owner(ip("203.0.113.11")),
        IpOwner::Node {
            node: Some("node-a")
        }
    ));
    assert!(matches!(
        c.ip_owner(ip("fd00::11")),
        IpOwner::Node {
            node: Some("node-a")
        }
    ));
    assert!(matches!(c.ip_owner(ip("10.244.1.40")), IpOwner::Pod(_)));
    assert!(matches!(c.ip_owner(ip("198.18.0.50")), IpOwner::Unknown));
}

#[test]
fn workloads_of_pods() {
    let c = fixture::cluster();
    let of = |ns: &str, name: &str| c.workload_of(pod(&c, ns, name));
    // Through the ReplicaSet object.
    assert_eq!(
        of("shop", "web-5d8f7c9b4-x2k4q"),
        workload("Deployment", "web")
    );
    assert_eq!(
        of("kube-system", "coredns-5d78c9869d-abcde"),
        workload("Deployment", "coredns")
    );
    // ReplicaSet not in the snapshot: by stripping the pod-template-hash.
    assert_eq!(
        of("shop", "api-v2-7f8e9d0c1-bbbbb"),
        workload("Deployment", "api-v2")
    );
    assert_eq!(
        of("data", "postgres-1"),
        workload("StatefulSet", "postgres")
    );
    assert_eq!(
        of("kube-system", "fluent-bit-7xk2p"),
        workload("DaemonSet", "fluent-bit")
    );
    // Job → CronJob through the Job object.
    assert_eq!(
        of("shop", "report-29012345-k7v2x"),
        workload("CronJob", "report")
    );
    // Job not in the snapshot, CronJob is: by the Job name.
    assert_eq!(
        of("shop", "report-29012285-zz9zz"),
        workload("CronJob", "report")
    );
    assert_eq!(of("data", "debug"), workload("Pod", "debug"));
    // Static pods are owned by their Node: they are their own workload.
    assert_eq!(
        of("kube-system", "kube-apiserver-cp-1"),
        workload("Pod", "kube-apiserver-cp-1")
    );
}

#[test]
fn selectors_of_pods() {
    let c = fixture::cluster();
    let sel = |ns: &str, name: &str| c.selector_of(pod(&c, ns, name));
    // The Deployment's selector, not the ReplicaSet's (which has pod-template-hash).
    assert_eq!(
        sel("shop", "web-5d8f7c9b4-b7m2n").unwrap(),
        labels(&[("app", "web")]).into()
    );
    assert_eq!(
        sel("shop", "api-v1-6c7d8e9f0-aaaaa").unwrap(),
        labels(&[("app", "api"), ("version", "v1")]).into()
    );
    assert_eq!(
        sel("data", "postgres-0").unwrap(),
        labels(&[("app", "postgres")]).into()
    );
    assert_eq!(
        sel("kube-system", "fluent-bit-7xk2p").unwrap(),
        labels(&[("app.kubernetes.io/name", "fluent-bit")]).into()
    );
    // A CronJob's pods: stable labels, never the controller-uid selector.
    assert_eq!(
        sel("shop", "report-29012345-k7v2x").unwrap(),
        labels(&[("app", "report")]).into()
    );
    assert_eq!(
        sel("data", "debug").unwrap(),
        labels(&[("run", "debug")]).into()
    );
    let err = sel("data", "unlabelled").unwrap_err();
    assert!(err.contains("empty podSelector"), "{err}");
}

#[test]
fn selector_with_match_expressions_is_kept_whole() {
    let mut c = fixture::cluster();
    let web = c
        .deployments
        .iter_mut()
        .find(|d| d.metadata.name.as_deref() == Some("web"))
        .unwrap();
    web.spec.selector.match_expressions = Some(vec![serde_json::from_value(
        serde_json::json!({"key": "tier", "operator": "In", "values": ["frontend"]}),
    )
    .unwrap()]);
    let p = pod(&c, "shop", "web-5d8f7c9b4-x2k4q").clone();
    let tier = serde_json::json!([{"key": "tier", "operator": "In", "values": ["frontend"]}]);
    let whole = c.selector_of(&p).unwrap();
    assert_eq!(whole.match_labels, labels(&[("app", "web")]));
    assert_eq!(
        serde_json::to_value(&whole.match_expressions).unwrap(),
        tier
    );
    let web = c
        .deployments
        .iter_mut()
        .find(|d| d.metadata.name.as_deref() == Some("web"))
        .unwrap();
    web.spec.selector.match_labels = None;
    // Expressions alone still select exactly the workload's pods: no stable-label guess.
    let expressions = c.selector_of(&p).unwrap();
    assert!(expressions.match_labels.is_empty());
    assert_eq!(
        serde_json::to_value(&expressions.match_expressions).unwrap(),
        tier
    );
}

#[test]
fn stable_labels_drop_every_unstable_one() {
    let mut all: BTreeMap<String, String> = cluster::UNSTABLE_LABELS
        .iter()
        .map(|k| (k.to_string(), "x".to_string()))
        .collect();
    all.insert("app".into(), "a".into());
    assert_eq!(cluster::stable_labels(&all), labels(&[("app", "a")]));
}

#[test]
fn services_by_cluster_ip_both_families() {
    let c = fixture::cluster();
    let name = |s: &str| {
        c.service_by_cluster_ip(ip(s))
            .and_then(|s| s.metadata.name.clone())
    };
    assert_eq!(name("10.96.0.10").as_deref(), Some("kube-dns"));
    assert_eq!(name("fd00:10:96::10").as_deref(), Some("web"));
    assert_eq!(name("10.96.10.10").as_deref(), Some("web"));
    assert_eq!(
        name("10.244.1.40"),
        None,
        "a headless Service has no ClusterIP"
    );
    assert!(cluster::is_cluster_dns(
        c.service("kube-system", "kube-dns").unwrap()
    ));
    assert_eq!(c.apiserver_addresses(), vec![ip("10.0.0.1")]);
    assert_eq!(c.apiserver_endpoints(), vec![(ip("10.0.0.1"), 6443)]);
    let dns_pod = pod(&c, "kube-system", "coredns-5d78c9869d-fghij");
    assert!(c.dns_service_of(dns_pod, 53).is_some());
    assert!(
        c.dns_service_of(dns_pod, 9153).is_none(),
        "the metrics port of the DNS pods is not DNS"
    );
}

fn backends(
    c: &Cluster,
    svc: &str,
    port: u16,
    protocol: Protocol,
    family: &str,
) -> Vec<(String, u16)> {
    let (ns, name) = svc.split_once('/').unwrap();
    let service = c.service(ns, name).unwrap();
    let sp = cluster::service_port(service, port, protocol).unwrap();
    c.backends(service, sp, ip(family))
        .into_iter()
        .map(|b| (b.ip.to_string(), b.port))
        .collect()
}

#[test]
fn backends_with_named_target_ports() {
    let c = fixture::cluster();
    // Per EndpointSlice: the same named port is 8080 on one pod, 9090 on the other; the not-ready
    // endpoint is left out.
    assert_eq!(
        backends(&c, "shop/api", 80, Protocol::Tcp, "10.96.10.20"),
        [("10.244.1.20".into(), 8080), ("10.244.2.21".into(), 9090)]
    );
    // DNS: UDP and TCP ports with the same number, different names.
    assert_eq!(
        backends(&c, "kube-system/kube-dns", 53, Protocol::Udp, "10.96.0.10"),
        [("10.244.0.2".into(), 53), ("10.244.1.2".into(), 53)]
    );
    // No EndpointSlices: selector and the pods' container ports; both families; multi-port.
    assert_eq!(
        backends(&c, "shop/web", 80, Protocol::Tcp, "10.96.10.10"),
        [
            ("10.244.1.10".into(), 8080),
            ("10.244.1.12".into(), 8080),
            ("10.244.2.11".into(), 8080)
        ]
    );
    assert_eq!(
        backends(&c, "shop/web", 9000, Protocol::Tcp, "fd00:10:96::10").len(),
        3
    );
    assert!(
        backends(&c, "shop/web", 9000, Protocol::Tcp, "fd00:10:96::10")
            .iter()
            .all(|(a, p)| a.starts_with("fd00:10:244:") && *p == 9100)
    );
    assert_eq!(
        backends(&c, "default/kubernetes", 443, Protocol::Tcp, "10.96.0.1"),
        [("10.0.0.1".into(), 6443)]
    );
    assert_eq!(
        backends(&c, "shop/payments", 443, Protocol::Tcp, "10.96.10.30"),
        [("198.18.0.50".into(), 443)]
    );
    assert!(cluster::service_port(c.service("shop", "web").unwrap(), 80, Protocol::Udp).is_none());
}

#[test]
fn legacy_endpoints_resolve_named_ports_too() {
    let mut c = fixture::cluster();
    c.endpoint_slices.retain(|s| {
        s.metadata.name.as_deref() != Some("api-4kq7z")
            && s.metadata.name.as_deref() != Some("api-p2m9c")
    });
    let endpoints = serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "api", "namespace": "shop"},
        "subsets": [
            {"addresses": [{"ip": "10.244.1.20"}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [{"ip": "10.244.2.21"}], "notReadyAddresses": [{"ip": "10.244.2.98"}],
             "ports": [{"name": "http", "port": 9090}]}
        ]
    });
    c.endpoints.push(serde_json::from_value(endpoints).unwrap());
    assert_eq!(
        backends(&c, "shop/api", 80, Protocol::Tcp, "10.96.10.20"),
        [("10.244.1.20".into(), 8080), ("10.244.2.21".into(), 9090)]
    );
    // Without any endpoint object: the pods' own named ports.
    c.endpoints.clear();
    assert_eq!(
        backends(&c, "shop/api", 80, Protocol::Tcp, "10.96.10.20"),
        [("10.244.1.20".into(), 8080), ("10.244.2.21".into(), 9090)]
    );
}

#[test]
fn named_ports_of_a_pod() {
    let c = fixture::cluster();
    let ports = cluster::named_ports(pod(&c, "kube-system", "coredns-5d78c9869d-abcde"));
    let names: Vec<_> = ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        names,
        [
            ("dns", 53, Protocol::Udp),
            ("dns-tcp", 53, Protocol::Tcp),
            ("metrics", 9153, Protocol::Tcp)
        ]
    );
}
