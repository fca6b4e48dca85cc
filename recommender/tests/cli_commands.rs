//! `verify`, `evaluate` and `recommend` end to end on the fixture cluster, through the binary.
//!
//! The policy fixture (`fixtures/policies/shop.yaml`) lets shop/web reach the cluster DNS and the
//! `api` pods on 8080 only; the api-v2 backend listens on 9090, so a connection to the `api`
//! Service is denied for one of its two backends.

use std::path::PathBuf;
use std::process::{Command, Output};

const WEB: &str = "shop/web-5d8f7c9b4-x2k4q";

fn fixture(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
        .display()
        .to_string()
}

fn cluster_args() -> Vec<String> {
    let mut args = vec!["--cluster".to_string()];
    for f in [
        "nodes.yaml",
        "kube-system.yaml",
        "default.yaml",
        "shop.yaml",
        "data.json",
    ] {
        args.push(fixture(&format!("cluster/{f}")));
    }
    args
}

fn run(command: &str, more: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_recommender"))
        .arg(command)
        .args(cluster_args())
        .args(more)
        .env_remove("RUST_LOG")
        .output()
        .expect("the recommender binary runs");
    (
        out.status.code().expect("exit code, not a signal"),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn evaluate(from: &str, to: &str, port: &str, protocol: &str) -> (i32, String) {
    let policies = fixture("policies/shop.yaml");
    let (code, stdout, stderr) = run(
        "evaluate",
        &[
            "--policies",
            &policies,
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "--protocol",
            protocol,
        ],
    );
    assert!(!stderr.contains("error:"), "{stderr}");
    (code, stdout)
}

#[test]
fn verify_lists_each_denied_connection_and_exits_1() {
    let (flows, policies) = (fixture("flows.jsonl"), fixture("policies/shop.yaml"));
    let (code, stdout, stderr) = run("verify", &["--flows", &flows, "--policies", &policies]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{WEB} -> ")) && l.contains(": denied: ")),
        "{stdout}"
    );
    // Through the Service, only the backend on the port the policy forgot.
    let api: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("via Service shop/api"))
        .collect();
    assert_eq!(api.len(), 1);
    assert!(
        api[0].contains("TCP 9090 to shop/api-v2-7f8e9d0c1-bbbbb"),
        "{}",
        api[0]
    );
    assert!(stdout.contains("-> 10.96.0.1:443/TCP via Service default/kubernetes: denied:"));
    assert!(stdout.contains("TCP 6443 to 10.0.0.1"));
    assert!(!stdout.contains("10.96.0.10"), "DNS is allowed:\n{stdout}");
    // The host process flow is skipped, with a note.
    assert!(stderr.contains("a node process"), "{stderr}");
    assert!(
        stderr.contains("8 flows, 10 connections checked, 5 denied, 1 flows skipped"),
        "{stderr}"
    );
}

#[test]
fn verify_exits_0_when_nothing_is_denied() {
    // The cluster files hold no policies; an empty policies file isolates nothing.
    let dir = std::env::temp_dir().join(format!("cli_commands_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("none.yaml");
    std::fs::write(&empty, "# no policies\n").unwrap();
    let flows = fixture("flows.jsonl");
    let (code, stdout, stderr) = run(
        "verify",
        &["--flows", &flows, "--policies", empty.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn evaluate_through_a_service_names_the_denied_backend() {
    let (code, out) = evaluate(WEB, "10.96.10.20", "80", "TCP");
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("denied: through Service shop/api, 1 of 2 backends denied: shop/api-v2-7f8e9d0c1-bbbbb (10.244.2.21:9090)"), "{out}");
    assert!(
        out.contains("backend shop/api-v1-6c7d8e9f0-aaaaa (10.244.1.20:8080): allowed:"),
        "{out}"
    );
}

#[test]
fn evaluate_allowed_through_the_dns_service_and_directly() {
    let (code, out) = evaluate(WEB, "10.96.0.10", "53", "udp");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("allowed: through Service kube-system/kube-dns to all 2 backends"),
        "{out}"
    );
    // Straight to the api-v1 pod by name, on its container port.
    let (code, out) = evaluate(WEB, "shop/api-v1-6c7d8e9f0-aaaaa", "8080", "TCP");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allowed"), "{out}");
}

#[test]
fn evaluate_denied_to_pods_and_addresses() {
    let (code, out) = evaluate(WEB, "data/postgres-0", "5432", "TCP");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "denied: egress of shop/web-5d8f7c9b4-x2k4q is isolated by shop/web-egress"
        ),
        "{out}"
    );
    let (code, out) = evaluate(WEB, "198.18.0.10", "443", "TCP");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("denied"), "{out}");
    // From outside to a pod no ingress policy isolates.
    let (code, out) = evaluate("198.18.0.1", WEB, "8080", "TCP");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allowed"), "{out}");
}

#[test]
fn recommend_prints_policies_for_the_observed_flows() {
    let flows = fixture("flows.jsonl");
    let (code, stdout, stderr) = run("recommend", &["--flows", &flows]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("kind: NetworkPolicy"), "{stdout}");
    assert!(stdout.contains("namespace: shop"), "{stdout}");
    assert!(stdout.contains("k8s-app: kube-dns"), "{stdout}");
    assert!(stdout.contains("198.18.0.10/32"), "{stdout}");
}

#[test]
fn given_policies_replace_the_cluster_files_ones_of_the_same_name() {
    let (flows, policies) = (fixture("flows.jsonl"), fixture("policies/shop.yaml"));
    let in_cluster = fixture("policies/in-cluster.yaml");
    // The cluster's allow-all shop/web-egress would allow everything; the given one replaces it.
    let (code, stdout, stderr) = run(
        "verify",
        &[
            "--cluster",
            &in_cluster,
            "--flows",
            &flows,
            "--policies",
            &policies,
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    // The cluster's data/postgres-ingress still applies.
    let (code, stdout, _) = run(
        "evaluate",
        &[
            "--cluster",
            &in_cluster,
            "--policies",
            &policies,
            "--from",
            "data/debug",
            "--to",
            "data/postgres-0",
            "--port",
            "5432",
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("data/postgres-ingress"), "{stdout}");
    // Without --policies, evaluate judges with the cluster files' policies alone.
    let (code, stdout, _) = run(
        "evaluate",
        &[
            "--cluster",
            &in_cluster,
            "--from",
            WEB,
            "--to",
            "198.18.0.10",
            "--port",
            "443",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
}
