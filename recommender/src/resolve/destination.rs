//! Destinations: what an address, port and protocol reach in the cluster model (see the rules in
//! the module comment of `resolve`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use flow_model::{Protocol, WorkloadRef};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};

use super::model::Peer;
use crate::cluster::{
    is_apiserver_service, is_cluster_dns, qualified_name, service_selector, target_port, Cluster,
    IpOwner,
};

/// What a destination address resolves to, whoever sent the traffic: the peers with the port
/// they receive on, or why there are none, and notes on backends left out.
///
/// Peers are interned in `known` (one `Arc` per distinct peer, across destinations).
#[derive(Clone, Debug)]
pub(super) struct DestinationPeers {
    pub peers: Result<Vec<(Arc<Peer>, u16)>, String>,
    pub notes: Vec<String>,
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
    pub fn new(
        cluster: &Cluster,
        (ip, port, protocol): (IpAddr, u16, Protocol),
        known: &mut BTreeSet<Arc<Peer>>,
    ) -> Self {
        let mut notes = Vec::new();
        let peers =
            peers(cluster, ip, port, protocol, &mut |note| notes.push(note)).map(|mut peers| {
                peers.sort();
                peers.dedup();
                peers
                    .into_iter()
                    .map(|(peer, port)| (intern(known, peer), port))
                    .collect()
            });
        DestinationPeers { peers, notes }
    }
}

/// The peers (with the port they receive on) of a destination. `Err` when the destination cannot
/// be resolved at all; `note` takes backends skipped on the way.
fn peers(
    cluster: &Cluster,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    note: &mut impl FnMut(String),
) -> Result<Vec<(Peer, u16)>, String> {
    if let Some((service, service_port)) = cluster
        .service_route(ip, port, protocol)
        .map_err(|why| format!("{why}: the traffic reached no backend; unresolved"))?
    {
        return service_peers(cluster, service, service_port, (ip, port, protocol), note);
    }
    if cluster.apiserver_addresses().contains(&ip) {
        return Ok(vec![(Peer::ApiServer { ip }, port)]);
    }
    let peer = match cluster.ip_owner(ip) {
        IpOwner::Pod(pod) => pod_peer(cluster, pod, None)?,
        IpOwner::Node { node } => Peer::Node {
            ip,
            node: node.unwrap_or_default().to_owned(),
        },
        IpOwner::Unknown => Peer::External { ip, service: None },
    };
    Ok(vec![(peer, port)])
}

fn service_peers(
    cluster: &Cluster,
    service: &Service,
    service_port: &ServicePort,
    (ip, port, protocol): (IpAddr, u16, Protocol),
    note: &mut impl FnMut(String),
) -> Result<Vec<(Peer, u16)>, String> {
    let name = qualified_name(service);
    let backends = cluster.backends(service, service_port, ip);
    if backends.is_empty() {
        if is_cluster_dns(service) {
            if let Some(selector) = service_selector(service) {
                note(format!(
                    "cluster DNS Service {name} has no backends in the snapshot; using its selector"
                ));
                let peer = Peer::Pods {
                    namespace: service.metadata.namespace.clone().unwrap_or_default(),
                    workload: WorkloadRef {
                        kind: "Service".into(),
                        name: service.metadata.name.clone().unwrap_or_default(),
                    },
                    selector: selector.clone(),
                    service: service.metadata.name.clone(),
                    cluster_dns: true,
                };
                return Ok(vec![(
                    peer,
                    target_port(service_port, None).unwrap_or(port),
                )]);
            }
        }
        return Err(format!(
            "Service {name} has no backends for port {port}/{protocol} in the snapshot; unresolved"
        ));
    }
    let mut peers = Vec::new();
    for backend in backends {
        let peer = if is_apiserver_service(service) {
            Peer::ApiServer { ip: backend.ip }
        } else {
            match backend.owner {
                IpOwner::Pod(pod) => match pod_peer(cluster, pod, Some(service)) {
                    Ok(peer) => peer,
                    Err(why) => {
                        note(format!("backend {} of Service {name}: {why}", backend.ip));
                        continue;
                    }
                },
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

/// A pod as a peer: its workload and selector, or the cluster DNS Service's selector when it is a
/// DNS pod (reached directly or through the DNS Service).
fn pod_peer(cluster: &Cluster, pod: &Pod, via: Option<&Service>) -> Result<Peer, String> {
    let dns = match via {
        Some(service) => Some(service).filter(|s| is_cluster_dns(s)),
        None => cluster.cluster_dns_service_of(pod),
    };
    let selector = match dns.and_then(crate::cluster::service_selector) {
        Some(selector) => selector.clone(),
        None => cluster.selector_of(pod)?,
    };
    Ok(Peer::Pods {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        workload: cluster.workload_of(pod),
        selector,
        service: via.and_then(|s| s.metadata.name.clone()),
        cluster_dns: dns.is_some(),
    })
}
