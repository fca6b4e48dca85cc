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

/// Matches address strings from API objects against one address, without parsing every string:
/// the API server keeps IPv4 addresses in canonical form (dotted decimal without leading zeros, the
/// only form Rust parses too), which is how [`IpAddr`] prints them; IPv6 text may be written in
/// several ways, so IPv6 strings that differ in text are parsed.
pub(crate) struct AddressMatcher {
    ip: IpAddr,
    text: String,
}

impl AddressMatcher {
    pub(crate) fn new(ip: IpAddr) -> Self {
        AddressMatcher {
            ip,
            text: ip.to_string(),
        }
    }

    pub(crate) fn matches(&self, address: &str) -> bool {
        address == self.text
            || (self.ip.is_ipv6() && address.contains(':') && address.parse() == Ok(self.ip))
    }

    fn any<'a>(&self, mut addresses: impl Iterator<Item = &'a str>) -> bool {
        addresses.any(|a| self.matches(a))
    }

    /// Whether `pod` has this address.
    pub(crate) fn pod(&self, pod: &Pod) -> bool {
        pod.status.as_ref().is_some_and(|status| {
            let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            self.any(listed.chain(status.pod_ip.as_deref()))
        })
    }
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
    // Only init containers with `restartPolicy: Always` (sidecars) keep running and can serve.
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let containers = spec.containers.iter().chain(sidecars);
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
        if self.index().is_some() {
            return self.indexed_pod(&(namespace.to_string(), name.to_string()));
        }
        self.pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
    }

    /// The pod with this `metadata.uid`; a deleted pod the live model still remembers counts
    /// (its flows may arrive after it is gone).
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Pod> {
        let current = match self.indexed_pod_by_uid(uid) {
            Some(found) => found,
            None => self
                .pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid)),
        };
        current.or_else(|| self.tombstones.by_uid(uid))
    }

    /// The running (not terminated) pod that has `ip`, hostNetwork pods included: use
    /// [`is_host_network`] to tell them apart (see [`Cluster::ip_owner`]). A non-hostNetwork pod is
    /// preferred when both claim the address.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        match self.indexed_pods_by_ip(ip) {
            Some(claimants) => prefer_pod_network(claimants.filter(|p| !is_terminated(p))),
            None => {
                let matcher = AddressMatcher::new(ip);
                prefer_pod_network(
                    self.pods
                        .iter()
                        .filter(|p| matcher.pod(p) && !is_terminated(p)),
                )
            }
        }
    }
}

fn prefer_pod_network<'a>(mut candidates: impl Iterator<Item = &'a Pod>) -> Option<&'a Pod> {
    let first = candidates.next()?;
    if !is_host_network(first) {
        return Some(first);
    }
    candidates.find(|p| !is_host_network(p)).or(Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_matcher_accepts_other_ipv6_spellings() {
        let v6 = AddressMatcher::new("fd00::a".parse().unwrap());
        assert!(v6.matches("fd00::a"));
        assert!(v6.matches("fd00:0:0:0::000a"));
        assert!(v6.matches("FD00::A"));
        assert!(!v6.matches("fd00::b"));
        assert!(!v6.matches("10.0.0.1"));
        let v4 = AddressMatcher::new("10.0.0.1".parse().unwrap());
        assert!(v4.matches("10.0.0.1"));
        assert!(!v4.matches("10.0.0.10"));
        assert!(!v4.matches("::ffff:10.0.0.1"));
    }
}
