//! Nodes by address.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use super::pods::AddressMatcher;
use super::Cluster;

/// A node's InternalIP and ExternalIP addresses, parsed.
pub fn addresses(node: &Node) -> impl Iterator<Item = IpAddr> + '_ {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
        .filter_map(|a| a.address.trim().parse().ok())
}

impl Cluster {
    /// The node that has `ip` as an InternalIP or ExternalIP address.
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<&Node> {
        let matcher = AddressMatcher::new(ip);
        self.nodes.iter().find(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|addresses| {
                    addresses.iter().any(|a| {
                        matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                            && matcher.matches(&a.address)
                    })
                })
        })
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        if let Some(found) = self.indexed_node(name) {
            return found;
        }
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }
}
