//! The format-neutral plan of a recommendation: what each policy selects and allows, with the
//! comments that explain it. `networkpolicy` and `cilium` turn it into objects.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use flow_model::WorkloadRef;

use super::ports::{PortSet, PortSpec};
use crate::policy::PodSelector;

/// Annotation and label keys.
pub const ANNOTATION_PREFIX: &str = "egress-recommender.io/";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "egress-recommender");
/// The pod label the `InternetEgress::Label` pattern selects.
pub const INTERNET_LABEL: (&str, &str) = ("networking/allow-internet-egress", "true");
/// The namespace label every namespace carries (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Direction of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Egress,
    Ingress,
}

/// What an ipBlock stands for, for comments and for Cilium (which names some of them by entity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpOrigin {
    ApiServer,
    /// NodeLocal DNSCache (an address bound on every node).
    NodeLocalDns,
    Node,
    External,
    /// The internet-egress pattern (`0.0.0.0/0`, `::/0` less the cluster).
    Internet,
}

/// One peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Pods by label. `namespace` is `None` when the pods live in the policy's own namespace
    /// (a podSelector alone), `Some` when a namespaceSelector must be ANDed in the same peer.
    /// `selector` empty means every pod of that namespace (no plan uses it; kept for
    /// completeness).
    Pods {
        namespace: Option<String>,
        selector: PodSelector,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
        origin: IpOrigin,
    },
    /// Any destination (a rule without `to`): only DNS uses it, when no cluster DNS is known.
    Anywhere,
}

/// A peer with what the reader should know about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerPlan {
    pub target: Target,
    /// DNS names the sources resolved to addresses of this peer (external peers).
    pub dns_names: BTreeSet<String>,
    /// True for the cluster DNS pods (Cilium adds its DNS proxy rule there).
    pub cluster_dns: bool,
    /// Comment lines rendered above the peer.
    pub comments: Vec<String>,
}

/// One rule: any of `peers` on any of `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulePlan {
    pub peers: Vec<PeerPlan>,
    pub ports: Vec<PortSpec>,
}

/// One policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPlan {
    pub name: String,
    pub namespace: String,
    /// The selected pods; empty selects every pod of the namespace.
    pub selector: PodSelector,
    pub direction: Direction,
    pub rules: Vec<RulePlan>,
    pub annotations: BTreeMap<String, String>,
    /// Comment lines rendered above the document.
    pub comments: Vec<String>,
}

impl PolicyPlan {
    pub fn new(name: String, namespace: String, direction: Direction) -> Self {
        PolicyPlan {
            name,
            namespace,
            selector: PodSelector::default(),
            direction,
            rules: Vec::new(),
            annotations: BTreeMap::new(),
            comments: Vec::new(),
        }
    }

    pub fn annotate(&mut self, key: &str, value: impl Into<String>) {
        self.annotations
            .insert(format!("{ANNOTATION_PREFIX}{key}"), value.into());
    }
}

/// A workload that needs the `InternetEgress::Label` pattern: its namespace policy must allow
/// these ports, in these address families (`true` for IPv6).
pub struct InternetNeed {
    pub workload: WorkloadRef,
    pub ports: PortSet,
    pub families: BTreeSet<bool>,
}
