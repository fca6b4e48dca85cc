//! `GET /v1/status` and `recommender status`: per workload, its edges, first seen, last new edge
//! and learning state; what the policies do not cover; in monitor mode, the baseline and its
//! unused rules. One report type serves the service, the offline store and the table printer.

use std::fmt::Write;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::learning::{self, LearningState, Thresholds, WorkloadStatus};
use super::monitor::{BaselineSource, Monitor, RuleName};
use crate::export::{Uncovered, NOTES_IN_OUTPUT};
use crate::store::Edge;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the report was made (states are relative to it).
    pub now: Timestamp,
    /// `learn`, `monitor`, or `offline` (read from a store).
    pub mode: String,
    pub processing_interval: SignedDuration,
    pub stabilization_period: SignedDuration,
    pub edges: usize,
    pub workloads: Vec<WorkloadStatus>,
    pub uncovered: UncoveredStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncoveredStatus {
    /// Distinct flows of node processes.
    pub host_process_flows: usize,
    /// Notes of flows that could not be resolved (all of them counted, the first ones listed).
    pub unresolved_notes: usize,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub baseline: BaselineSource,
    pub policies: usize,
    pub rules: usize,
    /// Unexpected flows since the service started.
    pub unexpected_flows: u64,
    /// Baseline rules that no flow has used since the service started: possibly too wide.
    pub unused_rules: Vec<RuleName>,
}

impl StatusReport {
    pub fn new<'e>(
        edges: impl IntoIterator<Item = &'e Edge>,
        uncovered: &Uncovered,
        thresholds: &Thresholds,
        mode: &str,
        monitor: Option<&Monitor>,
    ) -> StatusReport {
        let now = Timestamp::now();
        let workloads = learning::workloads(edges, thresholds, now);
        StatusReport {
            now,
            mode: mode.to_owned(),
            processing_interval: thresholds.processing_interval,
            stabilization_period: thresholds.stabilization_period,
            edges: workloads.iter().map(|w| w.edges).sum(),
            workloads,
            uncovered: UncoveredStatus {
                host_process_flows: uncovered.host_records,
                unresolved_notes: uncovered.notes.len(),
                notes: uncovered
                    .notes
                    .iter()
                    .take(NOTES_IN_OUTPUT)
                    .cloned()
                    .collect(),
            },
            monitor: monitor.map(|m| MonitorStatus {
                baseline: m.source,
                policies: m.policies(),
                rules: m.rules(),
                unexpected_flows: m.total(),
                unused_rules: m.unused_rules(),
            }),
        }
    }

    /// Workloads in `state`.
    pub fn count(&self, state: LearningState) -> usize {
        self.workloads.iter().filter(|w| w.state == state).count()
    }

    /// The report as a table, for people.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "NAMESPACE".into(),
            "WORKLOAD".into(),
            "EDGES".into(),
            "FIRST SEEN".into(),
            "LAST NEW EDGE".into(),
            "AGO".into(),
            "STATE".into(),
        ]];
        for w in &self.workloads {
            let ago = self.now.duration_since(w.last_new_edge);
            rows.push([
                w.namespace.clone(),
                format!("{}/{}", w.kind, w.name),
                w.edges.to_string(),
                w.first_seen
                    .round(jiff::Unit::Second)
                    .unwrap_or(w.first_seen)
                    .to_string(),
                w.last_new_edge
                    .round(jiff::Unit::Second)
                    .unwrap_or(w.last_new_edge)
                    .to_string(),
                human(ago),
                w.state.as_str().to_owned(),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        let _ = writeln!(
            out,
            "\n{} workloads ({} learning, {} stabilizing, {} stable), {} edges; learning while a new edge came within {}, stable after {} without one",
            self.workloads.len(),
            self.count(LearningState::Learning),
            self.count(LearningState::Stabilizing),
            self.count(LearningState::Stable),
            self.edges,
            human(self.processing_interval * 2),
            human(self.stabilization_period),
        );
        let u = &self.uncovered;
        if u.host_process_flows > 0 || u.unresolved_notes > 0 {
            let _ = writeln!(
                out,
                "not covered: {} flows of node processes, {} notes of unresolved flows",
                u.host_process_flows, u.unresolved_notes
            );
            for note in &u.notes {
                let _ = writeln!(out, "  {note}");
            }
        }
        if let Some(m) = &self.monitor {
            let _ = writeln!(
                out,
                "monitor: baseline {:?} ({} policies, {} rules), {} unexpected flows; {} rules no flow has used",
                m.baseline,
                m.policies,
                m.rules,
                m.unexpected_flows,
                m.unused_rules.len()
            );
            for r in &m.unused_rules {
                let _ = writeln!(
                    out,
                    "  unused: {} {} rule {}",
                    r.policy, r.direction, r.rule
                );
            }
        }
        out
    }
}

/// `2h5m`, `40s`: a duration for people.
fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use jiff::SignedDuration;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(SignedDuration::from_secs(40)), "40s");
        assert_eq!(human(SignedDuration::from_secs(300)), "5m");
        assert_eq!(human(SignedDuration::from_secs(150)), "2m30s");
        assert_eq!(human(SignedDuration::from_secs(7500)), "2h5m");
    }
}
