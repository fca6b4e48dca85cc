//! Synthesis of least-privilege egress policies from resolved flows.
//!
//! [`recommend`] turns resolved flows into a [`Recommendation`]; [`render`] prints it as
//! deterministic multi-document YAML (same flows in any order, same bytes).
//!
//! - one egress policy per source workload ([`group`]), named by [`naming`];
//! - in-cluster peers by the peer workload's selector (plus a `namespaceSelector` on
//!   `kubernetes.io/metadata.name`, in the same peer, across namespaces); the cluster DNS by its
//!   Service's selector on UDP and TCP; the API server, nodes and external addresses as ipBlocks,
//!   external ones merged only exactly ([`cidr`]); ports numeric with `endPort` runs ([`ports`]);
//! - namespace-wide policies on request ([`namespace`]) and complementary ingress ([`ingress`]);
//! - objects per format ([`networkpolicy`], [`cilium`]) and the YAML emitter ([`render`]).
//!
//! Refused and timed-out flows: every attempted destination is allowed, whatever became of the
//! attempt. The application tries to reach it, and a policy that denies it turns a fast RST (which
//! the application already handles) into a silent drop and a hang until its timeout: the
//! recommendation must not change behaviour. `verify` checks every flow the same way. Peers and
//! ports that never succeeded during the observation window are marked, with a comment above the
//! peer (`# never succeeded: TCP/8443 refused`) and the policy annotation
//! `egress-recommender.io/never-succeeded`, so a reviewer can delete them deliberately.
//! UDP (`sent`) and unknown outcomes count as not failed.
//!
//! Scope and skips: `Options::namespaces` selects the namespaces whose policies are produced:
//! egress policies of sources there, and (with `with_ingress`) ingress policies of destinations
//! there, which list every observed caller from any namespace. Workloads whose pods run with
//! hostNetwork (NetworkPolicy does not apply to them) or that have no selector are skipped with a
//! note at the top of the output, never given an empty `podSelector`. No `default-deny-all-egress`
//! is written for `kube-system` (isolating system pods that the window did not see breaks
//! clusters); a note says so. With `InternetEgress::Label`, the workloads that need internet
//! egress only get it once their pods carry the label, so `verify` denies their external flows
//! until then; the output names those workloads.

pub mod cidr;
pub mod cilium;
pub mod group;
pub mod ingress;
pub mod model;
pub mod namespace;
pub mod naming;
pub mod networkpolicy;
pub mod ports;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use flow_model::Protocol;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cluster::Cluster;
use crate::resolve::{Peer, ResolvedFlow};
use model::{Direction, PolicyPlan};
use ports::PortSet;
pub use render::render;

/// Output format of `recommend`/`export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// networking.k8s.io/v1 NetworkPolicy.
    #[default]
    Networkpolicy,
    /// cilium.io/v2 CiliumNetworkPolicy, with `toFQDNs` for external names.
    Cilium,
}

/// How a workload that reached more than `max_external_peers` external addresses gets internet egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InternetEgress {
    /// ipBlock 0.0.0.0/0 and ::/0 except the cluster's pod and Service ranges, on the observed ports.
    #[default]
    Cidr,
    /// A per-namespace policy for pods labelled `networking/allow-internet-egress: "true"`.
    Label,
}

/// What `recommend` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Add a per-namespace `default-deny-all-egress` that allows DNS to the cluster DNS pods only.
    pub default_deny: bool,
    /// Add the complementary ingress policies for in-cluster destinations.
    pub with_ingress: bool,
    /// Also add ingress policies for shared cluster services (cluster DNS) when `with_ingress`.
    pub ingress_for_cluster_services: bool,
    pub format: Format,
    /// Widen external IPv4 / IPv6 addresses to these prefix lengths (deliberate, user-asked widening).
    pub cidr_prefix_v4: Option<u8>,
    pub cidr_prefix_v6: Option<u8>,
    /// Above this many distinct external addresses, a workload gets the internet-egress pattern.
    pub max_external_peers: usize,
    pub internet_egress: InternetEgress,
    /// Pod and Service ranges excluded from internet egress; derived from the cluster when empty.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespaces: Vec::new(),
            default_deny: false,
            with_ingress: false,
            ingress_for_cluster_services: false,
            format: Format::Networkpolicy,
            cidr_prefix_v4: None,
            cidr_prefix_v6: None,
            max_external_peers: 32,
            internet_egress: InternetEgress::Cidr,
            cluster_cidrs: Vec::new(),
        }
    }
}

/// One step on the way to a node of a rendered object, for comments attached to that node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSeg {
    /// Borrowed for the paths policies store (no allocation per comment), owned while rendering.
    Key(std::borrow::Cow<'static, str>),
    Index(usize),
}

/// Comment lines keyed by the path of the node they precede (a sequence item).
pub type NodeComments = BTreeMap<Vec<PathSeg>, Vec<String>>;

/// Builds a path from `"key"` and index parts.
pub fn path(parts: &[PathPart]) -> Vec<PathSeg> {
    parts
        .iter()
        .map(|p| match p {
            PathPart::K(k) => PathSeg::Key(std::borrow::Cow::Borrowed(k)),
            PathPart::I(i) => PathSeg::Index(*i),
        })
        .collect()
}

/// A literal path part for [`path`].
pub enum PathPart {
    K(&'static str),
    I(usize),
}

/// A policy object of either format.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    NetworkPolicy(Box<NetworkPolicy>),
    Cilium(Box<cilium::CiliumNetworkPolicy>),
}

/// One YAML document of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub object: Object,
    /// Comment lines above the document.
    pub comments: Vec<String>,
    /// Comment lines above nodes inside the object (ipBlock peers, pod peers).
    pub node_comments: NodeComments,
}

/// What `recommend` produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recommendation {
    pub documents: Vec<Document>,
    /// Comment lines at the top of the output: skipped workloads, notes for the reader.
    pub notes: Vec<String>,
}

impl Recommendation {
    /// The NetworkPolicy objects (empty for the Cilium format).
    pub fn network_policies(&self) -> Vec<&NetworkPolicy> {
        self.documents
            .iter()
            .filter_map(|d| match &d.object {
                Object::NetworkPolicy(np) => Some(&**np),
                Object::Cilium(_) => None,
            })
            .collect()
    }
}

impl Recommendation {
    /// The NetworkPolicy objects, by value (empty for the Cilium format).
    pub fn into_network_policies(self) -> Vec<NetworkPolicy> {
        self.documents
            .into_iter()
            .filter_map(|d| match d.object {
                Object::NetworkPolicy(np) => Some(*np),
                Object::Cilium(_) => None,
            })
            .collect()
    }
}

/// What every plan builder needs to know beyond the flows of one workload.
pub struct Context<'a> {
    pub options: &'a Options,
    /// Where the cluster DNS pods live and how to select them (the DNS Service's own selector).
    pub dns_namespace: String,
    pub dns_selector: BTreeMap<String, String>,
    /// The ports the cluster DNS was reached on, UDP and TCP (53 when none was seen).
    pub dns_ports: PortSet,
    /// The cluster's pod and Service ranges ([`cidr::cluster_ranges`]).
    pub cluster_ranges: Vec<IpNet>,
}

/// The cluster DNS Service: `kube-dns` in `kube-system`, the name CoreDNS keeps for compatibility.
const DNS_NAMESPACE: &str = "kube-system";
const DNS_SERVICE: &str = "kube-dns";

impl<'a> Context<'a> {
    pub fn new(cluster: &Cluster, flows: &[ResolvedFlow], options: &'a Options) -> Self {
        let service_selector = cluster
            .services
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(DNS_NAMESPACE)
                    && s.metadata.name.as_deref() == Some(DNS_SERVICE)
            })
            .and_then(|s| s.spec.as_ref()?.selector.clone())
            .filter(|s| !s.is_empty());
        let mut observed_selector: Option<&BTreeMap<String, String>> = None;
        let mut dns_ports = PortSet::new();
        for f in flows {
            if let Peer::Pods {
                namespace,
                selector,
                cluster_dns: true,
                ..
            } = &*f.peer
            {
                if namespace == DNS_NAMESPACE && !selector.is_empty() {
                    observed_selector =
                        Some(observed_selector.map_or(selector, |s| s.min(selector)));
                }
                dns_ports.insert((f.protocol, f.port));
            }
        }
        if dns_ports.is_empty() {
            dns_ports.insert((Protocol::Udp, 53));
        }
        let dns_selector = service_selector
            .or_else(|| observed_selector.cloned())
            .unwrap_or_else(|| BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]));
        Context {
            options,
            dns_namespace: DNS_NAMESPACE.to_owned(),
            dns_selector,
            dns_ports: ports::with_dns_fallback(&dns_ports),
            cluster_ranges: cidr::cluster_ranges(cluster, &options.cluster_cidrs),
        }
    }
}

/// Orders documents: per namespace, default-deny, internet egress, workload egress, ingress.
fn rank(plan: &PolicyPlan) -> u8 {
    match (plan.name.as_str(), plan.direction) {
        (naming::DEFAULT_DENY, _) if plan.selector.is_empty() => 0,
        (naming::INTERNET_EGRESS, _) if plan.selector.contains_key(model::INTERNET_LABEL.0) => 1,
        (_, Direction::Egress) => 2,
        (_, Direction::Ingress) => 3,
    }
}

/// Recommends policies for `flows` (see the module doc).
pub fn recommend(cluster: &Cluster, flows: &[ResolvedFlow], options: &Options) -> Recommendation {
    let ctx = Context::new(cluster, flows, options);
    let wanted =
        |ns: &str| options.namespaces.is_empty() || options.namespaces.iter().any(|n| n == ns);

    let mut selected: Vec<&ResolvedFlow> = flows
        .iter()
        .filter(|f| wanted(&f.source.namespace))
        .collect();
    // Unstable is fine: nothing downstream depends on the order of flows within a workload.
    selected.sort_unstable_by(|a, b| {
        (&a.source.namespace, &a.source.workload).cmp(&(&b.source.namespace, &b.source.workload))
    });
    let mut workloads: Vec<&[&ResolvedFlow]> = selected
        .chunk_by(|a, b| {
            a.source.namespace == b.source.namespace && a.source.workload == b.source.workload
        })
        .collect();
    workloads.retain(|w| !w.is_empty());

    let mut by_ns: BTreeMap<&str, Vec<&flow_model::WorkloadRef>> = BTreeMap::new();
    for w in &workloads {
        by_ns
            .entry(&w[0].source.namespace)
            .or_default()
            .push(&w[0].source.workload);
    }
    let names: BTreeMap<&str, BTreeMap<flow_model::WorkloadRef, String>> = by_ns
        .iter()
        .map(|(ns, ws)| (*ns, naming::workload_names(ws.iter().copied(), "egress")))
        .collect();

    let mut notes = Vec::new();
    let mut plans: Vec<PolicyPlan> = Vec::new();
    let mut internet_needs: BTreeMap<&str, Vec<group::InternetNeed>> = BTreeMap::new();
    let mut egress_namespaces: BTreeSet<&str> = BTreeSet::new();
    for flows in workloads {
        // The same workload may carry several selectors if resolution changed mid-window; the
        // smallest one keeps the choice independent of input order.
        let source = &flows
            .iter()
            .map(|f| &f.source)
            .min_by(|a, b| a.selector.cmp(&b.selector))
            .expect("chunks are non-empty");
        let label = group::workload_label(&source.namespace, &source.workload);
        if flows.iter().all(|f| f.record.source.host_network) {
            notes.push(format!(
                "skipped {label}: hostNetwork pods are not subject to NetworkPolicy"
            ));
            continue;
        }
        if source.selector.is_empty() {
            notes.push(format!(
                "skipped {label}: no stable labels to select its pods (an empty podSelector would select the whole namespace)"
            ));
            continue;
        }
        let name = names[source.namespace.as_str()][&source.workload].clone();
        let egress = group::egress_plan(&ctx, source, flows, name);
        if let Some(need) = egress.internet_need {
            internet_needs
                .entry(&source.namespace)
                .or_default()
                .push(need);
        }
        egress_namespaces.insert(&source.namespace);
        plans.push(egress.plan);
    }
    for (ns, needs) in &internet_needs {
        plans.push(namespace::internet_label(&ctx, ns, needs));
    }
    if options.default_deny {
        for ns in &egress_namespaces {
            if *ns == DNS_NAMESPACE {
                notes.push(format!(
                    "no {} in {ns}: isolating the cluster's system pods can break the cluster; add it by hand if you mean it",
                    naming::DEFAULT_DENY
                ));
                continue;
            }
            plans.push(namespace::default_deny(&ctx, ns));
        }
    }
    if options.with_ingress {
        plans.extend(ingress::ingress_plans(&ctx, flows, wanted));
    }
    plans.sort_by(|a, b| (&a.namespace, rank(a), &a.name).cmp(&(&b.namespace, rank(b), &b.name)));
    notes.sort();

    // Plans are consumed one by one so that plans and objects never all live at once.
    let documents = plans
        .into_iter()
        .map(|plan| match options.format {
            Format::Networkpolicy => networkpolicy::document(&plan),
            Format::Cilium => cilium::document(&ctx, &plan),
        })
        .collect();
    Recommendation { documents, notes }
}
