//! `agent run`: wires the kernel programs, the pipeline, the output and the HTTP endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::cgroup::{mount, resolver::CgroupResolver};
use crate::cli::RunArgs;
use crate::clock::BootClock;
use crate::dns::DnsCache;
use crate::http::{self, HttpState};
use crate::identity::IdentityCache;
use crate::kernel::{self, EventReader, Probes};
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
    let root = mount::find_cgroup2_root().map_err(Error::Cgroup)?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = http::bind(args.metrics_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: args.metrics_addr,
            source,
        })?;
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

    let attached = Probes::attach(&root).map_err(|source| Error::Attach {
        hint: privilege_hint(),
        source,
    });
    let mut probes = match attached {
        Ok(p) => p,
        Err(e) => {
            let _ = stop_http.send(());
            return Err(e);
        }
    };
    let events = probes.take_events().map_err(Error::Events)?;
    ready.store(true, Ordering::Release);
    tracing::info!(
        %node,
        cgroup_root = %root.display(),
        metrics_addr = %args.metrics_addr,
        mode = ?args.mode,
        flows_out = %args.flows_out,
        "kernel programs attached"
    );

    let pipeline = Arc::new(Mutex::new(Pipeline::new(
        node,
        IdentityCache::new(CgroupResolver::new(root, MIN_RESCAN_INTERVAL)),
        pods,
        DnsCache::new(DNS_RETENTION, DNS_CACHE_ENTRIES),
        Arc::clone(&metrics),
    )));
    let mut event_task = tokio::spawn(event_loop(events, Arc::clone(&pipeline)));

    let mut tick = tokio::time::interval(Duration::from_secs(args.flush_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; nothing to report yet
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = flush(&probes, &pipeline, &mut writer, &metrics) {
                    break Err(e);
                }
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: flushing and detaching");
                break Ok(());
            }
            _ = sigint.recv() => {
                tracing::info!("SIGINT: flushing and detaching");
                break Ok(());
            }
            ended = &mut event_task => {
                break Err(match ended {
                    Ok(error) => Error::Events(error),
                    Err(join) => Error::Events(kernel_join_error(join)),
                });
            }
        }
    };

    ready.store(false, Ordering::Release);
    event_task.abort();
    // Every flow with activity not yet reported is written before the programs go away.
    let flushed = flush(&probes, &pipeline, &mut writer, &metrics);
    detach(probes);
    let _ = stop_http.send(());
    match http_task.await {
        Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    result.and(flushed)
}

/// Reads the flow table and counters, writes the records. A table that cannot be read this time
/// is logged and retried at the next tick; an output that cannot be written is fatal.
fn flush(
    probes: &Probes,
    pipeline: &Mutex<Pipeline>,
    writer: &mut FlowWriter,
    metrics: &Metrics,
) -> Result<(), Error> {
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
    let records = lock(pipeline).poll(&table, counters.as_ref(), &BootClock::now(), Instant::now());
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

/// Handles ring-buffer events as they come; returns only when the reader fails.
async fn event_loop(mut reader: EventReader, pipeline: Arc<Mutex<Pipeline>>) -> kernel::Error {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        if let Err(error) = reader.next_batch(&mut batch).await {
            return error;
        }
        let now = Instant::now();
        let mut pipeline = lock(&pipeline);
        for event in batch.drain(..) {
            pipeline.handle_event(event, now);
        }
    }
}

/// A panic in one event must not take the agent's state with it: keep using the data.
fn lock(pipeline: &Mutex<Pipeline>) -> MutexGuard<'_, Pipeline> {
    pipeline
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kernel_join_error(join: tokio::task::JoinError) -> kernel::Error {
    tracing::error!(error = %join, "the kernel event task ended abnormally");
    std::panic::resume_unwind(join.into_panic())
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

    #[test]
    fn node_name_defaults_to_the_host_name() {
        assert!(!default_node_name().is_empty());
    }
}
