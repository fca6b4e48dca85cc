//! The `recommend` and `verify` commands on a large flows file: wall time and peak RSS of the
//! release binary, measured by `/usr/bin/time -v`.
//!
//! Not a timed test: run it by hand and record the figures in BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p recommender --bench recommend_file
//! FLOWS_BENCH_MB=20 FLOWS_BENCH_RUNS=1 cargo bench -p recommender --bench recommend_file
//! FLOWS_BENCH_GENERATE_ONLY=1 cargo bench -p recommender --bench recommend_file   # files only
//! FLOWS_BENCH_BIN=/path/to/another/recommender cargo bench ...   # another build (before/after)
//! ```
//!
//! It writes a cluster snapshot and a flows file of about `FLOWS_BENCH_MB` MB (default 200) to
//! `FLOWS_BENCH_DIR` (default `$TMPDIR/recommend-file-bench`), then runs `recommend` (its YAML
//! kept as the policies) and `verify` against it `FLOWS_BENCH_RUNS` times (default 3) each, and
//! prints every run and the medians.
//!
//! The cluster: namespaces of 10 Deployments × 3 pods, each Deployment behind a Service (port 80 to
//! targetPort 8080), CoreDNS behind `kube-system/kube-dns`, the API server behind
//! `default/kubernetes`, 200 pods per node. Each pod reaches 18 destinations: cluster DNS over UDP
//! and TCP, the API server, three Services of its namespace and two of others, one pod directly,
//! eight external addresses on 443 (with DNS names, shared by the Deployment's pods) and one NTP
//! server over UDP. Agents report deltas: every flow appears once per flush, six flushes. Each node
//! adds the kubelet's flow to the API server (a node process). Namespaces are added until the file
//! reaches the size asked for (about 3,900 pods and 420,000 records for 200 MB).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const DEPLOYMENTS_PER_NAMESPACE: usize = 10;
const REPLICAS: usize = 3;
const PODS_PER_NODE: usize = 200;
const FLUSHES: usize = 6;
const EXTERNAL_PER_WORKLOAD: usize = 8;
const API_SERVER: &str = "10.0.0.1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deployment `d` (global index) → its namespace index and name.
fn deployment(d: usize) -> (usize, String) {
    (
        d / DEPLOYMENTS_PER_NAMESPACE,
        format!("app-{:02}", d % DEPLOYMENTS_PER_NAMESPACE),
    )
}

fn namespace(n: usize) -> String {
    format!("ns-{n:04}")
}

/// Pod `p` (global index): node `p / PODS_PER_NODE`, inside that node's /24.
fn pod_ip(p: usize) -> String {
    let node = p / PODS_PER_NODE;
    format!("10.244.{}.{}", node, p % PODS_PER_NODE + 2)
}

fn node_name(node: usize) -> String {
    format!("node-{node:03}")
}

fn node_ip(node: usize) -> String {
    format!("10.0.{}.{}", 1 + node / 250, node % 250 + 1)
}

fn service_ip(d: usize) -> String {
    format!("10.96.{}.{}", 1 + d / 250, d % 250 + 1)
}

fn pod_name(p: usize) -> String {
    let d = p / REPLICAS;
    format!("{}-7c9d8f6b5-{:05}", deployment(d).1, p)
}

fn uid(p: usize) -> String {
    format!("5f0e0000-0000-4000-8000-{p:012}")
}

/// The destinations of pod `p` out of `deployments` in all: (ip, port, protocol, dns name).
fn destinations(p: usize, deployments: usize) -> Vec<(String, u16, &'static str, Option<String>)> {
    let d = p / REPLICAS;
    let (ns, _) = deployment(d);
    let first = ns * DEPLOYMENTS_PER_NAMESPACE;
    let mut out = vec![
        ("10.96.0.10".to_owned(), 53, "UDP", None),
        ("10.96.0.10".to_owned(), 53, "TCP", None),
        ("10.96.0.1".to_owned(), 443, "TCP", None),
    ];
    for k in 1..=3 {
        let peer = first + (d - first + k) % DEPLOYMENTS_PER_NAMESPACE;
        out.push((service_ip(peer), 80, "TCP", None));
    }
    for k in 1..=2 {
        let peer = (d * 7 + k * 131) % deployments;
        out.push((service_ip(peer), 80, "TCP", None));
    }
    let direct = ((d + 1) % deployments) * REPLICAS;
    out.push((pod_ip(direct), 8080, "TCP", None));
    for e in 0..EXTERNAL_PER_WORKLOAD {
        let n = d * EXTERNAL_PER_WORKLOAD + e;
        let ip = format!("100.{}.{}.{}", 64 + n / 65536, (n / 256) % 256, n % 256);
        out.push((
            ip,
            443,
            "TCP",
            Some(format!("api-{n}.partner.example.test")),
        ));
    }
    out.push(("192.0.2.123".to_owned(), 123, "UDP", None));
    out
}

/// Writes every flush's records of namespace `n` (`deployments` deployments so far).
fn namespace_records(n: usize, out: &mut String) {
    let deployments = (n + 1) * DEPLOYMENTS_PER_NAMESPACE;
    for flush in 0..FLUSHES {
        let first = format!("2026-11-26T{:02}:00:00Z", 8 + flush);
        let last = format!("2026-11-26T{:02}:59:59Z", 8 + flush);
        for d in n * DEPLOYMENTS_PER_NAMESPACE..(n + 1) * DEPLOYMENTS_PER_NAMESPACE {
            let (_, name) = deployment(d);
            for p in d * REPLICAS..(d + 1) * REPLICAS {
                let source = json!({
                    "kind": "pod", "namespace": namespace(n), "pod": pod_name(p), "uid": uid(p),
                    "container_id": format!("containerd://{:064x}", p),
                    "workload": {"kind": "Deployment", "name": name},
                    "labels": {"app": name, "pod-template-hash": "7c9d8f6b5"},
                });
                // Destinations only among the deployments that exist so far: the file stays
                // valid whichever namespace it stops at.
                for (ip, port, protocol, dns) in destinations(p, deployments) {
                    let mut destination = json!({"ip": ip, "port": port, "protocol": protocol});
                    if let Some(dns) = dns {
                        destination["dns_names"] = json!([dns]);
                    }
                    let udp = protocol == "UDP";
                    let mut record = json!({
                        "node": node_name(p / PODS_PER_NODE), "source": source,
                        "destination": destination, "first_seen": first, "last_seen": last,
                        "count": 3 + (p + flush) % 5,
                        "outcome": if udp { "sent" } else { "established" },
                    });
                    if !udp {
                        record["outcomes"] =
                            json!({"established": 3 + (p + flush) % 5, "refused": 0, "timeout": 0});
                    }
                    writeln!(out, "{record}").unwrap();
                }
            }
        }
    }
}

fn kubelet_records(nodes: usize, out: &mut String) {
    for node in 0..nodes {
        let record = json!({
            "node": node_name(node), "source": {"kind": "host"},
            "destination": {"ip": API_SERVER, "port": 6443, "protocol": "TCP"},
            "first_seen": "2026-11-26T08:00:00Z", "last_seen": "2026-11-26T13:59:59Z",
            "count": 120, "outcome": "established",
        });
        writeln!(out, "{record}").unwrap();
    }
}

fn cluster(namespaces: usize, nodes: usize) -> Value {
    let mut items = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default",
               "labels": {"kubernetes.io/metadata.name": "default"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system",
               "labels": {"kubernetes.io/metadata.name": "kube-system"}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default"},
               "spec": {"clusterIP": "10.96.0.1", "ports": [
                   {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "kubernetes"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": [API_SERVER], "conditions": {"ready": true}}],
               "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "coredns", "namespace": "kube-system"},
               "spec": {"selector": {"matchLabels": {"k8s-app": "kube-dns"}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kube-dns", "namespace": "kube-system"},
               "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}, "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}),
    ];
    for (i, ip) in ["10.0.0.250", "10.0.0.251"].iter().enumerate() {
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("coredns-5d78c9869d-{i}"), "namespace": "kube-system",
                         "uid": format!("0d1e0000-0000-4000-8000-00000000000{i}"),
                         "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": "coredns-5d78c9869d", "uid": "0d1e0000-0000-4000-8000-0000000000f0",
                             "controller": true}]},
            "spec": {"nodeName": node_name(0), "containers": [{"name": "coredns", "image": "coredns:1.11",
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip}}));
    }
    items.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "coredns-5d78c9869d", "namespace": "kube-system",
                     "uid": "0d1e0000-0000-4000-8000-0000000000f0",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                         "name": "coredns", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"}}}}));
    for node in 0..nodes {
        items.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name(node)},
            "spec": {"podCIDR": format!("10.244.{node}.0/24")},
            "status": {"addresses": [{"type": "InternalIP", "address": node_ip(node)}]}}),
        );
    }
    for n in 0..namespaces {
        let ns = namespace(n);
        items.push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"kubernetes.io/metadata.name": ns}}}),
        );
        for d in n * DEPLOYMENTS_PER_NAMESPACE..(n + 1) * DEPLOYMENTS_PER_NAMESPACE {
            let (_, name) = deployment(d);
            let rs = format!("{name}-7c9d8f6b5");
            let rs_uid = format!("5f0e0000-0000-4000-9000-{d:012}");
            items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": name}}}}));
            items.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs, "namespace": ns, "uid": rs_uid,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": name, "controller": true}]},
                "spec": {"selector": {"matchLabels": {"app": name, "pod-template-hash": "7c9d8f6b5"}}}}));
            items.push(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": service_ip(d), "selector": {"app": name}, "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}));
            for p in d * REPLICAS..(d + 1) * REPLICAS {
                items.push(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name(p), "namespace": ns, "uid": uid(p),
                                 "labels": {"app": name, "pod-template-hash": "7c9d8f6b5"},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": rs, "uid": rs_uid, "controller": true}]},
                    "spec": {"nodeName": node_name(p / PODS_PER_NODE), "containers": [
                        {"name": "main", "image": "registry.example.test/app:1",
                         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
                    "status": {"phase": "Running", "podIP": pod_ip(p)}}));
            }
        }
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Writes the cluster and flows files of about `megabytes` MB; returns their paths.
fn generate(dir: &Path, megabytes: usize) -> (PathBuf, PathBuf, usize) {
    std::fs::create_dir_all(dir).expect("bench directory");
    let flows_path = dir.join("flows.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&flows_path).expect("flows file"));
    let target = megabytes * 1_000_000;
    let (mut written, mut namespaces, mut records) = (0usize, 0usize, 0usize);
    let mut chunk = String::new();
    while written < target {
        chunk.clear();
        namespace_records(namespaces, &mut chunk);
        file.write_all(chunk.as_bytes()).expect("write flows");
        written += chunk.len();
        records += chunk.lines().count();
        namespaces += 1;
    }
    let pods = namespaces * DEPLOYMENTS_PER_NAMESPACE * REPLICAS;
    let nodes = pods.div_ceil(PODS_PER_NODE);
    assert!(
        nodes <= 256,
        "at most 256 nodes of 200 pods: ask for fewer MB"
    );
    chunk.clear();
    kubelet_records(nodes, &mut chunk);
    file.write_all(chunk.as_bytes()).expect("write flows");
    records += nodes;
    file.flush().expect("write flows");
    let cluster_path = dir.join("cluster.json");
    std::fs::write(
        &cluster_path,
        serde_json::to_string(&cluster(namespaces, nodes)).unwrap(),
    )
    .expect("cluster file");
    println!(
        "recommend_file: {} ({:.0} MB, {records} records, {pods} pods, {namespaces} namespaces, {nodes} nodes), {}",
        flows_path.display(),
        (written as f64) / 1e6,
        cluster_path.display()
    );
    (cluster_path, flows_path, records)
}

/// One run under `/usr/bin/time -v`: wall seconds, CPU seconds (user + system), peak RSS MiB and
/// exit code. On a shared machine the CPU time is what the command costs; the wall time adds the
/// waiting.
fn timed(args: &[&str], stdout: Option<&Path>) -> (f64, f64, f64, i32) {
    let mut command = Command::new("/usr/bin/time");
    command
        .arg("-v")
        .arg(
            std::env::var_os("FLOWS_BENCH_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_recommender").into()),
        )
        .args(args)
        .stderr(Stdio::piped());
    command.stdout(match stdout {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("output file")),
        None => Stdio::null(),
    });
    let output = command
        .output()
        .expect("/usr/bin/time runs (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{stderr}"))
            .trim()
            .to_owned()
    };
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .split(':')
        .fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().unwrap());
    let rss_kib: f64 = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap();
    let cpu = field("User time (seconds):").parse::<f64>().unwrap()
        + field("System time (seconds):").parse::<f64>().unwrap();
    let code = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Exit status:"))
        .map(|c| c.trim().parse().unwrap())
        .unwrap_or(-1);
    (wall, cpu, rss_kib / 1024.0, code)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let megabytes = env_usize("FLOWS_BENCH_MB", 200);
    let runs = env_usize("FLOWS_BENCH_RUNS", 3).max(1);
    let dir = std::env::var_os("FLOWS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("recommend-file-bench"));
    let (cluster, flows, _) = generate(&dir, megabytes);
    if std::env::var_os("FLOWS_BENCH_GENERATE_ONLY").is_some() {
        return;
    }
    let policies = dir.join("policies.yaml");
    let (cluster, flows, policies_arg) = (
        cluster.to_str().unwrap(),
        flows.to_str().unwrap(),
        policies.to_str().unwrap(),
    );
    let recommend = ["recommend", "--cluster", cluster, "--flows", flows];
    let verify = [
        "verify",
        "--cluster",
        cluster,
        "--flows",
        flows,
        "--policies",
        policies_arg,
    ];
    println!(
        "  /usr/bin/time -v recommender {} > {policies_arg}",
        recommend.join(" ")
    );
    println!("  /usr/bin/time -v recommender {}", verify.join(" "));
    let mut table = Vec::new();
    for (what, args, out) in [
        ("recommend", &recommend[..], Some(policies.as_path())),
        ("verify", &verify[..], None),
    ] {
        let (mut walls, mut cpus, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=runs {
            let (wall, cpu, rss, code) = timed(args, out);
            assert_eq!(code, 0, "{what} exited {code}");
            println!(
                "  {what:<9} run {run}: {wall:>7.2} s wall, {cpu:>6.2} s CPU, {rss:>6.0} MiB peak RSS"
            );
            walls.push(wall);
            cpus.push(cpu);
            peaks.push(rss);
        }
        table.push((what, median(walls), median(cpus), median(peaks)));
    }
    for (what, wall, cpu, rss) in table {
        println!(
            "  {what:<9} median: {wall:>7.2} s wall, {cpu:>6.2} s CPU, {rss:>6.0} MiB peak RSS"
        );
    }
}
