//! Tests of `egress`: per-workload egress plans.

use std::sync::Arc;

use flow_model::{Protocol, WorkloadRef};

use super::*;
use crate::cluster::Cluster;
use crate::resolve::{Observation, Peer};
use crate::synth::Options;

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned())])
}

fn source(name: &str) -> SourceWorkload {
    SourceWorkload {
        namespace: "ns".into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: name.into(),
        },
        selector: labels(name).into(),
    }
}

fn flow(peer: Peer, port: u16, outcome: &str) -> ResolvedFlow {
    let record: flow_model::FlowRecord =
        serde_json::from_value(serde_json::json!({"node":"n","source":{"kind":"pod"},
        "destination":{"ip":"10.0.0.1","port":port,"protocol":"TCP"},
        "first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:00Z","count":1,
        "outcome":outcome}))
        .unwrap();
    ResolvedFlow {
        source: source("web").into(),
        peer: peer.into(),
        port,
        protocol: Protocol::Tcp,
        observed: Arc::new(Observation::of(&record)),
    }
}

fn pods(app: &str, ns: &str) -> Peer {
    Peer::Pods {
        namespace: ns.into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: app.into(),
        },
        selector: labels(app).into(),
        service: None,
        cluster_dns: false,
    }
}

fn external(ip: &str) -> Peer {
    Peer::External {
        ip: ip.parse().unwrap(),
        service: None,
    }
}

fn plan(flows: &[ResolvedFlow]) -> PolicyPlan {
    let options = Options::default();
    let cluster = Cluster::default();
    let ctx = Context::new(&cluster, flows, &options);
    let refs: Vec<&ResolvedFlow> = flows.iter().collect();
    egress_plan(&ctx, &source("web"), &refs, "web-egress".into()).plan
}

#[test]
fn peers_with_equal_ports_share_a_rule_pods_first() {
    let p = plan(&[
        flow(external("198.18.0.7"), 443, "established"),
        flow(pods("b", "ns"), 443, "established"),
        flow(pods("a", "other"), 443, "established"),
        flow(pods("c", "ns"), 80, "established"),
    ]);
    assert_eq!(p.rules.len(), 2);
    let targets: Vec<&Target> = p.rules[0].peers.iter().map(|p| &p.target).collect();
    assert!(matches!(
        targets[0],
        Target::Pods {
            namespace: None,
            ..
        }
    ));
    assert!(matches!(targets[1], Target::Pods { namespace: Some(ns), .. } if ns == "other"));
    assert!(matches!(targets[2], Target::IpBlock { .. }));
    assert_eq!(p.rules[0].ports.len(), 1);
    assert_eq!(p.rules[0].ports[0].port, 443);
    assert_eq!(p.rules[1].ports[0].port, 80);
}

#[test]
fn external_addresses_merge_only_within_a_port_set() {
    let p = plan(&[
        flow(external("198.18.0.0"), 443, "established"),
        flow(external("198.18.0.1"), 80, "established"),
    ]);
    assert_eq!(p.rules.len(), 2, "{p:#?}");
    let p = plan(&[
        flow(external("198.18.0.0"), 443, "established"),
        flow(external("198.18.0.1"), 443, "established"),
    ]);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].peers.len(), 1);
}

#[test]
fn ipv4_mapped_addresses_become_ipv4() {
    let p = plan(&[
        flow(external("::ffff:198.18.0.0"), 443, "established"),
        flow(external("198.18.0.1"), 443, "established"),
    ]);
    assert_eq!(
        p.rules[0].peers[0].target,
        Target::IpBlock {
            cidr: "198.18.0.0/31".parse().unwrap(),
            except: Vec::new(),
            origin: IpOrigin::External,
        }
    );
}

#[test]
fn resolved_names_imply_cluster_dns_unless_another_resolver_answered() {
    let mut named = flow(external("198.18.0.1"), 443, "established");
    Arc::make_mut(&mut named.observed)
        .dns_names
        .insert("api.example.test".into());
    let p = plan(std::slice::from_ref(&named));
    assert!(p.rules.iter().flat_map(|r| &r.peers).any(|p| p.cluster_dns));
    let p = plan(&[named, flow(external("169.254.20.10"), 53, "sent")]);
    assert!(!p.rules.iter().flat_map(|r| &r.peers).any(|p| p.cluster_dns));
}

#[test]
fn failures_are_marked_but_kept() {
    let p = plan(&[
        flow(pods("b", "ns"), 8080, "refused"),
        flow(pods("b", "ns"), 9090, "established"),
    ]);
    let peer = &p.rules[0].peers[0];
    assert_eq!(p.rules[0].ports.len(), 2);
    assert!(peer
        .comments
        .iter()
        .any(|c| c == "never succeeded: TCP/8080 refused"));
    assert!(p.annotations["egress-recommender.io/never-succeeded"].contains("TCP/8080"));
    assert!(!p.annotations["egress-recommender.io/never-succeeded"].contains("9090"));
}

#[test]
fn port_53_gets_both_protocols_for_any_peer() {
    let ports: PortSet = [(Protocol::Udp, 53), (Protocol::Tcp, 443)].into();
    let out = with_fallback(&ports, false);
    assert!(out.contains(&(Protocol::Tcp, 53)));
    assert!(!out.contains(&(Protocol::Udp, 443)));
    let dns: PortSet = [(Protocol::Udp, 5353)].into();
    assert!(with_fallback(&dns, true).contains(&(Protocol::Tcp, 5353)));
}
