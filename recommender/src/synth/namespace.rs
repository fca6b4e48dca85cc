//! Namespace-wide policies: the guide's `default-deny-all-egress` (DNS to the cluster DNS pods
//! only) and `allow-internet-egress` (the `InternetEgress::Label` pattern).

use std::collections::{BTreeMap, BTreeSet};

use super::context::Context;
use super::model::{Direction, InternetNeed, PolicyPlan, INTERNET_LABEL};
use super::naming;
use super::peers::{dns_peers, internet_peers};
use super::ports::PortSet;
use super::rules::into_rules;
use crate::policy::PodSelector;

/// `default-deny-all-egress` for `namespace`: isolates every pod for egress and allows DNS only
/// (UDP and TCP, every way the cluster answers it: see [`dns_peers`]), so that the per-workload
/// policies are the only other way out.
pub fn default_deny(ctx: &Context, namespace: &str) -> PolicyPlan {
    let mut plan = PolicyPlan::new(
        naming::DEFAULT_DENY.to_owned(),
        namespace.to_owned(),
        Direction::Egress,
    );
    let to = if ctx.dns.node_local.is_empty() && ctx.dns.pods.is_some() {
        "the cluster DNS pods"
    } else {
        "the cluster DNS"
    };
    plan.comments.push(format!(
        "isolates every pod of {namespace} for egress; DNS to {to} stays allowed"
    ));
    if let Some(why) = &ctx.dns.unscoped {
        plan.comments.push(why.clone());
    }
    let mut rules: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (ports, peer) in dns_peers(ctx, namespace) {
        rules.entry(ports).or_default().push(peer);
    }
    plan.rules = into_rules(rules);
    plan
}

/// `allow-internet-egress` for `namespace`: pods labelled `networking/allow-internet-egress: "true"`
/// may reach anything outside the cluster's pod and Service ranges, on the ports the workloads
/// that need it were seen using.
pub fn internet_label(ctx: &Context, namespace: &str, needs: &[InternetNeed]) -> PolicyPlan {
    let mut plan = PolicyPlan::new(
        naming::INTERNET_EGRESS.to_owned(),
        namespace.to_owned(),
        Direction::Egress,
    );
    plan.selector = PodSelector::labels(BTreeMap::from([(
        INTERNET_LABEL.0.to_owned(),
        INTERNET_LABEL.1.to_owned(),
    )]));
    let workloads: BTreeSet<String> = needs
        .iter()
        .map(|n| format!("{}/{}", n.workload.kind, n.workload.name))
        .collect();
    let workloads: Vec<String> = workloads.into_iter().collect();
    plan.comments.push(format!(
        "label the pod templates of these workloads with {}: \"{}\": {}",
        INTERNET_LABEL.0,
        INTERNET_LABEL.1,
        workloads.join(", ")
    ));
    plan.annotate(
        "needs-label",
        serde_json::to_string(&workloads).expect("strings serialize"),
    );
    let ports: PortSet = needs.iter().flat_map(|n| n.ports.iter().copied()).collect();
    let families: BTreeSet<bool> = needs
        .iter()
        .flat_map(|n| n.families.iter().copied())
        .collect();
    let peers = internet_peers(
        ctx,
        &families,
        "everything outside the cluster's pod and Service ranges",
    );
    let mut rules = BTreeMap::new();
    rules.insert(ports, peers);
    plan.rules = into_rules(rules);
    plan
}
