//! `recommender verify`: every observed flow, through Services as the kernel sends it, judged
//! against the policies; one line per denied connection on stdout.

use super::{inputs, print, VerifyArgs};
use crate::error::Error;
use crate::policy::Evaluator;
use crate::resolve::{describe, Resolver};

pub(super) fn run(args: &VerifyArgs) -> Result<i32, Error> {
    let cluster = inputs::cluster(&args.cluster)?;
    let records = inputs::flows(&args.flows)?;
    let flows = records.len();
    let policies = inputs::policies(&cluster, &args.policies)?;
    let evaluator = Evaluator::new(&policies)?;
    let (mut checked, mut skipped) = (0usize, 0usize);
    let mut denied = Vec::new();
    let mut resolver = Resolver::new(&cluster);
    records.drain(|record| {
        let connections = resolver.connections_for(record);
        for note in &connections.notes {
            tracing::warn!("{note}");
        }
        if connections.connections.is_empty() {
            skipped += 1;
        }
        let via = connections
            .service
            .as_ref()
            .map(|s| format!(" via Service {s}"))
            .unwrap_or_default();
        for connection in &connections.connections {
            checked += 1;
            let judgement = evaluator.judge(connection);
            if !judgement.allowed {
                denied.push(format!("{}{via}: {}\n", describe(record), judgement.reason));
            }
        }
    });
    print(&denied.concat())?;
    eprintln!(
        "verify: {} flows, {checked} connections checked, {} denied, {skipped} flows skipped",
        flows,
        denied.len()
    );
    Ok(if denied.is_empty() { 0 } else { 1 })
}
