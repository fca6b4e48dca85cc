//! The agent binary under test, run as a child process, and a minimal HTTP client for its
//! metrics address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::pods::NODE_NAME;
use super::{die_with_parent, wait_for, ChildGuard};

/// A running agent; killed (SIGKILL) on drop if the test did not stop it.
pub struct Agent {
    child: ChildGuard,
    pub metrics_addr: SocketAddr,
    pub flows_out: PathBuf,
    log: PathBuf,
}

/// A free loopback port for the metrics address. Another process could take it between this call
/// and the agent's bind; the agent then fails to start, loudly, which is acceptable for a test.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The agent command with the common options; callers add or override.
pub fn agent_command(
    bin: &str,
    pods_file: &Path,
    flows_out: &Path,
    metrics: SocketAddr,
) -> Command {
    agent_command_on(bin, NODE_NAME, pods_file, flows_out, metrics)
}

/// [`agent_command`] for node `node`.
pub fn agent_command_on(
    bin: &str,
    node: &str,
    pods_file: &Path,
    flows_out: &Path,
    metrics: SocketAddr,
) -> Command {
    let mut cmd = base_command(bin, node, flows_out, metrics);
    cmd.arg("--pods-file").arg(pods_file);
    cmd
}

/// The agent command without a pod source; callers add one.
fn base_command(bin: &str, node: &str, flows_out: &Path, metrics: SocketAddr) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--node-name", node])
        .arg("--flows-out")
        .arg(flows_out)
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        // Flush each second so that records reach the file while the test runs, not only at exit.
        .args(["--flush-interval", "1"])
        .env("RUST_LOG", "info");
    cmd
}

impl Agent {
    /// Starts `bin run ...` with its log (stdout and stderr) in `dir/agent.log`.
    pub fn start(bin: &str, dir: &Path, pods_file: &Path) -> Agent {
        Agent::start_on(bin, dir, NODE_NAME, pods_file, &[], "info")
    }

    /// [`Agent::start`] for node `node`, with `extra` arguments and `RUST_LOG=log_filter`.
    pub fn start_on(
        bin: &str,
        dir: &Path,
        node: &str,
        pods_file: &Path,
        extra: &[std::ffi::OsString],
        log_filter: &str,
    ) -> Agent {
        Agent::spawn(dir, extra, log_filter, |flows_out, metrics| {
            agent_command_on(bin, node, pods_file, flows_out, metrics)
        })
    }

    /// The agent of node `node` with its pods from the API that `kubeconfig` names
    /// (`--pods-from api`), with `extra` arguments and `RUST_LOG=log_filter`.
    pub fn start_with_api(
        bin: &str,
        dir: &Path,
        node: &str,
        kubeconfig: &Path,
        extra: &[std::ffi::OsString],
        log_filter: &str,
    ) -> Agent {
        Agent::spawn(dir, extra, log_filter, |flows_out, metrics| {
            let mut cmd = base_command(bin, node, flows_out, metrics);
            cmd.args(["--pods-from", "api"])
                .env("KUBECONFIG", kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST");
            cmd
        })
    }

    fn spawn(
        dir: &Path,
        extra: &[std::ffi::OsString],
        log_filter: &str,
        command: impl FnOnce(&Path, SocketAddr) -> Command,
    ) -> Agent {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let flows_out = dir.join("flows.jsonl");
        let log = dir.join("agent.log");
        let log_file = std::fs::File::create(&log).expect("create agent log");
        let mut cmd = command(&flows_out, metrics_addr);
        cmd.args(extra).env("RUST_LOG", log_filter);
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Agent {
            child: ChildGuard {
                name: "agent".into(),
                child,
            },
            metrics_addr,
            flows_out,
            log,
        }
    }

    /// Waits (bounded) for `GET /readyz` to answer 200, failing at once if the agent exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let addr = self.metrics_addr;
        let mut polls = 0u32;
        wait_for("the agent's /readyz to answer 200", timeout, || {
            if let Ok(Some(status)) = self.child.child.try_wait() {
                panic!(
                    "the agent exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            polls += 1;
            // Each poll is a connect from the test process that the agent itself records; a slower
            // pace keeps that noise small.
            if polls % 4 != 1 {
                return None;
            }
            matches!(http_get(addr, "/readyz"), Some((200, _))).then_some(())
        });
    }

    /// The agent's process id (for its memory and CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_addr, path)
    }

    pub fn running(&mut self) -> bool {
        self.child.running()
    }

    /// SIGTERM, then wait (bounded) for the exit; the agent flushes every flow on the way out.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.child.signal(libc::SIGTERM);
        wait_exit(&mut self.child.child, timeout).unwrap_or_else(|| {
            panic!(
                "the agent did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log_text()
            )
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` to its exit (killing it after `timeout`) and returns the status and all it printed.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> (ExitStatus, String) {
    let dir = super::TempDir::new(&format!("{}-out", super::unique_prefix()));
    let out = dir.path().join("out");
    let file = std::fs::File::create(&out).expect("create output file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut guard = ChildGuard {
        name: "agent".into(),
        child,
    };
    let status = wait_exit(&mut guard.child, timeout);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("{cmd:?} still runs after {timeout:?}:\n{text}"));
    (status, text)
}

/// `GET path` over HTTP/1.0 (so the answer is never chunked and ends with the connection). `None`
/// when nothing answers yet.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Metric families the agent exports from the start (checked by prefix on `/metrics` lines).
pub const EXPECTED_METRICS: &[&str] = &[
    "egress_agent_flows_observed_total",
    "egress_agent_records_written_total",
    "egress_agent_events_lost_total",
    "egress_agent_flow_map_evictions_total",
    "egress_agent_flows_tracked",
    DNS_ANSWERS_METRIC,
    RELOAD_ERRORS_METRIC,
    "egress_agent_cgroups_unresolved_total",
    "egress_agent_flows_evicted_unreported_total",
    "egress_agent_udp_replies_skipped_total",
];

/// DNS answers the agent saw, labelled by `result` (`parsed` or `rejected`).
pub const DNS_ANSWERS_METRIC: &str = "egress_agent_dns_answers_total";

/// Failed reloads of the pods file.
pub const RELOAD_ERRORS_METRIC: &str = "egress_agent_pods_file_reload_errors_total";

/// The sum of the samples of `name` whose labels contain `label` (all samples for `""`), from a
/// Prometheus text exposition.
pub fn metric_sum(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether the agent's log says it rejected the new `pods_file` and kept the last good one.
pub fn logs_kept_last_good(log: &str, pods_file: &Path) -> bool {
    let file = pods_file.display().to_string();
    log.lines()
        .any(|l| l.contains(&file) && l.to_lowercase().contains("last good"))
}

/// Whether the agent's log says it loaded a new version of `pods_file`.
pub fn logs_reloaded(log: &str, pods_file: &Path) -> bool {
    let file = pods_file.display().to_string();
    log.lines()
        .any(|l| l.contains(&file) && l.contains("reloaded the pods file"))
}
