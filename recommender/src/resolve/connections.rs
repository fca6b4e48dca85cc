//! Flows as the evaluator sees them: [`Connection`]s between [`Endpoint`]s, after Service
//! translation (NetworkPolicy is enforced after DNAT, so a connection to a ClusterIP becomes one
//! connection per backend, on that backend's targetPort).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flow_model::{FlowRecord, Protocol};
use k8s_openapi::api::core::v1::Pod;

use super::address::never_leaves_the_pod;
use super::facts::Facts;
use super::source::{record_namespace, source_pod};
use crate::cluster::{
    is_host_network, named_ports, node_addresses, pod_ips, qualified_name, Cluster, IpOwner,
};
use crate::policy::selectors::NAMESPACE_NAME_LABEL;
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

/// The record's source as an endpoint for a connection to `to` (see [`connections_for`]), or why
/// there is none.
pub(super) fn source_endpoint(
    cluster: &Cluster,
    record: &FlowRecord,
    to: IpAddr,
) -> Result<Endpoint, String> {
    if let Some(pod) = source_pod(cluster, record)? {
        return Ok(pod_endpoint(cluster, pod, to));
    }
    let source = &record.source;
    let namespace = record_namespace(record)?;
    // The pod is gone, but the record says which node it ran on.
    let node_ips = cluster
        .node(&record.node)
        .map(|n| node_addresses(n).collect())
        .unwrap_or_default();
    Ok(Endpoint::Pod {
        namespace_labels: cluster.namespace_labels(&namespace),
        namespace,
        name: source.pod.clone().unwrap_or_default(),
        labels: source.labels.clone(),
        ip: None,
        ports: Vec::new(),
        node_ips,
    })
}

/// Where a connection to an address ends up after Service translation, whoever opens it.
#[derive(Clone, Debug, Default)]
pub(super) struct Targets {
    /// Each destination endpoint with the port it receives on.
    pub to: Vec<(Endpoint, u16)>,
    pub service: Option<String>,
    pub notes: Vec<String>,
    /// The address is nothing the model has (see `address`).
    pub unowned: bool,
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

/// The targets of `ip:port/protocol` (`ip` canonical): through the Service when the address
/// routes to one (every backend, each on its targetPort), else the address itself; none, with a
/// note, for destinations resolution refuses (see `address`), so that `verify` skips what
/// `recommend` leaves out instead of calling it denied.
pub(super) fn targets(
    cluster: &Cluster,
    facts: &Facts,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Targets {
    let refused = |why: String| Targets {
        notes: vec![why],
        ..Targets::default()
    };
    if let Some(why) = never_leaves_the_pod(ip) {
        return refused(why);
    }
    let (service, service_port) = match cluster.service_route(ip, port, protocol) {
        Ok(Some(route)) => route,
        Ok(None) => {
            let unowned = matches!(cluster.ip_owner(ip), IpOwner::Unknown)
                && !facts.dns.is_node_local(ip, port);
            if unowned {
                if let Err(why) = super::address::unowned(cluster, facts, ip) {
                    return refused(why);
                }
            }
            return Targets {
                to: vec![(ip_endpoint(cluster, ip), port)],
                unowned,
                ..Targets::default()
            };
        }
        Err(why) => return refused(why),
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
        unowned: false,
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
    let ip = ip.to_canonical();
    targets(cluster, &Facts::of(cluster), ip, port, protocol).connections(&from, protocol)
}

/// A pod as an evaluator endpoint for a connection in the family of `family`
/// ([`endpoint_of_pod`] with the namespace's labels and its Node's addresses). A hostNetwork pod
/// is its address; one without an address in that family (it cannot take part in such a
/// connection) is the unspecified address of that family.
pub fn pod_endpoint(cluster: &Cluster, pod: &Pod, family: IpAddr) -> Endpoint {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let endpoint = endpoint_of_pod(pod, &cluster.namespace_labels(namespace), family.is_ipv6());
    match endpoint {
        Some(Endpoint::Pod {
            namespace,
            name,
            labels,
            namespace_labels,
            ip,
            ports,
            mut node_ips,
        }) => {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if let Some(node) = node.and_then(|n| cluster.node(n)) {
                node_ips.extend(node_addresses(node));
                node_ips.sort();
                node_ips.dedup();
            }
            Endpoint::Pod {
                namespace,
                name,
                labels,
                namespace_labels,
                ip,
                ports,
                node_ips,
            }
        }
        Some(other) => other,
        None => Endpoint::Ip(match family {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        }),
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

/// The endpoint a k8s `Pod` is for a connection of one address family (`ipv6`).
///
/// - a hostNetwork pod shares its node's address and network namespace: policies neither
///   select nor isolate it, so it is an [`Endpoint::Ip`] (`None` if it has no address of that
///   family);
/// - otherwise a pod with its labels, `namespace_labels` (the name label is implied anyway), the
///   `status.podIPs` entry of that family, the named ports of its containers and of its sidecars
///   (init containers with `restartPolicy: Always`, which keep running and serve), and its node's
///   addresses as far as the pod says them (`status.hostIPs`; [`pod_endpoint`] adds the Node's).
///   Container ports without a name cannot be referenced by name and are left out.
pub fn endpoint_of_pod(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    ipv6: bool,
) -> Option<Endpoint> {
    let ip = pod_ips(pod).into_iter().find(|ip| ip.is_ipv6() == ipv6);
    if is_host_network(pod) {
        return ip.map(Endpoint::Ip);
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut namespace_labels = namespace_labels.clone();
    namespace_labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.clone());
    Some(Endpoint::Pod {
        namespace,
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        namespace_labels,
        ip,
        ports: named_ports(pod),
        node_ips: host_ips(pod),
    })
}

/// The pod's `status.hostIPs` (and `status.hostIP`): its node's addresses as the kubelet reports
/// them.
fn host_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .host_ips
        .iter()
        .flatten()
        .map(|h| h.ip.as_str())
        .chain(status.host_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn from_pod_takes_labels_family_ip_and_named_ports() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: dns-0, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    ports:
    - {name: dns, containerPort: 53, protocol: UDP}
    - {name: dns-tcp, containerPort: 53}
    - {containerPort: 8080}
  initContainers:
  - {name: setup, ports: [{name: setup, containerPort: 1}]}
  - {name: proxy, restartPolicy: Always, ports: [{name: proxy, containerPort: 15001}]}
status:
  podIP: 10.244.0.10
  podIPs: [{ip: 10.244.0.10}, {ip: "fd00::10"}]
"#,
        )
        .unwrap();
        let e = endpoint_of_pod(&pod, &BTreeMap::new(), false).unwrap();
        let Endpoint::Pod {
            namespace,
            labels,
            namespace_labels,
            ip,
            ports,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(namespace, "kube-system");
        assert_eq!(labels["k8s-app"], "kube-dns");
        assert_eq!(namespace_labels[NAMESPACE_NAME_LABEL], "kube-system");
        assert_eq!(*ip, Some("10.244.0.10".parse().unwrap()));
        let names: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            names,
            [
                ("dns", 53, Protocol::Udp),
                ("dns-tcp", 53, Protocol::Tcp),
                ("proxy", 15001, Protocol::Tcp)
            ]
        );
        let v6 = endpoint_of_pod(&pod, &BTreeMap::new(), true).unwrap();
        assert_eq!(v6.ip(), Some("fd00::10".parse().unwrap()));
    }

    #[test]
    fn host_network_pods_are_addresses() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: n, namespace: kube-system}
spec: {hostNetwork: true, containers: []}
status: {podIP: 192.168.0.5}
"#,
        )
        .unwrap();
        assert_eq!(
            endpoint_of_pod(&pod, &BTreeMap::new(), false),
            Some(Endpoint::Ip("192.168.0.5".parse().unwrap()))
        );
        assert_eq!(endpoint_of_pod(&pod, &BTreeMap::new(), true), None);
    }
}
