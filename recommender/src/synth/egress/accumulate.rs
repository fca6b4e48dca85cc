//! Phase 1 of an egress plan: the flows of one workload folded per peer (keyed by what will
//! select it), with the ports, outcomes, names and descriptions each peer needs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flow_model::{Outcome, Protocol, WorkloadRef};

use super::super::context::Context;
use super::super::model::IpOrigin;
use crate::policy::PodSelector;
use crate::resolve::{Peer, ResolvedFlow};

/// What we know of one (peer, protocol, port).
#[derive(Default)]
pub struct PortAcc {
    /// Some flow was established, sent (UDP) or of unknown outcome: not known to fail.
    pub not_failed: bool,
    /// Refused/timeout outcomes seen.
    pub failures: BTreeSet<Outcome>,
}

/// What we know of one peer.
#[derive(Default)]
pub struct PeerAcc<'a> {
    pub ports: BTreeMap<(Protocol, u16), PortAcc>,
    pub dns_names: BTreeSet<&'a str>,
    /// (namespace, workload) of in-cluster peers, for comments.
    pub workloads: BTreeSet<(&'a str, &'a WorkloadRef)>,
    pub services: BTreeSet<&'a str>,
    pub cluster_dns: bool,
    pub node: Option<&'a str>,
}

/// How a peer will be selected: pods by (namespace, selector), anything else by address. DNS to
/// the cluster DNS pods is a peer of its own, apart from other ports of the same pods (CoreDNS
/// metrics), so that only DNS gets the DNS treatment (both protocols, Cilium's DNS rule).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKey<'a> {
    Pods {
        namespace: &'a str,
        selector: &'a PodSelector,
        dns: bool,
    },
    Ip {
        origin: IpOrigin,
        ip: IpAddr,
    },
}

/// The flows' peers, keyed by how they will be selected.
pub fn accumulate<'a>(
    ctx: &'a Context,
    flows: &[&'a ResolvedFlow],
) -> BTreeMap<PeerKey<'a>, PeerAcc<'a>> {
    let mut peers: BTreeMap<PeerKey, PeerAcc> = BTreeMap::new();
    for flow in flows {
        let acc = peers.entry(key(ctx, &flow.peer)).or_default();
        let port = acc.ports.entry((flow.protocol, flow.port)).or_default();
        if flow.observed.not_failed() {
            port.not_failed = true;
        } else {
            port.failures.insert(flow.observed.outcome);
        }
        match &*flow.peer {
            Peer::Pods {
                namespace,
                workload,
                service,
                cluster_dns,
                ..
            } => {
                acc.workloads.insert((namespace, workload));
                acc.services.extend(service.as_deref());
                acc.cluster_dns |= *cluster_dns;
            }
            Peer::Node { node, .. } => acc.node = Some(node),
            Peer::NodeLocalDns { .. } => acc.cluster_dns = true,
            // The names the source resolved describe this address only when it connected to it,
            // not when a selector-less Service led here.
            Peer::External { service: None, .. } => {
                acc.dns_names
                    .extend(flow.observed.dns_names.iter().map(String::as_str));
            }
            Peer::External { .. } | Peer::ApiServer { .. } => {}
        }
    }
    peers
}

fn key<'a>(ctx: &'a Context, peer: &'a Peer) -> PeerKey<'a> {
    match peer {
        Peer::Pods {
            namespace,
            selector,
            cluster_dns,
            ..
        } => {
            // DNS to the DNS pods is selected the way every policy allows DNS.
            let dns_pods = ctx
                .dns
                .pods
                .as_ref()
                .filter(|p| *cluster_dns && *namespace == p.namespace);
            PeerKey::Pods {
                namespace,
                selector: dns_pods.map_or(selector, |p| &p.selector),
                dns: *cluster_dns,
            }
        }
        Peer::NodeLocalDns { ip } => PeerKey::Ip {
            origin: IpOrigin::NodeLocalDns,
            ip: ip.to_canonical(),
        },
        // A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`; on the wire (and to
        // the CNI) it is IPv4, so an ipBlock must name the IPv4 address.
        Peer::ApiServer { ip } => PeerKey::Ip {
            origin: IpOrigin::ApiServer,
            ip: ip.to_canonical(),
        },
        Peer::Node { ip, .. } => PeerKey::Ip {
            origin: IpOrigin::Node,
            ip: ip.to_canonical(),
        },
        Peer::External { ip, .. } => PeerKey::Ip {
            origin: IpOrigin::External,
            ip: ip.to_canonical(),
        },
    }
}

/// `TCP/8443 refused` lines for the ports of a peer that never succeeded.
pub fn failure_lines(acc: &PeerAcc) -> Vec<String> {
    acc.ports
        .iter()
        .filter(|(_, p)| !p.not_failed && !p.failures.is_empty())
        .map(|((protocol, port), p)| {
            let outcomes: Vec<String> = p
                .failures
                .iter()
                .map(|o| format!("{o:?}").to_lowercase())
                .collect();
            format!("{protocol}/{port} {}", outcomes.join("/"))
        })
        .collect()
}
