//! What resolution produces: the source workload, the peer, and the edge between them with what
//! was observed of it. These are the values the store keeps (hence serde) and synthesis reads.

use std::net::IpAddr;
use std::sync::Arc;

use flow_model::{Protocol, WorkloadRef};
use serde::{Deserialize, Serialize};

use super::observation::Observation;
use crate::policy::PodSelector;

/// The source workload of a flow, as policies select it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceWorkload {
    pub namespace: String,
    pub workload: WorkloadRef,
    /// The `podSelector` a policy uses for this workload: the owner's whole selector
    /// (`matchLabels` and `matchExpressions`), or failing that the pod labels less the unstable
    /// ones. Never empty.
    pub selector: PodSelector,
}

/// What a destination turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Peer {
    /// Pods of one workload (directly by pod IP, or behind a Service). The edge's port is the
    /// port the pod receives on: a Service's targetPort, named ports already resolved.
    Pods {
        namespace: String,
        workload: WorkloadRef,
        selector: PodSelector,
        /// Set when the flow went through a Service (its name), for comments and annotations.
        service: Option<String>,
        /// True when this edge is DNS to the cluster DNS: a DNS port of the cluster DNS Service
        /// (through it or straight to its pods; see `cluster::dns`). Other ports of the same pods
        /// (CoreDNS metrics) are ordinary edges.
        cluster_dns: bool,
    },
    /// NodeLocal DNSCache: the address its hostNetwork DaemonSet listens on in every node
    /// (169.254.20.10 by default, or the kube-dns ClusterIP it also binds), on a DNS port. Only
    /// an ipBlock can name it, and no Service translation happens on the way.
    NodeLocalDns { ip: IpAddr },
    /// The Kubernetes API server, through the `kubernetes` Service or its endpoint addresses directly.
    ApiServer { ip: IpAddr },
    /// A node address or a hostNetwork pod: only an ipBlock can name it.
    Node { ip: IpAddr, node: String },
    /// Anything else: an address outside the cluster. `service` is set for the backend of a
    /// selector-less Service (the names the source resolved then name the Service, not this
    /// address); otherwise the source connected to this address itself.
    External { ip: IpAddr, service: Option<String> },
}

/// One edge after resolution: a source workload reached a peer on a port. A Service destination
/// with several backend workloads yields one `ResolvedFlow` per (workload, targetPort).
///
/// Source, peer and observation are shared, not owned: a [`super::Resolver`] hands out one `Arc`
/// per distinct source workload and per distinct peer, and one observation `Arc` for all the
/// flows of a record, so a million flows between a few thousand workloads stay small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFlow {
    pub source: Arc<SourceWorkload>,
    pub peer: Arc<Peer>,
    /// The port the destination receives on (targetPort for Services).
    pub port: u16,
    pub protocol: Protocol,
    pub observed: Arc<Observation>,
}

impl ResolvedFlow {
    /// What identifies the edge: flows with equal keys merge (see [`super::merge_edges`]).
    pub fn key(&self) -> EdgeKey<'_> {
        (&self.source, &self.peer, self.port, self.protocol)
    }
}

/// (source, peer, port, protocol): one edge of the learned egress graph.
pub type EdgeKey<'a> = (&'a SourceWorkload, &'a Peer, u16, Protocol);

/// The flows one record (or several) resolved to, and notes on what was left out and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub flows: Vec<ResolvedFlow>,
    /// One line per skipped record or skipped backend, starting with [`super::describe`] of the
    /// record.
    pub notes: Vec<String>,
    /// What the reader must know about flows that *were* resolved: their rule may not do what it
    /// seems (see [`WarningReason`]). A [`super::Resolver`] gives each destination's warnings once.
    pub warnings: Vec<Warning>,
}

/// Why a resolved flow's rule needs a second look. A closed set, so that a service can count
/// warnings by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningReason {
    /// The snapshot has no Services: an outside address may be a ClusterIP.
    MaybeServiceAddress,
    /// A multicast destination: CNIs differ in whether policies apply to it.
    Multicast,
    /// A broadcast destination: CNIs differ in whether policies apply to it.
    Broadcast,
    /// A node address on a Service's NodePort: a Service implementation that translates it before
    /// policy (kube-proxy replacements) makes the node's ipBlock useless.
    NodePort,
}

impl WarningReason {
    /// A label value (`maybe_service_address`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WarningReason::MaybeServiceAddress => "maybe_service_address",
            WarningReason::Multicast => "multicast",
            WarningReason::Broadcast => "broadcast",
            WarningReason::NodePort => "node_port",
        }
    }
}

/// A warning about a resolved flow (see [`Resolution::warnings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub reason: WarningReason,
    /// One line naming the flow and the address.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
