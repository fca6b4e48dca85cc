//! Synthesis of least-privilege egress policies from resolved flows.
//!
//! [`recommend`] turns resolved flows into a [`Recommendation`]; [`render`] prints it as
//! deterministic multi-document YAML (same flows in any order, same bytes).
//!
//! - one egress policy per source workload ([`egress`]), named by [`naming`];
//! - in-cluster peers by the peer workload's selector (plus a `namespaceSelector` on
//!   `kubernetes.io/metadata.name`, in the same peer, across namespaces); the cluster DNS by its
//!   Service's selector on UDP and TCP; the API server, nodes and external addresses as ipBlocks,
//!   external ones merged only exactly ([`cidr`]); ports numeric with `endPort` runs ([`ports`]);
//! - namespace-wide policies on request ([`namespace`]) and complementary ingress ([`ingress`]);
//! - objects per format ([`networkpolicy`], [`cilium`]) and the YAML emitter ([`render`]).
//!
//! Refused and timed-out flows: every attempted destination is allowed, whatever became of the
//! attempt. The application tries to reach it, and a policy that denies it turns a fast RST (which
//! the application already handles) into a silent drop and a hang until its timeout: the
//! recommendation must not change behaviour. `verify` checks every flow the same way. Peers and
//! ports that never succeeded during the observation window are marked, with a comment above the
//! peer (`# never succeeded: TCP/8443 refused`) and the policy annotation
//! `egress-recommender.io/never-succeeded`, so a reviewer can delete them deliberately.
//! UDP (`sent`) and unknown outcomes count as not failed.
//!
//! DNS (one definition, `cluster::dns`): only the DNS Service's DNS ports are DNS; a policy that
//! allows DNS allows every way the cluster answers it (the DNS pods by selector on their DNS
//! targetPorts, NodeLocal DNSCache's addresses as ipBlocks on 53), over UDP and TCP; with no DNS
//! Service known, port 53 to any address, and a warning says so.
//!
//! Internet egress happens only when asked for (`Options::max_external_peers`), in the address
//! families that were seen, with a warning.
//!
//! Warnings ([`Recommendation::warnings`]) are what the user must act on: front ends print them
//! (the CLI on stderr), and `render` repeats them at the top of the YAML.
//!
//! Scope and skips: `Options::namespaces` selects the namespaces whose policies are produced:
//! egress policies of sources there, and (with `with_ingress`) ingress policies of destinations
//! there, which list every observed caller from any namespace. Workloads without a selector are
//! skipped with a note at the top of the output, never given an empty `podSelector`; hostNetwork
//! sources never get here (resolution leaves them out: NetworkPolicy does not apply to them). No
//! `default-deny-all-egress` is written for `kube-system` (isolating system pods that the window
//! did not see breaks clusters); a note says so. With `InternetEgress::Label`, the workloads that need internet
//! egress only get it once their pods carry the label, so `verify` denies their external flows
//! until then; the output names those workloads.

pub mod cidr;
pub mod cilium;
mod cilium_crd;
mod context;
mod document;
pub mod egress;
pub mod ingress;
pub mod model;
pub mod namespace;
pub mod naming;
pub mod networkpolicy;
mod options;
mod peers;
pub mod ports;
pub mod render;
mod rules;

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::Cluster;
use crate::resolve::ResolvedFlow;
use model::{Direction, PolicyPlan};

pub use context::{Context, DnsPlan, DnsPods, DNS_NAMESPACE, SYSTEM_NAMESPACE};
pub use document::{path, Document, NodeComments, Object, PathPart, PathSeg, Recommendation};
pub use options::{Format, InternetEgress, Options};
pub use render::render;

/// Orders documents: per namespace, default-deny, internet egress, workload egress, ingress.
fn rank(plan: &PolicyPlan) -> u8 {
    match (plan.name.as_str(), plan.direction) {
        (naming::DEFAULT_DENY, _) if plan.selector.is_empty() => 0,
        (naming::INTERNET_EGRESS, _)
            if plan
                .selector
                .match_labels
                .contains_key(model::INTERNET_LABEL.0) =>
        {
            1
        }
        (_, Direction::Egress) => 2,
        (_, Direction::Ingress) => 3,
    }
}

/// Recommends policies for `flows` (see the module doc).
pub fn recommend(cluster: &Cluster, flows: &[ResolvedFlow], options: &Options) -> Recommendation {
    let ctx = Context::new(cluster, flows, options);
    let wanted =
        |ns: &str| options.namespaces.is_empty() || options.namespaces.iter().any(|n| n == ns);

    let mut selected: Vec<&ResolvedFlow> = flows
        .iter()
        .filter(|f| wanted(&f.source.namespace))
        .collect();
    // Unstable is fine: nothing downstream depends on the order of flows within a workload.
    selected.sort_unstable_by(|a, b| {
        (&a.source.namespace, &a.source.workload).cmp(&(&b.source.namespace, &b.source.workload))
    });
    let mut workloads: Vec<&[&ResolvedFlow]> = selected
        .chunk_by(|a, b| {
            a.source.namespace == b.source.namespace && a.source.workload == b.source.workload
        })
        .collect();
    workloads.retain(|w| !w.is_empty());

    let mut by_ns: BTreeMap<&str, Vec<&flow_model::WorkloadRef>> = BTreeMap::new();
    for w in &workloads {
        by_ns
            .entry(&w[0].source.namespace)
            .or_default()
            .push(&w[0].source.workload);
    }
    let names: BTreeMap<&str, BTreeMap<flow_model::WorkloadRef, String>> = by_ns
        .iter()
        .map(|(ns, ws)| (*ns, naming::workload_names(ws.iter().copied(), "egress")))
        .collect();

    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let mut plans: Vec<PolicyPlan> = Vec::new();
    let mut internet_needs: BTreeMap<&str, Vec<model::InternetNeed>> = BTreeMap::new();
    let mut egress_namespaces: BTreeSet<&str> = BTreeSet::new();
    for flows in workloads {
        // The same workload may carry several selectors if resolution changed mid-window; the
        // smallest one keeps the choice independent of input order.
        let source = &flows
            .iter()
            .map(|f| &f.source)
            .min_by(|a, b| a.selector.cmp(&b.selector))
            .expect("chunks are non-empty");
        let label = rules::workload_label(&source.namespace, &source.workload);
        if source.selector.is_empty() {
            notes.push(format!(
                "skipped {label}: no stable labels to select its pods (an empty podSelector would select the whole namespace)"
            ));
            continue;
        }
        let name = names[source.namespace.as_str()][&source.workload].clone();
        let egress = egress::egress_plan(&ctx, source, flows, name);
        warnings.extend(egress.warnings);
        if let Some(need) = egress.internet_need {
            internet_needs
                .entry(&source.namespace)
                .or_default()
                .push(need);
        }
        egress_namespaces.insert(&source.namespace);
        plans.push(egress.plan);
    }
    for (ns, needs) in &internet_needs {
        plans.push(namespace::internet_label(&ctx, ns, needs));
    }
    if options.default_deny {
        for ns in &egress_namespaces {
            if *ns == SYSTEM_NAMESPACE {
                notes.push(format!(
                    "no {} in {ns}: isolating the cluster's system pods can break the cluster; add it by hand if you mean it",
                    naming::DEFAULT_DENY
                ));
                continue;
            }
            plans.push(namespace::default_deny(&ctx, ns));
        }
    }
    if options.with_ingress {
        plans.extend(ingress::ingress_plans(&ctx, flows, wanted, &mut warnings));
    }
    // Said whenever there is a recommendation at all: even one that allows no DNS yet depends on
    // knowing which flows are DNS.
    if let Some(why) = ctx.dns.unscoped.as_ref().filter(|_| !plans.is_empty()) {
        warnings.push(why.clone());
    }
    plans.sort_by(|a, b| (&a.namespace, rank(a), &a.name).cmp(&(&b.namespace, rank(b), &b.name)));
    notes.sort();
    warnings.sort();
    warnings.dedup();

    // Plans are consumed one by one so that plans and objects never all live at once.
    let documents = plans
        .into_iter()
        .map(|plan| match options.format {
            Format::Networkpolicy => networkpolicy::document(&plan),
            Format::Cilium => cilium::document(&ctx, &plan),
        })
        .collect();
    Recommendation {
        documents,
        notes,
        warnings,
    }
}
