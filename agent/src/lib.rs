//! The node agent: kernel programs in, FlowRecords out.

pub mod cgroup;
pub mod dns;
pub mod pods;
pub mod kernel;
