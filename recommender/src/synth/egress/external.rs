//! Phase 4 of an egress plan: addresses outside the cluster. Each address is an ipBlock /32
//! (/128), merged only where the merge covers nothing unobserved (or widened as the user asked).
//! Only when the user sets a cap (`Options::max_external_peers`, off by default) does a workload
//! past it get internet egress instead, in the form the options ask for, for the address families
//! it was seen using and no other, with a warning.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::super::cidr;
use super::super::context::Context;
use super::super::model::{InternetNeed, IpOrigin, PeerPlan, PolicyPlan, Target, INTERNET_LABEL};
use super::super::naming;
use super::super::options::InternetEgress;
use super::super::peers::internet_peers;
use super::super::ports::{self, PortSet};
use super::accumulate::{failure_lines, PeerAcc, PeerKey};
use super::{with_fallback, Rules};
use crate::resolve::SourceWorkload;
use std::collections::BTreeMap;

/// Adds the external peers of `peers` to `rules`; returns what the namespace's internet-egress
/// policy must allow when the workload gets the label pattern.
pub(super) fn add(
    ctx: &Context,
    source: &SourceWorkload,
    peers: &BTreeMap<PeerKey, PeerAcc>,
    plan: &mut PolicyPlan,
    rules: &mut Rules,
) -> Option<InternetNeed> {
    let externals: Vec<(IpAddr, &PeerAcc)> = peers
        .iter()
        .filter_map(|(k, acc)| match k {
            PeerKey::Ip {
                origin: IpOrigin::External,
                ip,
            } => Some((*ip, acc)),
            _ => None,
        })
        .collect();
    match ctx.options.max_external_peers {
        Some(cap) if externals.len() > cap => internet(ctx, source, cap, &externals, plan, rules),
        _ => {
            exact(ctx, &externals, rules);
            None
        }
    }
}

/// Past the cap: internet egress on every port the external addresses were reached on, in their
/// address families only.
fn internet(
    ctx: &Context,
    source: &SourceWorkload,
    cap: usize,
    externals: &[(IpAddr, &PeerAcc)],
    plan: &mut PolicyPlan,
    rules: &mut Rules,
) -> Option<InternetNeed> {
    let families: BTreeSet<bool> = externals.iter().map(|(ip, _)| ip.is_ipv6()).collect();
    let ports: PortSet = externals
        .iter()
        .flat_map(|(_, acc)| acc.ports.keys().copied())
        .collect();
    let ports = with_fallback(&ports, false);
    let note = format!(
        "{} external addresses (more than {cap}): internet egress on {}",
        externals.len(),
        ports::compress(&ports)
            .iter()
            .map(|p| p.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let blocks: Vec<&str> = [(false, "0.0.0.0/0"), (true, "::/0")]
        .into_iter()
        .filter(|(v6, _)| families.contains(v6))
        .map(|(_, block)| block)
        .collect();
    let how = match ctx.options.internet_egress {
        InternetEgress::Cidr => String::new(),
        InternetEgress::Label => format!(
            " (policy {}, once its pods carry {}={})",
            naming::INTERNET_EGRESS,
            INTERNET_LABEL.0,
            INTERNET_LABEL.1
        ),
    };
    rules.warnings.push(format!(
        "{} reached {} external addresses, more than --max-external-peers {cap}: it gets internet egress ({} less the cluster's ranges) on {} instead of one ipBlock per address{how}",
        super::super::rules::workload_label(&source.namespace, &source.workload),
        externals.len(),
        blocks.join(" and "),
        ports::compress(&ports)
            .iter()
            .map(|p| p.label())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    match ctx.options.internet_egress {
        InternetEgress::Cidr => {
            plan.annotate("internet-egress", format!("cidr; {note}"));
            for block in internet_peers(ctx, &families, &note) {
                // An observed external address inside an excepted range must stay allowed.
                if let Target::IpBlock { except, .. } = &block.target {
                    for (ip, acc) in externals {
                        if except.iter().any(|e| e.contains(ip)) {
                            rules.add(
                                ports.clone(),
                                external_peer(cidr::host_net(*ip), &[(*ip, acc)]),
                            );
                        }
                    }
                }
                rules.add(ports.clone(), block);
            }
            None
        }
        InternetEgress::Label => {
            plan.annotate("internet-egress", format!("label; {note}"));
            plan.comments.push(format!(
                "needs the pod label {}={:?} ({note}); policy {}",
                INTERNET_LABEL.0,
                INTERNET_LABEL.1,
                naming::INTERNET_EGRESS
            ));
            Some(InternetNeed {
                workload: source.workload.clone(),
                ports,
                families,
            })
        }
    }
}

/// Up to the cap: each address, merged only among those reached on the same ports (merging
/// across port sets would allow an observed address on another address's ports), and only where
/// the merge covers nothing unobserved (unless widened on request).
fn exact(ctx: &Context, externals: &[(IpAddr, &PeerAcc)], rules: &mut Rules) {
    let mut by_ports: BTreeMap<PortSet, Vec<(IpAddr, &PeerAcc)>> = BTreeMap::new();
    for (ip, acc) in externals {
        let ports: PortSet = acc.ports.keys().copied().collect();
        by_ports
            .entry(with_fallback(&ports, false))
            .or_default()
            .push((*ip, acc));
    }
    for (ports, members) in by_ports {
        let nets: Vec<IpNet> = members
            .iter()
            .map(|(ip, _)| cidr::widen(*ip, ctx.options.cidr_prefix_v4, ctx.options.cidr_prefix_v6))
            .collect();
        for net in cidr::exact_aggregate(&nets) {
            let inside: Vec<(IpAddr, &PeerAcc)> = members
                .iter()
                .filter(|(ip, _)| net.contains(ip))
                .copied()
                .collect();
            let peer = external_peer(net, &inside);
            for (ip, acc) in &inside {
                for line in failure_lines(acc) {
                    rules.unconfirmed.push(format!("{ip} {line}"));
                }
            }
            if !peer.dns_names.is_empty() {
                rules
                    .dns_names
                    .entry(net.to_string())
                    .or_default()
                    .extend(peer.dns_names.iter().cloned());
            }
            rules.add(ports.clone(), peer);
        }
    }
}

/// An ipBlock peer for external addresses `members` (all inside `net`).
fn external_peer(net: IpNet, members: &[(IpAddr, &PeerAcc)]) -> PeerPlan {
    let dns_names: BTreeSet<String> = members
        .iter()
        .flat_map(|(_, acc)| acc.dns_names.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut comments = vec![if dns_names.is_empty() {
        "no DNS name observed".to_owned()
    } else {
        dns_names.iter().cloned().collect::<Vec<_>>().join(", ")
    }];
    for (ip, acc) in members {
        for line in failure_lines(acc) {
            comments.push(format!("never succeeded: {ip} {line}"));
        }
    }
    PeerPlan {
        target: Target::IpBlock {
            cidr: net,
            except: Vec::new(),
            origin: IpOrigin::External,
        },
        dns_names,
        cluster_dns: false,
        comments,
    }
}
