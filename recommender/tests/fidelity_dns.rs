//! What "the cluster DNS" is, end to end through the binary: the DNS Service's DNS ports only
//! (issue 10, item 1), one definition of the DNS Service and what happens without one, and
//! NodeLocal DNSCache (item 2).

mod synth_common;
mod world;

use serde_json::Value;
use world::{block, ports_to, rules, selects, World};

const DNS_PORTS: [&str; 2] = ["53/TCP", "53/UDP"];

/// shop/web (10.244.1.10) resolving through kube-dns, and monitoring/prometheus (10.244.1.20)
/// scraping CoreDNS metrics on 9153, directly and through the Service.
fn scraped() -> (World, String, String) {
    let mut w = World::new("scraped").with_coredns();
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    let prom = w
        .deployment("monitoring", "prometheus", &[("10.244.1.20", "node-a")])
        .remove(0);
    w.flow("shop", &web, "10.96.0.10", 53, "UDP", &[]);
    w.flow("monitoring", &prom, "10.244.0.2", 9153, "TCP", &[]);
    w.flow("monitoring", &prom, "10.96.0.10", 9153, "TCP", &[]);
    (w, web, prom)
}

fn dns_pods(peer: &Value) -> bool {
    selects(peer, "k8s-app", "kube-dns")
}

#[test]
fn a_metrics_scrape_of_the_dns_pods_is_not_dns() {
    let (w, ..) = scraped();
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    // The namespace of the scraper keeps DNS on the DNS ports, not on what it scraped.
    let deny = run.policy("monitoring", "default-deny-all-egress");
    assert_eq!(ports_to(&deny, dns_pods), DNS_PORTS, "{}", run.stdout);
    // The scraper reaches the CoreDNS pods on 9153/TCP only: no UDP twin, not called DNS.
    let prom = run.policy("monitoring", "prometheus-egress");
    assert_eq!(ports_to(&prom, dns_pods), ["9153/TCP"], "{}", run.stdout);
    assert!(
        !run.stdout.contains("9153/UDP") && !run.stdout.contains("port: 9153\n      protocol: UDP")
    );
    let comments: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("# cluster DNS"))
        .collect();
    assert!(comments.iter().all(|c| !c.contains("9153")), "{comments:?}");
}

#[test]
fn cilium_puts_the_dns_rule_on_dns_ports_only() {
    let (w, ..) = scraped();
    let run = w.recommend(&["--format", "cilium"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let prom = run.policy("monitoring", "prometheus-egress");
    for rule in prom["spec"]["egress"].as_array().unwrap() {
        for port_rule in rule["toPorts"].as_array().unwrap() {
            let ports: Vec<&str> = port_rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_str().unwrap())
                .collect();
            if ports.contains(&"9153") {
                assert!(
                    port_rule["rules"].is_null(),
                    "a DNS rule on the metrics port:\n{}",
                    run.stdout
                );
            }
        }
    }
}

#[test]
fn default_deny_allows_the_dns_target_port_not_the_service_port() {
    // CoreDNS listening on 5353 behind the Service's port 53 (targetPort `dns`): after Service
    // translation the pods receive on 5353, which is what a policy must allow.
    let mut w = World::new("target5353");
    w.coredns(
        "kube-dns",
        serde_json::json!({"k8s-app": "kube-dns"}),
        serde_json::json!({"k8s-app": "kube-dns"}),
        5353,
    );
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    w.flow(
        "shop",
        &web,
        "198.18.0.10",
        443,
        "TCP",
        &["api.example.test"],
    );
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    let deny = run.policy("shop", "default-deny-all-egress");
    assert_eq!(
        ports_to(&deny, dns_pods),
        ["5353/TCP", "5353/UDP"],
        "{}",
        run.stdout
    );
    // web resolved a name without a DNS flow in the window: it gets DNS on the real port too.
    let web = run.policy("shop", "web-egress");
    assert_eq!(
        ports_to(&web, dns_pods),
        ["5353/TCP", "5353/UDP"],
        "{}",
        run.stdout
    );
}

#[test]
fn a_renamed_dns_service_is_the_cluster_dns_everywhere() {
    // RKE2-style: the DNS Service is not called kube-dns but carries `k8s-app: kube-dns`, and its
    // pods are labelled otherwise.
    let mut w = World::new("renamed");
    let pods = serde_json::json!({"app.kubernetes.io/name": "rke2-coredns"});
    w.coredns(
        "rke2-coredns-rke2-coredns",
        serde_json::json!({"k8s-app": "kube-dns"}),
        pods,
        53,
    );
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    let api = w
        .deployment("shop", "api", &[("10.244.1.11", "node-a")])
        .remove(0);
    w.flow("shop", &web, "10.244.1.11", 8080, "TCP", &[]);
    // api resolved a name, but no DNS flow was recorded in the window: it needs the DNS rule.
    w.flow(
        "shop",
        &api,
        "198.18.0.10",
        443,
        "TCP",
        &["api.example.test"],
    );
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    let deny = run.policy("shop", "default-deny-all-egress");
    let rke2 = |p: &Value| selects(p, "app.kubernetes.io/name", "rke2-coredns");
    assert_eq!(ports_to(&deny, rke2), DNS_PORTS, "{}", run.stdout);
    assert_eq!(
        ports_to(&run.policy("shop", "api-egress"), rke2),
        DNS_PORTS,
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("k8s-app: kube-dns"),
        "a guessed selector:\n{}",
        run.stdout
    );
}

#[test]
fn without_a_dns_service_the_output_says_so_and_keeps_dns_open() {
    let mut w = World::new("nodns");
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    w.flow(
        "shop",
        &web,
        "198.18.0.10",
        443,
        "TCP",
        &["api.example.test"],
    );
    let run = w.recommend(&["--default-deny"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("no cluster DNS Service"),
        "stderr must say it:\n{}",
        run.stderr
    );
    // No guessed selector: DNS stays allowed on port 53 to any address, as the guide's unscoped
    // default-deny does, and the output says why.
    assert!(!run.stdout.contains("k8s-app: kube-dns"), "{}", run.stdout);
    let deny = run.policy("shop", "default-deny-all-egress");
    let dns_rules: Vec<_> = rules(&deny)
        .into_iter()
        .filter(|(peers, _)| peers.is_empty())
        .collect();
    assert_eq!(dns_rules.len(), 1, "{}", run.stdout);
    assert_eq!(world::port_labels(&dns_rules[0].1), DNS_PORTS);
    assert!(
        run.stdout.contains("no cluster DNS Service"),
        "{}",
        run.stdout
    );
}

#[test]
fn node_local_dns_cache_is_cluster_dns_as_an_ip_block() {
    let mut w = World::new("nodelocal")
        .with_coredns()
        .with_node_local_dns("169.254.20.10,10.96.0.10");
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    let api = w
        .deployment("shop", "api", &[("10.244.1.11", "node-a")])
        .remove(0);
    w.flow("shop", &web, "169.254.20.10", 53, "UDP", &[]);
    w.flow(
        "shop",
        &web,
        "198.18.0.10",
        443,
        "TCP",
        &["api.example.test"],
    );
    w.flow("shop", &api, "10.96.0.10", 53, "UDP", &[]);
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    synth_common::validate(&run.stdout, "node-local-dns");
    let local = |p: &Value| block(p, "169.254.20.10/32");
    // The node cache also answers on the kube-dns ClusterIP without Service translation.
    let cluster_ip = |p: &Value| block(p, "10.96.0.10/32");
    for name in ["default-deny-all-egress", "web-egress", "api-egress"] {
        let policy = run.policy("shop", name);
        assert_eq!(
            ports_to(&policy, local),
            DNS_PORTS,
            "{name}:\n{}",
            run.stdout
        );
        assert_eq!(
            ports_to(&policy, cluster_ip),
            DNS_PORTS,
            "{name}:\n{}",
            run.stdout
        );
        assert_eq!(
            ports_to(&policy, dns_pods),
            DNS_PORTS,
            "{name}:\n{}",
            run.stdout
        );
    }
    // Not an external peer: no "no DNS name observed" ipBlock comment for it.
    assert!(!run
        .stdout
        .contains("# no DNS name observed\n    - ipBlock:\n        cidr: \"169.254.20.10/32\""));
}

#[test]
fn node_local_dns_cache_on_the_address_its_daemonset_binds() {
    let mut w = World::new("nodelocal2510")
        .with_coredns()
        .with_node_local_dns("169.254.25.10");
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    w.flow("shop", &web, "169.254.25.10", 53, "UDP", &[]);
    w.flow(
        "shop",
        &web,
        "198.18.0.10",
        443,
        "TCP",
        &["api.example.test"],
    );
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    let deny = run.policy("shop", "default-deny-all-egress");
    assert_eq!(
        ports_to(&deny, |p| block(p, "169.254.25.10/32")),
        DNS_PORTS,
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("169.254.20.10"), "{}", run.stdout);

    // Cilium: toFQDNs only learn names from DNS that goes through the DNS proxy, so the DNS rule
    // must sit on the address the pods send their queries to.
    let cilium = w.recommend(&["--format", "cilium"]);
    let web = cilium.policy("shop", "web-egress");
    let dns_rule_on_cache = web["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .any(|rule| {
            let on_cache = rule["toCIDRSet"]
                .as_array()
                .is_some_and(|set| set.iter().any(|c| c["cidr"] == "169.254.25.10/32"));
            on_cache && rule["toPorts"][0]["rules"]["dns"].is_array()
        });
    assert!(dns_rule_on_cache, "{}", cilium.stdout);
    assert!(cilium.stdout.contains("toFQDNs"), "{}", cilium.stdout);
}
