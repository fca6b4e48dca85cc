//! Pods: by IP, uid or name; their addresses and container ports.

use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::Pod;

use super::Cluster;
use crate::policy::NamedPort;

/// The pod's addresses (`status.podIPs`, and `status.podIP` for old snapshots), parsed, unique.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    let mut ips: Vec<IpAddr> = listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The pod's address in the same family as `like` (for the source address of a connection).
pub fn pod_ip_like(pod: &Pod, like: IpAddr) -> Option<IpAddr> {
    pod_ips(pod)
        .into_iter()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
}

/// A pod that has finished (Succeeded/Failed) no longer owns its address: the IP may already belong
/// to another pod. Pods that are merely terminating still send and receive traffic and are kept.
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// hostNetwork pods share the node's address and network namespace; NetworkPolicy neither selects
/// nor isolates them, so for policy purposes they are the node.
pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's named container ports (regular containers and restartable init containers, i.e.
/// sidecars), for named-port resolution. Unnamed ports cannot be referenced by name and are left out.
pub fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut ports: Vec<NamedPort> = containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: parse_protocol(p.protocol.as_deref()),
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// A Kubernetes protocol field: absent means TCP; an unknown value (there is none in the API) is
/// read as TCP too rather than failing the whole object.
pub(crate) fn parse_protocol(protocol: Option<&str>) -> Protocol {
    protocol
        .and_then(|p| p.parse().ok())
        .unwrap_or(Protocol::Tcp)
}

impl Cluster {
    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
    }

    /// The pod with this `metadata.uid`.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
    }

    /// The running (not terminated) pod that has `ip`, hostNetwork pods included: use
    /// [`is_host_network`] to tell them apart (see [`Cluster::ip_owner`]). A non-hostNetwork pod is
    /// preferred when both claim the address.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        let mut candidates = self
            .pods
            .iter()
            .filter(|p| !is_terminated(p) && pod_ips(p).contains(&ip));
        let first = candidates.next()?;
        if !is_host_network(first) {
            return Some(first);
        }
        candidates.find(|p| !is_host_network(p)).or(Some(first))
    }
}
