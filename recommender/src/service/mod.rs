//! `recommender serve`: the daemon agents ship flows to (see `docs/architecture.md`, "Service").
//!
//! ```text
//!  POST /v1/flows ─► auth ─► body (bounded, deadline) ─► decode ─► resolve against the model of
//!  the moment (+ judge, monitor mode) ─► writer: group commit to the store ─► memory ─► 200
//!  GET /v1/policies, /v1/status, /v1/unexpected, /metrics ◄─ memory (what is durable)
//! ```
//!
//! Modules: `app` (routes and handlers), `server` (listener, timeouts), `auth` (bearer tokens),
//! `ingest` (resolution of a batch), `writer` (group commit), `state` (what was learned, in
//! memory), `learning` (learning states), `monitor` (baseline, unexpected egress), `metrics`,
//! `model` (the cluster model seam), `query` (options as a query), `status` (the status report),
//! `client` (the client side of `export`/`status --server`).

pub mod app;
pub mod auth;
pub mod client;
pub mod ha;
pub mod ingest;
pub mod learning;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod query;
pub mod server;
pub mod state;
pub mod status;
pub mod token_review;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::net::TcpListener;

use crate::store::{Store, StoreError};
use crate::synth::{self, Options};
use app::App;
use auth::Authenticator;
use learning::Thresholds;
use metrics::Metrics;
use model::ModelCell;
use monitor::{BaselineSource, Monitor};
use state::State;
use writer::Writer;

/// What a client may send and how slowly.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body, as sent (compressed).
    pub max_body_bytes: usize,
    /// Largest body once decompressed: a gzip bomb stops here.
    pub max_decoded_bytes: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 128 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// What monitor mode judges against.
pub enum Baseline {
    /// Learn mode: no judging.
    None,
    /// `--baseline` files.
    Policies(Vec<NetworkPolicy>),
    /// The recommendation (with these options) for what the store holds at start.
    Frozen(Options),
}

pub struct Config {
    pub limits: Limits,
    pub thresholds: Thresholds,
    /// How long acknowledged batch ids are remembered (see `docs/architecture.md`, "Batch ids").
    pub batch_id_retention: SignedDuration,
    /// Most unresolved flows kept (the rest are counted).
    pub max_uncovered: usize,
    /// Most recent unexpected flows kept for `GET /v1/unexpected`.
    pub recent_unexpected: usize,
    pub baseline: Baseline,
    /// The HA store's Lease: only while this replica holds it are batches taken (see [`ha`]).
    pub leadership: Option<Arc<crate::store::kubernetes::Leadership>>,
    /// How often a follower reads the store again, for its reads.
    pub follower_refresh: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            thresholds: Thresholds::default(),
            batch_id_retention: SignedDuration::from_hours(24),
            max_uncovered: 100_000,
            recent_unexpected: 1000,
            baseline: Baseline::None,
            leadership: None,
            follower_refresh: Duration::from_secs(15),
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster model: {0}")]
    Cluster(#[from] crate::Error),
    #[error("--baseline: {0}")]
    Baseline(#[from] crate::policy::InvalidPolicies),
}

/// A service ready to serve: the store read, the model loaded, the listener bound.
pub struct Service {
    listener: TcpListener,
    app: Arc<App>,
    writer: Writer,
    rx: tokio::sync::mpsc::Receiver<writer::Submission>,
    follower_refresh: Duration,
}

impl Service {
    /// Reads the store, loads the cluster model, builds the baseline and binds `listen`.
    pub async fn start(
        listen: SocketAddr,
        config: Config,
        store: Arc<dyn Store>,
        source: &dyn model::ClusterSource,
        auth: Arc<dyn Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Result<Service, ServiceError> {
        let learned = store.load().await?;
        let state = Arc::new(State::from_store(learned, Timestamp::now()));
        metrics.edges.set(state.edges.len() as i64);
        tracing::info!(
            store = %store.describe(),
            edges = state.edges.len(),
            batch_ids = state.batch_ids.len(),
            "store read"
        );
        let model = ModelCell::new();
        source.start(Arc::clone(&model)).await?;
        tracing::info!(source = %source.describe(), "cluster model loaded");
        let monitor = match config.baseline {
            Baseline::None => None,
            Baseline::Policies(policies) => Some(Monitor::new(
                &policies,
                BaselineSource::Files,
                config.recent_unexpected,
            )?),
            Baseline::Frozen(options) => {
                // A live source publishes its model once every kind is listed.
                let cluster = model.wait_loaded().await;
                let policies = synth::recommend(&cluster, &state.flows(), &options)
                    .into_network_policies();
                if policies.is_empty() {
                    tracing::warn!("monitor mode with nothing learned yet: the frozen baseline has no policies, so no flow is unexpected");
                }
                Some(Monitor::new(
                    &policies,
                    BaselineSource::Frozen,
                    config.recent_unexpected,
                )?)
            }
        }
        .map(Arc::new);
        if let Some(m) = &monitor {
            tracing::info!(
                baseline = ?m.source,
                policies = m.policies(),
                rules = m.rules(),
                "monitor mode"
            );
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: listen,
                source,
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(writer::MAX_GROUP * 2);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let app = Arc::new(App {
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            model,
            monitor: monitor.clone(),
            auth,
            writer: tx,
            limits: config.limits,
            thresholds: config.thresholds,
            cpu: tokio::sync::Semaphore::new(cores),
            leadership: config.leadership.clone(),
        });
        let writer = Writer {
            store,
            state,
            metrics,
            monitor,
            id_retention: config.batch_id_retention,
            max_uncovered: config.max_uncovered,
        };
        Ok(Service {
            listener,
            app,
            writer,
            rx,
            follower_refresh: config.follower_refresh,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Serves until `shutdown` completes; batches being written are finished first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let header_timeout = self.app.limits.header_timeout;
        let router = app::router(Arc::clone(&self.app));
        let ha = self.app.leadership.clone().map(|leadership| {
            tokio::spawn(ha::follow(
                leadership,
                Arc::clone(&self.writer.store),
                Arc::clone(&self.writer.state),
                Arc::clone(&self.writer.metrics),
                self.follower_refresh,
            ))
        });
        let writer = tokio::spawn(self.writer.run(self.rx));
        tracing::info!(listen = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
        server::serve(self.listener, router, header_timeout, shutdown).await;
        // The writer ends once the last handler holding a sender is gone; do not wait for
        // slow clients: nothing is acknowledged before it is durable anyway.
        drop(self.app);
        if let Some(ha) = ha {
            ha.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
}
