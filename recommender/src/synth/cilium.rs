//! Plans to `cilium.io/v2` CiliumNetworkPolicy objects (hand-built serde structs: the CRD types
//! are not in k8s-openapi and only this subset is needed).
//!
//! Cilium refuses rules that mix L3 selector kinds (`toEndpoints` with `toCIDRSet`, ...), so each
//! planned rule becomes one Cilium rule per kind, all with the rule's ports. External peers with
//! DNS names become `toFQDNs` (`matchName`), which follows the names when their addresses move;
//! `toFQDNs` only works when the pod's DNS traffic goes through Cilium's DNS proxy, so every
//! policy that has them also gets the DNS rules, every way the cluster answers DNS (the DNS pods,
//! NodeLocal DNSCache's address: the proxy must sit where the pods really send their queries),
//! with `dns: [{matchPattern: "*"}]`; no other port carries a DNS rule. The API server is the
//! `kube-apiserver` entity (its addresses are host/remote-node identities that CIDR rules do not
//! match), in one rule with every port any of its addresses was reached on: the entity stands for
//! all of them. Node addresses (and NodeLocal DNSCache's) stay `toCIDRSet`; Cilium matches those
//! only with `policy-cidr-match-mode: nodes`. Selectors keep their `matchExpressions`.

use std::collections::{BTreeMap, BTreeSet};

use super::context::Context;
use super::document::{Document, NodeComments, Object, PathSeg};
use super::model::{Direction, IpOrigin, PeerPlan, PolicyPlan, RulePlan, Target};
use super::networkpolicy;
use super::peers::dns_peers;
use super::ports::{PortSet, PortSpec};
use super::rules::into_rules;
use crate::policy::PodSelector;

pub use super::cilium_crd::*;

fn port_rule(ports: &[PortSpec], dns_proxy: bool) -> Vec<PortRule> {
    vec![PortRule {
        ports: ports
            .iter()
            .map(|p| PortProtocol {
                port: p.port.to_string(),
                end_port: p.end_port.map(i32::from),
                protocol: p.protocol.as_str().to_owned(),
            })
            .collect(),
        rules: dns_proxy.then(|| L7Rules {
            dns: vec![DnsRule {
                match_pattern: "*".to_owned(),
            }],
        }),
    }]
}

fn endpoint(
    policy_ns: &str,
    namespace: &Option<String>,
    selector: &PodSelector,
) -> EndpointSelector {
    let mut match_labels = selector.match_labels.clone();
    match_labels.insert(
        NAMESPACE_LABEL.to_owned(),
        namespace.as_deref().unwrap_or(policy_ns).to_owned(),
    );
    EndpointSelector {
        match_labels,
        match_expressions: selector.match_expressions.clone(),
    }
}

/// The L3 kinds one planned rule splits into, in output order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DnsEndpoints,
    DnsCidrs,
    DnsAnywhere,
    Endpoints,
    Entities,
    Fqdns,
    Cidrs,
}

impl Kind {
    /// Whether the rule carries the DNS proxy rule.
    fn is_dns(self) -> bool {
        matches!(
            self,
            Kind::DnsEndpoints | Kind::DnsCidrs | Kind::DnsAnywhere
        )
    }
}

fn kind_of(peer: &PeerPlan) -> Kind {
    match &peer.target {
        Target::Pods { .. } if peer.cluster_dns => Kind::DnsEndpoints,
        Target::Pods { .. } => Kind::Endpoints,
        Target::Anywhere => Kind::DnsAnywhere,
        Target::IpBlock { .. } if peer.cluster_dns => Kind::DnsCidrs,
        Target::IpBlock {
            origin: IpOrigin::ApiServer,
            ..
        } => Kind::Entities,
        Target::IpBlock {
            origin: IpOrigin::External,
            ..
        } if !peer.dns_names.is_empty() => Kind::Fqdns,
        Target::IpBlock { .. } => Kind::Cidrs,
    }
}

/// Cilium rules (and comments keyed by index within the L3 list) for one planned rule.
fn split(
    plan: &PolicyPlan,
    rule: &RulePlan,
    out: &mut Vec<Rule>,
    comments: &mut NodeComments,
    list: &'static str,
) {
    let mut kinds: BTreeMap<Kind, Vec<&PeerPlan>> = BTreeMap::new();
    for p in &rule.peers {
        kinds.entry(kind_of(p)).or_default().push(p);
    }
    for (kind, peers) in kinds {
        let index = out.len();
        let mut r = Rule {
            to_ports: port_rule(&rule.ports, kind.is_dns()),
            ..Rule::default()
        };
        let items: Vec<Vec<String>>;
        let field = match kind {
            Kind::DnsEndpoints | Kind::Endpoints => {
                let eps: Vec<EndpointSelector> = peers
                    .iter()
                    .map(|p| match &p.target {
                        Target::Pods {
                            namespace,
                            selector,
                        } => endpoint(&plan.namespace, namespace, selector),
                        Target::IpBlock { .. } | Target::Anywhere => {
                            unreachable!("kind_of sorted pods here")
                        }
                    })
                    .collect();
                items = peers.iter().map(|p| p.comments.clone()).collect();
                if plan.direction == Direction::Ingress {
                    r.from_endpoints = Some(eps);
                    "fromEndpoints"
                } else {
                    r.to_endpoints = Some(eps);
                    "toEndpoints"
                }
            }
            Kind::Entities => {
                r.to_entities = Some(vec!["kube-apiserver".to_owned()]);
                items = peers.iter().map(|p| p.comments.clone()).take(1).collect();
                "toEntities"
            }
            Kind::DnsAnywhere => {
                // No L3 selector: the ports to any peer. Comments go above the rule.
                let lines: Vec<String> = peers.iter().flat_map(|p| p.comments.clone()).collect();
                comments.insert(
                    vec![
                        PathSeg::Key("spec".into()),
                        PathSeg::Key(list.into()),
                        PathSeg::Index(index),
                    ],
                    lines,
                );
                out.push(r);
                continue;
            }
            Kind::Fqdns => {
                let names: BTreeSet<&str> = peers
                    .iter()
                    .flat_map(|p| p.dns_names.iter().map(String::as_str))
                    .collect();
                // Above each name: the addresses it was seen behind, and what never succeeded.
                items = names
                    .iter()
                    .map(|name| {
                        let mut lines = Vec::new();
                        for p in peers.iter().filter(|p| p.dns_names.contains(*name)) {
                            if let Target::IpBlock { cidr, .. } = &p.target {
                                lines.push(format!("seen at {cidr}"));
                            }
                            lines.extend(p.comments.iter().skip(1).cloned());
                        }
                        lines
                    })
                    .collect();
                r.to_fqdns = Some(
                    names
                        .into_iter()
                        .map(|n| FqdnSelector {
                            match_name: n.to_owned(),
                        })
                        .collect(),
                );
                "toFQDNs"
            }
            Kind::Cidrs | Kind::DnsCidrs => {
                r.to_cidr_set = Some(
                    peers
                        .iter()
                        .filter_map(|p| match &p.target {
                            Target::IpBlock { cidr, except, .. } => Some(CidrRule {
                                cidr: cidr.to_string(),
                                except: except.iter().map(|e| e.to_string()).collect(),
                            }),
                            Target::Pods { .. } | Target::Anywhere => None,
                        })
                        .collect(),
                );
                items = peers.iter().map(|p| p.comments.clone()).collect();
                "toCIDRSet"
            }
        };
        for (j, lines) in items.into_iter().enumerate() {
            if !lines.is_empty() {
                let at = vec![
                    PathSeg::Key("spec".into()),
                    PathSeg::Key(list.into()),
                    PathSeg::Index(index),
                    PathSeg::Key(field.into()),
                    PathSeg::Index(j),
                ];
                comments.insert(at, lines);
            }
        }
        out.push(r);
    }
}

/// The CiliumNetworkPolicy of `plan`.
pub fn document(ctx: &Context, plan: &PolicyPlan) -> Document {
    let mut node_comments = NodeComments::new();
    let mut rules = Vec::new();
    let list = match plan.direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    };
    let mut planned = one_apiserver_rule(&plan.rules);
    let has_fqdns = planned
        .iter()
        .flat_map(|r| &r.peers)
        .any(|p| kind_of(p) == Kind::Fqdns);
    let has_dns = planned.iter().flat_map(|r| &r.peers).any(|p| p.cluster_dns);
    if has_fqdns && !has_dns && plan.direction == Direction::Egress {
        let mut by_ports: BTreeMap<PortSet, Vec<PeerPlan>> = BTreeMap::new();
        for (ports, peer) in dns_peers(ctx, &plan.namespace) {
            by_ports.entry(ports).or_default().push(peer);
        }
        for (i, rule) in into_rules(by_ports).into_iter().enumerate() {
            planned.insert(i, rule);
        }
    }
    for rule in &planned {
        split(plan, rule, &mut rules, &mut node_comments, list);
    }
    let mut spec = Spec {
        endpoint_selector: EndpointSelector {
            match_labels: plan.selector.match_labels.clone(),
            match_expressions: plan.selector.match_expressions.clone(),
        },
        ..Spec::default()
    };
    match plan.direction {
        Direction::Egress => spec.egress = rules,
        Direction::Ingress => spec.ingress = rules,
    }
    Document {
        object: Object::Cilium(Box::new(CiliumNetworkPolicy {
            api_version: "cilium.io/v2".to_owned(),
            kind: "CiliumNetworkPolicy".to_owned(),
            metadata: networkpolicy::metadata(plan),
            spec,
        })),
        comments: plan.comments.clone(),
        node_comments,
    }
}

/// `rules` with every API server peer moved into one rule, at the place of the first, with every
/// port any of them had: the `kube-apiserver` entity stands for all the API server's addresses, so
/// several entity rules would only repeat it.
fn one_apiserver_rule(rules: &[RulePlan]) -> Vec<RulePlan> {
    let is_apiserver = |p: &PeerPlan| {
        matches!(
            p.target,
            Target::IpBlock {
                origin: IpOrigin::ApiServer,
                ..
            }
        )
    };
    let mut out = Vec::new();
    let mut first: Option<usize> = None;
    let mut ports = PortSet::new();
    let mut addresses = Vec::new();
    let mut comments = Vec::new();
    for rule in rules {
        let (apiserver, others): (Vec<&PeerPlan>, Vec<&PeerPlan>) =
            rule.peers.iter().partition(|p| is_apiserver(p));
        if !apiserver.is_empty() {
            first.get_or_insert(out.len());
            ports.extend(expand(&rule.ports));
            for p in &apiserver {
                if let Target::IpBlock { cidr, .. } = &p.target {
                    addresses.push(cidr.addr().to_string());
                }
                comments.extend(p.comments.iter().skip(1).cloned());
            }
        }
        if !others.is_empty() {
            out.push(RulePlan {
                peers: others.into_iter().cloned().collect(),
                ports: rule.ports.clone(),
            });
        }
    }
    if let Some(at) = first {
        addresses.sort();
        addresses.dedup();
        let mut lines = vec![format!("Kubernetes API server ({})", addresses.join(", "))];
        lines.extend(comments);
        let peer = rules
            .iter()
            .flat_map(|r| &r.peers)
            .find(|p| is_apiserver(p))
            .expect("an API server peer was seen");
        out.insert(
            at,
            RulePlan {
                peers: vec![PeerPlan {
                    comments: lines,
                    ..peer.clone()
                }],
                ports: super::ports::compress(&ports),
            },
        );
    }
    out
}

/// The (protocol, port) pairs of `specs`, ranges expanded.
fn expand(specs: &[PortSpec]) -> PortSet {
    specs
        .iter()
        .flat_map(|s| (s.port..=s.end_port.unwrap_or(s.port)).map(move |p| (s.protocol, p)))
        .collect()
}
