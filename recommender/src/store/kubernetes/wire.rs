//! The `LearnedEdgeSet` custom resource as the store writes and reads it: `spec` exactly as
//! `deploy/base/crd.yaml` types it (camelCase, the peer kinds `Pods`, `NodeLocalDNS`, ...), and
//! the conversions to and from the service's [`Edge`]s. The CRD is the contract: its schema is
//! structural, so the API server prunes any field this does not declare there, and
//! `recommender/tests/deploy.rs` validates what [`object`] produces against it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use flow_model::{Outcome, Outcomes, Protocol, WorkloadRef};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::selectors::PodSelector;
use crate::resolve::{Observation, Peer, SourceWorkload};
use crate::store::Edge;

pub const GROUP: &str = "egress-recommender.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "LearnedEdgeSet";
pub const PLURAL: &str = "learnededgesets";

/// The annotation naming the store (holder identity and process) that wrote an object last: a
/// conflict with one's own earlier write is told from another writer's by it.
pub const WRITER_ANNOTATION: &str = "egress-recommender.io/writer";
/// The label every object of the store carries (what `load` lists).
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "egress-recommender");

/// The `spec` of one object: one source workload's edges, or one part of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub source: WireSource,
    pub part: u32,
    pub edges: Vec<WireEdge>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireSource {
    pub namespace: String,
    pub workload: WorkloadRef,
    pub selector: PodSelector,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEdge {
    pub peer: WirePeer,
    pub port: u16,
    pub protocol: Protocol,
    pub learned_at: Timestamp,
    pub observed: WireObserved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Pods,
    #[serde(rename = "NodeLocalDNS")]
    NodeLocalDns,
    #[serde(rename = "APIServer")]
    ApiServer,
    Node,
    External,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WirePeer {
    pub kind: PeerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PodSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(
        default,
        rename = "clusterDNS",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_dns: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The API's integers are int64: counts are written capped at `i64::MAX` (they saturate long
/// before a workload could reach it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireObserved {
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Outcomes::is_empty")]
    pub outcomes: Outcomes,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dns_names: BTreeSet<String>,
}

fn int64(n: u64) -> u64 {
    n.min(i64::MAX as u64)
}

impl WireSource {
    pub fn of(source: &SourceWorkload) -> WireSource {
        WireSource {
            namespace: source.namespace.clone(),
            workload: source.workload.clone(),
            selector: source.selector.clone(),
        }
    }

    pub fn workload(&self) -> SourceWorkload {
        SourceWorkload {
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            selector: self.selector.clone(),
        }
    }
}

impl WirePeer {
    fn empty(kind: PeerKind) -> WirePeer {
        WirePeer {
            kind,
            namespace: None,
            workload: None,
            selector: None,
            service: None,
            cluster_dns: None,
            ip: None,
            node: None,
        }
    }

    pub fn of(peer: &Peer) -> WirePeer {
        match peer {
            Peer::Pods {
                namespace,
                workload,
                selector,
                service,
                cluster_dns,
            } => WirePeer {
                namespace: Some(namespace.clone()),
                workload: Some(workload.clone()),
                selector: Some(selector.clone()),
                service: service.clone(),
                cluster_dns: Some(*cluster_dns),
                ..WirePeer::empty(PeerKind::Pods)
            },
            Peer::NodeLocalDns { ip } => WirePeer {
                ip: Some(*ip),
                ..WirePeer::empty(PeerKind::NodeLocalDns)
            },
            Peer::ApiServer { ip } => WirePeer {
                ip: Some(*ip),
                ..WirePeer::empty(PeerKind::ApiServer)
            },
            Peer::Node { ip, node } => WirePeer {
                ip: Some(*ip),
                node: Some(node.clone()),
                ..WirePeer::empty(PeerKind::Node)
            },
            Peer::External { ip, service } => WirePeer {
                ip: Some(*ip),
                service: service.clone(),
                ..WirePeer::empty(PeerKind::External)
            },
        }
    }

    /// The peer, or what is missing for its kind.
    pub fn peer(&self) -> Result<Peer, String> {
        let ip = || {
            self.ip
                .ok_or_else(|| format!("a {:?} peer without ip", self.kind))
        };
        Ok(match self.kind {
            PeerKind::Pods => Peer::Pods {
                namespace: self
                    .namespace
                    .clone()
                    .ok_or("a Pods peer without namespace")?,
                workload: self
                    .workload
                    .clone()
                    .ok_or("a Pods peer without workload")?,
                selector: self.selector.clone().unwrap_or_default(),
                service: self.service.clone(),
                cluster_dns: self.cluster_dns.unwrap_or(false),
            },
            PeerKind::NodeLocalDns => Peer::NodeLocalDns { ip: ip()? },
            PeerKind::ApiServer => Peer::ApiServer { ip: ip()? },
            PeerKind::Node => Peer::Node {
                ip: ip()?,
                node: self.node.clone().unwrap_or_default(),
            },
            PeerKind::External => Peer::External {
                ip: ip()?,
                service: self.service.clone(),
            },
        })
    }
}

impl WireObserved {
    pub fn of(o: &Observation) -> WireObserved {
        WireObserved {
            first_seen: o.first_seen,
            last_seen: o.last_seen,
            count: int64(o.count),
            outcome: o.outcome,
            outcomes: Outcomes {
                established: int64(o.outcomes.established),
                refused: int64(o.outcomes.refused),
                timeout: int64(o.outcomes.timeout),
                preexisting: int64(o.outcomes.preexisting),
            },
            dns_names: o.dns_names.clone(),
        }
    }

    pub fn observation(&self) -> Observation {
        Observation {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            count: self.count,
            outcome: self.outcome,
            outcomes: self.outcomes,
            dns_names: self.dns_names.clone(),
        }
    }
}

/// An edge of an object, without its source (the object's).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeId {
    pub peer: Arc<Peer>,
    pub port: u16,
    pub protocol: Protocol,
}

/// What is known of an edge: when it was learned and what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeValue {
    pub learned_at: Timestamp,
    pub observed: Observation,
}

impl EdgeValue {
    /// Folds `other` into this value ([`Observation::merge`]; the earlier learning time).
    pub fn merge(&mut self, other: &EdgeValue) {
        self.learned_at = self.learned_at.min(other.learned_at);
        self.observed.merge(&other.observed);
    }
}

impl WireEdge {
    pub fn of(id: &EdgeId, value: &EdgeValue) -> WireEdge {
        WireEdge {
            peer: WirePeer::of(&id.peer),
            port: id.port,
            protocol: id.protocol,
            learned_at: value.learned_at,
            observed: WireObserved::of(&value.observed),
        }
    }

    pub fn parts(&self) -> Result<(EdgeId, EdgeValue), String> {
        Ok((
            EdgeId {
                peer: Arc::new(self.peer.peer()?),
                port: self.port,
                protocol: self.protocol,
            },
            EdgeValue {
                learned_at: self.learned_at,
                observed: self.observed.observation(),
            },
        ))
    }
}

/// The id and value of an edge of the service.
pub fn edge_parts(edge: &Edge) -> (EdgeId, EdgeValue) {
    (
        EdgeId {
            peer: Arc::clone(&edge.peer),
            port: edge.port,
            protocol: edge.protocol,
        },
        EdgeValue {
            learned_at: edge.learned_at,
            observed: (*edge.observed).clone(),
        },
    )
}

/// The name of a source workload's object `part`: `NAMESPACE.KIND.NAME.PART` (lower case, as
/// in `deploy/samples/learnededgeset.yaml`) when that is a valid object name, else a shortened
/// prefix and a stable hash of the source. Readers go by `spec.source`, never by the name.
pub fn object_name(source: &WireSource, part: u32) -> String {
    let base = format!(
        "{}.{}.{}",
        source.namespace,
        source.workload.kind.to_ascii_lowercase(),
        source.workload.name
    );
    let valid = |s: &str| {
        s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    let name = format!("{base}.{part}");
    if name.len() <= 253 && valid(&name) {
        return name;
    }
    // FNV-1a over the source's parts: stable across processes and versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in base.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let prefix: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "source" } else { prefix };
    format!("{prefix}-{hash:016x}.{part}")
}

/// The whole object as the store writes it (`metadata.resourceVersion` added for a replace).
pub fn object(namespace: &str, writer: &str, spec: &Spec) -> Value {
    serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": object_name(&spec.source, spec.part),
            "namespace": namespace,
            "labels": { PART_OF_LABEL.0: PART_OF_LABEL.1 },
            "annotations": { WRITER_ANNOTATION: writer },
        },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_sample_and_fall_back_to_a_hash() {
        let mut source = WireSource {
            namespace: "shop".into(),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: "web".into(),
            },
            selector: PodSelector::default(),
        };
        assert_eq!(object_name(&source, 0), "shop.deployment.web.0");
        source.workload.name = "Web_1".into();
        let hashed = object_name(&source, 2);
        assert!(hashed.starts_with("shop-deployment-web-1-"), "{hashed}");
        assert!(hashed.ends_with(".2"));
        assert_eq!(hashed, object_name(&source, 2));
        source.workload.name = "x".repeat(300);
        assert!(object_name(&source, 0).len() < 80);
    }

    #[test]
    fn every_peer_kind_reads_back() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for peer in [
            Peer::Pods {
                namespace: "db".into(),
                workload: WorkloadRef {
                    kind: "StatefulSet".into(),
                    name: "pg".into(),
                },
                selector: PodSelector::default(),
                service: Some("pg".into()),
                cluster_dns: false,
            },
            Peer::NodeLocalDns { ip },
            Peer::ApiServer { ip },
            Peer::Node {
                ip,
                node: "node-a".into(),
            },
            Peer::External { ip, service: None },
        ] {
            let wire = WirePeer::of(&peer);
            let json = serde_json::to_value(&wire).unwrap();
            let back: WirePeer = serde_json::from_value(json).unwrap();
            assert_eq!(back.peer().unwrap(), peer);
        }
    }
}
