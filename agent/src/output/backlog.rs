//! Records that wait in memory for an output to take them, merged by flow key.
//!
//! FlowRecords are deltas that consumers sum (see `flow_model`), so two records of one key merge
//! into one without losing anything but time resolution: counts and outcomes add, the window
//! widens, names unite. A backlog therefore grows with distinct flows, not with time, and only a
//! flood of distinct new flows can reach its bound. What does not fit is returned to the caller to
//! be counted; records of keys already held always merge.

use std::collections::HashMap;

use flow_model::{FlowKey, FlowRecord};

/// Records and JSON bytes that did not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    pub records: u64,
    pub bytes: u64,
}

impl Overflow {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

pub struct Backlog {
    by_key: HashMap<FlowKey, FlowRecord>,
    max_keys: usize,
}

impl Backlog {
    pub fn new(max_keys: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            max_keys,
        }
    }

    /// Merges `records` in; a record of a new key beyond the bound is dropped and returned in the
    /// overflow (the newest are dropped: what is already held has waited longest for delivery).
    pub fn absorb(&mut self, records: impl IntoIterator<Item = FlowRecord>) -> Overflow {
        let mut overflow = Overflow::default();
        for record in records {
            let key = record.key();
            if let Some(held) = self.by_key.get_mut(&key) {
                held.merge(&record);
            } else if self.by_key.len() < self.max_keys {
                self.by_key.insert(key, record);
            } else {
                overflow.records += 1;
                overflow.bytes += record.to_json_line().len() as u64 + 1;
            }
        }
        overflow
    }

    /// Everything held, oldest key first is not promised: the records are deltas in any order.
    pub fn take(&mut self) -> Vec<FlowRecord> {
        self.by_key.drain().map(|(_, r)| r).collect()
    }

    /// The number of records (distinct keys) held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record from `node` to 198.18.0.1:`port`/UDP counted `count` times.
    pub(crate) fn record(node: &str, port: u16, count: u64) -> FlowRecord {
        let line = format!(
            r#"{{"node":"{node}","source":{{"kind":"host"}},"destination":{{"ip":"198.18.0.1","port":{port},"protocol":"UDP"}},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:0{}Z","count":{count},"outcome":"sent"}}"#,
            count % 10
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn merges_by_key_and_bounds_new_keys() {
        let mut b = Backlog::new(2);
        assert!(b
            .absorb([record("n", 1, 1), record("n", 2, 1), record("n", 1, 3)])
            .is_empty());
        assert_eq!(b.len(), 2);
        // A third key does not fit; a known key still merges.
        let over = b.absorb([record("n", 3, 1), record("n", 2, 5)]);
        assert_eq!(over.records, 1);
        assert_eq!(
            over.bytes,
            record("n", 3, 1).to_json_line().len() as u64 + 1
        );
        let mut held = b.take();
        held.sort_by_key(|r| r.destination.port);
        assert_eq!(
            held.iter()
                .map(|r| (r.destination.port, r.count))
                .collect::<Vec<_>>(),
            [(1, 4), (2, 6)]
        );
        assert!(b.is_empty());
    }
}
