//! Any bytes as a recommender cluster file (`--cluster`, `--policies`): loading must end in the
//! model or an error, never a panic, and quickly even for deep or alias-heavy YAML.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use recommender::cluster::Cluster;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut cluster = Cluster::default();
    let mut notes = Vec::new();
    let _ = cluster.add_text(text, Path::new("fuzz.yaml"), &mut notes);
});
