//! This node's pods from the Kubernetes API: one kube-rs watcher with the field selector
//! `spec.nodeName=<node>`, followed on the agent's tokio runtime (see `docs/architecture.md`,
//! "Agent identity").
//!
//! - The initial list and every relist come in pages; after a 410 Gone the watcher relists, and
//!   pods the new list no longer has count as deleted. Other errors are retried with the watcher's
//!   default backoff (client-go's: 0.8 s doubling to 30 s, with jitter, reset after 2 minutes of
//!   health) and counted in `egress_agent_pod_watch_errors_total`.
//! - Each batch of events publishes a new index (a node holds about a hundred pods, so a copy
//!   per batch is cheap); the pipeline takes the latest one at each poll without waiting, so the
//!   kernel side never blocks on the API.
//! - A deleted pod stays in the index for [`DELETED_RETENTION`]: its last flows are read from the
//!   kernel after the API has already forgotten it.
//! - `synced` turns true once the first list is complete; `/readyz` waits for it.
//!
//! What the agent needs of a pod (namespace, name, labels, owner, hostNetwork) comes from
//! [`crate::pods::pod_info`], the same code that reads a pods file.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::pods::{pod_info, PodIndex, PodInfo};

/// How long a deleted pod stays in the index.
pub const DELETED_RETENTION: Duration = Duration::from_secs(600);

/// The receiving end: the latest index the watch has published.
#[derive(Clone)]
pub struct ApiPods {
    index: watch::Receiver<PodIndex>,
}

impl ApiPods {
    /// The receiving end of a channel of indexes ([`start`] makes one; tests make their own).
    pub fn new(index: watch::Receiver<PodIndex>) -> ApiPods {
        ApiPods { index }
    }

    /// The latest index (a brief read of a shared pointer, never a wait for the API).
    pub fn index(&self) -> PodIndex {
        self.index.borrow().clone()
    }

    /// Waits until a new index is published; `false` once the watch has ended for good.
    pub async fn changed(&mut self) -> bool {
        self.index.changed().await.is_ok()
    }
}

/// Builds the API client from `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account
/// (as `recommender serve` does).
pub async fn client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}

/// Starts following the pods of `node` on the current tokio runtime. `synced` is set once the
/// first list is complete.
pub fn start(
    client: kube::Client,
    node: &str,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
) -> ApiPods {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher(api, config).default_backoff();
    let (tx, rx) = watch::channel(PodIndex::default());
    tokio::spawn(follow(events, tx, metrics, synced));
    ApiPods { index: rx }
}

async fn follow(
    events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send,
    tx: watch::Sender<PodIndex>,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
) {
    let mut follower = Follower::default();
    let mut chunks = std::pin::pin!(events.ready_chunks(256));
    while let Some(chunk) = chunks.next().await {
        let now = Instant::now();
        for event in chunk {
            match event {
                Ok(event) => follower.apply(event, now),
                Err(error) => {
                    metrics.pod_watch_error();
                    tracing::warn!(%error, "watch of this node's pods failed; retrying with backoff");
                }
            }
        }
        follower.purge(now);
        let index = follower.index();
        metrics.pods_known(index.len());
        if tx.send(index).is_err() {
            return; // the pipeline is gone
        }
        if follower.synced && !synced.swap(true, Ordering::AcqRel) {
            tracing::info!(
                pods = follower.live.len(),
                "listed this node's pods from the API"
            );
        }
    }
    tracing::error!("the watch of this node's pods ended");
}

/// The index the watcher's events build.
#[derive(Default)]
pub struct Follower {
    live: HashMap<String, Arc<PodInfo>>,
    /// Deleted pods, kept until the instant given.
    deleted: HashMap<String, (Arc<PodInfo>, Instant)>,
    /// During a (re)list: the UIDs it has had so far.
    relisting: Option<HashSet<String>>,
    /// The first list is complete.
    pub synced: bool,
}

impl Follower {
    pub fn apply(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = self.upsert(&pod) {
                    if let Some(seen) = &mut self.relisting {
                        seen.insert(uid);
                    }
                }
            }
            watcher::Event::InitDone => {
                // What the new list lacks was deleted while the watch was away.
                let seen = self.relisting.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .live
                    .keys()
                    .filter(|uid| !seen.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.remove(&uid, now);
                }
                self.synced = true;
            }
            watcher::Event::Apply(pod) => {
                self.upsert(&pod);
            }
            watcher::Event::Delete(pod) => {
                if let Some(info) = pod_info(&pod) {
                    self.remove(&info.uid, now);
                }
            }
        }
    }

    fn upsert(&mut self, pod: &Pod) -> Option<String> {
        let Some(info) = pod_info(pod) else {
            tracing::debug!(name = ?pod.metadata.name, "pod without uid ignored");
            return None;
        };
        let uid = info.uid.clone();
        self.deleted.remove(&uid);
        self.live.insert(uid.clone(), Arc::new(info));
        Some(uid)
    }

    fn remove(&mut self, uid: &str, now: Instant) {
        if let Some(info) = self.live.remove(uid) {
            self.deleted
                .insert(uid.to_owned(), (info, now + DELETED_RETENTION));
        }
    }

    /// Forgets deleted pods whose retention has passed.
    pub fn purge(&mut self, now: Instant) {
        self.deleted.retain(|_, (_, until)| *until > now);
    }

    /// Live and recently deleted pods, by UID.
    pub fn index(&self) -> PodIndex {
        let mut index = HashMap::with_capacity(self.live.len() + self.deleted.len());
        let deleted = self.deleted.values().map(|(info, _)| info);
        for info in deleted.chain(self.live.values()) {
            for uid in info.uids() {
                index.insert(uid.to_owned(), Arc::clone(info));
            }
        }
        Arc::new(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(uid: &str, name: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(uid.into()),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: "db".into(),
                    uid: "x".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(f: &Follower) -> Vec<(String, String)> {
        let mut v: Vec<_> = f
            .index()
            .values()
            .map(|p| (p.name.clone(), p.labels["app"].clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn follows_lists_changes_deletions_and_relists() {
        let now = Instant::now();
        let mut f = Follower::default();
        f.apply(watcher::Event::Init, now);
        f.apply(watcher::Event::InitApply(pod("A", "db-0", "db")), now);
        assert!(!f.synced, "not before the list is complete");
        f.apply(watcher::Event::InitApply(pod("b", "db-1", "db")), now);
        f.apply(watcher::Event::InitDone, now);
        assert!(f.synced);
        // UIDs are matched in lower case, as the cgroup paths give them.
        assert_eq!(f.index()["a"].workload.kind, "StatefulSet");

        f.apply(watcher::Event::Apply(pod("b", "db-1", "db2")), now);
        f.apply(watcher::Event::Apply(pod("c", "db-2", "db")), now);
        assert_eq!(
            names(&f),
            [
                ("db-0".into(), "db".into()),
                ("db-1".into(), "db2".into()),
                ("db-2".into(), "db".into())
            ]
        );
        // Deleted: still named for a while, then forgotten.
        f.apply(watcher::Event::Delete(pod("c", "db-2", "db")), now);
        f.purge(now + DELETED_RETENTION / 2);
        assert!(f.index().contains_key("c"));
        f.purge(now + DELETED_RETENTION);
        assert!(!f.index().contains_key("c"));

        // A relist (after a 410) without `a`: `a` was deleted meanwhile.
        let later = now + Duration::from_secs(1);
        f.apply(watcher::Event::Init, later);
        f.apply(watcher::Event::InitApply(pod("b", "db-1", "db2")), later);
        f.apply(watcher::Event::InitDone, later);
        assert_eq!(f.live.len(), 1);
        assert!(f.index().contains_key("a"), "kept for its last flows");
        f.purge(later + DELETED_RETENTION);
        assert_eq!(names(&f), [("db-1".into(), "db2".into())]);
        // A static pod's mirror is found by the static pod's UID too, which its cgroup has.
        let mut mirror = pod("F", "kube-proxy-n1", "proxy");
        mirror.metadata.annotations = Some(
            [(
                "kubernetes.io/config.mirror".to_owned(),
                "6D1AB2E1F0A9B8C7D6E5F4A3B2C1D0E9".to_owned(),
            )]
            .into(),
        );
        f.apply(watcher::Event::Apply(mirror), later);
        let index = f.index();
        assert_eq!(
            index["6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9"].name,
            "kube-proxy-n1"
        );
        assert_eq!(index["f"].name, "kube-proxy-n1");
        f.apply(
            watcher::Event::Delete(pod("f", "kube-proxy-n1", "proxy")),
            later,
        );
        f.purge(later + DELETED_RETENTION);
        // A pod without a UID (never from a real API server) is ignored.
        let mut no_uid = pod("", "x", "x");
        no_uid.metadata.uid = None;
        f.apply(watcher::Event::Apply(no_uid), later);
        assert_eq!(f.index().len(), 1);
    }
}
