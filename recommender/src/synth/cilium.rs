//! Plans to `cilium.io/v2` CiliumNetworkPolicy objects (hand-built serde structs: the CRD types
//! are not in k8s-openapi and only this subset is needed).
//!
//! Cilium refuses rules that mix L3 selector kinds (`toEndpoints` with `toCIDRSet`, ...), so each
//! planned rule becomes one Cilium rule per kind, all with the rule's ports. External peers with
//! DNS names become `toFQDNs` (`matchName`), which follows the names when their addresses move;
//! `toFQDNs` only works when the pod's DNS traffic goes through Cilium's DNS proxy, so every
//! policy that has them also gets the DNS rule to the cluster DNS with `dns: [{matchPattern: "*"}]`.
//! The API server is the `kube-apiserver` entity (its addresses are host/remote-node identities
//! that CIDR rules do not match). Node addresses stay `toCIDRSet`; Cilium matches those only with
//! `policy-cidr-match-mode: nodes`.

use std::collections::{BTreeMap, BTreeSet};

use super::context::Context;
use super::document::{Document, NodeComments, Object, PathSeg};
use super::model::{Direction, IpOrigin, PeerPlan, PolicyPlan, RulePlan, Target};
use super::networkpolicy;
use super::peers::dns_peer;
use super::ports::PortSpec;

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
    labels: &BTreeMap<String, String>,
) -> EndpointSelector {
    let mut match_labels = labels.clone();
    match_labels.insert(
        NAMESPACE_LABEL.to_owned(),
        namespace.as_deref().unwrap_or(policy_ns).to_owned(),
    );
    EndpointSelector { match_labels }
}

/// The L3 kinds one planned rule splits into, in output order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DnsEndpoints,
    Endpoints,
    Entities,
    Fqdns,
    Cidrs,
}

fn kind_of(peer: &PeerPlan) -> Kind {
    match &peer.target {
        Target::Pods { .. } if peer.cluster_dns => Kind::DnsEndpoints,
        Target::Pods { .. } => Kind::Endpoints,
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
            to_ports: port_rule(&rule.ports, kind == Kind::DnsEndpoints),
            ..Rule::default()
        };
        let mut items: Vec<Vec<String>> = Vec::new();
        let field = match kind {
            Kind::DnsEndpoints | Kind::Endpoints => {
                let eps: Vec<EndpointSelector> = peers
                    .iter()
                    .map(|p| match &p.target {
                        Target::Pods {
                            namespace,
                            selector,
                        } => endpoint(&plan.namespace, namespace, selector),
                        Target::IpBlock { .. } => unreachable!("kind_of sorted pods here"),
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
                "toEntities"
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
            Kind::Cidrs => {
                r.to_cidr_set = Some(
                    peers
                        .iter()
                        .filter_map(|p| match &p.target {
                            Target::IpBlock { cidr, except, .. } => Some(CidrRule {
                                cidr: cidr.to_string(),
                                except: except.iter().map(|e| e.to_string()).collect(),
                            }),
                            Target::Pods { .. } => None,
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
    let mut planned = plan.rules.clone();
    let has_fqdns = planned
        .iter()
        .flat_map(|r| &r.peers)
        .any(|p| kind_of(p) == Kind::Fqdns);
    let has_dns = planned.iter().flat_map(|r| &r.peers).any(|p| p.cluster_dns);
    if has_fqdns && !has_dns && plan.direction == Direction::Egress {
        planned.insert(
            0,
            RulePlan {
                peers: vec![dns_peer(ctx, &plan.namespace)],
                ports: super::ports::compress(&ctx.dns_ports),
            },
        );
    }
    for rule in &planned {
        split(plan, rule, &mut rules, &mut node_comments, list);
    }
    let mut spec = Spec {
        endpoint_selector: EndpointSelector {
            match_labels: plan.selector.clone(),
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
