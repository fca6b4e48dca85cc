//! Synthesis rules on hand-built resolved flows: grouping, selectors, DNS, ipBlocks, ports,
//! refused flows, namespace-wide policies, determinism, and schema validity of every output.

mod synth_common;

use std::sync::Arc;

use flow_model::{Outcome, Protocol};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use recommender::resolve::{Peer, ResolvedFlow};
use recommender::synth::{recommend, render, Format, InternetEgress, Options};
use synth_common::*;

fn scenario() -> Vec<ResolvedFlow> {
    let web = source("shop", "Deployment", "web");
    let worker = source("shop", "Deployment", "worker");
    let db = source("data", "StatefulSet", "db");
    let mut flows = vec![
        flow(&web, dns(), 53, Protocol::Udp),
        flow(
            &web,
            pods("shop", "Deployment", "cart", Some("cart")),
            8080,
            Protocol::Tcp,
        ),
        flow(
            &web,
            pods("shop", "Deployment", "catalog", None),
            8080,
            Protocol::Tcp,
        ),
        flow(
            &web,
            pods("data", "StatefulSet", "db", Some("db")),
            5432,
            Protocol::Tcp,
        ),
        flow(
            &web,
            external("198.18.0.10", &["api.example.test"]),
            443,
            Protocol::Tcp,
        ),
        flow(
            &web,
            external("198.18.0.11", &["api.example.test"]),
            443,
            Protocol::Tcp,
        ),
        flow(
            &web,
            external("198.18.0.12", &["other.example.test"]),
            80,
            Protocol::Tcp,
        ),
        flow_with(
            &web,
            external("198.18.0.13", &[]),
            8443,
            Protocol::Tcp,
            Outcome::Refused,
        ),
        flow(
            &worker,
            Peer::ApiServer {
                ip: "172.18.0.2".parse().unwrap(),
            },
            6443,
            Protocol::Tcp,
        ),
        flow(&worker, dns(), 53, Protocol::Udp),
        flow(
            &worker,
            Peer::Node {
                ip: "172.18.0.3".parse().unwrap(),
                node: "node-b".into(),
            },
            10250,
            Protocol::Tcp,
        ),
        flow(
            &db,
            external("2001:db8::", &["backup.example.test"]),
            443,
            Protocol::Tcp,
        ),
        flow(
            &db,
            external("2001:db8::1", &["backup.example.test"]),
            443,
            Protocol::Tcp,
        ),
    ];
    for port in 9000..9004 {
        flows.push(flow(
            &worker,
            pods("data", "StatefulSet", "db", None),
            port,
            Protocol::Tcp,
        ));
    }
    flows
}

fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(nps: &'a [NetworkPolicy], ns: &str, name: &str) -> &'a NetworkPolicy {
    nps.iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("no policy {ns}/{name}"))
}

fn run(options: &Options) -> String {
    render(&recommend(&dns_cluster(), &scenario(), options))
}

#[test]
fn one_policy_per_workload_with_explicit_types_and_selectors() {
    let yaml = run(&Options::default());
    let nps = policies(&yaml);
    assert_eq!(nps.len(), 3, "{yaml}");
    let web = find(&nps, "shop", "web-egress");
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Egress".to_owned()][..])
    );
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &labels(&[("app", "web")])
    );
    let annotations = web.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations["egress-recommender.io/observed-from"],
        "2026-11-26T16:01:00Z"
    );
    assert_eq!(annotations["egress-recommender.io/edges"], "8");
    assert!(annotations["egress-recommender.io/dns-names"]
        .contains("\"198.18.0.10/31\":\"api.example.test\""));
    assert!(annotations["egress-recommender.io/never-succeeded"]
        .contains("198.18.0.13 TCP/8443 refused"));
}

#[test]
fn peers_with_the_same_ports_share_a_rule_and_cross_namespace_is_anded() {
    let nps = policies(&run(&Options::default()));
    let web = find(&nps, "shop", "web-egress");
    let rules = web.spec.as_ref().unwrap().egress.as_ref().unwrap();
    let rule_8080 = rules
        .iter()
        .find(|r| {
            r.ports.as_ref().unwrap()[0].port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
        })
        .unwrap();
    let to = rule_8080.to.as_ref().unwrap();
    assert_eq!(to.len(), 2, "cart and catalog share the 8080 rule");
    assert!(
        to.iter().all(|p| p.namespace_selector.is_none()),
        "same namespace: podSelector only"
    );
    let db_rule = rules
        .iter()
        .find(|r| {
            r.ports.as_ref().unwrap()[0].port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5432))
        })
        .unwrap();
    let peer = &db_rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &labels(&[("kubernetes.io/metadata.name", "data")])
    );
    assert!(
        peer.pod_selector.is_some(),
        "namespaceSelector AND podSelector in one peer"
    );
}

#[test]
fn dns_is_udp_and_tcp_to_the_dns_selector_in_kube_system() {
    let yaml = run(&Options::default());
    let nps = policies(&yaml);
    let web = find(&nps, "shop", "web-egress");
    let rules = web.spec.as_ref().unwrap().egress.as_ref().unwrap();
    let dns_rule = rules
        .iter()
        .find(|r| {
            r.to.as_ref().unwrap()[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                == Some(&labels(&[("k8s-app", "kube-dns")]))
        })
        .expect("a DNS rule");
    let ports: Vec<(i32, String)> = dns_rule
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| match (&p.port, &p.protocol) {
            (
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)),
                Some(proto),
            ) => (*n, proto.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ports, [(53, "TCP".to_owned()), (53, "UDP".to_owned())]);
    assert!(yaml.contains("# cluster DNS: Deployment kube-system/coredns via Service kube-dns"));
}

#[test]
fn external_addresses_merge_exactly_and_only_on_equal_ports() {
    let yaml = run(&Options::default());
    assert!(yaml.contains("cidr: \"198.18.0.10/31\""), "{yaml}");
    assert!(yaml.contains("cidr: \"198.18.0.12/32\""), "{yaml}");
    assert!(yaml.contains("cidr: \"198.18.0.13/32\""), "{yaml}");
    assert!(yaml.contains("cidr: \"2001:db8::/127\""), "{yaml}");
    assert!(yaml.contains("# api.example.test\n"), "{yaml}");
    assert!(
        yaml.contains("# never succeeded: 198.18.0.13 TCP/8443 refused"),
        "{yaml}"
    );
    // deliberate widening only on request
    let wide = run(&Options {
        cidr_prefix_v4: Some(24),
        ..Options::default()
    });
    assert!(wide.contains("cidr: \"198.18.0.0/24\""), "{wide}");
}

#[test]
fn port_runs_become_end_port() {
    let yaml = run(&Options::default());
    assert!(
        yaml.contains("- port: 9000\n      endPort: 9003\n      protocol: TCP"),
        "{yaml}"
    );
}

#[test]
fn apiserver_and_nodes_are_host_ipblocks() {
    let yaml = run(&Options::default());
    assert!(
        yaml.contains("# Kubernetes API server\n    - ipBlock:\n        cidr: \"172.18.0.2/32\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("# node node-b\n    - ipBlock:\n        cidr: \"172.18.0.3/32\""),
        "{yaml}"
    );
}

#[test]
fn shuffled_input_gives_identical_output() {
    let mut flows = scenario();
    let options = Options {
        default_deny: true,
        with_ingress: true,
        ..Options::default()
    };
    let expected = render(&recommend(&dns_cluster(), &flows, &options));
    for seed in 0..8u64 {
        // a small deterministic shuffle (xorshift)
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for i in (1..flows.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            flows.swap(i, (state % (i as u64 + 1)) as usize);
        }
        assert_eq!(
            render(&recommend(&dns_cluster(), &flows, &options)),
            expected
        );
    }
}

#[test]
fn default_deny_and_ingress() {
    let yaml = run(&Options {
        default_deny: true,
        with_ingress: true,
        ..Options::default()
    });
    let nps = policies(&yaml);
    let deny = find(&nps, "shop", "default-deny-all-egress");
    let spec = deny.spec.as_ref().unwrap();
    assert_eq!(spec.pod_selector.as_ref().unwrap().match_labels, None);
    let rule = &spec.egress.as_ref().unwrap()[0];
    let peer = &rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &labels(&[("kubernetes.io/metadata.name", "kube-system")])
    );
    assert_eq!(rule.ports.as_ref().unwrap().len(), 2);
    find(&nps, "data", "default-deny-all-egress");
    // ingress for destinations, none for cluster DNS
    let db_in = find(&nps, "data", "db-ingress");
    let spec = db_in.spec.as_ref().unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    assert_eq!(
        spec.ingress.as_ref().unwrap().len(),
        2,
        "web on 5432, worker on 9000-9003"
    );
    assert!(!yaml.contains("coredns-ingress"));
    let with_dns = run(&Options {
        with_ingress: true,
        ingress_for_cluster_services: true,
        ..Options::default()
    });
    assert!(with_dns.contains("name: coredns-ingress"), "{with_dns}");
}

#[test]
fn namespace_filter_selects_sources() {
    let yaml = run(&Options {
        namespaces: vec!["data".into()],
        ..Options::default()
    });
    let nps = policies(&yaml);
    assert_eq!(nps.len(), 1);
    find(&nps, "data", "db-egress");
}

#[test]
fn internet_egress_patterns() {
    let src = source("crawl", "Deployment", "crawler");
    let mut flows: Vec<ResolvedFlow> = (1..=5)
        .map(|i| {
            flow(
                &src,
                external(&format!("198.18.1.{}", i * 2), &[]),
                443,
                Protocol::Tcp,
            )
        })
        .collect();
    flows.push(flow(&src, dns(), 53, Protocol::Udp));
    let options = Options {
        max_external_peers: Some(4),
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
        ..Options::default()
    };
    let yaml = render(&recommend(&dns_cluster(), &flows, &options));
    assert!(yaml.contains("cidr: \"0.0.0.0/0\"\n        except:\n        - \"10.96.0.0/12\"\n        - \"10.244.0.0/16\""), "{yaml}");
    assert!(
        !yaml.contains("cidr: \"::/0\""),
        "no IPv6 was observed: {yaml}"
    );
    assert!(!yaml.contains("198.18.1.2/32"), "{yaml}");
    validate(&yaml, "internet-cidr");
    let label = render(&recommend(
        &dns_cluster(),
        &flows,
        &Options {
            internet_egress: InternetEgress::Label,
            ..options
        },
    ));
    let nps = policies(&label);
    let allow = find(&nps, "crawl", "allow-internet-egress");
    assert_eq!(
        allow
            .spec
            .as_ref()
            .unwrap()
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &labels(&[("networking/allow-internet-egress", "true")])
    );
    assert!(label.contains("Deployment/crawler"), "{label}");
    let own = find(&nps, "crawl", "crawler-egress");
    assert!(!serde_json::to_string(own).unwrap().contains("ipBlock"));
    validate(&label, "internet-label");
}

#[test]
fn names_are_disambiguated_and_bounded() {
    let a = source("ns", "Deployment", "app");
    let b = source("ns", "StatefulSet", "app");
    let long = source("ns", "Deployment", &"x".repeat(70));
    let flows = vec![
        flow(&a, dns(), 53, Protocol::Udp),
        flow(&b, dns(), 53, Protocol::Udp),
        flow(&long, dns(), 53, Protocol::Udp),
    ];
    let yaml = render(&recommend(&dns_cluster(), &flows, &Options::default()));
    assert!(yaml.contains("name: app-deployment-egress"));
    assert!(yaml.contains("name: app-statefulset-egress"));
    for np in policies(&yaml) {
        assert!(np.metadata.name.unwrap().len() <= 63);
    }
    validate(&yaml, "names");
}

#[test]
fn empty_selectors_are_skipped_with_a_note() {
    let mut empty = source("ns", "Deployment", "bare");
    Arc::make_mut(&mut empty).selector = Default::default();
    let flows = vec![flow(&empty, dns(), 53, Protocol::Udp)];
    let yaml = render(&recommend(&dns_cluster(), &flows, &Options::default()));
    assert!(!yaml.contains("kind:"), "{yaml}");
    assert!(
        yaml.contains("# skipped Deployment ns/bare: no stable labels"),
        "{yaml}"
    );
}

#[test]
fn every_option_combination_is_schema_valid() {
    for default_deny in [false, true] {
        for with_ingress in [false, true] {
            for internet in [InternetEgress::Cidr, InternetEgress::Label] {
                let options = Options {
                    default_deny,
                    with_ingress,
                    ingress_for_cluster_services: with_ingress,
                    internet_egress: internet,
                    max_external_peers: Some(2),
                    ..Options::default()
                };
                let yaml = run(&options);
                validate(
                    &yaml,
                    &format!("combo-{default_deny}-{with_ingress}-{internet:?}"),
                );
            }
        }
    }
    validate(&run(&Options::default()), "default");
}

#[test]
fn resolving_names_implies_dns() {
    let src = source("ns", "Deployment", "app");
    let flows = vec![flow(
        &src,
        external("198.18.0.1", &["api.example.test"]),
        443,
        Protocol::Tcp,
    )];
    let yaml = render(&recommend(&dns_cluster(), &flows, &Options::default()));
    assert!(
        yaml.contains("# cluster DNS: no DNS flow observed, but"),
        "{yaml}"
    );
    assert!(yaml.contains("k8s-app: kube-dns"), "{yaml}");
}

#[test]
fn print_sample() {
    // `cargo test --test synth_rules print_sample -- --nocapture` shows what users get.
    println!(
        "{}",
        run(&Options {
            default_deny: true,
            with_ingress: true,
            ..Options::default()
        })
    );
    println!(
        "{}",
        run(&Options {
            format: Format::Cilium,
            ..Options::default()
        })
    );
}

#[test]
fn cilium_format() {
    let yaml = run(&Options {
        format: Format::Cilium,
        default_deny: true,
        ..Options::default()
    });
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert!(docs
        .iter()
        .all(|d| d["apiVersion"] == "cilium.io/v2" && d["kind"] == "CiliumNetworkPolicy"));
    let web = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "web-egress")
        .unwrap();
    let egress = web["spec"]["egress"].as_array().unwrap();
    assert_eq!(web["spec"]["endpointSelector"]["matchLabels"]["app"], "web");
    let fqdns: Vec<&serde_json::Value> = egress
        .iter()
        .filter(|r| r.get("toFQDNs").is_some())
        .collect();
    assert!(!fqdns.is_empty());
    assert!(yaml.contains("matchName: api.example.test"));
    let dns_rule = egress
        .iter()
        .find(|r| r["toPorts"][0].get("rules").is_some())
        .expect("DNS proxy rule");
    assert_eq!(
        dns_rule["toEndpoints"][0]["matchLabels"]["k8s:io.kubernetes.pod.namespace"],
        "kube-system"
    );
    assert_eq!(
        dns_rule["toPorts"][0]["rules"]["dns"][0]["matchPattern"],
        "*"
    );
    for rule in egress {
        let l3 = ["toEndpoints", "toEntities", "toFQDNs", "toCIDRSet"]
            .iter()
            .filter(|k| rule.get(**k).is_some())
            .count();
        assert_eq!(l3, 1, "Cilium rejects mixed L3 selectors: {rule}");
    }
    let deny = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "default-deny-all-egress")
        .unwrap();
    assert_eq!(deny["spec"]["endpointSelector"], serde_json::json!({}));
    let strict = run(&Options {
        format: Format::Cilium,
        with_ingress: true,
        ..Options::default()
    });
    assert!(
        strict.contains("  ingress:\n  - fromEndpoints:\n"),
        "{strict}"
    );
    let worker = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "worker-egress")
        .unwrap();
    assert!(serde_json::to_string(worker)
        .unwrap()
        .contains("kube-apiserver"));
}
