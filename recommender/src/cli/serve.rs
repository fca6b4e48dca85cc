//! `recommender serve`: the service agents ship flows to (see `crate::service`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::{parse_duration, runtime, SynthArgs};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::live::LiveCluster;
use crate::service::auth::{Authenticator, TokenFile};
use crate::service::learning::Thresholds;
use crate::service::metrics::Metrics;
use crate::service::model::{ClusterSource, SnapshotFiles};
use crate::service::token_review::{service_account_user, ReviewPolicy, TokenReviewer};
use crate::service::{Baseline, Config, Limits, Service};
use crate::store::kubernetes::{KubernetesConfig, Leadership, LeaseConfig};
use crate::store::{EmbeddedStore, KubernetesStore, Store};
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
    /// The store file (redb; created when absent), or `kubernetes`: LearnedEdgeSet custom
    /// resources through the API, written by the replica holding the Lease (HA; several replicas
    /// may run).
    #[arg(long, value_name = "PATH|kubernetes")]
    store: PathBuf,
    /// `--store kubernetes`: the namespace of the custom resources and the Lease (default:
    /// `POD_NAMESPACE`, else the pod's service account namespace, else the kubeconfig's).
    #[arg(long, value_name = "NS")]
    store_namespace: Option<String>,
    /// `--store kubernetes`: the Lease whose holder writes.
    #[arg(long, value_name = "NAME", default_value = "egress-recommender-store")]
    lease_name: String,
    /// `--store kubernetes`: the Lease's duration: how long the others wait for a holder that
    /// stopped renewing (it renews every fifth of it and stops writing after two thirds).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: jiff::SignedDuration,
    /// `--store kubernetes`: this replica's Lease identity (default: `POD_NAME`, else the host
    /// name).
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// `--store kubernetes`: new edges go to a workload's next object once its JSON would pass
    /// this size (etcd refuses objects over 1.5 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = crate::store::kubernetes::DEFAULT_OBJECT_BYTES)]
    store_object_bytes: usize,
    /// Cluster snapshot files (`kubectl get ... -o yaml|json`). Without them the service watches
    /// the live cluster (kubeconfig or in-cluster) and is ready once every kind is listed.
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
    /// Monitor mode: the NetworkPolicy files to judge flows against, or `cluster` for the
    /// NetworkPolicies applied in the cluster at start (default: the recommendation for what the
    /// store holds at start, with the policy options below, frozen).
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
    let on_api = args.store.as_os_str() == "kubernetes";
    if !on_api && args.store_namespace.is_some() {
        return Err(Error::BadInput(
            "--store-namespace needs --store kubernetes".into(),
        ));
    }
    if on_api && args.lease_duration < jiff::SignedDuration::from_secs(1) {
        return Err(Error::BadInput("--lease-duration: at least 1s".into()));
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
        Mode::Monitor if args.baseline == [PathBuf::from("cluster")] => {
            let policies = super::inputs::live_cluster(Vec::new())?.network_policies;
            tracing::info!(
                policies = policies.len(),
                "baseline: the cluster's NetworkPolicies"
            );
            Baseline::Policies(policies)
        }
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
    let embedded = if on_api {
        None
    } else {
        Some(
            EmbeddedStore::open_or_create(&args.store)
                .map_err(|e| Error::Service(e.to_string()))?,
        )
    };
    let mut config = Config {
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
        leadership: None,
        follower_refresh: args.lease_duration.unsigned_abs(),
    };
    runtime()?.block_on(async move {
        // One client for everything that talks to the API: the live model and TokenReview.
        let needs_api = args.cluster.is_empty() || token_file.is_none() || on_api;
        let client = if needs_api {
            Some(crate::live::client().await.map_err(|e| {
                Error::BadInput(format!(
                    "no --cluster files or no --token-file, so the Kubernetes API is needed: {e}"
                ))
            })?)
        } else {
            None
        };
        let auth: Arc<dyn Authenticator> = match (token_file, &client) {
            (Some(file), _) => Arc::new(file),
            (None, Some(client)) => {
                let policy = ReviewPolicy::new(
                    args.auth_service_accounts.iter().cloned().collect(),
                    args.auth_audience.clone(),
                );
                Arc::new(TokenReviewer::new(
                    client.clone(),
                    policy,
                    Arc::clone(&metrics),
                ))
            }
            (None, None) => {
                return Err(Error::BadInput(
                    "--token-file FILE or --auth-service-account USER is required".into(),
                ))
            }
        };
        let mut election = None;
        let store: Arc<dyn Store> = match (embedded, &client) {
            (Some(store), _) => Arc::new(store),
            (None, Some(client)) => {
                let ha = ha_store(&args, client.clone())?;
                config.leadership = Some(Arc::clone(&ha.leadership));
                election = Some(ha.election);
                ha.store
            }
            (None, None) => unreachable!("--store kubernetes needs the API client"),
        };
        let source: Box<dyn ClusterSource> = match (args.cluster.is_empty(), client) {
            (true, Some(client)) => Box::new(LiveCluster {
                client,
                service_cidrs: args.service_cidrs.clone(),
                page_size: crate::live::PAGE_SIZE,
            }),
            _ => Box::new(SnapshotFiles {
                files: args.cluster.clone(),
                service_cidrs: args.service_cidrs.clone(),
            }),
        };
        let service = Service::start(args.listen, config, store, source.as_ref(), auth, metrics)
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
        let election = election.map(|e| (tokio::spawn(e.run), e.release));
        service.run(shutdown).await;
        if let Some((task, release)) = election {
            task.abort();
            release.await;
        }
        Ok(0)
    })
}

/// The HA store, its Lease, and the election to run once the service is up.
struct HaStore {
    store: Arc<dyn Store>,
    leadership: Arc<Leadership>,
    election: Election,
}

struct Election {
    run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Gives the Lease up on a clean stop.
    release: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

fn ha_store(args: &ServeArgs, client: kube::Client) -> Result<HaStore, Error> {
    let namespace = match &args.store_namespace {
        Some(ns) => ns.clone(),
        None => own_namespace().unwrap_or_else(|| client.default_namespace().to_owned()),
    };
    let identity = match &args.identity {
        Some(id) => id.clone(),
        None => own_identity().ok_or_else(|| {
            Error::BadInput("--store kubernetes: no --identity, POD_NAME or host name".into())
        })?,
    };
    // Who wrote an object: this replica, and this process of it (a restarted pod of the same
    // name is another writer; see the store's conflict merge).
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let writer = format!("{identity}/{}-{started}", std::process::id());
    let leadership = Arc::new(Leadership::new(&identity));
    let store = KubernetesStore::new(
        client.clone(),
        KubernetesConfig {
            namespace: namespace.clone(),
            writer,
            object_bytes: args.store_object_bytes,
        },
        Some(Arc::clone(&leadership)),
    );
    let lease = LeaseConfig {
        namespace: namespace.clone(),
        name: args.lease_name.clone(),
        identity,
        duration: args.lease_duration.unsigned_abs(),
    };
    tracing::info!(namespace = %namespace, lease = %lease.name, identity = %lease.identity, "store on the Kubernetes API");
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client, &namespace);
    let run = {
        let (api, lease, leadership) = (api.clone(), lease.clone(), Arc::clone(&leadership));
        Box::pin(async move { crate::store::kubernetes::lease::run(api, lease, leadership).await })
    };
    let release = {
        let leadership = Arc::clone(&leadership);
        Box::pin(async move {
            crate::store::kubernetes::lease::release(&api, &lease, &leadership).await
        })
    };
    Ok(HaStore {
        store: Arc::new(store),
        leadership,
        election: Election { run, release },
    })
}

/// The pod's namespace: `POD_NAMESPACE` (downward API), else its service account's.
fn own_namespace() -> Option<String> {
    if let Ok(ns) = std::env::var("POD_NAMESPACE") {
        if !ns.is_empty() {
            return Some(ns);
        }
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `POD_NAME` (downward API), else the host name (a pod's host name is its name).
fn own_identity() -> Option<String> {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
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
