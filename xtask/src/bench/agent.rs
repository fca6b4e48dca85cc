//! The agent under measurement: the release binary, started per measured run and stopped with
//! SIGTERM (which flushes every flow), so that its records can be checked against the load.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::workspace_root;

pub struct Agent {
    child: Option<Child>,
    pub port: u16,
    pub flows: PathBuf,
}

impl Agent {
    /// Starts `target/release/agent`, writing to `dir/flows.jsonl` and `dir/agent.log`, and waits
    /// for `/readyz`.
    pub fn start(dir: &Path) -> Result<Agent> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let flows = dir.join("flows.jsonl");
        let _ = std::fs::remove_file(&flows);
        let child = Command::new(workspace_root().join("target/release/agent"))
            .args(["run", "--node-name", "bench-node", "--pods-from", "none"])
            .arg("--flows-out")
            .arg(&flows)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent {
            child: Some(child),
            port,
            flows,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if agent.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return Ok(agent);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the agent was not ready within 60 s; see {}",
            dir.join("agent.log").display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `GET path` on the metrics address: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// SIGTERM, then wait: every flow is written before the agent exits.
    pub fn stop(mut self) -> Result<PathBuf> {
        let mut child = self.child.take().expect("running until stopped");
        let pid = child.id().to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status();
        if !matches!(signalled, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        Ok(self.flows.clone())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of `count` over the records of `flows` from the pod `uid` to `port` over TCP.
pub fn counted(flows: &Path, uid: &str, port: u16) -> Result<u64> {
    let text =
        std::fs::read_to_string(flows).with_context(|| format!("reading {}", flows.display()))?;
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: not a record: {line}", flows.display()))?;
        let ours = r["source"]["uid"] == uid
            && r["destination"]["port"] == port
            && r["destination"]["protocol"] == "TCP";
        if ours {
            total += r["count"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}
