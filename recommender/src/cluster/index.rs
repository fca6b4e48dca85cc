//! Lookups by key instead of by scan, and the model's incremental updates.
//!
//! A snapshot is indexed once after loading ([`Cluster::reindex`]); a live source changes the model
//! one object at a time ([`Cluster::apply`], [`Cluster::remove`]) and the index follows each change,
//! so neither a watch event nor an ingested flow costs a pass over the cluster. Secondary indexes
//! (pod by IP and UID, Service by ClusterIP, EndpointSlices by Service) point at keys, not
//! positions, so removing an object (a `swap_remove`) only fixes the one it moved.
//!
//! The index is trusted only while the vectors have the lengths it last saw: code that edits the
//! public vectors directly (tests, builders) gets the scans back until it calls `reindex`.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;

use super::endpoints::SERVICE_NAME_LABEL;
use super::{cluster_ips, pod_ips, Cluster, LiveObject};

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

pub fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Position of each object by key, per kind.
#[derive(Clone, Debug, Default)]
struct Positions(HashMap<Key, usize>);

impl Positions {
    fn of<T: Metadata<Ty = ObjectMeta>>(items: &[T]) -> Positions {
        Positions(
            items
                .iter()
                .enumerate()
                .map(|(i, o)| (key_of(o.metadata()), i))
                .collect(),
        )
    }

    /// Inserts or replaces; returns the object replaced.
    fn upsert<T: Metadata<Ty = ObjectMeta>>(&mut self, items: &mut Vec<T>, object: T) -> Option<T> {
        let key = key_of(object.metadata());
        match self.0.get(&key) {
            Some(&at) => Some(std::mem::replace(&mut items[at], object)),
            None => {
                self.0.insert(key, items.len());
                items.push(object);
                None
            }
        }
    }

    fn remove<T: Metadata<Ty = ObjectMeta>>(&mut self, items: &mut Vec<T>, key: &Key) -> Option<T> {
        let at = self.0.remove(key)?;
        let removed = items.swap_remove(at);
        if let Some(moved) = items.get(at) {
            self.0.insert(key_of(moved.metadata()), at);
        }
        Some(removed)
    }

    fn get<'a, T>(&self, items: &'a [T], key: &Key) -> Option<&'a T> {
        self.0.get(key).and_then(|&at| items.get(at))
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClusterIndex {
    /// The vector lengths the index matches (pods, services, endpoint slices, nodes).
    lens: Option<[usize; 4]>,
    pods: Positions,
    services: Positions,
    slices: Positions,
    nodes: Positions,
    others: HashMap<&'static str, Positions>,
    pod_by_uid: HashMap<String, Key>,
    pods_by_ip: HashMap<IpAddr, Vec<Key>>,
    service_by_ip: HashMap<IpAddr, Key>,
    slices_by_service: HashMap<Key, Vec<Key>>,
}

fn add_to<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Key>>, at: K, key: &Key) {
    let keys = map.entry(at).or_default();
    if !keys.contains(key) {
        keys.push(key.clone());
    }
}

fn drop_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Key>>, at: K, key: &Key) {
    if let Some(keys) = map.get_mut(&at) {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            map.remove(&at);
        }
    }
}

fn slice_service(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Option<Key> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

impl ClusterIndex {
    fn index_pod(&mut self, pod: &Pod, add: bool) {
        let key = key_of(&pod.metadata);
        for ip in pod_ips(pod) {
            if add {
                add_to(&mut self.pods_by_ip, ip, &key);
            } else {
                drop_from(&mut self.pods_by_ip, ip, &key);
            }
        }
        if let Some(uid) = &pod.metadata.uid {
            if add {
                self.pod_by_uid.insert(uid.clone(), key);
            } else if self.pod_by_uid.get(uid) == Some(&key) {
                self.pod_by_uid.remove(uid);
            }
        }
    }

    fn index_service(&mut self, service: &k8s_openapi::api::core::v1::Service, add: bool) {
        let key = key_of(&service.metadata);
        for ip in cluster_ips(service) {
            if add {
                self.service_by_ip.insert(ip, key.clone());
            } else if self.service_by_ip.get(&ip) == Some(&key) {
                self.service_by_ip.remove(&ip);
            }
        }
    }

    fn index_slice(&mut self, slice: &k8s_openapi::api::discovery::v1::EndpointSlice, add: bool) {
        if let Some(service) = slice_service(slice) {
            let key = key_of(&slice.metadata);
            if add {
                add_to(&mut self.slices_by_service, service, &key);
            } else {
                drop_from(&mut self.slices_by_service, service, &key);
            }
        }
    }
}

impl Cluster {
    fn lens(&self) -> [usize; 4] {
        [
            self.pods.len(),
            self.services.len(),
            self.endpoint_slices.len(),
            self.nodes.len(),
        ]
    }

    /// The index, when it matches the vectors (see the module comment).
    pub(crate) fn index(&self) -> Option<&ClusterIndex> {
        (self.index.lens == Some(self.lens())).then_some(&self.index)
    }

    /// Builds the index from scratch (after loading, or after editing the vectors directly).
    pub fn reindex(&mut self) {
        let mut index = ClusterIndex {
            pods: Positions::of(&self.pods),
            services: Positions::of(&self.services),
            slices: Positions::of(&self.endpoint_slices),
            nodes: Positions::of(&self.nodes),
            ..ClusterIndex::default()
        };
        self.pods.iter().for_each(|p| index.index_pod(p, true));
        self.services
            .iter()
            .for_each(|s| index.index_service(s, true));
        self.endpoint_slices
            .iter()
            .for_each(|s| index.index_slice(s, true));
        index.lens = Some(self.lens());
        self.index = index;
    }

    fn ensure_index(&mut self) {
        if self.index().is_none() {
            self.reindex();
        }
    }

    /// Adds or replaces one object, keeping the index (a live source's ADDED and MODIFIED).
    pub fn apply(&mut self, object: LiveObject) {
        self.ensure_index();
        let index = &mut self.index;
        macro_rules! other {
            ($field:ident, $name:literal, $o:expr) => {{
                index
                    .others
                    .entry($name)
                    .or_default()
                    .upsert(&mut self.$field, $o);
            }};
        }
        match object {
            LiveObject::Pod(pod) => {
                let pod = *pod;
                if let Some(old) = index.pods.upsert(&mut self.pods, pod.clone()) {
                    index.index_pod(&old, false);
                }
                index.index_pod(&pod, true);
            }
            LiveObject::Service(service) => {
                let service = *service;
                if let Some(old) = index.services.upsert(&mut self.services, service.clone()) {
                    index.index_service(&old, false);
                }
                index.index_service(&service, true);
            }
            LiveObject::EndpointSlice(slice) => {
                let slice = *slice;
                if let Some(old) = index
                    .slices
                    .upsert(&mut self.endpoint_slices, slice.clone())
                {
                    index.index_slice(&old, false);
                }
                index.index_slice(&slice, true);
            }
            LiveObject::Node(node) => {
                index.nodes.upsert(&mut self.nodes, *node);
            }
            LiveObject::Namespace(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                self.namespaces.insert(name, *ns);
            }
            LiveObject::Deployment(o) => other!(deployments, "Deployment", *o),
            LiveObject::ReplicaSet(o) => other!(replica_sets, "ReplicaSet", *o),
            LiveObject::StatefulSet(o) => other!(stateful_sets, "StatefulSet", *o),
            LiveObject::DaemonSet(o) => other!(daemon_sets, "DaemonSet", *o),
            LiveObject::Job(o) => other!(jobs, "Job", *o),
            LiveObject::CronJob(o) => other!(cron_jobs, "CronJob", *o),
            LiveObject::NetworkPolicy(o) => other!(network_policies, "NetworkPolicy", *o),
        }
        self.index.lens = Some(self.lens());
    }

    /// Removes one object (a live source's DELETED). A pod leaves a tombstone, so that flows seen
    /// while it lived still resolve to it (see [`Cluster::pod_at`]).
    pub fn remove(&mut self, object: &LiveObject, deleted_at: jiff::Timestamp) {
        self.ensure_index();
        let index = &mut self.index;
        macro_rules! other {
            ($field:ident, $name:literal, $o:expr) => {{
                index
                    .others
                    .entry($name)
                    .or_default()
                    .remove(&mut self.$field, &key_of(&$o.metadata));
            }};
        }
        match object {
            LiveObject::Pod(pod) => {
                if let Some(old) = index.pods.remove(&mut self.pods, &key_of(&pod.metadata)) {
                    index.index_pod(&old, false);
                    self.tombstones.bury(old, deleted_at);
                }
            }
            LiveObject::Service(service) => {
                if let Some(old) = index
                    .services
                    .remove(&mut self.services, &key_of(&service.metadata))
                {
                    index.index_service(&old, false);
                }
            }
            LiveObject::EndpointSlice(slice) => {
                if let Some(old) = index
                    .slices
                    .remove(&mut self.endpoint_slices, &key_of(&slice.metadata))
                {
                    index.index_slice(&old, false);
                }
            }
            LiveObject::Node(node) => {
                index.nodes.remove(&mut self.nodes, &key_of(&node.metadata));
            }
            LiveObject::Namespace(ns) => {
                self.namespaces
                    .remove(ns.metadata.name.as_deref().unwrap_or_default());
            }
            LiveObject::Deployment(o) => other!(deployments, "Deployment", o),
            LiveObject::ReplicaSet(o) => other!(replica_sets, "ReplicaSet", o),
            LiveObject::StatefulSet(o) => other!(stateful_sets, "StatefulSet", o),
            LiveObject::DaemonSet(o) => other!(daemon_sets, "DaemonSet", o),
            LiveObject::Job(o) => other!(jobs, "Job", o),
            LiveObject::CronJob(o) => other!(cron_jobs, "CronJob", o),
            LiveObject::NetworkPolicy(o) => other!(network_policies, "NetworkPolicy", o),
        }
        self.index.lens = Some(self.lens());
    }

    pub(crate) fn indexed_pod(&self, key: &Key) -> Option<&Pod> {
        self.index()?.pods.get(&self.pods, key)
    }

    /// Pods claiming `ip` (indexed); `None` when there is no index.
    pub(crate) fn indexed_pods_by_ip(&self, ip: IpAddr) -> Option<impl Iterator<Item = &Pod>> {
        let index = self.index()?;
        let keys = index
            .pods_by_ip
            .get(&ip)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(
            keys.iter()
                .filter_map(move |k| index.pods.get(&self.pods, k)),
        )
    }

    pub(crate) fn indexed_pod_by_uid(&self, uid: &str) -> Option<Option<&Pod>> {
        let index = self.index()?;
        Some(
            index
                .pod_by_uid
                .get(uid)
                .and_then(|k| index.pods.get(&self.pods, k)),
        )
    }

    pub(crate) fn indexed_service_by_ip(
        &self,
        ip: IpAddr,
    ) -> Option<Option<&k8s_openapi::api::core::v1::Service>> {
        let index = self.index()?;
        Some(
            index
                .service_by_ip
                .get(&ip)
                .and_then(|k| index.services.get(&self.services, k)),
        )
    }

    pub(crate) fn indexed_service(
        &self,
        key: &Key,
    ) -> Option<Option<&k8s_openapi::api::core::v1::Service>> {
        let index = self.index()?;
        Some(index.services.get(&self.services, key))
    }

    pub(crate) fn indexed_slices_of(
        &self,
        service: &Key,
    ) -> Option<Vec<&k8s_openapi::api::discovery::v1::EndpointSlice>> {
        let index = self.index()?;
        let keys = index
            .slices_by_service
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(
            keys.iter()
                .filter_map(|k| index.slices.get(&self.endpoint_slices, k))
                .collect(),
        )
    }

    pub(crate) fn indexed_node(
        &self,
        name: &str,
    ) -> Option<Option<&k8s_openapi::api::core::v1::Node>> {
        let index = self.index()?;
        Some(
            index
                .nodes
                .get(&self.nodes, &(String::new(), name.to_string())),
        )
    }
}
