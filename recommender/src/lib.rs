//! egress-recommender: from observed egress flows and the cluster's state to least-privilege egress
//! NetworkPolicies, and a NetworkPolicy evaluator that proves them.
//!
//! - [`cluster`]: the cluster model, loaded from `kubectl get -o yaml|json` files.
//! - [`resolve`]: what each flow's destination is in that cluster (pod, Service backends, apiserver, node,
//!   external address).
//! - [`synth`]: one egress NetworkPolicy per source workload, rendered as deterministic YAML.
//! - [`policy`]: the NetworkPolicy evaluator behind `verify` and `evaluate`.

#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod error;
pub mod policy;
pub mod resolve;
pub mod synth;

pub use error::Error;
