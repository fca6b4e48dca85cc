//! The cluster model: every object the recommender and the evaluator look at, as k8s-openapi types.
//!
//! Loading (from files) lives in `load`; lookups live in one file per job: `namespaces` (namespace
//! labels), `pods` (pod by IP/uid/name, container ports), `workload` (owning workload and its
//! selector), `services` (Service by ClusterIP, the apiserver), `dns` (the cluster DNS, defined
//! once), `endpoints` (the backends
//! of a Service port with their targetPorts), `nodes` (node by address) and `addresses` (what an
//! address is).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

mod addresses;
mod checks;
pub mod dns;
mod endpoints;
mod index;
pub mod load;
mod namespaces;
mod nodes;
mod pods;
mod ranges;
mod services;
pub mod tombstones;
mod workload;

pub use addresses::IpOwner;
pub use dns::{is_cluster_dns, ClusterDns, DnsService};
pub use endpoints::{target_port, Backend};
pub use index::{key_of, ClusterIndex, Key};
pub use nodes::addresses as node_addresses;
pub use pods::{is_host_network, is_terminated, named_ports, pod_ip_like, pod_ips};
pub use ranges::covering_prefix;
pub use services::{
    cluster_ips, external_addresses, is_apiserver_service, qualified_name,
    selector as service_selector, service_port,
};
pub use workload::{stable_labels, UNSTABLE_LABELS};

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
    /// The Service ranges (the API server's `--service-cluster-ip-range`), when the user gives
    /// them: no object of a snapshot shows them. Empty: inferred from the ClusterIPs (see
    /// [`Cluster::service_ranges`]).
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// Lookups by pod IP, UID, ClusterIP and key, kept by `apply`/`remove`/`reindex` (public only
    /// so that `..Default::default()` works outside the crate).
    pub index: index::ClusterIndex,
    /// Pods deleted while a live source followed the cluster.
    pub tombstones: tombstones::Tombstones,
}

/// One object of a kind the model holds, as a live source hands it over.
#[derive(Clone, Debug)]
pub enum LiveObject {
    Pod(Box<Pod>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Namespace(Box<Namespace>),
    Node(Box<Node>),
    Deployment(Box<Deployment>),
    ReplicaSet(Box<ReplicaSet>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
    NetworkPolicy(Box<NetworkPolicy>),
}
