//! What the service has learned, in memory: the same content as the store, read once at start
//! and then changed only by the writer, after each commit (so it never shows what is not durable).
//! Concurrent maps (dashmap), because ingest (batch ids), exports and status read them while the
//! writer writes.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use flow_model::{FlowKey, Protocol};
use jiff::{SignedDuration, Timestamp};

use crate::export::Uncovered;
use crate::resolve::{Peer, ResolvedFlow, SourceWorkload};
use crate::store::{Edge, Learned, UncoveredFlow};

/// (source workload, peer, port, protocol).
pub type EdgeKey = (Arc<SourceWorkload>, Arc<Peer>, u16, Protocol);

pub fn edge_key(edge: &Edge) -> EdgeKey {
    (
        Arc::clone(&edge.source),
        Arc::clone(&edge.peer),
        edge.port,
        edge.protocol,
    )
}

/// The hasher of the hot maps: fast on the deep keys of edges, and seeded per process, so that
/// keys pods influence (destinations) cannot be crafted to collide.
pub type FastHash = foldhash::fast::RandomState;

pub struct State {
    pub edges: DashMap<EdgeKey, Edge, FastHash>,
    pub uncovered: DashMap<FlowKey, UncoveredFlow>,
    /// Per destination with warnings, the flow key that holds them (the smallest seen).
    pub warned: DashMap<(IpAddr, u16, Protocol), FlowKey>,
    /// Acknowledged batch ids and when.
    pub batch_ids: DashMap<String, Timestamp>,
    /// The same ids in acknowledgement order, for forgetting the old ones (writer only).
    pub id_order: Mutex<VecDeque<(Timestamp, String)>>,
    /// How long the service was down before this start: batch ids do not age while it is (see
    /// `docs/architecture.md`, "Batch ids").
    pub downtime: SignedDuration,
}

impl State {
    /// The state of what the store held, at `now`.
    pub fn from_store(learned: Learned, now: Timestamp) -> State {
        let edges = DashMap::with_capacity_and_hasher(learned.edges.len(), FastHash::default());
        for edge in learned.edges {
            edges.insert(edge_key(&edge), edge);
        }
        let warned = DashMap::new();
        for (key, flow) in &learned.uncovered {
            if let UncoveredFlow::Unresolved { warnings, .. } = flow {
                if !warnings.is_empty() {
                    warned.insert(destination_of(key), key.clone());
                }
            }
        }
        let uncovered = learned.uncovered.into_iter().collect();
        let mut ids = learned.batch_ids;
        ids.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let newest = ids.last().map(|(_, at)| *at);
        let downtime = newest
            .map(|at| now.duration_since(at).max(SignedDuration::ZERO))
            .unwrap_or(SignedDuration::ZERO);
        let batch_ids = ids.iter().cloned().collect();
        let id_order = ids.into_iter().map(|(id, at)| (at, id)).collect();
        State {
            edges,
            uncovered,
            warned,
            batch_ids,
            id_order: Mutex::new(id_order),
            downtime,
        }
    }

    pub fn is_acknowledged(&self, id: &str) -> bool {
        self.batch_ids.contains_key(id)
    }

    /// A copy of every edge (cheap: shared parts are `Arc`s).
    pub fn edges(&self) -> Vec<Edge> {
        self.edges.iter().map(|e| e.value().clone()).collect()
    }

    /// Every edge as synthesis reads it.
    pub fn flows(&self) -> Vec<ResolvedFlow> {
        self.edges.iter().map(|e| e.value().flow()).collect()
    }

    /// What the policies do not cover, in flow key order (the order `recommend` reads records in).
    pub fn uncovered(&self) -> Uncovered {
        uncovered_of(
            self.uncovered
                .iter()
                .map(|e| (e.key().clone(), e.value().clone())),
        )
    }
}

/// The destination of a flow key.
pub fn destination_of(key: &FlowKey) -> (IpAddr, u16, Protocol) {
    (key.ip, key.port, key.protocol)
}

/// [`Uncovered`] from stored flows, in flow key order.
pub fn uncovered_of(flows: impl IntoIterator<Item = (FlowKey, UncoveredFlow)>) -> Uncovered {
    let mut flows: Vec<_> = flows.into_iter().collect();
    flows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Uncovered::default();
    for (_, flow) in flows {
        match flow {
            UncoveredFlow::HostProcess => out.host_records += 1,
            UncoveredFlow::Unresolved { notes, warnings } => {
                out.notes.extend(notes);
                out.warnings.extend(warnings);
            }
        }
    }
    out
}
