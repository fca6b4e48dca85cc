//! Peers that several policies name the same way: the cluster DNS, and the internet-egress blocks.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::cidr;
use super::context::{Context, DnsPlan};
use super::model::{IpOrigin, PeerPlan, Target};
use super::ports::PortSet;
use crate::cluster::dns::DNS_PORT;
use crate::cluster::qualified_name;

/// How a policy in `namespace` allows DNS ([`DnsPlan`]): each peer with its ports. The DNS pods
/// by selector on the ports they receive DNS on; each NodeLocal DNSCache address as an ipBlock on
/// 53; neither known: 53 to any address. UDP and TCP always (clients fall back to TCP).
pub fn dns_peers(ctx: &Context, namespace: &str) -> Vec<(PortSet, PeerPlan)> {
    let dns = &ctx.dns;
    let mut out = Vec::new();
    if let Some(pods) = &dns.pods {
        out.push((
            pods.ports.clone(),
            PeerPlan {
                target: Target::Pods {
                    namespace: (namespace != pods.namespace).then(|| pods.namespace.clone()),
                    selector: pods.selector.clone(),
                },
                dns_names: BTreeSet::new(),
                cluster_dns: true,
                comments: vec!["cluster DNS".to_owned()],
            },
        ));
    }
    for ip in &dns.node_local {
        out.push((DnsPlan::dns_ports(DNS_PORT), node_local_peer(ctx, *ip)));
    }
    if dns.anywhere() {
        out.push((
            DnsPlan::dns_ports(DNS_PORT),
            PeerPlan {
                target: Target::Anywhere,
                dns_names: BTreeSet::new(),
                cluster_dns: true,
                comments: vec![
                    "DNS to any address: no cluster DNS Service in the cluster files".to_owned(),
                ],
            },
        ));
    }
    out
}

/// NodeLocal DNSCache at `ip`.
pub fn node_local_peer(ctx: &Context, ip: IpAddr) -> PeerPlan {
    let on_cluster_ip = ctx
        .cluster
        .service_by_cluster_ip(ip)
        .map(|s| format!(" on the ClusterIP of {} (it answers there on every node, before Service translation)", qualified_name(s)))
        .unwrap_or_default();
    PeerPlan {
        target: Target::IpBlock {
            cidr: cidr::host_net(ip),
            except: Vec::new(),
            origin: IpOrigin::NodeLocalDns,
        },
        dns_names: BTreeSet::new(),
        cluster_dns: true,
        comments: vec![format!("NodeLocal DNSCache{on_cluster_ip}")],
    }
}

/// `0.0.0.0/0` and `::/0` less the cluster's ranges, one peer per family of `families` (`true`
/// for IPv6: only the families the workloads were seen using), with `note` on top.
pub fn internet_peers(ctx: &Context, families: &BTreeSet<bool>, note: &str) -> Vec<PeerPlan> {
    cidr::internet_blocks(&ctx.cluster_ranges)
        .into_iter()
        .filter(|(all, _)| families.contains(&all.addr().is_ipv6()))
        .map(|(all, except)| PeerPlan {
            comments: internet_comments(note, &except),
            target: Target::IpBlock {
                cidr: all,
                except,
                origin: IpOrigin::Internet,
            },
            dns_names: BTreeSet::new(),
            cluster_dns: false,
        })
        .collect()
}

/// Comments above an internet-egress block; says so when no cluster range is known for its
/// family, because the block then also matches pod addresses on CNIs that apply ipBlocks to pods.
fn internet_comments(note: &str, except: &[IpNet]) -> Vec<String> {
    let mut lines = vec![format!("internet egress: {note}")];
    if except.is_empty() {
        lines.push(
            "no pod or Service range known for this family (give the cluster ranges explicitly): in-cluster addresses are not excepted"
                .to_owned(),
        );
    }
    lines
}
