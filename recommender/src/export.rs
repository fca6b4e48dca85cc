//! The YAML that `recommend`, `export` and `GET /v1/policies` print: the recommendation for a set
//! of learned edges, headed by what its policies do not cover. One function serves all three, so
//! the same traffic gives the same bytes whichever way it came (files, a store, the service).

use crate::cluster::Cluster;
use crate::resolve::ResolvedFlow;
use crate::synth::{self, Options};

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
}

/// The recommendation for `edges` (merged by [`crate::resolve::merge_edges`] or kept merged by a
/// store) as YAML, with `uncovered` as leading notes.
pub fn render(
    cluster: &Cluster,
    edges: &[ResolvedFlow],
    uncovered: &Uncovered,
    options: &Options,
) -> String {
    let mut recommendation = synth::recommend(cluster, edges, options);
    recommendation.notes.extend(uncovered_notes(uncovered));
    synth::render(&recommendation)
}

/// What the reader of the policies must know about the flows they do not cover: a caller that
/// could not be resolved gets no egress rule, and (with --with-ingress) is not among the callers
/// its destination's ingress policy admits.
fn uncovered_notes(uncovered: &Uncovered) -> Vec<String> {
    let mut out = Vec::new();
    let (host_records, notes) = (uncovered.host_records, &uncovered.notes);
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
