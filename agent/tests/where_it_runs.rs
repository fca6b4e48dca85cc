//! Root tests of where the agent runs: a node that lacks what it needs gets one message naming
//! all of it and exit code 1; a kernel without an optional hook gets the other programs, whose
//! flows are still right.

use std::collections::BTreeMap;
use std::process::Command;

use agent::kernel::{Error, Options, Probes};
use agent_common::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

mod kernel_world;
use kernel_world::{flows_of, World, V4, V6};

/// `agent run` with no capability at all (uid 0 with an empty bounding set): the start-up checks
/// name every missing capability, before anything is loaded, and the exit code is 1.
#[test]
fn without_capabilities_the_agent_names_them_and_exits_1() {
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args([
            "run",
            "--pods-from",
            "none",
            "--flows-out",
            "/dev/null",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "off")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("this node cannot run the agent"), "{err}");
    assert!(
        err.contains("missing capabilities CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{err}"
    );
}

/// The kernel lacks `cgroup/sock_release` (simulated: the loader leaves it out as the start-up
/// checks do on Linux 5.8). Every flow is still recorded with its count, and connects that were
/// answered still get their outcome; only a connect that never got an answer has none.
#[test]
fn without_the_release_hook_flows_are_still_right() {
    let mut world = World::new("r");
    world.start_servers();
    let options = Options {
        left_out: &["sock_release"],
        ..Options::default()
    };
    let probes = Probes::attach_with(world.pod_cgroup(), options).unwrap();
    assert_eq!(probes.left_out().len(), 1);
    assert_eq!(probes.left_out()[0].program, "sock_release");
    assert!(probes.left_out()[0]
        .consequence
        .contains("without an outcome"));
    assert!(!probes.attached().contains(&"sock_release"));

    let seen = world.run_client("flows");
    assert_eq!(seen["8082b"], "timeout");
    let got: BTreeMap<_, _> = flows_of(&probes, world.pod_cgroup_id())
        .into_iter()
        .map(|((f, a, p, proto), v)| {
            (
                (f, a[..if f == AF_INET { 4 } else { 16 }].to_vec(), p, proto),
                (v.count, v.established, v.refused, v.timed_out),
            )
        })
        .collect();
    let v4 = V4.octets().to_vec();
    let v6 = V6.octets().to_vec();
    let want: BTreeMap<_, _> = [
        ((AF_INET, v4.clone(), 8080, IPPROTO_TCP), (3, 3, 0, 0)),
        ((AF_INET6, v6.clone(), 8080, IPPROTO_TCP), (1, 1, 0, 0)),
        ((AF_INET, v4.clone(), 8081, IPPROTO_TCP), (1, 0, 1, 0)),
        ((AF_INET6, v6, 8081, IPPROTO_TCP), (1, 0, 1, 0)),
        // Two connects, one answered; the other's timeout is what the hook would have told.
        ((AF_INET, v4.clone(), 8082, IPPROTO_TCP), (2, 1, 0, 0)),
        ((AF_INET, v4.clone(), 8083, IPPROTO_TCP), (1, 1, 0, 0)),
        ((AF_INET, v4.clone(), 9999, IPPROTO_UDP), (2, 0, 0, 0)),
        ((AF_INET, v4, 9998, IPPROTO_UDP), (1, 0, 0, 0)),
    ]
    .into();
    assert_eq!(got, want);
}

#[test]
fn a_program_the_flows_need_cannot_be_left_out() {
    let world = World::new("q");
    for name in ["connect4", "egress", "ingress"] {
        let leak: &'static [&'static str] = Box::leak(vec![name].into_boxed_slice());
        let options = Options {
            left_out: leak,
            ..Options::default()
        };
        let err = Probes::attach_with(world.pod_cgroup(), options).unwrap_err();
        assert!(matches!(err, Error::Required(n) if n == name), "{err}");
    }
    let options = Options {
        left_out: &["tcp_outcome"],
        ..Options::default()
    };
    assert!(matches!(
        Probes::attach_with(world.pod_cgroup(), options),
        Err(Error::Missing("tcp_outcome"))
    ));
}
