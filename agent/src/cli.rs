//! Command line (`agent run ...`). Bad flags are clap's errors (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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

    /// Where FlowRecords go, as JSON lines: a file (appended to) or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub flows_out: String,

    /// Recommender ingest URL. Not implemented by this agent build: records go to --flows-out.
    #[arg(long)]
    pub recommender: Option<String>,

    /// Listen address of /metrics and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// learn or monitor; the agent reports the same flows in both (evaluation is the recommender's).
    #[arg(long, value_enum, default_value_t = Mode::Learn)]
    pub mode: Mode,

    /// Seconds between two reads of the flow table (and writes of records).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flush_interval: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Learn,
    Monitor,
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
        assert_eq!(a.flows_out, "-");
        assert_eq!(a.metrics_addr, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(a.mode, Mode::Learn);
        assert_eq!(a.flush_interval, 5);
        assert_eq!(a.pods_file, None);
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
            "--mode",
            "monitor",
            "--flush-interval",
            "1",
        ])
        .unwrap();
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.pods_file, Some(PathBuf::from("p.json")));
        assert_eq!(a.mode, Mode::Monitor);
        assert_eq!(a.flush_interval, 1);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["--mode", "enforce"][..],
            &["--flush-interval", "0"],
            &["--flush-interval", "x"],
            &["--metrics-addr", "nope"],
            &["--unknown"],
        ] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(Cli::try_parse_from(["agent"]).unwrap_err().exit_code(), 2);
    }
}
