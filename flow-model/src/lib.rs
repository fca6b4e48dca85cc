//! `FlowRecord`: one observed egress edge, as the agent reports it and the recommender ingests it.
//!
//! The wire form is one JSON object per line (see `docs/architecture.md`, "Contracts"). A record
//! covers the interval `[first_seen, last_seen]`; records for the same [`FlowRecord::key`] merge by
//! summing counts (saturating) and widening the interval, so an agent may report a flow in several
//! pieces (deltas) and a consumer may merge them in any order.
//!
//! The format grows: readers ignore fields they do not know and read an outcome they do not know as
//! `unknown`, so an older recommender accepts a newer agent. What a reader refuses is a record that
//! contradicts itself ([`FlowRecord::check`]).

pub mod batch;
pub mod documents;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One observed egress flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// Where the traffic went, as the socket saw it (a ClusterIP stays a ClusterIP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The connection (TCP, or a connected UDP socket) already existed when the agent started, so
    /// its handshake was not seen; it is as conclusive as `established`.
    Preexisting,
    /// The peer answered a TCP SYN with a reset.
    Refused,
    /// A TCP connect got no answer before the socket gave up.
    Timeout,
    /// UDP (or other connectionless) traffic was sent; nothing is known of delivery.
    Sent,
    /// No outcome is known yet (a connect still in progress when the record was written), or an
    /// outcome this reader does not know (written by a newer agent).
    #[serde(other)]
    Unknown,
}

/// Per-outcome connection counts (TCP connects; `preexisting` also counts connected UDP sockets
/// found at start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    #[serde(default)]
    pub established: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub preexisting: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Outcomes {
    pub fn is_empty(&self) -> bool {
        self.established == 0 && self.refused == 0 && self.timeout == 0 && self.preexisting == 0
    }

    /// The single outcome a record reports: the most conclusive one observed.
    pub fn summary(&self, protocol: Protocol) -> Outcome {
        if self.established > 0 {
            Outcome::Established
        } else if self.preexisting > 0 {
            Outcome::Preexisting
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

    /// Adds `other`, saturating: a counter that reached `u64::MAX` stays there rather than wrap.
    pub fn add(&mut self, other: &Outcomes) {
        self.established = self.established.saturating_add(other.established);
        self.refused = self.refused.saturating_add(other.refused);
        self.timeout = self.timeout.saturating_add(other.timeout);
        self.preexisting = self.preexisting.saturating_add(other.preexisting);
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

    /// Folds a later (or earlier) piece of the same flow into this one. Counts add with
    /// saturation; the names end up sorted and unique whatever order either side had them in.
    pub fn merge(&mut self, other: &FlowRecord) {
        debug_assert_eq!(self.key(), other.key());
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count = self.count.saturating_add(other.count);
        self.outcomes.add(&other.outcomes);
        self.outcome = if self.outcomes.is_empty() {
            self.outcome.min(other.outcome)
        } else {
            self.outcomes.summary(self.destination.protocol)
        };
        merge_names(
            &mut self.destination.dns_names,
            &other.destination.dns_names,
        );
    }

    /// Why this record cannot be true, if it cannot: it reports nothing (no count and no
    /// outcome), or its interval ends before it starts. A count of 0 with outcomes is a valid
    /// delta: the connect was reported before, its outcome arrived later.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        if self.count == 0 && self.outcomes.is_empty() {
            return Err(InvalidRecord::NothingObserved);
        }
        if self.first_seen > self.last_seen {
            return Err(InvalidRecord::EndsBeforeStart {
                first_seen: self.first_seen,
                last_seen: self.last_seen,
            });
        }
        Ok(())
    }

    /// One JSON line, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("FlowRecord always serializes")
    }
}

/// The HTTP header of `POST /v1/flows` that names a batch. A batch sent again under an id already
/// acknowledged is acknowledged again and not counted twice, so a sender that lost an answer may
/// always retry.
pub const BATCH_ID_HEADER: &str = "x-batch-id";

/// Longest accepted batch id.
pub const BATCH_ID_MAX_LEN: usize = 128;

/// Checks a batch id: 1 to [`BATCH_ID_MAX_LEN`] characters of `A-Z a-z 0-9 . _ : -`.
pub fn check_batch_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > BATCH_ID_MAX_LEN {
        return Err(format!(
            "batch id must be 1 to {BATCH_ID_MAX_LEN} characters, got {}",
            id.len()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        Some(c) => Err(format!(
            "batch id may hold only A-Z a-z 0-9 . _ : -, not {c:?}"
        )),
        None => Ok(()),
    }
}

/// Adds the names of `more` to `names`, leaving `names` sorted and unique.
pub fn merge_names(names: &mut Vec<String>, more: &[String]) {
    let tidy = names.windows(2).all(|w| w[0] < w[1]);
    if tidy && more.iter().all(|n| names.binary_search(n).is_ok()) {
        return;
    }
    names.extend(more.iter().cloned());
    names.sort_unstable();
    names.dedup();
}

/// A record that parses but cannot describe real traffic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("count is 0 and no outcome is counted: the record reports nothing")]
    NothingObserved,
    #[error("first_seen {first_seen} is later than last_seen {last_seen}")]
    EndsBeforeStart {
        first_seen: Timestamp,
        last_seen: Timestamp,
    },
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
    #[error("{source_name}:{line}: invalid FlowRecord: {error}")]
    Invalid {
        source_name: String,
        line: usize,
        error: InvalidRecord,
    },
}

/// Parses one line of a FlowRecord stream (1-based `line` for errors): `Ok(None)` for a blank line.
/// A UTF-8 byte-order mark at the start of the stream is not part of the record.
pub fn parse_line(
    text: &str,
    source_name: &str,
    line: usize,
) -> Result<Option<FlowRecord>, ReadError> {
    let text = if line == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let record: FlowRecord = serde_json::from_str(text).map_err(|error| ReadError::Json {
        source_name: source_name.to_owned(),
        line,
        column: error.column(),
        error,
    })?;
    record.check().map_err(|error| ReadError::Invalid {
        source_name: source_name.to_owned(),
        line,
        error,
    })?;
    Ok(Some(record))
}

/// Reads FlowRecords, one JSON object per line; blank lines are skipped. `source_name` names the
/// input in errors (a path, `-`, or a peer address).
pub fn read_records(reader: impl BufRead, source_name: &str) -> Result<Vec<FlowRecord>, ReadError> {
    let mut out = Vec::new();
    for_each_record(reader, source_name, |record| out.push(record))?;
    Ok(out)
}

/// Calls `each` with every record of a JSON-lines stream, in order, without holding the stream:
/// the way to read inputs larger than memory. Stops at the first bad line.
pub fn for_each_record(
    reader: impl BufRead,
    source_name: &str,
    mut each: impl FnMut(FlowRecord),
) -> Result<(), ReadError> {
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|error| ReadError::Io {
            source_name: source_name.to_owned(),
            error,
        })?;
        if let Some(record) = parse_line(&line, source_name, index + 1)? {
            each(record);
        }
    }
    Ok(())
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
    fn unknown_fields_are_ignored_and_unknown_outcomes_read_as_unknown() {
        // A newer agent may add fields anywhere and outcomes this reader never heard of.
        let newer = CONTRACT_EXAMPLE
            .replace(
                r#""node":"node-a","#,
                r#""node":"node-a","agent_version":"9.9","#,
            )
            .replace(r#""kind":"pod","#, r#""kind":"pod","qos":"burstable","#)
            .replace(r#""port":443,"#, r#""port":443,"service_hint":{"x":1},"#)
            .replace(r#""established"}"#, r#""half-open"}"#);
        let r: FlowRecord = serde_json::from_str(&newer).unwrap();
        assert_eq!(r.outcome, Outcome::Unknown);
        assert_eq!(r.destination.port, 443);
        let with_outcomes = newer.replace(
            r#""count":12,"#,
            r#""count":12,"outcomes":{"established":2,"reset_later":1},"#,
        );
        let r: FlowRecord = serde_json::from_str(&with_outcomes).unwrap();
        assert_eq!(r.outcomes.established, 2);
    }

    #[test]
    fn bad_protocols_and_ports_are_rejected() {
        let bad_proto = CONTRACT_EXAMPLE.replace("\"TCP\"", "\"ICMP\"");
        assert!(serde_json::from_str::<FlowRecord>(&bad_proto).is_err());
        let bad_port = CONTRACT_EXAMPLE.replace("443", "70000");
        assert!(serde_json::from_str::<FlowRecord>(&bad_port).is_err());
    }

    #[test]
    fn preexisting_round_trips_and_ranks_after_established() {
        let line = CONTRACT_EXAMPLE.replace("\"established\"", "\"preexisting\"");
        let r: FlowRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(r.outcome, Outcome::Preexisting);
        let back: FlowRecord = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(back, r);
        let o = Outcomes {
            preexisting: 1,
            refused: 3,
            ..Outcomes::default()
        };
        assert_eq!(o.summary(Protocol::Tcp), Outcome::Preexisting);
        assert!(Outcome::Established < Outcome::Preexisting);
        assert!(Outcome::Preexisting < Outcome::Refused);
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
    fn merge_saturates_and_ignores_the_order_of_names() {
        let mut a: FlowRecord = serde_json::from_str(CONTRACT_EXAMPLE).unwrap();
        let mut b = a.clone();
        a.count = u64::MAX - 1;
        a.outcomes.established = u64::MAX;
        // Neither side sorted, one with a duplicate: a writer that did not sort.
        a.destination.dns_names = vec!["z.example.test".into(), "b.example.test".into()];
        b.count = 5;
        b.outcomes.established = 7;
        b.destination.dns_names = vec![
            "c.example.test".into(),
            "a.example.test".into(),
            "c.example.test".into(),
        ];
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.count, u64::MAX);
        assert_eq!(ab.outcomes.established, u64::MAX);
        assert_eq!(
            ab.destination.dns_names,
            [
                "a.example.test",
                "b.example.test",
                "c.example.test",
                "z.example.test"
            ]
        );
        assert_eq!(ab, ba);
    }

    #[test]
    fn records_that_report_nothing_or_end_before_they_start_are_refused() {
        let zero = CONTRACT_EXAMPLE.replace(r#""count":12"#, r#""count":0"#);
        let err = read_records(zero.replace('\n', "").as_bytes(), "f").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f:1: invalid FlowRecord: count is 0"),
            "{err}"
        );
        // A count of 0 that carries an outcome is a later piece of a connect reported before.
        let outcome_only = zero.replace(
            r#""count":0,"#,
            r#""count":0,"outcomes":{"established":1},"#,
        );
        assert_eq!(
            read_records(outcome_only.replace('\n', "").as_bytes(), "f")
                .unwrap()
                .len(),
            1
        );
        let backwards = CONTRACT_EXAMPLE.replace("16:05:00Z", "15:05:00Z");
        let err = read_records(backwards.replace('\n', "").as_bytes(), "f").unwrap_err();
        assert!(err.to_string().contains("later than last_seen"), "{err}");
    }

    #[test]
    fn batch_ids_are_short_plain_tokens() {
        assert!(check_batch_id("node-a:1f3e:000042").is_ok());
        assert!(check_batch_id("").is_err());
        assert!(check_batch_id(&"x".repeat(BATCH_ID_MAX_LEN + 1)).is_err());
        assert!(check_batch_id("a b").is_err());
        assert!(check_batch_id("a\nb").is_err());
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_record() {
        let input = format!("\u{feff}{}\n", CONTRACT_EXAMPLE.replace('\n', ""));
        assert_eq!(read_records(input.as_bytes(), "f").unwrap().len(), 1);
    }

    #[test]
    fn outcome_summary_prefers_the_most_conclusive() {
        let o = Outcomes {
            established: 0,
            refused: 2,
            timeout: 5,
            preexisting: 0,
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
