//! Flows as the evaluator sees them: [`Connection`]s between [`Endpoint`]s, after Service
//! translation (NetworkPolicy is enforced after DNAT, so a connection to a ClusterIP becomes one
//! connection per backend, on that backend's targetPort).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flow_model::{FlowRecord, Protocol};
use k8s_openapi::api::core::v1::Pod;

use super::{describe, record_namespace, source_pod};
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
/// described from the record (labels, namespace), without an address.
pub fn connections_for(cluster: &Cluster, record: &FlowRecord) -> Connections {
    let d = &record.destination;
    let from = match source_endpoint(cluster, record) {
        Ok(from) => from,
        Err(why) => {
            return Connections {
                notes: vec![format!("{}: {why}", describe(record))],
                ..Connections::default()
            }
        }
    };
    let mut connections = connections_to(cluster, from, d.ip, d.port, d.protocol);
    for note in &mut connections.notes {
        *note = format!("{}: {note}", describe(record));
    }
    connections
}

/// The record's source as an endpoint (see [`connections_for`]), or why there is none.
fn source_endpoint(cluster: &Cluster, record: &FlowRecord) -> Result<Endpoint, String> {
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

/// The connections `from` makes when it connects to `ip:port/protocol`: through the Service when
/// `ip` is a ClusterIP (every backend, each on its targetPort), else straight to the address.
pub fn connections_to(
    cluster: &Cluster,
    from: Endpoint,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Connections {
    let direct = |notes: Vec<String>| Connections {
        connections: vec![Connection {
            from: from.clone(),
            to: ip_endpoint(cluster, ip),
            port,
            protocol,
        }],
        service: None,
        notes,
    };
    let (service, service_port) = match cluster.service_route(ip, port, protocol) {
        Ok(Some(route)) => route,
        Ok(None) => return direct(Vec::new()),
        Err(why) => {
            return Connections {
                notes: vec![why],
                ..Connections::default()
            }
        }
    };
    let name = qualified_name(service);
    let mut out = Connections {
        service: Some(name.clone()),
        ..Connections::default()
    };
    let backends = cluster.backends(service, service_port, ip);
    if backends.is_empty() {
        out.notes.push(format!(
            "Service {name} has no backends for port {port}/{protocol} in the snapshot"
        ));
    }
    out.connections = backends
        .into_iter()
        .map(|backend| Connection {
            from: from.clone(),
            to: match backend.owner {
                IpOwner::Pod(pod) => pod_endpoint(cluster, pod, backend.ip),
                IpOwner::Node { .. } | IpOwner::Unknown => Endpoint::Ip(backend.ip),
            },
            port: backend.port,
            protocol,
        })
        .collect();
    out
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
