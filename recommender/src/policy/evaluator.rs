//! [`Evaluator`]: one set of policies, checked and compiled once, judging any number of
//! connections. `verify`, `evaluate` and monitor mode all judge through it.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{Connection, PolicySet};

/// Judges connections against one set of policies, compiled once.
pub struct Evaluator {
    set: PolicySet,
}

/// Whether a connection is allowed, and the evaluator's one-line explanation, whose first word is
/// `allowed` or `denied`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub allowed: bool,
    pub reason: String,
}

/// Policies the API server would reject: the evaluator would make them match nothing, and a
/// verdict on such input misleads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid NetworkPolicies: {}", .0.join("; "))]
pub struct InvalidPolicies(pub Vec<String>);

impl Evaluator {
    pub fn new(policies: &[NetworkPolicy]) -> Result<Self, InvalidPolicies> {
        let set = PolicySet::new(policies);
        if !set.problems().is_empty() {
            return Err(InvalidPolicies(set.problems().to_vec()));
        }
        Ok(Evaluator { set })
    }

    /// The verdict with its explanation (allocates the explanation).
    pub fn judge(&self, conn: &Connection) -> Judgement {
        let verdict = self.set.evaluate(conn);
        Judgement {
            allowed: verdict.allowed,
            reason: verdict.to_string(),
        }
    }

    /// Only whether `conn` is allowed, without allocating: the hot path of monitor mode.
    pub fn allows(&self, conn: &Connection) -> bool {
        self.set.allows(conn)
    }

    /// The compiled policies, for callers that need more than a verdict.
    pub fn policy_set(&self) -> &PolicySet {
        &self.set
    }
}
