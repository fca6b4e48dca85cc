//! Durable ingest, end to end over HTTP with acknowledgements, and the store's size per million
//! edges (see BENCHMARKS.md). Not a timed test: it prints what it measured.
//!
//! ```sh
//! cargo bench -p recommender --bench ingest
//! INGEST_BENCH_RECORDS=2000000 INGEST_BENCH_SENDERS=8 cargo bench -p recommender --bench ingest
//! ```
//!
//! 1. The release `recommender serve` binary runs as a child process on 127.0.0.1 with a fresh
//!    redb store and the fixture cluster. Several senders (tokio tasks on one keep-alive
//!    connection each) POST batches the way agents do: gzip, an `X-Batch-Id` each, at most 5,000
//!    records, the next one only once the previous was acknowledged (200 = durable). Bodies are
//!    encoded before the clock starts (encoding is the agents' work, not the service's).
//!    Records: 2,000 source pods of 400 workloads in 40 namespaces (pods the snapshot does not
//!    have, described by the records themselves), each calling a few of 20,000 external
//!    addresses on 6 ports, the cluster DNS and the API Service, so that batches repeat edges
//!    and keep bringing new ones.
//! 2. The embedded store alone: 1,000,000 distinct edges committed in groups of 10,000; the file
//!    size per million edges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flow_model::batch::{encode, Encoding};
use flow_model::FlowRecord;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "bench-token";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn record(rng: &mut Rng) -> FlowRecord {
    let pod = rng.below(2000);
    let workload = pod / 5;
    let namespace = workload / 10;
    let (ip, port, protocol, outcome) = match rng.below(10) {
        0 => ("10.96.0.10".to_string(), 53, "UDP", "sent"),
        1 => ("10.96.0.1".to_string(), 443, "TCP", "established"),
        _ => {
            // Each workload calls its own few addresses, most of the time.
            let address = if rng.below(20) == 0 {
                rng.below(20_000)
            } else {
                (workload * 50 + rng.below(8)) % 20_000
            };
            let ip = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + address as u32,
            );
            let port = [443, 80, 8443, 5432, 6379, 9092][rng.below(6) as usize];
            (ip.to_string(), port, "TCP", "established")
        }
    };
    let minute = rng.below(60);
    let line = serde_json::json!({
        "node": format!("node-{}", pod % 50),
        "source": {"kind": "pod", "namespace": format!("team-{namespace}"),
                   "pod": format!("app-{workload}-5d8f7c9b4-{pod:05}"),
                   "uid": format!("00000000-0000-4000-8000-{pod:012}"),
                   "container_id": format!("containerd://{pod:064}"),
                   "workload": {"kind": "Deployment", "name": format!("app-{workload}")},
                   "labels": {"app": format!("app-{workload}"), "pod-template-hash": "5d8f7c9b4"}},
        "destination": {"ip": ip, "port": port, "protocol": protocol,
                        "dns_names": if protocol == "TCP" && !ip.starts_with("10.") { vec![format!("api{}.example.test", rng.below(20_000))] } else { vec![] }},
        "first_seen": format!("2026-11-26T16:{minute:02}:00Z"),
        "last_seen": format!("2026-11-26T16:{minute:02}:30Z"),
        "count": 1 + rng.below(20), "outcome": outcome
    });
    serde_json::from_value(line).unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let total = env("INGEST_BENCH_RECORDS", 2_000_000);
    let senders = env("INGEST_BENCH_SENDERS", 8);
    let per_batch = env("INGEST_BENCH_BATCH", 5_000);
    let store_edges = env("INGEST_BENCH_STORE_EDGES", 1_000_000);
    let dir = std::env::temp_dir().join(format!("ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();

    let batches = total.div_ceil(per_batch);
    eprintln!("ingest: encoding {batches} batches of {per_batch} records (gzip)...");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bodies: Vec<(String, Bytes, usize)> = (0..batches)
        .map(|b| {
            let n = per_batch.min(total - b * per_batch);
            let records: Vec<_> = (0..n).map(|_| record(&mut rng)).collect();
            (
                format!("bench:{b}"),
                Bytes::from(encode(&records, Encoding::Gzip)),
                n,
            )
        })
        .collect();
    let wire: usize = bodies.iter().map(|(_, b, _)| b.len()).sum();

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recommender"))
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .arg("--store")
        .arg(dir.join("store.redb"))
        .arg("--cluster")
        .args(
            [
                "nodes.yaml",
                "kube-system.yaml",
                "default.yaml",
                "shop.yaml",
                "data.json",
            ]
            .map(|f| fixtures.join(f)),
        )
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the recommender binary runs");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines.next().expect("serve starts").unwrap();
        if let Some(addr) = line.strip_prefix("recommender: listening on ") {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..senders)
            .map(|_| {
                let (bodies, next, acked, addr) = (
                    Arc::clone(&bodies),
                    Arc::clone(&next),
                    Arc::clone(&acked),
                    addr.clone(),
                );
                tokio::spawn(async move {
                    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(1)
                        .build_http();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some((id, body, n)) = bodies.get(i) else {
                            break;
                        };
                        let request = http::Request::post(format!("http://{addr}/v1/flows"))
                            .header("authorization", format!("Bearer {TOKEN}"))
                            .header("content-encoding", "gzip")
                            .header("x-batch-id", id)
                            .body(Full::new(body.clone()))
                            .unwrap();
                        let response = client.request(request).await.expect("an answer");
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        assert_eq!(status, 200, "batch {id}");
                        acked.fetch_add(*n as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    let records = acked.load(Ordering::Relaxed);
    let rate = records as f64 / elapsed.as_secs_f64();
    let metrics = runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let response = client
            .get(format!("http://{addr}/metrics").parse().unwrap())
            .await
            .unwrap();
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    });
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let edges = sample("egress_recommender_edges");
    let skipped: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("egress_recommender_records_skipped_total{"))
        .map(str::to_owned)
        .collect();
    let commits = sample("egress_recommender_store_commit_batches_count");
    let commit_seconds = sample("egress_recommender_store_commit_seconds_sum");
    let cpu = server_cpu_seconds(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let store_bytes = std::fs::metadata(dir.join("store.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "ingest: {records} records in {batches} batches ({:.1} MiB gzip) from {senders} senders in {:.2} s: {:.0} records/s acknowledged durable",
        wire as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "ingest: {edges} distinct edges; {commits} commits ({:.1} batches each, {:.1} ms each on average); store {:.1} MiB",
        batches as f64 / commits.max(1.0),
        1000.0 * commit_seconds / commits.max(1.0),
        store_bytes as f64 / (1 << 20) as f64
    );

    println!(
        "ingest: server CPU {cpu:.1} s ({:.1} µs per record, {:.2} cores busy)",
        cpu * 1e6 / records.max(1) as f64,
        cpu / elapsed.as_secs_f64()
    );
    println!("ingest: {}", skipped.join(", "));
    store_size(&dir, store_edges);
    let _ = std::fs::remove_dir_all(&dir);
}

/// User and system CPU time of process `pid` so far (`/proc/PID/stat`, in clock ticks of 1/100 s).
fn server_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from after the command name (field 3 is index 0).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Commits `n` distinct edges to a fresh store and reports its size.
fn store_size(dir: &std::path::Path, n: usize) {
    use recommender::resolve::{Observation, Peer, SourceWorkload};
    use recommender::store::{Commit, Edge, EmbeddedStore};
    let path = dir.join("size.redb");
    let store = EmbeddedStore::open_or_create(&path).unwrap();
    let workloads: Vec<Arc<SourceWorkload>> = (0..10_000)
        .map(|w| {
            Arc::new(SourceWorkload {
                namespace: format!("team-{}", w / 100),
                workload: flow_model::WorkloadRef {
                    kind: "Deployment".into(),
                    name: format!("app-{w}"),
                },
                selector: std::collections::BTreeMap::from([(
                    "app".to_string(),
                    format!("app-{w}"),
                )])
                .into(),
            })
        })
        .collect();
    let observed = Arc::new(Observation {
        first_seen: "2026-11-26T16:00:00Z".parse().unwrap(),
        last_seen: "2026-11-26T16:05:00Z".parse().unwrap(),
        count: 12,
        outcome: flow_model::Outcome::Established,
        outcomes: flow_model::Outcomes {
            established: 12,
            ..Default::default()
        },
        dns_names: ["api.example.test".to_string()].into(),
    });
    let started = Instant::now();
    let now = jiff::Timestamp::now();
    let mut edge = 0usize;
    while edge < n {
        let mut commit = Commit {
            acknowledged_at: now,
            ..Commit::default()
        };
        for _ in 0..10_000.min(n - edge) {
            // 100 edges per workload: 50 addresses on 2 ports.
            let w = edge / 100;
            let address = (w * 50 + (edge % 100) / 2) as u32;
            commit.edges.push(Edge {
                source: Arc::clone(&workloads[w % workloads.len()]),
                peer: Arc::new(Peer::External {
                    ip: std::net::Ipv4Addr::from(
                        u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + address % 131_072,
                    )
                    .into(),
                    service: None,
                }),
                port: [443, 80][edge % 2] + (address / 131_072) as u16,
                protocol: flow_model::Protocol::Tcp,
                learned_at: now,
                observed: Arc::clone(&observed),
            });
            edge += 1;
        }
        store.commit_now(&commit).unwrap();
    }
    let elapsed = started.elapsed();
    let mut store = store;
    store.compact().unwrap();
    drop(store);
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "store: {n} distinct edges in {:.1} s; checkpointed and compacted: {:.1} MiB, {:.0} bytes per edge, {:.0} MiB per million edges",
        elapsed.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / n as f64,
        bytes as f64 / n as f64 * 1e6 / (1 << 20) as f64
    );
    let _ = Duration::ZERO;
}
