//! The egress policy of one source workload, built in phases:
//!
//! 1. [`accumulate`]: the flows folded per peer (keyed by what will select it);
//! 2. [`Rules::in_cluster`]: pods by selector, the API server and nodes by address;
//! 3. [`Rules::ensure_dns`]: DNS for a workload that resolved names but was not seen asking;
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
use super::peers::dns_peer;
use super::ports::{self, PortSet};
use super::rules::{annotate_observed, into_rules, workload_label};
use crate::resolve::{ResolvedFlow, SourceWorkload};
use accumulate::{accumulate, failure_lines, PeerAcc, PeerKey};

/// The egress plan of one workload.
pub struct WorkloadEgress {
    pub plan: PolicyPlan,
    pub internet_need: Option<InternetNeed>,
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
    rules.in_cluster(source, &peers);
    rules.ensure_dns(ctx, source, &peers, flows);
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
}

impl Rules {
    fn add(&mut self, ports: PortSet, peer: PeerPlan) {
        self.by_ports.entry(ports).or_default().push(peer);
    }

    /// Phase 2: in-cluster pods by selector, the API server and nodes by address.
    fn in_cluster(&mut self, source: &SourceWorkload, peers: &BTreeMap<PeerKey, PeerAcc>) {
        for (key, acc) in peers {
            let (target, mut comments, label) = match *key {
                PeerKey::Pods {
                    namespace,
                    selector,
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
                    if acc.cluster_dns {
                        what = format!("cluster DNS: {what}");
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
                PeerKey::Ip { origin, ip } => {
                    let net = cidr::host_net(ip);
                    let what = match origin {
                        IpOrigin::ApiServer => "Kubernetes API server".to_owned(),
                        _ => format!("node {}", acc.node.unwrap_or("?")),
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
            let ports: PortSet = acc.ports.keys().copied().collect();
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

    /// Phase 3: a workload that resolved names needs DNS even if no DNS flow was recorded for it
    /// (answers served from a cache in the window, a lost record): without it, its next lookup
    /// fails. Any peer on port 53 counts: a node-local DNS cache (169.254.20.10) or an outside
    /// resolver then answers, and the cluster DNS would be a rule nobody uses.
    fn ensure_dns(
        &mut self,
        ctx: &Context,
        source: &SourceWorkload,
        peers: &BTreeMap<PeerKey, PeerAcc>,
        flows: &[&ResolvedFlow],
    ) {
        let has_dns = peers
            .values()
            .any(|acc| acc.cluster_dns || acc.ports.keys().any(|(_, port)| *port == 53));
        let resolved_names = flows.iter().any(|f| !f.observed.dns_names.is_empty());
        if resolved_names && !has_dns {
            let mut dns = dns_peer(ctx, &source.namespace);
            dns.comments = vec![
                "cluster DNS: no DNS flow observed, but the workload resolved names (see dns-names)"
                    .into(),
            ];
            self.add(ctx.dns_ports.clone(), dns);
        }
    }
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
