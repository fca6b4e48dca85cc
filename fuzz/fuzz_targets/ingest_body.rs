//! Any bytes as the body of `POST /v1/flows`, plain and as gzip: decoding must end in records or
//! an error naming a line, within the size bound, never a panic.
#![no_main]

use flow_model::batch::{decode, Encoding};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Identity, Encoding::Gzip] {
        if let Ok(records) = decode(data, encoding, LIMIT, "fuzz") {
            for record in &records {
                assert!(record.check().is_ok());
            }
        }
    }
});
