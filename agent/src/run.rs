//! `agent run`: wires the kernel programs, the pipeline, the output and the HTTP endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::{FlowKey, FlowValue, COUNTER_SLOTS};
use tokio::signal::unix::{signal, SignalKind};

use crate::cgroup::resolver::CgroupResolver;
use crate::cli::RunArgs;
use crate::clock::BootClock;
use crate::dns::DnsCache;
use crate::http::{self, HttpState};
use crate::identity::IdentityCache;
use crate::kernel::{self, EventReader, KernelEvent, Probes};
use crate::metrics::Metrics;
use crate::output::FlowWriter;
use crate::pipeline::Pipeline;
use crate::pods::{self, PodsFile};

/// A new cgroup is looked for at most this often; see `CgroupResolver`.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(50);
/// Names stay attached to an address at least this long after the answer, whatever its TTL.
const DNS_RETENTION: Duration = Duration::from_secs(600);
/// Bound on remembered (source, address, name) triples.
const DNS_CACHE_ENTRIES: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--recommender is not implemented by this agent build; write records with --flows-out"
    )]
    RecommenderUnsupported,
    #[error(transparent)]
    Pods(#[from] pods::Error),
    #[error("--flows-out {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find the cgroup v2 hierarchy: {0}")]
    Cgroup(std::io::Error),
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
}

impl Error {
    /// 2 for what is a usage error, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RecommenderUnsupported => 2,
            _ => 1,
        }
    }
}

pub async fn run(args: RunArgs) -> Result<(), Error> {
    if args.recommender.is_some() {
        return Err(Error::RecommenderUnsupported);
    }
    let node = args
        .node_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(default_node_name);
    // Everything that can be wrong with the inputs is reported before the kernel is touched.
    let pods = args.pods_file.as_deref().map(PodsFile::load).transpose()?;
    let mut writer = FlowWriter::open(&args.flows_out).map_err(|source| Error::Output {
        path: args.flows_out.clone(),
        source,
    })?;
    // What the node lacks (kernel, cgroup v2, capabilities) is named before anything is loaded.
    let plan = crate::preflight::check()?;
    let root = plan.cgroup_root.clone();
    let metrics = Arc::new(Metrics::new());
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
        mode = ?args.mode,
        flows_out = %args.flows_out,
        "kernel programs attached"
    );

    let mut pipeline = Pipeline::new(
        node,
        IdentityCache::new(CgroupResolver::new(root, MIN_RESCAN_INTERVAL)),
        pods,
        DnsCache::new(DNS_RETENTION, DNS_CACHE_ENTRIES),
        Arc::clone(&metrics),
    );
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
        &mut writer,
        &metrics,
        Duration::from_secs(args.flush_interval),
        shutdown,
    )
    .await;
    ready.store(false, Ordering::Release);
    detach(probes);
    let _ = stop_http.send(());
    match http_task.await {
        Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    result
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
/// then flushes once more so that every flow with activity not yet reported is written before
/// the programs go away. Each flush first takes the events still in the ring: a DNS answer that
/// preceded a connect must be known before that connect's first record is written.
pub async fn main_loop(
    source: &impl FlowSource,
    events: &mut impl EventSource,
    pipeline: &mut Pipeline,
    writer: &mut FlowWriter,
    metrics: &Metrics,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    enum Wake {
        Tick,
        Stop,
        Events(Result<(), kernel::Error>),
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; nothing to report yet
    tokio::pin!(shutdown);
    let mut batch = Vec::new();
    let result = loop {
        let wake = tokio::select! {
            _ = tick.tick() => Wake::Tick,
            () = &mut shutdown => Wake::Stop,
            got = events.next_batch(&mut batch) => Wake::Events(got),
        };
        match wake {
            Wake::Tick => {
                if let Err(e) = flush(source, events, pipeline, writer, metrics, &mut batch) {
                    break Err(e);
                }
            }
            Wake::Stop => break Ok(()),
            Wake::Events(Ok(())) => handle(pipeline, &mut batch),
            Wake::Events(Err(error)) => break Err(Error::Events(error)),
        }
    };
    let flushed = flush(source, events, pipeline, writer, metrics, &mut batch);
    result.and(flushed)
}

fn handle(pipeline: &mut Pipeline, batch: &mut Vec<KernelEvent>) {
    let now = Instant::now();
    for event in batch.drain(..) {
        pipeline.handle_event(event, now);
    }
}

/// Takes pending events, reads the flow table and counters, writes the records. A table that
/// cannot be read this time is logged and retried at the next tick; an output that cannot be
/// written is fatal.
fn flush(
    probes: &impl FlowSource,
    events: &mut impl EventSource,
    pipeline: &mut Pipeline,
    writer: &mut FlowWriter,
    metrics: &Metrics,
    batch: &mut Vec<KernelEvent>,
) -> Result<(), Error> {
    events.drain(batch);
    handle(pipeline, batch);
    let table = match probes.flow_table() {
        Ok(table) => table,
        Err(error) => {
            tracing::warn!(%error, "cannot read the flow table");
            return Ok(());
        }
    };
    let counters = probes
        .counters()
        .map_err(|error| tracing::warn!(%error, "cannot read the kernel counters"))
        .ok();
    let records = pipeline.poll(&table, counters.as_ref(), &BootClock::now(), Instant::now());
    writer.write_batch(&records).map_err(Error::Write)?;
    metrics.records_written(records.len() as u64);
    tracing::debug!(records = records.len(), flows = table.len(), "flushed");
    Ok(())
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
mod tests {
    use super::*;
    use crate::cli::Mode;
    use std::sync::Mutex;

    fn args() -> RunArgs {
        RunArgs {
            node_name: Some("n".into()),
            pods_file: None,
            flows_out: "-".into(),
            recommender: None,
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            mode: Mode::Learn,
            flush_interval: 1,
        }
    }

    #[tokio::test]
    async fn input_errors_come_before_the_kernel() {
        let mut a = args();
        a.recommender = Some("http://r".into());
        let e = run(a).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);

        let mut a = args();
        a.pods_file = Some("/nonexistent/pods.json".into());
        let e = run(a).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pods.json"), "{e}");
        assert_eq!(e.exit_code(), 1);

        let mut a = args();
        a.flows_out = "/nonexistent/dir/flows.jsonl".into();
        assert!(matches!(run(a).await, Err(Error::Output { .. })));
    }

    struct FakeKernel(Mutex<Vec<(FlowKey, FlowValue)>>);

    impl FlowSource for FakeKernel {
        fn flow_table(&self) -> Result<Vec<(FlowKey, FlowValue)>, kernel::Error> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], kernel::Error> {
            Ok([0; COUNTER_SLOTS as usize])
        }
    }

    fn flow(port: u16, count: u64) -> (FlowKey, FlowValue) {
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&[198, 18, 0, 10]);
        let key = FlowKey {
            cgroup_id: 1,
            daddr,
            dport: port,
            family: agent_common::AF_INET,
            protocol: agent_common::IPPROTO_UDP,
            _pad: [0; 4],
        };
        let now = BootClock::boot_now_ns();
        let value = FlowValue {
            first_seen_ns: now,
            last_seen_ns: now,
            count,
            ..Default::default()
        };
        (key, value)
    }

    /// Events that only a drain can see (as when the programs did not wake the reader).
    struct QuietRing(Vec<KernelEvent>);

    impl EventSource for QuietRing {
        async fn next_batch(&mut self, _out: &mut Vec<KernelEvent>) -> Result<(), kernel::Error> {
            std::future::pending().await
        }
        fn drain(&mut self, out: &mut Vec<KernelEvent>) {
            out.append(&mut self.0);
        }
    }

    fn pipeline(tmp: &std::path::Path, metrics: &Arc<Metrics>) -> Pipeline {
        Pipeline::new(
            "node-a".into(),
            IdentityCache::new(CgroupResolver::new(tmp.to_owned(), Duration::ZERO)),
            None,
            DnsCache::new(DNS_RETENTION, 100),
            Arc::clone(metrics),
        )
    }

    /// What the main-loop tests drive: a pipeline, its metrics, and a writer to `out`, a
    /// `flows.jsonl` in a temporary directory that lives as long as this does.
    struct Setup {
        _tmp: tempfile::TempDir,
        out: std::path::PathBuf,
        writer: FlowWriter,
        metrics: Arc<Metrics>,
        pipeline: Pipeline,
    }

    impl Setup {
        fn new() -> Setup {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("flows.jsonl");
            let writer = FlowWriter::open(out.to_str().unwrap()).unwrap();
            let metrics = Arc::new(Metrics::new());
            let pipeline = pipeline(tmp.path(), &metrics);
            Setup {
                _tmp: tmp,
                out,
                writer,
                metrics,
                pipeline,
            }
        }

        /// `main_loop` over this setup's pipeline, writer and metrics.
        async fn main_loop(
            &mut self,
            kernel: &FakeKernel,
            ring: &mut QuietRing,
            interval: Duration,
            shutdown: impl std::future::Future<Output = ()>,
        ) -> Result<(), Error> {
            main_loop(
                kernel,
                ring,
                &mut self.pipeline,
                &mut self.writer,
                &self.metrics,
                interval,
                shutdown,
            )
            .await
        }
    }

    /// The records written to `path`.
    fn records(path: &std::path::Path) -> Vec<flow_model::FlowRecord> {
        flow_model::read_records(std::fs::read_to_string(path).unwrap().as_bytes(), "out").unwrap()
    }

    fn lines(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn flushes_on_ticks_and_once_more_at_shutdown() {
        let mut setup = Setup::new();
        let kernel = FakeKernel(Mutex::new(vec![flow(53, 1)]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut ring = QuietRing(Vec::new());
        let out = setup.out.clone();
        let driver = async {
            // Wait for the first tick's record, add activity, then stop.
            while lines(&out).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            kernel.0.lock().unwrap().push(flow(443, 4));
            stop.send(()).unwrap();
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        let (result, ()) = tokio::join!(
            setup.main_loop(&kernel, &mut ring, Duration::from_millis(20), shutdown),
            driver
        );
        result.unwrap();
        let records = records(&setup.out);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].destination.port, 53);
        assert_eq!(records[1].destination.port, 443);
        assert_eq!(records[1].count, 4);
        assert_eq!(records[1].node, "node-a");
        assert!(setup
            .metrics
            .encode()
            .contains("egress_agent_records_written_total 2"));
    }

    /// A DNS answer still in the ring when the agent is told to stop names the flow it preceded.
    #[tokio::test]
    async fn events_left_in_the_ring_are_taken_before_the_final_flush() {
        use crate::dns::parse::tests::{a, response};
        let mut setup = Setup::new();
        let (key, value) = flow(443, 1);
        let answer = response(
            "api.example.test.",
            vec![("api.example.test.", a("198.18.0.10"))],
        );
        let mut ring = QuietRing(vec![
            KernelEvent::Dns(kernel::DnsAnswer {
                cgroup_id: key.cgroup_id,
                family: agent_common::AF_INET,
                transport: agent_common::IPPROTO_UDP,
                wire_len: answer.len() as u32,
                socket_cookie: 1,
                seq: 0,
                flags: 0,
                payload: answer,
            }),
            KernelEvent::NewFlow(key),
        ]);
        let kernel = FakeKernel(Mutex::new(vec![(key, value)]));
        setup
            .main_loop(&kernel, &mut ring, Duration::from_secs(3600), async {})
            .await
            .unwrap();
        let records = records(&setup.out);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].destination.dns_names, ["api.example.test"]);
    }

    #[test]
    fn node_name_defaults_to_the_host_name() {
        assert!(!default_node_name().is_empty());
    }
}
