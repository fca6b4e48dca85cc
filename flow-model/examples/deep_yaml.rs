//! What deep YAML costs: serde_yaml alone (the reader before `documents`) against
//! `flow_model::documents::parse`, for nested sequences N deep. See BENCHMARKS.md.
//!
//! `cargo run -p flow-model --example deep_yaml -- 1000 2500 5000 10000 100000`
//! (serde_yaml alone is skipped past 20,000: it takes minutes).

use std::time::Instant;

use serde::Deserialize;

fn main() {
    let depths: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a depth"))
        .collect();
    println!("| depth | serde_yaml alone | documents::parse |");
    println!("| --- | --- | --- |");
    for depth in depths {
        let text = format!("items: {}\n", "[".repeat(depth));
        let alone = if depth <= 20_000 {
            let start = Instant::now();
            let result = serde_json::Value::deserialize(serde_yaml::Deserializer::from_str(&text));
            assert!(result.is_err());
            format!("{:.3} s", start.elapsed().as_secs_f64())
        } else {
            "(not run)".to_owned()
        };
        let start = Instant::now();
        let refused = flow_model::documents::parse(&text, "deep.yaml").unwrap_err();
        let ours = start.elapsed();
        println!(
            "| {depth} | {alone} | {:.3} ms ({}) |",
            ours.as_secs_f64() * 1000.0,
            refused.problem
        );
    }
}
