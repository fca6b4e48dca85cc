//! Any bytes as the agent's pods file: parsing must end in pods or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pods) = agent::pods::parse_pods(text, "fuzz.yaml") {
        for pod in pods {
            assert!(!pod.uid.is_empty());
        }
    }
});
