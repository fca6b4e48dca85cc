//! Resolution of a flow's destination against the cluster model (DESIGN.md, "Recommender").
//!
//! - source: the pod by uid, else namespace/name, in the snapshot; when the snapshot does not have
//!   it (it was gone before the snapshot), the record's own namespace, workload and labels (with the
//!   workload's selector when that object is in the snapshot). Host processes and hostNetwork pods
//!   are skipped with a note: NetworkPolicy does not apply to them.
//! - destination, in this order:
//!   1. a Service ClusterIP (either family): the Service port with the flow's port and protocol; a
//!      port the Service does not have is *unresolved* (skipped with a note): kube-proxy drops or
//!      rejects such traffic, so it reached nothing a policy should allow. An external or
//!      load-balancer IP of a Service on one of its ports counts too (see
//!      [`Cluster::service_route`]: in-cluster traffic to it never leaves). Then every backend of
//!      that port ([`Cluster::backends`]) with its own targetPort: pods → [`Peer::Pods`] of their
//!      workload; `default/kubernetes` → [`Peer::ApiServer`] per endpoint; nodes and hostNetwork
//!      pods → [`Peer::Node`]; addresses outside the snapshot (selector-less Services) →
//!      [`Peer::External`] without DNS names (the names the client resolved are the Service's, not
//!      the backend's). A Service with no backends in the snapshot is unresolved, except the
//!      cluster DNS (see 2).
//!   2. cluster DNS (a pod selected by a cluster DNS Service, or that Service's ClusterIP):
//!      [`Peer::Pods`] with `cluster_dns` and the DNS Service's own selector. With no DNS pods in
//!      the snapshot, one peer named after the Service (kind `Service`), on the numeric targetPort or
//!      else the Service port, so that DNS is never left out.
//!   3. an API server endpoint address → [`Peer::ApiServer`], port as is;
//!   4. a pod IP (headless Services land here too) → [`Peer::Pods`], port as is;
//!   5. a node address or hostNetwork pod → [`Peer::Node`];
//!   6. anything else → [`Peer::External`] with the record's DNS names.
//!
//! [`connections_for`] reads the same cluster the same way for the evaluator.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use flow_model::{Destination, FlowRecord, Protocol, SourceKind, WorkloadRef};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};

use crate::cluster::{
    is_apiserver_service, is_cluster_dns, is_host_network, qualified_name, target_port, Cluster,
    IpOwner,
};

mod connections;
mod resolver;

pub use connections::{connections_for, connections_to, ip_endpoint, pod_endpoint, Connections};
pub use resolver::Resolver;

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
///
/// Source, peer and record are shared, not owned: a [`Resolver`] hands out one `Arc` per distinct
/// source workload and per distinct peer, and one record `Arc` for all the flows of a record, so
/// a million flows between a few thousand workloads cost little more than the million records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFlow {
    pub source: Arc<SourceWorkload>,
    pub peer: Arc<Peer>,
    /// The port the destination receives on (targetPort for Services).
    pub port: u16,
    pub protocol: Protocol,
    pub record: Arc<FlowRecord>,
}

/// The flows one record (or several) resolved to, and notes on what was left out and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub flows: Vec<ResolvedFlow>,
    /// One line per skipped record or skipped backend, starting with [`describe`] of the record.
    pub notes: Vec<String>,
}

/// `source → ip:port/PROTO`, to name a record in notes and reports.
pub fn describe(record: &FlowRecord) -> String {
    let source = &record.source;
    let who = match (source.kind, &source.namespace, &source.pod) {
        (SourceKind::Host, ..) => format!("host {}", record.node),
        (_, Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        (_, Some(ns), None) => format!("{ns}/(pod uid {})", source.uid.as_deref().unwrap_or("?")),
        _ => format!("pod on {}", record.node),
    };
    let d = &record.destination;
    let address = std::net::SocketAddr::new(d.ip, d.port);
    format!("{who} -> {address}/{}", d.protocol)
}

/// Records merged by [`FlowRecord::key`] (they are deltas of the same flows), in key order.
pub fn merge_records(records: impl IntoIterator<Item = FlowRecord>) -> Vec<FlowRecord> {
    let mut merged: BTreeMap<flow_model::FlowKey, FlowRecord> = BTreeMap::new();
    for record in records {
        match merged.entry(record.key()) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&record),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(record);
            }
        }
    }
    merged.into_values().collect()
}

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
    }
    all
}

/// Resolves one record: one [`ResolvedFlow`] per distinct (peer, port) it reached; none, with a
/// note, when it cannot be resolved (see the module comment for the rules). For many records, a
/// [`Resolver`] does the same with memoized lookups.
pub fn resolve(cluster: &Cluster, record: &FlowRecord) -> Resolution {
    Resolver::new(cluster).resolve(record)
}

/// The record's source pod in the snapshot (`None` when absent), or why the record has no pod
/// source that NetworkPolicy governs.
pub(crate) fn source_pod<'c>(
    cluster: &'c Cluster,
    record: &FlowRecord,
) -> Result<Option<&'c Pod>, String> {
    let source = &record.source;
    if source.kind == SourceKind::Host {
        return Err("a node process: NetworkPolicy does not apply to it; skipped".into());
    }
    let pod = source
        .uid
        .as_deref()
        .and_then(|uid| cluster.pod_by_uid(uid))
        .or_else(|| cluster.pod(source.namespace.as_deref()?, source.pod.as_deref()?));
    if source.host_network || pod.is_some_and(is_host_network) {
        return Err("a hostNetwork pod: NetworkPolicy does not apply to it; skipped".into());
    }
    Ok(pod)
}

/// The namespace of a record whose pod is not in the snapshot.
pub(crate) fn record_namespace(record: &FlowRecord) -> Result<String, String> {
    record
        .source
        .namespace
        .clone()
        .ok_or_else(|| "source pod has no namespace and is not in the cluster snapshot".into())
}

pub(crate) fn source_workload(
    cluster: &Cluster,
    record: &FlowRecord,
) -> Result<SourceWorkload, String> {
    if let Some(pod) = source_pod(cluster, record)? {
        return Ok(SourceWorkload {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            workload: cluster.workload_of(pod),
            selector: cluster.selector_of(pod)?,
        });
    }
    let source = &record.source;
    let namespace = record_namespace(record)?;
    let workload = match (&source.workload, &source.pod) {
        (Some(w), _) => cluster.top_workload(&namespace, w, Some(&source.labels)),
        (None, Some(pod)) => WorkloadRef {
            kind: "Pod".into(),
            name: pod.clone(),
        },
        (None, None) => return Err("source has neither workload nor pod name".into()),
    };
    let selector = cluster.selector_for(&namespace, &workload, &source.labels)?;
    Ok(SourceWorkload {
        namespace,
        workload,
        selector,
    })
}

/// What a destination address resolves to, whoever sent the traffic: the peers with the port
/// they receive on, or why there are none, and notes on backends left out. An
/// [`Peer::External`] for the address itself carries no DNS names here: they come from each
/// record ([`DestinationPeers::for_record`]).
///
/// Peers are interned in `known` (one `Arc` per distinct peer, across destinations).
#[derive(Clone, Debug)]
pub(crate) struct DestinationPeers {
    pub peers: Result<Vec<(Arc<Peer>, u16)>, String>,
    pub notes: Vec<String>,
}

/// The shared copy of `value` in `known`, added when new.
pub(crate) fn intern<T: Ord>(known: &mut BTreeSet<Arc<T>>, value: T) -> Arc<T> {
    if let Some(shared) = known.get(&value) {
        return Arc::clone(shared);
    }
    let shared = Arc::new(value);
    known.insert(Arc::clone(&shared));
    shared
}

impl DestinationPeers {
    pub fn new(
        cluster: &Cluster,
        (ip, port, protocol): (IpAddr, u16, Protocol),
        known: &mut BTreeSet<Arc<Peer>>,
    ) -> Self {
        let mut notes = Vec::new();
        let peers =
            peers(cluster, ip, port, protocol, &mut |note| notes.push(note)).map(|mut peers| {
                peers.sort();
                peers.dedup();
                peers
                    .into_iter()
                    .map(|(peer, port)| (intern(known, peer), port))
                    .collect()
            });
        DestinationPeers { peers, notes }
    }

    /// The peers of `destination`, with its DNS names on the external peer that is the address
    /// itself.
    pub fn for_record(
        &self,
        destination: &Destination,
        known: &mut BTreeSet<Arc<Peer>>,
    ) -> Result<Vec<(Arc<Peer>, u16)>, String> {
        let mut peers = self.peers.clone()?;
        if destination.dns_names.is_empty() {
            return Ok(peers);
        }
        for (peer, _) in &mut peers {
            if let Peer::External { ip, .. } = **peer {
                if ip == destination.ip {
                    let dns_names = destination.dns_names.clone();
                    *peer = intern(known, Peer::External { ip, dns_names });
                }
            }
        }
        Ok(peers)
    }
}

/// The peers (with the port they receive on) of a destination. `Err` when the destination cannot
/// be resolved at all; `note` takes backends skipped on the way.
fn peers(
    cluster: &Cluster,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    note: &mut impl FnMut(String),
) -> Result<Vec<(Peer, u16)>, String> {
    if let Some((service, service_port)) = cluster
        .service_route(ip, port, protocol)
        .map_err(|why| format!("{why}: the traffic reached no backend; unresolved"))?
    {
        return service_peers(cluster, service, service_port, (ip, port, protocol), note);
    }
    if cluster.apiserver_addresses().contains(&ip) {
        return Ok(vec![(Peer::ApiServer { ip }, port)]);
    }
    let peer = match cluster.ip_owner(ip) {
        IpOwner::Pod(pod) => pod_peer(cluster, pod, None)?,
        IpOwner::Node { node } => Peer::Node {
            ip,
            node: node.unwrap_or_default().to_owned(),
        },
        IpOwner::Unknown => Peer::External {
            ip,
            dns_names: Vec::new(),
        },
    };
    Ok(vec![(peer, port)])
}

fn service_peers(
    cluster: &Cluster,
    service: &Service,
    service_port: &ServicePort,
    (ip, port, protocol): (IpAddr, u16, Protocol),
    note: &mut impl FnMut(String),
) -> Result<Vec<(Peer, u16)>, String> {
    let name = qualified_name(service);
    let backends = cluster.backends(service, service_port, ip);
    if backends.is_empty() {
        if is_cluster_dns(service) {
            if let Some(selector) = crate::cluster::service_selector(service) {
                note(format!(
                    "cluster DNS Service {name} has no backends in the snapshot; using its selector"
                ));
                let peer = Peer::Pods {
                    namespace: service.metadata.namespace.clone().unwrap_or_default(),
                    workload: WorkloadRef {
                        kind: "Service".into(),
                        name: service.metadata.name.clone().unwrap_or_default(),
                    },
                    selector: selector.clone(),
                    service: service.metadata.name.clone(),
                    cluster_dns: true,
                };
                return Ok(vec![(
                    peer,
                    target_port(service_port, None).unwrap_or(port),
                )]);
            }
        }
        return Err(format!(
            "Service {name} has no backends for port {port}/{protocol} in the snapshot; unresolved"
        ));
    }
    let mut peers = Vec::new();
    for backend in backends {
        let peer = if is_apiserver_service(service) {
            Peer::ApiServer { ip: backend.ip }
        } else {
            match backend.owner {
                IpOwner::Pod(pod) => match pod_peer(cluster, pod, Some(service)) {
                    Ok(peer) => peer,
                    Err(why) => {
                        note(format!("backend {} of Service {name}: {why}", backend.ip));
                        continue;
                    }
                },
                IpOwner::Node { node } => Peer::Node {
                    ip: backend.ip,
                    node: node.unwrap_or_default().to_owned(),
                },
                IpOwner::Unknown => Peer::External {
                    ip: backend.ip,
                    dns_names: Vec::new(),
                },
            }
        };
        peers.push((peer, backend.port));
    }
    if peers.is_empty() {
        return Err(format!("no backend of Service {name} could be resolved"));
    }
    Ok(peers)
}

/// A pod as a peer: its workload and selector, or the cluster DNS Service's selector when it is a
/// DNS pod (reached directly or through the DNS Service).
fn pod_peer(cluster: &Cluster, pod: &Pod, via: Option<&Service>) -> Result<Peer, String> {
    let dns = match via {
        Some(service) => Some(service).filter(|s| is_cluster_dns(s)),
        None => cluster.cluster_dns_service_of(pod),
    };
    let selector = match dns.and_then(crate::cluster::service_selector) {
        Some(selector) => selector.clone(),
        None => cluster.selector_of(pod)?,
    };
    Ok(Peer::Pods {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        workload: cluster.workload_of(pod),
        selector,
        service: via.and_then(|s| s.metadata.name.clone()),
        cluster_dns: dns.is_some(),
    })
}
