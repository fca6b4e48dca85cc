//! The main loop's side of a bounded channel to an output task. It never waits: what the channel
//! cannot take now stays in a [`Backlog`] (merged by key) and goes with the next flush; only a
//! backlog at its bound drops records, and those are counted.

use std::sync::Arc;

use flow_model::FlowRecord;
use tokio::sync::mpsc;

use super::backlog::Backlog;
use crate::metrics::{DropReason, Metrics};

/// The output task is gone (it failed; its own result says why).
#[derive(Debug, thiserror::Error)]
#[error("the output task stopped")]
pub struct Closed;

pub struct Handoff {
    tx: mpsc::Sender<Vec<FlowRecord>>,
    backlog: Backlog,
    metrics: Arc<Metrics>,
}

impl Handoff {
    /// A channel of `capacity` flushes and a backlog of `backlog_keys` distinct flows.
    pub fn channel(
        capacity: usize,
        backlog_keys: usize,
        metrics: Arc<Metrics>,
    ) -> (Handoff, mpsc::Receiver<Vec<FlowRecord>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handoff = Handoff {
            tx,
            backlog: Backlog::new(backlog_keys),
            metrics,
        };
        (handoff, rx)
    }

    /// Passes `records` on without waiting.
    pub fn offer(&mut self, records: Vec<FlowRecord>) -> Result<(), Closed> {
        let records = if self.backlog.is_empty() {
            records
        } else {
            self.absorb(records);
            self.backlog.take()
        };
        if records.is_empty() {
            return Ok(());
        }
        match self.tx.try_send(records) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(records)) => {
                self.absorb(records);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Hands over what the backlog holds, waiting for room (the main loop has ended), and closes
    /// the channel, which tells the output task to finish.
    pub async fn close(mut self) -> Result<(), Closed> {
        let rest = self.backlog.take();
        if !rest.is_empty() {
            self.tx.send(rest).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    fn absorb(&mut self, records: Vec<FlowRecord>) {
        let overflow = self.backlog.absorb(records);
        if !overflow.is_empty() {
            self.metrics.records_dropped(
                DropReason::HandoffOverflow,
                overflow.records,
                overflow.bytes,
            );
            tracing::warn!(
                records = overflow.records,
                "an output does not keep up and its backlog is full: records dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::backlog::tests::record;

    #[tokio::test]
    async fn never_waits_and_keeps_what_does_not_fit() {
        let metrics = Arc::new(Metrics::new());
        let (mut h, mut rx) = Handoff::channel(1, 2, Arc::clone(&metrics));
        h.offer(vec![record("n", 1, 1)]).unwrap();
        // The channel is full: these wait in the backlog, merged; the third key is dropped.
        h.offer(vec![record("n", 2, 1), record("n", 2, 1)]).unwrap();
        h.offer(vec![record("n", 3, 1), record("n", 4, 1)]).unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        // Room again: the backlog goes with the next offer.
        h.offer(vec![record("n", 2, 1)]).unwrap();
        let mut next = rx.recv().await.unwrap();
        next.sort_by_key(|r| r.destination.port);
        let got: Vec<_> = next.iter().map(|r| (r.destination.port, r.count)).collect();
        assert_eq!(got, [(2, 3), (3, 1)]);
        assert!(metrics
            .encode()
            .contains("egress_agent_records_dropped_total{reason=\"handoff_overflow\"} 1"));
        h.close().await.unwrap();
        assert!(rx.recv().await.is_none());

        let (mut h, rx) = Handoff::channel(1, 2, metrics);
        drop(rx);
        assert!(h.offer(vec![record("n", 1, 1)]).is_err());
    }
}
