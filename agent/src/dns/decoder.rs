//! Captured DNS records in, parsed answers out: a UDP record is one answer; TCP records are pieces
//! of a stream, reassembled first (`tcp`).

use std::time::Instant;

use agent_common::{DNS_TRANSPORT_TCP, DNS_TRANSPORT_UDP};

use super::parse::{parse_message, parse_payload, Answer, Rejected};
use super::tcp::{Limits, StreamMessage, TcpStreams};
use crate::kernel::DnsAnswer;

/// One answer's outcome, for the cgroup of the socket that received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub cgroup_id: u64,
    pub result: Result<Answer, Rejected>,
}

/// Turns captured records into answers; holds the TCP streams in between.
#[derive(Debug)]
pub struct DnsDecoder {
    streams: TcpStreams,
}

impl DnsDecoder {
    pub fn new(limits: Limits) -> DnsDecoder {
        DnsDecoder {
            streams: TcpStreams::new(limits),
        }
    }

    /// The answers `record` completes (none for a piece of a TCP message still arriving).
    pub fn decode(&mut self, record: &DnsAnswer, now: Instant) -> Vec<Decoded> {
        match record.transport {
            DNS_TRANSPORT_TCP => parsed(self.streams.push(record, now)),
            DNS_TRANSPORT_UDP => vec![Decoded {
                cgroup_id: record.cgroup_id,
                result: parse_payload(record.transport, &record.payload, record.wire_len),
            }],
            other => vec![Decoded {
                cgroup_id: record.cgroup_id,
                result: Err(Rejected::Transport(other)),
            }],
        }
    }

    /// Answers cut short because their stream waited too long for a missing piece or went idle.
    pub fn expire(&mut self, now: Instant) -> Vec<Decoded> {
        parsed(self.streams.expire(now))
    }

    /// Bytes of TCP streams held, waiting for the rest of their messages.
    pub fn held_bytes(&self) -> usize {
        self.streams.held_bytes()
    }
}

fn parsed(messages: Vec<StreamMessage>) -> Vec<Decoded> {
    messages
        .into_iter()
        .map(|m| Decoded {
            cgroup_id: m.cgroup_id,
            result: parse_message(&m.bytes, m.complete),
        })
        .collect()
}
