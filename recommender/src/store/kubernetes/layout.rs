//! What the store knows of one source workload's objects: their parts, where each edge is, and
//! what other writers added. It decides where a new edge goes (the size bound) and how an object
//! that changed under the store is merged (the conflict merge).
//!
//! The conflict merge is three-way, per edge: the value the store last saw in the object (the
//! base), the value in the object now (another writer's), and the service's. What the other
//! writer added since the base (`now.since(base)`, [`crate::resolve::Observation::since`]) is
//! folded into the service's value with [`crate::resolve::Observation::merge`], the same merge
//! that folds records into edges, and remembered ("foreign"), so that the service's later,
//! absolute values of that edge keep it. A change the store made itself (its own write whose
//! answer it never got, told by the writer annotation) is no other writer's: its values are
//! simply replaced.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::api::DynamicObject;

use super::wire::{EdgeId, EdgeValue, Spec};
use crate::resolve::SourceWorkload;

/// Bytes of a part kept for its `spec.source` and framing when new edges are placed.
const SOURCE_ROOM: usize = 1024;

/// One object (one part of a source workload's edges), as last read or written.
#[derive(Clone, Debug, Default)]
pub struct Part {
    pub name: String,
    /// `spec.part`.
    pub number: u32,
    /// `None` until the object exists.
    pub resource_version: Option<String>,
    pub edges: BTreeMap<EdgeId, EdgeValue>,
    /// The length of its `spec` as JSON.
    pub bytes: usize,
}

impl Part {
    /// The source and part an object of the store holds.
    pub fn read(object: &DynamicObject) -> Result<(Arc<SourceWorkload>, Part), String> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let spec = object
            .data
            .get("spec")
            .ok_or_else(|| format!("{name}: no spec"))?;
        let bytes = serde_json::to_vec(spec).map_or(0, |v| v.len());
        let spec: Spec =
            serde_json::from_value(spec.clone()).map_err(|e| format!("{name}: spec: {e}"))?;
        let mut edges = BTreeMap::new();
        for (i, edge) in spec.edges.iter().enumerate() {
            let (id, value) = edge
                .parts()
                .map_err(|e| format!("{name}: spec.edges[{i}]: {e}"))?;
            edges.insert(id, value);
        }
        let part = Part {
            name,
            number: spec.part,
            resource_version: object.metadata.resource_version.clone(),
            edges,
            bytes,
        };
        Ok((Arc::new(spec.source.workload()), part))
    }
}

/// One source workload's objects.
#[derive(Debug, Default)]
pub struct Source {
    parts: BTreeMap<u32, Part>,
    /// The part each edge is in.
    location: HashMap<EdgeId, u32>,
    /// Per edge, what other writers added that the service's memory does not hold.
    foreign: HashMap<EdgeId, EdgeValue>,
    /// Bytes placed in parts by the commit under way, not written yet.
    pending: HashMap<u32, usize>,
}

impl Source {
    /// Adds an object read from the API.
    pub fn insert(&mut self, part: Part) {
        for id in part.edges.keys() {
            self.location.entry(id.clone()).or_insert(part.number);
        }
        self.parts.insert(part.number, part);
    }

    /// Every edge of every part (an edge found in two parts once, the most observed).
    pub fn edges(&self) -> Vec<(&EdgeId, &EdgeValue)> {
        let mut out: HashMap<&EdgeId, &EdgeValue> = HashMap::new();
        for part in self.parts.values() {
            for (id, value) in &part.edges {
                out.entry(id)
                    .and_modify(|v| {
                        if value.observed.count > v.observed.count {
                            *v = value;
                        }
                    })
                    .or_insert(value);
            }
        }
        out.into_iter().collect()
    }

    /// The part numbered `number`, created empty (not yet in the API) when absent.
    pub fn part(&mut self, number: u32, name: &str) -> &mut Part {
        self.parts.entry(number).or_insert_with(|| Part {
            name: name.to_owned(),
            number,
            ..Part::default()
        })
    }

    /// The service's value of an edge with what other writers added to it.
    pub fn with_foreign(&self, id: &EdgeId, mut value: EdgeValue) -> EdgeValue {
        if let Some(foreign) = self.foreign.get(id) {
            value.merge(foreign);
        }
        value
    }

    /// The part an edge goes to: where it is; a new edge to the last part while that stays
    /// under `bound` bytes, else to a new part.
    pub fn place(&mut self, id: &EdgeId, value: &EdgeValue, bound: usize) -> u32 {
        if let Some(part) = self.location.get(id) {
            return *part;
        }
        let size =
            serde_json::to_vec(&super::wire::WireEdge::of(id, value)).map_or(0, |v| v.len()) + 1;
        let last = self.parts.keys().next_back().copied();
        let last_pending = self.pending.keys().max().copied();
        let last = last.max(last_pending).unwrap_or(0);
        let used = self.parts.get(&last).map_or(0, |p| p.bytes)
            + self.pending.get(&last).copied().unwrap_or(0);
        // A new part holds its source too (namespace, workload, selector): room is kept for it.
        let part = if used == 0 || used + size + SOURCE_ROOM <= bound {
            last
        } else {
            last + 1
        };
        *self.pending.entry(part).or_default() += size;
        self.location.insert(id.clone(), part);
        part
    }

    /// The commit under way is over (written or not): its placements are in the parts' sizes.
    pub fn settle(&mut self) {
        self.pending.clear();
    }

    /// Takes in the object `part` as read after a 409. From another writer (`foreign`), what it
    /// added to each edge since the store last saw it is remembered and added to `changes`;
    /// from this store's own earlier write, it is the store's lineage already.
    pub fn absorb(
        &mut self,
        number: u32,
        read: Part,
        foreign: bool,
        changes: &mut BTreeMap<EdgeId, EdgeValue>,
    ) {
        let name = read.name.clone();
        let base = self.part(number, &name);
        if foreign {
            let mut added: Vec<(EdgeId, EdgeValue)> = Vec::new();
            for (id, now) in &read.edges {
                let delta = match base.edges.get(id) {
                    Some(before) if before == now => continue,
                    Some(before) => EdgeValue {
                        learned_at: now.learned_at,
                        observed: now.observed.since(&before.observed),
                    },
                    None => now.clone(),
                };
                added.push((id.clone(), delta));
            }
            for (id, delta) in added {
                tracing::info!(object = %name, "merging another writer's change");
                if let Some(change) = changes.get_mut(&id) {
                    change.merge(&delta);
                }
                self.foreign
                    .entry(id)
                    .and_modify(|f| f.merge(&delta))
                    .or_insert(delta);
            }
        }
        for id in read.edges.keys() {
            self.location.entry(id.clone()).or_insert(number);
        }
        let base = self.part(number, &name);
        base.resource_version = read.resource_version;
        base.bytes = read.bytes;
        base.edges = read.edges;
    }
}
