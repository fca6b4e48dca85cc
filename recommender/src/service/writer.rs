//! The one writer: group commit. Handlers hand it prepared batches; it takes every batch waiting,
//! merges them into the edges they change, makes all of that durable with one store commit (one
//! transaction, one fsync), then updates the in-memory state and acknowledges every batch of the
//! group. While a commit is on disk the next batches queue up, so the cost of a commit is shared
//! by more batches the busier the service is: throughput holds.
//!
//! A batch whose id was acknowledged before (or appears twice in the group) is acknowledged
//! again without being applied: counted once. Its id is recorded in the same commit as its edges.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use flow_model::FlowKey;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::ingest::Prepared;
use super::metrics::Metrics;
use super::monitor::Monitor;
use super::state::{destination_of, edge_key, EdgeKey, FastHash, State};
use crate::store::{Commit, Edge, Store, StoreError, UncoveredFlow};

/// Per destination, the flow key that now holds its warnings.
type Holders = HashMap<(IpAddr, u16, flow_model::Protocol), FlowKey>;

/// At most this many batches share one commit (bounds the latency of the first of them).
pub const MAX_GROUP: usize = 512;

/// What the service answers a batch with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The id was acknowledged before: nothing was applied this time.
    pub duplicate: bool,
    pub records: usize,
}

pub struct Submission {
    pub batch: Prepared,
    pub reply: oneshot::Sender<Result<Ack, Arc<StoreError>>>,
}

pub struct Writer {
    pub store: Arc<dyn Store>,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub monitor: Option<Arc<Monitor>>,
    /// How long acknowledged batch ids are remembered (of service time, see [`State::downtime`]).
    pub id_retention: SignedDuration,
    /// Most unresolved flows kept.
    pub max_uncovered: usize,
}

impl Writer {
    /// Commits groups of batches until every sender is gone.
    pub async fn run(self, mut rx: mpsc::Receiver<Submission>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&self, group: Vec<Submission>) {
        let now = Timestamp::now();
        let mut ids: HashSet<&str> = HashSet::new();
        let mut fresh = vec![false; group.len()];
        let mut changed: HashMap<EdgeKey, Edge, FastHash> = HashMap::default();
        let mut uncovered: BTreeMap<FlowKey, UncoveredFlow> = BTreeMap::new();
        for (i, submission) in group.iter().enumerate() {
            let batch = &submission.batch;
            if let Some(id) = batch.id.as_deref() {
                if self.state.is_acknowledged(id) || !ids.insert(id) {
                    continue;
                }
            }
            fresh[i] = true;
            for flow in &batch.edges {
                // Prepared batches come with interned parts (see `ingest::prepare`).
                let key = EdgeKey::of(&flow.source, &flow.peer, flow.port, flow.protocol);
                match changed.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        Arc::make_mut(&mut e.get_mut().observed).merge(&flow.observed);
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let edge = match self.state.edges.get(e.key()) {
                            Some(old) => {
                                let mut observed = (*old.observed).clone();
                                observed.merge(&flow.observed);
                                Edge {
                                    observed: Arc::new(observed),
                                    ..old.value().clone()
                                }
                            }
                            None => Edge {
                                source: Arc::clone(&flow.source),
                                peer: Arc::clone(&flow.peer),
                                port: flow.port,
                                protocol: flow.protocol,
                                learned_at: now,
                                observed: Arc::new((*flow.observed).clone()),
                            },
                        };
                        e.insert(edge);
                    }
                }
            }
            for (key, flow) in &batch.uncovered {
                let mut flow = flow.clone();
                // Warnings come once per destination and batch: a later record without them
                // does not take them away.
                if let (
                    UncoveredFlow::Unresolved { warnings, .. },
                    Some(UncoveredFlow::Unresolved {
                        warnings: before, ..
                    }),
                ) = (&mut flow, uncovered.get(key))
                {
                    if warnings.is_empty() {
                        warnings.clone_from(before);
                    }
                }
                uncovered.insert(key.clone(), flow);
            }
        }
        let (uncovered, holders) = self.uncovered_to_write(uncovered);
        let commit = Commit {
            edges: changed.into_values().collect(),
            uncovered,
            batch_ids: ids.iter().map(|id| id.to_string()).collect(),
            acknowledged_at: now,
            forget_ids_before: Some(now - self.id_retention - self.state.downtime),
        };
        let started = Instant::now();
        let result = if commit.edges.is_empty()
            && commit.uncovered.is_empty()
            && commit.batch_ids.is_empty()
        {
            Ok(Arc::new(commit))
        } else {
            let commit = Arc::new(commit);
            self.store
                .commit(Arc::clone(&commit))
                .await
                .map(|()| commit)
        };
        match result {
            Ok(commit) => {
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics
                    .commit_batches
                    .observe(fresh.iter().filter(|f| **f).count() as f64);
                self.apply(&commit, holders);
                let mut done = Vec::with_capacity(group.len());
                for (submission, fresh) in group.into_iter().zip(fresh) {
                    done.push(self.acknowledge(submission, fresh));
                }
                // Freeing thousands of resolved flows is not the writer's job.
                tokio::task::spawn_blocking(move || drop((done, commit)));
            }
            Err(e) => {
                tracing::error!("commit failed, {} batches refused: {e}", group.len());
                self.metrics.store_errors.inc();
                let e = Arc::new(e);
                for (submission, fresh) in group.into_iter().zip(fresh) {
                    if fresh {
                        let _ = submission.reply.send(Err(Arc::clone(&e)));
                    } else {
                        drop(self.acknowledge(submission, false));
                    }
                }
            }
        }
    }

    /// The uncovered flows worth writing: new or changed ones, within `max_uncovered`; a
    /// destination's warnings stay with the smallest flow key that reached it, as in `recommend`.
    /// Also the new holders of warnings.
    fn uncovered_to_write(
        &self,
        flows: BTreeMap<FlowKey, UncoveredFlow>,
    ) -> (Vec<(FlowKey, UncoveredFlow)>, Holders) {
        let known = &self.state.uncovered;
        let mut room = self.max_uncovered.saturating_sub(known.len());
        let mut holders: Holders = HashMap::new();
        let mut out: BTreeMap<FlowKey, UncoveredFlow> = BTreeMap::new();
        let current = |out: &BTreeMap<FlowKey, UncoveredFlow>, key: &FlowKey| {
            out.get(key)
                .cloned()
                .or_else(|| known.get(key).map(|v| v.value().clone()))
        };
        for (key, mut flow) in flows {
            if let UncoveredFlow::Unresolved { warnings, .. } = &mut flow {
                let destination = destination_of(&key);
                let holder = holders
                    .get(&destination)
                    .cloned()
                    .or_else(|| self.state.warned.get(&destination).map(|h| h.clone()));
                match holder {
                    _ if warnings.is_empty() => {
                        // Keep the destination's warnings where they are.
                        if let Some(UncoveredFlow::Unresolved { warnings: kept, .. }) =
                            current(&out, &key)
                        {
                            *warnings = kept;
                        }
                    }
                    Some(h) if h <= key => {
                        if h < key {
                            warnings.clear();
                        }
                    }
                    Some(h) => {
                        // An earlier flow reached the destination: the warnings move to it.
                        if let Some(UncoveredFlow::Unresolved { notes, warnings: _ }) =
                            current(&out, &h)
                        {
                            out.insert(
                                h,
                                UncoveredFlow::Unresolved {
                                    notes,
                                    warnings: Vec::new(),
                                },
                            );
                        }
                        holders.insert(destination, key.clone());
                    }
                    None => {
                        holders.insert(destination, key.clone());
                    }
                }
            }
            match known.get(&key) {
                Some(old) if *old == flow => {}
                Some(_) => {
                    out.insert(key, flow);
                }
                None if flow.is_empty() => {}
                None if room > 0 => {
                    room -= 1;
                    out.insert(key, flow);
                }
                None => self.metrics.uncovered_dropped.inc(),
            }
        }
        (out.into_iter().collect(), holders)
    }

    /// Makes a durable commit visible in memory.
    fn apply(&self, commit: &Commit, holders: Holders) {
        for edge in &commit.edges {
            self.state.edges.insert(edge_key(edge), edge.clone());
        }
        self.metrics.edges.set(self.state.edges.len() as i64);
        for (key, flow) in &commit.uncovered {
            if flow.is_empty() {
                self.state.uncovered.remove(key);
            } else {
                self.state.uncovered.insert(key.clone(), flow.clone());
            }
        }
        for (destination, key) in holders {
            self.state.warned.insert(destination, key);
        }
        let mut order = self.state.id_order.lock().expect("id order lock");
        for id in &commit.batch_ids {
            self.state
                .batch_ids
                .insert(id.clone(), commit.acknowledged_at);
            order.push_back((commit.acknowledged_at, id.clone()));
        }
        if let Some(before) = commit.forget_ids_before {
            forget_before(&self.state.batch_ids, &mut order, before);
        }
    }

    /// Answers a batch; returns what is left of it, to be freed elsewhere.
    fn acknowledge(&self, submission: Submission, fresh: bool) -> Prepared {
        let mut batch = submission.batch;
        let records = batch.records;
        if fresh {
            self.metrics.batches.with_label_values(&["accepted"]).inc();
            self.metrics.records.inc_by(records as u64);
            for (reason, n) in &batch.skipped {
                self.metrics
                    .skipped
                    .with_label_values(&[reason.as_str()])
                    .inc_by(*n);
            }
            if let (Some(monitor), Some(judged)) = (&self.monitor, batch.judged.take()) {
                monitor.apply(judged, &self.metrics);
            }
        } else {
            self.metrics.batches.with_label_values(&["duplicate"]).inc();
        }
        let _ = submission.reply.send(Ok(Ack {
            duplicate: !fresh,
            records,
        }));
        batch
    }
}

fn forget_before(
    ids: &DashMap<String, Timestamp>,
    order: &mut std::collections::VecDeque<(Timestamp, String)>,
    before: Timestamp,
) {
    while order.front().is_some_and(|(at, _)| *at < before) {
        let (at, id) = order.pop_front().expect("checked");
        // Only if it was not acknowledged again since (it cannot be, but stay exact).
        ids.remove_if(&id, |_, when| *when == at);
    }
}
