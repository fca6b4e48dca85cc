//! [`Context`]: what every plan builder needs beyond the flows of one workload.

use std::collections::BTreeMap;

use flow_model::Protocol;
use ipnet::IpNet;

use super::cidr;
use super::options::Options;
use super::ports::{self, PortSet};
use crate::cluster::Cluster;
use crate::resolve::{Peer, ResolvedFlow};

/// What every plan builder needs to know beyond the flows of one workload.
pub struct Context<'a> {
    pub options: &'a Options,
    /// Where the cluster DNS pods live and how to select them (the DNS Service's own selector).
    pub dns_namespace: String,
    pub dns_selector: BTreeMap<String, String>,
    /// The ports the cluster DNS was reached on, UDP and TCP (53 when none was seen).
    pub dns_ports: PortSet,
    /// The cluster's pod and Service ranges ([`cidr::cluster_ranges`]).
    pub cluster_ranges: Vec<IpNet>,
}

/// The cluster DNS Service: `kube-dns` in `kube-system`, the name CoreDNS keeps for compatibility.
pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_SERVICE: &str = "kube-dns";

impl<'a> Context<'a> {
    pub fn new(cluster: &Cluster, flows: &[ResolvedFlow], options: &'a Options) -> Self {
        let service_selector = cluster
            .services
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(DNS_NAMESPACE)
                    && s.metadata.name.as_deref() == Some(DNS_SERVICE)
            })
            .and_then(|s| s.spec.as_ref()?.selector.clone())
            .filter(|s| !s.is_empty());
        let mut observed_selector: Option<&BTreeMap<String, String>> = None;
        let mut dns_ports = PortSet::new();
        for f in flows {
            if let Peer::Pods {
                namespace,
                selector,
                cluster_dns: true,
                ..
            } = &*f.peer
            {
                if namespace == DNS_NAMESPACE && !selector.is_empty() {
                    observed_selector =
                        Some(observed_selector.map_or(selector, |s| s.min(selector)));
                }
                dns_ports.insert((f.protocol, f.port));
            }
        }
        if dns_ports.is_empty() {
            dns_ports.insert((Protocol::Udp, 53));
        }
        let dns_selector = service_selector
            .or_else(|| observed_selector.cloned())
            .unwrap_or_else(|| BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]));
        Context {
            options,
            dns_namespace: DNS_NAMESPACE.to_owned(),
            dns_selector,
            dns_ports: ports::with_dns_fallback(&dns_ports),
            cluster_ranges: cidr::cluster_ranges(cluster, &options.cluster_cidrs),
        }
    }
}
