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

    /// Where pod metadata comes from without --pods-file: `api` watches this node's pods
    /// (`spec.nodeName` = the node name) through the Kubernetes API, configured from
    /// `KUBECONFIG`, `~/.kube/config` or the in-cluster service account; `none` reports pods by
    /// UID and container id only [default: `api` when running in a pod (`KUBERNETES_SERVICE_HOST`
    /// is set), `none` otherwise].
    #[arg(long, value_enum, conflicts_with = "pods_file")]
    pub pods_from: Option<PodsFrom>,

    /// Seconds a flow of a pod the API has not shown yet is held, waiting for the pod, before it
    /// is reported without pod metadata (and counted in `egress_agent_flows_unnamed_total`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub pod_wait: u64,

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

/// `--pods-from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PodsFrom {
    Api,
    None,
}

/// Where pod metadata comes from, all flags and the environment considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodMetadata {
    File(PathBuf),
    Api,
    None,
}

impl RunArgs {
    /// The pod metadata source in effect; `in_pod` is whether the agent runs in a pod (the
    /// kubelet sets `KUBERNETES_SERVICE_HOST` in every container).
    pub fn pod_metadata(&self, in_pod: bool) -> PodMetadata {
        match (&self.pods_file, self.pods_from) {
            (Some(file), _) => PodMetadata::File(file.clone()),
            (None, Some(PodsFrom::Api)) => PodMetadata::Api,
            (None, Some(PodsFrom::None)) => PodMetadata::None,
            (None, None) if in_pod => PodMetadata::Api,
            (None, None) => PodMetadata::None,
        }
    }

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
        assert_eq!(a.pods_from, None);
        assert_eq!(a.pod_wait, 30);
        assert_eq!(a.pod_metadata(false), PodMetadata::None);
        assert_eq!(a.pod_metadata(true), PodMetadata::Api);
    }

    #[test]
    fn pod_metadata_sources() {
        let a = run(&["--pods-file", "p.json"]).unwrap();
        assert_eq!(a.pod_metadata(true), PodMetadata::File("p.json".into()));
        let a = run(&["--pods-from", "api", "--pod-wait", "0"]).unwrap();
        assert_eq!(a.pod_metadata(false), PodMetadata::Api);
        assert_eq!(a.pod_wait, 0);
        let a = run(&["--pods-from", "none"]).unwrap();
        assert_eq!(a.pod_metadata(true), PodMetadata::None);
        for bad in [
            &["--pods-from", "api", "--pods-file", "p.json"][..],
            &["--pods-from", "file"],
            &["--pod-wait", "3601"],
        ] {
            assert_eq!(run(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
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
