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

/// An edge (source workload, peer, port, protocol) by the identity of its interned parts: the
/// writer hashes and compares integers, not workloads' selectors and peers' addresses and names.
/// Sound because every source and peer in [`State::edges`] (and in prepared batches) went through
/// [`Interner`], which keeps each one alive for the life of the process: one value, one address,
/// never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    source: usize,
    peer: usize,
    port: u16,
    protocol: Protocol,
}

impl EdgeKey {
    /// The key of an edge whose `source` and `peer` are interned.
    pub fn of(
        source: &Arc<SourceWorkload>,
        peer: &Arc<Peer>,
        port: u16,
        protocol: Protocol,
    ) -> EdgeKey {
        EdgeKey {
            source: Arc::as_ptr(source) as usize,
            peer: Arc::as_ptr(peer) as usize,
            port,
            protocol,
        }
    }
}

pub fn edge_key(edge: &Edge) -> EdgeKey {
    EdgeKey::of(&edge.source, &edge.peer, edge.port, edge.protocol)
}

/// One shared `Arc` per distinct source workload and peer, for the whole process. Batches are
/// resolved in parallel, each by a resolver of its own; interning there (once per distinct part
/// of a batch) is what lets the serial writer key edges by address ([`EdgeKey`]).
#[derive(Default)]
pub struct Interner {
    sources: DashMap<Arc<SourceWorkload>, (), FastHash>,
    peers: DashMap<Arc<Peer>, (), FastHash>,
}

impl Interner {
    pub fn source(&self, source: &Arc<SourceWorkload>) -> Arc<SourceWorkload> {
        intern(&self.sources, source)
    }

    pub fn peer(&self, peer: &Arc<Peer>) -> Arc<Peer> {
        intern(&self.peers, peer)
    }
}

fn intern<T: Eq + std::hash::Hash>(set: &DashMap<Arc<T>, (), FastHash>, value: &Arc<T>) -> Arc<T> {
    if let Some(known) = set.get(value) {
        return Arc::clone(known.key());
    }
    Arc::clone(set.entry(Arc::clone(value)).or_insert(()).key())
}

/// The hasher of the hot maps: fast on the deep keys of edges, and seeded per process, so that
/// keys pods influence (destinations) cannot be crafted to collide.
pub type FastHash = foldhash::fast::RandomState;

pub struct State {
    pub edges: DashMap<EdgeKey, Edge, FastHash>,
    /// The sources and peers of `edges` (and of every batch prepared since).
    pub interner: Interner,
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
        let newest = learned.batch_ids.iter().map(|(_, at)| *at).max();
        let downtime = newest
            .map(|at| now.duration_since(at).max(SignedDuration::ZERO))
            .unwrap_or(SignedDuration::ZERO);
        let state = State {
            edges: DashMap::with_capacity_and_hasher(learned.edges.len(), FastHash::default()),
            interner: Interner::default(),
            uncovered: DashMap::new(),
            warned: DashMap::new(),
            batch_ids: DashMap::new(),
            id_order: Mutex::new(VecDeque::new()),
            downtime,
        };
        state.reload(learned);
        state
    }

    /// Replaces everything with what the store holds now (the HA store: a replica that takes
    /// the Lease, or a follower catching up). Parts are interned as at start, so batches
    /// prepared against this state key the same edges.
    pub fn reload(&self, learned: Learned) {
        self.edges.clear();
        for mut edge in learned.edges {
            edge.source = self.interner.source(&edge.source);
            edge.peer = self.interner.peer(&edge.peer);
            self.edges.insert(edge_key(&edge), edge);
        }
        self.warned.clear();
        for (key, flow) in &learned.uncovered {
            if let UncoveredFlow::Unresolved { warnings, .. } = flow {
                if !warnings.is_empty() {
                    self.warned.insert(destination_of(key), key.clone());
                }
            }
        }
        self.uncovered.clear();
        for (key, flow) in learned.uncovered {
            self.uncovered.insert(key, flow);
        }
        let mut ids = learned.batch_ids;
        ids.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        self.batch_ids.clear();
        for (id, at) in &ids {
            self.batch_ids.insert(id.clone(), *at);
        }
        *self.id_order.lock().expect("id order lock") =
            ids.into_iter().map(|(id, at)| (at, id)).collect();
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
