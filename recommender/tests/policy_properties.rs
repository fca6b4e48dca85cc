//! Properties that follow from the NetworkPolicy model, over random policies from a small
//! vocabulary (two namespaces, two apps, a few ports and CIDRs) so that matches are frequent:
//! - additivity: adding a policy never takes away what some rule allowed;
//! - locality: only policies in a pod's own namespace decide its isolation;
//! - an address end is never isolated;
//! - order independence, and `allows` agrees with `evaluate`.

use std::collections::BTreeMap;

use flow_model::Protocol;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use recommender::policy::{Connection, DirectionVerdict, Endpoint, PolicySet};

const NAMESPACES: [&str; 2] = ["a", "b"];
const APPS: [&str; 2] = ["x", "y"];

fn selector() -> impl Strategy<Value = LabelSelector> {
    prop_oneof![
        Just(LabelSelector::default()),
        prop::sample::select(&APPS[..]).prop_map(|app| LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), app.into())])),
            ..Default::default()
        }),
        prop::sample::select(&APPS[..]).prop_map(|app| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "NotIn".into(),
                values: Some(vec![app.into()]),
            }]),
            ..Default::default()
        }),
    ]
}

fn ns_selector() -> impl Strategy<Value = LabelSelector> {
    prop_oneof![
        Just(LabelSelector::default()),
        prop::sample::select(&NAMESPACES[..]).prop_map(|ns| LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                ns.into()
            )])),
            ..Default::default()
        }),
    ]
}

fn peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    prop_oneof![
        selector().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        ns_selector().prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector(), ns_selector()).prop_map(|(p, n)| NetworkPolicyPeer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Default::default()
        }),
        prop::sample::select(&["10.0.0.0/8", "10.1.0.0/16", "198.18.0.0/15"][..]).prop_map(
            |cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.into(),
                    except: (cidr == "10.0.0.0/8").then(|| vec!["10.1.0.0/16".into()]),
                }),
                ..Default::default()
            }
        ),
    ]
}

fn port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = prop::option::of(prop::sample::select(&["TCP", "UDP"][..]));
    let number = || prop::sample::select(&[53, 80, 443][..]);
    let which = prop_oneof![
        Just((None, None)),
        number().prop_map(|n| (Some(IntOrString::Int(n)), None)),
        number().prop_map(|n| (Some(IntOrString::Int(n)), Some(n + 10))),
        prop::sample::select(&["web", "dns"][..])
            .prop_map(|n| (Some(IntOrString::String(n.into())), None)),
    ];
    (protocol, which).prop_map(|(protocol, (port, end_port))| NetworkPolicyPort {
        protocol: protocol.map(str::to_string),
        port,
        end_port,
    })
}

/// `None`, `Some([])` or a short list: absent and empty lists are both exercised.
fn list<T: std::fmt::Debug>(
    item: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<Vec<T>>> {
    prop::option::of(prop::collection::vec(item, 0..3))
}

fn policy() -> impl Strategy<Value = NetworkPolicy> {
    const TYPES: [&[&str]; 3] = [&["Ingress"], &["Egress"], &["Ingress", "Egress"]];
    let types = prop::option::of(prop::sample::select(&TYPES[..]));
    (
        prop::sample::select(&NAMESPACES[..]),
        0u32..1_000_000,
        selector(),
        types,
        prop::option::of(prop::collection::vec((list(peer()), list(port())), 0..3)),
        prop::option::of(prop::collection::vec((list(peer()), list(port())), 0..3)),
    )
        .prop_map(
            |(ns, id, pod_selector, types, egress, ingress)| NetworkPolicy {
                metadata: ObjectMeta {
                    name: Some(format!("p{id}")),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(pod_selector),
                    policy_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
                    egress: egress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                            .collect()
                    }),
                    ingress: ingress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                            .collect()
                    }),
                }),
            },
        )
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    let pod = (
        prop::sample::select(&NAMESPACES[..]),
        prop::option::of(prop::sample::select(&APPS[..])),
        0u8..4,
    )
        .prop_map(|(ns, app, n)| {
            let labels: Vec<(&str, &str)> = app.map(|a| ("app", a)).into_iter().collect();
            Endpoint::pod(ns, format!("pod-{n}"), labels)
                .with_ip(format!("10.{n}.0.{n}").parse().unwrap())
                .with_port("web", 80 + u16::from(n), Protocol::Tcp)
                .with_port("dns", 53, Protocol::Udp)
        });
    let ip = prop::sample::select(&["10.0.0.1", "10.1.0.1", "198.18.0.1", "192.0.2.1"][..])
        .prop_map(|s| Endpoint::Ip(s.parse().unwrap()));
    prop_oneof![3 => pod, 1 => ip]
}

fn connection() -> impl Strategy<Value = Connection> {
    (
        endpoint(),
        endpoint(),
        prop::sample::select(&[53u16, 80, 81, 83, 443, 450, 8080][..]),
        prop::sample::select(&[Protocol::Tcp, Protocol::Udp][..]),
    )
        .prop_map(|(from, to, port, protocol)| Connection::new(from, to, port, protocol))
}

fn allowed_by(v: &DirectionVerdict) -> bool {
    matches!(v, DirectionVerdict::AllowedBy { .. })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn adding_a_policy_never_removes_an_allowing_rule(
        policies in prop::collection::vec(policy(), 0..5),
        extra in policy(),
        conn in connection(),
    ) {
        let before = PolicySet::new(&policies).evaluate(&conn);
        let mut more = policies.clone();
        more.push(extra);
        let after = PolicySet::new(&more).evaluate(&conn);
        prop_assert!(!allowed_by(&before.egress) || allowed_by(&after.egress), "{before} / {after}");
        prop_assert!(!allowed_by(&before.ingress) || allowed_by(&after.ingress), "{before} / {after}");
    }

    #[test]
    fn only_the_pods_own_namespace_decides(
        policies in prop::collection::vec(policy(), 0..6),
        conn in connection(),
    ) {
        let all = PolicySet::new(&policies).evaluate(&conn);
        let own = |e: &Endpoint| -> Vec<NetworkPolicy> {
            policies
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == e.namespace())
                .cloned()
                .collect()
        };
        let egress_only = PolicySet::new(&own(&conn.from)).evaluate(&conn);
        let ingress_only = PolicySet::new(&own(&conn.to)).evaluate(&conn);
        prop_assert_eq!(&all.egress, &egress_only.egress);
        prop_assert_eq!(&all.ingress, &ingress_only.ingress);
        if let DirectionVerdict::DeniedBy { policies } = &all.egress {
            prop_assert!(!policies.is_empty());
            let prefix = format!("{}/", conn.from.namespace().unwrap());
            prop_assert!(policies.iter().all(|p| p.starts_with(&prefix)));
        }
    }

    #[test]
    fn addresses_are_never_isolated_and_answers_agree(
        mut policies in prop::collection::vec(policy(), 0..6),
        conn in connection(),
    ) {
        let set = PolicySet::new(&policies);
        prop_assert!(set.problems().is_empty(), "{:?}", set.problems());
        let v = set.evaluate(&conn);
        if matches!(conn.from, Endpoint::Ip(_)) {
            prop_assert_eq!(&v.egress, &DirectionVerdict::NotIsolated);
        }
        if matches!(conn.to, Endpoint::Ip(_)) {
            prop_assert_eq!(&v.ingress, &DirectionVerdict::NotIsolated);
        }
        prop_assert_eq!(set.allows(&conn), v.allowed);
        prop_assert_eq!(v.allowed, v.to_string().starts_with("allowed: "));
        policies.reverse();
        prop_assert_eq!(PolicySet::new(&policies).evaluate(&conn), v);
    }
}
