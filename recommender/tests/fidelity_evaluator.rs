//! The evaluator's exceptions from the API documentation (issue 10, item 7): traffic between a pod
//! and the node it runs on is always allowed, and a pod can always reach itself.

mod world;

use serde_json::json;
use world::World;

/// Every pod of shop isolated for both directions, nothing allowed.
const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
";

/// shop/web on node-a (10.0.0.11), 10.244.1.10, port 8080, behind the Service web (10.96.30.1:80).
fn cluster() -> (World, String) {
    let mut w = World::new("exceptions").with_coredns();
    let web = w
        .deployment_with(
            "shop",
            "web",
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            &[("10.244.1.10", "node-a")],
            json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
        )
        .remove(0);
    w.service(
        "shop",
        "web",
        "10.96.30.1",
        Some(json!({"app": "web"})),
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]),
    );
    w.slice(
        "shop",
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        &[("10.244.1.10", Some(&web))],
    );
    (w, format!("shop/{web}"))
}

#[test]
fn a_pod_and_its_own_node_always_reach_each_other() {
    let (w, web) = cluster();
    let to_node = w.evaluate(DENY_ALL, &web, "10.0.0.11", "10250", "TCP");
    assert_eq!(to_node.code, 0, "{}{}", to_node.stdout, to_node.stderr);
    assert!(to_node.stdout.starts_with("allowed"), "{}", to_node.stdout);
    assert!(to_node.stdout.contains("node"), "{}", to_node.stdout);
    let from_node = w.evaluate(DENY_ALL, "10.0.0.11", &web, "8080", "TCP");
    assert_eq!(
        from_node.code, 0,
        "{}{}",
        from_node.stdout, from_node.stderr
    );
    // Another node is not exempt.
    let other = w.evaluate(DENY_ALL, &web, "10.0.0.1", "10250", "TCP");
    assert_eq!(other.code, 1, "{}{}", other.stdout, other.stderr);
    let from_other = w.evaluate(DENY_ALL, "10.0.0.1", &web, "8080", "TCP");
    assert_eq!(
        from_other.code, 1,
        "{}{}",
        from_other.stdout, from_other.stderr
    );
}

#[test]
fn a_pod_can_always_reach_itself() {
    let (w, web) = cluster();
    for to in [web.as_str(), "10.244.1.10"] {
        let run = w.evaluate(DENY_ALL, &web, to, "8080", "TCP");
        assert_eq!(run.code, 0, "{to}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("itself"), "{}", run.stdout);
    }
    // Through its own Service, when it is the backend.
    let hairpin = w.evaluate(DENY_ALL, &web, "10.96.30.1", "80", "TCP");
    assert_eq!(hairpin.code, 0, "{}{}", hairpin.stdout, hairpin.stderr);
}

#[test]
fn verify_accepts_traffic_to_the_own_node_that_no_policy_lists() {
    let (mut w, web) = cluster();
    let pod = web.trim_start_matches("shop/").to_owned();
    w.flow("shop", &pod, "10.0.0.11", 10250, "TCP", &[]);
    let (cluster, flows) = w.write();
    let policies = w.file("deny.yaml", DENY_ALL);
    let run = world::run(&[
        "verify",
        "--cluster",
        &cluster,
        "--flows",
        &flows,
        "--policies",
        &policies,
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}
