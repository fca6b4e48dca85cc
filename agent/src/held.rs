//! Records of pods whose metadata has not arrived yet, held until it does.
//!
//! A pod's first connections can precede the API watch's news of the pod (the agent just started,
//! the watch is reconnecting, or the event is simply late). Such a record waits here, in arrival
//! order, bounded in time (`--pod-wait`) and in number ([`MAX_HELD`]); at each poll the ones
//! whose pod is now known are named and go out, and those past the bound go out with only what the
//! cgroup path told (UID, container id), counted in `egress_agent_flows_unnamed_total`. Nothing
//! is dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use flow_model::{FlowRecord, SourceKind};

use crate::metrics::{Metrics, Unnamed};
use crate::pods::PodIndex;

/// Bound on held records (about 300 bytes each).
pub const MAX_HELD: usize = 20_000;

struct Waiting {
    since: Instant,
    record: FlowRecord,
}

pub struct Held {
    queue: VecDeque<Waiting>,
    wait: Duration,
    max: usize,
    /// The index the queue was last matched against: a new one is worth a full look.
    matched: Option<PodIndex>,
}

/// The pod UID of a pod's record that carries no pod metadata yet.
pub fn unnamed_pod(record: &FlowRecord) -> Option<&str> {
    (record.source.kind == SourceKind::Pod && record.source.pod.is_none())
        .then_some(record.source.uid.as_deref())
        .flatten()
}

/// Fills in the pod metadata of `record` from `index`; whether it was found.
fn name(record: &mut FlowRecord, index: &PodIndex) -> bool {
    let info = unnamed_pod(record).and_then(|uid| index.get(uid));
    match info {
        Some(info) => {
            info.describe(&mut record.source);
            true
        }
        None => false,
    }
}

impl Held {
    pub fn new(wait: Duration, max: usize) -> Held {
        Held {
            queue: VecDeque::new(),
            wait,
            max: max.max(1),
            matched: None,
        }
    }

    /// Whether records wait at all (`--pod-wait 0` sends them on at once).
    pub fn holds(&self) -> bool {
        !self.wait.is_zero()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Holds an unnamed pod's record; when the hold is full, its oldest record goes to `out`
    /// unnamed.
    pub fn hold(
        &mut self,
        record: FlowRecord,
        now: Instant,
        out: &mut Vec<FlowRecord>,
        metrics: &Metrics,
    ) {
        if self.queue.len() >= self.max {
            if let Some(oldest) = self.queue.pop_front() {
                metrics.flows_unnamed(Unnamed::HoldFull, 1);
                out.push(oldest.record);
            }
        }
        self.queue.push_back(Waiting { since: now, record });
    }

    /// Sends to `out`, oldest first, the records whose pod `index` now knows (named) and those
    /// that have waited `--pod-wait` (unnamed, counted).
    pub fn release(
        &mut self,
        index: &PodIndex,
        now: Instant,
        out: &mut Vec<FlowRecord>,
        metrics: &Metrics,
    ) {
        let new_index = !self
            .matched
            .as_ref()
            .is_some_and(|seen| std::sync::Arc::ptr_eq(seen, index));
        if new_index && !self.queue.is_empty() {
            let mut still = VecDeque::with_capacity(self.queue.len());
            for mut waiting in self.queue.drain(..) {
                if name(&mut waiting.record, index) {
                    out.push(waiting.record);
                } else {
                    still.push_back(waiting);
                }
            }
            self.queue = still;
        }
        self.matched = Some(index.clone());
        while let Some(front) = self.queue.front() {
            if now.saturating_duration_since(front.since) < self.wait {
                break;
            }
            let waiting = self.queue.pop_front().expect("front exists");
            metrics.flows_unnamed(Unnamed::Timeout, 1);
            out.push(waiting.record);
        }
    }

    /// Sends every held record to `out`: named where `index` knows the pod, else unnamed and
    /// counted as `reason`.
    pub fn release_all(
        &mut self,
        index: &PodIndex,
        reason: Unnamed,
        out: &mut Vec<FlowRecord>,
        metrics: &Metrics,
    ) {
        for mut waiting in self.queue.drain(..) {
            if !name(&mut waiting.record, index) {
                metrics.flows_unnamed(reason, 1);
            }
            out.push(waiting.record);
        }
    }
}
