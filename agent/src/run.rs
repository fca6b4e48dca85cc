//! `agent run`: wires the kernel programs, the pipeline, the output and the HTTP endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::{FlowKey, FlowValue, COUNTER_SLOTS};
use tokio::signal::unix::{signal, SignalKind};

use crate::cgroup::resolver::CgroupResolver;
use crate::cli::{PodMetadata, RunArgs};
use crate::clock::BootClock;
use crate::dns::DnsCache;
use crate::existing;
use crate::http::{self, HttpState};
use crate::identity::IdentityCache;
use crate::kernel::{self, EventReader, KernelEvent, Probes};
use crate::metrics::{ExistingSocket, Metrics};
use crate::output::{FlowWriter, Outputs};
use crate::pipeline::Pipeline;
use crate::pod_source::PodSource;
use crate::pods::{self, PodsFile};
use crate::ship::{self, client::ConfigError, Backoff, BatchIds, Shipper, Spool};

/// A new cgroup is looked for at most this often; see `CgroupResolver`.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(50);
/// Names stay attached to an address at least this long after the answer, whatever its TTL.
const DNS_RETENTION: Duration = Duration::from_secs(600);
/// Bound on remembered (source, address, name) triples.
const DNS_CACHE_ENTRIES: usize = 200_000;
/// Bound on one request to the recommender, from connect to the end of its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pods(#[from] pods::Error),
    #[error(
        "--pods-from api: no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or the \
         in-cluster service account): {0}; use --pods-file or --pods-from none without the API"
    )]
    KubeConfig(String),
    #[error("--flows-out {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Recommender(#[from] ConfigError),
    #[error("--spool-dir {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find the cgroup v2 hierarchy: {0}")]
    Cgroup(std::io::Error),
    #[error(transparent)]
    CgroupRoot(#[from] crate::cgroup::subtree::SubtreeError),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::Error),
    #[error("--metrics-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot attach the kernel programs{hint}: {source}")]
    Attach {
        hint: &'static str,
        source: kernel::Error,
    },
    #[error("kernel events: {0}")]
    Events(kernel::Error),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("writing flow records: {0}")]
    Write(std::io::Error),
    #[error("an output stopped")]
    OutputStopped,
}

impl Error {
    /// 2 for what is a usage error, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Recommender(ConfigError::Url { .. }) => 2,
            _ => 1,
        }
    }
}

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let node = args
        .node_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(default_node_name);
    let metrics = Arc::new(Metrics::new());
    // Everything that can be wrong with the inputs is reported before the kernel is touched.
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let pods_synced = Arc::new(AtomicBool::new(true));
    let pods = match args.pod_metadata(in_pod) {
        PodMetadata::File(path) => PodSource::File(PodsFile::load(&path)?),
        PodMetadata::None => PodSource::None,
        PodMetadata::Api => watch_pods(&node, &metrics, &pods_synced).await?,
    };
    let mut outputs = Outputs::new();
    if let Some(target) = args.flows_out() {
        let writer = FlowWriter::open(target).map_err(|source| Error::Output {
            path: target.to_owned(),
            source,
        })?;
        outputs.add_file(writer, &metrics).map_err(Error::Write)?;
    }
    if let Some(shipper) = shipper(&args, &node, &metrics)? {
        outputs.add_shipper(shipper, &metrics);
    }
    // What the node lacks (kernel, cgroup v2, capabilities) is named before anything is loaded.
    let plan = crate::preflight::check()?;
    let root =
        crate::cgroup::subtree::attach_point(&plan.cgroup_root, args.cgroup_root.as_deref())?;
    let ready = Arc::new(AtomicBool::new(false));
    let listener = http::bind(args.metrics_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    // Installed before attaching: a SIGTERM during start-up still ends in a flush and a detach.
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signal)?;

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let state = HttpState {
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        pods_synced,
    };
    let http_task = tokio::spawn(http::serve(listener, state, async {
        let _ = http_stopped.await;
    }));

    let attached = Probes::attach_with(&root, plan.options())
        .map_err(|source| Error::Attach {
            hint: privilege_hint(),
            source,
        })
        .and_then(|mut probes| {
            let events = probes.take_events().map_err(Error::Events)?;
            Ok((probes, events))
        });
    let (probes, events) = match attached {
        Ok(attached) => attached,
        Err(e) => {
            let _ = stop_http.send(());
            return Err(e);
        }
    };
    ready.store(true, Ordering::Release);
    tracing::info!(
        %node,
        cgroup_root = %root.display(),
        metrics_addr = %args.metrics_addr,
        flows_out = args.flows_out().unwrap_or("(none)"),
        recommender = args.recommender.as_deref().unwrap_or("(none)"),
        "kernel programs attached"
    );
    // After attaching, so that a connection made meanwhile is seen by one or the other (or both:
    // see `Pipeline::report_preexisting`).
    let subtree = args.cgroup_root.is_some().then(|| root.clone());
    let existing = scan_existing(args.existing_connections, subtree, Arc::clone(&metrics));

    let mut pipeline = Pipeline::new(
        node,
        IdentityCache::new(CgroupResolver::new(root, MIN_RESCAN_INTERVAL)),
        pods,
        DnsCache::new(DNS_RETENTION, DNS_CACHE_ENTRIES),
        Arc::clone(&metrics),
    )
    .with_pod_wait(Duration::from_secs(args.pod_wait), crate::held::MAX_HELD);
    let mut events = events;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: flushing and detaching"),
            _ = sigint.recv() => tracing::info!("SIGINT: flushing and detaching"),
        }
    };
    let result = main_loop(
        &probes,
        &mut events,
        &mut pipeline,
        &mut outputs,
        Duration::from_secs(args.flush_interval),
        existing,
        shutdown,
    )
    .await;
    ready.store(false, Ordering::Release);
    detach(probes);
    // The records of the final flush are handed off; now they are written and delivered (or
    // spooled), within the shipper's grace period.
    let finished = outputs.finish().await.map_err(Error::Write);
    let _ = stop_http.send(());
    match http_task.await {
        Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    match (result, finished) {
        (_, Err(e)) | (Err(e), _) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Starts the API watch of this node's pods: now, so that the first list overlaps loading the
/// programs (`pods_synced`, which /readyz waits for, turns true after it).
#[cfg(feature = "api")]
async fn watch_pods(
    node: &str,
    metrics: &Arc<Metrics>,
    pods_synced: &Arc<AtomicBool>,
) -> Result<PodSource, Error> {
    use crate::pods_api;
    let client = pods_api::client()
        .await
        .map_err(|e| Error::KubeConfig(e.to_string()))?;
    pods_synced.store(false, Ordering::Release);
    tracing::info!(%node, "watching this node's pods through the Kubernetes API");
    Ok(PodSource::Api(pods_api::start(
        client,
        node,
        Arc::clone(metrics),
        Arc::clone(pods_synced),
    )))
}

#[cfg(not(feature = "api"))]
async fn watch_pods(
    _node: &str,
    _metrics: &Arc<Metrics>,
    _pods_synced: &Arc<AtomicBool>,
) -> Result<PodSource, Error> {
    Err(Error::KubeConfig(
        "this agent was built without the `api` feature".into(),
    ))
}

/// The shipper of `--recommender`, its URL, token, CA file and spool checked.
fn shipper(args: &RunArgs, node: &str, metrics: &Arc<Metrics>) -> Result<Option<Shipper>, Error> {
    let Some(url) = args.recommender.as_deref() else {
        return Ok(None);
    };
    let token_file = args
        .token_file
        .as_deref()
        .expect("clap requires --token-file with --recommender");
    let client = ship::Client::new(url, token_file, args.ca_file.as_deref(), REQUEST_TIMEOUT)?;
    let spool = match &args.spool_dir {
        Some(dir) => {
            let (spool, recovered) =
                Spool::open(dir, args.spool_max_bytes).map_err(|source| Error::Spool {
                    path: dir.display().to_string(),
                    source,
                })?;
            tracing::info!(
                spool_dir = %dir.display(),
                batches = recovered.batches,
                bytes = recovered.bytes,
                interrupted_writes = recovered.interrupted_writes,
                corrupt = recovered.corrupt,
                "spool opened"
            );
            spool
        }
        None => Spool::in_memory(args.spool_max_bytes),
    };
    tracing::info!(endpoint = %client.endpoint(), "delivering flows to the recommender");
    Ok(Some(Shipper::new(
        client,
        spool,
        BatchIds::new(node),
        Backoff::default(),
        Duration::from_secs(args.shutdown_grace),
        Arc::clone(metrics),
    )))
}

/// The sockets that exist now, as flow keys, once the scan (on a thread of its own) is done;
/// never, when scanning is off or could not start. With a `subtree` (`--cgroup-root`), only its
/// sockets: the programs see no other.
fn scan_existing(
    enabled: bool,
    subtree: Option<std::path::PathBuf>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = Vec<FlowKey>> + Send + 'static {
    let scan = if enabled {
        existing::spawn_scan()
            .map_err(
                |error| tracing::warn!(%error, "cannot start the scan of existing connections"),
            )
            .ok()
    } else {
        None
    };
    let started = Instant::now();
    async move {
        let Some(scan) = scan else {
            return std::future::pending().await;
        };
        let Ok(scan) = scan.await else {
            tracing::warn!("the scan of existing connections failed");
            return std::future::pending().await;
        };
        metrics.netns_scanned(scan.namespaces);
        metrics.existing_sockets(ExistingSocket::Inbound, scan.inbound);
        metrics.existing_sockets(ExistingSocket::Unattributed, scan.unattributed);
        for (reason, path, error) in &scan.failures {
            metrics.netns_scan_failure(*reason);
            tracing::debug!(netns = %path.display(), reason = reason.label(), %error, "network namespace not scanned");
        }
        if let Some((_, path, error)) = scan.failures.first() {
            tracing::warn!(
                failed = scan.failures.len(),
                first = %path.display(),
                %error,
                "some network namespaces could not be scanned for existing connections \
                 (entering one needs CAP_SYS_ADMIN)"
            );
        }
        let egress = match &subtree {
            Some(root) => crate::cgroup::subtree::keep_inside(root, scan.egress),
            None => scan.egress,
        };
        tracing::info!(
            namespaces = scan.namespaces,
            egress = egress.len(),
            inbound = scan.inbound,
            took = ?started.elapsed(),
            "scanned existing connections"
        );
        egress
    }
}

/// Where flow tables and kernel counters are read from: the attached probes, or a test's fake.
pub trait FlowSource {
    fn flow_table(&self) -> Result<Vec<(FlowKey, FlowValue)>, kernel::Error>;
    fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], kernel::Error>;
}

impl FlowSource for Probes {
    fn flow_table(&self) -> Result<Vec<(FlowKey, FlowValue)>, kernel::Error> {
        Probes::flow_table(self)
    }

    fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], kernel::Error> {
        Probes::counters(self)
    }
}

/// Where kernel events come from: the ring-buffer reader, or a test's fake.
pub trait EventSource {
    /// Waits for events and appends them to `out`; must be cancel-safe.
    fn next_batch(
        &mut self,
        out: &mut Vec<KernelEvent>,
    ) -> impl std::future::Future<Output = Result<(), kernel::Error>>;
    /// Appends the events available now, without waiting.
    fn drain(&mut self, out: &mut Vec<KernelEvent>);
}

impl EventSource for EventReader {
    fn next_batch(
        &mut self,
        out: &mut Vec<KernelEvent>,
    ) -> impl std::future::Future<Output = Result<(), kernel::Error>> {
        EventReader::next_batch(self, out)
    }
    fn drain(&mut self, out: &mut Vec<KernelEvent>) {
        EventReader::drain(self, out);
    }
}

/// Handles kernel events as they come and flushes every `interval` until `shutdown` completes,
/// then flushes once more so that every flow with activity not yet reported is handed to the
/// outputs before the programs go away. Each flush first takes the events still in the ring: a DNS
/// answer that preceded a connect must be known before that connect's first record is written.
/// When `existing` completes (the scan of connections open at start), their records are handed off
/// too. Handing off never waits (see `output`), so nothing here waits for a disk or the network.
pub async fn main_loop(
    source: &impl FlowSource,
    events: &mut impl EventSource,
    pipeline: &mut Pipeline,
    outputs: &mut Outputs,
    interval: Duration,
    existing: impl Future<Output = Vec<FlowKey>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    enum Wake {
        Tick,
        Stop,
        Events(Result<(), kernel::Error>),
        Existing(Vec<FlowKey>),
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; nothing to report yet
    tokio::pin!(shutdown);
    tokio::pin!(existing);
    let mut scanned = false;
    let mut batch = Vec::new();
    let result = loop {
        let wake = tokio::select! {
            _ = tick.tick() => Wake::Tick,
            () = &mut shutdown => Wake::Stop,
            got = events.next_batch(&mut batch) => Wake::Events(got),
            keys = &mut existing, if !scanned => Wake::Existing(keys),
        };
        let handed = match wake {
            Wake::Tick => match flush(source, events, pipeline, &mut batch) {
                Some(records) => outputs.offer(records),
                None => Ok(()),
            },
            Wake::Stop => break Ok(()),
            Wake::Events(Ok(())) => {
                handle(pipeline, &mut batch);
                Ok(())
            }
            Wake::Events(Err(error)) => break Err(Error::Events(error)),
            Wake::Existing(keys) => {
                scanned = true;
                outputs.offer(report_existing(source, pipeline, &keys))
            }
        };
        if handed.is_err() {
            break Err(Error::OutputStopped);
        }
    };
    let flushed = flush(source, events, pipeline, &mut batch).map_or(Ok(()), |records| {
        outputs.offer(records).map_err(|_| Error::OutputStopped)
    });
    // Records still waiting for their pod go out too, named if the pod is known by now.
    let held = pipeline.finish();
    let released = if held.is_empty() {
        Ok(())
    } else {
        outputs.offer(held).map_err(|_| Error::OutputStopped)
    };
    result.and(flushed).and(released)
}

fn handle(pipeline: &mut Pipeline, batch: &mut Vec<KernelEvent>) {
    let now = Instant::now();
    for event in batch.drain(..) {
        pipeline.handle_event(event, now);
    }
}

/// Takes pending events, reads the flow table and counters, and returns the records. A table that
/// cannot be read this time is logged and read again at the next tick.
fn flush(
    probes: &impl FlowSource,
    events: &mut impl EventSource,
    pipeline: &mut Pipeline,
    batch: &mut Vec<KernelEvent>,
) -> Option<Vec<flow_model::FlowRecord>> {
    events.drain(batch);
    handle(pipeline, batch);
    let table = match probes.flow_table() {
        Ok(table) => table,
        Err(error) => {
            tracing::warn!(%error, "cannot read the flow table");
            return None;
        }
    };
    let counters = probes
        .counters()
        .map_err(|error| tracing::warn!(%error, "cannot read the kernel counters"))
        .ok();
    let records = pipeline.poll(&table, counters.as_ref(), &BootClock::now(), Instant::now());
    tracing::debug!(records = records.len(), flows = table.len(), "flushed");
    Some(records)
}

/// The records of the connections found open at start, less what the kernel already counted.
fn report_existing(
    probes: &impl FlowSource,
    pipeline: &mut Pipeline,
    keys: &[FlowKey],
) -> Vec<flow_model::FlowRecord> {
    let table = probes.flow_table().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read the flow table; existing connections reported whole");
        Vec::new()
    });
    pipeline.report_preexisting(keys, &table, &BootClock::now(), Instant::now())
}

/// Dropping the probes detaches the programs (and frees their maps).
fn detach(probes: Probes) {
    let _detached = probes;
    tracing::info!("kernel programs detached");
}

fn privilege_hint() -> &'static str {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        " (not running as root: loading eBPF programs needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

/// The kernel's host name, which is what the kubelet registers the node as by default.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests;
