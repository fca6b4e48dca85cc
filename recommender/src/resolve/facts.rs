//! [`Facts`]: what resolution looks up in the cluster model for every destination, computed once
//! per model: the cluster DNS, the API server's endpoints, the Service and pod ranges.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::{Cluster, ClusterDns};

/// Per-cluster facts behind every resolution (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub dns: ClusterDns,
    /// `default/kubernetes`'s endpoints (address and port).
    pub apiserver: Vec<(IpAddr, u16)>,
    /// The Service ranges, given or proved by the ClusterIPs ([`Cluster::service_ranges`]).
    pub service_ranges: Vec<IpNet>,
    /// Where the Service range probably extends beyond that
    /// ([`Cluster::probable_service_ranges`]).
    pub probable_service_ranges: Vec<IpNet>,
    /// Each node's pod range, with the node's name.
    pub pod_ranges: Vec<(String, IpNet)>,
    /// The snapshot has no Service at all, not even `default/kubernetes`: ClusterIPs cannot be
    /// told from outside addresses.
    pub no_services: bool,
}

impl Facts {
    pub fn of(cluster: &Cluster) -> Facts {
        Facts {
            dns: cluster.cluster_dns(),
            apiserver: cluster.apiserver_endpoints(),
            service_ranges: cluster.service_ranges(),
            probable_service_ranges: cluster.probable_service_ranges(),
            pod_ranges: cluster
                .node_pod_cidrs()
                .into_iter()
                .map(|(node, net)| (node.to_owned(), net))
                .collect(),
            no_services: cluster.services.is_empty(),
        }
    }

    /// Whether `ip:port` is an API server endpoint.
    pub fn is_apiserver(&self, ip: IpAddr, port: u16) -> bool {
        self.apiserver.contains(&(ip, port))
    }

    /// Whether `ip` is an API server address (on any port).
    pub fn is_apiserver_address(&self, ip: IpAddr) -> bool {
        self.apiserver.iter().any(|(a, _)| *a == ip)
    }
}
