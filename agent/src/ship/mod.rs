//! Delivery of FlowRecords to the recommender (`--recommender`), at least once, counted once.
//!
//! Each flush's records come from the main loop through a hand-off (see `output`) and are written
//! to the spool at once, as gzip batches of at most [`MAX_BATCH_RECORDS`] records, each with its
//! own id ([`ids`]); the shipper then sends the spool's oldest batch, one at a time, and forgets it
//! when the service acknowledges it (2xx means durable there). What each answer means is in
//! [`client`]; waits between attempts in [`backoff`]. The spool ([`spool`]) is on disk with
//! `--spool-dir` (it survives restarts and kill -9) and in memory without.
//!
//! **When the spool is full** the records of new flushes are merged by flow key into a bounded
//! in-memory backlog (`output::backlog`), which becomes a batch again as soon as a delivery makes
//! room. Deltas of one key merge without loss, so the backlog grows with distinct flows, not with
//! time; records of new keys past its bound are dropped, and counted in
//! `egress_agent_records_dropped_total{reason="spool_overflow"}` with their bytes. This keeps the
//! oldest batches, which hold the first sighting of every edge learned before the outage, and
//! drops only the newest, rarest thing: a flood of flows never seen before, during an outage,
//! beyond the bound.
//!
//! **At exit** (the hand-off closes after the final flush) the shipper spools what it holds and
//! delivers until the spool is empty or the grace period ends. With a spool directory it stops at
//! the first failed attempt: the rest is on disk for the next agent. Without one it retries until
//! the grace period ends, then counts what is left as dropped (`unsent_at_exit`).

pub mod backoff;
pub mod client;
pub mod ids;
pub mod spool;
pub mod token;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flow_model::batch::{self, Encoding};
use flow_model::FlowRecord;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::{DeliveryFailure, DropReason, Metrics};
use crate::output::backlog::Backlog;
pub use backoff::Backoff;
pub use client::{Client, Outcome};
pub use ids::BatchIds;
pub use spool::{Batch, Push, Spool};

/// Records per batch; a larger flush becomes several batches.
pub const MAX_BATCH_RECORDS: usize = 5_000;
/// Distinct flows the backlog of a full spool holds.
pub const BACKLOG_KEYS: usize = 65_536;
/// The most that a batch sent back to us decompresses to (for splitting after a 413).
const DECODE_LIMIT: usize = 256 << 20;

pub struct Shipper {
    client: Client,
    spool: Arc<Mutex<Spool>>,
    ids: BatchIds,
    backoff: Backoff,
    grace: Duration,
    backlog: Backlog,
    metrics: Arc<Metrics>,
    /// Consecutive failed attempts of the oldest batch.
    failures: u32,
    next_try: Instant,
}

type Attempt = Pin<Box<dyn Future<Output = (Batch, Outcome)> + Send>>;

impl Shipper {
    /// `grace` bounds the delivery at exit.
    pub fn new(
        client: Client,
        spool: Spool,
        ids: BatchIds,
        backoff: Backoff,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Shipper {
        metrics.spool_size(spool.bytes(), spool.len());
        Shipper {
            client,
            spool: Arc::new(Mutex::new(spool)),
            ids,
            backoff,
            grace,
            backlog: Backlog::new(BACKLOG_KEYS),
            metrics,
            failures: 0,
            next_try: Instant::now(),
        }
    }

    /// Bounds the backlog of a full spool to `keys` distinct flows (default [`BACKLOG_KEYS`]).
    pub fn with_backlog_keys(mut self, keys: usize) -> Shipper {
        self.backlog = Backlog::new(keys);
        self
    }

    /// Spools what comes through `rx` and delivers the spool until `rx` closes, then delivers
    /// within the grace period and returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Vec<FlowRecord>>) {
        let mut inflight: Option<Attempt> = None;
        loop {
            let ready = inflight.is_none() && !self.spool_is_empty();
            tokio::select! {
                biased;
                got = rx.recv() => match got {
                    Some(records) => self.accept(records).await,
                    None => break,
                },
                done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    let (batch, outcome) = done;
                    self.settle(batch, outcome).await;
                }
                () = tokio::time::sleep_until(self.next_try), if ready => {
                    inflight = self.attempt().await;
                }
            }
        }
        self.drain(inflight).await;
    }

    /// Spools records (as batches), or keeps them in the backlog when the spool is full.
    async fn accept(&mut self, mut records: Vec<FlowRecord>) {
        if !self.backlog.is_empty() {
            // Merged into the backlog so that it goes out as soon as there is room.
            let overflow = self.backlog.absorb(records);
            self.count_overflow(overflow, DropReason::SpoolOverflow);
            records = self.backlog.take();
        }
        let mut chunks = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(MAX_BATCH_RECORDS));
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        let spool = Arc::clone(&self.spool);
        let ids = self.ids.clone();
        let left = blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            spool_chunks(&mut spool, &ids, chunks)
        })
        .await;
        if !left.is_empty() {
            let overflow = self.backlog.absorb(left);
            self.count_overflow(overflow, DropReason::SpoolOverflow);
        }
        self.update_gauges();
    }

    /// Starts sending the oldest batch.
    async fn attempt(&mut self) -> Option<Attempt> {
        let spool = Arc::clone(&self.spool);
        let oldest =
            blocking(move || spool.lock().unwrap_or_else(|p| p.into_inner()).oldest()).await;
        let batch = match oldest {
            Ok(batch) => batch?,
            Err(error) => {
                tracing::error!(%error, "cannot read the spool");
                self.next_try = Instant::now() + self.backoff.cap;
                return None;
            }
        };
        self.metrics.batch_sent();
        let client = self.client.clone();
        Some(Box::pin(async move {
            let outcome = client.post(&batch).await;
            (batch, outcome)
        }))
    }

    /// Acts on an attempt's outcome; true when the batch left the spool's head (delivered, split or
    /// set aside), false when it stays to be retried.
    async fn settle(&mut self, batch: Batch, outcome: Outcome) -> bool {
        let moved_on = match outcome {
            Outcome::Delivered => {
                self.metrics.batch_acknowledged(u64::from(batch.records));
                tracing::debug!(batch_id = %batch.id, records = batch.records, "batch acknowledged");
                self.spool_op(move |s| s.remove(&batch.key)).await;
                true
            }
            Outcome::TooLarge => {
                self.metrics
                    .delivery_failed(DeliveryFailure::TooLarge, false);
                self.split(batch).await;
                true
            }
            Outcome::Refused { status, message } => {
                self.metrics
                    .delivery_failed(DeliveryFailure::Rejected, false);
                self.set_aside(batch, &format!("{status}: {message}")).await;
                true
            }
            Outcome::Retry {
                reason,
                after,
                detail,
            } => {
                self.failures += 1;
                self.metrics.delivery_failed(reason, true);
                let wait = self.backoff.delay(self.failures, after);
                self.next_try = Instant::now() + wait;
                tracing::warn!(
                    batch_id = %batch.id,
                    reason = reason.label(),
                    %detail,
                    failures = self.failures,
                    retry_in = ?wait,
                    "delivery failed; the batch stays in the spool"
                );
                false
            }
        };
        if moved_on {
            self.failures = 0;
            self.next_try = Instant::now();
            if !self.backlog.is_empty() {
                self.accept(Vec::new()).await;
            }
        }
        self.update_gauges();
        moved_on
    }

    /// Replaces a batch the service found too large by its two halves (a single record that is
    /// too large is set aside).
    async fn split(&mut self, batch: Batch) {
        let records = match batch::decode(&batch.body, Encoding::Gzip, DECODE_LIMIT, &batch.id) {
            Ok(records) if records.len() > 1 => records,
            Ok(_) => {
                self.set_aside(batch, "a single record larger than the service accepts")
                    .await;
                return;
            }
            Err(error) => {
                self.set_aside(batch, &format!("cannot be read back to split it: {error}"))
                    .await;
                return;
            }
        };
        let (first, second) = records.split_at(records.len() / 2);
        let halves = [
            (self.ids.child_id(&batch.id, 0), first),
            (self.ids.child_id(&batch.id, 1), second),
        ]
        .map(|(id, part)| {
            let body = Bytes::from(batch::encode(part, Encoding::Gzip));
            (id, part.len() as u32, body)
        });
        tracing::info!(batch_id = %batch.id, records = records.len(), "the service found the batch too large (413): split in two");
        self.metrics.batch_split();
        let key = batch.key;
        self.spool_op(move |s| s.split(&key, halves)).await;
    }

    async fn set_aside(&mut self, batch: Batch, why: &str) {
        tracing::error!(
            batch_id = %batch.id,
            records = batch.records,
            reason = %why,
            "the recommender refused a batch; it is set aside in the spool's rejected/ and not retried"
        );
        self.metrics.batch_set_aside();
        let key = batch.key;
        self.spool_op(move |s| s.set_aside(&key)).await;
    }

    /// Delivers within the grace period (see the module comment).
    async fn drain(mut self, mut inflight: Option<Attempt>) {
        let deadline = Instant::now() + self.grace;
        let durable = self
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_durable();
        if !self.backlog.is_empty() {
            self.accept(Vec::new()).await;
        }
        loop {
            let attempt = match inflight.take() {
                Some(attempt) => Some(attempt),
                None if self.spool_is_empty() => break,
                None => {
                    if !durable && self.failures > 0 {
                        tokio::time::sleep_until(self.next_try.min(deadline)).await;
                    }
                    self.attempt().await
                }
            };
            let Some(attempt) = attempt else { break };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok((batch, outcome)) => {
                    if !self.settle(batch, outcome).await && durable {
                        break;
                    }
                }
                Err(_) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let (left_batches, left_records) = {
            let spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            (spool.len(), spool.records())
        };
        let backlog = self.backlog.take();
        if !backlog.is_empty() {
            let bytes = backlog
                .iter()
                .map(|r| r.to_json_line().len() as u64 + 1)
                .sum();
            self.metrics
                .records_dropped(DropReason::UnsentAtExit, backlog.len() as u64, bytes);
            tracing::error!(
                records = backlog.len(),
                "records waiting for room in the full spool are lost at exit"
            );
        }
        if left_batches == 0 {
            tracing::info!("every batch delivered");
        } else if durable {
            tracing::warn!(
                batches = left_batches,
                records = left_records,
                "the recommender did not take everything before exit; the rest stays in the spool for the next start"
            );
        } else {
            let bytes = self.spool.lock().unwrap_or_else(|p| p.into_inner()).bytes();
            self.metrics
                .records_dropped(DropReason::UnsentAtExit, left_records, bytes);
            tracing::error!(
                batches = left_batches,
                records = left_records,
                "undelivered at exit and no --spool-dir to keep them: lost"
            );
        }
    }

    fn spool_is_empty(&self) -> bool {
        self.spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Runs a spool change off the async threads; an error is logged (the batch stays or goes as
    /// the spool says; nothing is counted twice at the receiver thanks to its id).
    async fn spool_op(&self, op: impl FnOnce(&mut Spool) -> std::io::Result<()> + Send + 'static) {
        let spool = Arc::clone(&self.spool);
        let result =
            blocking(move || op(&mut spool.lock().unwrap_or_else(|p| p.into_inner()))).await;
        if let Err(error) = result {
            tracing::error!(%error, "spool update failed");
        }
    }

    fn update_gauges(&self) {
        let spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics.spool_size(spool.bytes(), spool.len());
        self.metrics.backlog_records(self.backlog.len());
    }

    fn count_overflow(&self, overflow: crate::output::backlog::Overflow, reason: DropReason) {
        if !overflow.is_empty() {
            self.metrics
                .records_dropped(reason, overflow.records, overflow.bytes);
            tracing::warn!(
                records = overflow.records,
                "the spool and its backlog are full: records of new flows dropped"
            );
        }
    }
}

/// Encodes and spools `chunks` in order, and returns the records that did not fit (from the first
/// that did not: order is kept). A batch larger than a quarter of the spool's bound is split in
/// halves first, so that even a small spool always takes a few batches.
fn spool_chunks(
    spool: &mut Spool,
    ids: &BatchIds,
    chunks: Vec<Vec<FlowRecord>>,
) -> Vec<FlowRecord> {
    let mut left = Vec::new();
    let mut todo: Vec<Vec<FlowRecord>> = chunks.into_iter().rev().collect();
    while let Some(records) = todo.pop() {
        if !left.is_empty() {
            left.extend(records);
            continue;
        }
        let body = Bytes::from(batch::encode(&records, Encoding::Gzip));
        if records.len() > 1 && body.len() as u64 > spool.max_bytes() / 4 {
            let mut first = records;
            let second = first.split_off(first.len() / 2);
            todo.push(second);
            todo.push(first);
            continue;
        }
        match spool.push(&ids.next_id(), records.len() as u32, body) {
            Ok(Push::Stored) => {}
            Ok(Push::Full) => left.extend(records),
            Err(error) => {
                tracing::error!(%error, "cannot write to the spool; records wait in memory");
                left.extend(records);
            }
        }
    }
    left
}

/// Runs blocking work (files, fsync, gzip) on tokio's blocking threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::backlog::tests::record;

    /// A flush far larger than a small spool is split until its batches fit, in order; what does
    /// not fit comes back whole, oldest first.
    #[test]
    fn batches_fit_a_small_spool() {
        let mut spool = Spool::in_memory(4096);
        let ids = BatchIds::with_start("n", 1, 1);
        let records: Vec<FlowRecord> = (1..=2000).map(|p| record("n", p, 1)).collect();
        let left = spool_chunks(&mut spool, &ids, vec![records]);
        assert!(spool.len() >= 3, "{} batches", spool.len());
        assert!(spool.bytes() <= 4096);
        assert!(!left.is_empty());
        let mut stored = Vec::new();
        while let Some(b) = spool.oldest().unwrap() {
            let got = batch::decode(&b.body, Encoding::Gzip, 1 << 20, &b.id).unwrap();
            assert!(b.body.len() <= 1024);
            assert_eq!(got.len(), b.records as usize);
            stored.extend(got);
            spool.remove(&b.key).unwrap();
        }
        let ports: Vec<u16> = stored
            .iter()
            .chain(&left)
            .map(|r| r.destination.port)
            .collect();
        assert_eq!(ports, (1..=2000).collect::<Vec<u16>>());
    }
}
