//! Synthesis and verification at scale: 10,000 workloads, 1,000,000 distinct flow edges.
//!
//! Not a timed test: run it by hand and record the figures in BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p recommender --bench synth_scale
//! SYNTH_BENCH_WORKLOADS=1000 SYNTH_BENCH_EDGES_PER_WORKLOAD=100 cargo bench -p recommender --bench synth_scale
//! ```
//!
//! Each workload (100 per namespace) makes 100 distinct edges: DNS, the API server, 10 other
//! workloads (half of them in other namespaces) on 5 ports each, and 24 external addresses on 2
//! ports each. The input is shared the way a `Resolver` shares it: one `Arc` per source workload
//! and per distinct peer, one record per flow edge. Peak memory is `getrusage(RUSAGE_SELF).ru_maxrss`, read after each phase, so the
//! figures show what the input itself takes and what synthesis and verification add.
//!
//! Each phase is given in wall time and in the process's CPU time (user + system, from
//! `getrusage`): the bench is single-threaded, so on a machine shared with other work the CPU
//! time is what the phase costs, and the wall time adds the waiting. The allocator is the one the
//! `recommender` binary uses, with its settings (`recommender::allocator`), so the figures are the
//! command's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use flow_model::{FlowRecord, Outcome, Protocol, WorkloadRef};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use recommender::cluster::Cluster;
use recommender::policy::{Connection, Endpoint, PodSelector, PolicySet};
use recommender::resolve::{Observation, Peer, ResolvedFlow, SourceWorkload};
use recommender::synth::{recommend, render, Options};

#[global_allocator]
static GLOBAL: recommender::allocator::Allocator = recommender::allocator::Allocator {};

fn usage() -> libc::rusage {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let u = usage();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Wall and CPU seconds since `start`.
struct Phase {
    wall: Instant,
    cpu: f64,
}

impl Phase {
    fn start() -> Phase {
        Phase {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn end(&self) -> (f64, f64) {
        (self.wall.elapsed().as_secs_f64(), cpu_seconds() - self.cpu)
    }
}

fn max_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.ru_maxrss as f64 / 1024.0 // KiB on Linux
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const PER_NAMESPACE: usize = 100;

fn namespace(i: usize) -> String {
    format!("ns-{:03}", i / PER_NAMESPACE)
}

fn name(i: usize) -> String {
    format!("w-{i:05}")
}

fn selector(i: usize) -> PodSelector {
    BTreeMap::from([("app".to_owned(), name(i))]).into()
}

fn generate(workloads: usize, per_workload: usize) -> Vec<ResolvedFlow> {
    let template: FlowRecord = serde_json::from_str(
        r#"{"node":"n","source":{"kind":"pod"},"destination":{"ip":"0.0.0.0","port":1,"protocol":"TCP"},
            "first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T17:00:00Z","count":1,"outcome":"established"}"#,
    )
    .unwrap();
    let dns = Arc::new(Peer::Pods {
        namespace: "kube-system".into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: "coredns".into(),
        },
        selector: BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]).into(),
        service: Some("kube-dns".into()),
        cluster_dns: true,
    });
    let apiserver = Arc::new(Peer::ApiServer {
        ip: IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2)),
    });
    // Each workload as a peer, reached directly (not through a Service).
    let pods: Vec<Arc<Peer>> = (0..workloads)
        .map(|j| {
            Arc::new(Peer::Pods {
                namespace: namespace(j),
                workload: WorkloadRef {
                    kind: "Deployment".into(),
                    name: name(j),
                },
                selector: selector(j),
                service: None,
                cluster_dns: false,
            })
        })
        .collect();
    let mut flows = Vec::with_capacity(workloads * per_workload);
    for i in 0..workloads {
        let source = Arc::new(SourceWorkload {
            namespace: namespace(i),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: name(i),
            },
            selector: selector(i),
        });
        let mut edges: Vec<(Arc<Peer>, u16, Protocol)> = Vec::with_capacity(per_workload);
        edges.push((Arc::clone(&dns), 53, Protocol::Udp));
        edges.push((Arc::clone(&apiserver), 6443, Protocol::Tcp));
        let mut k = 0usize;
        while edges.len() < per_workload {
            if k < 10 {
                // another workload: half in this namespace, half elsewhere
                let j = if k.is_multiple_of(2) {
                    (i / PER_NAMESPACE) * PER_NAMESPACE + (i + k + 1) % PER_NAMESPACE
                } else {
                    (i * 7 + k * 13 + 1) % workloads
                };
                let j = j.min(workloads - 1);
                for p in 0..5u16 {
                    edges.push((
                        Arc::clone(&pods[j]),
                        8000 + (k as u16) * 10 + p,
                        Protocol::Tcp,
                    ));
                }
            } else {
                // external addresses from 100.64.0.0/10, 24 per workload
                let n = (i * 24 + (k - 10) % 24) as u32;
                let ip = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n));
                let peer = Arc::new(Peer::External { ip, service: None });
                for port in [443, 8443 + ((k % 3) as u16)] {
                    edges.push((Arc::clone(&peer), port, Protocol::Tcp));
                }
            }
            k += 1;
        }
        edges.truncate(per_workload);
        for (peer, port, protocol) in edges {
            let mut record = template.clone();
            record.destination.port = port;
            record.destination.protocol = protocol;
            if protocol == Protocol::Udp {
                record.outcome = Outcome::Sent;
            }
            flows.push(ResolvedFlow {
                source: Arc::clone(&source),
                peer,
                port,
                protocol,
                observed: Arc::new(Observation::of(&record)),
            });
        }
    }
    flows
}

fn endpoint(namespace: &str, selector: &PodSelector) -> Endpoint {
    Endpoint::Pod {
        namespace: namespace.to_owned(),
        name: String::new(),
        labels: selector.match_labels.clone(),
        namespace_labels: BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        )]),
        ip: None,
        ports: Vec::new(),
        node_ips: Vec::new(),
    }
}

fn main() {
    recommender::allocator::configure();
    let workloads = env_usize("SYNTH_BENCH_WORKLOADS", 10_000);
    let per_workload = env_usize("SYNTH_BENCH_EDGES_PER_WORKLOAD", 100);
    let rss_start = max_rss_mib();

    let t = Phase::start();
    let flows = generate(workloads, per_workload);
    let generate_time = t.end();
    let rss_input = max_rss_mib();

    // The cluster DNS Service, so that DNS is allowed to its pods as in a real cluster.
    let cluster = Cluster {
        services: vec![serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}))
        .expect("a Service")],
        ..Cluster::default()
    };
    let options = Options::default();
    let t = Phase::start();
    let rec = recommend(&cluster, &flows, &options);
    let recommend_time = t.end();
    let rss_recommend = max_rss_mib();
    let t = Phase::start();
    let yaml = render(&rec);
    let render_time = t.end();
    let rss_synth = max_rss_mib();

    // Verification: what `verify` does once flows are connections (the evaluator's PolicySet,
    // then one `allows` per flow edge).
    let t = Phase::start();
    let policies: Vec<NetworkPolicy> = rec.into_network_policies();
    let set = PolicySet::new(&policies);
    let index_time = t.end();
    let t = Phase::start();
    let mut denied = 0usize;
    let mut sources: BTreeMap<&str, Endpoint> = BTreeMap::new();
    for f in &flows {
        let from = sources
            .entry(f.source.workload.name.as_str())
            .or_insert_with(|| endpoint(&f.source.namespace, &f.source.selector))
            .clone();
        let to = match &*f.peer {
            Peer::Pods {
                namespace,
                selector,
                ..
            } => endpoint(namespace, selector),
            Peer::ApiServer { ip }
            | Peer::Node { ip, .. }
            | Peer::External { ip, .. }
            | Peer::NodeLocalDns { ip } => Endpoint::Ip(*ip),
        };
        let conn = Connection {
            from,
            to,
            port: f.port,
            protocol: f.protocol,
        };
        if !set.allows(&conn) {
            denied += 1;
        }
    }
    let verify_time = t.end();
    let rss_verify = max_rss_mib();

    println!(
        "synth_scale: {workloads} workloads, {} flow edges",
        flows.len()
    );
    let line = |what: &str, (wall, cpu): (f64, f64), extra: String| {
        println!("  {what:<32} {wall:>7.3} s wall {cpu:>7.3} s CPU{extra}");
    };
    let sum = |a: (f64, f64), b: (f64, f64)| (a.0 + b.0, a.1 + b.1);
    line("generate input", generate_time, String::new());
    line("recommend", recommend_time, String::new());
    line(
        "render YAML",
        render_time,
        format!(
            "   ({:.1} MiB, {} policies)",
            yaml.len() as f64 / 1048576.0,
            policies.len()
        ),
    );
    line(
        "synthesis total",
        sum(recommend_time, render_time),
        String::new(),
    );
    line("verify: index policies", index_time, String::new());
    line(
        &format!("verify: {} connections", flows.len()),
        verify_time,
        format!("   ({denied} denied)"),
    );
    line(
        "verification total",
        sum(index_time, verify_time),
        String::new(),
    );
    println!("  peak RSS: start {rss_start:.0} MiB, after input {rss_input:.0} MiB, after recommend {rss_recommend:.0} MiB, after render {rss_synth:.0} MiB, after verification {rss_verify:.0} MiB");
    assert_eq!(
        denied, 0,
        "the recommendation must allow every observed flow"
    );
}
