//! [`KubernetesStore`]: the [`Store`] on the Kubernetes API, for HA (`serve --store kubernetes`;
//! `docs/architecture.md`, "The Kubernetes store").
//!
//! - Learned edges live in `LearnedEdgeSet` objects (`deploy/base/crd.yaml`, [`wire`]) in the
//!   recommender's own namespace: one per source workload, split into parts (`spec.part`) so
//!   that no object grows past [`DEFAULT_OBJECT_BYTES`] of JSON when edges are added. An edge
//!   stays in the part it was first written to ([`layout`]).
//! - Writes are replaces on the resourceVersion last seen (creates for new parts). A 409 means
//!   the object changed since: it is read again and merged ([`layout::Part::absorb`]), and the
//!   write retried.
//! - Only the holder of the Lease ([`lease`]) writes: every write checks [`Leadership::may_write`]
//!   first, so a replica that lost the Lease stops at once.
//! - A commit writes its objects one after the other (the API has no transactions): `Ok` once
//!   all are accepted (in etcd); on `Err` some may be written. The values are absolute and come
//!   from the service's memory, so a batch sent again and committed again writes the same values.
//!   Batch ids and unresolved flows are not kept in the cluster (see the architecture notes).

pub mod layout;
pub mod lease;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};

use super::{BoxFuture, Commit, Edge, Learned, Store, StoreError};
use crate::resolve::SourceWorkload;
use layout::{Part, Source};
pub use lease::{Leadership, LeaseConfig};
use wire::{edge_parts, EdgeId, EdgeValue, Spec};

/// The default bound on an object's JSON when edges are placed: a third of etcd's 1.5 MiB
/// request limit, so that edges already placed may still grow (DNS names) without reaching it.
pub const DEFAULT_OBJECT_BYTES: usize = 512 << 10;

/// Writes of one object tried before a commit gives up (each after a 409 and a merge).
const MAX_ATTEMPTS: usize = 8;

/// Objects read per list page.
const PAGE: u32 = 250;

/// How the store is set up.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    pub namespace: String,
    /// Who writes (the Lease holder identity and this process), for the writer annotation.
    pub writer: String,
    /// Bound on an object's JSON when placing new edges ([`DEFAULT_OBJECT_BYTES`]).
    pub object_bytes: usize,
}

/// The store on the Kubernetes API.
pub struct KubernetesStore {
    api: Api<DynamicObject>,
    config: KubernetesConfig,
    /// `None`: write unconditionally (tests of the store alone, tools).
    leadership: Option<Arc<Leadership>>,
    /// What the objects held when last read or written, per source workload.
    cache: tokio::sync::Mutex<HashMap<Arc<SourceWorkload>, Source>>,
}

/// The custom resource's type, for the dynamic client.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: wire::GROUP.into(),
        version: wire::VERSION.into(),
        api_version: format!("{}/{}", wire::GROUP, wire::VERSION),
        kind: wire::KIND.into(),
        plural: wire::PLURAL.into(),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

impl KubernetesStore {
    pub fn new(
        client: kube::Client,
        config: KubernetesConfig,
        leadership: Option<Arc<Leadership>>,
    ) -> KubernetesStore {
        KubernetesStore {
            api: Api::namespaced_with(client, &config.namespace, &api_resource()),
            config,
            leadership,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn name(&self) -> String {
        format!("kubernetes:{}/{}", self.config.namespace, wire::PLURAL)
    }

    fn api_error(&self, what: &str, e: kube::Error) -> StoreError {
        StoreError::Database {
            path: self.name(),
            message: format!("{what}: {e}"),
        }
    }

    fn check_leader(&self) -> Result<(), StoreError> {
        match &self.leadership {
            Some(l) if !l.may_write() => Err(StoreError::NotLeader {
                holder: l.holder().unwrap_or_else(|| "no replica".into()),
            }),
            _ => Ok(()),
        }
    }

    async fn load_objects(&self) -> Result<Learned, StoreError> {
        let mut cache: HashMap<Arc<SourceWorkload>, Source> = HashMap::new();
        let selector = format!("{}={}", wire::PART_OF_LABEL.0, wire::PART_OF_LABEL.1);
        let mut params = ListParams::default().labels(&selector).limit(PAGE);
        loop {
            let page = self.api.list(&params).await.map_err(|e| match e {
                kube::Error::Api(status) if status.code == 404 => StoreError::Database {
                    path: self.name(),
                    message: format!(
                        "the API has no {}.{}: install the CRD (deploy/base/crd.yaml, part of kubectl apply -k deploy/overlays/ha)",
                        wire::PLURAL,
                        wire::GROUP
                    ),
                },
                e => self.api_error("list", e),
            })?;
            for object in page.items {
                let (source, part) =
                    Part::read(&object).map_err(|message| StoreError::Corrupt {
                        path: self.name(),
                        table: wire::PLURAL,
                        message,
                    })?;
                cache.entry(source).or_default().insert(part);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let mut learned = Learned::default();
        for (source, objects) in &cache {
            for (id, value) in objects.edges() {
                learned.edges.push(Edge {
                    source: Arc::clone(source),
                    peer: Arc::clone(&id.peer),
                    port: id.port,
                    protocol: id.protocol,
                    learned_at: value.learned_at,
                    observed: Arc::new(value.observed.clone()),
                });
            }
        }
        *self.cache.lock().await = cache;
        Ok(learned)
    }

    async fn commit_edges(&self, commit: &Commit) -> Result<(), StoreError> {
        self.check_leader()?;
        let mut by_source: HashMap<Arc<SourceWorkload>, Vec<&Edge>> = HashMap::new();
        for edge in &commit.edges {
            by_source
                .entry(Arc::clone(&edge.source))
                .or_default()
                .push(edge);
        }
        let mut cache = self.cache.lock().await;
        for (source, edges) in by_source {
            let objects = cache.entry(Arc::clone(&source)).or_default();
            let mut changes: BTreeMap<u32, BTreeMap<EdgeId, EdgeValue>> = BTreeMap::new();
            for edge in edges {
                let (id, value) = edge_parts(edge);
                let value = objects.with_foreign(&id, value);
                let part = objects.place(&id, &value, self.config.object_bytes);
                changes.entry(part).or_default().insert(id, value);
            }
            let mut written = Ok(());
            for (part, changes) in changes {
                written = self.write_part(&source, objects, part, changes).await;
                if written.is_err() {
                    break;
                }
            }
            objects.settle();
            written?;
        }
        Ok(())
    }

    /// Writes `changes` into `part` of `source`'s objects: a replace on the resourceVersion last
    /// seen (a create for a new part); on 409, reads the object, merges, and tries again.
    async fn write_part(
        &self,
        source: &SourceWorkload,
        objects: &mut Source,
        part: u32,
        mut changes: BTreeMap<EdgeId, EdgeValue>,
    ) -> Result<(), StoreError> {
        let wire_source = wire::WireSource::of(source);
        let name = wire::object_name(&wire_source, part);
        for _ in 0..MAX_ATTEMPTS {
            self.check_leader()?;
            let current = objects.part(part, &name);
            let mut edges = current.edges.clone();
            edges.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            let spec = Spec {
                source: wire_source.clone(),
                part,
                edges: edges
                    .iter()
                    .map(|(k, v)| wire::WireEdge::of(k, v))
                    .collect(),
            };
            let mut object = wire::object(&self.config.namespace, &self.config.writer, &spec);
            let resource_version = current.resource_version.clone();
            if let Some(rv) = &resource_version {
                object["metadata"]["resourceVersion"] = rv.clone().into();
            }
            let object: DynamicObject =
                serde_json::from_value(object).expect("the object is a DynamicObject");
            let written = match &resource_version {
                Some(_) => {
                    self.api
                        .replace(&name, &PostParams::default(), &object)
                        .await
                }
                None => self.api.create(&PostParams::default(), &object).await,
            };
            match written {
                Ok(written) => {
                    let bytes = serde_json::to_vec(&spec).map_or(0, |v| v.len());
                    let current = objects.part(part, &name);
                    current.resource_version = written.metadata.resource_version;
                    current.edges = edges;
                    current.bytes = bytes;
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {
                    tracing::info!(object = %name, "409 Conflict: reading it again to merge");
                    let server = self
                        .api
                        .get_opt(&name)
                        .await
                        .map_err(|e| self.api_error(&format!("get {name}"), e))?;
                    let ours = server.as_ref().and_then(|o| {
                        o.metadata
                            .annotations
                            .as_ref()?
                            .get(wire::WRITER_ANNOTATION)
                            .map(|w| *w == self.config.writer)
                    });
                    match server {
                        None => objects.part(part, &name).resource_version = None,
                        Some(server) => {
                            let (_, read) =
                                Part::read(&server).map_err(|message| StoreError::Corrupt {
                                    path: self.name(),
                                    table: wire::PLURAL,
                                    message,
                                })?;
                            objects.absorb(part, read, ours != Some(true), &mut changes);
                        }
                    }
                }
                Err(e) => return Err(self.api_error(&format!("write {name}"), e)),
            }
        }
        Err(StoreError::Database {
            path: self.name(),
            message: format!("{name}: still in conflict after {MAX_ATTEMPTS} attempts"),
        })
    }
}

impl Store for KubernetesStore {
    fn describe(&self) -> String {
        self.name()
    }

    fn load(&self) -> BoxFuture<'_, Result<Learned, StoreError>> {
        Box::pin(self.load_objects())
    }

    fn commit(&self, commit: Arc<Commit>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.commit_edges(&commit).await })
    }
}
