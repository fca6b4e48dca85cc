//! egress-recommender: from observed egress flows and the cluster's state to least-privilege egress
//! NetworkPolicies, and a NetworkPolicy evaluator that proves them.
//!
//! - [`cluster`]: the cluster model, loaded from `kubectl get -o yaml|json` files.
//! - [`resolve`]: what each flow's destination is in that cluster (pod, Service backends, apiserver, node,
//!   external address).
//! - [`synth`]: one egress NetworkPolicy per source workload, rendered as deterministic YAML.
//! - [`policy`]: the NetworkPolicy evaluator behind `verify` and `evaluate`.
//! - [`export`]: the YAML of a recommendation from learned edges (`recommend`, `export`, the service).
//! - [`store`] and [`service`] (feature `service`): `recommender serve`, its durable store of edges,
//!   ingest, status, monitor mode.
//! - [`live`] (feature `live`): the cluster model followed with kube-rs watchers.

#[cfg(feature = "service")]
pub mod allocator;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod error;
pub mod export;
#[cfg(feature = "live")]
pub mod live;
pub mod policy;
pub mod resolve;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "service")]
pub mod store;
pub mod synth;

pub use error::Error;
