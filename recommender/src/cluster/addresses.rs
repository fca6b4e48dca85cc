//! What an in-cluster address is, for resolution and for the evaluator.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::{is_host_network, Cluster};

/// The owner of an address in the cluster.
#[derive(Clone, Copy, Debug)]
pub enum IpOwner<'a> {
    /// A (non-hostNetwork) pod.
    Pod(&'a Pod),
    /// A node address, or a hostNetwork pod's (which is its node's). `node` is the node's name when
    /// known.
    Node { node: Option<&'a str> },
    /// Nothing in the snapshot has it.
    Unknown,
}

impl Cluster {
    /// Who has `ip`: a pod, a node (or hostNetwork pod), or nobody we know of.
    pub fn ip_owner(&self, ip: IpAddr) -> IpOwner<'_> {
        if let Some(pod) = self.pod_by_ip(ip) {
            return self.owner_of_pod(pod);
        }
        if let Some(node) = self.node_by_ip(ip) {
            return IpOwner::Node {
                node: node.metadata.name.as_deref(),
            };
        }
        IpOwner::Unknown
    }

    /// A pod as an address owner: a hostNetwork pod is its node.
    pub fn owner_of_pod<'a>(&'a self, pod: &'a Pod) -> IpOwner<'a> {
        if is_host_network(pod) {
            IpOwner::Node {
                node: pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            }
        } else {
            IpOwner::Pod(pod)
        }
    }
}
