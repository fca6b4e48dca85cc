//! The lab's two daemons, as a cluster runs them: the agent (the DaemonSet's pod on the node)
//! shipping to `recommender serve` (the Deployment) over the authenticated ingest path. Both are
//! started in their own process group and recorded in the [`Lab`], waited for on their
//! `/readyz`, and stopped with SIGTERM (the agent flushes every flow, the service every batch).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::state::{self, Lab};

/// A daemon of the lab.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    what: &'static str,
}

/// A free port on the loopback, for a daemon to listen on.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Daemon {
    /// Starts `cmd`, whose `/readyz` answers on `port` once it is ready.
    pub fn start(
        lab: &mut Lab,
        mut cmd: Command,
        what: &'static str,
        port: u16,
        log: &Path,
    ) -> Result<Daemon> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        lab.add_proc(child.id(), what)?;
        let mut daemon = Daemon {
            child,
            log: log.to_owned(),
            what,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if get(port, "/readyz", None).is_some_and(|(status, _)| status == 200) {
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!("the {what} exited ({status}); see {}", log.display());
            }
            state::sleep(Duration::from_millis(100))?;
        }
        bail!(
            "the {what} was not ready within 60 s; see {}",
            log.display()
        )
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self, lab: &mut Lab) -> Result<()> {
        // SAFETY: kill has no memory preconditions; the child is ours and not yet waited for.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} did not stop within 30 s; see {}",
                    self.what,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        lab.stop_proc(self.child.id(), Duration::ZERO)?;
        if !status.success() {
            bail!(
                "the {} exited with {status}; see {}",
                self.what,
                self.log.display()
            );
        }
        Ok(())
    }
}

/// A plain HTTP/1.0 GET on the loopback: (status, body).
pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: lab\r\n{auth}\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
