//! Records as the recommender reads them: named for messages, merged by key, and resolved edges
//! merged by edge.

use std::collections::BTreeMap;
use std::sync::Arc;

use flow_model::{FlowRecord, SourceKind};

use super::merged::MergedRecords;
use super::model::{Peer, ResolvedFlow, SourceWorkload};

/// `source → ip:port/PROTO`, to name a record in notes and reports.
pub fn describe(record: &FlowRecord) -> String {
    let source = &record.source;
    let who = match (source.kind, &source.namespace, &source.pod) {
        (SourceKind::Host, ..) => format!("host {}", record.node),
        (_, Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        (_, Some(ns), None) => format!("{ns}/(pod uid {})", source.uid.as_deref().unwrap_or("?")),
        _ => format!("pod on {}", record.node),
    };
    let d = &record.destination;
    let address = std::net::SocketAddr::new(d.ip, d.port);
    format!("{who} -> {address}/{}", d.protocol)
}

/// Records merged by [`FlowRecord::key`] (they are deltas of the same flows), in key order.
pub fn merge_records(records: impl IntoIterator<Item = FlowRecord>) -> Vec<FlowRecord> {
    let mut merged = MergedRecords::default();
    for record in records {
        merged.insert(record);
    }
    merged.into_vec()
}

/// The key of an edge, its source and peer shared with the flows it came from.
type OwnedEdgeKey = (Arc<SourceWorkload>, Arc<Peer>, u16, flow_model::Protocol);

/// Resolved flows merged by edge as they come ([`ResolvedFlow::key`]), their observations folded
/// together: what the store keeps, and what `recommend` synthesizes from, so that both give the
/// same policies for the same traffic.
#[derive(Debug, Default)]
pub struct Edges {
    merged: BTreeMap<OwnedEdgeKey, ResolvedFlow>,
}

impl Edges {
    /// Folds one flow in.
    pub fn add(&mut self, flow: ResolvedFlow) {
        let key = (
            Arc::clone(&flow.source),
            Arc::clone(&flow.peer),
            flow.port,
            flow.protocol,
        );
        match self.merged.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                // Two records may observe exactly the same thing (same window, same count): both
                // happened, both count.
                Arc::make_mut(&mut e.get_mut().observed).merge(&flow.observed);
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(flow);
            }
        }
    }

    /// The edges, in edge order.
    pub fn into_vec(self) -> Vec<ResolvedFlow> {
        self.merged.into_values().collect()
    }
}

/// Resolved flows merged by edge (see [`Edges`]), in edge order.
pub fn merge_edges(flows: impl IntoIterator<Item = ResolvedFlow>) -> Vec<ResolvedFlow> {
    let mut edges = Edges::default();
    for flow in flows {
        edges.add(flow);
    }
    edges.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Observation;

    #[test]
    fn equal_observations_of_one_edge_both_count() {
        let record: FlowRecord = serde_json::from_str(
            r#"{"node":"n","source":{"kind":"pod"},"destination":{"ip":"198.18.0.1","port":443,"protocol":"TCP"},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:00Z","count":2,"outcome":"established"}"#,
        )
        .unwrap();
        let source = Arc::new(SourceWorkload {
            namespace: "ns".into(),
            workload: flow_model::WorkloadRef {
                kind: "Deployment".into(),
                name: "web".into(),
            },
            selector: [("app".to_owned(), "web".to_owned())]
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into(),
        });
        let peer = Arc::new(Peer::External {
            ip: "198.18.0.1".parse().unwrap(),
            service: None,
        });
        // Two pods of one workload, each with its own (equal) record of the same edge.
        let flow = || ResolvedFlow {
            source: Arc::clone(&source),
            peer: Arc::clone(&peer),
            port: 443,
            protocol: flow_model::Protocol::Tcp,
            observed: Arc::new(Observation::of(&record)),
        };
        let edges = merge_edges([flow(), flow()]);
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].observed.count, 4);
    }
}
