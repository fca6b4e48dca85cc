//! DNS answers seen by the kernel programs: TCP streams put back together (`tcp`), parsing
//! (`parse`), the two joined per captured record (`decoder`), and per-source memory (`cache`).

pub mod cache;
pub mod decoder;
pub mod parse;
pub mod tcp;

pub use cache::{DnsCache, DnsSource};
pub use decoder::{Decoded, DnsDecoder};
pub use parse::{parse_answer, parse_message, parse_payload, Answer, Rejected, ResolvedAddr};
pub use tcp::{Limits, TcpStreams};
