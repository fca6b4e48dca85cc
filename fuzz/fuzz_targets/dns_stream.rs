//! Any bytes, cut into TCP pieces of DNS streams (sequence numbers, starts, lengths all chosen by
//! the input), through the agent's decoder and then expired: reassembly and parsing must never
//! panic, and what it holds stays within its bound.
#![no_main]

use std::time::{Duration, Instant};

use agent::dns::{DnsDecoder, Limits};
use agent::kernel::DnsAnswer;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_streams: 4,
    max_bytes: 4096,
    gap_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(60),
};

fuzz_target!(|data: &[u8]| {
    let mut decoder = DnsDecoder::new(LIMITS);
    let start = Instant::now();
    let mut rest = data;
    let mut seq: u32 = 0;
    let mut tick = 0u64;
    // Each piece: [stream+flags, seq step (2 bytes), length, pad], then `length` bytes of payload.
    while let [control, step_hi, step_lo, len, extra, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        seq = seq.wrapping_add(u32::from(u16::from_be_bytes([*step_hi, *step_lo])));
        tick += 1;
        let piece = DnsAnswer {
            cgroup_id: 7,
            family: agent_common::AF_INET,
            // Mostly TCP; now and then UDP or a transport the decoder does not know.
            transport: match control >> 6 {
                0 => agent_common::IPPROTO_UDP,
                3 => 132,
                _ => agent_common::IPPROTO_TCP,
            },
            wire_len: len as u32 + u32::from(*extra),
            socket_cookie: u64::from(control & 0x7),
            seq,
            flags: (control >> 3) & 1,
            payload: payload.to_vec(),
        };
        let _ = decoder.decode(&piece, start + Duration::from_millis(tick * 100));
        assert!(decoder.held_bytes() <= LIMITS.max_bytes);
        rest = after;
    }
    let _ = decoder.expire(start + Duration::from_secs(3600));
    assert_eq!(decoder.held_bytes(), 0);
});
