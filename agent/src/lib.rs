//! The node agent: kernel programs in, FlowRecords out.

pub mod cgroup;
pub mod clock;
pub mod dns;
pub mod flows;
pub mod http;
pub mod identity;
pub mod pipeline;
pub mod pods;
pub mod kernel;
pub mod metrics;
pub mod output;
