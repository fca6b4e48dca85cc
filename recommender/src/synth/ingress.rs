//! The complementary ingress policies (`Options::with_ingress`): pod-to-pod traffic needs egress
//! from the source AND ingress to the destination once the destination is isolated for ingress.
//!
//! One policy per in-cluster destination workload, in the destination's namespace, allowing every
//! observed source workload on the observed target ports. The sources come from all flows, not
//! only those of the namespaces asked for: an ingress policy that forgot a caller from another
//! namespace would cut it off. Only pod sources are ever observed (the agent records egress of
//! pods), so traffic from outside the cluster or from hostNetwork callers is not in these policies.
//! The cluster DNS pods get none unless `ingress_for_cluster_services`, whatever port they were
//! reached on (a metrics scrape included): every pod calls them, and a policy listing only the
//! observed callers would break the next namespace.
//!
//! A destination that a LoadBalancer or NodePort Service (or external IPs) exposes outside the
//! cluster also has callers the agent never sees; its policy would cut them off, so it says so
//! (a comment, and a warning for the user).

use std::collections::BTreeMap;

use flow_model::WorkloadRef;

use super::context::Context;
use super::model::{Direction, PeerPlan, PolicyPlan, Target};
use super::naming;
use super::ports::PortSet;
use super::rules::{annotate_observed, into_rules, workload_label};
use crate::cluster::{is_terminated, qualified_name};
use crate::policy::PodSelector;
use crate::resolve::{Peer, ResolvedFlow, SourceWorkload};

/// Ingress plans for the destinations of `flows` whose namespace `wanted` accepts; `warnings`
/// takes what the user must be told.
pub fn ingress_plans(
    ctx: &Context,
    flows: &[ResolvedFlow],
    wanted: impl Fn(&str) -> bool,
    warnings: &mut Vec<String>,
) -> Vec<PolicyPlan> {
    type Dest<'a> = (&'a str, &'a WorkloadRef);
    let mut dests: BTreeMap<Dest, (&PodSelector, Vec<&ResolvedFlow>)> = BTreeMap::new();
    for flow in flows {
        if let Peer::Pods {
            namespace,
            workload,
            selector,
            cluster_dns,
            ..
        } = &*flow.peer
        {
            let dns_server = *cluster_dns
                || ctx
                    .dns
                    .servers
                    .contains(&(namespace.clone(), workload.clone()));
            if (dns_server && !ctx.options.ingress_for_cluster_services) || !wanted(namespace) {
                continue;
            }
            let entry = dests
                .entry((namespace.as_str(), workload))
                .or_insert_with(|| (selector, Vec::new()));
            entry.0 = entry.0.min(selector);
            entry.1.push(flow);
        }
    }
    let mut by_ns: BTreeMap<&str, Vec<&WorkloadRef>> = BTreeMap::new();
    for (ns, w) in dests.keys() {
        by_ns.entry(ns).or_default().push(w);
    }
    let names: BTreeMap<&str, BTreeMap<WorkloadRef, String>> = by_ns
        .into_iter()
        .map(|(ns, ws)| (ns, naming::workload_names(ws, "ingress")))
        .collect();

    let mut out = Vec::new();
    for ((namespace, workload), (selector, flows)) in dests {
        let name = names[namespace][workload].clone();
        let mut plan = PolicyPlan::new(name, namespace.to_owned(), Direction::Ingress);
        plan.selector = selector.clone();
        plan.annotate("workload", format!("{}/{}", workload.kind, workload.name));
        annotate_observed(
            &mut plan,
            flows
                .iter()
                .map(|f| ((&f.source, f.port, f.protocol), &*f.observed)),
        );
        plan.comments.push(format!(
            "ingress to {} from its observed in-cluster callers only",
            workload_label(namespace, workload)
        ));
        let exposed = exposing_services(ctx, namespace, workload);
        if !exposed.is_empty() {
            let line = format!(
                "{} is exposed outside the cluster by {}: this ingress policy admits only the in-cluster callers observed, and cuts off those that come through the load balancer or node ports; add their source ranges before applying it",
                workload_label(namespace, workload),
                exposed.join(", ")
            );
            plan.comments.push(line.clone());
            warnings.push(format!("{namespace}/{}: {line}", plan.name));
        }
        let mut sources: BTreeMap<&SourceWorkload, PortSet> = BTreeMap::new();
        for f in &flows {
            let ports = sources.entry(&f.source).or_default();
            ports.insert((f.protocol, f.port));
            // DNS pods receive what the sources' egress rules allow them to send: both protocols,
            // on the DNS ports only.
            if matches!(
                *f.peer,
                Peer::Pods {
                    cluster_dns: true,
                    ..
                }
            ) {
                ports.extend(super::ports::with_dns_fallback(
                    &[(f.protocol, f.port)].into(),
                ));
            }
        }
        let mut rules: BTreeMap<PortSet, Vec<PeerPlan>> = BTreeMap::new();
        for (source, ports) in sources {
            rules.entry(ports).or_default().push(PeerPlan {
                target: Target::Pods {
                    namespace: (source.namespace != namespace).then(|| source.namespace.clone()),
                    selector: source.selector.clone(),
                },
                dns_names: Default::default(),
                cluster_dns: false,
                comments: vec![workload_label(&source.namespace, &source.workload)],
            });
        }
        plan.rules = into_rules(rules);
        out.push(plan);
    }
    out
}

/// `Service ns/name (LoadBalancer)` for each Service that exposes a pod of `namespace/workload`
/// outside the cluster.
fn exposing_services(ctx: &Context, namespace: &str, workload: &WorkloadRef) -> Vec<String> {
    let cluster = ctx.cluster;
    let mut out: Vec<String> = cluster
        .pods
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && !is_terminated(p)
                && cluster.workload_of(p) == *workload
        })
        .flat_map(|p| cluster.exposing_services(p))
        .map(|s| {
            let kind = s
                .spec
                .as_ref()
                .and_then(|spec| spec.type_.as_deref())
                .filter(|t| matches!(*t, "LoadBalancer" | "NodePort"))
                .unwrap_or("external IPs");
            format!("Service {} ({kind})", qualified_name(s))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
