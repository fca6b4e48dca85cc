//! Proof that the test hosts work on their own, independent of the agent: the DNS host answers
//! inside a pod, TCP and UDP reach the external servers, refusals are refusals, processes land in
//! the pod's cgroup, nothing routes out, and everything is gone after drop.

use std::path::Path;

use serde_json::json;

use super::dns::{dig, API_NAME, V6_NAME, WWW_NAME};
use super::hosts::*;
use super::pods::test_pods;
use super::run;
use super::traffic::run_client;

#[test]
fn hosts_smoke() {
    let hosts = Hosts::build(test_pods());
    let pod = &hosts.pods[0];

    // DNS over UDP and TCP from inside the pod, against the DNS host.
    let a = dig(&mut pod.command("dig"), DNS_V4, API_NAME, "A", false);
    assert_eq!(a, [API_V4]);
    let chain = dig(&mut pod.command("dig"), DNS_V4, WWW_NAME, "A", true);
    assert_eq!(chain, ["api.example.test.", API_V4]);
    let aaaa = dig(&mut pod.command("dig"), DNS_V4, V6_NAME, "AAAA", false);
    assert_eq!(aaaa, [API_V6]);
    assert!(
        hosts.dns.log_text().contains("query[A] www.example.test"),
        "dnsmasq logs the queries it answered:\n{}",
        hosts.dns.log_text()
    );

    // The pod's resolver (resolv.conf bind-mounted by `ip netns exec`), then TCP to the answer;
    // several ports, a refusal, IPv6, both kinds of UDP.
    let results = run_client(
        pod.command("python3"),
        &[
            format!("resolve {API_NAME} 4 443"),
            format!("resolve {V6_NAME} 6 443"),
            format!("tcp {MULTI_V4} 80"),
            format!("tcp {MULTI_V4} 8080"),
            format!("refused {MULTI_V4} {CLOSED_PORT}"),
            format!("timeout {BLACKHOLE_V4} 443"),
            format!("udp-sendto {MULTI_V4} {UDP_SENDTO_PORT}"),
            format!("udp-connect {MULTI_V4} {UDP_CONNECT_PORT}"),
        ],
    );
    assert_eq!(results[0]["addrs"], json!([API_V4]));
    assert_eq!(results[1]["addrs"], json!([API_V6]));
    let ip = &pod.spec.ip4;
    hosts.servers.expect_line(&format!("tcp v4 443 {ip}"));
    hosts
        .servers
        .expect_line(&format!("tcp v6 443 {}", pod.spec.ip6));
    hosts.servers.expect_line(&format!("tcp v4 8080 {ip}"));
    hosts
        .servers
        .expect_line(&format!("udp v4 {UDP_SENDTO_PORT} {ip} 5"));
    hosts
        .servers
        .expect_line(&format!("udp v4 {UDP_CONNECT_PORT} {ip} 5"));

    // Processes started in a pod run in its container cgroup, whatever the kubelet layout.
    for pod in &hosts.pods {
        let out = run(pod.command("cat").arg("/proc/self/cgroup"));
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = format!("0::/{}", pod.spec.cgroup_path());
        assert!(
            text.lines().any(|l| l == expected),
            "{expected} not in {text}"
        );
    }

    // The node process reaches its own target from outside any pod.
    run_client(
        hosts.node.command("python3"),
        &[format!("tcp {NODE_TARGET_V4} {}", hosts.node_port)],
    );
    hosts
        .servers
        .expect_line(&format!("tcp v4 {} {NODE_V4}", hosts.node_port));

    // No way out: the world namespace has no route to anything but its own links.
    let out = hosts
        .world
        .exec("ip")
        .args(["route", "get", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the world namespace must not route out"
    );

    let names: Vec<String> = hosts
        .pods
        .iter()
        .map(|p| p.netns.name().to_owned())
        .collect();
    let cgroups: Vec<_> = hosts
        .pods
        .iter()
        .map(|p| p.cgroup.path().to_owned())
        .collect();
    drop(hosts);
    for name in names {
        assert!(
            !Path::new("/var/run/netns").join(&name).exists(),
            "netns {name} removed"
        );
    }
    for cg in cgroups {
        assert!(!cg.exists(), "cgroup {} removed", cg.display());
    }
}

/// A test that panics half-way still removes its namespaces, cgroups and processes: the guards
/// run during unwinding.
#[test]
fn hosts_cleanup_on_panic() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let hosts = Hosts::build(test_pods());
        let names: Vec<String> = hosts
            .pods
            .iter()
            .map(|p| p.netns.name().to_owned())
            .chain([hosts.world.name().to_owned()])
            .collect();
        let cgroups: Vec<_> = hosts
            .pods
            .iter()
            .map(|p| p.cgroup.path().to_owned())
            .collect();
        // A process left running in a pod must not keep its cgroup alive.
        let sleeper = hosts.pods[0]
            .command("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep in a pod");
        *seen.lock().unwrap() = Some((names, cgroups, hosts.dns.pid(), sleeper));
        panic!("deliberate failure inside a test");
    }));
    assert!(result.is_err());
    let (names, cgroups, dns_pid, mut sleeper) = seen.into_inner().unwrap().unwrap();
    for name in names {
        assert!(
            !Path::new("/var/run/netns").join(&name).exists(),
            "netns {name} removed after a panic"
        );
    }
    for cg in cgroups {
        assert!(
            !cg.exists(),
            "cgroup {} removed after a panic",
            cg.display()
        );
    }
    assert!(
        !Path::new(&format!("/proc/{dns_pid}")).exists(),
        "dnsmasq stopped after a panic"
    );
    let status = sleeper.wait().expect("reap the pod's process");
    assert!(!status.success(), "the pod's process was killed: {status}");
}
