//! Command line (`agent run ...`). Bad flags are clap's errors (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Records every pod's egress connections and DNS answers."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the kernel programs and write FlowRecords until SIGTERM/SIGINT.
    Run(RunArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RunArgs {
    /// Node name written into every record [default: the host name].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Pod metadata: `kubectl get pods -o json|yaml` output (List, Pod, or multi-document YAML).
    /// Re-read when it changes.
    #[arg(long)]
    pub pods_file: Option<PathBuf>,

    /// Where FlowRecords go, as JSON lines: a file (appended to) or `-` for stdout [default: `-`
    /// without --recommender; with it, nowhere unless given].
    #[arg(long)]
    pub flows_out: Option<String>,

    /// The recommender's base URL (http:// or https://); batches go to `{URL}/v1/flows`.
    #[arg(long, requires = "token_file")]
    pub recommender: Option<String>,

    /// Bearer token for the recommender (a projected ServiceAccount token), read again whenever
    /// the file changes.
    #[arg(long, requires = "recommender")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificates trusted for an https:// recommender, besides the system's.
    #[arg(long, requires = "recommender")]
    pub ca_file: Option<PathBuf>,

    /// Directory of the spool of batches not yet delivered, kept across restarts (created if
    /// missing). Without it the spool is in memory and lost on exit.
    #[arg(long, requires = "recommender")]
    pub spool_dir: Option<PathBuf>,

    /// Bound of the spool, in bytes; past it, records wait merged in memory (bounded) and what
    /// still does not fit is dropped and counted.
    #[arg(
        long,
        default_value_t = 128 << 20,
        value_parser = clap::value_parser!(u64).range(65_536..)
    )]
    pub spool_max_bytes: u64,

    /// Seconds spent at SIGTERM delivering to the recommender; what is left stays in the spool.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace: u64,

    /// Report the connections that already exist when the agent starts (outcome `preexisting`);
    /// entering pods' network namespaces needs CAP_SYS_ADMIN.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub existing_connections: bool,

    /// The cgroup v2 directory to watch: the programs attach there instead of at the mount root,
    /// so only the processes of its subtree are seen (a nested kubelet's hierarchy, or one of
    /// several simulated nodes on one machine) [default: the cgroup v2 mount].
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,

    /// Listen address of /metrics and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Seconds between two reads of the flow table (and hand-offs of records).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flush_interval: u64,
}

impl RunArgs {
    /// The `--flows-out` target in effect: stdout by default, none when shipping to a recommender
    /// without one.
    pub fn flows_out(&self) -> Option<&str> {
        match (&self.flows_out, &self.recommender) {
            (Some(target), _) => Some(target),
            (None, None) => Some("-"),
            (None, Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["agent", "run"].iter().chain(args))?;
        let Command::Run(a) = cli.command;
        Ok(a)
    }

    #[test]
    fn defaults() {
        let a = run(&[]).unwrap();
        assert_eq!(a.flows_out(), Some("-"));
        assert_eq!(a.metrics_addr, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(a.flush_interval, 5);
        assert_eq!(a.pods_file, None);
        assert_eq!(a.recommender, None);
        assert_eq!(a.spool_max_bytes, 128 << 20);
        assert_eq!(a.shutdown_grace, 20);
        assert!(a.existing_connections);
        assert_eq!(a.cgroup_root, None);
    }

    #[test]
    fn all_flags() {
        let a = run(&[
            "--node-name",
            "n1",
            "--pods-file",
            "p.json",
            "--flows-out",
            "f.jsonl",
            "--metrics-addr",
            "0.0.0.0:9000",
            "--flush-interval",
            "1",
            "--recommender",
            "https://r:8443",
            "--token-file",
            "/var/run/secrets/tokens/egress-recommender",
            "--ca-file",
            "ca.pem",
            "--spool-dir",
            "/var/lib/egress-agent/spool",
            "--spool-max-bytes",
            "1048576",
            "--shutdown-grace",
            "5",
            "--existing-connections",
            "false",
            "--cgroup-root",
            "/sys/fs/cgroup/node-a",
        ])
        .unwrap();
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.pods_file, Some(PathBuf::from("p.json")));
        assert_eq!(a.flush_interval, 1);
        assert_eq!(a.flows_out(), Some("f.jsonl"));
        assert_eq!(a.recommender.as_deref(), Some("https://r:8443"));
        assert_eq!(a.spool_max_bytes, 1 << 20);
        assert_eq!(a.shutdown_grace, 5);
        assert!(!a.existing_connections);
        assert_eq!(a.cgroup_root, Some(PathBuf::from("/sys/fs/cgroup/node-a")));
    }

    #[test]
    fn shipping_sends_nothing_to_stdout_unless_asked() {
        let a = run(&["--recommender", "http://r", "--token-file", "t"]).unwrap();
        assert_eq!(a.flows_out(), None);
        let a = run(&[
            "--recommender",
            "http://r",
            "--token-file",
            "t",
            "--flows-out",
            "-",
        ])
        .unwrap();
        assert_eq!(a.flows_out(), Some("-"));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["--mode", "learn"][..],
            &["--flush-interval", "0"],
            &["--flush-interval", "x"],
            &["--metrics-addr", "nope"],
            &["--unknown"],
            &["--recommender", "http://r"],
            &["--token-file", "t"],
            &["--spool-dir", "d"],
            &[
                "--recommender",
                "http://r",
                "--token-file",
                "t",
                "--spool-max-bytes",
                "10",
            ],
        ] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(Cli::try_parse_from(["agent"]).unwrap_err().exit_code(), 2);
    }
}
