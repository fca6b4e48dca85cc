//! `FlowRecord`: one observed egress edge, as the agent reports it and the recommender ingests it.
//!
//! The wire form is one JSON object per line (see DESIGN.md, "Contracts"). A record covers the
//! interval `[first_seen, last_seen]`; records for the same [`FlowRecord::key`] merge by summing counts
//! and widening the interval, so an agent may report a flow in several pieces (deltas) and a consumer
//! may merge them in any order.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One observed egress flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRecord {
    pub node: String,
    pub source: Source,
    pub destination: Destination,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub outcome: Outcome,
    /// Per-outcome counts behind `outcome`, for TCP. Absent in records that do not carry them.
    #[serde(default, skip_serializing_if = "Outcomes::is_empty")]
    pub outcomes: Outcomes,
}

/// Who sent the traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// True for a pod that shares the node's network namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A process in a pod's cgroup.
    Pod,
    /// A process outside any pod (node daemons, the kubelet, ...).
    Host,
}

/// The controller a pod belongs to, resolved to the top-level workload (ReplicaSet → Deployment,
/// Job → CronJob where known).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// Where the traffic went, as the socket saw it (a ClusterIP stays a ClusterIP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Names the source resolved to `ip` through DNS, sorted and unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The name Kubernetes uses (`TCP`, `UDP`, `SCTP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

/// What became of the traffic. Ordered from most to least conclusive, which is how
/// [`Outcomes::summary`] picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A TCP handshake completed.
    Established,
    /// The peer answered a TCP SYN with a reset.
    Refused,
    /// A TCP connect got no answer before the socket gave up.
    Timeout,
    /// UDP (or other connectionless) traffic was sent; nothing is known of delivery.
    Sent,
    /// No outcome is known yet (a connect still in progress when the record was written).
    Unknown,
}

/// Per-outcome TCP connect counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcomes {
    #[serde(default)]
    pub established: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub timeout: u64,
}

impl Outcomes {
    pub fn is_empty(&self) -> bool {
        self.established == 0 && self.refused == 0 && self.timeout == 0
    }

    /// The single outcome a record reports: the most conclusive one observed.
    pub fn summary(&self, protocol: Protocol) -> Outcome {
        if self.established > 0 {
            Outcome::Established
        } else if self.refused > 0 {
            Outcome::Refused
        } else if self.timeout > 0 {
            Outcome::Timeout
        } else if protocol == Protocol::Tcp {
            Outcome::Unknown
        } else {
            Outcome::Sent
        }
    }

    fn add(&mut self, other: &Outcomes) {
        self.established += other.established;
        self.refused += other.refused;
        self.timeout += other.timeout;
    }
}

/// The identity of a flow: records with equal keys describe the same edge and can be merged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub node: String,
    pub source_kind: SourceKind,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub uid: Option<String>,
    pub container_id: Option<String>,
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl FlowRecord {
    pub fn key(&self) -> FlowKey {
        FlowKey {
            node: self.node.clone(),
            source_kind: self.source.kind,
            namespace: self.source.namespace.clone(),
            pod: self.source.pod.clone(),
            uid: self.source.uid.clone(),
            container_id: self.source.container_id.clone(),
            ip: self.destination.ip,
            port: self.destination.port,
            protocol: self.destination.protocol,
        }
    }

    /// Folds a later (or earlier) piece of the same flow into this one.
    pub fn merge(&mut self, other: &FlowRecord) {
        debug_assert_eq!(self.key(), other.key());
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count += other.count;
        self.outcomes.add(&other.outcomes);
        self.outcome = if self.outcomes.is_empty() {
            self.outcome.min(other.outcome)
        } else {
            self.outcomes.summary(self.destination.protocol)
        };
        for name in &other.destination.dns_names {
            if let Err(at) = self.destination.dns_names.binary_search(name) {
                self.destination.dns_names.insert(at, name.clone());
            }
        }
    }

    /// One JSON line, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("FlowRecord always serializes")
    }
}

/// A FlowRecord stream that failed to parse.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{source_name}: cannot read: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}:{line}:{column}: not a FlowRecord: {error}")]
    Json {
        source_name: String,
        line: usize,
        column: usize,
        error: serde_json::Error,
    },
}

/// Reads FlowRecords, one JSON object per line; blank lines are skipped. `source_name` names the
/// input in errors (a path, `-`, or a peer address).
pub fn read_records(reader: impl BufRead, source_name: &str) -> Result<Vec<FlowRecord>, ReadError> {
    let mut out = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|error| ReadError::Io {
            source_name: source_name.to_owned(),
            error,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|error| ReadError::Json {
            source_name: source_name.to_owned(),
            line: index + 1,
            column: error.column(),
            error,
        })?;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_EXAMPLE: &str = r#"{"node":"node-a",
 "source":{"kind":"pod","namespace":"shop","pod":"web-5d8f7c9b4-x2k4q","uid":"...","container_id":"...",
           "workload":{"kind":"Deployment","name":"web"},"labels":{"app":"web"}},
 "destination":{"ip":"198.18.0.10","port":443,"protocol":"TCP","dns_names":["api.example.test"]},
 "first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:05:00Z","count":12,
 "outcome":"established"}"#;

    #[test]
    fn contract_example_parses_and_round_trips() {
        let r: FlowRecord = serde_json::from_str(CONTRACT_EXAMPLE).unwrap();
        assert_eq!(r.source.kind, SourceKind::Pod);
        assert_eq!(r.source.workload.as_ref().unwrap().kind, "Deployment");
        assert_eq!(r.destination.protocol, Protocol::Tcp);
        assert_eq!(r.destination.dns_names, ["api.example.test"]);
        assert_eq!(r.outcome, Outcome::Established);
        assert_eq!(r.count, 12);
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let back: FlowRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn host_source_and_ipv6_round_trip() {
        let line = r#"{"node":"n","source":{"kind":"host"},"destination":{"ip":"fd00::1","port":53,"protocol":"UDP"},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:00Z","count":1,"outcome":"sent"}"#;
        let r: FlowRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.source.kind, SourceKind::Host);
        assert!(r.destination.ip.is_ipv6());
        assert_eq!(r.to_json_line(), line);
    }

    #[test]
    fn unknown_fields_and_bad_enums_are_rejected() {
        let bad_outcome = CONTRACT_EXAMPLE.replace("\"established\"", "\"maybe\"");
        assert!(serde_json::from_str::<FlowRecord>(&bad_outcome).is_err());
        let bad_proto = CONTRACT_EXAMPLE.replace("\"TCP\"", "\"ICMP\"");
        assert!(serde_json::from_str::<FlowRecord>(&bad_proto).is_err());
        let bad_port = CONTRACT_EXAMPLE.replace("443", "70000");
        assert!(serde_json::from_str::<FlowRecord>(&bad_port).is_err());
    }

    #[test]
    fn merge_sums_counts_and_widens_window() {
        let mut a: FlowRecord = serde_json::from_str(CONTRACT_EXAMPLE).unwrap();
        let mut b = a.clone();
        b.first_seen = "2026-11-26T15:00:00Z".parse().unwrap();
        b.last_seen = "2026-11-26T17:00:00Z".parse().unwrap();
        b.count = 3;
        b.destination.dns_names = vec!["a.example.test".into(), "api.example.test".into()];
        a.merge(&b);
        assert_eq!(a.count, 15);
        assert_eq!(a.first_seen, b.first_seen);
        assert_eq!(a.last_seen, b.last_seen);
        assert_eq!(
            a.destination.dns_names,
            ["a.example.test", "api.example.test"]
        );
    }

    #[test]
    fn outcome_summary_prefers_the_most_conclusive() {
        let o = Outcomes {
            established: 0,
            refused: 2,
            timeout: 5,
        };
        assert_eq!(o.summary(Protocol::Tcp), Outcome::Refused);
        assert_eq!(Outcomes::default().summary(Protocol::Udp), Outcome::Sent);
        assert_eq!(Outcomes::default().summary(Protocol::Tcp), Outcome::Unknown);
    }

    #[test]
    fn read_records_names_the_bad_line() {
        let input = format!("{}\n\nnot json\n", CONTRACT_EXAMPLE.replace('\n', ""));
        let err = read_records(input.as_bytes(), "flows.jsonl").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("flows.jsonl:3:"), "{msg}");
    }
}
