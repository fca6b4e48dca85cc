//! Destinations: what an address, port and protocol reach in the cluster model (see the rules in
//! the module comment of `resolve`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use flow_model::{Protocol, WorkloadRef};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};

use super::address::{never_leaves_the_pod, unowned};
use super::facts::Facts;
use super::model::{Peer, Warning, WarningReason};
use crate::cluster::dns::is_dns_port;
use crate::cluster::{
    is_apiserver_service, is_cluster_dns, qualified_name, service_selector, target_port, Cluster,
    IpOwner,
};
use crate::policy::PodSelector;

/// What a destination address resolves to, whoever sent the traffic: the peers with the port
/// they receive on, or why there are none, notes on backends left out, and warnings on the rule.
///
/// Peers are interned in `known` (one `Arc` per distinct peer, across destinations).
#[derive(Clone, Debug)]
pub(super) struct DestinationPeers {
    pub peers: Result<Vec<(Arc<Peer>, u16)>, String>,
    pub notes: Vec<String>,
    pub warnings: Vec<Warning>,
    /// The destination is an address nothing in the model has (an outside address, by default).
    pub unowned: bool,
}

/// The shared copy of `value` in `known`, added when new.
pub(super) fn intern<T: Ord>(known: &mut BTreeSet<Arc<T>>, value: T) -> Arc<T> {
    if let Some(shared) = known.get(&value) {
        return Arc::clone(shared);
    }
    let shared = Arc::new(value);
    known.insert(Arc::clone(&shared));
    shared
}

impl DestinationPeers {
    /// `ip` must be canonical (an IPv4-mapped IPv6 address already turned into IPv4).
    pub fn new(
        cluster: &Cluster,
        facts: &Facts,
        (ip, port, protocol): (IpAddr, u16, Protocol),
        known: &mut BTreeSet<Arc<Peer>>,
    ) -> Self {
        let mut out = Found::default();
        let peers = peers(cluster, facts, ip, port, protocol, &mut out).map(|mut peers| {
            peers.sort();
            peers.dedup();
            peers
                .into_iter()
                .map(|(peer, port)| (intern(known, peer), port))
                .collect()
        });
        DestinationPeers {
            peers,
            notes: out.notes,
            warnings: out.warnings,
            unowned: out.unowned,
        }
    }
}

/// What resolving one destination found besides its peers.
#[derive(Default)]
struct Found {
    notes: Vec<String>,
    warnings: Vec<Warning>,
    unowned: bool,
}

/// The peers (with the port they receive on) of a destination. `Err` when the destination cannot
/// be resolved at all, or is refused (see `address`).
fn peers(
    cluster: &Cluster,
    facts: &Facts,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    found: &mut Found,
) -> Result<Vec<(Peer, u16)>, String> {
    if let Some(why) = never_leaves_the_pod(ip) {
        return Err(why);
    }
    if let Some((service, service_port)) = cluster
        .service_route(ip, port, protocol)
        .map_err(|why| format!("{why}: the traffic reached no backend; unresolved"))?
    {
        return service_peers(
            cluster,
            facts,
            service,
            service_port,
            (ip, port, protocol),
            found,
        );
    }
    if facts.dns.is_node_local(ip, port) {
        return Ok(vec![(Peer::NodeLocalDns { ip }, port)]);
    }
    if facts.is_apiserver(ip, port) {
        return Ok(vec![(Peer::ApiServer { ip }, port)]);
    }
    let peer = match cluster.ip_owner(ip) {
        IpOwner::Pod(pod) => pod_peer(cluster, pod, None, port)?,
        IpOwner::Node { node } => {
            let node = node.unwrap_or_default().to_owned();
            if let Some((service, node_port)) = cluster.node_port_service(port, protocol) {
                found.warnings.push(Warning {
                    reason: WarningReason::NodePort,
                    message: format!(
                        "{ip}:{port} is node {node} on the NodePort of Service {} (port {}): the rule allows the node's address, which a Service implementation that translates NodePorts before policy (Cilium without kube-proxy, and the like) never shows; calling the Service by name is what a policy can follow",
                        qualified_name(service),
                        node_port.name.as_deref().unwrap_or("unnamed")
                    ),
                });
            }
            Peer::Node { ip, node }
        }
        IpOwner::Unknown => {
            found.unowned = true;
            found.warnings.extend(unowned(cluster, facts, ip)?);
            Peer::External { ip, service: None }
        }
    };
    Ok(vec![(peer, port)])
}

fn service_peers(
    cluster: &Cluster,
    facts: &Facts,
    service: &Service,
    service_port: &ServicePort,
    (ip, port, protocol): (IpAddr, u16, Protocol),
    found: &mut Found,
) -> Result<Vec<(Peer, u16)>, String> {
    let name = qualified_name(service);
    let dns = is_cluster_dns(service) && is_dns_port(service_port);
    let mut peers = Vec::new();
    // NodeLocal DNSCache that also binds the DNS ClusterIP answers there on every node, before any
    // Service translation: the address itself must be allowed too.
    if dns && facts.dns.node_local.contains(&ip) {
        peers.push((Peer::NodeLocalDns { ip }, port));
    }
    let backends = cluster.backends(service, service_port, ip);
    if backends.is_empty() {
        if dns {
            if let Some(selector) = service_selector(service) {
                found.notes.push(format!(
                    "cluster DNS Service {name} has no backends in the snapshot; using its selector"
                ));
                let peer = Peer::Pods {
                    namespace: service.metadata.namespace.clone().unwrap_or_default(),
                    workload: WorkloadRef {
                        kind: "Service".into(),
                        name: service.metadata.name.clone().unwrap_or_default(),
                    },
                    selector: PodSelector::labels(selector.clone()),
                    service: service.metadata.name.clone(),
                    cluster_dns: true,
                };
                peers.push((peer, target_port(service_port, None).unwrap_or(port)));
                return Ok(peers);
            }
        }
        if !peers.is_empty() {
            return Ok(peers);
        }
        return Err(format!(
            "Service {name} has no backends for port {port}/{protocol} in the snapshot; unresolved"
        ));
    }
    for backend in backends {
        let peer = if is_apiserver_service(service) {
            Peer::ApiServer { ip: backend.ip }
        } else {
            match backend.owner {
                IpOwner::Pod(pod) => {
                    match pod_peer(cluster, pod, Some((service, dns)), backend.port) {
                        Ok(peer) => peer,
                        Err(why) => {
                            found
                                .notes
                                .push(format!("backend {} of Service {name}: {why}", backend.ip));
                            continue;
                        }
                    }
                }
                IpOwner::Node { node } => Peer::Node {
                    ip: backend.ip,
                    node: node.unwrap_or_default().to_owned(),
                },
                IpOwner::Unknown => Peer::External {
                    ip: backend.ip,
                    service: Some(name.clone()),
                },
            }
        };
        peers.push((peer, backend.port));
    }
    if peers.is_empty() {
        return Err(format!("no backend of Service {name} could be resolved"));
    }
    Ok(peers)
}

/// A pod as a peer on `port`: its workload and selector, or the cluster DNS Service's selector
/// when this is DNS to a cluster DNS pod (through a DNS port of the DNS Service, `via` saying
/// whether it was one, or straight to a DNS targetPort of the pod).
fn pod_peer(
    cluster: &Cluster,
    pod: &Pod,
    via: Option<(&Service, bool)>,
    port: u16,
) -> Result<Peer, String> {
    let dns = match via {
        Some((service, dns)) => Some(service).filter(|_| dns),
        None => cluster.dns_service_of(pod, port),
    };
    let selector = match dns.and_then(service_selector) {
        Some(selector) => PodSelector::labels(selector.clone()),
        None => cluster.selector_of(pod)?,
    };
    Ok(Peer::Pods {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        workload: cluster.workload_of(pod),
        selector,
        service: via.and_then(|(s, _)| s.metadata.name.clone()),
        cluster_dns: dns.is_some(),
    })
}
