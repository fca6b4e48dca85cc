//! `recommender recommend`: cluster + flows → egress policies (YAML on stdout).

use flow_model::SourceKind;

use super::{inputs, print, RecommendArgs};
use crate::error::Error;
use crate::export::{self, Uncovered};
use crate::resolve::{Edges, Resolver};
use crate::synth;

pub(super) fn run(args: &RecommendArgs) -> Result<i32, Error> {
    let cluster = inputs::cluster(&args.cluster)?;
    let records = inputs::flows(&args.flows)?;
    // Each merged record is resolved and folded into its edges as it is released, so records and
    // edges are never both held whole.
    let mut resolver = Resolver::new(&cluster);
    let mut edges = Edges::default();
    let mut uncovered = Uncovered::default();
    records.drain(|record| {
        // Node processes are outside NetworkPolicy's reach: one line says how many there were.
        if record.source.kind == SourceKind::Host {
            uncovered.host_records += 1;
            return;
        }
        let resolution = resolver.resolve(record);
        for flow in resolution.flows {
            edges.add(flow);
        }
        uncovered.notes.extend(resolution.notes);
        uncovered
            .warnings
            .extend(resolution.warnings.iter().map(ToString::to_string));
    });
    drop(resolver);
    for note in &uncovered.notes {
        tracing::warn!("{note}");
    }
    for warning in &uncovered.warnings {
        tracing::warn!("{warning}");
    }
    // Edges, as the service's store keeps them: the same traffic gives the same bytes either way.
    let edges = edges.into_vec();
    let recommendation =
        export::recommendation(&cluster, &edges, &uncovered, &args.synth.options());
    for warning in &recommendation.warnings {
        tracing::warn!("{warning}");
    }
    print(&synth::render(&recommendation))?;
    Ok(0)
}
