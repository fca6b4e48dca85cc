//! The cluster model of the moment, behind a seam that any source can fill: snapshot files now,
//! a live watch of the API server later (see `docs/architecture.md`, "Cluster model").
//!
//! The model is swapped whole and atomically: ingest takes the current one ([`ModelCell::current`])
//! when a batch arrives and resolves every flow of the batch against it, so a flow is resolved
//! against the cluster as it was when the flow arrived (pod IPs are reused: resolving later would
//! name the wrong workload).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::cluster::Cluster;
use crate::store::BoxFuture;

/// Holds the current cluster model; readers get an `Arc` and keep it as long as they need.
#[derive(Default)]
pub struct ModelCell {
    current: RwLock<Option<Arc<Cluster>>>,
    loaded: tokio::sync::Notify,
}

impl ModelCell {
    pub fn new() -> Arc<ModelCell> {
        Arc::new(ModelCell::default())
    }

    /// The model of this moment; `None` until a source has loaded one.
    pub fn current(&self) -> Option<Arc<Cluster>> {
        self.current.read().expect("model lock").clone()
    }

    /// Replaces the model; batches already resolving keep the one they took.
    pub fn replace(&self, cluster: Cluster) {
        *self.current.write().expect("model lock") = Some(Arc::new(cluster));
        self.loaded.notify_waiters();
    }

    /// The model, once a source has loaded one (a live source loads it after its first lists).
    pub async fn wait_loaded(&self) -> Arc<Cluster> {
        loop {
            let notified = self.loaded.notified();
            if let Some(model) = self.current() {
                return model;
            }
            notified.await;
        }
    }

    /// Changes the model in place; a copy is made only while a reader still holds the current
    /// one (a batch resolving), so readers never see a half-applied change.
    pub fn update(&self, change: impl FnOnce(&mut Cluster)) {
        let mut current = self.current.write().expect("model lock");
        let model = current.get_or_insert_with(Default::default);
        change(Arc::make_mut(model));
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().expect("model lock").is_some()
    }
}

/// Where the cluster model comes from.
pub trait ClusterSource: Send + Sync {
    fn describe(&self) -> String;

    /// Loads the first model into `cell` and returns; a source that follows the cluster keeps
    /// replacing it from a task of its own (a fixed snapshot has nothing more to do).
    fn start(&self, cell: Arc<ModelCell>) -> BoxFuture<'_, Result<(), crate::Error>>;
}

/// `--cluster` files: `kubectl get ... -o yaml|json` snapshots, loaded once.
pub struct SnapshotFiles {
    pub files: Vec<PathBuf>,
    /// The cluster's Service ranges, when given (`--service-cidr`).
    pub service_cidrs: Vec<ipnet::IpNet>,
}

impl ClusterSource for SnapshotFiles {
    fn describe(&self) -> String {
        format!("{} snapshot file(s)", self.files.len())
    }

    fn start(&self, cell: Arc<ModelCell>) -> BoxFuture<'_, Result<(), crate::Error>> {
        let files = self.files.clone();
        let service_cidrs = self.service_cidrs.clone();
        Box::pin(async move {
            let mut loaded =
                tokio::task::spawn_blocking(move || Cluster::load_files(&files).map(|l| l.cluster))
                    .await
                    .map_err(|e| crate::Error::BadInput(format!("loading the cluster: {e}")))??;
            loaded.service_cidrs = service_cidrs;
            cell.replace(loaded);
            Ok(())
        })
    }
}
