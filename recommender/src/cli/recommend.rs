//! `recommender recommend`: cluster + flows → egress policies (YAML on stdout).

use flow_model::SourceKind;

use super::{inputs, print, RecommendArgs};
use crate::error::Error;
use crate::export::{self, Uncovered};
use crate::resolve::{merge_edges, resolve_all};
use crate::synth;

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
    let uncovered = Uncovered {
        host_records: host.len(),
        notes: resolution.notes,
        warnings: resolution
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let recommendation =
        export::recommendation(&cluster, &edges, &uncovered, &args.synth.options());
    for warning in &recommendation.warnings {
        tracing::warn!("{warning}");
    }
    print(&synth::render(&recommendation))?;
    Ok(0)
}
