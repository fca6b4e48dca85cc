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

fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    }
}

/// The peer for `target`. Across namespaces, podSelector and namespaceSelector sit in the SAME
/// peer (AND): two peers would mean "these pods in our namespace OR any pod over there".
pub fn peer(target: &Target) -> NetworkPolicyPeer {
    match target {
        Target::Pods {
            namespace,
            selector: labels,
        } => NetworkPolicyPeer {
            pod_selector: Some(selector(labels)),
            namespace_selector: namespace.as_ref().map(|ns| {
                selector(&BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_owned(),
                    ns.clone(),
                )]))
            }),
            ip_block: None,
        },
        Target::IpBlock { cidr, except, .. } => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_string(),
                except: (!except.is_empty())
                    .then(|| except.iter().map(|e| e.to_string()).collect()),
            }),
            pod_selector: None,
            namespace_selector: None,
        },
    }
}

pub fn port(spec: &PortSpec) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(spec.port))),
        end_port: spec.end_port.map(i32::from),
        protocol: Some(spec.protocol.as_str().to_owned()),
    }
}

fn peers_and_ports(rule: &RulePlan) -> (Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>) {
    (
        rule.peers.iter().map(|p| peer(&p.target)).collect(),
        rule.ports.iter().map(port).collect(),
    )
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
        pod_selector: Some(selector(&plan.selector)),
        ..NetworkPolicySpec::default()
    };
    let mut node_comments = NodeComments::new();
    let (list, peers_key) = match plan.direction {
        Direction::Egress => ("egress", "to"),
        Direction::Ingress => ("ingress", "from"),
    };
    for (i, rule) in plan.rules.iter().enumerate() {
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
                            to: Some(to),
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
                            from: Some(from),
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
