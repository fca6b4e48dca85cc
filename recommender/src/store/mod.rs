//! What the service has learned, kept durably: edges (not raw flows), the flows its policies do
//! not cover, and the ids of the batches it acknowledged. One trait, [`Store`], with the embedded
//! backend ([`EmbeddedStore`], redb) and the one on the Kubernetes API ([`KubernetesStore`]:
//! custom resources per workload, written by the Lease holder; see `docs/architecture.md`,
//! "Store" and "The Kubernetes store").
//!
//! The service keeps everything it learned in memory as well and is the store's only writer: it
//! reads the store once at start ([`Store::load`]) and then hands it, batch group by batch group,
//! the new absolute value of every edge that changed ([`Store::commit`]). Values, not deltas, so
//! that a backend may write them as it likes (a row, a field of a custom resource) and a retry
//! after an uncertain failure is harmless.
//!
//! **The promise** every backend makes: when [`Store::commit`] returns `Ok`, all of the commit is
//! durable (embedded: fsync'd; Kubernetes: accepted by the API server, hence in etcd), and when it
//! returns `Err`, none of it is visible to a later [`Store::load`] (or all of it, for a backend
//! that cannot tell; the values are absolute and batch ids are part of the commit, so a batch sent
//! again is still counted once). The service acknowledges a batch only after its commit returned
//! `Ok`: acknowledged ⇒ durable.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use flow_model::{FlowKey, Protocol, SourceKind};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::resolve::{Observation, Peer, ResolvedFlow, SourceWorkload};

mod codec;
pub mod embedded;
pub mod kubernetes;

pub use embedded::EmbeddedStore;
pub use kubernetes::KubernetesStore;

/// A boxed future, so that [`Store`] can be used as `dyn Store` by the service.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store's format version. A store written by a newer version is refused (it may hold what
/// this version would misread or drop); an older one would be upgraded on open (there is none yet).
pub const FORMAT_VERSION: u64 = 1;

/// One learned edge: a source workload reached a peer on a port (see
/// [`crate::resolve::ResolvedFlow`]), with everything observed of it merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub source: Arc<SourceWorkload>,
    pub peer: Arc<Peer>,
    pub port: u16,
    pub protocol: Protocol,
    /// When the service learned this edge (its clock, not the agents'): what makes a workload's
    /// learning state.
    pub learned_at: Timestamp,
    pub observed: Arc<Observation>,
}

impl Edge {
    /// The edge as synthesis reads it.
    pub fn flow(&self) -> ResolvedFlow {
        ResolvedFlow {
            source: Arc::clone(&self.source),
            peer: Arc::clone(&self.peer),
            port: self.port,
            protocol: self.protocol,
            observed: Arc::clone(&self.observed),
        }
    }
}

/// A flow that the policies do not cover, by its [`FlowKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UncoveredFlow {
    /// A node process: NetworkPolicy does not apply to it.
    HostProcess,
    /// A pod's flow that could not be resolved, or only in part (notes), or whose rule needs a
    /// second look (warnings): the lines of its latest such resolution, as `recommend` prints
    /// them. A destination's warnings are kept with the first flow (by key) that reached it.
    /// Written with no notes and no warnings, it removes the entry.
    Unresolved {
        notes: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
}

impl UncoveredFlow {
    /// An entry that says nothing: a commit carrying it removes the flow's entry.
    pub fn is_empty(&self) -> bool {
        matches!(self, UncoveredFlow::Unresolved { notes, warnings } if notes.is_empty() && warnings.is_empty())
    }
}

/// Everything a store holds, as [`Store::load`] returns it.
#[derive(Clone, Debug, Default)]
pub struct Learned {
    pub edges: Vec<Edge>,
    pub uncovered: Vec<(FlowKey, UncoveredFlow)>,
    /// Acknowledged batch ids with the time of their acknowledgement.
    pub batch_ids: Vec<(String, Timestamp)>,
}

/// What one group of batches changed, made durable all at once by [`Store::commit`].
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// The new value of every edge the group added or changed.
    pub edges: Vec<Edge>,
    pub uncovered: Vec<(FlowKey, UncoveredFlow)>,
    /// The ids of the group's batches (those that carried one).
    pub batch_ids: Vec<String>,
    pub acknowledged_at: Timestamp,
    /// Batch ids acknowledged before this may be forgotten (see `docs/architecture.md`, "Batch ids").
    pub forget_ids_before: Option<Timestamp>,
}

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: no such store (serve creates it)")]
    Missing { path: String },
    #[error(
        "store {path} is in use by another process (a running `recommender serve`?): ask it with --server URL, or stop it first"
    )]
    InUse { path: String },
    #[error(
        "store {path} was written by a newer egress-recommender (store format {found}; this version reads format {supported}): use that version or newer"
    )]
    NewerFormat {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("store {path}: not an egress-recommender store: {reason}")]
    NotAStore { path: String, reason: String },
    #[error("store {path}: {message}")]
    Database { path: String, message: String },
    #[error(
        "this replica does not hold the store's Lease ({holder} does): only the holder writes"
    )]
    NotLeader { holder: String },
    #[error("store {path}: damaged entry in {table}: {message}")]
    Corrupt {
        path: String,
        table: &'static str,
        message: String,
    },
}

/// A durable store of learned edges (see the module comment for the promise it makes).
pub trait Store: Send + Sync {
    /// What the store is, for logs and messages (`redb:/var/lib/...`).
    fn describe(&self) -> String;

    /// Everything the store holds.
    fn load(&self) -> BoxFuture<'_, Result<Learned, StoreError>>;

    /// Makes `commit` durable, all of it or none of it; `Ok` only once it is.
    fn commit(&self, commit: Arc<Commit>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A [`FlowKey`] as stored: a JSON array in field order, so that it reads back exactly.
#[derive(Serialize, Deserialize)]
struct StoredFlowKey(
    String,
    SourceKind,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    IpAddr,
    u16,
    Protocol,
);

/// The stored form of a flow key.
pub fn encode_flow_key(key: &FlowKey) -> Vec<u8> {
    let stored = StoredFlowKey(
        key.node.clone(),
        key.source_kind,
        key.namespace.clone(),
        key.pod.clone(),
        key.uid.clone(),
        key.container_id.clone(),
        key.ip,
        key.port,
        key.protocol,
    );
    serde_json::to_vec(&stored).expect("a flow key always serializes")
}

/// A flow key from its stored form.
pub fn decode_flow_key(bytes: &[u8]) -> Result<FlowKey, serde_json::Error> {
    let StoredFlowKey(node, source_kind, namespace, pod, uid, container_id, ip, port, protocol) =
        serde_json::from_slice(bytes)?;
    Ok(FlowKey {
        node,
        source_kind,
        namespace,
        pod,
        uid,
        container_id,
        ip,
        port,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_keys_read_back_exactly() {
        let key = FlowKey {
            node: "node-a".into(),
            source_kind: SourceKind::Pod,
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            uid: None,
            container_id: Some("c".into()),
            ip: "2001:db8::1".parse().unwrap(),
            port: 443,
            protocol: Protocol::Tcp,
        };
        assert_eq!(decode_flow_key(&encode_flow_key(&key)).unwrap(), key);
        assert!(decode_flow_key(b"[1,2]").is_err());
    }
}
