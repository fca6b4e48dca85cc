//! [`MergedRecords`]: FlowRecords merged by [`FlowRecord::key`] as they are read, held compactly,
//! so that a flows file far larger than memory in record form can be read as a stream.
//!
//! Agents report deltas: the same key comes back every flush, so the merged set is much smaller
//! than the input. What a merged record needs beyond its key is small (the window, counts,
//! outcomes, names), while its source (node, namespace, pod, uid, container id, workload, labels)
//! is the same for every flow of a pod. So the source is held once per pod and each flow keeps only
//! its destination and what was observed. The result is exactly what merging whole records by key
//! gives: the same records, the same key order, each with the source of the first record of its
//! key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::{FlowRecord, Protocol, Source, SourceKind, WorkloadRef};

/// The source half of a [`flow_model::FlowKey`], fields in the same order, so that ordering by
/// (identity, destination) is ordering by key.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PodIdentity {
    node: String,
    kind: SourceKind,
    namespace: Option<String>,
    pod: Option<String>,
    uid: Option<String>,
    container_id: Option<String>,
}

/// What a record says of its source beyond its identity. Usually one per pod; a pod relabelled
/// while it was observed has several.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Description {
    workload: Option<WorkloadRef>,
    labels: BTreeMap<String, String>,
    host_network: bool,
}

/// The destination half of a [`flow_model::FlowKey`].
type DestinationKey = (IpAddr, u16, Protocol);

/// The flows of one pod (one source identity).
#[derive(Debug, Default)]
struct PodFlows {
    descriptions: Vec<Description>,
    /// Per destination: the description of its first record, and the merged record with `node`
    /// and the source's strings taken out (they are the identity's).
    flows: BTreeMap<DestinationKey, (usize, FlowRecord)>,
}

/// FlowRecords merged by key; see the module comment.
#[derive(Debug, Default)]
pub struct MergedRecords {
    pods: BTreeMap<PodIdentity, PodFlows>,
    len: usize,
}

impl MergedRecords {
    /// Folds one record in (a new key, or a delta of one already held).
    pub fn insert(&mut self, mut record: FlowRecord) {
        let (identity, description) = split_source(&mut record);
        let pod = self.pods.entry(identity).or_default();
        let index = match pod.descriptions.iter().position(|d| *d == description) {
            Some(index) => index,
            None => {
                pod.descriptions.push(description);
                pod.descriptions.len() - 1
            }
        };
        let d = &record.destination;
        match pod.flows.entry((d.ip, d.port, d.protocol)) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().1.merge(&record),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((index, record));
                self.len += 1;
            }
        }
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `each` with every merged record, in key order, releasing them as it goes.
    pub fn drain(self, mut each: impl FnMut(&FlowRecord)) {
        for (identity, pod) in self.pods {
            let mut node = identity.node.clone();
            let mut sources: Vec<Source> = pod
                .descriptions
                .into_iter()
                .map(|d| Source {
                    kind: identity.kind,
                    namespace: identity.namespace.clone(),
                    pod: identity.pod.clone(),
                    uid: identity.uid.clone(),
                    container_id: identity.container_id.clone(),
                    workload: d.workload,
                    labels: d.labels,
                    host_network: d.host_network,
                })
                .collect();
            for (_, (index, mut record)) in pod.flows {
                // Lend the pod's node and source to the record rather than copy them per flow.
                std::mem::swap(&mut record.node, &mut node);
                std::mem::swap(&mut record.source, &mut sources[index]);
                each(&record);
                std::mem::swap(&mut record.node, &mut node);
                std::mem::swap(&mut record.source, &mut sources[index]);
            }
        }
    }

    /// Every merged record, in key order.
    pub fn into_vec(self) -> Vec<FlowRecord> {
        let mut out = Vec::with_capacity(self.len);
        self.drain(|record| out.push(record.clone()));
        out
    }
}

/// Moves the source out of `record`: its identity (with the node) and its description. What is
/// left has an empty node and a bare source of the same kind, equal for every record of the
/// pod, so that [`FlowRecord::merge`] sees equal keys.
fn split_source(record: &mut FlowRecord) -> (PodIdentity, Description) {
    let kind = record.source.kind;
    let source = std::mem::replace(
        &mut record.source,
        Source {
            kind,
            namespace: None,
            pod: None,
            uid: None,
            container_id: None,
            workload: None,
            labels: BTreeMap::new(),
            host_network: false,
        },
    );
    let identity = PodIdentity {
        node: std::mem::take(&mut record.node),
        kind,
        namespace: source.namespace,
        pod: source.pod,
        uid: source.uid,
        container_id: source.container_id,
    };
    let description = Description {
        workload: source.workload,
        labels: source.labels,
        host_network: source.host_network,
    };
    (identity, description)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pod: &str, ip: &str, count: u64, app: &str) -> FlowRecord {
        serde_json::from_value(serde_json::json!({
            "node": "n", "source": {"kind": "pod", "namespace": "ns", "pod": pod, "labels": {"app": app}},
            "destination": {"ip": ip, "port": 443, "protocol": "TCP"},
            "first_seen": "2026-11-26T16:00:00Z", "last_seen": "2026-11-26T16:00:00Z",
            "count": count, "outcome": "established"}))
        .unwrap()
    }

    /// The obvious implementation: whole records in a map by key.
    fn by_key(records: &[FlowRecord]) -> Vec<FlowRecord> {
        let mut merged: BTreeMap<flow_model::FlowKey, FlowRecord> = BTreeMap::new();
        for r in records {
            merged
                .entry(r.key())
                .and_modify(|m| m.merge(r))
                .or_insert_with(|| r.clone());
        }
        merged.into_values().collect()
    }

    #[test]
    fn same_records_as_merging_whole_records_by_key() {
        let records = [
            record("b", "198.18.0.2", 1, "web"),
            record("a", "198.18.0.2", 2, "web"),
            // relabelled: the first record of each key keeps its labels
            record("b", "198.18.0.1", 3, "web2"),
            record("b", "198.18.0.2", 4, "web2"),
            record("a", "::ffff:198.18.0.2", 5, "web"),
            record("a", "198.18.0.2", 6, "web"),
        ];
        let mut merged = MergedRecords::default();
        for r in records.iter().cloned() {
            merged.insert(r);
        }
        assert_eq!(merged.len(), 4);
        let got = merged.into_vec();
        assert_eq!(got, by_key(&records));
        assert_eq!(got[0].count, 8);
        assert_eq!(got[3].source.labels["app"], "web");
        assert_eq!(got[2].source.labels["app"], "web2");
    }
}
