//! cgroup v2: where the hierarchy is mounted, and which pod a cgroup belongs to.

pub mod mount;
pub mod path;
pub mod resolver;
pub mod subtree;
