//! The YAML that `recommend`, `export` and `GET /v1/policies` print: the recommendation for a set
//! of learned edges, headed by what its policies do not cover. One function serves all three, so
//! the same traffic gives the same bytes whichever way it came (files, a store, the service).

use crate::cluster::Cluster;
use crate::resolve::ResolvedFlow;
use crate::synth::{self, Options, Recommendation};

/// At most this many resolution notes are repeated in the YAML; all of them are logged (and, in
/// the service, listed by `GET /v1/status`).
pub const NOTES_IN_OUTPUT: usize = 20;

/// What the flows behind a recommendation held that its policies do not cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uncovered {
    /// Distinct flows (by `FlowRecord::key`) of node processes: NetworkPolicy does not apply.
    pub host_records: usize,
    /// The resolution notes of the pod flows, one line each, in flow key order.
    pub notes: Vec<String>,
    /// The resolution warnings (flows whose rule needs a second look), one line each, in the
    /// order of the first flow (by key) that reached each destination.
    pub warnings: Vec<String>,
}

/// The recommendation for `edges` (merged by [`crate::resolve::merge_edges`] or kept merged by a
/// store), with `uncovered` as leading notes.
pub fn recommendation(
    cluster: &Cluster,
    edges: &[ResolvedFlow],
    uncovered: &Uncovered,
    options: &Options,
) -> Recommendation {
    let mut recommendation = synth::recommend(cluster, edges, options);
    recommendation.notes.extend(uncovered_notes(uncovered));
    recommendation
}

/// [`recommendation`] as YAML.
pub fn render(
    cluster: &Cluster,
    edges: &[ResolvedFlow],
    uncovered: &Uncovered,
    options: &Options,
) -> String {
    synth::render(&recommendation(cluster, edges, uncovered, options))
}

/// What the reader of the policies must know about the flows they do not cover: a caller that
/// could not be resolved gets no egress rule, and (with --with-ingress) is not among the callers
/// its destination's ingress policy admits.
fn uncovered_notes(uncovered: &Uncovered) -> Vec<String> {
    let mut out = Vec::new();
    let (host_records, notes, warnings) = (
        uncovered.host_records,
        &uncovered.notes,
        &uncovered.warnings,
    );
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
