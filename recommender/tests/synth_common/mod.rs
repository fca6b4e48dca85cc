//! Helpers shared by the synthesis tests: hand-built resolved flows and the schema validator.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use flow_model::{FlowRecord, Outcome, Protocol, WorkloadRef};
use recommender::resolve::{Observation, Peer, ResolvedFlow, SourceWorkload};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn workload(kind: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        kind: kind.into(),
        name: name.into(),
    }
}

/// A source workload, shared by its flows as the resolver shares it.
pub fn source(ns: &str, kind: &str, name: &str) -> Arc<SourceWorkload> {
    Arc::new(SourceWorkload {
        namespace: ns.into(),
        workload: workload(kind, name),
        selector: labels(&[("app", name)]).into(),
    })
}

pub fn pods(ns: &str, kind: &str, name: &str, service: Option<&str>) -> Peer {
    Peer::Pods {
        namespace: ns.into(),
        workload: workload(kind, name),
        selector: labels(&[("app", name)]).into(),
        service: service.map(Into::into),
        cluster_dns: false,
    }
}

pub fn dns() -> Peer {
    Peer::Pods {
        namespace: "kube-system".into(),
        workload: workload("Deployment", "coredns"),
        selector: labels(&[("k8s-app", "kube-dns")]).into(),
        service: Some("kube-dns".into()),
        cluster_dns: true,
    }
}

/// A cluster with only what synthesis reads of it: the cluster DNS Service `kube-system/kube-dns`
/// (pods labelled `k8s-app: kube-dns`, DNS on 53).
pub fn dns_cluster() -> recommender::cluster::Cluster {
    recommender::cluster::Cluster {
        services: vec![serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}))
        .unwrap()],
        ..Default::default()
    }
}

/// A peer with the names the source resolved for it (they travel with the flow's observation).
pub struct Dest {
    pub peer: Peer,
    pub names: Vec<String>,
}

impl From<Peer> for Dest {
    fn from(peer: Peer) -> Dest {
        Dest {
            peer,
            names: Vec::new(),
        }
    }
}

/// An address outside the cluster, reached directly under `names`.
pub fn external(ip: &str, names: &[&str]) -> Dest {
    Dest {
        peer: Peer::External {
            ip: ip.parse().unwrap(),
            service: None,
        },
        names: names.iter().map(|s| (*s).to_owned()).collect(),
    }
}

pub fn record(
    src: &SourceWorkload,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    outcome: Outcome,
    minute: u32,
    names: &[String],
) -> FlowRecord {
    serde_json::from_value(serde_json::json!({
        "node": "node-a",
        "source": {"kind": "pod", "namespace": src.namespace, "pod": format!("{}-0", src.workload.name),
                   "workload": src.workload, "labels": src.selector.match_labels},
        "destination": {"ip": ip, "port": port, "protocol": protocol, "dns_names": names},
        "first_seen": format!("2026-11-26T16:{minute:02}:00Z"),
        "last_seen": format!("2026-11-26T16:{:02}:00Z", minute + 5),
        "count": 3,
        "outcome": outcome,
    }))
    .unwrap()
}

/// A flow with an established (TCP) or sent (UDP) outcome.
pub fn flow(
    src: &Arc<SourceWorkload>,
    peer: impl Into<Dest>,
    port: u16,
    protocol: Protocol,
) -> ResolvedFlow {
    let outcome = if protocol == Protocol::Udp {
        Outcome::Sent
    } else {
        Outcome::Established
    };
    flow_with(src, peer, port, protocol, outcome)
}

pub fn flow_with(
    src: &Arc<SourceWorkload>,
    peer: impl Into<Dest>,
    port: u16,
    protocol: Protocol,
    outcome: Outcome,
) -> ResolvedFlow {
    let Dest { peer, names } = peer.into();
    let ip: IpAddr = match &peer {
        Peer::ApiServer { ip }
        | Peer::Node { ip, .. }
        | Peer::External { ip, .. }
        | Peer::NodeLocalDns { ip } => *ip,
        Peer::Pods { .. } => "10.244.1.10".parse().unwrap(),
    };
    ResolvedFlow {
        source: Arc::clone(src),
        peer: Arc::new(peer),
        port,
        protocol,
        observed: Arc::new(Observation::of(&record(
            src, ip, port, protocol, outcome, 1, &names,
        ))),
    }
}

/// The schema validator: `$KUBERNETES_VALIDATE`, or the one `cargo xtask setup` installs.
pub fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/venv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "the schema validator is missing ({}): run `cargo xtask setup` (or set KUBERNETES_VALIDATE)",
        path.display()
    );
    path
}

/// Validates multi-document YAML with `kubernetes-validate --strict -k 1.37.0`; panics with its
/// output when any document fails.
pub fn validate(yaml: &str, label: &str) {
    let dir = std::env::temp_dir().join(format!(
        "synth-validate-{}-{}",
        std::process::id(),
        label.replace(['/', ' '], "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new(validator())
        .args(["--strict", "-k", "1.37.0", "--no-warn"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the schema validator: {e}: run `cargo xtask setup`")
        });
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stdout.contains("ERROR"),
        "{label}: kubernetes-validate rejected the policies:\n{stdout}\n{stderr}\n---\n{yaml}"
    );
    let docs = yaml.lines().filter(|l| *l == "---").count();
    let passed = stdout.matches(" passed ").count();
    assert_eq!(
        passed, docs,
        "{label}: not every document validated:\n{stdout}"
    );
}
