//! Reading a full flow table (65,536 entries) in the release build: by batch, as the agent does,
//! and entry by entry, as before (`agent --example snapshot_cost`).

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::workspace_root;

pub fn run() -> Result<Value> {
    let out =
        std::process::Command::new(workspace_root().join("target/release/examples/snapshot_cost"))
            .output()
            .context("running snapshot_cost")?;
    if !out.status.success() {
        bail!(
            "snapshot_cost failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("snapshot_cost output")
}
