//! `recommender serve`: the service agents ship flows to (see `crate::service`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::{parse_duration, runtime, SynthArgs};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::service::auth::{Authenticator, TokenFile};
use crate::service::learning::Thresholds;
use crate::service::metrics::Metrics;
use crate::service::model::SnapshotFiles;
use crate::service::token_review::{service_account_user, ReviewPolicy, TokenReviewer};
use crate::service::{Baseline, Config, Limits, Service};
use crate::store::EmbeddedStore;
use crate::synth::Format;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Learn edges.
    Learn,
    /// Learn edges, and judge every flow against the baseline: count what it denies.
    Monitor,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`0.0.0.0:8443`, `127.0.0.1:0`).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The store file (redb; created when absent). `kubernetes` (custom resources, for HA) is
    /// not in this version.
    #[arg(long, value_name = "PATH")]
    store: PathBuf,
    /// Cluster snapshot files (`kubectl get ... -o yaml|json`). Required for now: watching the
    /// live cluster without them is not in this version.
    #[arg(long = "cluster", value_name = "FILE", num_args = 1..)]
    cluster: Vec<PathBuf>,
    /// The cluster's Service range (as `recommend --service-cidr`; repeat for dual-stack).
    #[arg(long = "service-cidr", value_name = "CIDR")]
    service_cidrs: Vec<ipnet::IpNet>,
    /// The bearer tokens agents and readers must present, one per line (re-read when it changes).
    #[arg(long, value_name = "FILE", conflicts_with = "auth_service_accounts")]
    token_file: Option<PathBuf>,
    /// In a cluster: accept the ServiceAccount tokens of this account
    /// (`system:serviceaccount:NAMESPACE:NAME`; repeat for several), checked with the API's
    /// TokenReview (kubeconfig or the in-cluster config).
    #[arg(long = "auth-service-account", value_name = "USER", value_parser = service_account_user)]
    auth_service_accounts: Vec<String>,
    /// The audience the ServiceAccount tokens must have been issued for.
    #[arg(long, value_name = "AUDIENCE", default_value = "egress-recommender")]
    auth_audience: String,
    #[arg(long, value_enum, default_value = "learn")]
    mode: Mode,
    /// Monitor mode: the NetworkPolicy files to judge flows against (default: the recommendation
    /// for what the store holds at start, with the policy options below, frozen).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    baseline: Vec<PathBuf>,
    /// Largest request body, as sent.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Largest request body once decompressed (a gzip bomb stops here).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_decoded_bytes)]
    max_decoded_bytes: usize,
    /// Time a client has to send a request's headers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_timeout: jiff::SignedDuration,
    /// Time a client has to send a request's body.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    body_timeout: jiff::SignedDuration,
    /// A workload is learning while its last new edge is at most twice this old (Calico's
    /// `interval`).
    #[arg(long, value_name = "DURATION", default_value = "150s", value_parser = parse_duration)]
    processing_interval: jiff::SignedDuration,
    /// A workload is stable once its last new edge is older than this (Calico's
    /// `stabilizationPeriod`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    stabilization_period: jiff::SignedDuration,
    /// How long acknowledged batch ids are remembered, in time the service runs.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    batch_id_retention: jiff::SignedDuration,
    /// Most unresolved flows kept for status and the policies' notes (the rest are counted).
    #[arg(long, value_name = "N", default_value_t = Config::default().max_uncovered)]
    max_uncovered_flows: usize,
    /// Most recent unexpected flows kept for GET /v1/unexpected.
    #[arg(long, value_name = "N", default_value_t = Config::default().recent_unexpected)]
    recent_unexpected: usize,
    /// Options of the baseline frozen at start (monitor mode without --baseline).
    #[command(flatten)]
    synth: SynthArgs,
}

pub(super) fn run(args: ServeArgs) -> Result<i32, Error> {
    if args.store.as_os_str() == "kubernetes" {
        return Err(Error::BadInput(
            "--store kubernetes (the HA store on the Kubernetes API) is not in this version; give a file path".into(),
        ));
    }
    if args.cluster.is_empty() {
        return Err(Error::BadInput(
            "--cluster FILE... is required: watching the live cluster is not in this version"
                .into(),
        ));
    }
    if args.token_file.is_none() && args.auth_service_accounts.is_empty() {
        return Err(Error::BadInput(
            "--token-file FILE or --auth-service-account USER is required: agents authenticate with a bearer token".into(),
        ));
    }
    if args.mode == Mode::Learn && !args.baseline.is_empty() {
        return Err(Error::BadInput("--baseline needs --mode monitor".into()));
    }
    let baseline = match args.mode {
        Mode::Learn => Baseline::None,
        Mode::Monitor if !args.baseline.is_empty() => {
            let loaded = Cluster::load_files(&args.baseline)?.cluster;
            if loaded.network_policies.is_empty() {
                return Err(Error::BadInput(
                    "--baseline files hold no NetworkPolicy".into(),
                ));
            }
            Baseline::Policies(loaded.network_policies)
        }
        Mode::Monitor => {
            let options = args.synth.options();
            if options.format == Format::Cilium {
                return Err(Error::BadInput(
                    "the frozen baseline is judged as NetworkPolicies: --format cilium does not apply to serve".into(),
                ));
            }
            Baseline::Frozen(options)
        }
    };
    let token_file = match &args.token_file {
        Some(path) => Some(TokenFile::new(path).map_err(|e| Error::BadInput(e.to_string()))?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let store =
        EmbeddedStore::open_or_create(&args.store).map_err(|e| Error::Service(e.to_string()))?;
    let config = Config {
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_decoded_bytes: args.max_decoded_bytes,
            header_timeout: args.header_timeout.unsigned_abs(),
            body_timeout: args.body_timeout.unsigned_abs(),
        },
        thresholds: Thresholds {
            processing_interval: args.processing_interval,
            stabilization_period: args.stabilization_period,
        },
        batch_id_retention: args.batch_id_retention,
        max_uncovered: args.max_uncovered_flows,
        recent_unexpected: args.recent_unexpected,
        baseline,
    };
    let source = SnapshotFiles {
        files: args.cluster.clone(),
        service_cidrs: args.service_cidrs.clone(),
    };
    runtime()?.block_on(async move {
        let auth: Arc<dyn Authenticator> = match token_file {
            Some(file) => Arc::new(file),
            None => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    Error::Service(format!(
                        "--auth-service-account needs the Kubernetes API (kubeconfig or in-cluster): {e}"
                    ))
                })?;
                let policy = ReviewPolicy::new(
                    args.auth_service_accounts.iter().cloned().collect(),
                    args.auth_audience.clone(),
                );
                Arc::new(TokenReviewer::new(client, policy, Arc::clone(&metrics)))
            }
        };
        let service = Service::start(
            args.listen,
            config,
            Arc::new(store),
            &source,
            auth,
            metrics,
        )
        .await
        .map_err(|e| match e {
            crate::service::ServiceError::Cluster(e) => e,
            other => Error::Service(other.to_string()),
        })?;
        // The handlers are in place before anyone is told where to send traffic.
        let shutdown =
            shutdown_signal().map_err(|e| Error::Service(format!("cannot handle SIGTERM: {e}")))?;
        // Tests and scripts that listen on port 0 read the address from here.
        eprintln!("recommender: listening on {}", service.local_addr());
        service.run(shutdown).await;
        Ok(0)
    })
}

/// Completes at SIGTERM or SIGINT; the handlers are installed when this returns.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("stopping");
    })
}
