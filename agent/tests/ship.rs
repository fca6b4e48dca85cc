//! Delivery to the recommender against a real HTTP server on a real socket (no root needed): the
//! shipper, its spool and its retries, driven through the same hand-off as the agent's main loop.
//! The server (`support/recommender.rs`) follows the ingest contract and keeps each batch id once,
//! so "every record arrives exactly once" is checked end to end.

#[path = "support/recommender.rs"]
mod recommender;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::metrics::Metrics;
use agent::output::Outputs;
use agent::ship::{Backoff, BatchIds, Client, Shipper, Spool};
use flow_model::{FlowKey, FlowRecord};
use recommender::{Recommender, Scripted};

const TOKEN: &str = "token-of-the-agent";

/// A record from host `node` to 198.18.0.1:`port`/UDP, counted `count` times.
fn record(port: u16, count: u64) -> FlowRecord {
    let line = format!(
        r#"{{"node":"test-node","source":{{"kind":"host"}},"destination":{{"ip":"198.18.0.1","port":{port},"protocol":"UDP"}},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:01Z","count":{count},"outcome":"sent"}}"#
    );
    serde_json::from_str(&line).unwrap()
}

fn records(ports: impl IntoIterator<Item = u16>) -> Vec<FlowRecord> {
    ports.into_iter().map(|p| record(p, 1)).collect()
}

/// Records merged by key, as counts: what a consumer of the deltas ends up with.
fn totals(records: &[FlowRecord]) -> BTreeMap<FlowKey, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(r.key()).or_default() += r.count;
    }
    out
}

fn token_file(dir: &Path, token: &str) -> std::path::PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    path
}

/// Small waits so that the tests run quickly; the production defaults are in `Backoff::default`.
fn fast() -> Backoff {
    Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
    }
}

fn shipper(
    url: &str,
    token: &Path,
    spool: Spool,
    metrics: &Arc<Metrics>,
    timeout: Duration,
) -> Shipper {
    let client = Client::new(url, token, None, timeout).unwrap();
    Shipper::new(
        client,
        spool,
        BatchIds::new("test-node"),
        fast(),
        Duration::from_secs(5),
        Arc::clone(metrics),
    )
}

fn metric(metrics: &Metrics, series: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no series {series}")) as u64
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Down, then 503 with Retry-After, 500, no answer, an acknowledgement lost, then 401 until the
/// token rotates: every record arrives, each batch is kept once, and each reason is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_once_through_failures() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "an-old-token");
    let mut server = Recommender::down_at_first(TOKEN).await;
    let metrics = Arc::new(Metrics::new());
    let (spool, _) = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let mut outputs = Outputs::new();
    outputs.add_shipper(
        shipper(
            &server.url(),
            &token,
            spool,
            &metrics,
            Duration::from_millis(500),
        ),
        &metrics,
    );
    let mut sent = Vec::new();
    let mut offer = |outputs: &mut Outputs, batch: Vec<FlowRecord>| {
        sent.extend(batch.clone());
        outputs.offer(batch).unwrap();
    };
    offer(&mut outputs, records(1..=3));
    offer(&mut outputs, vec![record(1, 4), record(4, 1)]);
    until("connection failures", || {
        metric(
            &metrics,
            "egress_agent_delivery_failures_total{reason=\"connect\"}",
        ) >= 2
    })
    .await;

    server.script([
        Scripted::Status(503, Some("1")),
        Scripted::Status(500, None),
        Scripted::Hang,
        Scripted::KeepAndAnswer(502),
    ]);
    server.up().await;
    offer(&mut outputs, records(5..=7));
    until("a 401", || server.log().iter().any(|s| s.status == 401)).await;
    // The kubelet rotates the projected token: a new file renamed over the old one.
    let next = dir.path().join("token.next");
    std::fs::write(&next, TOKEN).unwrap();
    std::fs::rename(&next, &token).unwrap();
    offer(&mut outputs, records(8..=9));
    until("every batch", || server.batch_ids().len() == 4).await;
    outputs.finish().await.unwrap();

    assert_eq!(totals(&server.received()), totals(&sent));
    let log = server.log();
    // The batch whose acknowledgement was lost came again under the same id and was kept once.
    let lost = log.iter().find(|s| s.status == 502).expect("a lost ack");
    assert!(log.iter().filter(|s| s.id == lost.id).count() >= 2);
    assert!(log.iter().any(|s| s.id == lost.id && s.status == 200));
    // Retry-After: 1 was honoured.
    let throttled = log.iter().position(|s| s.status == 503).unwrap();
    assert!(log[throttled + 1].at - log[throttled].at >= Duration::from_secs(1));
    // After rotation the new token is used.
    assert_eq!(log.last().unwrap().authorization, format!("Bearer {TOKEN}"));
    for (reason, at_least) in [
        ("connect", 2),
        ("unavailable", 1),
        ("server_error", 2),
        ("timeout", 1),
        ("unauthorized", 1),
    ] {
        let series = format!("egress_agent_delivery_failures_total{{reason=\"{reason}\"}}");
        assert!(metric(&metrics, &series) >= at_least, "{series}");
    }
    assert_eq!(
        metric(&metrics, "egress_agent_batches_acknowledged_total"),
        4
    );
    assert_eq!(
        metric(&metrics, "egress_agent_records_acknowledged_total"),
        10
    );
    assert!(metric(&metrics, "egress_agent_batches_retried_total") >= 7);
    assert_eq!(metric(&metrics, "egress_agent_spool_batches"), 0);
    assert_eq!(metric(&metrics, "egress_agent_spool_bytes"), 0);
}

/// 413: split until the halves fit; nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_batches_are_split() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let server = Recommender::start(TOKEN).await;
    *server.ingest.max_records.lock().unwrap() = Some(3);
    let metrics = Arc::new(Metrics::new());
    let mut outputs = Outputs::new();
    let spool = Spool::in_memory(1 << 20);
    outputs.add_shipper(
        shipper(
            &server.url(),
            &token,
            spool,
            &metrics,
            Duration::from_secs(5),
        ),
        &metrics,
    );
    let sent = records(1..=10);
    outputs.offer(sent.clone()).unwrap();
    until("every record", || server.received().len() == 10).await;
    outputs.finish().await.unwrap();
    assert_eq!(totals(&server.received()), totals(&sent));
    // 10 → 5 + 5 → (2 + 3) + (2 + 3): three splits, four halves named after their parent.
    assert_eq!(metric(&metrics, "egress_agent_batches_split_total"), 3);
    let ids = server.batch_ids();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|id| id.ends_with(".0.0")
        || id.ends_with(".0.1")
        || id.ends_with(".1.0")
        || id.ends_with(".1.1")));
}

/// A batch the service calls malformed is set aside (kept in rejected/, counted, logged) and the
/// rest flows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_set_aside_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let server = Recommender::start(TOKEN).await;
    *server.ingest.refuse_port.lock().unwrap() = Some(666);
    let metrics = Arc::new(Metrics::new());
    let spool_dir = dir.path().join("spool");
    let (spool, _) = Spool::open(&spool_dir, 1 << 20).unwrap();
    let mut outputs = Outputs::new();
    outputs.add_shipper(
        shipper(
            &server.url(),
            &token,
            spool,
            &metrics,
            Duration::from_secs(5),
        ),
        &metrics,
    );
    outputs.offer(records([1, 2])).unwrap();
    until("the first batch", || server.batch_ids().len() == 1).await;
    outputs.offer(records([666, 3])).unwrap();
    outputs.offer(records([4])).unwrap();
    until("the third batch", || server.batch_ids().len() == 2).await;
    outputs.finish().await.unwrap();

    assert_eq!(totals(&server.received()), totals(&records([1, 2, 4])));
    assert_eq!(
        server.log().iter().filter(|s| s.status == 400).count(),
        1,
        "never retried"
    );
    assert_eq!(metric(&metrics, "egress_agent_batches_set_aside_total"), 1);
    assert_eq!(
        metric(
            &metrics,
            "egress_agent_delivery_failures_total{reason=\"rejected\"}"
        ),
        1
    );
    let aside: Vec<_> = std::fs::read_dir(spool_dir.join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(std::fs::read(&aside[0]).unwrap().len() > 50);
}

/// While the service is down the spool stays within its bound; what overflows waits merged in a
/// bounded backlog; what overflows that is counted. Delivered plus dropped is exactly what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_counts_every_record_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let mut server = Recommender::down_at_first(TOKEN).await;
    let metrics = Arc::new(Metrics::new());
    let spool_dir = dir.path().join("spool");
    const BOUND: u64 = 4096;
    let (spool, _) = Spool::open(&spool_dir, BOUND).unwrap();
    let mut outputs = Outputs::new();
    outputs.add_shipper(
        shipper(
            &server.url(),
            &token,
            spool,
            &metrics,
            Duration::from_secs(5),
        )
        .with_backlog_keys(50),
        &metrics,
    );
    let mut sent = Vec::new();
    for flush in 0..40u16 {
        let batch = records(flush * 10 + 1..=flush * 10 + 10);
        sent.extend(batch.clone());
        outputs.offer(batch).unwrap();
    }
    until("records to be dropped", || {
        metric(
            &metrics,
            "egress_agent_records_dropped_total{reason=\"spool_overflow\"}",
        ) > 0
            && metric(&metrics, "egress_agent_spool_backlog_records") == 50
    })
    .await;
    let on_disk: u64 = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk > 0 && on_disk <= BOUND, "{on_disk} bytes on disk");
    assert_eq!(metric(&metrics, "egress_agent_spool_bytes"), on_disk);

    server.up().await;
    until("the spool and its backlog to empty", || {
        metric(&metrics, "egress_agent_spool_batches") == 0
            && metric(&metrics, "egress_agent_spool_backlog_records") == 0
    })
    .await;
    outputs.finish().await.unwrap();
    let dropped = metric(
        &metrics,
        "egress_agent_records_dropped_total{reason=\"spool_overflow\"}",
    );
    let dropped_bytes = metric(
        &metrics,
        "egress_agent_records_dropped_bytes_total{reason=\"spool_overflow\"}",
    );
    let received = server.received();
    assert_eq!(received.len() as u64 + dropped, sent.len() as u64);
    assert_eq!(totals(&received).len(), received.len(), "nothing twice");
    assert!(
        dropped_bytes >= dropped * 100,
        "{dropped_bytes} bytes for {dropped} records"
    );
}

/// A service that accepts and never answers holds up neither the main loop (it keeps reading the
/// flow table and handing records off) nor the spooling of what it hands off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_service_never_stalls_the_ring_buffer_drain() {
    use agent::cgroup::resolver::CgroupResolver;
    use agent::dns::DnsCache;
    use agent::identity::IdentityCache;
    use agent::kernel::{self, KernelEvent};
    use agent::pipeline::Pipeline;
    use agent::run::{main_loop, EventSource, FlowSource};
    use agent_common::{FlowValue, COUNTER_SLOTS};

    /// A flow table with one more flow each time it is read.
    struct GrowingTable {
        reads: Mutex<u64>,
    }
    impl FlowSource for GrowingTable {
        fn flow_table(&self) -> Result<Vec<(agent_common::FlowKey, FlowValue)>, kernel::Error> {
            let mut reads = self.reads.lock().unwrap();
            *reads += 1;
            Ok((0..*reads)
                .map(|i| {
                    let mut daddr = [0; 16];
                    daddr[..4].copy_from_slice(&[198, 18, 0, 1]);
                    let key = agent_common::FlowKey {
                        cgroup_id: 1,
                        daddr,
                        dport: i as u16 + 1,
                        family: agent_common::AF_INET,
                        protocol: agent_common::IPPROTO_UDP,
                        _pad: [0; 4],
                    };
                    let now = agent::clock::BootClock::boot_now_ns();
                    let value = FlowValue {
                        first_seen_ns: now,
                        last_seen_ns: now,
                        count: 1,
                        ..Default::default()
                    };
                    (key, value)
                })
                .collect())
        }
        fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], kernel::Error> {
            Ok([0; COUNTER_SLOTS as usize])
        }
    }
    /// A ring that only drains (counting how often).
    struct Ring(Arc<Mutex<u64>>);
    impl EventSource for Ring {
        async fn next_batch(&mut self, _out: &mut Vec<KernelEvent>) -> Result<(), kernel::Error> {
            std::future::pending().await
        }
        fn drain(&mut self, _out: &mut Vec<KernelEvent>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let server = Recommender::start(TOKEN).await;
    server.script(std::iter::repeat_n(Scripted::Hang, 1000));
    let metrics = Arc::new(Metrics::new());
    let (spool, _) = Spool::open(&dir.path().join("spool"), 64 << 20).unwrap();
    let mut outputs = Outputs::new();
    // The request would wait for its answer far longer than this test runs.
    let shipper = shipper(
        &server.url(),
        &token,
        spool,
        &metrics,
        Duration::from_secs(3600),
    );
    outputs.add_shipper(shipper, &metrics);
    let mut pipeline = Pipeline::new(
        "test-node".into(),
        IdentityCache::new(CgroupResolver::new(dir.path().to_owned(), Duration::ZERO)),
        agent::pod_source::PodSource::None,
        DnsCache::new(Duration::from_secs(60), 100),
        Arc::clone(&metrics),
    );
    let table = GrowingTable {
        reads: Mutex::new(0),
    };
    let drains = Arc::new(Mutex::new(0));
    let mut ring = Ring(Arc::clone(&drains));
    let shutdown = async {
        // A request hangs; then the loop must go on draining and flushing, many times over.
        until("a request to hang", || !server.log().is_empty()).await;
        let at_hang = *drains.lock().unwrap();
        until("the main loop to go on", || {
            *drains.lock().unwrap() >= at_hang + 30
                && metric(&metrics, "egress_agent_spool_batches") >= 30
        })
        .await;
    };
    let looped = tokio::time::timeout(
        Duration::from_secs(120),
        main_loop(
            &table,
            &mut ring,
            &mut pipeline,
            &mut outputs,
            Duration::from_millis(10),
            std::future::pending(),
            shutdown,
        ),
    )
    .await;
    looped.expect("the main loop stalled").unwrap();
    assert_eq!(server.log().len(), 1, "one request, still hanging");
    assert!(server.batch_ids().is_empty());
    // At exit the grace period bounds the wait for the hanging request; the batches stay spooled.
    outputs.finish().await.unwrap();
    assert!(metric(&metrics, "egress_agent_spool_batches") >= 30);
}

/// https with a private CA given by --ca-file; the same server is refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;

    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    // A CA and a server certificate for 127.0.0.1, made for this test.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ingest = Arc::new(recommender::Ingest::default());
    *ingest.token.lock().unwrap() = TOKEN.into();
    let app = Recommender::router(Arc::clone(&ingest));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    let url = format!("https://{addr}");
    let batch = agent::ship::Batch {
        key: "0000000000000000".into(),
        id: "test-node:1:0".into(),
        records: 2,
        body: flow_model::batch::encode(&records([1, 2]), flow_model::batch::Encoding::Gzip).into(),
    };
    let trusted = Client::new(&url, &token, Some(&ca_file), Duration::from_secs(5)).unwrap();
    assert_eq!(trusted.post(&batch).await, agent::ship::Outcome::Delivered);
    assert_eq!(ingest.batches.lock().unwrap().len(), 1);

    // The system's roots do not know this CA: the handshake fails, and the batch is kept.
    let untrusted = Client::new(&url, &token, None, Duration::from_secs(5)).unwrap();
    let outcome = untrusted.post(&batch).await;
    assert!(
        matches!(
            outcome,
            agent::ship::Outcome::Retry {
                reason: agent::metrics::DeliveryFailure::Connect,
                ..
            }
        ),
        "{outcome:?}"
    );
}
