//! Any bytes, as a DNS answer over UDP and over TCP, cut or not: parsing must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte decides how much longer the "wire" was than the capture.
    let (extra, payload) = match data.split_first() {
        Some((&extra, rest)) => (u32::from(extra), rest),
        None => (0, data),
    };
    let wire_len = payload.len() as u32 + extra;
    for transport in [agent_common_transports::UDP, agent_common_transports::TCP] {
        let _ = agent::dns::parse_answer(transport, payload, wire_len);
    }
});

mod agent_common_transports {
    pub const UDP: u8 = 17;
    pub const TCP: u8 = 6;
}
