//! The node agent: kernel programs in, FlowRecords out.
//!
//! `kernel` attaches the programs and reads their maps; `pipeline` turns kernel events and flow
//! tables into `FlowRecord`s with pod identity (`identity`, `cgroup`; pod metadata from
//! `pod_source`: a pods file in `pods`, the API watch in `pods_api`, records waiting for their pod
//! in `held`) and DNS names (`dns`);
//! `existing` finds the connections open before the agent started; `output` hands records to
//! `--flows-out` and to `ship`, which delivers them to the recommender through a spool; `run` wires
//! it to the metrics endpoint and the signals.

pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod existing;
pub mod flows;
pub mod held;
pub mod http;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod pod_source;
pub mod pods;
#[cfg(feature = "api")]
pub mod pods_api;
pub mod preflight;
pub mod run;
pub mod ship;
