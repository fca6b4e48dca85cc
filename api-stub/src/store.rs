//! The in-memory object store: objects per resource, one global resourceVersion counter, the
//! history of changes that watches replay, and the open watches that hear new changes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::resource::{builtin_kind, Resource};
use crate::select::Selector;
use crate::status::{self, ApiError};
use crate::wire::{decode_continue, encode_continue, event_for, strip_type};

mod watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept so that a watch from an older resourceVersion can replay it.
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) resource: Resource,
    /// The object before the change (`None` for a creation).
    pub(crate) old: Option<Value>,
    /// The object after the change; for a deletion, the last state stamped with the deletion's rv.
    pub(crate) new: Value,
    pub(crate) deleted: bool,
}

/// What a watch stream is sent.
#[derive(Debug)]
pub enum WatchMsg {
    /// One complete JSON line (with its newline).
    Line(Bytes),
    /// Send half a line and break the connection.
    Break,
}

pub(crate) struct Watcher {
    pub(crate) resource: Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) selector: Selector,
    pub(crate) bookmarks: bool,
    pub(crate) tx: mpsc::UnboundedSender<WatchMsg>,
}

/// Where a list continues: a snapshot taken at the first page, so that later pages are consistent
/// with it as the API server's are (it reads them from etcd at the first page's revision).
struct Snapshot {
    rv: u64,
    items: Vec<Value>,
}

pub struct Store {
    rv: u64,
    /// Changes at or below this resourceVersion are forgotten: older watches and list
    /// continuations get 410 Gone.
    floor: u64,
    next_uid: u64,
    kinds: HashMap<Resource, (String, bool)>,
    objects: BTreeMap<Resource, BTreeMap<(String, String), Value>>,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    snapshots: HashMap<u64, Snapshot>,
    next_snapshot: u64,
}

/// A page of a list, before the HTTP layer wraps it.
pub struct Page {
    pub kind: String,
    pub api_version: String,
    pub rv: u64,
    pub items: Vec<Value>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            // The API server's revisions never start at zero; neither do ours, so that "0"
            // ("any version") is never a real one.
            rv: 1000,
            floor: 0,
            next_uid: 1,
            kinds: HashMap::new(),
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            snapshots: HashMap::new(),
            next_snapshot: 1,
        }
    }
}

fn key_of(namespace: Option<&str>, name: &str) -> (String, String) {
    (namespace.unwrap_or("").to_string(), name.to_string())
}

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

fn rv_of(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn register_kind(&mut self, resource: Resource, kind: &str, namespaced: bool) {
        self.kinds.insert(resource, (kind.to_string(), namespaced));
    }

    /// The kind of `resource`'s objects; custom resources that were never registered take the kind
    /// of the first object written.
    pub fn kind_of(&self, resource: &Resource) -> String {
        if let Some((kind, _)) = self.kinds.get(resource) {
            return kind.clone();
        }
        if let Some((kind, _)) = builtin_kind(resource) {
            return kind.to_string();
        }
        String::new()
    }

    /// The resource that holds objects of `api_version`/`kind` (built-in or registered).
    pub fn resource_for(&self, api_version: &str, kind: &str) -> Option<Resource> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if let Some((r, _)) = self
            .kinds
            .iter()
            .find(|(r, (k, _))| k == kind && r.group == group && r.version == version)
        {
            return Some(r.clone());
        }
        const PLURALS: &[&str] = &[
            "pods",
            "services",
            "endpoints",
            "namespaces",
            "nodes",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "events",
            "endpointslices",
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "networkpolicies",
            "leases",
            "tokenreviews",
            "customresourcedefinitions",
        ];
        PLURALS
            .iter()
            .map(|p| Resource::new(group, version, p))
            .find(|r| builtin_kind(r).is_some_and(|(k, _)| k == kind))
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Records a change, tells the watches that see it, and keeps it for replay.
    fn record(&mut self, resource: &Resource, old: Option<Value>, new: Value, deleted: bool) {
        let change = Change {
            rv: self.rv,
            resource: resource.clone(),
            old,
            new,
            deleted,
        };
        self.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            match event_for(w, &change) {
                Some(line) => w.tx.send(WatchMsg::Line(line)).is_ok(),
                None => true,
            }
        });
        self.history.push(change);
    }

    fn stamp(&mut self, resource: &Resource, object: &mut Value, namespace: Option<&str>) {
        let kind = self.kind_of(resource);
        let obj = object.as_object_mut().expect("objects are JSON objects");
        obj.insert("apiVersion".into(), json!(resource.api_version()));
        if !kind.is_empty() {
            obj.insert("kind".into(), json!(kind));
        }
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
    }

    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(resource)
            .and_then(|m| m.get(&key_of(namespace, name)))
            .cloned()
            .ok_or_else(|| status::not_found(resource, name))
    }

    pub fn create(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(status::bad_request(
                "the object must be a JSON object".into(),
            ));
        }
        if self.kind_of(resource).is_empty() {
            if let Some(kind) = object.get("kind").and_then(Value::as_str) {
                let namespaced = namespace.is_some();
                self.kinds
                    .insert(resource.clone(), (kind.to_string(), namespaced));
            }
        }
        let name = match name_of(&object) {
            Some(n) => n.to_string(),
            None => match object
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) => format!("{prefix}{:05x}", self.next_uid),
                None => {
                    return Err(status::invalid(
                        resource,
                        "",
                        "metadata.name: Required value: name or generateName is required".into(),
                    ))
                }
            },
        };
        let key = key_of(namespace, &name);
        if self
            .objects
            .get(resource)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(status::already_exists(resource, &name));
        }
        self.bump();
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        self.next_uid += 1;
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        {
            let meta = object
                .as_object_mut()
                .expect("object")
                .entry("metadata")
                .or_insert_with(|| json!({}));
            meta["name"] = json!(name);
            if meta.get("uid").is_none() {
                meta["uid"] = json!(uid);
            }
            if meta.get("creationTimestamp").is_none() {
                meta["creationTimestamp"] = json!(now.to_string());
            }
        }
        self.stamp(resource, &mut object, namespace);
        self.objects
            .entry(resource.clone())
            .or_default()
            .insert(key, object.clone());
        self.record(resource, None, object.clone(), false);
        Ok(object)
    }

    /// Replaces an object (PUT). A `metadata.resourceVersion` in `object` is a precondition.
    /// With `status_only`, only `.status` is taken from `object` (the `/status` subresource).
    pub fn replace(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let current = self.get(resource, namespace, name)?;
        if let Some(want) = rv_of(&object) {
            if Some(want) != rv_of(&current) {
                return Err(status::conflict(resource, name));
            }
        }
        if name_of(&object).is_some_and(|n| n != name) {
            return Err(status::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&object).unwrap_or("")
            )));
        }
        if status_only {
            let mut merged = current.clone();
            merged["status"] = object.get("status").cloned().unwrap_or(Value::Null);
            object = merged;
        } else {
            // Identity fields are the server's, whatever the client sent.
            let meta = object
                .as_object_mut()
                .ok_or_else(|| status::bad_request("the object must be a JSON object".into()))?
                .entry("metadata")
                .or_insert_with(|| json!({}));
            meta["name"] = json!(name);
            for field in ["uid", "creationTimestamp"] {
                if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
                    meta[field] = v.clone();
                }
            }
        }
        self.bump();
        self.stamp(resource, &mut object, namespace);
        self.objects
            .entry(resource.clone())
            .or_default()
            .insert(key_of(namespace, name), object.clone());
        self.record(resource, Some(current), object.clone(), false);
        Ok(object)
    }

    /// Applies a patch; a resourceVersion the patch sets is a precondition. Server-side apply
    /// (`create_missing`) creates the object when it does not exist.
    pub fn patch(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        content_type: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let current = match self.get(resource, namespace, name) {
            Ok(c) => c,
            Err(e) if content_type.starts_with("application/apply-patch") => {
                let _ = e;
                let mut object = patch.clone();
                object["metadata"]["name"] = json!(name);
                return self.create(resource, namespace, object);
            }
            Err(e) => return Err(e),
        };
        let mut patched = current.clone();
        crate::patch::apply(&mut patched, content_type, patch)?;
        if rv_of(&patched) != rv_of(&current) {
            return Err(status::conflict(resource, name));
        }
        if status_only {
            let mut merged = current.clone();
            merged["status"] = patched.get("status").cloned().unwrap_or(Value::Null);
            patched = merged;
        }
        self.replace(resource, namespace, name, patched, false)
    }

    /// Deletes an object; `precondition_rv` is DeleteOptions' `preconditions.resourceVersion`.
    pub fn delete(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        let current = self.get(resource, namespace, name)?;
        if precondition_rv.is_some_and(|want| Some(want) != rv_of(&current)) {
            return Err(status::conflict(resource, name));
        }
        self.objects
            .get_mut(resource)
            .map(|m| m.remove(&key_of(namespace, name)));
        self.bump();
        let mut last = current.clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(resource, Some(current), last.clone(), true);
        Ok(last)
    }

    /// One page of a list. Later pages come from the snapshot the first one took.
    pub fn list(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        selector: &Selector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let kind = self.kind_of(resource);
        let (rv, items) = match continue_token {
            Some(token) => {
                let (id, _rv) = decode_continue(token)?;
                // Compaction drops the snapshots, as etcd's compaction drops the revision a
                // continuation would read.
                let Some(snapshot) = self.snapshots.remove(&id) else {
                    return Err(status::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter, or use the continue \
                         value from the response to continue."
                            .into(),
                    ));
                };
                (snapshot.rv, snapshot.items)
            }
            None => {
                let items = self
                    .objects
                    .get(resource)
                    .into_iter()
                    .flat_map(|m| m.iter())
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, o)| o)
                    .filter(|o| selector.matches(o))
                    .map(strip_type)
                    .collect::<Vec<_>>();
                (self.rv, items)
            }
        };
        let mut items = items;
        let (continue_token, remaining) = match limit {
            Some(limit) if limit > 0 && items.len() > limit => {
                let rest = items.split_off(limit);
                let remaining = rest.len();
                let id = self.next_snapshot;
                self.next_snapshot += 1;
                let start = items.last().and_then(|o| {
                    let ns = o
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    name_of(o).map(|n| {
                        if ns.is_empty() {
                            n.to_string()
                        } else {
                            format!("{ns}/{n}")
                        }
                    })
                });
                self.snapshots.insert(id, Snapshot { rv, items: rest });
                (
                    Some(encode_continue(id, rv, start.as_deref().unwrap_or(""))),
                    Some(remaining),
                )
            }
            _ => (None, None),
        };
        Ok(Page {
            kind: format!("{kind}List"),
            api_version: resource.api_version(),
            rv,
            items,
            continue_token,
            remaining,
        })
    }

    pub fn objects(&self, resource: &Resource) -> Vec<Value> {
        self.objects
            .get(resource)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
