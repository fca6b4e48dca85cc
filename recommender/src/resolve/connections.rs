//! Flows as the evaluator sees them: [`Connection`]s between [`Endpoint`]s, after Service
//! translation (NetworkPolicy is enforced after DNAT, so a connection to a ClusterIP becomes one
//! connection per backend, on that backend's targetPort).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flow_model::{FlowRecord, Protocol};
use k8s_openapi::api::core::v1::Pod;

use super::{record_namespace, source_pod};
use crate::cluster::{qualified_name, Cluster, IpOwner};
use crate::policy::{Connection, Endpoint};

/// The connections one flow stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connections {
    /// One per backend for a Service destination; otherwise one.
    pub connections: Vec<Connection>,
    /// `namespace/name` of the Service the flow went through, if any.
    pub service: Option<String>,
    /// Why connections are missing (source not governed by NetworkPolicy, unknown Service port,
    /// no backends), each starting with what was asked.
    pub notes: Vec<String>,
}

/// The connections of a FlowRecord. Sources are read as [`super::resolve`] reads them: host
/// processes and hostNetwork pods are skipped with a note; a pod missing from the snapshot is
/// described from the record (labels, namespace), without an address. For many records, a
/// [`super::Resolver`] does the same with memoized lookups.
pub fn connections_for(cluster: &Cluster, record: &FlowRecord) -> Connections {
    super::Resolver::new(cluster).connections_for(record)
}

/// The record's source as an endpoint (see [`connections_for`]), or why there is none.
pub(super) fn source_endpoint(cluster: &Cluster, record: &FlowRecord) -> Result<Endpoint, String> {
    if let Some(pod) = source_pod(cluster, record)? {
        return Ok(pod_endpoint(cluster, pod, record.destination.ip));
    }
    let source = &record.source;
    let namespace = record_namespace(record)?;
    Ok(Endpoint::Pod {
        namespace_labels: cluster.namespace_labels(&namespace),
        namespace,
        name: source.pod.clone().unwrap_or_default(),
        labels: source.labels.clone(),
        ip: None,
        ports: Vec::new(),
    })
}

/// Where a connection to an address ends up after Service translation, whoever opens it.
#[derive(Clone, Debug, Default)]
pub(super) struct Targets {
    /// Each destination endpoint with the port it receives on.
    pub to: Vec<(Endpoint, u16)>,
    pub service: Option<String>,
    pub notes: Vec<String>,
}

impl Targets {
    /// The connections `from` makes to these targets.
    pub fn connections(&self, from: &Endpoint, protocol: Protocol) -> Connections {
        Connections {
            connections: self
                .to
                .iter()
                .map(|(to, port)| Connection {
                    from: from.clone(),
                    to: to.clone(),
                    port: *port,
                    protocol,
                })
                .collect(),
            service: self.service.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// The targets of `ip:port/protocol`: through the Service when the address routes to one (every
/// backend, each on its targetPort), else the address itself.
pub(super) fn targets(cluster: &Cluster, ip: IpAddr, port: u16, protocol: Protocol) -> Targets {
    let (service, service_port) = match cluster.service_route(ip, port, protocol) {
        Ok(Some(route)) => route,
        Ok(None) => {
            return Targets {
                to: vec![(ip_endpoint(cluster, ip), port)],
                ..Targets::default()
            }
        }
        Err(why) => {
            return Targets {
                notes: vec![why],
                ..Targets::default()
            }
        }
    };
    let name = qualified_name(service);
    let backends = cluster.backends(service, service_port, ip);
    let mut notes = Vec::new();
    if backends.is_empty() {
        notes.push(format!(
            "Service {name} has no backends for port {port}/{protocol} in the snapshot"
        ));
    }
    let to = backends
        .into_iter()
        .map(|backend| {
            let endpoint = match backend.owner {
                IpOwner::Pod(pod) => pod_endpoint(cluster, pod, backend.ip),
                IpOwner::Node { .. } | IpOwner::Unknown => Endpoint::Ip(backend.ip),
            };
            (endpoint, backend.port)
        })
        .collect();
    Targets {
        to,
        service: Some(name),
        notes,
    }
}

/// The connections `from` makes when it connects to `ip:port/protocol`: through the Service when
/// the address routes to one (every backend, each on its targetPort), else straight to the address.
pub fn connections_to(
    cluster: &Cluster,
    from: Endpoint,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Connections {
    targets(cluster, ip, port, protocol).connections(&from, protocol)
}

/// A pod as an evaluator endpoint for a connection in the family of `family`
/// ([`Endpoint::from_pod`] with the namespace's labels). A hostNetwork pod is its address; one
/// without an address in that family (it cannot take part in such a connection) is the unspecified
/// address of that family.
pub fn pod_endpoint(cluster: &Cluster, pod: &Pod, family: IpAddr) -> Endpoint {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    Endpoint::from_pod(pod, &cluster.namespace_labels(namespace), family.is_ipv6()).unwrap_or(
        Endpoint::Ip(match family {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        }),
    )
}

/// An address as an evaluator endpoint: the pod that has it, or just the address (nodes,
/// hostNetwork pods, anything outside the snapshot).
pub fn ip_endpoint(cluster: &Cluster, ip: IpAddr) -> Endpoint {
    match cluster.ip_owner(ip) {
        IpOwner::Pod(pod) => pod_endpoint(cluster, pod, ip),
        IpOwner::Node { .. } | IpOwner::Unknown => Endpoint::Ip(ip),
    }
}
