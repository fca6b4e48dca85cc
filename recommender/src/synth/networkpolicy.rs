//! Plans to `networking.k8s.io/v1` NetworkPolicy objects.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::document::{path, Document, NodeComments, Object, PathPart};
use super::model::{Direction, PolicyPlan, RulePlan, Target, MANAGED_BY, NAMESPACE_NAME_LABEL};
use super::ports::PortSpec;

/// The peer for `target` (`None` for [`Target::Anywhere`], which a rule says by having no `to`).
/// Across namespaces, podSelector and namespaceSelector sit in the SAME peer (AND): two peers
/// would mean "these pods in our namespace OR any pod over there".
pub fn peer(target: &Target) -> Option<NetworkPolicyPeer> {
    Some(match target {
        Target::Pods {
            namespace,
            selector,
        } => NetworkPolicyPeer {
            pod_selector: Some(selector.to_label_selector()),
            namespace_selector: namespace.as_ref().map(|ns| LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_owned(),
                    ns.clone(),
                )])),
                match_expressions: None,
            }),
            ip_block: None,
        },
        Target::Anywhere => return None,
        Target::IpBlock { cidr, except, .. } => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_string(),
                except: (!except.is_empty())
                    .then(|| except.iter().map(|e| e.to_string()).collect()),
            }),
            pod_selector: None,
            namespace_selector: None,
        },
    })
}

pub fn port(spec: &PortSpec) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(spec.port))),
        end_port: spec.end_port.map(i32::from),
        protocol: Some(spec.protocol.as_str().to_owned()),
    }
}

/// The rule's peers (`None`: any, when one of them is [`Target::Anywhere`]) and ports.
fn peers_and_ports(rule: &RulePlan) -> (Option<Vec<NetworkPolicyPeer>>, Vec<NetworkPolicyPort>) {
    (
        rule.peers.iter().map(|p| peer(&p.target)).collect(),
        rule.ports.iter().map(port).collect(),
    )
}

/// Whether the rule allows any destination.
fn anywhere(rule: &RulePlan) -> bool {
    rule.peers.iter().any(|p| p.target == Target::Anywhere)
}

/// Metadata shared by both formats.
pub fn metadata(plan: &PolicyPlan) -> ObjectMeta {
    ObjectMeta {
        name: Some(plan.name.clone()),
        namespace: Some(plan.namespace.clone()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_owned(),
            MANAGED_BY.1.to_owned(),
        )])),
        annotations: (!plan.annotations.is_empty()).then(|| plan.annotations.clone()),
        ..ObjectMeta::default()
    }
}

/// The NetworkPolicy of `plan`, with comments above its peers.
pub fn document(plan: &PolicyPlan) -> Document {
    let mut spec = NetworkPolicySpec {
        pod_selector: Some(plan.selector.to_label_selector()),
        ..NetworkPolicySpec::default()
    };
    let mut node_comments = NodeComments::new();
    let (list, peers_key) = match plan.direction {
        Direction::Egress => ("egress", "to"),
        Direction::Ingress => ("ingress", "from"),
    };
    for (i, rule) in plan.rules.iter().enumerate() {
        if anywhere(rule) {
            // No `to` list to hang comments on: they go above the rule.
            let lines: Vec<String> = rule.peers.iter().flat_map(|p| p.comments.clone()).collect();
            node_comments.insert(
                path(&[PathPart::K("spec"), PathPart::K(list), PathPart::I(i)]),
                lines,
            );
            continue;
        }
        for (j, p) in rule.peers.iter().enumerate() {
            if !p.comments.is_empty() {
                let at = path(&[
                    PathPart::K("spec"),
                    PathPart::K(list),
                    PathPart::I(i),
                    PathPart::K(peers_key),
                    PathPart::I(j),
                ]);
                node_comments.insert(at, p.comments.clone());
            }
        }
    }
    match plan.direction {
        Direction::Egress => {
            spec.policy_types = Some(vec!["Egress".to_owned()]);
            spec.egress = Some(
                plan.rules
                    .iter()
                    .map(|r| {
                        let (to, ports) = peers_and_ports(r);
                        NetworkPolicyEgressRule {
                            to,
                            ports: Some(ports),
                        }
                    })
                    .collect(),
            );
        }
        Direction::Ingress => {
            spec.policy_types = Some(vec!["Ingress".to_owned()]);
            spec.ingress = Some(
                plan.rules
                    .iter()
                    .map(|r| {
                        let (from, ports) = peers_and_ports(r);
                        NetworkPolicyIngressRule {
                            from,
                            ports: Some(ports),
                        }
                    })
                    .collect(),
            );
        }
    }
    Document {
        object: Object::NetworkPolicy(Box::new(NetworkPolicy {
            metadata: metadata(plan),
            spec: Some(spec),
        })),
        comments: plan.comments.clone(),
        node_comments,
    }
}
