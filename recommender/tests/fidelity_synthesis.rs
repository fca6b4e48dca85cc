//! Selectors with matchExpressions (issue 10, item 3), no silent widening to the internet
//! (item 5), and ingress for Services reachable from outside (item 8), through the binary.

mod synth_common;
mod world;

use serde_json::{json, Value};
use world::World;

/// `shop/api-stable` selects `app=api, track In (stable)`; `shop/api-canary` selects
/// `app=api, track=canary`. web calls a stable pod; the stable API calls the outside.
fn tracks() -> (World, String, String, String) {
    let mut w = World::new("tracks").with_coredns();
    let web = w
        .deployment("shop", "web", &[("10.244.1.10", "node-a")])
        .remove(0);
    let port = json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
    let stable = w.deployment_with("shop", "api-stable",
        json!({"matchLabels": {"app": "api"}, "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]}]}),
        json!({"app": "api", "track": "stable"}), &[("10.244.1.11", "node-a")], port.clone()).remove(0);
    let canary = w
        .deployment_with(
            "shop",
            "api-canary",
            json!({"matchLabels": {"app": "api", "track": "canary"}}),
            json!({"app": "api", "track": "canary"}),
            &[("10.244.1.12", "node-a")],
            port,
        )
        .remove(0);
    w.flow("shop", &web, "10.244.1.11", 8080, "TCP", &[]);
    w.flow("shop", &stable, "198.18.0.10", 443, "TCP", &[]);
    (w, web, stable, canary)
}

fn expressions(selector: &Value) -> Value {
    selector["matchExpressions"].clone()
}

#[test]
fn match_expressions_are_kept_for_sources_peers_and_ingress() {
    let (w, web, _, canary) = tracks();
    let (run, verified) = w.recommend_and_verify(&["--with-ingress"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, run.stdout);
    synth_common::validate(&run.stdout, "match-expressions");
    let track = json!([{"key": "track", "operator": "In", "values": ["stable"]}]);
    let source = run.policy("shop", "api-stable-egress");
    assert_eq!(
        expressions(&source["spec"]["podSelector"]),
        track,
        "{}",
        run.stdout
    );
    let ingress = run.policy("shop", "api-stable-ingress");
    assert_eq!(
        expressions(&ingress["spec"]["podSelector"]),
        track,
        "{}",
        run.stdout
    );
    let web_policy = run.policy("shop", "web-egress");
    let peer = &world::rules(&web_policy)[0].0[0];
    assert_eq!(expressions(&peer["podSelector"]), track, "{}", run.stdout);

    // Evaluated as Kubernetes does: web may not reach the canary, and the canary is not isolated
    // by the stable API's egress policy.
    let to_canary = w.evaluate(
        &run.stdout,
        &format!("shop/{web}"),
        &format!("shop/{canary}"),
        "8080",
        "TCP",
    );
    assert_eq!(
        to_canary.code, 1,
        "{}{}",
        to_canary.stdout, to_canary.stderr
    );
    let from_canary = w.evaluate(
        &run.stdout,
        &format!("shop/{canary}"),
        "198.18.0.99",
        "443",
        "TCP",
    );
    assert_eq!(
        from_canary.code, 0,
        "{}{}",
        from_canary.stdout, from_canary.stderr
    );
    assert!(
        from_canary.stdout.contains("not isolated"),
        "{}",
        from_canary.stdout
    );
}

#[test]
fn match_expressions_in_cilium_selectors() {
    let (w, ..) = tracks();
    let run = w.recommend(&["--format", "cilium"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let track = json!([{"key": "track", "operator": "In", "values": ["stable"]}]);
    let source = run.policy("shop", "api-stable-egress");
    assert_eq!(
        expressions(&source["spec"]["endpointSelector"]),
        track,
        "{}",
        run.stdout
    );
    let web = run.policy("shop", "web-egress");
    let endpoints = web["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| {
            r["toEndpoints"]
                .as_array()
                .filter(|e| e[0]["matchLabels"]["app"] == "api")
                .cloned()
        })
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(expressions(&endpoints[0]), track, "{}", run.stdout);
}

/// A crawler that reached `v4` IPv4 and `v6` IPv6 outside addresses on 443.
fn crawler(v4: usize, v6: usize) -> World {
    let mut w = World::new(&format!("crawler{v4}x{v6}")).with_coredns();
    let pod = w
        .deployment("shop", "crawler", &[("10.244.1.10", "node-a")])
        .remove(0);
    for i in 0..v4 {
        w.flow(
            "shop",
            &pod,
            &format!("198.18.{}.{}", i / 200, i % 200 + 1),
            443,
            "TCP",
            &[],
        );
    }
    for i in 0..v6 {
        w.flow("shop", &pod, &format!("2001:db8:{i}::80"), 443, "TCP", &[]);
    }
    w
}

#[test]
fn nothing_is_widened_to_the_internet_unless_asked() {
    let w = crawler(40, 0);
    let (run, verified) = w.recommend_and_verify(&["--default-deny"]);
    assert_eq!(verified.code, 0, "{}", verified.stdout);
    assert!(
        !run.stdout.contains("0.0.0.0/0") && !run.stdout.contains("::/0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("198.18.0.1/32"), "{}", run.stdout);
}

#[test]
fn a_cap_asked_for_warns_and_adds_no_unobserved_family() {
    let w = crawler(40, 0);
    let run = w.recommend(&["--max-external-peers", "32"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0.0.0.0/0"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("::/0"),
        "IPv6 was never observed:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("--max-external-peers"),
        "stderr must warn:\n{}",
        run.stderr
    );
    let label = w.recommend(&["--max-external-peers", "32", "--internet-egress", "label"]);
    assert!(!label.stdout.contains("::/0"), "{}", label.stdout);
    assert!(label.stdout.contains("0.0.0.0/0"), "{}", label.stdout);

    let both = crawler(30, 10).recommend(&["--max-external-peers", "32"]);
    assert!(
        both.stdout.contains("0.0.0.0/0") && both.stdout.contains("::/0"),
        "{}",
        both.stdout
    );
}

#[test]
fn the_cap_is_documented_in_help() {
    let help = world::run(&["recommend", "--help"]);
    assert_eq!(help.code, 0);
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = text
        .find("--max-external-peers")
        .expect("the flag is documented");
    let doc = &text[at..(at + 400).min(text.len())];
    assert!(
        doc.contains("no cap") && doc.contains("only the address families"),
        "{doc}"
    );
}

#[test]
fn ingress_for_a_workload_exposed_outside_the_cluster_warns() {
    let mut w = World::new("lb").with_coredns();
    let client = w
        .deployment("shop", "client", &[("10.244.1.9", "node-a")])
        .remove(0);
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
    let svc = w.service("shop", "web", "10.96.30.1", Some(json!({"app": "web"})), json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 31080}]));
    svc["spec"]["type"] = json!("LoadBalancer");
    w.slice(
        "shop",
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        &[("10.244.1.10", Some(&web))],
    );
    w.flow("shop", &client, "10.96.30.1", 80, "TCP", &[]);
    let run = w.recommend(&["--with-ingress"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.policy("shop", "web-ingress");
    assert!(
        run.stderr.contains("LoadBalancer") && run.stderr.contains("shop/web"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("LoadBalancer"), "{}", run.stdout);
}
