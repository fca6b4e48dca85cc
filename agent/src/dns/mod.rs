//! DNS answers seen by the kernel programs: parsing (`parse`) and per-source memory (`cache`).

pub mod cache;
pub mod parse;

pub use cache::{DnsCache, DnsSource};
pub use parse::{parse_answer, Rejected, ResolvedAddr};
