//! Destinations that must not silently become ipBlocks (issue 10, item 4), IPv4-mapped addresses,
//! node addresses that are not the API server, and NodePorts (item 8), through the binary.

mod world;

use serde_json::json;
use world::{block, ports_to, World};

fn web(w: &mut World) -> String {
    w.deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0)
}

#[test]
fn a_snapshot_without_services_names_every_address_it_cannot_tell_from_a_cluster_ip() {
    // `kubectl get pods,ns,nodes`: the ClusterIPs the pods call cannot be told from outside
    // addresses, and an ipBlock for a ClusterIP never matches (policy applies after translation).
    let mut w = World::new("noservices").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "10.96.0.10", 53, "UDP", &[]);
    w.flow("shop", &web, "10.96.7.7", 8080, "TCP", &[]);
    w.without(&["Service", "EndpointSlice"]);
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for address in ["10.96.0.10", "10.96.7.7"] {
        assert!(
            run.stderr.contains(address),
            "stderr must name {address}:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("no Services"), "{}", run.stderr);
}

#[test]
fn an_unknown_address_in_the_service_range_is_refused_or_named() {
    // The ClusterIPs present (10.96.0.1, 10.96.0.10) prove the Service range holds
    // 10.96.0.0/28: a ClusterIP there that no Service has (one deleted since) would be a dead
    // ipBlock, and is refused. Beyond what they prove, 10.96.0.0/12 is where the range probably
    // is (the kubernetes Service has its first address): an unknown address there is named.
    let mut w = World::new("stalecip").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "10.96.0.5", 80, "TCP", &[]);
    w.flow("shop", &web, "10.100.0.77", 80, "TCP", &[]);
    w.flow("shop", &web, "198.18.0.10", 443, "TCP", &[]);
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("10.96.0.5"), "{}", run.stderr);
    assert!(!run.stdout.contains("10.96.0.5/32"), "{}", run.stdout);
    assert!(run.stderr.contains("10.100.0.77"), "{}", run.stderr);
    assert!(run.stdout.contains("198.18.0.10/32"), "{}", run.stdout);
    assert!(!run.stderr.contains("198.18.0.10"), "{}", run.stderr);
}

#[test]
fn a_given_service_cidr_is_used() {
    let mut w = World::new("givencidr").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "10.100.3.3", 80, "TCP", &[]);
    let run = w.recommend(&["--service-cidr", "10.100.0.0/16"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("10.100.3.3"), "{}", run.stderr);
    assert!(!run.stdout.contains("10.100.3.3/32"), "{}", run.stdout);
}

#[test]
fn a_service_name_that_resolves_to_an_unknown_address_is_refused() {
    let mut w = World::new("svcname").with_coredns();
    let web = web(&mut w);
    w.flow(
        "shop",
        &web,
        "172.20.1.1",
        80,
        "TCP",
        &["orders.shop.svc.cluster.local"],
    );
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("172.20.1.1"), "{}", run.stderr);
    assert!(!run.stdout.contains("172.20.1.1/32"), "{}", run.stdout);
}

#[test]
fn loopback_unspecified_multicast_and_broadcast_are_named() {
    let mut w = World::new("special").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "127.0.0.1", 8080, "TCP", &[]);
    w.flow("shop", &web, "::1", 8080, "TCP", &[]);
    w.flow("shop", &web, "0.0.0.0", 80, "TCP", &[]);
    w.flow("shop", &web, "239.1.1.1", 5000, "UDP", &[]);
    w.flow("shop", &web, "255.255.255.255", 67, "UDP", &[]);
    let (run, verified) = w.recommend_and_verify(&[]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    for address in [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "239.1.1.1",
        "255.255.255.255",
    ] {
        assert!(
            run.stderr.contains(address),
            "stderr must name {address}:\n{}",
            run.stderr
        );
    }
    // Traffic that never leaves the pod gets no rule.
    for cidr in ["127.0.0.1/32", "::1/128", "0.0.0.0/32"] {
        assert!(!run.stdout.contains(cidr), "{cidr}:\n{}", run.stdout);
    }
}

#[test]
fn a_stale_pod_ip_is_refused() {
    let mut w = World::new("stalepod").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "10.244.1.99", 8080, "TCP", &[]);
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("10.244.1.99"), "{}", run.stderr);
    assert!(!run.stdout.contains("10.244.1.99/32"), "{}", run.stdout);
}

#[test]
fn ipv4_mapped_destinations_resolve_as_ipv4() {
    let mut w = World::new("mapped").with_coredns();
    let web = web(&mut w);
    let api = w
        .deployment("shop", "api", &[("10.244.1.11", "node-a")])
        .remove(0);
    w.service(
        "shop",
        "api",
        "10.96.20.1",
        Some(json!({"app": "api"})),
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
    );
    w.slice(
        "shop",
        "api",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        &[("10.244.1.11", Some(&api))],
    );
    w.flow("shop", &web, "::ffff:10.96.0.10", 53, "UDP", &[]);
    w.flow("shop", &web, "::ffff:10.96.20.1", 80, "TCP", &[]);
    let (run, verified) = w.recommend_and_verify(&[]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    let policy = run.policy("shop", "web-egress");
    assert_eq!(
        ports_to(&policy, |p| world::selects(p, "app", "api")),
        ["8080/TCP"],
        "{}",
        run.stdout
    );
    assert_eq!(
        ports_to(&policy, |p| world::selects(p, "k8s-app", "kube-dns")),
        ["53/TCP", "53/UDP"],
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("ipBlock"), "{}", run.stdout);
}

#[test]
fn the_kubelet_on_the_apiserver_node_is_not_the_api_server() {
    let mut w = World::new("kubelet").with_coredns();
    let web = web(&mut w);
    w.flow("shop", &web, "10.96.0.1", 443, "TCP", &[]);
    w.flow("shop", &web, "10.0.0.1", 10250, "TCP", &[]);
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("# Kubernetes API server"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("# node cp-1"), "{}", run.stdout);
    let policy = run.policy("shop", "web-egress");
    // The API server rule does not carry the kubelet port, and vice versa.
    for (peers, ports) in world::rules(&policy) {
        if peers.iter().any(|p| block(p, "10.0.0.1/32")) {
            let ports = world::port_labels(&ports);
            assert!(
                ports == ["6443/TCP"] || ports == ["10250/TCP"],
                "{ports:?}\n{}",
                run.stdout
            );
        }
    }
    assert_eq!(
        run.stdout.matches("# Kubernetes API server").count(),
        1,
        "{}",
        run.stdout
    );
}

#[test]
fn the_cilium_kube_apiserver_entity_is_emitted_once() {
    // A highly available control plane: two API server addresses, reached on different ports
    // (one through the Service, one directly), which end up in different planned rules.
    let mut w = World::new("entity").with_coredns();
    w.objects
        .retain(|o| !(o["kind"] == "EndpointSlice" && o["metadata"]["namespace"] == "default"));
    w.slice(
        "default",
        "kubernetes",
        json!([{"name": "https", "port": 6443, "protocol": "TCP"}]),
        &[("10.0.0.1", None), ("10.0.0.2", None)],
    );
    let web = web(&mut w);
    w.flow("shop", &web, "10.96.0.1", 443, "TCP", &[]);
    w.flow("shop", &web, "10.0.0.2", 6443, "TCP", &[]);
    w.flow("shop", &web, "10.0.0.2", 6444, "TCP", &[]);
    let run = w.recommend(&["--format", "cilium"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("- kube-apiserver").count(),
        1,
        "{}",
        run.stdout
    );
}

#[test]
fn a_node_port_destination_gets_a_note() {
    let mut w = World::new("nodeport").with_coredns();
    let web = web(&mut w);
    let api = w
        .deployment("shop", "api", &[("10.244.1.11", "node-a")])
        .remove(0);
    let svc = w.service("shop", "api", "10.96.20.1", Some(json!({"app": "api"})), json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]));
    svc["spec"]["type"] = json!("NodePort");
    w.slice(
        "shop",
        "api",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        &[("10.244.1.11", Some(&api))],
    );
    w.flow("shop", &web, "10.0.0.11", 30080, "TCP", &[]);
    let run = w.recommend(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("NodePort"), "{}", run.stderr);
    assert!(run.stderr.contains("shop/api"), "{}", run.stderr);
    assert!(run.stdout.contains("NodePort"), "{}", run.stdout);
}
