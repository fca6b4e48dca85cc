//! The seam between the CLI and the synthesis and evaluator engines, which are developed on their
//! own branches: each call is one function here, so that wiring them in is a one-line change.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::policy::Connection;
use crate::resolve::ResolvedFlow;
use crate::synth::Options;

/// The recommendation for `flows`, rendered as YAML.
pub fn recommend(
    cluster: &Cluster,
    flows: &[ResolvedFlow],
    options: &Options,
) -> Result<String, Error> {
    // Once merged: Ok(crate::synth::render(&crate::synth::recommend(cluster, flows, options)))
    let _ = (cluster, flows, options);
    Err(Error::Unavailable(
        "policy synthesis (recommender::synth::recommend)",
    ))
}

/// Judges connections against one set of policies.
pub struct Evaluator<'p> {
    policies: &'p [NetworkPolicy],
}

/// Whether a connection is allowed, and the evaluator's one-line explanation, whose first word is
/// `allowed` or `denied`.
pub struct Judgement {
    pub allowed: bool,
    pub reason: String,
}

impl<'p> Evaluator<'p> {
    /// Fails (bad input) when the policies hold something the API server would reject.
    pub fn new(policies: &'p [NetworkPolicy]) -> Result<Self, Error> {
        Ok(Evaluator { policies })
    }

    pub fn judge(&self, conn: &Connection) -> Result<Judgement, Error> {
        // Once merged:
        // let v = crate::policy::evaluate(self.policies, conn);
        // Ok(Judgement { allowed: v.allowed, reason: v.to_string() })
        let _ = (self.policies, conn);
        Err(Error::Unavailable(
            "the NetworkPolicy evaluator (recommender::policy::evaluate)",
        ))
    }
}
