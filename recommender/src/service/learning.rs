//! Learning state per workload, the way Calico's policy recommendation tells it: a workload is
//! *learning* while new edges keep coming (its last new edge is at most two processing intervals
//! old), *stabilizing* once none came for that long, and *stable* once none came for the whole
//! stabilization period. Calico's defaults: a 2m30s interval and a 10m stabilization period.
//!
//! "New edge" is an edge the service had not learned before (a new peer, port or protocol for the
//! workload); more traffic on known edges does not reset the clock. Times are the service's, when
//! it learned the edge, not the agents' (a batch delivered late from a spool is news now).

use std::collections::BTreeMap;

use flow_model::WorkloadRef;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::store::Edge;

/// Calico's `interval` default: 2m30s.
pub const DEFAULT_PROCESSING_INTERVAL: SignedDuration = SignedDuration::from_secs(150);
/// Calico's `stabilizationPeriod` default: 10m.
pub const DEFAULT_STABILIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub processing_interval: SignedDuration,
    pub stabilization_period: SignedDuration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            processing_interval: DEFAULT_PROCESSING_INTERVAL,
            stabilization_period: DEFAULT_STABILIZATION_PERIOD,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearningState {
    Learning,
    Stabilizing,
    Stable,
}

impl LearningState {
    pub const ALL: [LearningState; 3] = [
        LearningState::Learning,
        LearningState::Stabilizing,
        LearningState::Stable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LearningState::Learning => "learning",
            LearningState::Stabilizing => "stabilizing",
            LearningState::Stable => "stable",
        }
    }
}

impl Thresholds {
    /// The state of a workload whose last new edge was learned at `last_new_edge`.
    pub fn state(&self, last_new_edge: Timestamp, now: Timestamp) -> LearningState {
        let quiet = now.duration_since(last_new_edge);
        if quiet <= self.processing_interval * 2 {
            LearningState::Learning
        } else if quiet <= self.stabilization_period {
            LearningState::Stabilizing
        } else {
            LearningState::Stable
        }
    }
}

/// One workload's row of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Distinct edges (peer, port, protocol) learned.
    pub edges: usize,
    /// The earliest traffic seen (agents' clocks).
    pub first_seen: Timestamp,
    /// The latest traffic seen (agents' clocks).
    pub last_seen: Timestamp,
    /// When the service learned its newest edge (the service's clock).
    pub last_new_edge: Timestamp,
    pub state: LearningState,
}

/// Every workload's status, sorted by namespace, kind and name.
pub fn workloads<'e>(
    edges: impl IntoIterator<Item = &'e Edge>,
    thresholds: &Thresholds,
    now: Timestamp,
) -> Vec<WorkloadStatus> {
    let mut by_workload: BTreeMap<(&str, &WorkloadRef), WorkloadStatus> = BTreeMap::new();
    for edge in edges {
        let key = (edge.source.namespace.as_str(), &edge.source.workload);
        let o = &edge.observed;
        by_workload
            .entry(key)
            .and_modify(|w| {
                w.edges += 1;
                w.first_seen = w.first_seen.min(o.first_seen);
                w.last_seen = w.last_seen.max(o.last_seen);
                w.last_new_edge = w.last_new_edge.max(edge.learned_at);
            })
            .or_insert_with(|| WorkloadStatus {
                namespace: key.0.to_owned(),
                kind: key.1.kind.clone(),
                name: key.1.name.clone(),
                edges: 1,
                first_seen: o.first_seen,
                last_seen: o.last_seen,
                last_new_edge: edge.learned_at,
                state: LearningState::Learning,
            });
    }
    by_workload
        .into_values()
        .map(|mut w| {
            w.state = thresholds.state(w.last_new_edge, now);
            w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_calicos_thresholds() {
        let t = Thresholds::default();
        let at: Timestamp = "2026-11-26T16:00:00Z".parse().unwrap();
        let after = |secs: i64| at + SignedDuration::from_secs(secs);
        assert_eq!(t.state(at, after(0)), LearningState::Learning);
        assert_eq!(t.state(at, after(300)), LearningState::Learning);
        assert_eq!(t.state(at, after(301)), LearningState::Stabilizing);
        assert_eq!(t.state(at, after(600)), LearningState::Stabilizing);
        assert_eq!(t.state(at, after(601)), LearningState::Stable);
    }
}
