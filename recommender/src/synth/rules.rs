//! Pieces every policy builder shares: rules from peers grouped by port set, the observation
//! annotations, and how a workload is named in comments.

use std::collections::BTreeMap;

use flow_model::WorkloadRef;

use super::model::{PeerPlan, PolicyPlan, RulePlan};
use super::ports::{self, PortSet};
use crate::resolve::Observation;

/// `Kind namespace/name`.
pub fn workload_label(namespace: &str, workload: &WorkloadRef) -> String {
    format!("{} {}/{}", workload.kind, namespace, workload.name)
}

/// The observation window of `observed` and the number of distinct `edges` behind a policy, as
/// annotations. Both are the same however the traffic was cut into records, so that `recommend`
/// on files and `export` from a store write the same bytes.
pub fn annotate_observed<'a, E: Ord>(
    plan: &mut PolicyPlan,
    observed: impl Iterator<Item = (E, &'a Observation)>,
) {
    let mut window: Option<(jiff::Timestamp, jiff::Timestamp)> = None;
    // Sorted and deduplicated once rather than a set grown per flow: a workload's flows come
    // mostly in edge order, which the sort only checks.
    let mut edges = Vec::new();
    for (edge, o) in observed {
        edges.push(edge);
        window = Some(match window {
            None => (o.first_seen, o.last_seen),
            Some((from, to)) => (from.min(o.first_seen), to.max(o.last_seen)),
        });
    }
    if let Some((from, to)) = window {
        plan.annotate("observed-from", from.to_string());
        plan.annotate("observed-to", to.to_string());
    }
    edges.sort_unstable();
    edges.dedup();
    plan.annotate("edges", edges.len().to_string());
}

/// Rules from peers grouped by port set: peers sorted, rules ordered by their first peer (pods
/// first, then addresses) and then by ports, so the output never depends on input order.
pub fn into_rules(rules: BTreeMap<PortSet, Vec<PeerPlan>>) -> Vec<RulePlan> {
    let mut out: Vec<(PortSet, RulePlan)> = rules
        .into_iter()
        .map(|(ports, mut peers)| {
            peers.sort();
            peers.dedup();
            let specs = ports::compress(&ports);
            (
                ports,
                RulePlan {
                    peers,
                    ports: specs,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.1.peers[0].target, &a.0).cmp(&(&b.1.peers[0].target, &b.0)));
    out.into_iter().map(|(_, r)| r).collect()
}
