//! Any text as a cgroup path: the parser must never panic, and what it returns is a pod UID in
//! API form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    if let Some(pod) = agent::cgroup::path::parse_pod_cgroup(&path) {
        assert!(!pod.pod_uid.is_empty());
        assert!(!pod.pod_uid.contains('/'));
    }
});
