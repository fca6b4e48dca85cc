//! The live cluster model: kube-rs watchers for every kind the model holds, applied to it one
//! event at a time (see `docs/architecture.md`, "Live cluster").
//!
//! - One `kube::runtime::watcher` per kind: paged initial list, then a watch with bookmarks; a
//!   410 Gone restarts it with a relist, other errors retry with the watcher's exponential backoff.
//! - The model is published (to the [`ModelCell`]) only once every kind has finished its first
//!   list; until then `/readyz` answers 503 and ingest refuses batches as not ready.
//! - After that, events change the published model in place (`Arc::make_mut`: a copy is made
//!   only while a batch still resolves against the previous one), in chunks of whatever events are
//!   ready, through the model's index ([`Cluster::apply`], [`Cluster::remove`]).
//! - A relist (after a 410 or a restart) removes what the new list no longer has: those objects
//!   were deleted while the watch was away.

mod kinds;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::runtime::watcher;

use crate::cluster::{Cluster, Key, LiveObject};
use crate::service::model::{ClusterSource, ModelCell};
use crate::store::BoxFuture;

pub use kinds::Kind;

/// Errors of the live source.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no Kubernetes client configuration (kubeconfig or in-cluster): {0}")]
    Config(String),
    #[error("the watches ended before every kind was listed")]
    Ended,
}

/// Builds the client from `KUBECONFIG`/`~/.kube/config`, or the in-cluster service account.
pub async fn client() -> Result<kube::Client, LiveError> {
    kube::Client::try_default()
        .await
        .map_err(|e| LiveError::Config(e.to_string()))
}

/// One watcher event, tagged with its kind.
type Tagged = (Kind, Result<watcher::Event<LiveObject>, watcher::Error>);

/// What the follower does with the model: fill a private one until every kind has synced, then
/// change the published one.
struct Follower {
    model: Option<Cluster>,
    synced: HashSet<Kind>,
    /// Per kind being relisted: the keys the new list has had so far.
    relisting: std::collections::HashMap<Kind, HashSet<Key>>,
}

impl Follower {
    fn new(service_cidrs: Vec<ipnet::IpNet>) -> Follower {
        let mut model = Cluster {
            service_cidrs,
            ..Cluster::default()
        };
        model.reindex();
        Follower {
            model: Some(model),
            synced: HashSet::new(),
            relisting: Default::default(),
        }
    }

    fn all_synced(&self) -> bool {
        self.synced.len() == Kind::ALL.len()
    }

    /// Applies a chunk of events to `model`; returns whether a kind finished its first list.
    fn apply(&mut self, model: &mut Cluster, events: Vec<Tagged>) -> bool {
        let mut newly_synced = false;
        let now = jiff::Timestamp::now();
        for (kind, event) in events {
            match event {
                Ok(watcher::Event::Init) => {
                    self.relisting.insert(kind, HashSet::new());
                }
                Ok(watcher::Event::InitApply(object)) => {
                    if let Some(seen) = self.relisting.get_mut(&kind) {
                        seen.insert(kinds::key(&object));
                    }
                    model.apply(object);
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = self.relisting.remove(&kind).unwrap_or_default();
                    for gone in kinds::objects(model, kind)
                        .into_iter()
                        .filter(|o| !seen.contains(&kinds::key(o)))
                    {
                        model.remove(&gone, now);
                    }
                    newly_synced |= self.synced.insert(kind);
                    tracing::debug!(kind = kind.name(), "listed");
                }
                Ok(watcher::Event::Apply(object)) => model.apply(object),
                Ok(watcher::Event::Delete(object)) => model.remove(&object, now),
                Err(e) => {
                    tracing::warn!(kind = kind.name(), error = %e, "watch error; retrying with backoff")
                }
            }
        }
        newly_synced
    }
}

/// Every kind's watcher as one stream of tagged events, each restarting with backoff on errors.
fn watch_all(
    client: &kube::Client,
    page_size: u32,
) -> impl futures_util::Stream<Item = Tagged> + Send + 'static {
    let streams = Kind::ALL
        .iter()
        .map(|&kind| kinds::watch(client.clone(), kind, page_size))
        .collect::<Vec<_>>();
    futures_util::stream::select_all(streams)
}

/// Reads the cluster once: every kind listed, then the watches are dropped (`--live`).
pub async fn read_once(
    client: kube::Client,
    service_cidrs: Vec<ipnet::IpNet>,
) -> Result<Cluster, LiveError> {
    read_once_paged(client, service_cidrs, PAGE_SIZE).await
}

/// Objects per list page.
pub const PAGE_SIZE: u32 = 500;

/// [`read_once`] with lists of `page_size` objects per page.
pub async fn read_once_paged(
    client: kube::Client,
    service_cidrs: Vec<ipnet::IpNet>,
    page_size: u32,
) -> Result<Cluster, LiveError> {
    let mut follower = Follower::new(service_cidrs);
    let mut model = follower.model.take().expect("new follower has a model");
    let mut events = watch_all(&client, page_size).ready_chunks(256);
    while !follower.all_synced() {
        let Some(chunk) = events.next().await else {
            return Err(LiveError::Ended);
        };
        follower.apply(&mut model, chunk);
    }
    Ok(model)
}

/// `serve` without `--cluster`: follows the cluster for as long as the service runs.
pub struct LiveCluster {
    pub client: kube::Client,
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// Objects per list page ([`PAGE_SIZE`]).
    pub page_size: u32,
}

impl ClusterSource for LiveCluster {
    fn describe(&self) -> String {
        format!("the live cluster ({} kinds watched)", Kind::ALL.len())
    }

    /// Starts the watches and returns: the model is published when every kind has been listed.
    fn start(&self, cell: Arc<ModelCell>) -> BoxFuture<'_, Result<(), crate::Error>> {
        let events = watch_all(&self.client, self.page_size);
        let mut follower = Follower::new(self.service_cidrs.clone());
        Box::pin(async move {
            tokio::spawn(async move {
                let mut events = events.ready_chunks(256);
                while let Some(chunk) = events.next().await {
                    match follower.model.as_mut() {
                        Some(model) => {
                            let mut model = std::mem::take(model);
                            follower.apply(&mut model, chunk);
                            if follower.all_synced() {
                                tracing::info!(
                                    pods = model.pods.len(),
                                    services = model.services.len(),
                                    "every kind listed: the live model is ready"
                                );
                                follower.model = None;
                                cell.replace(model);
                            } else {
                                follower.model = Some(model);
                            }
                        }
                        None => cell.update(|model| {
                            follower.apply(model, chunk);
                        }),
                    }
                }
                tracing::error!("the cluster watches ended");
            });
            Ok(())
        })
    }
}
