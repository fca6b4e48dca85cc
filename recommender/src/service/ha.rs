//! The service's side of the HA store (`serve --store kubernetes`): what a replica does when it
//! wins or loses the store's Lease (`docs/architecture.md`, "The Kubernetes store").
//!
//! - A replica that wins reads the store before it takes a batch ([`Leadership::serving`] stays
//!   false until then): what the previous leader acknowledged is in the custom resources, so the
//!   new leader's memory, and every value it writes from it, holds it.
//! - A replica that loses stops writing at once (the store checks the Lease before every write)
//!   and refuses batches with 503 and Retry-After.
//! - A follower answers reads (status, policies) from what it read of the store: at start, and
//!   again every `refresh`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::metrics::Metrics;
use super::state::State;
use crate::store::kubernetes::Leadership;
use crate::store::Store;

/// Follows the Lease's changes until the task is dropped.
pub async fn follow(
    leadership: Arc<Leadership>,
    store: Arc<dyn Store>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    refresh: Duration,
) {
    let mut role = leadership.subscribe();
    loop {
        let leader = *role.borrow_and_update();
        if leader && !leadership.serving() {
            match store.load().await {
                Ok(learned) if leadership.may_write() => {
                    let edges = learned.edges.len();
                    state.reload(learned);
                    metrics.edges.set(state.edges.len() as i64);
                    leadership.set_loaded(true);
                    metrics.leader.set(1);
                    tracing::info!(edges, "leading: store read, taking batches");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("leading, but the store cannot be read: {e}");
                    tokio::time::sleep(refresh / 4).await;
                    continue;
                }
            }
        }
        if !leader {
            metrics.leader.set(0);
        }
        let refreshed = tokio::select! {
            changed = role.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            () = tokio::time::sleep(refresh), if !leader => true,
        };
        if refreshed && !leadership.may_write() {
            match store.load().await {
                Ok(learned) => {
                    state.reload(learned);
                    metrics.edges.set(state.edges.len() as i64);
                    tracing::debug!(at = %Timestamp::now(), "follower: store read again");
                }
                Err(e) => tracing::warn!("follower: the store cannot be read: {e}"),
            }
        }
    }
}
