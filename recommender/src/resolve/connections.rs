//! Flows as the evaluator sees them: [`Connection`]s between [`Endpoint`]s, after Service
//! translation (NetworkPolicy is enforced after DNAT, so a connection to a ClusterIP becomes one
//! connection per backend, on that backend's targetPort).

use std::net::IpAddr;

use flow_model::{FlowRecord, Protocol};
use k8s_openapi::api::core::v1::Pod;

use super::{describe, service_name, source_pod};
use crate::cluster::{named_ports, pod_ip_like, service_port, Cluster, IpOwner};
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
    let from = match source_pod(cluster, record) {
        Ok(Some(pod)) => pod_endpoint(cluster, pod, d.ip),
        Ok(None) => {
            let source = &record.source;
            let namespace = source.namespace.clone().unwrap_or_default();
            Endpoint::Pod {
                namespace_labels: cluster.namespace_labels(&namespace),
                namespace,
                name: source.pod.clone().unwrap_or_default(),
                labels: source.labels.clone(),
                ip: None,
                ports: Vec::new(),
            }
        }
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

/// The connections `from` makes when it connects to `ip:port/protocol`: through the Service when
/// `ip` is a ClusterIP (every backend, each on its targetPort), else straight to the address.
pub fn connections_to(
    cluster: &Cluster,
    from: Endpoint,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Connections {
    let Some(service) = cluster.service_by_cluster_ip(ip) else {
        return Connections {
            connections: vec![Connection {
                from,
                to: ip_endpoint(cluster, ip),
                port,
                protocol,
            }],
            ..Connections::default()
        };
    };
    let name = service_name(service);
    let mut out = Connections {
        service: Some(name.clone()),
        ..Connections::default()
    };
    let Some(service_port) = service_port(service, port, protocol) else {
        out.notes
            .push(format!("Service {name} has no port {port}/{protocol}"));
        return out;
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

/// A pod as an evaluator endpoint, with its address in the family of `family`. A hostNetwork pod
/// is its node's address ([`Endpoint::Ip`]); a pod with no address in that family is
/// [`Endpoint::Pod`] without `ip`.
pub fn pod_endpoint(cluster: &Cluster, pod: &Pod, family: IpAddr) -> Endpoint {
    let ip = pod_ip_like(pod, family);
    if let (IpOwner::Node { .. }, Some(ip)) = (cluster.owner_of_pod(pod), ip) {
        return Endpoint::Ip(ip);
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    Endpoint::Pod {
        namespace_labels: cluster.namespace_labels(&namespace),
        namespace,
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        ports: named_ports(pod),
    }
}

/// An address as an evaluator endpoint: the pod that has it, or just the address (nodes,
/// hostNetwork pods, anything outside the snapshot).
pub fn ip_endpoint(cluster: &Cluster, ip: IpAddr) -> Endpoint {
    match cluster.ip_owner(ip) {
        IpOwner::Pod(pod) => pod_endpoint(cluster, pod, ip),
        IpOwner::Node { .. } | IpOwner::Unknown => Endpoint::Ip(ip),
    }
}
