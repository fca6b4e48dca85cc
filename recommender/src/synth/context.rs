//! [`Context`]: what every plan builder needs beyond the flows of one workload, and the DNS plan
//! (how every policy allows DNS) built from the one definition in `cluster::dns`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use flow_model::{Protocol, WorkloadRef};
use ipnet::IpNet;

use super::cidr;
use super::options::Options;
use super::ports::PortSet;
use crate::cluster::dns::{DNS_PORT, DNS_SERVICE, DNS_SERVICE_LABEL};
use crate::cluster::{is_terminated, Cluster};
use crate::policy::PodSelector;
use crate::resolve::{Peer, ResolvedFlow};

/// What every plan builder needs to know beyond the flows of one workload.
pub struct Context<'a> {
    pub options: &'a Options,
    pub cluster: &'a Cluster,
    /// How policies allow DNS.
    pub dns: DnsPlan,
    /// The cluster's pod and Service ranges ([`cidr::cluster_ranges`]).
    pub cluster_ranges: Vec<IpNet>,
}

/// The namespace of the cluster's system pods, which gets no `default-deny-all-egress`.
pub const SYSTEM_NAMESPACE: &str = "kube-system";
/// Kept for callers of the earlier name; the DNS Service's namespace is whatever `cluster::dns`
/// finds.
pub const DNS_NAMESPACE: &str = SYSTEM_NAMESPACE;

/// The cluster DNS pods as policies select them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPods {
    pub namespace: String,
    pub selector: PodSelector,
    /// The ports they receive DNS on, over UDP and TCP.
    pub ports: PortSet,
}

/// How the policies allow DNS: the DNS pods by selector, NodeLocal DNSCache by address, or, with
/// neither known, port 53 to any address (the guide's unscoped default-deny).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub pods: Option<DnsPods>,
    /// NodeLocal DNSCache addresses: found in the cluster, or observed.
    pub node_local: BTreeSet<IpAddr>,
    /// The workloads serving DNS, which get no ingress policy unless asked for.
    pub servers: BTreeSet<(String, WorkloadRef)>,
    /// Set when no DNS Service was found: what the output does instead.
    pub unscoped: Option<String>,
}

impl DnsPlan {
    /// DNS over both protocols on `port`.
    pub fn dns_ports(port: u16) -> PortSet {
        [(Protocol::Udp, port), (Protocol::Tcp, port)].into()
    }

    fn new(cluster: &Cluster, flows: &[ResolvedFlow]) -> DnsPlan {
        let found = cluster.cluster_dns();
        let mut plan = DnsPlan {
            node_local: found.node_local.clone(),
            ..DnsPlan::default()
        };
        // Observed DNS peers: the selector when the Service has none, the NodeLocal addresses
        // the pods really sent to, the serving workloads.
        let mut observed_selector: Option<(&str, &PodSelector)> = None;
        for f in flows {
            match &*f.peer {
                Peer::Pods {
                    namespace,
                    selector,
                    workload,
                    cluster_dns: true,
                    ..
                } => {
                    plan.servers.insert((namespace.clone(), workload.clone()));
                    if !selector.is_empty() {
                        let candidate = (namespace.as_str(), selector);
                        observed_selector =
                            Some(observed_selector.map_or(candidate, |s| s.min(candidate)));
                    }
                }
                Peer::NodeLocalDns { ip } => {
                    plan.node_local.insert(*ip);
                }
                _ => {}
            }
        }
        match found.service {
            Some(service) => {
                let selector = service.selector.clone().or_else(|| {
                    observed_selector
                        .filter(|(ns, _)| *ns == service.namespace)
                        .map(|(_, s)| s.clone())
                });
                if let Some(selector) = &selector {
                    for pod in cluster.pods.iter().filter(|p| {
                        p.metadata.namespace.as_deref() == Some(service.namespace.as_str())
                            && !is_terminated(p)
                            && selector.matches(&p.metadata.labels.clone().unwrap_or_default())
                    }) {
                        plan.servers
                            .insert((service.namespace.clone(), cluster.workload_of(pod)));
                    }
                }
                // A DNS Service without DNS ports still serves DNS on 53 as far as clients know.
                let ports = match service.ports.is_empty() {
                    true => DnsPlan::dns_ports(DNS_PORT),
                    false => service.ports.clone(),
                };
                plan.pods = selector.map(|selector| DnsPods {
                    namespace: service.namespace.clone(),
                    selector,
                    ports,
                });
                if plan.pods.is_none() {
                    plan.unscoped = Some(format!(
                        "the cluster DNS Service {}/{} has no selector, so its pods are unknown: DNS is allowed on port {DNS_PORT} (UDP, TCP) to any address",
                        service.namespace, service.name
                    ));
                }
            }
            None => {
                plan.unscoped = Some(format!(
                    "no cluster DNS Service ({}/{}, or a Service labelled {}={}) in the cluster files: {}",
                    DNS_SERVICE.0,
                    DNS_SERVICE.1,
                    DNS_SERVICE_LABEL.0,
                    DNS_SERVICE_LABEL.1,
                    if plan.node_local.is_empty() {
                        format!("DNS is allowed on port {DNS_PORT} (UDP, TCP) to any address, as an unscoped default-deny does; add the DNS Service to the cluster files to scope it to the DNS pods")
                    } else {
                        "DNS is allowed to NodeLocal DNSCache only; add the DNS Service to the cluster files to allow the DNS pods too".to_owned()
                    }
                ));
            }
        }
        plan
    }

    /// Whether DNS goes to any address (neither DNS pods nor NodeLocal DNSCache known).
    pub fn anywhere(&self) -> bool {
        self.pods.is_none() && self.node_local.is_empty()
    }
}

impl<'a> Context<'a> {
    pub fn new(cluster: &'a Cluster, flows: &[ResolvedFlow], options: &'a Options) -> Self {
        Context {
            options,
            cluster,
            dns: DnsPlan::new(cluster, flows),
            cluster_ranges: cidr::cluster_ranges(cluster, &options.cluster_cidrs),
        }
    }
}
