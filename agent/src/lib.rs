//! The node agent: kernel programs in, FlowRecords out.
//!
//! `kernel` attaches the programs and reads their maps; `pipeline` turns kernel events and flow
//! tables into `FlowRecord`s with pod identity (`identity`, `pods`, `cgroup`) and DNS names (`dns`);
//! `run` wires it to the output, the metrics endpoint and the signals.

pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod flows;
pub mod http;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod pods;
pub mod preflight;
pub mod run;
