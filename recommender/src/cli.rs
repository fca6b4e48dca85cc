//! Command line of the `recommender` binary (`docs/architecture.md`, "Contracts").
//!
//! Exit codes: 0 success (`verify`: nothing denied; `evaluate`: allowed), 1 a negative answer
//! (`verify`: some flow denied; `evaluate`: denied), 2 usage or bad input, with one line
//! `error: ...` on stderr. Notes (objects or flows skipped, and why) go to stderr as log lines
//! (`RUST_LOG` adjusts them; default `warn`).
//!
//! One file per command: `recommend`, `verify`, `evaluate`, `serve`, `export`, `status`; `inputs`
//! reads the files every command shares. The commands call the library (`resolve`, `synth`, `policy::Evaluator`) and map its
//! errors to exit codes here, at the edge.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::service::query::parse_cidr_prefix;
use crate::synth::{Format, InternetEgress, Options};

mod evaluate;
mod export;
mod inputs;
mod recommend;
mod serve;
mod status;
mod verify;

/// Learns each workload's egress from observed flows and writes least-privilege NetworkPolicies.
#[derive(Debug, Parser)]
#[command(name = "recommender", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recommend egress policies for the observed flows (YAML on stdout).
    Recommend(RecommendArgs),
    /// List the flows that the policies deny; exit 0 only if none.
    Verify(VerifyArgs),
    /// Judge one connection: prints `allowed` or `denied`, then why; exit 0 allowed, 1 denied.
    Evaluate(EvaluateArgs),
    /// Run the service agents ship flows to: durable ingest, policies, status, monitor mode.
    Serve(Box<serve::ServeArgs>),
    /// Write the policies learned by a service (--server) or kept in its store (--store).
    Export(export::ExportArgs),
    /// Show each workload's learning state, from a service (--server) or its store (--store).
    Status(status::StatusArgs),
}

/// Cluster snapshot files: `kubectl get ... -o yaml|json`, Lists or multi-document YAML.
#[derive(Debug, Args)]
struct ClusterArgs {
    #[arg(long = "cluster", value_name = "FILE", num_args = 1.., required_unless_present = "live", conflicts_with = "live")]
    files: Vec<PathBuf>,
    /// Read the live cluster once instead (kubeconfig or in-cluster): every kind the model holds,
    /// listed by the same watchers `serve` uses.
    #[arg(long)]
    live: bool,
    /// The cluster's Service range (the API server's --service-cluster-ip-range; repeat for
    /// dual-stack). A destination inside it that no Service has is refused rather than made an
    /// ipBlock that could never match. Default: inferred from the Services' ClusterIPs.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    service_cidrs: Vec<ipnet::IpNet>,
}

#[derive(Debug, Args)]
struct RecommendArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// FlowRecord files, JSON lines (`-` for stdin).
    #[arg(long = "flows", value_name = "FILE", num_args = 1.., required = true)]
    flows: Vec<PathBuf>,
    #[command(flatten)]
    synth: SynthArgs,
}

/// What policies to write: the options of `recommend`, shared by `export` and by `serve` (for
/// the baseline it freezes in monitor mode); `GET /v1/policies` takes them as query parameters
/// of the same names.
#[derive(Debug, Args)]
struct SynthArgs {
    /// Only policies for these namespaces (default: all).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Add a per-namespace default-deny-all-egress that still allows DNS to the cluster DNS pods.
    #[arg(long)]
    default_deny: bool,
    /// Add the complementary ingress policies for in-cluster destinations.
    #[arg(long)]
    with_ingress: bool,
    /// With --with-ingress, also for shared cluster services (cluster DNS).
    #[arg(long)]
    ingress_for_cluster_services: bool,
    /// networkpolicy (networking.k8s.io/v1) or cilium (cilium.io/v2, with toFQDNs).
    #[arg(long, default_value = "networkpolicy", value_parser = format_parser())]
    format: Format,
    /// Widen external addresses to these prefix lengths: `V4` or `V4,V6` (e.g. `24` or `24,56`).
    /// Deliberate widening: the policy then allows addresses nobody was seen to call.
    #[arg(long, value_name = "V4[,V6]", value_parser = parse_cidr_prefix)]
    cidr_prefix: Option<(u8, Option<u8>)>,
    /// Widen external IPv4 addresses to this prefix length (overrides --cidr-prefix).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=32))]
    cidr_prefix_v4: Option<u8>,
    /// Widen external IPv6 addresses to this prefix length (overrides --cidr-prefix).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=128))]
    cidr_prefix_v6: Option<u8>,
    /// Widen to the internet past N external addresses. Off unless given (no cap): every external
    /// address a workload reached stays its own ipBlock. With a cap, a workload that reached more
    /// than N gets internet egress instead (0.0.0.0/0 and ::/0 less the cluster's ranges, for only
    /// the address families it was seen using) on the ports it used, and a warning on stderr.
    #[arg(long, value_name = "N")]
    max_external_peers: Option<usize>,
    /// How a workload over --max-external-peers (when given) gets internet egress: cidr (0.0.0.0/0
    /// less the cluster) or label (a namespace policy for pods labelled
    /// networking/allow-internet-egress).
    #[arg(long, value_parser = internet_egress_parser())]
    internet_egress: Option<InternetEgress>,
    /// Pod and Service ranges kept out of internet egress (default: derived from the cluster).
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    cluster_cidrs: Vec<ipnet::IpNet>,
}

impl SynthArgs {
    fn options(&self) -> Options {
        let defaults = Options::default();
        Options {
            namespaces: self.namespaces.clone(),
            default_deny: self.default_deny,
            with_ingress: self.with_ingress,
            ingress_for_cluster_services: self.ingress_for_cluster_services,
            format: self.format,
            cidr_prefix_v4: self.cidr_prefix_v4.or(self.cidr_prefix.map(|(v4, _)| v4)),
            cidr_prefix_v6: self
                .cidr_prefix_v6
                .or(self.cidr_prefix.and_then(|(_, v6)| v6)),
            max_external_peers: self.max_external_peers.or(defaults.max_external_peers),
            internet_egress: self.internet_egress.unwrap_or(defaults.internet_egress),
            cluster_cidrs: self.cluster_cidrs.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// FlowRecord files, JSON lines (`-` for stdin).
    #[arg(long = "flows", value_name = "FILE", num_args = 1.., required = true)]
    flows: Vec<PathBuf>,
    /// NetworkPolicy files; they replace the cluster files' policies of the same namespace/name.
    #[arg(long = "policies", value_name = "FILE", num_args = 1.., required = true)]
    policies: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// NetworkPolicy files; they replace the cluster files' policies of the same namespace/name.
    #[arg(long = "policies", value_name = "FILE", num_args = 1..)]
    policies: Vec<PathBuf>,
    /// The client: NAMESPACE/POD or an IP address.
    #[arg(long, value_name = "NS/POD|IP")]
    from: String,
    /// The server: NAMESPACE/POD or an IP address (a ClusterIP goes through its Service).
    #[arg(long, value_name = "NS/POD|IP")]
    to: String,
    #[arg(long, value_name = "N")]
    port: u16,
    /// TCP (default), UDP or SCTP.
    #[arg(long, value_name = "P", default_value = "TCP")]
    protocol: String,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help and version: stdout, success.
            let _ = e.print();
            return 0;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return 2;
        }
        Err(e) => {
            // clap spreads some errors over several lines; keep the `error:` one line, then the
            // usage hint.
            let text = e.render().to_string();
            let (message, hint) = text.split_once("\n\n").unwrap_or((&text, ""));
            eprintln!(
                "{}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            if !hint.is_empty() {
                eprintln!("\n{}", hint.trim_end());
            }
            return 2;
        }
    };
    init_logging(matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Recommend(args) => recommend::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Export(args) => export::run(&args),
        Command::Status(args) => status::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the underlying parser put in its message.
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            2
        }
    }
}

/// Logs on stderr: notes only (`warn`) for the one-shot commands, `info` with times for `serve`.
fn init_logging(daemon: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if daemon {
        builder.try_init()
    } else {
        builder.without_time().try_init()
    };
}

/// `--token-file`: the first token of the file (one per line).
fn read_token(path: &std::path::Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::BadInput(format!("--token-file {}: no token in it", path.display())))
}

/// A duration flag: `90s`, `10m`, `2h30m`, `1d` (jiff's friendly format) or ISO 8601 (`PT10M`).
fn parse_duration(value: &str) -> Result<jiff::SignedDuration, String> {
    let d: jiff::SignedDuration = match value.parse() {
        Ok(d) => d,
        Err(_) => value
            .parse::<jiff::Span>()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
            .map_err(|e| format!("{value:?} is not a duration (e.g. 90s, 10m, 2h): {e}"))?,
    };
    if d.is_negative() || d.is_zero() {
        return Err(format!("{value:?}: a duration must be positive"));
    }
    Ok(d)
}

/// A single-threaded or multi-threaded runtime for the commands that talk HTTP or serve.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::BadInput(format!("cannot start the async runtime: {e}")))
}

/// Writes command output to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(Error::Io {
            path: "stdout".into(),
            source,
        }),
    }
}

/// `--format`: the library's formats by name (the library itself knows nothing of clap).
fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(Format::NAMES).map(|name| name.parse().expect("one of NAMES"))
}

fn internet_egress_parser() -> impl TypedValueParser<Value = InternetEgress> {
    PossibleValuesParser::new(InternetEgress::NAMES).map(|name| name.parse().expect("one of NAMES"))
}
