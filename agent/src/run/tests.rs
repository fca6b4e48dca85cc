use super::*;
use crate::cli::{Cli, Command};
use clap::Parser;
use std::sync::Mutex;

fn args() -> RunArgs {
    let Command::Run(mut a) =
        Cli::parse_from(["agent", "run", "--node-name", "n", "--flush-interval", "1"]).command;
    a.metrics_addr = "127.0.0.1:0".parse().unwrap();
    a
}

#[tokio::test]
async fn input_errors_come_before_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let mut a = args();
    a.recommender = Some("ftp://r".into());
    a.token_file = Some(token.clone());
    let e = run(a).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("--recommender ftp://r"), "{e}");

    let mut a = args();
    a.recommender = Some("http://r".into());
    a.token_file = Some(tmp.path().join("missing"));
    let e = run(a).await.unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    assert_eq!(e.exit_code(), 1);

    let mut a = args();
    a.recommender = Some("http://r".into());
    a.token_file = Some(token);
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    a.spool_dir = Some(file.join("spool"));
    let e = run(a).await.unwrap_err();
    assert!(matches!(e, Error::Spool { .. }), "{e}");

    let mut a = args();
    a.pods_file = Some("/nonexistent/pods.json".into());
    let e = run(a).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/pods.json"), "{e}");
    assert_eq!(e.exit_code(), 1);

    let mut a = args();
    a.flows_out = Some("/nonexistent/dir/flows.jsonl".into());
    assert!(matches!(run(a).await, Err(Error::Output { .. })));
}

pub(crate) struct FakeKernel(pub(crate) Mutex<Vec<(FlowKey, FlowValue)>>);

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
        crate::pod_source::PodSource::None,
        DnsCache::new(DNS_RETENTION, 100),
        Arc::clone(metrics),
    )
}

/// What the main-loop tests drive: a pipeline, its metrics, and outputs that write to `out`, a
/// `flows.jsonl` in a temporary directory that lives as long as this does.
struct Setup {
    _tmp: tempfile::TempDir,
    out: std::path::PathBuf,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("flows.jsonl");
        let metrics = Arc::new(Metrics::new());
        let mut outputs = Outputs::new();
        outputs
            .add_file(FlowWriter::open(out.to_str().unwrap()).unwrap(), &metrics)
            .unwrap();
        let pipeline = pipeline(tmp.path(), &metrics);
        Setup {
            _tmp: tmp,
            out,
            outputs,
            metrics,
            pipeline,
        }
    }

    /// `main_loop` over this setup's pipeline and outputs (no scan of existing connections).
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
            &mut self.outputs,
            interval,
            std::future::pending(),
            shutdown,
        )
        .await
    }

    /// Waits for the outputs to write everything.
    async fn finish(self) -> (std::path::PathBuf, Arc<Metrics>, tempfile::TempDir) {
        self.outputs.finish().await.unwrap();
        (self.out, self.metrics, self._tmp)
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
    let (out, metrics, _tmp) = setup.finish().await;
    let records = records(&out);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].destination.port, 53);
    assert_eq!(records[1].destination.port, 443);
    assert_eq!(records[1].count, 4);
    assert_eq!(records[1].node, "node-a");
    assert!(metrics
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
    let (out, _, _tmp) = setup.finish().await;
    let records = records(&out);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].destination.dns_names, ["api.example.test"]);
}

#[test]
fn node_name_defaults_to_the_host_name() {
    assert!(!default_node_name().is_empty());
}
