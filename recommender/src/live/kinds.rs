//! The kinds the live model watches, and the one place that maps each to its API type.

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use crate::cluster::{Cluster, Key, LiveObject};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Service,
    EndpointSlice,
    Namespace,
    Node,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Node,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::NetworkPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }
}

type Tagged = (Kind, Result<watcher::Event<LiveObject>, watcher::Error>);

/// The watcher of one kind, across all namespaces, with backoff, its events wrapped as
/// [`LiveObject`]s.
pub fn watch(
    client: kube::Client,
    kind: Kind,
    page_size: u32,
) -> std::pin::Pin<Box<dyn Stream<Item = Tagged> + Send>> {
    let config = watcher::Config::default().page_size(page_size);
    fn of<K, F>(
        client: kube::Client,
        config: watcher::Config,
        kind: Kind,
        wrap: F,
    ) -> std::pin::Pin<Box<dyn Stream<Item = Tagged> + Send>>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        F: Fn(K) -> LiveObject + Send + Sync + Copy + 'static,
    {
        let api: Api<K> = Api::all(client);
        watcher(api, config)
            .default_backoff()
            .map(move |event| (kind, event.map(|e| wrap_event(e, wrap))))
            .boxed()
    }
    match kind {
        Kind::Pod => of(client, config, kind, |o: Pod| LiveObject::Pod(Box::new(o))),
        Kind::Service => of(client, config, kind, |o: Service| {
            LiveObject::Service(Box::new(o))
        }),
        Kind::EndpointSlice => of(client, config, kind, |o: EndpointSlice| {
            LiveObject::EndpointSlice(Box::new(o))
        }),
        Kind::Namespace => of(client, config, kind, |o: Namespace| {
            LiveObject::Namespace(Box::new(o))
        }),
        Kind::Node => of(client, config, kind, |o: Node| {
            LiveObject::Node(Box::new(o))
        }),
        Kind::Deployment => of(client, config, kind, |o: Deployment| {
            LiveObject::Deployment(Box::new(o))
        }),
        Kind::ReplicaSet => of(client, config, kind, |o: ReplicaSet| {
            LiveObject::ReplicaSet(Box::new(o))
        }),
        Kind::StatefulSet => of(client, config, kind, |o: StatefulSet| {
            LiveObject::StatefulSet(Box::new(o))
        }),
        Kind::DaemonSet => of(client, config, kind, |o: DaemonSet| {
            LiveObject::DaemonSet(Box::new(o))
        }),
        Kind::Job => of(client, config, kind, |o: Job| LiveObject::Job(Box::new(o))),
        Kind::CronJob => of(client, config, kind, |o: CronJob| {
            LiveObject::CronJob(Box::new(o))
        }),
        Kind::NetworkPolicy => of(client, config, kind, |o: NetworkPolicy| {
            LiveObject::NetworkPolicy(Box::new(o))
        }),
    }
}

fn wrap_event<K>(
    event: watcher::Event<K>,
    wrap: impl Fn(K) -> LiveObject,
) -> watcher::Event<LiveObject> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(wrap(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(wrap(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(wrap(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

fn meta(object: &LiveObject) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    match object {
        LiveObject::Pod(o) => &o.metadata,
        LiveObject::Service(o) => &o.metadata,
        LiveObject::EndpointSlice(o) => &o.metadata,
        LiveObject::Namespace(o) => &o.metadata,
        LiveObject::Node(o) => &o.metadata,
        LiveObject::Deployment(o) => &o.metadata,
        LiveObject::ReplicaSet(o) => &o.metadata,
        LiveObject::StatefulSet(o) => &o.metadata,
        LiveObject::DaemonSet(o) => &o.metadata,
        LiveObject::Job(o) => &o.metadata,
        LiveObject::CronJob(o) => &o.metadata,
        LiveObject::NetworkPolicy(o) => &o.metadata,
    }
}

pub fn key(object: &LiveObject) -> Key {
    crate::cluster::key_of(meta(object))
}

/// The model's objects of one kind (to find what a relist no longer has).
pub fn objects(model: &Cluster, kind: Kind) -> Vec<LiveObject> {
    fn all<T: Clone>(items: &[T], wrap: fn(Box<T>) -> LiveObject) -> Vec<LiveObject> {
        items.iter().map(|o| wrap(Box::new(o.clone()))).collect()
    }
    match kind {
        Kind::Pod => all(&model.pods, LiveObject::Pod),
        Kind::Service => all(&model.services, LiveObject::Service),
        Kind::EndpointSlice => all(&model.endpoint_slices, LiveObject::EndpointSlice),
        Kind::Namespace => model
            .namespaces
            .values()
            .map(|n| LiveObject::Namespace(Box::new(n.clone())))
            .collect(),
        Kind::Node => all(&model.nodes, LiveObject::Node),
        Kind::Deployment => all(&model.deployments, LiveObject::Deployment),
        Kind::ReplicaSet => all(&model.replica_sets, LiveObject::ReplicaSet),
        Kind::StatefulSet => all(&model.stateful_sets, LiveObject::StatefulSet),
        Kind::DaemonSet => all(&model.daemon_sets, LiveObject::DaemonSet),
        Kind::Job => all(&model.jobs, LiveObject::Job),
        Kind::CronJob => all(&model.cron_jobs, LiveObject::CronJob),
        Kind::NetworkPolicy => all(&model.network_policies, LiveObject::NetworkPolicy),
    }
}
