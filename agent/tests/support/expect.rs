//! Reading what the agent wrote, keeping what belongs to this test, and comparing it with what the
//! test expects, with messages that show the whole picture when they differ.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use flow_model::{FlowKey, FlowRecord, Outcome, Protocol, SourceKind};
use jiff::Timestamp;

use super::pods::PodSpec;

/// Seconds of tolerance when comparing the agent's timestamps with the test's clock.
pub const CLOCK_SLACK: i64 = 2;

/// Reads a FlowRecord file and merges records with equal keys: the agent reports deltas, so one
/// flow may appear in several lines (one per flush).
pub fn read_merged(path: &Path) -> Vec<FlowRecord> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let records =
        flow_model::read_records(std::io::BufReader::new(file), &path.display().to_string())
            .unwrap_or_else(|e| panic!("the agent's output is not FlowRecords: {e}"));
    merge(records)
}

pub fn merge(records: Vec<FlowRecord>) -> Vec<FlowRecord> {
    let mut by_key: BTreeMap<FlowKey, FlowRecord> = BTreeMap::new();
    for r in records {
        match by_key.get_mut(&r.key()) {
            Some(existing) => existing.merge(&r),
            None => {
                by_key.insert(r.key(), r);
            }
        }
    }
    by_key.into_values().collect()
}

/// Who a flow should come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The pod with this index in the test's pod list.
    Pod(usize),
    /// A process outside any pod.
    Host,
}

/// One flow the test made and expects the agent to report.
#[derive(Clone, Debug)]
pub struct Expected {
    pub from: Origin,
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub outcome: Outcome,
    pub dns_names: Vec<String>,
    /// The agent counts every connect or send; the test made at least this many.
    pub min_count: u64,
}

impl Expected {
    pub fn new(
        from: Origin,
        ip: &str,
        port: u16,
        protocol: Protocol,
        outcome: Outcome,
    ) -> Expected {
        Expected {
            from,
            ip: ip.parse().expect("expected address"),
            port,
            protocol,
            outcome,
            dns_names: Vec::new(),
            min_count: 1,
        }
    }

    pub fn names(mut self, names: &[&str]) -> Expected {
        self.dns_names = names.iter().map(|n| n.to_string()).collect();
        self.dns_names.sort();
        self
    }

    pub fn count(mut self, n: u64) -> Expected {
        self.min_count = n;
        self
    }

    /// (source, ip, port, protocol): what identifies the flow independently of the agent's
    /// identity fields, which are checked separately.
    fn id(&self) -> (Origin, IpAddr, u16, Protocol) {
        (self.from.clone(), self.ip, self.port, self.protocol)
    }
}

/// Whether a record is this test's business: its source is one of the test's pods (by UID; other
/// tests' agents and pods run on the same machine), or it is a host record to one of the host
/// destinations that only this test uses.
pub fn is_ours(r: &FlowRecord, pods: &[PodSpec], host_targets: &[(IpAddr, u16)]) -> bool {
    match r.source.kind {
        SourceKind::Pod => pods
            .iter()
            .any(|p| r.source.uid.as_deref() == Some(p.uid.as_str())),
        SourceKind::Host => host_targets.contains(&(r.destination.ip, r.destination.port)),
    }
}

fn source_of(r: &FlowRecord, pods: &[PodSpec]) -> Origin {
    match r.source.kind {
        SourceKind::Host => Origin::Host,
        SourceKind::Pod => Origin::Pod(
            pods.iter()
                .position(|p| r.source.uid.as_deref() == Some(p.uid.as_str()))
                .expect("filtered to our pods"),
        ),
    }
}

/// The expected flows that `records` (merged, filtered) do not show yet, with their DNS names.
pub fn missing(records: &[FlowRecord], expected: &[Expected], pods: &[PodSpec]) -> Vec<String> {
    expected
        .iter()
        .filter(|e| {
            !records.iter().any(|r| {
                source_of(r, pods) == e.from
                    && (r.destination.ip, r.destination.port, r.destination.protocol)
                        == (e.ip, e.port, e.protocol)
                    && r.destination.dns_names == e.dns_names
            })
        })
        .map(|e| {
            format!(
                "{:?} {}:{} {} {:?}",
                e.from, e.ip, e.port, e.protocol, e.dns_names
            )
        })
        .collect()
}

/// Asserts that `records` (merged, filtered to this test) are exactly `expected`: the same flows,
/// nothing missing, nothing extra, each with the pod's full identity, the expected outcome and DNS
/// names, and at least the expected count.
/// `window` is when the test made its traffic; the records' times must fall in it (give or take
/// [`CLOCK_SLACK`]: the agent converts kernel boot-time stamps to wall-clock time).
pub fn assert_exact(
    records: &[FlowRecord],
    expected: &[Expected],
    pods: &[PodSpec],
    node: &str,
    window: (Timestamp, Timestamp),
) {
    let all = records
        .iter()
        .map(FlowRecord::to_json_line)
        .collect::<Vec<_>>()
        .join("\n");
    let got: BTreeMap<_, &FlowRecord> = records
        .iter()
        .map(|r| {
            let from = source_of(r, pods);
            (
                (
                    from,
                    r.destination.ip,
                    r.destination.port,
                    r.destination.protocol,
                ),
                r,
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        records.len(),
        "one merged record per flow; the agent split a flow's identity:\n{all}"
    );
    let want: BTreeMap<_, &Expected> = expected.iter().map(|e| (e.id(), e)).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "flows differ\nmissing: {missing:?}\nextra: {extra:?}\nthe agent reported:\n{all}"
    );
    for (id, e) in &want {
        let r = got[id];
        let line = r.to_json_line();
        assert_eq!(r.node, node, "node name in {line}");
        assert_eq!(r.outcome, e.outcome, "outcome of {line}");
        assert_eq!(r.destination.dns_names, e.dns_names, "dns_names of {line}");
        assert!(
            r.count >= e.min_count,
            "count of {line}: expected at least {}",
            e.min_count
        );
        assert!(r.first_seen <= r.last_seen, "interval of {line}");
        let slack = jiff::SignedDuration::from_secs(CLOCK_SLACK);
        assert!(
            r.first_seen >= window.0 - slack && r.last_seen <= window.1 + slack,
            "times of {line} outside the test's window {} .. {}",
            window.0,
            window.1
        );
        assert_outcomes(r, e);
        match e.from {
            Origin::Pod(i) => assert_pod_identity(r, &pods[i]),
            Origin::Host => assert_host_identity(r),
        }
    }
}

/// The per-outcome TCP counts behind `outcome`; UDP has none.
fn assert_outcomes(r: &FlowRecord, e: &Expected) {
    let o = &r.outcomes;
    let line = r.to_json_line();
    match (e.protocol, e.outcome) {
        (Protocol::Tcp, Outcome::Established) => {
            assert!(o.established >= e.min_count, "established count in {line}")
        }
        (Protocol::Tcp, Outcome::Refused) => assert!(
            o.refused >= e.min_count && o.established == 0,
            "refused count in {line}"
        ),
        (Protocol::Tcp, Outcome::Timeout) => assert!(
            o.timeout >= e.min_count && o.established == 0 && o.refused == 0,
            "timeout count in {line}"
        ),
        (Protocol::Udp, _) => assert!(o.is_empty(), "a UDP flow has no TCP outcomes: {line}"),
        _ => {}
    }
}

fn assert_pod_identity(r: &FlowRecord, pod: &PodSpec) {
    let s = &r.source;
    let line = r.to_json_line();
    assert_eq!(s.kind, SourceKind::Pod, "{line}");
    if !pod.listed {
        // Only the cgroup path speaks for a pod missing from the pods file.
        assert_eq!(s.uid.as_deref(), Some(pod.uid.as_str()), "uid in {line}");
        assert_eq!(
            s.container_id.as_deref(),
            Some(pod.container_id.as_str()),
            "container id in {line}"
        );
        assert_eq!(
            (&s.namespace, &s.pod, &s.workload, s.labels.is_empty()),
            (&None, &None, &None, true),
            "no metadata for an unlisted pod: {line}"
        );
        return;
    }
    assert_eq!(
        s.namespace.as_deref(),
        Some(pod.namespace.as_str()),
        "namespace in {line}"
    );
    assert_eq!(
        s.pod.as_deref(),
        Some(pod.name.as_str()),
        "pod name in {line}"
    );
    assert_eq!(s.uid.as_deref(), Some(pod.uid.as_str()), "uid in {line}");
    assert_eq!(
        s.container_id.as_deref(),
        Some(pod.container_id.as_str()),
        "container id (from the cgroup path) in {line}"
    );
    let workload = s
        .workload
        .as_ref()
        .unwrap_or_else(|| panic!("no workload in {line}"));
    assert_eq!(
        (workload.kind.as_str(), workload.name.as_str()),
        ("Deployment", pod.deployment.as_str()),
        "workload (ReplicaSet {} resolved to its Deployment) in {line}",
        pod.replica_set
    );
    assert_eq!(s.labels, pod.labels, "labels in {line}");
    assert!(!s.host_network, "hostNetwork in {line}");
}

fn assert_host_identity(r: &FlowRecord) {
    let s = &r.source;
    let line = r.to_json_line();
    assert_eq!(s.kind, SourceKind::Host, "{line}");
    assert_eq!(
        (&s.namespace, &s.pod, &s.uid, &s.workload),
        (&None, &None, &None, &None),
        "a node process has no pod identity: {line}"
    );
}
