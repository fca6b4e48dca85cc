//! The cluster's own address ranges: pods (the Nodes' podCIDRs) and Services (given, or inferred
//! from the ClusterIPs). Resolution uses them to tell a stale pod IP or an unknown ClusterIP from
//! an outside address; synthesis keeps them out of internet egress.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{cluster_ips, Cluster};

/// The smallest single prefix that holds every address in `ips` (all of one family), if any.
pub fn covering_prefix(ips: &[IpAddr]) -> Option<IpNet> {
    let first = *ips.first()?;
    let mut net = IpNet::from(first);
    for ip in &ips[1..] {
        while !net.contains(ip) {
            net = net.supernet()?;
        }
    }
    Some(net)
}

impl Cluster {
    /// Every Node's `spec.podCIDRs` (or `spec.podCIDR`) with the node's name.
    pub fn node_pod_cidrs(&self) -> Vec<(&str, IpNet)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let Some(spec) = &node.spec else { continue };
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let cidrs = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
            for cidr in cidrs {
                if let Ok(net) = cidr.trim().parse::<IpNet>() {
                    out.push((name, net.trunc()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The Service ranges: [`Cluster::service_cidrs`] when given, else per family the smallest
    /// prefix that covers every ClusterIP of that family. The real range is an API-server flag that
    /// no object of a snapshot shows; the covering prefix is what the Services prove (the API
    /// server gives `default/kubernetes` the first address of the range). A covering prefix that
    /// would hold a pod range or a node or pod address is a bad guess and is dropped.
    pub fn service_ranges(&self) -> Vec<IpNet> {
        if !self.service_cidrs.is_empty() {
            return self.service_cidrs.iter().map(IpNet::trunc).collect();
        }
        let mut by_family: [Vec<IpAddr>; 2] = [Vec::new(), Vec::new()];
        for ip in self.services.iter().flat_map(cluster_ips) {
            by_family[usize::from(ip.is_ipv6())].push(ip);
        }
        let pod_cidrs = self.node_pod_cidrs();
        let mut out = Vec::new();
        for ips in &mut by_family {
            ips.sort();
            ips.dedup();
            let Some(net) = covering_prefix(ips) else {
                continue;
            };
            let overlaps_pods = pod_cidrs
                .iter()
                .any(|(_, p)| p.contains(&net) || net.contains(p));
            let holds_hosts = self.node_addresses().any(|a| net.contains(&a))
                || self
                    .pods
                    .iter()
                    .flat_map(super::pod_ips)
                    .any(|a| net.contains(&a));
            if !overlaps_pods && !holds_hosts {
                out.push(net);
            }
        }
        out
    }

    /// Where the Service range probably is, beyond what [`Cluster::service_ranges`] proves, when
    /// no range is given: the API server gives `default/kubernetes` the first address of its
    /// range, and a range holds at most 2^20 addresses (/12 for IPv4, /108 for IPv6), so the
    /// widest range aligned on the address before it, within that size, is where the other
    /// ClusterIPs can be (10.96.0.1 gives kubeadm's 10.96.0.0/12, 10.43.0.1 k3s's 10.43.0.0/16),
    /// shrunk until it holds no pod range and no node or pod address.
    pub fn probable_service_ranges(&self) -> Vec<IpNet> {
        if !self.service_cidrs.is_empty() {
            return Vec::new();
        }
        let Some(kubernetes) = self.service("default", "kubernetes") else {
            return Vec::new();
        };
        let pod_cidrs = self.node_pod_cidrs();
        let hosts: Vec<IpAddr> = self
            .node_addresses()
            .chain(self.pods.iter().flat_map(super::pod_ips))
            .collect();
        let mut out = Vec::new();
        for first in cluster_ips(kubernetes) {
            let (network, widest) = match first {
                IpAddr::V4(v4) => (
                    IpAddr::from(u32::from(v4).wrapping_sub(1).to_be_bytes()),
                    12,
                ),
                IpAddr::V6(v6) => (
                    IpAddr::from(u128::from(v6).wrapping_sub(1).to_be_bytes()),
                    108,
                ),
            };
            let max = if network.is_ipv4() { 32 } else { 128 };
            let candidate = (widest..max)
                .filter_map(|len| IpNet::new(network, len).ok())
                .filter(|net| net.network() == network)
                .find(|net| {
                    !pod_cidrs
                        .iter()
                        .any(|(_, p)| p.contains(net) || net.contains(p))
                        && !hosts.iter().any(|h| net.contains(h))
                });
            out.extend(candidate);
        }
        out
    }

    /// Every InternalIP and ExternalIP of every Node.
    pub fn node_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.nodes.iter().flat_map(super::nodes::addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn covering_prefix_is_the_smallest() {
        assert_eq!(
            covering_prefix(&[ip("10.96.0.1"), ip("10.96.0.10")]),
            Some("10.96.0.0/28".parse().unwrap())
        );
        assert_eq!(
            covering_prefix(&[ip("10.96.0.1")]),
            Some("10.96.0.1/32".parse().unwrap())
        );
        assert_eq!(covering_prefix(&[]), None);
    }

    #[test]
    fn an_inferred_service_range_never_swallows_pods_or_nodes() {
        let cluster: Cluster = Cluster {
            services: vec![
                serde_json::from_value(serde_json::json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.10"}})).unwrap(),
                serde_json::from_value(serde_json::json!({"metadata": {"name": "b"}, "spec": {"clusterIP": "10.43.0.1"}})).unwrap(),
            ],
            nodes: vec![serde_json::from_value(serde_json::json!({"metadata": {"name": "n"},
                "spec": {"podCIDR": "10.42.0.0/24"}})).unwrap()],
            ..Cluster::default()
        };
        assert!(cluster.service_ranges().is_empty());
        let given = Cluster {
            service_cidrs: vec!["10.43.0.1/16".parse().unwrap()],
            ..cluster
        };
        assert_eq!(
            given.service_ranges(),
            ["10.43.0.0/16".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn the_probable_service_range_starts_before_the_kubernetes_service() {
        let cluster = |kubernetes: &str, pod_cidr: &str| Cluster {
            services: vec![serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": kubernetes, "clusterIPs": [kubernetes]}}))
            .unwrap()],
            nodes: vec![
                serde_json::from_value(serde_json::json!({"metadata": {"name": "n"},
                "spec": {"podCIDR": pod_cidr}}))
                .unwrap(),
            ],
            ..Cluster::default()
        };
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            cluster("10.96.0.1", "10.244.0.0/24").probable_service_ranges(),
            [net("10.96.0.0/12")]
        );
        assert_eq!(
            cluster("10.43.0.1", "10.42.0.0/24").probable_service_ranges(),
            [net("10.43.0.0/16")]
        );
        // Shrunk off the pod range it would otherwise hold.
        assert_eq!(
            cluster("10.96.0.1", "10.100.0.0/24").probable_service_ranges(),
            [net("10.96.0.0/14")]
        );
        assert_eq!(
            cluster("fd00:10:96::1", "fd00:10:244::/64").probable_service_ranges(),
            [net("fd00:10:96::/108")]
        );
    }
}
