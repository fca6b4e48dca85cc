//! `recommender recommend`: cluster + flows → egress policies (YAML on stdout).

use flow_model::SourceKind;

use super::{inputs, print, RecommendArgs};
use crate::error::Error;
use crate::resolve::{merge_edges, resolve_all};
use crate::synth::{self, Options};

/// At most this many resolution notes are repeated in the YAML; all of them are logged.
const NOTES_IN_OUTPUT: usize = 20;

pub(super) fn run(args: &RecommendArgs) -> Result<i32, Error> {
    let cluster = inputs::cluster(&args.cluster)?;
    let records = inputs::flows(&args.flows)?;
    // Node processes are outside NetworkPolicy's reach: one line says how many there were.
    let (host, pods): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r.source.kind == SourceKind::Host);
    let resolution = resolve_all(&cluster, pods);
    for note in &resolution.notes {
        tracing::warn!("{note}");
    }
    for warning in &resolution.warnings {
        tracing::warn!("{warning}");
    }
    // Edges, as the service's store keeps them: the same traffic gives the same bytes either way.
    let edges = merge_edges(resolution.flows);
    let mut recommendation = synth::recommend(&cluster, &edges, &options(args));
    for warning in &recommendation.warnings {
        tracing::warn!("{warning}");
    }
    let warnings: Vec<String> = resolution
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    recommendation
        .notes
        .extend(output_notes(host.len(), &resolution.notes, &warnings));
    print(&synth::render(&recommendation))?;
    Ok(0)
}

/// What the reader of the policies must know about the flows they do not cover: a caller that
/// could not be resolved gets no egress rule, and (with --with-ingress) is not among the callers
/// its destination's ingress policy admits.
fn output_notes(host_records: usize, notes: &[String], warnings: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if !warnings.is_empty() {
        out.push(format!(
            "{} destinations need a second look (their rule may not do what it seems){}:",
            warnings.len(),
            if warnings.len() > NOTES_IN_OUTPUT {
                format!("; the first {NOTES_IN_OUTPUT}, all are on stderr")
            } else {
                String::new()
            }
        ));
        out.extend(
            warnings
                .iter()
                .take(NOTES_IN_OUTPUT)
                .map(|n| format!("  {n}")),
        );
    }
    if host_records > 0 {
        out.push(format!(
            "{host_records} flow records of node processes skipped: NetworkPolicy does not apply to them"
        ));
    }
    if !notes.is_empty() {
        out.push(format!(
            "{} flow records are not covered by these policies (could not be resolved){}:",
            notes.len(),
            if notes.len() > NOTES_IN_OUTPUT {
                format!("; the first {NOTES_IN_OUTPUT}, all are on stderr")
            } else {
                String::new()
            }
        ));
        out.extend(notes.iter().take(NOTES_IN_OUTPUT).map(|n| format!("  {n}")));
    }
    out
}

fn options(args: &RecommendArgs) -> Options {
    let defaults = Options::default();
    Options {
        namespaces: args.namespaces.clone(),
        default_deny: args.default_deny,
        with_ingress: args.with_ingress,
        ingress_for_cluster_services: args.ingress_for_cluster_services,
        format: args.format,
        cidr_prefix_v4: args.cidr_prefix_v4.or(args.cidr_prefix.map(|(v4, _)| v4)),
        cidr_prefix_v6: args
            .cidr_prefix_v6
            .or(args.cidr_prefix.and_then(|(_, v6)| v6)),
        max_external_peers: args.max_external_peers.or(defaults.max_external_peers),
        internet_egress: args.internet_egress.unwrap_or(defaults.internet_egress),
        cluster_cidrs: args.cluster_cidrs.clone(),
    }
}
