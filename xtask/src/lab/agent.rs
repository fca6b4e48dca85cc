//! The agent process of the lab: started, waited for (`/readyz`), stopped with SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Agent {
    child: Option<Child>,
}

impl Agent {
    pub fn start(
        binary: &Path,
        pods_file: &Path,
        flows: &Path,
        log: &Path,
        node: &str,
    ) -> Result<Agent> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["run", "--node-name", node, "--flush-interval", "1"])
            .arg("--pods-file")
            .arg(pods_file)
            .arg("--flows-out")
            .arg(flows)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if get(port, "/readyz").is_some_and(|r| r.split_whitespace().nth(1) == Some("200")) {
                return Ok(agent);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the agent did not become ready within 60 s; see {}",
            log.display()
        )
    }

    /// SIGTERM, then wait: the agent flushes every flow before it exits.
    pub fn stop(mut self) -> Result<()> {
        let mut child = self.child.take().expect("the agent runs until stopped");
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !matches!(signalled, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        Ok(())
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

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}
