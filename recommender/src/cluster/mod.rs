//! The cluster model: every object the recommender and the evaluator look at, as k8s-openapi types.
//!
//! Loading (from files) lives in `load`; lookups (pod by IP, workload of a pod, Service by ClusterIP,
//! namespace labels, ...) live beside the data here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// Everything known about one cluster at one moment.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// By name. Namespaces that objects mention but no file defines are absent here; see
    /// `namespace_labels` for the labels the API server would give them.
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub endpoints: Vec<Endpoints>,
    pub nodes: Vec<Node>,
    pub deployments: Vec<Deployment>,
    pub replica_sets: Vec<ReplicaSet>,
    pub stateful_sets: Vec<StatefulSet>,
    pub daemon_sets: Vec<DaemonSet>,
    pub jobs: Vec<Job>,
    pub cron_jobs: Vec<CronJob>,
    pub network_policies: Vec<NetworkPolicy>,
}
