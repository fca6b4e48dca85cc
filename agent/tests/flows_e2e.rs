//! Root integration tests: the agent binary, with its kernel programs attached, against hosts the
//! tests build themselves (see `support/`). They assert the exact set of FlowRecords the agent
//! writes for the test's own pods, and how it treats bad and changing pods files.
//!
//! Every agent on the machine sees every connection on it, including those of tests running in
//! parallel, so each test keeps only records from its own pods (by UID) or to its own host-only
//! destination.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flow_model::{FlowRecord, Outcome, Protocol};
use jiff::Timestamp;

use support::agent::{
    agent_command, free_port, logs_kept_last_good, logs_reloaded, metric_sum, run_to_exit, Agent,
    DNS_ANSWERS_METRIC, RELOAD_ERRORS_METRIC,
};
use support::cgroup::{Driver, Qos};
use support::dns::{dig, API_NAME, V6_NAME, WWW_NAME};
use support::expect::{assert_exact, is_ours, missing, read_merged, Expected, Origin};
use support::hosts::*;
use support::pods::{pods_file_json, test_pods, PodSpec, NODE_NAME};
use support::traffic::{run_client, Server};
use support::{require_root, unique_prefix, wait_for, TempDir};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");

/// Attaching programs in a debug build on a busy 2-core machine can take a while; readiness is
/// still bounded.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The port of the server that pod 1 runs for the node process to call.
const POD_SERVER_PORT: u16 = 7000;

/// The flows the traffic below makes, from pod 0 (`shop/web-...-x2k4q`, systemd driver,
/// BestEffort), pod 1 (`shop/web-...-h7m2p`, cgroupfs driver, Burstable), pod 2
/// (`payments/api-...-q8w2e`, systemd driver, Guaranteed), pod 3 (`shop/web-...-z9v5t`, CRI-O,
/// started after the agent, missing from the pods file) and the node process.
fn expected_flows(node_port: u16, server_pod_ip: &str) -> Vec<Expected> {
    use Outcome::*;
    use Protocol::*;
    vec![
        // Pod 0: getaddrinfo over UDP (glibc connects its UDP socket), then TCP to the answer;
        // several ports of one host; a closed port.
        Expected::new(Origin::Pod(0), DNS_V4, 53, Udp, Sent),
        Expected::new(Origin::Pod(0), API_V4, 443, Tcp, Established).names(&[API_NAME]),
        Expected::new(Origin::Pod(0), MULTI_V4, 80, Tcp, Established),
        Expected::new(Origin::Pod(0), MULTI_V4, 8080, Tcp, Established),
        Expected::new(Origin::Pod(0), MULTI_V4, 9000, Tcp, Established).count(3),
        Expected::new(Origin::Pod(0), MULTI_V4, CLOSED_PORT, Tcp, Refused).count(2),
        // ...and a host that never answers (the client gives up after a second).
        Expected::new(Origin::Pod(0), BLACKHOLE_V4, 443, Tcp, Timeout),
        // Pod 1: an AAAA lookup, then TCP over IPv6; unconnected and connected UDP.
        Expected::new(Origin::Pod(1), DNS_V4, 53, Udp, Sent),
        Expected::new(Origin::Pod(1), API_V6, 443, Tcp, Established).names(&[V6_NAME]),
        Expected::new(Origin::Pod(1), MULTI_V4, UDP_SENDTO_PORT, Udp, Sent).count(3),
        Expected::new(Origin::Pod(1), MULTI_V4, UDP_CONNECT_PORT, Udp, Sent),
        // Pod 2: DNS over TCP whose answer is a CNAME chain; the chain's names go to its address.
        Expected::new(Origin::Pod(2), DNS_V4, 53, Tcp, Established),
        Expected::new(Origin::Pod(2), API_V4, 443, Tcp, Established).names(&[API_NAME, WWW_NAME]),
        // Pod 3: started after the agent, CRI-O, not in the pods file.
        Expected::new(Origin::Pod(3), MULTI_V4, 8080, Tcp, Established),
        // The node process, outside any pod; it also calls pod 1's server, whose answers (the TCP
        // accept, the UDP echo sent with sendto) are replies, not pod egress.
        Expected::new(Origin::Host, NODE_TARGET_V4, node_port, Tcp, Established),
        Expected::new(
            Origin::Host,
            server_pod_ip,
            POD_SERVER_PORT,
            Tcp,
            Established,
        ),
        Expected::new(Origin::Host, server_pod_ip, POD_SERVER_PORT, Udp, Sent),
    ]
}

#[test]
fn agent_reports_exact_flows_of_test_pods() {
    let mut hosts = Hosts::build(test_pods());
    let pods_file = hosts.dir.path().join("pods.json");
    std::fs::write(&pods_file, pods_file_json(&test_pods_specs(&hosts))).unwrap();

    let mut agent = Agent::start(AGENT, hosts.dir.path(), &pods_file);
    agent.wait_ready(READY_TIMEOUT);
    let started = Timestamp::now();
    // A pod that starts after the agent (its cgroup is newer than anything the agent has seen),
    // under CRI-O, and missing from the pods file.
    hosts.add_pod(
        PodSpec::new(
            "shop",
            "web",
            "5d8f7c9b4",
            "z9v5t",
            Driver::Systemd,
            Qos::Burstable,
            3,
        )
        .crio()
        .unlisted(),
    );
    let specs = test_pods_specs(&hosts);

    let [web0, web1, api, unlisted] = &hosts.pods[..] else {
        panic!("four test pods")
    };
    let results = run_client(
        web0.command("python3"),
        &[
            format!("resolve {API_NAME} 4 443"),
            format!("tcp {MULTI_V4} 80"),
            format!("tcp {MULTI_V4} 8080"),
            format!("tcp {MULTI_V4} 9000"),
            format!("tcp {MULTI_V4} 9000"),
            format!("tcp {MULTI_V4} 9000"),
            format!("refused {MULTI_V4} {CLOSED_PORT}"),
            format!("refused {MULTI_V4} {CLOSED_PORT}"),
            format!("timeout {BLACKHOLE_V4} 443"),
        ],
    );
    assert_eq!(results[0]["addrs"], serde_json::json!([API_V4]));
    let results = run_client(
        web1.command("python3"),
        &[
            format!("resolve {V6_NAME} 6 443"),
            format!("udp-sendto {MULTI_V4} {UDP_SENDTO_PORT}"),
            format!("udp-sendto {MULTI_V4} {UDP_SENDTO_PORT}"),
            format!("udp-sendto {MULTI_V4} {UDP_SENDTO_PORT}"),
            format!("udp-connect {MULTI_V4} {UDP_CONNECT_PORT}"),
        ],
    );
    assert_eq!(results[0]["addrs"], serde_json::json!([API_V6]));
    let chain = dig(&mut api.command("dig"), DNS_V4, WWW_NAME, "A", true);
    assert_eq!(chain, [format!("{API_NAME}."), API_V4.to_owned()]);
    run_client(api.command("python3"), &[format!("tcp {API_V4} 443")]);
    run_client(
        unlisted.command("python3"),
        &[format!("tcp {MULTI_V4} 8080")],
    );
    let server = Server::start(web1.command("python3"), POD_SERVER_PORT);
    run_client(
        hosts.node.command("python3"),
        &[
            format!("tcp {NODE_TARGET_V4} {}", hosts.node_port),
            format!("tcp {} {POD_SERVER_PORT}", web1.spec.ip4),
            format!("udp-ask {} {POD_SERVER_PORT}", web1.spec.ip4),
        ],
    );
    server.finish();
    // The servers saw the traffic: whatever the agent reports, it happened.
    hosts
        .servers
        .expect_line(&format!("udp v4 {UDP_SENDTO_PORT} {} 5", web1.spec.ip4));

    let mut expected = expected_flows(hosts.node_port, &web1.spec.ip4);
    let host_targets: Vec<(IpAddr, u16)> = vec![
        (NODE_TARGET_V4.parse().unwrap(), hosts.node_port),
        (web1.spec.ip4.parse().unwrap(), POD_SERVER_PORT),
    ];
    let ours = |records: Vec<FlowRecord>| -> Vec<FlowRecord> {
        records
            .into_iter()
            .filter(|r| is_ours(r, &specs, &host_targets))
            .collect()
    };
    // With --flush-interval 1 every flow, with its DNS names, should reach the file while the
    // agent runs. DNS answers go through the ring buffer and are parsed asynchronously, so this is
    // a bounded wait, not a single look.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut not_flushed = missing(
        &ours(read_merged_if_present(&agent.flows_out)),
        &expected,
        &specs,
    );
    while !not_flushed.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        not_flushed = missing(
            &ours(read_merged_if_present(&agent.flows_out)),
            &expected,
            &specs,
        );
    }

    check_metrics(&agent);

    // One more flow right before SIGTERM, after the last periodic flush that the test saw: the
    // agent must flush it on the way out.
    run_client(api.command("python3"), &[format!("tcp {MULTI_V4} 9000")]);
    expected.push(Expected::new(
        Origin::Pod(2),
        MULTI_V4,
        9000,
        Protocol::Tcp,
        Outcome::Established,
    ));
    let status = agent.terminate(EXIT_TIMEOUT);
    let ended = Timestamp::now();
    assert!(
        status.success(),
        "agent exit after SIGTERM: {status}\n{}",
        agent.log_text()
    );

    let records = ours(read_merged(&agent.flows_out));
    eprintln!("merged FlowRecords of this test:");
    for r in &records {
        eprintln!("{}", r.to_json_line());
    }
    assert_exact(&records, &expected, &specs, NODE_NAME, (started, ended));
    assert!(
        not_flushed.is_empty(),
        "flows missing from the periodic flushes (--flush-interval 1) before SIGTERM: {not_flushed:?}"
    );
}

fn test_pods_specs(hosts: &Hosts) -> Vec<PodSpec> {
    hosts.pods.iter().map(|p| p.spec.clone()).collect()
}

fn read_merged_if_present(path: &Path) -> Vec<FlowRecord> {
    if !path.exists() {
        return Vec::new();
    }
    // A flush may be half-written when we read; only complete lines are parsed.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    match flow_model::read_records(complete.as_bytes(), "flows") {
        Ok(records) => support::expect::merge(records),
        Err(_) => Vec::new(),
    }
}

/// `/metrics` while the agent runs: the metric families exist, and DNS answers were parsed.
fn check_metrics(agent: &Agent) {
    let (status, body) = agent.get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    for name in support::agent::EXPECTED_METRICS {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "metric {name} missing from /metrics:\n{body}"
        );
    }
    // Other tests' traffic counts too, so only "some" can be asserted; this test's own lookups are
    // proven by the names in its records.
    let parsed = metric_sum(&body, DNS_ANSWERS_METRIC, "result=\"parsed\"");
    assert!(parsed > 0.0, "no DNS answers parsed:\n{body}");
    let replies = metric_sum(&body, "egress_agent_udp_replies_skipped_total", "");
    assert!(
        replies > 0.0,
        "pod 1's UDP echo was not counted as a reply:\n{body}"
    );
}

#[test]
fn agent_rejects_missing_pods_file() {
    require_root();
    let dir = TempDir::new(&unique_prefix());
    let missing = dir.path().join("no-such-pods.json");
    let metrics = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cmd = agent_command(AGENT, &missing, &dir.path().join("flows.jsonl"), metrics);
    let (status, output) = run_to_exit(cmd, EXIT_TIMEOUT);
    assert!(
        !status.success(),
        "agent started without its pods file:\n{output}"
    );
    assert!(
        output.contains(&missing.display().to_string()),
        "the error names the file:\n{output}"
    );
}

#[test]
fn agent_rejects_malformed_pods_file() {
    require_root();
    let dir = TempDir::new(&unique_prefix());
    let bad = dir.path().join("pods.json");
    std::fs::write(
        &bad,
        "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [",
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cmd = agent_command(AGENT, &bad, &dir.path().join("flows.jsonl"), metrics);
    let (status, output) = run_to_exit(cmd, EXIT_TIMEOUT);
    assert!(
        !status.success(),
        "agent accepted a malformed pods file:\n{output}"
    );
    assert!(
        output.contains(&bad.display().to_string()),
        "the error names the file:\n{output}"
    );
}

/// The pods file is re-read when it changes: a good version applies to the records written after
/// it, a broken one is rejected (logged, counted) and the last good one stays in use, with the
/// agent still running and ready.
#[test]
fn agent_reloads_pods_file_and_keeps_last_good_on_error() {
    let mut specs = test_pods();
    specs.truncate(1);
    specs.push(
        PodSpec::new(
            "shop",
            "web",
            "5d8f7c9b4",
            "r4n8d",
            Driver::Systemd,
            Qos::BestEffort,
            1,
        )
        .unlisted(),
    );
    let hosts = Hosts::build(specs.clone());
    let pods_file = hosts.dir.path().join("pods.json");
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    let mut agent = Agent::start(AGENT, hosts.dir.path(), &pods_file);
    agent.wait_ready(READY_TIMEOUT);
    let started = Timestamp::now();

    // A good new version lists the second pod too.
    for spec in &mut specs {
        spec.listed = true;
    }
    std::fs::write(&pods_file, pods_file_json(&specs)).unwrap();
    wait_for(
        "the agent to log that it reloaded the pods file",
        Duration::from_secs(20),
        || logs_reloaded(&agent.log_text(), &pods_file).then_some(()),
    );
    run_client(
        hosts.pods[1].command("python3"),
        &[format!("tcp {MULTI_V4} 80")],
    );

    // A broken version: the agent notices the change of length on its next poll.
    std::fs::write(&pods_file, "items: [ {").unwrap();
    wait_for(
        "the agent to log that it kept the last good pods file",
        Duration::from_secs(20),
        || logs_kept_last_good(&agent.log_text(), &pods_file).then_some(()),
    );
    assert!(
        agent.running(),
        "the agent died on a bad reload:\n{}",
        agent.log_text()
    );
    assert_eq!(
        agent.get("/readyz").map(|(s, _)| s),
        Some(200),
        "still ready after a bad reload"
    );
    let (_, body) = agent.get("/metrics").expect("GET /metrics");
    assert!(
        metric_sum(&body, RELOAD_ERRORS_METRIC, "") >= 1.0,
        "the failed reload is counted:\n{body}"
    );
    for pod in &hosts.pods {
        run_client(pod.command("python3"), &[format!("tcp {MULTI_V4} 8080")]);
    }

    let status = agent.terminate(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        agent.log_text()
    );
    // Every record carries the metadata of the last good file, which lists both pods.
    let records: Vec<_> = read_merged(&agent.flows_out)
        .into_iter()
        .filter(|r| is_ours(r, &specs, &[]))
        .collect();
    let expected = vec![
        Expected::new(
            Origin::Pod(1),
            MULTI_V4,
            80,
            Protocol::Tcp,
            Outcome::Established,
        ),
        Expected::new(
            Origin::Pod(0),
            MULTI_V4,
            8080,
            Protocol::Tcp,
            Outcome::Established,
        ),
        Expected::new(
            Origin::Pod(1),
            MULTI_V4,
            8080,
            Protocol::Tcp,
            Outcome::Established,
        ),
    ];
    let window = (started, Timestamp::now());
    assert_exact(&records, &expected, &specs, NODE_NAME, window);
}
