//! The node agent: kernel programs in, FlowRecords out.
//!
//! `kernel` attaches the programs and reads their maps; `pipeline` turns kernel events and flow
//! tables into `FlowRecord`s with pod identity (`identity`, `pods`, `cgroup`) and DNS names (`dns`);
//! `existing` finds the connections open before the agent started; `output` hands records to
//! `--flows-out` and to `ship`, which delivers them to the recommender through a spool; `run` wires
//! it to the metrics endpoint and the signals.

pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod existing;
pub mod flows;
pub mod http;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod pods;
pub mod run;
pub mod ship;
