//! [`Observation`]: what was seen of one edge, independent of how it was cut into records.
//!
//! The CLI builds observations from FlowRecords; the service keeps one per edge in its store and
//! merges every later record into it. Synthesis reads only observations, so the policies of the
//! same traffic are the same bytes whichever path it took (`recommend` on files, `export` from a
//! store).

use std::collections::BTreeSet;

use flow_model::{FlowRecord, Outcome, Outcomes};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What was observed of one edge: when, how often, with what outcome, under which names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Connections (TCP, connected UDP) and datagrams (unconnected UDP), saturating.
    pub count: u64,
    /// The most conclusive outcome seen (`Outcome`'s order).
    pub outcome: Outcome,
    #[serde(default)]
    pub outcomes: Outcomes,
    /// The names the sources resolved to the address they connected to (for a Service, the
    /// Service's names).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dns_names: BTreeSet<String>,
}

impl Observation {
    /// The observation one record makes.
    pub fn of(record: &FlowRecord) -> Observation {
        Observation {
            first_seen: record.first_seen,
            last_seen: record.last_seen,
            count: record.count,
            outcome: record.outcome,
            outcomes: record.outcomes,
            dns_names: record.destination.dns_names.iter().cloned().collect(),
        }
    }

    /// Folds `other` (of the same edge) into this one; any order gives the same result.
    pub fn merge(&mut self, other: &Observation) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count = self.count.saturating_add(other.count);
        self.outcome = self.outcome.min(other.outcome);
        self.outcomes.add(&other.outcomes);
        if !other.dns_names.is_subset(&self.dns_names) {
            self.dns_names.extend(other.dns_names.iter().cloned());
        }
    }

    /// What this observation holds beyond `base`, an earlier value of the same edge: the counts
    /// it added; its times, outcome and names as they are ([`Observation::merge`] takes those as
    /// min, max and union, so merging them again changes nothing). `base.merge(&self.since(base))`
    /// is `self` when `self` grew from `base`; merged into a value of another lineage, it adds
    /// what this one learned since `base` (the Kubernetes store's conflict merge).
    pub fn since(&self, base: &Observation) -> Observation {
        let Outcomes {
            established,
            refused,
            timeout,
            preexisting,
        } = base.outcomes;
        Observation {
            count: self.count.saturating_sub(base.count),
            outcomes: Outcomes {
                established: self.outcomes.established.saturating_sub(established),
                refused: self.outcomes.refused.saturating_sub(refused),
                timeout: self.outcomes.timeout.saturating_sub(timeout),
                preexisting: self.outcomes.preexisting.saturating_sub(preexisting),
            },
            ..self.clone()
        }
    }

    /// Whether the destination answered, or (UDP, unknown outcomes) is not known to have failed.
    pub fn not_failed(&self) -> bool {
        self.outcomes.established > 0
            || self.outcomes.preexisting > 0
            || matches!(
                self.outcome,
                Outcome::Established | Outcome::Preexisting | Outcome::Sent | Outcome::Unknown
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(
        from: &str,
        to: &str,
        count: u64,
        outcome: Outcome,
        names: &[&str],
    ) -> Observation {
        Observation {
            first_seen: from.parse().unwrap(),
            last_seen: to.parse().unwrap(),
            count,
            outcome,
            outcomes: Outcomes::default(),
            dns_names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn merge_is_order_independent_and_saturates() {
        let a = observation(
            "2026-11-26T16:00:00Z",
            "2026-11-26T16:05:00Z",
            u64::MAX,
            Outcome::Refused,
            &["b"],
        );
        let b = observation(
            "2026-11-26T15:00:00Z",
            "2026-11-26T16:01:00Z",
            3,
            Outcome::Established,
            &["a"],
        );
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.count, u64::MAX);
        assert_eq!(ab.outcome, Outcome::Established);
        assert_eq!(ab.first_seen, b.first_seen);
        assert_eq!(ab.last_seen, a.last_seen);
        assert_eq!(ab.dns_names.iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn since_is_what_merge_added() {
        let base = observation(
            "2026-11-26T16:00:00Z",
            "2026-11-26T16:05:00Z",
            5,
            Outcome::Refused,
            &["a"],
        );
        let more = observation(
            "2026-11-26T15:00:00Z",
            "2026-11-26T17:00:00Z",
            3,
            Outcome::Established,
            &["b"],
        );
        let mut grown = base.clone();
        grown.merge(&more);
        let mut again = base.clone();
        again.merge(&grown.since(&base));
        assert_eq!(again, grown);
        // Another lineage from the same base gets this one's additions, counted once.
        let mut other = base.clone();
        other.merge(&observation(
            "2026-11-26T16:00:00Z",
            "2026-11-26T16:06:00Z",
            2,
            Outcome::Refused,
            &[],
        ));
        other.merge(&grown.since(&base));
        assert_eq!(other.count, 5 + 3 + 2);
        assert_eq!(other.first_seen, more.first_seen);
        assert_eq!(other.last_seen, more.last_seen);
        assert_eq!(other.outcome, Outcome::Established);
    }

    #[test]
    fn refused_and_timed_out_edges_failed_the_others_did_not() {
        let t = "2026-11-26T16:00:00Z";
        assert!(!observation(t, t, 1, Outcome::Refused, &[]).not_failed());
        assert!(!observation(t, t, 1, Outcome::Timeout, &[]).not_failed());
        for ok in [
            Outcome::Established,
            Outcome::Preexisting,
            Outcome::Sent,
            Outcome::Unknown,
        ] {
            assert!(observation(t, t, 1, ok, &[]).not_failed(), "{ok:?}");
        }
    }
}
