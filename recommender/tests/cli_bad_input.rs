//! Bad input to every file and argument the commands read: a clear one-line `error: ...` on
//! stderr naming the input, and exit code 2. Runs the built binary.

use std::path::PathBuf;
use std::process::{Command, Output};

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

fn run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recommender"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the recommender binary runs")
}

/// Asserts exit 2 and a single `error:` line containing every `expected` part; returns it.
fn bad(args: Vec<String>, expected: &[&str]) -> String {
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "args {args:?}\nstderr: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    for part in expected {
        assert!(errors[0].contains(part), "{part:?} not in {:?}", errors[0]);
    }
    assert!(out.stdout.is_empty(), "nothing on stdout on bad input");
    errors[0].to_string()
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn recommend(cluster: Vec<String>, flows: &str) -> Vec<String> {
    let mut a = args(&["recommend"]);
    a.extend(cluster);
    a.extend(["--flows".to_string(), flows.to_string()]);
    a
}

#[test]
fn cluster_file_missing() {
    let missing = fixture("cluster/nope.yaml");
    bad(
        recommend(args(&["--cluster", &missing]), &fixture("flows.jsonl")),
        &[&missing, "cannot read"],
    );
}

#[test]
fn cluster_file_bad_yaml_names_line_and_column() {
    let file = fixture("bad/syntax.yaml");
    let e = bad(
        recommend(args(&["--cluster", &file]), &fixture("flows.jsonl")),
        &[&file, "not valid YAML"],
    );
    assert!(
        e.contains(&format!("{file}:7:")) || e.contains(&format!("{file}:6:")),
        "{e}"
    );
}

#[test]
fn cluster_file_bad_json_names_line_and_column() {
    let file = fixture("bad/syntax.json");
    bad(
        recommend(args(&["--cluster", &file]), &fixture("flows.jsonl")),
        &[&format!("{file}:5:"), "not valid JSON"],
    );
}

#[test]
fn cluster_file_bad_object_names_document_kind_and_name() {
    let file = fixture("bad/object.yaml");
    bad(
        recommend(args(&["--cluster", &file]), &fixture("flows.jsonl")),
        &[&file, "document 2", "Pod shop/web-0"],
    );
    let file = fixture("bad/no-kind.yaml");
    bad(
        recommend(args(&["--cluster", &file]), &fixture("flows.jsonl")),
        &[&file, "no `kind`"],
    );
}

#[test]
fn flows_file_missing_or_bad() {
    let missing = fixture("nope.jsonl");
    bad(
        recommend(cluster_args(), &missing),
        &[&missing, "cannot read"],
    );
    let file = fixture("bad/flows.jsonl");
    bad(
        recommend(cluster_args(), &file),
        &[&format!("{file}:2:"), "not a FlowRecord"],
    );
    // The same for verify, which reads flows too.
    let mut v = args(&["verify"]);
    v.extend(cluster_args());
    v.extend(args(&[
        "--flows",
        &file,
        "--policies",
        &fixture("policies/shop.yaml"),
    ]));
    bad(v, &[&format!("{file}:2:")]);
}

#[test]
fn policies_file_missing_or_bad() {
    let verify = |policies: &str| {
        let mut v = args(&["verify"]);
        v.extend(cluster_args());
        v.extend(args(&[
            "--flows",
            &fixture("flows.jsonl"),
            "--policies",
            policies,
        ]));
        v
    };
    let missing = fixture("policies/nope.yaml");
    bad(verify(&missing), &[&missing, "cannot read"]);
    let file = fixture("bad/syntax.yaml");
    bad(verify(&file), &[&file, "not valid YAML"]);
    let file = fixture("bad/policy.yaml");
    bad(
        verify(&file),
        &[&file, "document 1", "NetworkPolicy shop/web-egress"],
    );
    // evaluate reads policies as well.
    let mut e = args(&["evaluate"]);
    e.extend(cluster_args());
    e.extend(args(&[
        "--policies",
        &file,
        "--from",
        "shop/web-5d8f7c9b4-x2k4q",
        "--to",
        "10.96.10.20",
        "--port",
        "80",
    ]));
    bad(e, &["NetworkPolicy shop/web-egress"]);
}

fn evaluate(from: &str, to: &str, port: &str, protocol: &str) -> Vec<String> {
    let mut e = args(&["evaluate"]);
    e.extend(cluster_args());
    e.extend(args(&[
        "--policies",
        &fixture("policies/shop.yaml"),
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
        "--protocol",
        protocol,
    ]));
    e
}

#[test]
fn evaluate_bad_arguments() {
    let web = "shop/web-5d8f7c9b4-x2k4q";
    bad(
        evaluate("shop/nosuch", "10.96.10.20", "80", "TCP"),
        &["--from shop/nosuch", "no such pod"],
    );
    bad(
        evaluate(web, "data/nosuch", "80", "TCP"),
        &["--to data/nosuch", "no such pod"],
    );
    bad(
        evaluate("10.0.0.999", "10.96.10.20", "80", "TCP"),
        &["--from 10.0.0.999", "neither"],
    );
    bad(evaluate(web, "10.96.10.20", "0", "TCP"), &["--port 0"]);
    bad(evaluate(web, "10.96.10.20", "70000", "TCP"), &["70000"]);
    bad(evaluate(web, "10.96.10.20", "http", "TCP"), &["http"]);
    bad(
        evaluate(web, "10.96.10.20", "80", "ICMP"),
        &["--protocol", "ICMP"],
    );
    // A Service port that does not exist carries nothing.
    bad(
        evaluate(web, "10.96.10.20", "81", "TCP"),
        &["--to 10.96.10.20", "Service shop/api has no port 81/TCP"],
    );
}

#[test]
fn usage_errors() {
    // No command at all: clap's usage on stderr.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: recommender <COMMAND>"));
    bad(args(&["recommend", "--flows", "x"]), &["--cluster"]);
    bad(args(&["nosuchcommand"]), &["nosuchcommand"]);
    let mut r = recommend(cluster_args(), &fixture("flows.jsonl"));
    r.extend(args(&["--cidr-prefix-v4", "33"]));
    bad(r, &["33"]);
    let mut r = recommend(cluster_args(), &fixture("flows.jsonl"));
    r.extend(args(&["--cluster-cidr", "10.244.0.0/99"]));
    bad(r, &["10.244.0.0/99"]);
}

#[test]
fn help_is_not_an_error() {
    let out = run(&args(&["--help"]));
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["recommend", "verify", "evaluate"] {
        assert!(help.contains(command), "{help}");
    }
}
