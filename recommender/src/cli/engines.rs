//! The seam between the CLI and the synthesis and evaluator engines.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::policy::{Connection, PolicySet};
use crate::resolve::ResolvedFlow;
use crate::synth::Options;

/// The recommendation for `flows`, rendered as YAML.
pub fn recommend(
    cluster: &Cluster,
    flows: &[ResolvedFlow],
    options: &Options,
    notes: Vec<String>,
) -> Result<String, Error> {
    let mut recommendation = crate::synth::recommend(cluster, flows, options);
    recommendation.notes.extend(notes);
    Ok(crate::synth::render(&recommendation))
}

/// Judges connections against one set of policies, compiled once.
pub struct Evaluator {
    set: PolicySet,
}

/// Whether a connection is allowed, and the evaluator's one-line explanation, whose first word is
/// `allowed` or `denied`.
pub struct Judgement {
    pub allowed: bool,
    pub reason: String,
}

impl Evaluator {
    /// Fails (bad input) when the policies hold something the API server would reject: the
    /// evaluator would make it match nothing, and a verdict on such input misleads.
    pub fn new(policies: &[NetworkPolicy]) -> Result<Self, Error> {
        let set = PolicySet::new(policies);
        if !set.problems().is_empty() {
            return Err(Error::BadInput(format!(
                "invalid NetworkPolicies: {}",
                set.problems().join("; ")
            )));
        }
        Ok(Evaluator { set })
    }

    pub fn judge(&self, conn: &Connection) -> Judgement {
        let verdict = self.set.evaluate(conn);
        Judgement {
            allowed: verdict.allowed,
            reason: verdict.to_string(),
        }
    }
}
