//! Resolution of a flow's destination against the cluster model (`docs/architecture.md`, "Recommender").
//!
//! - source: the pod by uid, else namespace/name, in the snapshot; when the snapshot does not have
//!   it (it was gone before the snapshot), the record's own namespace, workload and labels (with the
//!   workload's selector when that object is in the snapshot). Host processes and hostNetwork pods
//!   are skipped with a note: NetworkPolicy does not apply to them.
//! - destination (an IPv4-mapped IPv6 address is taken as the IPv4 address it is on the wire), in
//!   this order:
//!   0. loopback and the unspecified address never leave the pod: *refused* (see `address`);
//!   1. a Service ClusterIP (either family): the Service port with the flow's port and protocol; a
//!      port the Service does not have is *unresolved* (skipped with a note): kube-proxy drops or
//!      rejects such traffic, so it reached nothing a policy should allow. An external or
//!      load-balancer IP of a Service on one of its ports counts too (see
//!      [`Cluster::service_route`]: in-cluster traffic to it never leaves). Then every backend of
//!      that port ([`Cluster::backends`]) with its own targetPort: pods → [`Peer::Pods`] of their
//!      workload; `default/kubernetes` → [`Peer::ApiServer`] per endpoint; nodes and hostNetwork
//!      pods → [`Peer::Node`]; addresses outside the snapshot (selector-less Services) →
//!      [`Peer::External`] naming the Service (the names the client resolved are the Service's, not
//!      the backend's). A Service with no backends in the snapshot is unresolved, except the
//!      cluster DNS on a DNS port (see 2).
//!   2. cluster DNS (`cluster::dns`, one definition): a DNS port of a DNS Service, through it or
//!      straight to a DNS targetPort of one of its pods → [`Peer::Pods`] with `cluster_dns` and the
//!      DNS Service's own selector; any other port of those pods (CoreDNS metrics) is an ordinary
//!      [`Peer::Pods`] of their workload. With no DNS pods in the snapshot, one peer named after the
//!      Service (kind `Service`), on the numeric targetPort or else the Service port, so that DNS
//!      is never left out. NodeLocal DNSCache (its `-localip` addresses, 169.254.20.10 by default)
//!      on 53 → [`Peer::NodeLocalDns`], also beside the DNS pods when the cache binds the DNS
//!      ClusterIP;
//!   3. an API server endpoint (address AND port) → [`Peer::ApiServer`]; the same address on
//!      another port (the kubelet of a control-plane node) is what the address is (4, 5);
//!   4. a pod IP (headless Services land here too) → [`Peer::Pods`], port as is;
//!   5. a node address or hostNetwork pod → [`Peer::Node`] (a warning when the port is a
//!      Service's NodePort);
//!   6. anything else → [`Peer::External`], the record's DNS names going with its
//!      [`Observation`]; unless `address` refuses it (an unknown address in the Service range or
//!      in a node's pod range, or one resolved from a `.svc.` name) or warns about it (multicast,
//!      broadcast, where the Service range probably is, or any address when the snapshot has no
//!      Services).
//!
//! [`connections_for`] reads the same cluster the same way for the evaluator.
//!
//! Modules: `model` (what resolution produces), `observation` (what was seen of an edge),
//! `records` (naming and merging records and edges), `source` and `destination` (the rules above),
//! `address` (addresses that are not peers), `facts` (what every destination looks up, computed
//! once per cluster), `connections` (evaluator endpoints and connections), `resolver` (all of it
//! memoized for many records against one cluster).

use flow_model::FlowRecord;

use crate::cluster::Cluster;

mod address;
mod connections;
mod destination;
mod facts;
mod model;
mod observation;
mod records;
mod resolver;
mod source;

pub use connections::{connections_to, endpoint_of_pod, ip_endpoint, pod_endpoint, Connections};
pub use facts::Facts;
pub use model::{EdgeKey, Peer, Resolution, ResolvedFlow, SourceWorkload, Warning, WarningReason};
pub use observation::Observation;
pub use records::{describe, merge_edges, merge_records};
pub use resolver::Resolver;

/// Resolves every record (merge them with [`merge_records`] first), with one [`Resolver`].
pub fn resolve_all<'r>(
    cluster: &Cluster,
    records: impl IntoIterator<Item = &'r FlowRecord>,
) -> Resolution {
    let mut resolver = Resolver::new(cluster);
    let mut all = Resolution::default();
    for record in records {
        let one = resolver.resolve(record);
        all.flows.extend(one.flows);
        all.notes.extend(one.notes);
        all.warnings.extend(one.warnings);
    }
    all
}

/// Resolves one record: one [`ResolvedFlow`] per distinct (peer, port) it reached; none, with a
/// note, when it cannot be resolved (see the module comment for the rules). For many records, a
/// [`Resolver`] does the same with memoized lookups.
pub fn resolve(cluster: &Cluster, record: &FlowRecord) -> Resolution {
    Resolver::new(cluster).resolve(record)
}

/// The connections of a FlowRecord, for the evaluator. Sources are read as [`resolve()`] reads
/// them: host processes and hostNetwork pods are skipped with a note; a pod missing from the
/// snapshot is described from the record (labels, namespace), without an address. For many
/// records, a [`Resolver`] does the same with memoized lookups.
pub fn connections_for(cluster: &Cluster, record: &FlowRecord) -> Connections {
    Resolver::new(cluster).connections_for(record)
}
