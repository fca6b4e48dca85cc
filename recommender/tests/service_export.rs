//! The same traffic gives the same bytes whichever way it went: `recommend` on the records,
//! `GET /v1/policies` and `export --server` from the real service fed the records as deltas in
//! batches, and `export --store` from its store offline, for several option sets. Also: an
//! offline read of a store a server holds is refused at once, and status reads the same both ways.

#[path = "service_support/mod.rs"]
mod support;

use flow_model::FlowRecord;
use support::{arg, fixture_records, run, web_record, Scratch, Server};

/// `r` as two deltas: the first connection at `first_seen`, then the rest over the window.
fn split(r: &FlowRecord) -> [FlowRecord; 2] {
    let mut a = r.clone();
    let mut b = r.clone();
    a.last_seen = a.first_seen;
    a.count = 1;
    b.count = r.count.saturating_sub(1).max(1);
    let names = &r.destination.dns_names;
    a.destination.dns_names = names.iter().take(1).cloned().collect();
    b.destination.dns_names = names.iter().skip(1).cloned().collect();
    [a, b]
}

#[test]
fn export_over_http_equals_export_from_the_store_equals_recommend() {
    let scratch = Scratch::new("export");
    let mut records = fixture_records("flows.jsonl");
    // One the cluster cannot resolve (a Service port that does not exist): a note in every output.
    records.push(web_record("10.96.10.20", 9999, 1));
    records.push(web_record("198.18.0.33", 443, 7));
    // A destination whose rule needs a second look (multicast), reached by two pods: the warning
    // names the first of them by flow key, which the service sees last.
    let multicast = |pod: &str| {
        let mut r = web_record("224.0.0.251", 5353, 1);
        r.destination.protocol = flow_model::Protocol::Udp;
        r.outcome = flow_model::Outcome::Sent;
        r.outcomes = Default::default();
        r.source.pod = Some(pod.into());
        r.source.uid = None;
        r
    };
    let late_but_first = multicast("web-5d8f7c9b4-aaaaa");
    records.push(multicast("web-5d8f7c9b4-zzzzz"));
    let mut deltas: Vec<FlowRecord> = records.iter().flat_map(split).collect();
    let flows_file = scratch.path("flows.jsonl");
    std::fs::write(
        &flows_file,
        deltas
            .iter()
            .map(|r| r.to_json_line() + "\n")
            .collect::<String>(),
    )
    .unwrap();

    let server = Server::start(&scratch, &[]);
    // The deltas in three batches, second halves first.
    let (firsts, seconds): (Vec<_>, Vec<_>) = deltas
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let seconds: Vec<_> = seconds.into_iter().map(|(_, r)| r).collect();
    let firsts: Vec<_> = firsts.into_iter().map(|(_, r)| r).collect();
    assert_eq!(server.send(&seconds[..5], Some("e-1")).status, 200);
    assert_eq!(server.send(&seconds[5..], Some("e-2")).status, 200);
    assert_eq!(server.send(&firsts, None).status, 200);
    assert_eq!(
        server
            .send(std::slice::from_ref(&late_but_first), Some("e-3"))
            .status,
        200
    );
    deltas.push(late_but_first);
    std::fs::write(
        &flows_file,
        deltas
            .iter()
            .map(|r| r.to_json_line() + "\n")
            .collect::<String>(),
    )
    .unwrap();

    let option_sets: [&[&str]; 4] = [
        &[],
        &["--default-deny", "--with-ingress"],
        &["--format", "cilium", "-n", "shop"],
        &[
            "--cidr-prefix",
            "24",
            "--max-external-peers",
            "1",
            "--internet-egress",
            "label",
        ],
    ];
    let mut over_http = Vec::new();
    for options in option_sets {
        let mut args: Vec<String> = vec!["recommend".into()];
        args.extend(support::cluster_args());
        args.extend(["--flows".into(), arg(&flows_file)]);
        args.extend(options.iter().map(|s| s.to_string()));
        let (code, recommended, stderr) = run(&args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            recommended.contains("could not be resolved"),
            "{recommended}"
        );
        assert!(recommended.contains("flow records of node processes skipped"));
        assert!(
            recommended.contains("need a second look")
                && recommended.contains("web-5d8f7c9b4-aaaaa -> 224.0.0.251"),
            "{recommended}"
        );

        let mut args: Vec<String> = vec![
            "export".into(),
            "--server".into(),
            server.url(),
            "--token-file".into(),
            arg(&scratch.path("token")),
        ];
        args.extend(options.iter().map(|s| s.to_string()));
        let (code, exported, stderr) = run(&args);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(exported, recommended, "export --server {options:?}");
        over_http.push(exported);
    }
    // An offline read while the server holds the store: a clear error, at once.
    let started = std::time::Instant::now();
    let (code, _, stderr) = run(&[
        "status".into(),
        "--store".into(),
        arg(&scratch.path("store.redb")),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (code, status_http, stderr) = run(&[
        "status".into(),
        "--server".into(),
        server.url(),
        "--token-file".into(),
        arg(&scratch.path("token")),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(status_http.contains("Deployment/web"), "{status_http}");
    server.stop();

    for (options, http) in option_sets.iter().zip(&over_http) {
        let mut args: Vec<String> = vec![
            "export".into(),
            "--store".into(),
            arg(&scratch.path("store.redb")),
        ];
        args.extend(support::cluster_args());
        args.extend(options.iter().map(|s| s.to_string()));
        let (code, exported, stderr) = run(&args);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(&exported, http, "export --store {options:?}");
    }
    let (code, json, stderr) = run(&[
        "status".into(),
        "--store".into(),
        arg(&scratch.path("store.redb")),
        "--output".into(),
        "json".into(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["workloads"][0]["name"], "web");
    assert_eq!(status["workloads"][0]["state"], "learning");
    assert_eq!(status["uncovered"]["host_process_flows"], 1);
    assert!(status["uncovered"]["unresolved_notes"].as_u64().unwrap() >= 1);
}

#[test]
fn bad_invocations_are_clear_errors() {
    let scratch = Scratch::new("badcli");
    let (code, _, stderr) = run(&[
        "export".into(),
        "--store".into(),
        arg(&scratch.path("nothing.redb")),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no such store"), "{stderr}");
    let (code, _, stderr) = run(&[
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        arg(&scratch.path("s.redb")),
        "--token-file".into(),
        arg(&scratch.path("token")),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--cluster"), "{stderr}");
    // A store from a newer version is refused, named.
    {
        let db = redb::Database::create(scratch.path("newer.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let (code, _, stderr) = run(&[
        "status".into(),
        "--store".into(),
        arg(&scratch.path("newer.redb")),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("newer egress-recommender (store format 99"),
        "{stderr}"
    );
    let server_args = |store: &str| {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            arg(&scratch.path(store)),
            "--token-file".into(),
            arg(&scratch.path("token")),
        ];
        args.extend(support::cluster_args());
        args
    };
    let (code, _, stderr) = run(&server_args("newer.redb"));
    assert_eq!(code, 2);
    assert!(stderr.contains("store format 99"), "{stderr}");
    // Query parameters are checked.
    let server = Server::start(&scratch, &[]);
    let answer = server.get("/v1/policies?defaultdeny=true");
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("unknown parameter"), "{}", answer.body);
    assert_eq!(server.get("/v1/policies?format=cilium").status, 200);
    assert_eq!(
        support::request(server.addr, "GET", "/readyz", &[], b"").status,
        200
    );
}
