//! [`EmbeddedStore`]: the [`Store`] in one redb file (crash-safe, copy-on-write B-trees, checksummed
//! commits). Tables:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `"format"` | [`FORMAT_VERSION`] |
//! | `workloads` | id (u64) | a [`SourceWorkload`], JSON |
//! | `peers` | id (u64) | a [`Peer`], JSON |
//! | `edges` | (workload id, peer id, port, protocol) | `{learned_at, observed}`, compact binary ([`super::codec`]) |
//! | `journal` | commit sequence | the edges one commit changed (key and value, framed) |
//! | `uncovered` | a flow key, JSON | an [`UncoveredFlow`], JSON |
//! | `batch_ids` | batch id | acknowledged at (Unix ms) |
//! | `batch_ids_by_time` | (acknowledged at, batch id) | () |
//!
//! Workloads and peers are written once and referred to by id (JSON: self-describing, so a newer
//! version reads what an older one wrote), so an edge costs a 19-byte key and its observation.
//!
//! Edges go to a journal first: a commit appends one entry holding the new value of every edge it
//! changed (sequential: a few pages and the fsync), instead of rewriting edges all over the
//! `edges` B-tree (a busy group touches thousands of them, and copy-on-write would rewrite most
//! of its leaves every time). Every [`CHECKPOINT_BYTES`] of journal, or [`CHECKPOINT_INTERVAL`],
//! a commit folds the edges changed since the last checkpoint into `edges` and empties the
//! journal, in the same transaction. Reading the store reads `edges`, then the journal in order.
//!
//! Durability: every commit is `Durability::Immediate` with two-phase commit (two fsyncs): the
//! stored values come partly from what pods did (DNS names), and redb documents two-phase commit
//! as the defence against a crafted workload that could otherwise leave a partial commit with a
//! valid checksum after a crash. The file is locked: a second process (an offline `export
//! --store` while `serve` runs) gets [`StoreError::InUse`] at once, never a hang.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{
    decode_flow_key, encode_flow_key, BoxFuture, Commit, Edge, Learned, Store, StoreError,
    FORMAT_VERSION,
};
use crate::resolve::{Peer, SourceWorkload};

mod rows;

use rows::{protocol_code, protocol_of, put_row, rows, EdgeRow};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const WORKLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("workloads");
const PEERS: TableDefinition<u64, &[u8]> = TableDefinition::new("peers");
const EDGES: TableDefinition<(u64, u64, u16, u8), &[u8]> = TableDefinition::new("edges");
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

/// Journal bytes after which a commit folds it into `edges`.
pub const CHECKPOINT_BYTES: usize = 64 << 20;
/// Time after which a commit folds the journal into `edges`, whatever its size.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

const UNCOVERED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uncovered");
const BATCH_IDS: TableDefinition<&str, i64> = TableDefinition::new("batch_ids");
const BATCH_IDS_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("batch_ids_by_time");

const FORMAT_KEY: &str = "format";

/// At most this many forgotten batch ids are removed per commit, so that pruning never makes one
/// commit slow; the rest go with the next ones.
const PRUNE_PER_COMMIT: usize = 4096;

/// Ids of the workloads and peers already in the file, and the journal since the last
/// checkpoint.
struct Ids {
    workloads: HashMap<Arc<SourceWorkload>, u64, foldhash::fast::RandomState>,
    peers: HashMap<Arc<Peer>, u64, foldhash::fast::RandomState>,
    next_workload: u64,
    next_peer: u64,
    /// The latest value of each edge the journal holds.
    journaled: HashMap<EdgeRow, Vec<u8>>,
    journal_bytes: usize,
    next_entry: u64,
    last_checkpoint: std::time::Instant,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            workloads: HashMap::default(),
            peers: HashMap::default(),
            next_workload: 0,
            next_peer: 0,
            journaled: HashMap::new(),
            journal_bytes: 0,
            next_entry: 0,
            last_checkpoint: std::time::Instant::now(),
        }
    }
}

/// The store in one redb file.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    ids: Mutex<Ids>,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating it when absent (`serve`).
    pub fn open_or_create(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .create(path)
            .map_err(|e| open_error(path, e))?;
        Self::init(db, path, true)
    }

    /// Opens the existing store at `path` (`export --store`, `status --store`). It takes the same
    /// lock as `serve`, so it fails at once while a server holds the file, and it repairs a store
    /// left by a crash as `serve` would.
    pub fn open_existing(path: &Path) -> Result<EmbeddedStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        let db = Database::builder()
            .open(path)
            .map_err(|e| open_error(path, e))?;
        Self::init(db, path, false)
    }

    fn init(db: Database, path: &Path, create: bool) -> Result<EmbeddedStore, StoreError> {
        let name = path.display().to_string();
        let err = |e: redb::Error| database_error(&name, e);
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            match found {
                Some(found) if found > FORMAT_VERSION => {
                    return Err(StoreError::NewerFormat {
                        path: name,
                        found,
                        supported: FORMAT_VERSION,
                    })
                }
                Some(_) => {}
                None if create => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION)
                        .map_err(|e| err(e.into()))?;
                }
                None => {
                    return Err(StoreError::NotAStore {
                        path: name,
                        reason: "it has no format version".into(),
                    })
                }
            }
            // Every table exists from the start, so that readers need not tell "absent" from "empty".
            txn.open_table(WORKLOADS).map_err(|e| err(e.into()))?;
            txn.open_table(PEERS).map_err(|e| err(e.into()))?;
            txn.open_table(EDGES).map_err(|e| err(e.into()))?;
            txn.open_table(JOURNAL).map_err(|e| err(e.into()))?;
            txn.open_table(UNCOVERED).map_err(|e| err(e.into()))?;
            txn.open_table(BATCH_IDS).map_err(|e| err(e.into()))?;
            txn.open_table(BATCH_IDS_BY_TIME)
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                ids: Mutex::new(Ids::default()),
            }),
        })
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    let name = path.display().to_string();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: name },
        redb::DatabaseError::UpgradeRequired(v) => StoreError::NotAStore {
            path: name,
            reason: format!("its redb file format {v} is not one this version reads"),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            StoreError::InUse { path: name }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => StoreError::NotAStore {
            path: name,
            reason: why,
        },
        other => StoreError::Database {
            path: name,
            message: other.to_string(),
        },
    }
}

fn database_error(path: &str, e: redb::Error) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl Inner {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self) -> Result<Learned, StoreError> {
        let name = self.name();
        let err = |e: redb::Error| database_error(&name, e);
        let corrupt = |table: &'static str, message: String| StoreError::Corrupt {
            path: name.clone(),
            table,
            message,
        };
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let mut ids = Ids::default();
        let mut workloads: HashMap<u64, Arc<SourceWorkload>> = HashMap::new();
        for row in txn
            .open_table(WORKLOADS)
            .map_err(|e| err(e.into()))?
            .iter()
            .map_err(|e| err(e.into()))?
        {
            let (id, value) = row.map_err(|e| err(e.into()))?;
            let workload: SourceWorkload = serde_json::from_slice(value.value())
                .map_err(|e| corrupt("workloads", e.to_string()))?;
            let workload = Arc::new(workload);
            ids.workloads.insert(Arc::clone(&workload), id.value());
            ids.next_workload = ids.next_workload.max(id.value() + 1);
            workloads.insert(id.value(), workload);
        }
        let mut peers: HashMap<u64, Arc<Peer>> = HashMap::new();
        for row in txn
            .open_table(PEERS)
            .map_err(|e| err(e.into()))?
            .iter()
            .map_err(|e| err(e.into()))?
        {
            let (id, value) = row.map_err(|e| err(e.into()))?;
            let peer: Peer = serde_json::from_slice(value.value())
                .map_err(|e| corrupt("peers", e.to_string()))?;
            let peer = Arc::new(peer);
            ids.peers.insert(Arc::clone(&peer), id.value());
            ids.next_peer = ids.next_peer.max(id.value() + 1);
            peers.insert(id.value(), peer);
        }
        let mut learned = Learned::default();
        let mut values: HashMap<EdgeRow, Vec<u8>> = HashMap::new();
        let edges = txn.open_table(EDGES).map_err(|e| err(e.into()))?;
        values.reserve(edges.len().map_err(|e| err(e.into()))? as usize);
        for row in edges.iter().map_err(|e| err(e.into()))? {
            let (key, value) = row.map_err(|e| err(e.into()))?;
            values.insert(key.value(), value.value().to_vec());
        }
        // Then the journal, in order: later values win.
        for row in txn
            .open_table(JOURNAL)
            .map_err(|e| err(e.into()))?
            .iter()
            .map_err(|e| err(e.into()))?
        {
            let (seq, entry) = row.map_err(|e| err(e.into()))?;
            ids.next_entry = seq.value() + 1;
            ids.journal_bytes += entry.value().len();
            for (key, value) in rows(entry.value()).map_err(|e| corrupt("journal", e))? {
                ids.journaled.insert(key, value.to_vec());
                values.insert(key, value.to_vec());
            }
        }
        learned.edges.reserve(values.len());
        for ((workload, peer, port, protocol), value) in values {
            let (learned_at, observed) =
                super::codec::decode(&value).map_err(|e| corrupt("edges", e))?;
            learned.edges.push(Edge {
                source: Arc::clone(
                    workloads
                        .get(&workload)
                        .ok_or_else(|| corrupt("edges", format!("no workload {workload}")))?,
                ),
                peer: Arc::clone(
                    peers
                        .get(&peer)
                        .ok_or_else(|| corrupt("edges", format!("no peer {peer}")))?,
                ),
                port,
                protocol: protocol_of(protocol)
                    .ok_or_else(|| corrupt("edges", format!("protocol {protocol}")))?,
                learned_at,
                observed: Arc::new(observed),
            });
        }
        for row in txn
            .open_table(UNCOVERED)
            .map_err(|e| err(e.into()))?
            .iter()
            .map_err(|e| err(e.into()))?
        {
            let (key, value) = row.map_err(|e| err(e.into()))?;
            let key =
                decode_flow_key(key.value()).map_err(|e| corrupt("uncovered", e.to_string()))?;
            let value = serde_json::from_slice(value.value())
                .map_err(|e| corrupt("uncovered", e.to_string()))?;
            learned.uncovered.push((key, value));
        }
        for row in txn
            .open_table(BATCH_IDS)
            .map_err(|e| err(e.into()))?
            .iter()
            .map_err(|e| err(e.into()))?
        {
            let (id, at) = row.map_err(|e| err(e.into()))?;
            let at = Timestamp::from_millisecond(at.value())
                .map_err(|e| corrupt("batch_ids", e.to_string()))?;
            learned.batch_ids.push((id.value().to_owned(), at));
        }
        *self.ids.lock().expect("ids lock") = ids;
        Ok(learned)
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let name = self.name();
        let err = |e: redb::Error| database_error(&name, e);
        let mut ids = self.ids.lock().expect("ids lock");
        // Ids handed out in this commit become the store's only once it is durable.
        let mut new_workloads: HashMap<Arc<SourceWorkload>, u64> = HashMap::new();
        let mut new_peers: HashMap<Arc<Peer>, u64> = HashMap::new();
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_two_phase_commit(true);
        let checkpoint;
        let journal_written: (usize, Vec<(EdgeRow, Vec<u8>)>);
        {
            let mut workloads = txn.open_table(WORKLOADS).map_err(|e| err(e.into()))?;
            let mut peers = txn.open_table(PEERS).map_err(|e| err(e.into()))?;
            let mut entry: Vec<u8> = Vec::with_capacity(commit.edges.len() * 200);
            let mut value = Vec::with_capacity(256);
            let mut written: Vec<(EdgeRow, Vec<u8>)> = Vec::with_capacity(commit.edges.len());
            for edge in &commit.edges {
                let workload = match ids
                    .workloads
                    .get(&edge.source)
                    .or_else(|| new_workloads.get(&edge.source))
                {
                    Some(id) => *id,
                    None => {
                        let id = ids.next_workload + new_workloads.len() as u64;
                        let json = serde_json::to_vec(&*edge.source).expect("serializes");
                        workloads
                            .insert(id, json.as_slice())
                            .map_err(|e| err(e.into()))?;
                        new_workloads.insert(Arc::clone(&edge.source), id);
                        id
                    }
                };
                let peer = match ids
                    .peers
                    .get(&edge.peer)
                    .or_else(|| new_peers.get(&edge.peer))
                {
                    Some(id) => *id,
                    None => {
                        let id = ids.next_peer + new_peers.len() as u64;
                        let json = serde_json::to_vec(&*edge.peer).expect("serializes");
                        peers
                            .insert(id, json.as_slice())
                            .map_err(|e| err(e.into()))?;
                        new_peers.insert(Arc::clone(&edge.peer), id);
                        id
                    }
                };
                value.clear();
                super::codec::encode(&mut value, edge.learned_at, &edge.observed);
                let row = (workload, peer, edge.port, protocol_code(edge.protocol));
                put_row(&mut entry, row, &value);
                written.push((row, value.clone()));
            }
            checkpoint = ids.journal_bytes + entry.len() > CHECKPOINT_BYTES
                || ids.last_checkpoint.elapsed() > CHECKPOINT_INTERVAL;
            let mut journal = txn.open_table(JOURNAL).map_err(|e| err(e.into()))?;
            if checkpoint {
                // Fold the journal and this commit into `edges`, and empty the journal.
                let mut edges = txn.open_table(EDGES).map_err(|e| err(e.into()))?;
                // This commit's values last: they are the newest.
                for (row, value) in ids
                    .journaled
                    .iter()
                    .chain(written.iter().map(|(r, v)| (r, v)))
                {
                    edges
                        .insert(*row, value.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
                journal.retain(|_, _| false).map_err(|e| err(e.into()))?;
            } else if !entry.is_empty() {
                journal
                    .insert(ids.next_entry, entry.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            journal_written = (entry.len(), written);
            let mut uncovered = txn.open_table(UNCOVERED).map_err(|e| err(e.into()))?;
            for (key, flow) in &commit.uncovered {
                let key = encode_flow_key(key);
                if flow.is_empty() {
                    uncovered
                        .remove(key.as_slice())
                        .map_err(|e| err(e.into()))?;
                    continue;
                }
                let json = serde_json::to_vec(flow).expect("serializes");
                uncovered
                    .insert(key.as_slice(), json.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            let mut batch_ids = txn.open_table(BATCH_IDS).map_err(|e| err(e.into()))?;
            let mut by_time = txn
                .open_table(BATCH_IDS_BY_TIME)
                .map_err(|e| err(e.into()))?;
            let at = commit.acknowledged_at.as_millisecond();
            for id in &commit.batch_ids {
                batch_ids
                    .insert(id.as_str(), at)
                    .map_err(|e| err(e.into()))?;
                by_time
                    .insert((at, id.as_str()), ())
                    .map_err(|e| err(e.into()))?;
            }
            if let Some(before) = commit.forget_ids_before {
                let before = before.as_millisecond();
                let mut old: Vec<(i64, String)> = Vec::new();
                for row in by_time
                    .range::<(i64, &str)>(..(before, ""))
                    .map_err(|e| err(e.into()))?
                    .take(PRUNE_PER_COMMIT)
                {
                    let (key, ()) = row
                        .map(|(k, v)| (k, v.value()))
                        .map_err(|e| err(e.into()))?;
                    let (t, id) = key.value();
                    old.push((t, id.to_owned()));
                }
                for (t, id) in &old {
                    by_time
                        .remove((*t, id.as_str()))
                        .map_err(|e| err(e.into()))?;
                    batch_ids.remove(id.as_str()).map_err(|e| err(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        let (bytes, written) = journal_written;
        if checkpoint {
            ids.journaled.clear();
            ids.journal_bytes = 0;
            ids.last_checkpoint = std::time::Instant::now();
        } else if bytes > 0 {
            ids.journaled.extend(written);
            ids.journal_bytes += bytes;
            ids.next_entry += 1;
        }
        ids.next_workload += new_workloads.len() as u64;
        ids.next_peer += new_peers.len() as u64;
        ids.workloads.extend(new_workloads);
        ids.peers.extend(new_peers);
        Ok(())
    }
}

impl Inner {
    /// Folds the journal into `edges` now.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let name = self.name();
        let err = |e: redb::Error| database_error(&name, e);
        let mut ids = self.ids.lock().expect("ids lock");
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_two_phase_commit(true);
        {
            let mut edges = txn.open_table(EDGES).map_err(|e| err(e.into()))?;
            for (row, value) in &ids.journaled {
                edges
                    .insert(*row, value.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            let mut journal = txn.open_table(JOURNAL).map_err(|e| err(e.into()))?;
            journal.retain(|_, _| false).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        ids.journaled.clear();
        ids.journal_bytes = 0;
        ids.last_checkpoint = std::time::Instant::now();
        Ok(())
    }
}

impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("redb:{}", self.inner.path.display())
    }

    fn load(&self) -> BoxFuture<'_, Result<Learned, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { blocking(move || inner.load()).await })
    }

    fn commit(&self, commit: Arc<Commit>) -> BoxFuture<'_, Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { blocking(move || inner.commit(&commit)).await })
    }
}

/// Runs file work off the async threads (on the blocking pool when there is a runtime).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
            Err(StoreError::Database {
                path: String::new(),
                message: format!("store task failed: {e}"),
            })
        }),
        Err(_) => work(),
    }
}

impl EmbeddedStore {
    /// Folds the journal into `edges` and gives the file's free space back (redb's `compact`):
    /// for measuring the store, or shrinking it while no service holds it.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let name = self.inner.name();
        self.inner.checkpoint()?;
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| StoreError::Database {
            path: name.clone(),
            message: "the store is in use".into(),
        })?;
        inner.db.compact().map_err(|e| StoreError::Database {
            path: name,
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// [`Store::load`] without a runtime (the offline commands).
    pub fn load_now(&self) -> Result<Learned, StoreError> {
        self.inner.load()
    }

    /// [`Store::commit`] without a runtime (tests, tools).
    pub fn commit_now(&self, commit: &Commit) -> Result<(), StoreError> {
        self.inner.commit(commit)
    }
}

#[cfg(test)]
mod tests;
