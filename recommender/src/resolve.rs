//! Resolution of a flow's destination against the cluster model (DESIGN.md, "Recommender").

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::{FlowRecord, Protocol, WorkloadRef};

/// The source workload of a flow, as policies select it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceWorkload {
    pub namespace: String,
    pub workload: WorkloadRef,
    /// The labels a policy's `podSelector` uses for this workload: the owner's selector
    /// (`matchLabels`), or failing that the pod labels less the unstable ones. Never empty.
    pub selector: BTreeMap<String, String>,
}

/// What a destination turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// Pods of one workload (directly by pod IP, or behind a Service). `port` is the port the pod
    /// receives on: a Service's targetPort, named ports already resolved.
    Pods {
        namespace: String,
        workload: WorkloadRef,
        selector: BTreeMap<String, String>,
        /// Set when the flow went through a Service (its name), for comments and annotations.
        service: Option<String>,
        /// True when this is the cluster DNS (the Service `kube-dns` in `kube-system`, or its backends).
        cluster_dns: bool,
    },
    /// The Kubernetes API server, through the `kubernetes` Service or its endpoint addresses directly.
    ApiServer { ip: IpAddr },
    /// A node address or a hostNetwork pod: only an ipBlock can name it.
    Node { ip: IpAddr, node: String },
    /// Anything else: an address outside the cluster, with the names the source resolved to it.
    External { ip: IpAddr, dns_names: Vec<String> },
}

/// One flow after resolution. A Service destination with several backend workloads yields one
/// `ResolvedFlow` per (workload, targetPort).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFlow {
    pub source: SourceWorkload,
    pub peer: Peer,
    /// The port the destination receives on (targetPort for Services).
    pub port: u16,
    pub protocol: Protocol,
    pub record: FlowRecord,
}
