//! The egress policy of one source workload, built in phases:
//!
//! 1. [`accumulate`]: the flows folded per peer (keyed by what will select it);
//! 2. [`Rules::in_cluster`]: pods by selector, the API server, nodes and NodeLocal DNSCache by
//!    address;
//! 3. [`Rules::complete_dns`]: a workload that uses DNS (or resolved names without being seen
//!    asking) gets the whole DNS allowance, every way the cluster answers DNS (the DNS pods,
//!    NodeLocal DNSCache): which of them a pod's query reaches is not the pod's choice;
//! 4. [`external`]: outside addresses, merged exactly (or internet egress past the cap);
//! 5. the annotations that record what the reader should know.
//!
//! Peers with identical port sets share one rule.

mod accumulate;
mod external;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use super::cidr;
use super::context::Context;
use super::model::{Direction, InternetNeed, IpOrigin, PeerPlan, PolicyPlan, Target};
use super::peers::{dns_peers, node_local_peer};
use super::ports::{self, PortSet};
use super::rules::{annotate_observed, into_rules, workload_label};
use crate::cluster::dns::DNS_PORT;
use crate::resolve::{ResolvedFlow, SourceWorkload};
use accumulate::{accumulate, failure_lines, PeerAcc, PeerKey};

/// The egress plan of one workload.
pub struct WorkloadEgress {
    pub plan: PolicyPlan,
    pub internet_need: Option<InternetNeed>,
    /// What the user must be told (internet egress past a cap).
    pub warnings: Vec<String>,
}

/// Builds the egress policy of `source` from its flows (all with that source).
pub fn egress_plan(
    ctx: &Context,
    source: &SourceWorkload,
    flows: &[&ResolvedFlow],
    name: String,
) -> WorkloadEgress {
    let peers = accumulate(ctx, flows);

    let mut plan = PolicyPlan::new(name, source.namespace.clone(), Direction::Egress);
    plan.selector = source.selector.clone();
    plan.annotate(
        "workload",
        format!("{}/{}", source.workload.kind, source.workload.name),
    );
    annotate_observed(
        &mut plan,
        flows
            .iter()
            .map(|f| ((&f.peer, f.port, f.protocol), &*f.observed)),
    );

    let mut rules = Rules::default();
    rules.in_cluster(ctx, source, &peers);
    rules.complete_dns(ctx, source, &peers, flows);
    let internet_need = external::add(ctx, source, &peers, &mut plan, &mut rules);

    if !rules.dns_names.is_empty() {
        let names: BTreeMap<String, String> = rules
            .dns_names
            .into_iter()
            .map(|(k, v)| (k, v.join(",")))
            .collect();
        plan.annotate(
            "dns-names",
            serde_json::to_string(&names).expect("strings serialize"),
        );
    }
    if !rules.unconfirmed.is_empty() {
        rules.unconfirmed.sort();
        plan.annotate(
            "never-succeeded",
            serde_json::to_string(&rules.unconfirmed).expect("strings serialize"),
        );
    }
    plan.rules = into_rules(rules.by_ports);
    WorkloadEgress {
        plan,
        internet_need,
        warnings: rules.warnings,
    }
}

/// The plan's rules as they are built, and what the annotations will say of them.
#[derive(Default)]
struct Rules {
    by_ports: BTreeMap<PortSet, Vec<PeerPlan>>,
    /// `peer TCP/port refused` lines: destinations that never answered.
    unconfirmed: Vec<String>,
    /// ipBlock → the names behind it.
    dns_names: BTreeMap<String, Vec<String>>,
    /// The DNS peers already in the plan.
    dns_targets: BTreeSet<Target>,
    warnings: Vec<String>,
}

impl Rules {
    fn add(&mut self, ports: PortSet, peer: PeerPlan) {
        if peer.cluster_dns {
            self.dns_targets.insert(peer.target.clone());
        }
        self.by_ports.entry(ports).or_default().push(peer);
    }

    /// Phase 2: in-cluster pods by selector, the API server, nodes and NodeLocal DNSCache by
    /// address.
    fn in_cluster(
        &mut self,
        ctx: &Context,
        source: &SourceWorkload,
        peers: &BTreeMap<PeerKey, PeerAcc>,
    ) {
        for (key, acc) in peers {
            let mut ports: PortSet = acc.ports.keys().copied().collect();
            let (target, mut comments, label) = match *key {
                PeerKey::Pods {
                    namespace,
                    selector,
                    dns,
                } => {
                    let names: Vec<String> = acc
                        .workloads
                        .iter()
                        .map(|(ns, w)| workload_label(ns, w))
                        .collect();
                    let mut what = names.join(", ");
                    if !acc.services.is_empty() {
                        let services: Vec<&str> = acc.services.iter().copied().collect();
                        what = format!("{what} via Service {}", services.join(", "));
                    }
                    if dns {
                        what = format!("cluster DNS: {what}");
                        // Every port the DNS pods answer DNS on, not only those seen.
                        if let Some(pods) = ctx
                            .dns
                            .pods
                            .as_ref()
                            .filter(|p| p.namespace == namespace && &p.selector == selector)
                        {
                            ports.extend(pods.ports.iter().copied());
                        }
                    }
                    let target = Target::Pods {
                        namespace: (namespace != source.namespace).then(|| namespace.to_owned()),
                        selector: selector.clone(),
                    };
                    (target, vec![what], names.join(","))
                }
                // External addresses are phase 4's.
                PeerKey::Ip {
                    origin: IpOrigin::External,
                    ..
                } => continue,
                PeerKey::Ip {
                    origin: IpOrigin::NodeLocalDns,
                    ip,
                } => {
                    let peer = node_local_peer(ctx, ip);
                    (peer.target, peer.comments, ip.to_string())
                }
                PeerKey::Ip { origin, ip } => {
                    let net = cidr::host_net(ip);
                    let what = match origin {
                        IpOrigin::ApiServer => "Kubernetes API server".to_owned(),
                        _ => node_comment(ctx, acc),
                    };
                    let target = Target::IpBlock {
                        cidr: net,
                        except: Vec::new(),
                        origin,
                    };
                    (target, vec![what], net.to_string())
                }
            };
            let failed = failure_lines(acc);
            for line in &failed {
                self.unconfirmed.push(format!("{label} {line}"));
            }
            comments.extend(failed.iter().map(|l| format!("never succeeded: {l}")));
            self.add(
                with_fallback(&ports, acc.cluster_dns),
                PeerPlan {
                    target,
                    dns_names: BTreeSet::new(),
                    cluster_dns: acc.cluster_dns,
                    comments,
                },
            );
        }
    }

    /// Phase 3: a workload that uses DNS gets every way the cluster answers it (see the module
    /// comment). One that resolved names needs DNS even if no DNS flow was recorded for it
    /// (answers served from a cache in the window, a lost record): without it, its next lookup
    /// fails. Any peer on port 53 counts as its resolver (an outside one, say): then the cluster
    /// DNS would be a rule nobody uses.
    fn complete_dns(
        &mut self,
        ctx: &Context,
        source: &SourceWorkload,
        peers: &BTreeMap<PeerKey, PeerAcc>,
        flows: &[&ResolvedFlow],
    ) {
        let uses_cluster_dns = peers.values().any(|acc| acc.cluster_dns);
        let has_dns = uses_cluster_dns
            || peers
                .values()
                .any(|acc| acc.ports.keys().any(|(_, port)| *port == DNS_PORT));
        let resolved_names = flows.iter().any(|f| !f.observed.dns_names.is_empty());
        let implied = resolved_names && !has_dns;
        if !uses_cluster_dns && !implied {
            return;
        }
        for (ports, mut peer) in dns_peers(ctx, &source.namespace) {
            if self.dns_targets.contains(&peer.target) {
                continue;
            }
            if implied {
                peer.comments = vec![format!(
                    "{}: no DNS flow observed, but the workload resolved names (see dns-names)",
                    peer.comments.join(", ")
                )];
            }
            self.add(ports, peer);
        }
    }
}

/// `node NAME`, and a note when the port is a Service's NodePort (the rule may not match after a
/// Service implementation translates it).
fn node_comment(ctx: &Context, acc: &PeerAcc) -> String {
    let mut what = format!("node {}", acc.node.unwrap_or("?"));
    for (protocol, port) in acc.ports.keys() {
        if let Some((service, _)) = ctx.cluster.node_port_service(*port, *protocol) {
            what.push_str(&format!(
                "; {protocol}/{port} is the NodePort of Service {}: a Service implementation that translates NodePorts before policy makes this rule useless",
                crate::cluster::qualified_name(service)
            ));
        }
    }
    what
}

/// DNS falls back to TCP: the cluster DNS gets both protocols on every port it was reached on,
/// any other peer on port 53.
fn with_fallback(ports: &PortSet, cluster_dns: bool) -> PortSet {
    if cluster_dns {
        return ports::with_dns_fallback(ports);
    }
    let dns: PortSet = ports.iter().filter(|(_, p)| *p == 53).copied().collect();
    let mut out = ports.clone();
    out.extend(ports::with_dns_fallback(&dns));
    out
}
