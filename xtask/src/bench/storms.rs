//! The storms and hostile pods of `agent/tests/storms.rs` at full size: the same root tests that
//! `cargo xtask test` runs at a size that fits CI, built in release and scaled up
//! (`EGRESS_STORM_SCALE`), each printing its measurements as a `STORM {json}` line.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::command;

pub fn run(scale: u32) -> Result<Value> {
    let mut child = command("cargo")
        .args(["test", "--release", "-p", "agent", "--test", "storms", "--"])
        .args(["--test-threads=1", "--nocapture", "--color", "never"])
        .env("EGRESS_STORM_SCALE", scale.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("running the storms")?;
    let mut results = serde_json::Map::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        eprintln!("{line}");
        // libtest prints the test's name on the same line, before what the test prints.
        if let Some(json) = line.find("STORM {").map(|at| &line[at + "STORM ".len()..]) {
            let v: Value = serde_json::from_str(json).context("a STORM line")?;
            let name = v["test"].as_str().unwrap_or("?").to_owned();
            results.insert(name, v);
        }
    }
    if !child.wait()?.success() {
        bail!("the storms failed (see above)");
    }
    Ok(Value::Object(results))
}
