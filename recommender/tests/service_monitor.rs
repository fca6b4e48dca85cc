//! Monitor mode on the real service: it counts exactly the flows the baseline denies (the
//! project's evaluator, asked directly here, says which), with bounded labels, lists them at
//! `GET /v1/unexpected`, lists the baseline rules no flow used, and keeps learning.

#[path = "service_support/mod.rs"]
mod support;

use flow_model::SourceKind;
use recommender::cluster::Cluster;
use recommender::policy::Evaluator;
use recommender::resolve::Resolver;
use support::{arg, fixture, fixture_records, web_record, Scratch, Server};

#[test]
fn baseline_files_count_exactly_the_denied_flows() {
    let records = fixture_records("flows.jsonl");
    // What the evaluator says of each record, asked directly.
    let cluster_files: Vec<_> = support::cluster_args()[1..]
        .iter()
        .map(Into::into)
        .collect::<Vec<std::path::PathBuf>>();
    let cluster = Cluster::load_files(&cluster_files).unwrap().cluster;
    let policies = Cluster::load_files(&[fixture("policies/shop.yaml")])
        .unwrap()
        .cluster
        .network_policies;
    let evaluator = Evaluator::new(&policies).unwrap();
    let mut resolver = Resolver::new(&cluster);
    let denied = records
        .iter()
        .filter(|r| r.source.kind == SourceKind::Pod)
        .filter(|r| {
            resolver
                .connections_for(r)
                .connections
                .iter()
                .any(|c| !evaluator.allows(c))
        })
        .count();
    // The fixture: web's flows to the apiserver (Service and endpoint), to an api-v2 backend on
    // a port the policy forgot, and to two external addresses.
    assert!(denied >= 3 && denied < records.len() - 1, "{denied}");

    let scratch = Scratch::new("monitor");
    let server = Server::start(
        &scratch,
        &[
            "--mode",
            "monitor",
            "--baseline",
            &arg(&fixture("policies/shop.yaml")),
        ],
    );
    assert_eq!(server.send(&records, Some("m-1")).status, 200);
    // A resend is not judged again.
    assert_eq!(server.send(&records, Some("m-1")).status, 200);
    let sample = r#"egress_recommender_unexpected_egress_total{namespace="shop",workload="web"}"#;
    assert_eq!(server.metric(sample), denied as f64);
    let metrics = support::request(server.addr, "GET", "/metrics", &[], b"").body;
    let unexpected_series: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("egress_recommender_unexpected_egress_total{"))
        .collect();
    assert_eq!(unexpected_series.len(), 1, "{unexpected_series:?}");

    let listed = server.get("/v1/unexpected");
    assert_eq!(listed.status, 200);
    let lines: Vec<serde_json::Value> = listed
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), denied);
    for line in &lines {
        assert_eq!(line["namespace"], "shop");
        assert!(
            line["reason"].as_str().unwrap().starts_with("denied"),
            "{line}"
        );
        assert_eq!(line["record"]["source"]["pod"], "web-5d8f7c9b4-x2k4q");
    }
    // Full detail in the log.
    assert!(
        server.log().contains("unexpected egress: denied"),
        "{}",
        server.log()
    );

    // Rules no flow used are listed; learning went on.
    let status: serde_json::Value = serde_json::from_str(&server.get("/v1/status").body).unwrap();
    assert_eq!(status["mode"], "monitor");
    assert_eq!(status["monitor"]["baseline"], "files");
    assert_eq!(status["monitor"]["unexpected_flows"], denied as u64);
    let rules = status["monitor"]["rules"].as_u64().unwrap();
    let unused = status["monitor"]["unused_rules"].as_array().unwrap();
    assert!((unused.len() as u64) < rules, "{status}");
    assert!(status["edges"].as_u64().unwrap() > 0);
}

#[test]
fn the_frozen_recommendation_flags_only_new_egress() {
    let scratch = Scratch::new("frozen");
    let records = fixture_records("flows.jsonl");
    // Learn first.
    let server = Server::start(&scratch, &[]);
    assert_eq!(server.send(&records, Some("learn-1")).status, 200);
    server.stop();
    // Then monitor against what was learned, frozen.
    let server = Server::start(&scratch, &["--mode", "monitor"]);
    assert_eq!(server.send(&records, Some("again-1")).status, 200);
    let sample = r#"egress_recommender_unexpected_egress_total{namespace="shop",workload="web"}"#;
    assert_eq!(server.metric(sample), 0.0, "{}", server.log());
    let new = [
        web_record("198.18.77.1", 8443, 2),
        web_record("198.18.0.10", 443, 5),
    ];
    assert_eq!(server.send(&new, Some("new-1")).status, 200);
    // The first one is new egress; the second is a known edge.
    assert_eq!(server.metric(sample), 1.0);
    assert_eq!(
        server.metric(r#"egress_recommender_unexpected_egress_connections_total{namespace="shop",workload="web"}"#),
        2.0
    );
    let listed = server.get("/v1/unexpected").body;
    assert_eq!(listed.lines().count(), 1);
    assert!(listed.contains("198.18.77.1"), "{listed}");
    let status: serde_json::Value = serde_json::from_str(&server.get("/v1/status").body).unwrap();
    assert_eq!(status["monitor"]["baseline"], "frozen");
    // Learning went on: the new edge is learned (and would be in an export).
    let policies = server.get("/v1/policies").body;
    assert!(policies.contains("198.18.77.1/32"), "{policies}");
    // Learn mode has no unexpected list.
    server.stop();
    let server = Server::start(&scratch, &[]);
    assert_eq!(server.get("/v1/unexpected").status, 404);
}
